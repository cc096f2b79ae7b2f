"""Input checks that fail early with a message naming the file and the expectation.

Every stage loads its NIfTI inputs through :func:`load_nifti`, so a wrong shape,
a wrong affine (another grid or another space), NaNs or a missing file all end
in an :class:`InputError` whose text names the file, what was expected and what
was found, instead of a broadcasting error deep inside numpy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from rest2visual.errors import Rest2VisualError


class InputError(Rest2VisualError, ValueError):
    """An input file or value is not what the stage expects (message names both)."""


def require_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """Return ``path`` as a Path, or raise InputError if it does not exist."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    return path


def check_affine(
    actual: np.ndarray, expected: np.ndarray, source: str | os.PathLike, atol: float = 1e-3
) -> None:
    """Raise InputError unless the two 4×4 affines agree within ``atol`` (mm)."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    if actual.shape != (4, 4) or not np.allclose(actual, expected, atol=atol):
        raise InputError(
            f"{source}: expected the affine {np.round(expected, 3).tolist()} of the target grid, "
            f"found {np.round(actual, 3).tolist()}"
        )


def check_finite(data: np.ndarray, source: str | os.PathLike) -> None:
    """Raise InputError if ``data`` holds NaN or infinite values (count given)."""
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(
            f"{source}: {int(bad.sum())} non-finite values (NaN/inf) of {data.size}; "
            "expected finite data"
        )


def load_nifti(
    path: str | os.PathLike,
    *,
    ndim: int | None = None,
    shape: Sequence[int] | None = None,
    affine: np.ndarray | None = None,
    finite: bool = True,
    what: str = "NIfTI image",
):
    """Load a NIfTI image and check it.

    Parameters
    ----------
    path : NIfTI file (``.nii`` or ``.nii.gz``).
    ndim : expected number of dimensions (3 for a volume, 4 for a series).
    shape : expected spatial shape (first three dimensions), voxels.
    affine : expected voxel→world affine (4×4, mm); compared within 1e-3 mm.
    finite : check that the data hold no NaN/inf (reads the data).
    what : how the file is described in error messages.

    Returns
    -------
    nibabel.Nifti1Image (data not cached unless ``finite`` was checked).
    """
    import nibabel as nib

    path = require_file(path, what)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # truncated gzip, wrong magic, ...
        raise InputError(f"{path}: cannot read {what} ({exc})") from exc
    if ndim is not None and img.ndim != ndim:
        raise InputError(f"{path}: expected a {ndim}D {what}, found shape {img.shape}")
    if shape is not None and tuple(img.shape[:3]) != tuple(shape):
        raise InputError(
            f"{path}: expected spatial shape {tuple(shape)} for {what}, found {img.shape[:3]}"
        )
    if affine is not None:
        check_affine(img.affine, affine, path)
    if finite:
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # truncated payload
            raise InputError(f"{path}: cannot read the data of {what} ({exc})") from exc
        check_finite(data, path)
    return img
