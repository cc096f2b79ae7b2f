"""Brain-masked voxel vectors ↔ MNI volumes.

Evoked betas, packed triplets and predictions are stored as in-mask vectors
(C order of the mask's True voxels), with the boolean mask and the grid affine
kept beside them, so that any vector turns back into a NIfTI exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rest2visual.checks import InputError, check_affine


@dataclass(frozen=True)
class MaskedGrid:
    """A boolean brain mask ``mask`` (X, Y, Z) on a grid with 4×4 ``affine`` (mm, MNI)."""

    mask: np.ndarray
    affine: np.ndarray

    @classmethod
    def from_img(cls, mask_img) -> "MaskedGrid":
        return cls(np.asarray(mask_img.dataobj) > 0, np.asarray(mask_img.affine, dtype=float))

    @classmethod
    def from_h5(cls, group) -> "MaskedGrid":
        """Read ``mask`` dataset + ``affine`` attribute from an h5py group or file."""
        if "mask" not in group:
            raise InputError(f"{group.file.filename}: no 'mask' dataset (expected a masked-vector file)")
        return cls(group["mask"][()] > 0, np.asarray(group["mask"].attrs["affine"], dtype=float))

    def write_h5(self, group) -> None:
        """Store the mask (uint8, X×Y×Z) with its affine as an attribute in an h5py group."""
        ds = group.create_dataset("mask", data=self.mask.astype(np.uint8), compression="gzip")
        ds.attrs["affine"] = self.affine

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mask.shape)

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())

    def flat_index(self) -> np.ndarray:
        """(n_voxels,) int64 C-order indices of in-mask voxels in the flattened grid."""
        return np.flatnonzero(self.mask.ravel())

    def check_img(self, img, source) -> None:
        """Raise InputError unless ``img`` lies on this grid (shape and affine)."""
        if tuple(img.shape[:3]) != self.shape:
            raise InputError(f"{source}: expected grid shape {self.shape}, found {img.shape[:3]}")
        check_affine(img.affine, self.affine, source)

    def to_vectors(self, data: np.ndarray) -> np.ndarray:
        """(X,Y,Z) → (n_voxels,) or (X,Y,Z,N) → (N, n_voxels) in-mask values."""
        if data.shape[:3] != self.shape:
            raise InputError(f"expected volumes of shape {self.shape}, got {data.shape[:3]}")
        if data.ndim == 3:
            return data[self.mask]
        return np.moveaxis(data[self.mask], -1, 0)

    def to_volume(self, vectors: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """(n_voxels,) → (X,Y,Z) or (N, n_voxels) → (X,Y,Z,N), ``fill`` outside the mask."""
        vectors = np.asarray(vectors)
        if vectors.shape[-1] != self.n_voxels:
            raise InputError(f"expected vectors of {self.n_voxels} in-mask voxels, got {vectors.shape}")
        if vectors.ndim == 1:
            out = np.full(self.shape, fill, dtype=vectors.dtype)
            out[self.mask] = vectors
            return out
        out = np.full(self.shape + (vectors.shape[0],), fill, dtype=vectors.dtype)
        out[self.mask] = vectors.T
        return out

    def to_nifti(self, vectors: np.ndarray, dtype=np.float32):
        """In-mask vector(s) → nibabel Nifti1Image on this grid (3D or 4D)."""
        import nibabel as nib

        return nib.Nifti1Image(self.to_volume(np.asarray(vectors, dtype=dtype)), self.affine)
