"""NSD stimulus images: read from ``imgBrick`` by 73k id and resize for the pack.

NSD's ``nsd_stimuli.hdf5`` holds ``imgBrick``, (73000, 425, 425, 3) uint8 RGB,
row = 0-based 73k image id. The pack keeps each image once, resized to
``image_size`` × ``image_size`` with Pillow's bicubic filter, which widens its
kernel by the reduction factor and so anti-aliases when shrinking (425 → 64 or
224), unlike a plain bicubic interpolation at the target pixel centres.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from rest2visual.checks import InputError, require_file

IMGBRICK = "imgBrick"


def resize_image(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """One (H, W, 3) uint8 RGB image → (image_size, image_size, 3) uint8, bicubic + antialias."""
    from PIL import Image

    if rgb.shape[:2] == (image_size, image_size):
        return np.ascontiguousarray(rgb)
    img = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    return np.asarray(img.resize((image_size, image_size), Image.Resampling.BICUBIC))


def check_imgbrick(h5, source: str | os.PathLike) -> "object":
    """Return the ``imgBrick`` dataset of an open stimuli file, or raise InputError."""
    if IMGBRICK not in h5:
        raise InputError(f"{source}: no '{IMGBRICK}' dataset (expected NSD's nsd_stimuli.hdf5)")
    brick = h5[IMGBRICK]
    if brick.ndim != 4 or brick.shape[3] != 3 or brick.dtype != np.uint8:
        raise InputError(
            f"{source}: expected '{IMGBRICK}' of shape (n, H, W, 3) uint8, "
            f"found {brick.shape} {brick.dtype}"
        )
    return brick


def iter_resized_images(
    stimuli_path: str | os.PathLike, nsd_ids: np.ndarray, image_size: int, batch: int = 32
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, images)`` blocks of the images ``nsd_ids`` (0-based 73k ids), resized.

    ``nsd_ids`` must be strictly increasing (h5py reads increasing index lists
    in one pass over the file); ``images`` is (b, image_size, image_size, 3)
    uint8 and ``start`` its first position in ``nsd_ids``. At most ``batch``
    full-size images are held in memory at a time.
    """
    import h5py

    nsd_ids = np.asarray(nsd_ids, dtype=np.int64)
    if nsd_ids.ndim != 1 or (nsd_ids.size > 1 and np.any(np.diff(nsd_ids) <= 0)):
        raise ValueError("nsd_ids must be a strictly increasing 1D array of 73k ids")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    path = require_file(stimuli_path, "NSD stimuli file (nsd_stimuli.hdf5)")
    with h5py.File(path, "r") as h5:
        brick = check_imgbrick(h5, path)
        if nsd_ids.size and (nsd_ids[0] < 0 or nsd_ids[-1] >= brick.shape[0]):
            raise InputError(
                f"{path}: image ids {nsd_ids[0]}..{nsd_ids[-1]} requested, but '{IMGBRICK}' "
                f"holds {brick.shape[0]} images (0-based ids 0..{brick.shape[0] - 1})"
            )
        for start in range(0, nsd_ids.size, batch):
            ids = nsd_ids[start:start + batch]
            full = brick[ids] if ids.size > 1 else brick[int(ids[0])][None]
            yield start, np.stack([resize_image(im, image_size) for im in full])
