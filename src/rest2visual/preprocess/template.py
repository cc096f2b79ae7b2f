"""The MNI152 target grid, template and brain mask.

The target grid is FSL's MNI152 grid (2 mm: 91×109×91, affine
``[[-2,0,0,90],[0,2,0,-126],[0,0,2,-72]]``), the convention NSD's own MNI
outputs follow. Other resolutions keep the same field of view and origin
(e.g. 4 mm: 46×55×46), so one code path serves the paper (2 mm) and the demo.
nilearn's bundled MNI152 (2009) template and brain mask are resampled onto it;
nilearn's own 2 mm grid (99×117×95) is never used directly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: FSL MNI152 field of view, mm: x runs +90 → −90 (radiological voxel order),
#: y −126 → +90, z −72 → +108
_FOV_MM = (180.0, 216.0, 180.0)
_ORIGIN_MM = (90.0, -126.0, -72.0)


@dataclass(frozen=True)
class Grid:
    """A voxel grid in MNI space: ``shape`` (X, Y, Z) voxels and a 4×4 ``affine`` (mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_mm(self) -> float:
        return float(abs(self.affine[0, 0]))


def mni_grid(resolution_mm: float = 2.0) -> Grid:
    """FSL's MNI152 grid at ``resolution_mm`` (2 → 91×109×91, 4 → 46×55×46)."""
    r = float(resolution_mm)
    shape = tuple(int(np.floor(f / r + 1e-6)) + 1 for f in _FOV_MM)
    affine = np.array([
        [-r, 0, 0, _ORIGIN_MM[0]],
        [0, r, 0, _ORIGIN_MM[1]],
        [0, 0, r, _ORIGIN_MM[2]],
        [0, 0, 0, 1],
    ])
    return Grid(shape=shape, affine=affine)


@lru_cache(maxsize=4)
def _resampled(kind: str, resolution_mm: float):
    from nilearn import datasets, image

    grid = mni_grid(resolution_mm)
    if kind == "template":
        src = datasets.load_mni152_template(resolution=1)
        out = image.resample_img(src, target_affine=grid.affine, target_shape=grid.shape,
                                 interpolation="continuous", force_resample=True,
                                 copy_header=True)
        data = np.clip(out.get_fdata(dtype=np.float32), 0, None)
    else:
        mask = datasets.load_mni152_brain_mask(resolution=1)
        # resample the mask as a float field and threshold at 0.5: partial-volume
        # correct at any resolution, unlike nearest-neighbour
        src = image.new_img_like(mask, mask.get_fdata(dtype=np.float32))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Resampling binary images")
            out = image.resample_img(src, target_affine=grid.affine, target_shape=grid.shape,
                                     interpolation="continuous", force_resample=True,
                                     copy_header=True)
        data = (out.get_fdata(dtype=np.float32) > 0.5).astype(np.uint8)
    return data


def mni_template(resolution_mm: float = 2.0):
    """nilearn's MNI152 (2009) T1 template on the FSL grid (float32 Nifti1Image)."""
    import nibabel as nib

    grid = mni_grid(resolution_mm)
    return nib.Nifti1Image(_resampled("template", float(resolution_mm)).copy(), grid.affine)


def mni_brain_mask(resolution_mm: float = 2.0):
    """nilearn's MNI152 brain mask on the FSL grid (uint8 0/1 Nifti1Image)."""
    import nibabel as nib

    grid = mni_grid(resolution_mm)
    return nib.Nifti1Image(_resampled("mask", float(resolution_mm)).copy(), grid.affine)


def main(argv: list[str] | None = None) -> int:
    """``rest2visual template``: write the MNI template and brain mask on the target grid."""
    import argparse

    from rest2visual.atomic import save_nifti

    parser = argparse.ArgumentParser(prog="rest2visual template", description=main.__doc__)
    parser.add_argument("--resolution", type=float, required=True, help="voxel size, mm")
    parser.add_argument("--template", required=True, help="output T1 template NIfTI")
    parser.add_argument("--mask", required=True, help="output brain mask NIfTI")
    args = parser.parse_args(argv)
    save_nifti(mni_template(args.resolution), args.template)
    save_nifti(mni_brain_mask(args.resolution), args.mask)
    grid = mni_grid(args.resolution)
    print(f"MNI152 grid {grid.shape} at {args.resolution:g} mm → {args.template}, {args.mask}")
    return 0
