"""Native functional grids, each subject's true native → MNI mapping, and anatomy.

A subject's native (func) grid has NSD's simple header: voxel size ``voxel_mm``
and the origin at the grid centre, so header mm ``p`` says nothing about MNI
(NSD's quirk; registration must find the alignment). The *true* mapping of a
native point to MNI152 mm is

    x(p) = c + R·S·(p − d) + u(p)

with ``c`` the MNI brain's centre, ``d`` where the subject's brain centre sits in
the native field of view (≤ ~8 mm off centre), ``R`` a rotation (≤ ~8° per axis),
``S`` per-axis scales (0.92–1.08, enlarged where the brain would not fit the field
of view) and ``u`` a smooth nonlinear displacement: a sum of Gaussian radial basis
functions (σ ≈ 30 mm) with a peak of a few mm. The inverse (MNI → native) is found
by fixed-point iteration, which converges because ``u`` is smooth (|∇u| ≪ 1).

The native anatomy is nilearn's 1 mm MNI152 template sampled at each native voxel's
true MNI position (lightly blurred against aliasing, plus a mild bias field and
noise); the liberal brain mask is nilearn's brain mask sampled likewise and dilated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from rest2visual.nsd.keys import FUNC1PT8MM_SHAPES
from rest2visual.nsd.simulate.fields import sample, stream
from rest2visual.preprocess.nsd_transform import (FSL_1MM_AFFINE, FSL_1MM_SHAPE, INVALID,
                                                  NSD_MNI_HEADER_AFFINE)
from rest2visual.preprocess.template import Grid

NSD_VOXEL_MM = 1.8
MAX_ROTATION_DEG = 8.0
MAX_OFFSET_MM = 8.0
SCALE_RANGE = (0.92, 1.08)
WARP_CENTRES = 16
WARP_SIGMA_MM = 30.0
WARP_PEAK_MM = (2.0, 4.0)
#: brain below this MNI z (lower brainstem) may fall outside the field of view, as in NSD
FIT_ABOVE_Z_MM = -45.0
FIXED_POINT_ITERATIONS = 30
FIXED_POINT_TOLERANCE_MM = 1e-5
#: FSL's 1 mm MNI152 grid, the grid of NSD's own func → MNI coordinate maps
FSL_1MM = Grid(shape=FSL_1MM_SHAPE, affine=FSL_1MM_AFFINE)


def native_shape(subject: int, voxel_mm: float) -> tuple[int, int, int]:
    """Native grid (X, Y, Z) voxels: NSD's 1.8 mm grid of ``subject``, same field of view."""
    shape = FUNC1PT8MM_SHAPES[subject]
    if abs(voxel_mm - NSD_VOXEL_MM) < 1e-6:
        return tuple(shape)
    return tuple(int(np.ceil(n * NSD_VOXEL_MM / voxel_mm - 1e-6)) for n in shape)


def native_header_affine(shape, voxel_mm: float) -> np.ndarray:
    """NSD-style simple header: diagonal voxel size, origin at the grid centre (4×4, mm)."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -(np.asarray(shape, dtype=float) - 1) / 2 * voxel_mm
    return affine


@lru_cache(maxsize=1)
def _mni152_1mm():
    """nilearn's bundled 1 mm MNI152 template and brain mask (float32 arrays, affine)."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    return (t1.get_fdata(dtype=np.float32), mask.get_fdata(dtype=np.float32),
            np.asarray(t1.affine, dtype=float))


@lru_cache(maxsize=1)
def _brain_points() -> np.ndarray:
    """MNI mm of (a subsample of) brain-mask voxels above FIT_ABOVE_Z_MM, for fitting."""
    _, mask, affine = _mni152_1mm()
    ijk = np.argwhere(mask[::2, ::2, ::2] > 0) * 2
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    return xyz[xyz[:, 2] > FIT_ABOVE_Z_MM]


def _rotation(angles_rad) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class SubjectSpace:
    """A subject's native grid and its true mapping to MNI152 (see the module docstring).

    ``header_affine`` maps native voxel indices to header mm ``p``; ``linear_mm`` (4×4)
    is the affine part p → MNI mm; the warp is ``Σ_k a_k exp(−|p − c_k|²/2σ²)`` with
    centres ``warp_centres_mm`` (K, 3, header mm) and amplitudes ``warp_amplitudes_mm``.
    """

    subject: int
    shape: tuple[int, int, int]
    voxel_mm: float
    header_affine: np.ndarray
    linear_mm: np.ndarray
    warp_centres_mm: np.ndarray
    warp_amplitudes_mm: np.ndarray
    warp_sigma_mm: float
    rotation_deg: tuple[float, float, float]
    scales: tuple[float, float, float]
    offset_mm: tuple[float, float, float]

    def displacement(self, p_mm: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
        """Nonlinear displacement u(p) (N, 3) mm at header-mm points ``p_mm`` (N, 3)."""
        p_mm = np.asarray(p_mm, dtype=np.float64)
        c, a = self.warp_centres_mm, self.warp_amplitudes_mm
        out = np.empty_like(p_mm)
        for s in range(0, len(p_mm), chunk):
            p = p_mm[s:s + chunk]
            # squared distances elementwise: an inner dimension of 3 gains nothing from BLAS
            d2 = sum((p[:, k, None] - c[None, :, k]) ** 2 for k in range(3))
            out[s:s + chunk] = np.exp(d2 * (-0.5 / self.warp_sigma_mm**2)) @ a
        return out

    def native_to_mni_mm(self, ijk: np.ndarray) -> np.ndarray:
        """True MNI mm (N, 3) of native voxel coordinates ``ijk`` (N, 3, 0-based)."""
        hdr = self.header_affine
        p = np.asarray(ijk, dtype=np.float64) @ hdr[:3, :3].T + hdr[:3, 3]
        return p @ self.linear_mm[:3, :3].T + self.linear_mm[:3, 3] + self.displacement(p)

    def mni_to_native(self, xyz_mm: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
        """Native voxel coordinates (N, 3, 0-based, continuous) of MNI mm points (N, 3)."""
        xyz_mm = np.asarray(xyz_mm, dtype=np.float64)
        inv_lin = np.linalg.inv(self.linear_mm)
        out = np.empty_like(xyz_mm)
        for s in range(0, len(xyz_mm), chunk):
            x = xyz_mm[s:s + chunk]
            p = x @ inv_lin[:3, :3].T + inv_lin[:3, 3]
            for _ in range(FIXED_POINT_ITERATIONS):
                nxt = (x - self.displacement(p)) @ inv_lin[:3, :3].T + inv_lin[:3, 3]
                done = np.abs(nxt - p).max() < FIXED_POINT_TOLERANCE_MM
                p = nxt
                if done:
                    break
            out[s:s + chunk] = self._header_mm_to_voxel(p)
        return out

    def _header_mm_to_voxel(self, p_mm: np.ndarray) -> np.ndarray:
        inv_hdr = np.linalg.inv(self.header_affine)
        return p_mm @ inv_hdr[:3, :3].T + inv_hdr[:3, 3]

    def voxel_mni_mm(self) -> np.ndarray:
        """True MNI mm of every native voxel: (X, Y, Z, 3) float64."""
        ijk = np.indices(self.shape).reshape(3, -1).T
        return self.native_to_mni_mm(ijk).reshape(*self.shape, 3)

    def to_json(self) -> dict:
        return {
            "shape": list(self.shape), "voxel_mm": self.voxel_mm,
            "header_affine": self.header_affine.tolist(),
            "linear_mm": self.linear_mm.tolist(),
            "rotation_deg": list(self.rotation_deg), "scales": list(self.scales),
            "offset_mm": list(self.offset_mm),
            "warp": {"sigma_mm": self.warp_sigma_mm,
                     "centres_mm": self.warp_centres_mm.tolist(),
                     "amplitudes_mm": self.warp_amplitudes_mm.tolist()},
        }


def make_subject_space(subject: int, voxel_mm: float, seed: int) -> SubjectSpace:
    """Draw ``subject``'s native grid and true native → MNI mapping from ``seed``."""
    rng = stream(seed, "anatomy.space", subject)
    shape = native_shape(subject, voxel_mm)
    header = native_header_affine(shape, voxel_mm)
    angles_deg = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3)
    scales = rng.uniform(*SCALE_RANGE, 3)
    offset = rng.uniform(-MAX_OFFSET_MM, MAX_OFFSET_MM, 3)
    rot = _rotation(np.deg2rad(angles_deg))
    brain = _brain_points()
    centre = (brain.min(0) + brain.max(0)) / 2
    warp_peak = rng.uniform(*WARP_PEAK_MM)
    half_fov = np.asarray(shape) * voxel_mm / 2
    margin = voxel_mm + warp_peak
    # a brain that would not fit the field of view is made smaller along that axis
    # (real brains are smaller than MNI152, NSD's field of view is tight)
    for _ in range(3):
        local = (brain - centre) @ rot / scales  # = S⁻¹Rᵀ(x − c), native mm about d
        half_extent = (local.max(0) - local.min(0)) / 2
        scales = scales * np.maximum(1.0, half_extent / (half_fov - margin))
    local = (brain - centre) @ rot / scales
    mid = (local.max(0) + local.min(0)) / 2
    room = np.maximum(half_fov - margin - (local.max(0) - local.min(0)) / 2, 0.0)
    offset = np.clip(offset, -room, room) - mid
    m = rot * scales  # R·S
    linear = np.eye(4)
    linear[:3, :3] = m
    linear[:3, 3] = centre - m @ offset
    centres = rng.uniform(-half_fov, half_fov, (WARP_CENTRES, 3))
    amplitudes = rng.standard_normal((WARP_CENTRES, 3))
    space = SubjectSpace(subject, shape, float(voxel_mm), header, linear, centres, amplitudes,
                         WARP_SIGMA_MM, tuple(angles_deg), tuple(scales), tuple(offset))
    probe = np.indices(shape)[:, ::2, ::2, ::2].reshape(3, -1).T
    probe_mm = probe @ header[:3, :3].T + header[:3, 3]
    peak = np.abs(space.displacement(probe_mm)).max()
    return SubjectSpace(subject, shape, float(voxel_mm), header, linear, centres,
                        amplitudes * (warp_peak / peak), WARP_SIGMA_MM, tuple(angles_deg),
                        tuple(scales), tuple(offset))


@lru_cache(maxsize=2)
def _blurred_t1(voxel_mm: float) -> np.ndarray:
    """The 1 mm template with a light anti-aliasing blur (σ = a quarter native voxel).

    NSD's T1_to_func1pt8mm is the T1 *interpolated* onto the func grid, not averaged
    over each voxel, so the simulation samples a barely blurred template.
    """
    t1 = _mni152_1mm()[0]
    sigma = 0.25 * voxel_mm
    return ndimage.gaussian_filter(t1, sigma) if sigma > 0.3 else t1


def native_anatomy(space: SubjectSpace, voxel_mni_mm: np.ndarray, seed: int) -> np.ndarray:
    """T1 anatomy in native space, int16 (X, Y, Z), template intensities × 1000."""
    affine = _mni152_1mm()[2]
    t1 = _blurred_t1(space.voxel_mm)
    flat = voxel_mni_mm.reshape(-1, 3)
    values = sample(t1, affine, flat, mode="constant").reshape(space.shape)
    rng = stream(seed, "anatomy.t1", space.subject)
    half = (np.asarray(space.shape, dtype=np.float64) / 2)[:, None, None, None]
    p = (np.indices(space.shape, dtype=np.float64) + 0.5 - half) / half  # −1..1 across the FOV
    coef = rng.normal(0, 0.06, 3)
    bias = np.exp(np.tensordot(coef, p, axes=1) + rng.normal(0, 0.04) * (p**2).sum(0))
    noisy = values * bias + rng.normal(0, 0.01, space.shape)
    return np.clip(np.rint(noisy * 1000), 0, 32767).astype(np.int16)


def native_brain(space: SubjectSpace, voxel_mni_mm: np.ndarray) -> np.ndarray:
    """Native voxels inside the true brain (bool (X, Y, Z)): nilearn's mask, sampled."""
    _, mask, affine = _mni152_1mm()
    inside = sample(mask, affine, voxel_mni_mm.reshape(-1, 3), mode="constant")
    return inside.reshape(space.shape) > 0.5


def liberal_brainmask(brain: np.ndarray, voxel_mm: float) -> np.ndarray:
    """NSD's liberal mask: the brain dilated by ~4 mm (at least one voxel), bool."""
    steps = max(1, int(round(4.0 / voxel_mm)))
    return ndimage.binary_dilation(brain, ndimage.generate_binary_structure(3, 1), steps)


def _upsample2(a: np.ndarray, axis: int) -> np.ndarray:
    """Insert the midpoint between neighbours along ``axis``: n nodes → 2n − 1 values."""
    a = np.moveaxis(a, axis, 0)
    out = np.empty((2 * a.shape[0] - 1,) + a.shape[1:], a.dtype)
    out[0::2] = a
    out[1::2] = (a[:-1] + a[1:]) / 2
    return np.moveaxis(out, 0, axis)


def func_to_mni_coordmap(space: SubjectSpace, grid: Grid = FSL_1MM) -> np.ndarray:
    """NSD's func → MNI coordinate map on ``grid`` (NSD: FSL 1 mm): (X, Y, Z, 3) float32.

    For each MNI voxel, the 1-based native voxel coordinates it comes from, 9999 where
    that point lies outside the native field of view. Only MNI voxels within the
    bounding box of the native field of view's true MNI image (plus a margin) can have
    a source. The true inverse mapping is computed exactly on every second voxel of
    the grid and linearly interpolated in between: it is affine plus a warp smooth
    over 30 mm, so the interpolation error is below 0.01 mm, and grids of even
    spacing (2, 4, 6 mm on the FSL grid) fall on exactly computed voxels.
    """
    corners = np.stack(np.meshgrid(*[np.linspace(0, n - 1, 8) for n in space.shape],
                                   indexing="ij"), -1).reshape(-1, 3)
    faces = corners[np.any((corners == 0) | (corners == np.asarray(space.shape) - 1), axis=1)]
    extent = space.native_to_mni_mm(faces)
    margin = 2 * space.voxel_mm + np.abs(space.warp_amplitudes_mm).sum(0).max()
    to_index = np.linalg.inv(grid.affine)
    box = np.stack([extent.min(0) - margin, extent.max(0) + margin]) @ to_index[:3, :3].T \
        + to_index[:3, 3]
    lo = np.clip(np.floor(box.min(0)).astype(int), 0, np.asarray(grid.shape) - 1)
    hi = np.clip(np.ceil(box.max(0)).astype(int), 0, np.asarray(grid.shape) - 1)
    # every second voxel from lo (even offsets from the grid origin), one node past hi
    lo -= lo % 2
    axes = [np.arange(a, b + 3, 2) for a, b in zip(lo, hi)]
    nodes = np.stack(np.meshgrid(*axes, indexing="ij"), -1).astype(float)
    nodes_mm = nodes @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    # float32 (≈1e-5 voxel at these coordinates): the map NSD stores is float32 too
    ijk = space.mni_to_native(nodes_mm.reshape(-1, 3)).reshape(*nodes.shape).astype(np.float32)
    del nodes, nodes_mm
    for axis in range(3):  # linear interpolation halfway between nodes, axis by axis
        ijk = _upsample2(ijk, axis)
    ijk = ijk[:hi[0] - lo[0] + 1, :hi[1] - lo[1] + 1, :hi[2] - lo[2] + 1]
    inside = np.all((ijk >= 0) & (ijk <= np.asarray(space.shape) - 1), axis=-1)
    ijk += 1  # NSD: 1-based
    ijk[~inside] = INVALID
    out = np.full((*grid.shape, 3), float(INVALID), np.float32)
    out[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = ijk
    return out


def mni_to_func_coordmap(voxel_mni_mm: np.ndarray, grid: Grid = FSL_1MM) -> np.ndarray:
    """NSD's MNI → func coordinate map (``MNI-to-func1pt8``) on the native grid: (X, Y, Z, 3)
    float32.

    ``voxel_mni_mm``: (X, Y, Z, 3) true MNI mm of every native voxel
    (:meth:`SubjectSpace.voxel_mni_mm`). At each native voxel, the **1-based** voxel
    coordinates of that point in ``grid``'s array (NSD: FSL's MNI152 1 mm, 182×218×182,
    first voxel on the right, :data:`FSL_1MM`), 9999 where it lies outside that array —
    what nsdcode's volume-to-volume case interpolates MNI data at to bring it to func
    space. Exact at every voxel (no interpolation of the mapping), the inverse of
    :func:`func_to_mni_coordmap`.
    """
    to_index = np.linalg.inv(grid.affine)
    ijk = np.asarray(voxel_mni_mm, dtype=np.float64) @ to_index[:3, :3].T + to_index[:3, 3]
    inside = np.all((ijk >= 0) & (ijk <= np.asarray(grid.shape) - 1), axis=-1)
    out = (ijk + 1).astype(np.float32)  # NSD: 1-based
    out[~inside] = INVALID
    return out


__all__ = ["SubjectSpace", "make_subject_space", "native_shape", "native_header_affine",
           "native_anatomy", "native_brain", "liberal_brainmask",
           "func_to_mni_coordmap", "mni_to_func_coordmap", "FSL_1MM", "NSD_MNI_HEADER_AFFINE"]
