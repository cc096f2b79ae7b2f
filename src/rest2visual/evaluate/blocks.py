"""Reading pack rows in blocks: bounded memory whatever the pack's size."""

from __future__ import annotations

import numpy as np

from rest2visual.dataset.pack import Pack

#: rows read from the pack at once (bounded memory whatever the pack's size)
_ROWS_PER_READ = 256


def read_rows(ds, rows, cols=None, dtype=np.float32) -> np.ndarray:
    """``ds[rows][:, cols]`` for increasing ``rows`` of an h5py dataset, read in blocks."""
    rows = np.asarray(rows, dtype=np.int64)
    width = ds.shape[1] if cols is None else int(np.size(np.arange(ds.shape[1])[cols]))
    out = np.empty((len(rows), width), dtype=dtype)
    for start in range(0, len(rows), _ROWS_PER_READ):
        block = ds[rows[start:start + _ROWS_PER_READ].tolist()]
        out[start:start + len(block)] = block if cols is None else block[:, cols]
    return out


def images_of(pack: Pack, image_rows) -> np.ndarray:
    """(N, S, S, 3) uint8 pack images for ``image_rows`` (any order, repeats allowed)."""
    unique, inverse = np.unique(np.asarray(image_rows), return_inverse=True)
    return np.asarray(pack.h5["images"][unique.tolist()])[inverse]
