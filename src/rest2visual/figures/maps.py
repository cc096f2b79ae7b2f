"""Orthogonal views of MNI maps: Fig. 1 (predicted vs measured) and Fig. 6 (ablation maps).

Maps are in-mask vectors on the pack's MNI grid. Each is z-scored over the
brain mask (the metrics' normalisation, so predicted and measured maps share
one colour scale) and drawn over the MNI template in sagittal, coronal and
axial slices through one cut point (voxel indices of the RAS-reoriented grid,
left hemisphere on the left). Voxels with |z| below ``threshold`` are left
transparent so the anatomy shows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: the three orthogonal views: (name, axis held fixed)
VIEWS = (("sagittal", 0), ("coronal", 1), ("axial", 2))


def to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A (X, Y, Z) volume reordered to the closest RAS orientation (x: left → right)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(volume, ornt)


def zscore_in_mask(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    sd = v.std()
    return (v - v.mean()) / (sd if sd > 0 else 1.0)


def mask_centroid(mask_ras: np.ndarray) -> tuple[int, int, int]:
    """Rounded voxel centroid of a boolean RAS volume (the cut point through a region)."""
    return tuple(int(round(c)) for c in np.argwhere(mask_ras).mean(axis=0))


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    # transposed so the second remaining axis runs upwards with origin="lower"
    return np.take(volume, index, axis=axis).T


def ortho_views(axes: Sequence, volume: np.ndarray, background: np.ndarray, cut, *, vmax: float = 3.0,
                cmap="RdBu_r", threshold: float = 1.0, vmin: float | None = None, titles: bool = True,
                views=VIEWS):
    """Draw sagittal, coronal and axial slices of ``volume`` over ``background``, one per axes.

    ``views``: the (name, fixed axis) pairs to draw, one per axes (default all three).
    ``volume``/``background``: RAS (X, Y, Z) arrays on one grid; NaN in
    ``volume`` is transparent, as is |value| < ``threshold``. Returns the
    image of the last overlay (for a colour bar).
    """
    overlay = np.ma.masked_where(~np.isfinite(volume) | (np.abs(np.nan_to_num(volume)) < threshold), volume)
    bg_max = np.percentile(background[background > 0], 99) if np.any(background > 0) else 1.0
    image = None
    for ax, (name, axis) in zip(axes, views):
        ax.imshow(_slice(background, axis, cut[axis]), cmap="gray", origin="lower", vmin=0, vmax=bg_max,
                  interpolation="nearest")
        image = ax.imshow(_slice(overlay, axis, cut[axis]), cmap=cmap, origin="lower",
                          interpolation="nearest", vmin=-vmax if vmin is None else vmin, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if titles:
            ax.set_title(name, fontsize=8)
    return image


def map_volume(grid, vector: np.ndarray) -> np.ndarray:
    """An in-mask vector (MaskedGrid ``grid``) → z-scored RAS volume, NaN outside the brain mask."""
    return to_ras(grid.to_volume(zscore_in_mask(vector).astype(np.float32), fill=np.nan), grid.affine)


def _thumbnail(ax, image: np.ndarray, label: str) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, fontsize=8)


def plot_predicted_vs_measured(grid, background_ras, cut, stimuli: list[dict], *, vmax: float = 3.0):
    """Fig. 1: one row per stimulus — its image, the measured map, the Rest2Visual prediction.

    ``stimuli``: dicts with ``image`` (S, S, 3) uint8, ``measured`` and
    ``predicted`` in-mask vectors, and ``label`` (row caption text).
    """
    import matplotlib.pyplot as plt

    n = len(stimuli)
    fig = plt.figure(figsize=(13, 2.0 * n + 0.6))
    grid_spec = fig.add_gridspec(n, 8, width_ratios=[1.1, 1, 1, 1, 0.15, 1, 1, 1], wspace=0.05, hspace=0.25)
    image = None
    for row, stim in enumerate(stimuli):
        _thumbnail(fig.add_subplot(grid_spec[row, 0]), stim["image"], stim["label"])
        for start, key in ((1, "measured"), (5, "predicted")):
            axes = [fig.add_subplot(grid_spec[row, start + i]) for i in range(3)]
            image = ortho_views(axes, map_volume(grid, stim[key]), background_ras, cut, vmax=vmax,
                                titles=row == 0)
            if row == 0:
                axes[1].text(0.5, 1.35, "measured" if key == "measured" else "predicted (Rest2Visual)",
                             transform=axes[1].transAxes, ha="center", fontsize=11, weight="bold")
    fig.colorbar(image, ax=fig.axes, shrink=0.5, pad=0.01, label="z (within brain mask)")
    fig.suptitle("Predicted vs measured evoked maps of test stimuli", y=0.995)
    return fig


def plot_ablation_maps(grid, background_ras, cut, image: np.ndarray, maps: dict[str, np.ndarray],
                       label: str, *, vmax: float = 3.0):
    """Fig. 6: one stimulus (top), then one row per condition (e.g. full model, noise rest,
    noise image, measured)."""
    import matplotlib.pyplot as plt

    n = len(maps)
    fig = plt.figure(figsize=(7.5, 2.0 * n + 2.4))
    grid_spec = fig.add_gridspec(n + 1, 3, height_ratios=[1.3] + [1] * n, wspace=0.05, hspace=0.3)
    top = fig.add_subplot(grid_spec[0, 1])
    top.imshow(image)
    top.set_title(label.replace("\n", ", "), fontsize=9)
    top.axis("off")
    overlay = None
    for row, (name, vector) in enumerate(maps.items(), start=1):
        axes = [fig.add_subplot(grid_spec[row, i]) for i in range(3)]
        overlay = ortho_views(axes, map_volume(grid, vector), background_ras, cut, vmax=vmax, titles=row == 1)
        axes[0].set_ylabel(name, fontsize=10, weight="bold")
    fig.colorbar(overlay, ax=fig.axes, shrink=0.4, pad=0.02, label="z (within brain mask)")
    fig.suptitle("Ablations: one test stimulus with each input replaced by noise", y=0.995)
    return fig
