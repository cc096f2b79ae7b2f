"""Fig. 5: the visual ROI atlas (V1..V5) on the MNI template.

Orthogonal views through the visual cortex's centroid plus a row of axial
slices spanning it, one colour per area, with each area's voxel count in the
legend (counts on the evaluation grid, inside the brain mask).
"""

from __future__ import annotations

import numpy as np

from rest2visual.evaluate.metrics import VISUAL_ROIS
from rest2visual.figures.maps import VIEWS, mask_centroid, ortho_views, to_ras

COLOURS = ("#e41a1c", "#ff7f00", "#4daf4a", "#377eb8", "#984ea3")


def plot_roi_atlas(atlas_img, template_img, n_axial: int = 5):
    """Atlas labels (1..5) over the template (same grid); returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels = to_ras(np.rint(np.asarray(atlas_img.dataobj)).astype(np.int16), atlas_img.affine)
    background = to_ras(np.asarray(template_img.dataobj, dtype=np.float32), template_img.affine)
    if labels.shape != background.shape:
        raise ValueError(f"atlas grid {labels.shape} differs from the template's {background.shape}")
    volume = np.where(labels > 0, labels, np.nan).astype(np.float32)
    cmap = ListedColormap(COLOURS)
    cut = mask_centroid(labels > 0)
    z_levels = np.flatnonzero((labels > 0).any(axis=(0, 1)))
    axial = np.unique(np.linspace(z_levels.min(), z_levels.max(), n_axial + 2)[1:-1].round().astype(int))
    fig = plt.figure(figsize=(12, 6.2))
    top = fig.add_gridspec(2, max(3, len(axial)), hspace=0.15, wspace=0.05)
    ortho_views([fig.add_subplot(top[0, i]) for i in range(3)], volume, background, cut, cmap=cmap,
                vmin=0.5, vmax=5.5, threshold=0.5)
    for i, z in enumerate(axial):
        ax = fig.add_subplot(top[1, i])
        ortho_views([ax], volume, background, (cut[0], cut[1], int(z)), cmap=cmap, vmin=0.5, vmax=5.5,
                    threshold=0.5, titles=False, views=VIEWS[2:])
        ax.set_title(f"axial slice {int(z)}", fontsize=8)
    counts = {name: int((labels == label).sum()) for label, name in VISUAL_ROIS.items()}
    handles = [Patch(color=c, label=f"{name} ({counts[name]} voxels)")
               for c, name in zip(COLOURS, VISUAL_ROIS.values())]
    fig.legend(handles=handles, loc="upper right", fontsize=9, frameon=False)
    fig.suptitle("Visual ROI atlas on the MNI152 template", y=0.98)
    return fig
