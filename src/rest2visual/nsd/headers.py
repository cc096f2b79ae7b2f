"""A NIfTI file's header and completeness from a few bytes, wherever the file is.

``rest2visual check-nsd`` must inspect hundreds of gigabyte-sized files in
seconds, locally or on S3. :func:`read_nifti_info` reads the header from the
first few KB (inflating only the start of a ``.nii.gz`` stream) and tells a
truncated file from a whole one by the gzip trailer: its last 4 bytes (ISIZE)
hold the uncompressed size mod 2³², which must equal the header's
``vox_offset`` + voxels × bytes per voxel. One short read at each end of the
file, instead of inflating it.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from rest2visual.checks import InputError

#: first bytes fetched to inflate a .nii.gz header (grown ×4 up to 1 MiB if needed)
HEADER_PROBE_BYTES = 4096
#: bytes after the data that a NIfTI writer may leave (ISIZE tolerance)
TRAILING_SLACK = 65536


@dataclass(frozen=True)
class NiftiInfo:
    """What the header says: shape, dtype, voxel → world affine (mm), zooms, units."""

    shape: tuple[int, ...]
    dtype: np.dtype
    affine: np.ndarray
    zooms: tuple[float, ...]
    time_unit: str
    data_end: int            # vox_offset + voxels × itemsize: the uncompressed size

    @property
    def tr_field(self) -> float:
        return float(self.zooms[3]) if len(self.zooms) > 3 else 0.0


def _parse_header(raw: bytes) -> NiftiInfo:
    import nibabel as nib

    if len(raw) < 348:
        raise InputError(f"header: {len(raw)} bytes, a NIfTI header needs 348")
    little = struct.unpack("<i", raw[:4])[0]
    sizeof_hdr = little if little in (348, 540) else struct.unpack(">i", raw[:4])[0]
    klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(sizeof_hdr)
    if klass is None:
        raise InputError(f"header: sizeof_hdr {sizeof_hdr}, not a NIfTI-1/2 file")
    try:
        header = klass.from_fileobj(io.BytesIO(raw[:sizeof_hdr]), check=False)
        shape = tuple(int(n) for n in header.get_data_shape())
        dtype = header.get_data_dtype()
        affine = header.get_best_affine()
    except Exception as exc:  # nibabel raises many kinds on garbage
        raise InputError(f"header does not parse ({exc})") from exc
    data_end = int(header["vox_offset"]) + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return NiftiInfo(shape, dtype, affine, tuple(float(z) for z in header.get_zooms()),
                     header.get_xyzt_units()[1], data_end)


def read_nifti_info(store, key: str, size: int, *, full: bool = False) -> NiftiInfo:
    """Header of ``key`` and a truncation check; InputError says what is wrong.

    ``.nii``: the file must hold ``data_end`` bytes. ``.nii.gz``: the header is
    inflated from the first KB, and the gzip trailer (ISIZE, uncompressed size
    mod 2³²) must match ``data_end`` (up to 64 KB of trailing bytes allowed);
    ``full`` (or a mismatch, on a local file) inflates the whole stream instead.
    """
    if not key.endswith(".gz"):
        info = _parse_header(store.read(key, 0, 540))
        if size < info.data_end:
            raise InputError(f"{size} bytes, the header implies {info.data_end} (truncated)")
        return info
    length, raw = HEADER_PROBE_BYTES, b""
    while len(raw) < 540:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = store.read(key, 0, min(length, size))
        try:
            raw = inflate.decompress(chunk, 540)
        except zlib.error as exc:
            raise InputError(f"not a readable gzip stream ({exc})") from exc
        if length >= min(size, 1 << 20):
            break
        length *= 4
    info = _parse_header(raw)
    if size < 18:
        raise InputError(f"{size} bytes: shorter than an empty gzip stream")
    isize = struct.unpack("<I", store.read(key, size - 4, 4))[0]
    fits = (isize - info.data_end) % (1 << 32) < TRAILING_SLACK
    if full or (not fits and store.local_path(key) is not None):
        inflated = _inflated_size(store, key)
        if inflated < info.data_end:
            raise InputError(f"the gzip stream ends after {inflated} uncompressed bytes, the "
                             f"header implies {info.data_end} (truncated)")
    elif not fits:
        raise InputError(f"gzip trailer gives {isize} uncompressed bytes (mod 2^32), the header "
                         f"implies {info.data_end}: truncated or corrupt ({size} bytes stored)")
    return info


def _inflated_size(store, key: str) -> int:
    """Bytes the whole gzip stream inflates to; InputError when it ends early."""
    import gzip

    total = 0
    try:
        with store.open(key) as raw, gzip.GzipFile(fileobj=raw) as fh:
            while chunk := fh.read(1 << 16):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"the gzip stream breaks after {total} uncompressed bytes ({exc}): "
                         "truncated or corrupt") from exc
    return total
