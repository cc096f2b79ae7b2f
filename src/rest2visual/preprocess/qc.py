"""Registration QC figure: template edges over the warped anatomy in three planes.

A misregistration shows at a glance as red template contours (brain outline,
ventricles, sulci) that do not sit on the anatomy's own edges. Works for any
image on the template's grid (warped rest maps, betas), not only anatomy.
"""

from __future__ import annotations

import numpy as np

from rest2visual.checks import InputError, check_affine

#: (plane name, array axis cut) — axis 0 is x (left/right), 1 y (back/front), 2 z
PLANES = (("sagittal", 0), ("coronal", 1), ("axial", 2))
#: world direction of increasing voxel index, by axis and sign of the affine's diagonal
_DIRECTIONS = {(0, 1): "L→R", (0, -1): "R→L", (1, 1): "P→A", (1, -1): "A→P",
               (2, 1): "I→S", (2, -1): "S→I"}


def _axis_label(affine: np.ndarray, axis: int) -> str:
    """e.g. ``i (R→L)`` for FSL's MNI grid, whose x voxel index runs right to left."""
    sign = 1 if affine[axis, axis] >= 0 else -1
    return f"{'ijk'[axis]} ({_DIRECTIONS[(axis, sign)]})"


def template_edges(template2d: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Canny edges (bool, same shape) of a 2D template slice scaled to [0, 1]."""
    from skimage.feature import canny

    span = float(np.ptp(template2d))
    scaled = (template2d - template2d.min()) / span if span > 0 else np.zeros_like(template2d)
    return canny(scaled, sigma=sigma, low_threshold=0.05, high_threshold=0.15)


def _centre_of_mass(data: np.ndarray) -> tuple[int, int, int]:
    weights = np.clip(data, 0, None)
    total = weights.sum()
    if total <= 0:
        return tuple(n // 2 for n in data.shape)
    idx = np.indices(data.shape).reshape(3, -1) @ weights.ravel() / total
    return tuple(int(round(v)) for v in idx)


def template_correlation(image_img, template_img, mask_img=None) -> float:
    """Pearson r of an MNI image and the template inside ``mask_img`` (default:
    template > 0); a one-number registration check (≈ 0.95+ when aligned)."""
    template = np.asarray(template_img.dataobj, dtype=float)
    mask = template > 0 if mask_img is None else np.asarray(mask_img.dataobj) > 0
    a, b = np.asarray(image_img.dataobj, dtype=float)[mask], template[mask]
    ok = np.isfinite(a)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return 0.0
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _check_pair(image_img, template_img) -> None:
    from rest2visual.preprocess.resample import image_name

    if image_img.ndim != 3 or template_img.ndim != 3:
        raise InputError(f"QC needs 3D images, found {image_img.shape} and "
                         f"{template_img.shape}")
    if image_img.shape != template_img.shape:
        raise InputError(f"QC: image shape {image_img.shape} differs from the template's "
                         f"{template_img.shape}")
    check_affine(image_img.affine, template_img.affine, image_name(image_img))


def _draw_row(axes, image_img, template_img, mask, cut, label: str = "") -> None:
    """Template edges (red) and mask outline (cyan) over ``image_img`` in three planes."""
    image = np.asarray(image_img.dataobj, dtype=np.float32)
    template = np.asarray(template_img.dataobj, dtype=np.float32)
    finite = image[np.isfinite(image)]
    vmin, vmax = (np.percentile(finite, [1, 99.8]) if finite.size else (0.0, 1.0))
    affine = np.asarray(template_img.affine)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    for ax, (name, axis) in zip(axes, PLANES):
        take = lambda vol: np.take(vol, cut[axis], axis=axis).T  # noqa: E731 - rows = 2nd axis
        other = [a for a in range(3) if a != axis]
        aspect = zooms[other[1]] / zooms[other[0]]
        ax.imshow(take(image), cmap="gray", origin="lower", vmin=vmin, vmax=vmax,
                  aspect=aspect, interpolation="nearest")
        edges = template_edges(take(template))
        ax.imshow(np.ma.masked_where(~edges, edges), cmap="autumn", origin="lower",
                  aspect=aspect, interpolation="nearest", alpha=0.9)
        if mask is not None:
            ax.contour(take(mask).astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(f"{label}{name} ({'ijk'[axis]}={cut[axis]})", color="white", fontsize=10)
        ax.set_xlabel(_axis_label(affine, other[0]), color="white")
        ax.set_ylabel(_axis_label(affine, other[1]), color="white")
        ax.tick_params(colors="white", labelsize=7)


def plot_registration_qc(warped_img, template_img, path, *, title: str | None = None,
                         mask_img=None, cut=None):
    """Draw template edges over ``warped_img`` in sagittal, coronal and axial slices.

    warped_img, template_img : 3D images on the same MNI grid (checked).
    path : output figure (PNG/PDF/SVG by suffix), written atomically.
    mask_img : optional MNI brain mask; its outline is drawn too, and the Pearson
        r of image and template inside it is printed in the title.
    cut : voxel indices (i, j, k) of the three slices; default the template's
        intensity centre of mass.
    Returns the path written.
    """
    return plot_crosscheck_qc({"": warped_img}, template_img, path,
                              title=title or "registration QC", mask_img=mask_img, cut=cut)


def plot_crosscheck_qc(images: dict, template_img, path, *, title: str, mask_img=None,
                       cut=None):
    """One row of :func:`plot_registration_qc` per image (e.g. one per registration).

    images : label → 3D image on the template's MNI grid; each row's title gives its
        label and, with ``mask_img``, its Pearson r with the template in the mask.
    Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rest2visual.atomic import save_figure

    for img in images.values():
        _check_pair(img, template_img)
    template = np.asarray(template_img.dataobj, dtype=np.float32)
    mask = None if mask_img is None else np.asarray(mask_img.dataobj) > 0
    cut = _centre_of_mass(template) if cut is None else tuple(int(c) for c in cut)
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(12, 4.4 * rows), facecolor="black",
                             squeeze=False)
    scores = []
    for row, (label, img) in zip(axes, images.items()):
        _draw_row(row, img, template_img, mask, cut, f"{label}: " if label else "")
        if mask is not None and mask.any():
            r = template_correlation(img, template_img, mask_img)
            scores.append(f"{label + ': ' if label else ''}r(template) in brain mask = {r:.3f}")
    lines = [title, "  |  ".join(scores)] if rows > 1 else ["  |  ".join([title, *scores])]
    fig.suptitle("\n".join(lines + ["red: template edges; cyan: MNI brain mask"]),
                 color="white", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, facecolor=fig.get_facecolor(), dpi=110)
