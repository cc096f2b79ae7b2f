"""Continuous fields on the truth MNI lattice, and the simulator's random streams.

Every spatial quantity of the simulated NSD that lives in MNI space (network maps,
the gain topography, response weights, trial noise) is a volume on the *truth
lattice*, FSL's MNI152 grid at ``mni_resolution_mm`` (``mni_grid``). A field is
evaluated anywhere in MNI space by trilinear interpolation of that volume, so the
MNI-space truth (the lattice values themselves) and the native-space data (the
field at each native voxel's true MNI position) come from one definition.

Random numbers come from :func:`stream`: one independent, named generator per
purpose (``stream(seed, "noise", subject, session)``), so adding a subject or a
session never changes what another one receives.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np
from scipy import ndimage

from rest2visual.preprocess.template import Grid


def stream(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """An independent random generator for ``purpose`` (a name) and integer ``keys``."""
    tag = zlib.crc32(purpose.encode())
    return np.random.default_rng([int(seed), tag, *(int(k) for k in keys)])


def grid_mm(grid: Grid) -> np.ndarray:
    """MNI mm coordinates of every voxel centre of ``grid``: (X, Y, Z, 3) float64."""
    ijk = np.indices(grid.shape, dtype=np.float64)
    return np.moveaxis(np.tensordot(grid.affine[:3, :3], ijk, axes=1), 0, -1) + grid.affine[:3, 3]


def mm_to_voxel(affine: np.ndarray, coords_mm: np.ndarray) -> np.ndarray:
    """World mm coordinates (..., 3) → continuous voxel indices (..., 3) of ``affine``'s grid."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return np.asarray(coords_mm, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]


def sample(volume: np.ndarray, affine: np.ndarray, coords_mm: np.ndarray, *,
           order: int = 1, mode: str = "nearest", cval: float = 0.0) -> np.ndarray:
    """Evaluate a 3D ``volume`` (grid ``affine``) at MNI mm points ``coords_mm`` (N, 3).

    Trilinear by default; ``mode="nearest"`` continues edge values beyond the grid
    (fields are smooth there), ``mode="constant"`` returns ``cval`` outside.
    Returns float32 (N,).
    """
    idx = mm_to_voxel(affine, coords_mm).T
    return ndimage.map_coordinates(np.asarray(volume, dtype=np.float32), idx, order=order,
                                   mode=mode, cval=cval, prefilter=False).astype(np.float32)


class Sampler:
    """Evaluates lattice volumes at a fixed set of MNI points (precomputed indices).

    Used when many volumes (trials) are sampled at the same native voxels.
    """

    def __init__(self, grid: Grid, coords_mm: np.ndarray):
        self.index = mm_to_voxel(grid.affine, coords_mm).T.copy()

    def __call__(self, volume: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(volume, self.index, order=1, mode="nearest",
                                       prefilter=False).astype(np.float32)


def sigma_voxels(fwhm_mm: float, voxel_mm: float) -> float:
    """Gaussian sigma in voxels for a full width at half maximum in mm."""
    return fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / voxel_mm


@lru_cache(maxsize=16)
def _kernel_norm(sigma_vox: float) -> float:
    """Std of unit white noise after ``gaussian_filter(sigma_vox)`` (away from edges)."""
    size = 2 * int(np.ceil(4 * sigma_vox)) + 1
    delta = np.zeros((size,) * 3)
    delta[(size // 2,) * 3] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(delta, sigma_vox, mode="constant") ** 2).sum()))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], fwhm_mm: float,
                 voxel_mm: float) -> np.ndarray:
    """Gaussian random field with unit variance and the given smoothness: float32 ``shape``."""
    sigma = sigma_voxels(fwhm_mm, voxel_mm)
    white = rng.standard_normal(shape, dtype=np.float32)
    if sigma < 0.3:
        return white
    smooth = ndimage.gaussian_filter(white, sigma, mode="reflect")
    return smooth / np.float32(_kernel_norm(sigma))


def gaussian_blob(coords_mm: np.ndarray, centre_mm, sigma_mm: float) -> np.ndarray:
    """exp(−|x − centre|² / 2σ²) at points ``coords_mm`` (..., 3): float32 (...)."""
    d2 = ((np.asarray(coords_mm) - np.asarray(centre_mm, dtype=np.float64)) ** 2).sum(-1)
    return np.exp(-d2 / (2.0 * sigma_mm**2)).astype(np.float32)


def soft_mask(mask: np.ndarray, fwhm_mm: float, voxel_mm: float) -> np.ndarray:
    """A binary mask blurred to a [0, 1] weight map (soft region edges), float32."""
    return np.clip(ndimage.gaussian_filter(mask.astype(np.float32),
                                           sigma_voxels(fwhm_mm, voxel_mm)), 0, 1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
