"""Resample MNI data back onto a subject's native functional grid (the inverse direction).

:mod:`~rest2visual.preprocess.resample` brings native data to MNI; decoders of the
field (MindEye2, NeuroPictor, Brain-IT) read native func1pt8mm voxels, so the
decoding bridge needs the opposite: for every native voxel, the MNI point it
corresponds to. Two sources, one per ``registration.method``:

* ``ants``: the registration's affine (inverted) and SyN inverse warp, composed by
  ``antsApplyTransforms`` into one displacement field on the native grid
  (:meth:`NativeResampler.from_ants_inverse`);
* ``nsd``: NSD's ``MNI-to-func1pt8`` coordinate map
  (:func:`~rest2visual.preprocess.nsd_transform.read_nsd_mni_coordinates`).

Either gives the continuous MNI voxel index of each native voxel; the same
trilinear sparse matrix as the forward direction
(:func:`~rest2visual.preprocess.resample.interpolation_matrix`, ITK's linear
interpolation) then samples MNI in-mask vectors at those points.

MNI data live only inside the pack's brain mask (in-mask vectors, C order), so a
native voxel is interpolated from its in-mask neighbours only, their weights
renormalised to sum to 1 (normalised convolution); a voxel with less than
``min_weight`` of its trilinear weight inside the mask, or outside the MNI field
of view, has no source (NaN).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from rest2visual.checks import InputError, check_affine
from rest2visual.preprocess.resample import (displacement_field_coordinates, image_name,
                                             interpolation_matrix)

#: least fraction of a native voxel's trilinear weight that must fall on in-mask MNI voxels
MIN_WEIGHT = 0.5
#: trials per sparse product in :meth:`NativeResampler.to_native`
BLOCK = 512


class NativeResampler:
    """Maps MNI in-mask vectors onto native voxels of one subject.

    Attributes
    ----------
    coords : (x, y, z, 3) float64, the continuous 0-based MNI voxel index of each native
        voxel (NaN = no source).
    native_shape, native_affine : the subject's functional grid (RAS mm affine).
    mni_shape, mni_affine : the MNI grid the data are on.
    source : the transform file(s), for error messages.
    """

    def __init__(self, coords, native_shape, native_affine, mni_shape, mni_affine,
                 source: str = "") -> None:
        self.coords = np.asarray(coords, dtype=float)
        self.native_shape = tuple(int(n) for n in native_shape)
        if self.coords.shape != self.native_shape + (3,):
            raise ValueError(f"coordinates of shape {self.coords.shape} do not fit the native "
                             f"grid {self.native_shape} × 3")
        self.native_affine = np.asarray(native_affine, dtype=float)
        self.mni_shape = tuple(int(n) for n in mni_shape)
        self.mni_affine = np.asarray(mni_affine, dtype=float)
        self.source = source

    @classmethod
    def from_ants_inverse(cls, affine_path, inverse_warp_path, native_img,
                          mni_grid) -> "NativeResampler":
        """From :func:`~rest2visual.preprocess.registration.register_to_mni`'s affine
        (ITK .mat, func → MNI) and inverse SyN warp (``…from-MNI152_to-func…warp``).

        ANTs' own inverse: ``[affine, inverse warp]`` with the affine inverted (antspyx's
        ``invtransforms`` / ``whichtoinvert=[True, False]``), composed into one field on
        the native grid. native_img : any image on the native grid; mni_grid : a
        :class:`~rest2visual.preprocess.template.Grid` (the pack's MNI grid).
        """
        import ants
        import nibabel as nib

        from rest2visual.checks import require_file
        from rest2visual.preprocess.registration import to_ants

        affine_path = require_file(affine_path, "registration affine (ITK .mat)")
        inverse_warp_path = require_file(inverse_warp_path, "inverse SyN warp")
        shape, native_affine = tuple(native_img.shape[:3]), np.asarray(native_img.affine, float)
        fixed = to_ants(nib.Nifti1Image(np.zeros(shape, np.float32), native_affine),
                        "native grid")
        moving = to_ants(nib.Nifti1Image(np.zeros(mni_grid.shape, np.float32),
                                         np.asarray(mni_grid.affine, float)), "MNI grid")
        with tempfile.TemporaryDirectory(prefix="rest2visual-inverse-") as tmp:
            field = ants.apply_transforms(fixed, moving,
                                          [str(affine_path), str(inverse_warp_path)],
                                          whichtoinvert=[True, False],
                                          compose=str(Path(tmp) / "inverse_"))
            if field is None:
                raise RuntimeError(f"antsApplyTransforms wrote no composed inverse field for "
                                   f"{inverse_warp_path}")
            coords, grid = displacement_field_coordinates(field, mni_grid.affine)
        if tuple(grid.shape) != shape:
            raise RuntimeError(f"the composed inverse field has grid {grid.shape}, expected "
                               f"the native grid {shape}")
        return cls(coords, shape, native_affine, mni_grid.shape, mni_grid.affine,
                   source=f"{affine_path} + {inverse_warp_path}")

    @classmethod
    def from_nsd_coordinates(cls, map_path, native_img, mni_grid) -> "NativeResampler":
        """From NSD's ``MNI-to-func1pt8`` map (1-based FSL 1 mm coordinates, 9999 none)."""
        from rest2visual.preprocess.nsd_transform import read_nsd_mni_coordinates

        shape = tuple(native_img.shape[:3])
        coords = read_nsd_mni_coordinates(map_path, shape, mni_grid)
        return cls(coords, shape, native_img.affine, mni_grid.shape, mni_grid.affine,
                   source=str(map_path))

    def check_native(self, img, what: str = "native image") -> None:
        """Raise InputError unless ``img`` lies on this resampler's native grid."""
        if tuple(img.shape[:3]) != self.native_shape:
            raise InputError(f"{image_name(img)}: {what}: expected the native grid "
                             f"{self.native_shape} of {self.source}, found {tuple(img.shape)}")
        check_affine(img.affine, self.native_affine, f"{image_name(img)} ({what})")

    def matrix(self, voxels: np.ndarray, mni_mask: np.ndarray):
        """Sparse (n_voxels × n_mask) trilinear weights: row r = the r-th True voxel of
        ``voxels`` (native (x, y, z) bool, C order), column c = the c-th True voxel of
        ``mni_mask`` (MNI (X, Y, Z) bool, C order, the order of in-mask vectors)."""
        voxels, mni_mask = np.asarray(voxels, bool), np.asarray(mni_mask, bool)
        if voxels.shape != self.native_shape or mni_mask.shape != self.mni_shape:
            raise ValueError(f"masks {voxels.shape}, {mni_mask.shape} do not fit the grids "
                             f"{self.native_shape}, {self.mni_shape}")
        full = interpolation_matrix(self.coords[voxels], self.mni_shape, order=1)
        # the matrix's columns are MNI voxels in Fortran order; keep the in-mask ones, C order
        columns = np.ravel_multi_index(np.nonzero(mni_mask), self.mni_shape, order="F")
        return full.tocsc()[:, columns].tocsr()

    def to_native(self, vectors: np.ndarray, voxels: np.ndarray, mni_mask: np.ndarray, *,
                  min_weight: float = MIN_WEIGHT, block: int = BLOCK) -> np.ndarray:
        """(N, n_mask) MNI in-mask vectors → (N, n_voxels) float32 at the True ``voxels``.

        Each native voxel is the trilinear interpolation of its in-mask MNI neighbours,
        weights renormalised to 1; NaN where less than ``min_weight`` of its weight lies
        in the mask (or it has no MNI source). Units are those of ``vectors``.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != int(np.count_nonzero(mni_mask)):
            raise ValueError(f"expected (N, {int(np.count_nonzero(mni_mask))}) in-mask vectors, "
                             f"found {vectors.shape}")
        W = self.matrix(voxels, mni_mask)
        weight = np.asarray(W.sum(axis=1)).ravel()
        valid = weight >= min_weight
        out = np.full((vectors.shape[0], W.shape[0]), np.nan, dtype=np.float32)
        for t0 in range(0, vectors.shape[0], block):
            part = np.ascontiguousarray(vectors[t0:t0 + block].T, dtype=np.float32)
            values = np.asarray(W @ part).T  # (b, n_voxels)
            out[t0:t0 + block, valid] = values[:, valid] / weight[valid]
        return out
