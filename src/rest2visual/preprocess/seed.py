"""The PCC seed region in MNI space and its mean time series.

The seed is a sphere around an MNI coordinate (mm) or a user-given seed mask
NIfTI on the same grid; either way only voxels inside the MNI brain mask count,
so a sphere that grazes the edge of the brain never averages in background.
"""

from __future__ import annotations

import numpy as np

from rest2visual.checks import InputError, check_affine
from rest2visual.preprocess.template import Grid


def _describe(img, default: str) -> str:
    """The file name of ``img`` if it has one, else ``default`` (for error messages)."""
    name = img.get_filename() if hasattr(img, "get_filename") else None
    return str(name) if name else default


def voxel_centers_mm(grid) -> np.ndarray:
    """(X, Y, Z, 3) world coordinates (mm) of the voxel centres of ``grid`` (shape + affine)."""
    ijk = np.indices(tuple(grid.shape), dtype=np.float64)  # (3, X, Y, Z)
    affine = np.asarray(grid.affine, dtype=np.float64)
    return np.einsum("ab,bxyz->xyza", affine[:3, :3], ijk) + affine[:3, 3]


def sphere_mask(grid, center_mm, radius_mm: float) -> np.ndarray:
    """Boolean (X, Y, Z) mask of the voxels whose centres lie within ``radius_mm`` of ``center_mm``.

    ``grid`` is anything with ``shape`` (X, Y, Z) and a 4×4 voxel→MNI ``affine`` (mm),
    e.g. :func:`rest2visual.preprocess.template.mni_grid`. ``center_mm`` is (x, y, z) in mm.
    """
    center = np.asarray(center_mm, dtype=np.float64)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ValueError(f"seed centre must be 3 finite MNI coordinates (mm), got {center_mm!r}")
    if not radius_mm > 0:
        raise ValueError(f"seed radius must be > 0 mm, got {radius_mm}")
    dist2 = ((voxel_centers_mm(grid) - center) ** 2).sum(axis=-1)
    return dist2 <= float(radius_mm) ** 2


def seed_region(mask_img, *, center_mm=None, radius_mm: float | None = None,
                seed_mask_img=None) -> np.ndarray:
    """Boolean (X, Y, Z) seed region ∩ brain mask, on the brain mask's MNI grid.

    Parameters
    ----------
    mask_img : MNI brain mask (3D NIfTI, nonzero = brain).
    center_mm, radius_mm : the seed sphere (MNI mm); used unless ``seed_mask_img`` is given.
    seed_mask_img : a 3D seed mask NIfTI on the brain mask's grid (nonzero = seed);
        overrides the sphere.

    Raises InputError when the seed mask is on another grid or when no seed voxel
    lies inside the brain mask (the message names the seed and the mask).
    """
    brain = np.asarray(mask_img.dataobj) > 0
    mask_name = _describe(mask_img, "the brain mask")
    if seed_mask_img is not None:
        seed_name = _describe(seed_mask_img, "the seed mask")
        if tuple(seed_mask_img.shape) != brain.shape:
            raise InputError(f"{seed_name}: expected a 3D seed mask of shape {brain.shape} "
                             f"(the grid of {mask_name}), found {seed_mask_img.shape}")
        check_affine(seed_mask_img.affine, mask_img.affine, seed_name)
        seed = np.asarray(seed_mask_img.dataobj) > 0
        what = f"seed mask {seed_name} ({int(seed.sum())} nonzero voxels)"
    else:
        if center_mm is None or radius_mm is None:
            raise ValueError("give either a seed mask image or a seed centre and radius")
        grid = Grid(shape=tuple(mask_img.shape[:3]), affine=np.asarray(mask_img.affine, float))
        seed = sphere_mask(grid, center_mm, radius_mm)
        what = (f"seed sphere of radius {radius_mm} mm at MNI {tuple(np.round(center_mm, 2))} "
                f"({int(seed.sum())} voxels on the grid)")
    region = seed & brain
    if not region.any():
        raise InputError(f"the {what} has no voxel inside the brain mask {mask_name} "
                         f"({int(brain.sum())} voxels)")
    return region


def seed_timeseries(data_2d: np.ndarray, seed_idx) -> np.ndarray:
    """(T,) float64 mean over the seed voxels of a (T, V) time × voxel array.

    ``seed_idx`` selects columns of ``data_2d``: integer indices or a (V,) boolean.
    """
    data_2d = np.asarray(data_2d)
    if data_2d.ndim != 2:
        raise ValueError(f"expected a (time, voxel) array, got shape {data_2d.shape}")
    cols = data_2d[:, seed_idx]
    if cols.shape[1] == 0:
        raise InputError("the seed region selects no voxel")
    return cols.mean(axis=1, dtype=np.float64)
