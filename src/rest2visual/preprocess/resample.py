"""Resample native (functional-space) volumes and series onto the MNI grid.

One subject's whole mapping MNI → native is read once, either from ANTs'
composed displacement field (all registration transforms composed into one
field on the MNI grid) or from NSD's own coordinate map, and turned into the
native voxel coordinate of every MNI voxel. From these coordinates a sparse
interpolation matrix ``W`` (MNI voxels × native voxels, ≤ 8 weights a row) is
built once; every volume of a 4D series is then one sparse product, applied to
chunks of volumes read in order, so memory stays at the output plus one chunk
instead of ``antsApplyTransforms -e 3``'s several copies of the whole series.

Interpolation follows ITK's ``LinearInterpolateImageFunction`` as used by
``antsApplyTransforms``, so results agree with ANTs to float precision: a point
is inside the native image when each continuous index lies in
``[-0.5, n - 0.5)``; inside, the index is clamped to ``[0, n - 1]`` and
interpolated trilinearly; outside, the value is 0.

Spaces: NIfTI affines are RAS+ (nibabel), ITK/ANTs physical points and
displacement vectors are LPS+; the two differ by negating x and y.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from rest2visual.checks import InputError, check_affine
from rest2visual.preprocess.seed import voxel_centers_mm
from rest2visual.preprocess.template import Grid

#: RAS ↔ LPS: negate x and y (its own inverse)
LPS = np.diag([-1.0, -1.0, 1.0])
#: volumes per sparse product in :meth:`MniResampler.series` (≈ 45 MB at 1.8 mm)
DEFAULT_CHUNK = 16


def image_name(img) -> str:
    """A file name for error messages, or a description of an in-memory image."""
    name = img.get_filename() if hasattr(img, "get_filename") else None
    return str(name) if name else f"in-memory image {tuple(img.shape)}"


def _grid_of(img) -> tuple[tuple[int, int, int], np.ndarray]:
    return tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine, dtype=float)


def interpolation_matrix(coords: np.ndarray, native_shape, order: int, row_ids=None,
                          n_rows: int | None = None):
    """Sparse CSR matrix W with ``W @ native.ravel('F') == volume sampled at coords``.

    coords : (N, 3) 0-based native voxel coordinates (NaN = no source).
    row_ids : increasing matrix row of each coordinate (default 0..N-1), for a matrix
        of ``n_rows`` rows (default N) whose other rows stay empty.
    Each row holds 8 trilinear weights (1 for nearest neighbour), or none outside
    the native field of view; clamped corners may repeat a column, which the
    product sums as it should.
    """
    from scipy import sparse

    row_ids = np.arange(coords.shape[0]) if row_ids is None else np.asarray(row_ids)
    n_rows = coords.shape[0] if n_rows is None else int(n_rows)
    dims = np.asarray(native_shape)
    with np.errstate(invalid="ignore"):
        inside = np.all((coords >= -0.5) & (coords < dims - 0.5), axis=1)
    c = np.clip(coords[inside], 0.0, dims - 1)
    strides = np.array([1, dims[0], dims[0] * dims[1]])
    if order == 0:
        # ITK's nearest neighbour rounds half up
        cols = (np.floor(c + 0.5).astype(np.int64) @ strides)[:, None]
        weights = np.ones(cols.shape, dtype=np.float32)
    elif order == 1:
        base = np.floor(c).astype(np.int64)
        frac = c - base
        # per axis: (lower, upper) flat offsets and weights; a corner sums/multiplies them
        offsets = [(base[:, a] * strides[a], np.minimum(base[:, a] + 1, dims[a] - 1) * strides[a])
                   for a in range(3)]
        axis_w = [(1.0 - frac[:, a], frac[:, a]) for a in range(3)]
        cols = np.empty((c.shape[0], 8), dtype=np.int64)
        weights = np.empty((c.shape[0], 8), dtype=np.float32)
        for corner in range(8):
            i, j, k = ((corner >> a) & 1 for a in range(3))
            cols[:, corner] = offsets[0][i] + offsets[1][j] + offsets[2][k]
            weights[:, corner] = axis_w[0][i] * axis_w[1][j] * axis_w[2][k]
    else:
        raise ValueError(f"interpolation order must be 0 (nearest) or 1 (linear), got {order!r}")
    # rows are already sorted, so the CSR arrays are written directly (no COO sort)
    per_row = np.zeros(n_rows, dtype=np.int64)
    per_row[row_ids[inside]] = cols.shape[1]
    indptr = np.concatenate([[0], np.cumsum(per_row)])
    n_native = int(np.prod(dims))
    index = np.int32 if max(n_native, indptr[-1]) < np.iinfo(np.int32).max else np.int64
    return sparse.csr_matrix((weights.ravel(), cols.ravel().astype(index),
                              indptr.astype(index)), shape=(n_rows, n_native))


class MniResampler:
    """Maps native data (one subject's functional grid) onto an MNI grid.

    Built once per subject; holds the native voxel coordinate of every MNI voxel
    and lazily one sparse interpolation matrix per order.

    Attributes
    ----------
    native_shape, native_affine : the native grid (X, Y, Z voxels; RAS mm affine).
    target_shape, target_affine : the MNI grid.
    source : where the mapping came from (file name), for error messages.
    """

    def __init__(self, coords: np.ndarray, native_shape, native_affine, target_shape,
                 target_affine, source: str = "") -> None:
        coords = np.asarray(coords, dtype=float)
        if coords.shape != tuple(target_shape) + (3,):
            raise ValueError(f"coordinates of shape {coords.shape} do not fit the target grid "
                             f"{tuple(target_shape)} × 3")
        self._coords = coords
        self.native_shape = tuple(int(n) for n in native_shape)
        self.native_affine = np.asarray(native_affine, dtype=float)
        self.target_shape = tuple(int(n) for n in target_shape)
        self.target_affine = np.asarray(target_affine, dtype=float)
        self.source = source
        self._matrices: dict[tuple, object] = {}

    # --- construction -------------------------------------------------------
    @classmethod
    def from_composite(cls, composite_path, native_img) -> "MniResampler":
        """From an ANTs composed displacement field (MNI grid, LPS mm vectors).

        composite_path : the field written by :func:`register_to_mni`
            (``…_desc-composite_xfm.nii.gz``, X×Y×Z×1×3, ITK's vector NIfTI).
        native_img : any image on the registration's native grid (3D or 4D;
            only its shape and affine are used). Checked against the native grid
            recorded in the field's JSON sidecar when that exists.
        """
        native_shape, native_affine = _grid_of(native_img)
        _check_sidecar(composite_path, native_img)
        coords, target = displacement_field_coordinates(composite_path, native_affine)
        return cls(coords, native_shape, native_affine, target.shape, target.affine,
                   source=str(composite_path))

    @classmethod
    def from_nsd_coordinates(cls, coords_path, native_img, target_grid) -> "MniResampler":
        """From NSD's ``func1pt8-to-MNI`` coordinate map (1-based, 9999 = no source).

        target_grid : :class:`~rest2visual.preprocess.template.Grid` of the output;
            the map is read at its voxel centres (see :mod:`.nsd_transform`).
        """
        from rest2visual.preprocess.nsd_transform import read_nsd_coordinates

        native_shape, native_affine = _grid_of(native_img)
        coords = read_nsd_coordinates(coords_path, target_grid, native_shape)
        return cls(coords, native_shape, native_affine, target_grid.shape, target_grid.affine,
                   source=str(coords_path))

    # --- queries ------------------------------------------------------------
    def source_coordinates(self) -> np.ndarray:
        """0-based native voxel coordinate of each MNI voxel, (X, Y, Z, 3); NaN = none."""
        return self._coords.copy()

    def inside_mask(self) -> np.ndarray:
        """(X, Y, Z) bool: MNI voxels whose source lies inside the native field of view."""
        dims = np.asarray(self.native_shape, dtype=float)
        with np.errstate(invalid="ignore"):
            return np.all((self._coords >= -0.5) & (self._coords < dims - 0.5), axis=-1)

    def matrix(self, order: int = 1, mask: np.ndarray | None = None):
        """The sparse (MNI voxels × native voxels) matrix, Fortran voxel order.

        mask : (X, Y, Z) bool on the MNI grid; rows outside it are empty (output 0).
        """
        key = (order, None if mask is None else hash(np.packbits(mask).tobytes()))
        if key not in self._matrices:
            flat = self._coords.reshape(-1, 3, order="F")
            picked = None
            if mask is not None:
                picked = np.flatnonzero(np.asarray(mask, dtype=bool).ravel(order="F"))
            self._matrices[key] = interpolation_matrix(
                flat if picked is None else flat[picked], self.native_shape, order,
                row_ids=picked, n_rows=flat.shape[0])
        return self._matrices[key]

    def check_native(self, img, what: str = "native image") -> None:
        """Raise InputError unless ``img`` lies on this resampler's native grid."""
        shape, affine = _grid_of(img)
        if shape != self.native_shape:
            raise InputError(
                f"{image_name(img)}: {what} has grid shape {shape}, but the registration "
                f"({self.source}) maps the native grid {self.native_shape}")
        try:
            check_affine(affine, self.native_affine, image_name(img))
        except InputError as exc:
            raise InputError(f"{exc}\n(expected the native grid of the registration "
                             f"{self.source})") from None

    # --- resampling ---------------------------------------------------------
    def volume(self, data3d: np.ndarray, order: int = 1, mask=None) -> np.ndarray:
        """Native volume (x, y, z) → MNI volume (X, Y, Z), float32."""
        data3d = np.asarray(data3d)
        if data3d.shape != self.native_shape:
            raise InputError(f"volume of shape {data3d.shape} does not match the native grid "
                             f"{self.native_shape} of {self.source}")
        flat = data3d.astype(np.float32, copy=False).ravel(order="F")
        out = self.matrix(order, mask) @ flat
        return out.reshape(self.target_shape, order="F")

    def series(self, img4d, order: int = 1, chunk: int = DEFAULT_CHUNK,
               mask=None) -> np.ndarray:
        """Native series (x, y, z, t) → MNI series (X, Y, Z, T), float32.

        img4d : a 4D array or nibabel image; a file-backed image is read ``chunk``
            volumes at a time, in order (one pass over a gzip stream), so the
            memory held is the output plus one chunk.
        """
        shape = tuple(img4d.shape)
        if len(shape) != 4 or shape[:3] != self.native_shape:
            raise InputError(f"{image_name(img4d) if hasattr(img4d, 'affine') else 'array'}: "
                             f"expected a 4D series on the native grid {self.native_shape}, "
                             f"found shape {shape}")
        if chunk < 1:
            raise ValueError(f"chunk must be ≥ 1 volume, got {chunk}")
        if hasattr(img4d, "affine"):
            self.check_native(img4d, "native series")
        W = self.matrix(order, mask)
        n_vol = shape[3]
        out = np.empty(self.target_shape + (n_vol,), dtype=np.float32, order="F")
        flat_out = out.reshape(-1, n_vol, order="F")  # a view: columns are volumes
        used = np.unique(W.indices)  # native voxels that reach the target grid
        for t0, block in _volume_chunks(img4d, chunk):
            # (n_native, c) rows contiguous: what scipy's CSR × dense kernel walks
            native = np.ascontiguousarray(block.reshape(-1, block.shape[3], order="F"),
                                          dtype=np.float32)
            if not np.isfinite(native[used]).all():  # name the native file, not the MNI one
                raise InputError(f"{image_name(img4d) if hasattr(img4d, 'affine') else 'array'}: "
                                 f"expected finite values, found NaN/inf in volumes "
                                 f"{t0}..{t0 + block.shape[3] - 1}")
            flat_out[:, t0:t0 + block.shape[3]] = W @ native
        return out


def displacement_field_coordinates(field_path, source_affine) -> tuple[np.ndarray, Grid]:
    """An ITK displacement field → the source voxel coordinate of each of its voxels.

    field_path : X×Y×Z×1×3 ITK vector NIfTI (``antsApplyTransforms`` composed field, LPS
        mm vectors) on the grid where data are wanted (its header's grid).
    source_affine : 4×4 RAS affine (mm) of the grid the data come from.
    Returns ((X, Y, Z, 3) float64 continuous 0-based source voxel indices, the field's
    :class:`~rest2visual.preprocess.template.Grid`).
    """
    import nibabel as nib

    from rest2visual.checks import require_file

    path = require_file(field_path, "composed displacement field")
    try:
        field_img = nib.load(str(path))
        field = np.asarray(field_img.dataobj, dtype=float)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the composed displacement field ({exc})") from exc
    if field.ndim != 5 or field.shape[3] != 1 or field.shape[4] != 3:
        raise InputError(f"{path}: expected an ITK displacement field X×Y×Z×1×3, "
                         f"found shape {field.shape}")
    field = field[:, :, :, 0, :]
    if not np.all(np.isfinite(field)):
        raise InputError(f"{path}: displacement field holds non-finite values")
    grid = Grid(shape=field.shape[:3], affine=np.asarray(field_img.affine, dtype=float))
    # physical point here (RAS) + displacement (LPS → RAS) = source point (RAS)
    points = voxel_centers_mm(grid) + field @ LPS
    to_index = np.linalg.inv(np.asarray(source_affine, dtype=float))
    return points @ to_index[:3, :3].T + to_index[:3, 3], grid


def _volume_chunks(img4d, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first volume index, block (x, y, z, c)) over a 4D array or image."""
    import nibabel as nib

    n_vol = img4d.shape[3]
    filename = img4d.get_filename() if hasattr(img4d, "get_filename") else None
    if hasattr(img4d, "dataobj") and nib.is_proxy(img4d.dataobj) and filename:
        # one open stream read forwards: re-opening a .nii.gz per chunk would
        # decompress from the start every time (quadratic in the run length)
        src = img4d.dataobj
        # the loaded header's vox_offset is reset, so take the spec from the proxy
        spec = (src.shape, src.dtype, src.offset, src.slope, src.inter)
        with nib.openers.ImageOpener(filename, "rb") as fobj:
            proxy = nib.arrayproxy.ArrayProxy(fobj, spec, order=getattr(src, "order", "F"))
            for t0 in range(0, n_vol, chunk):
                yield t0, np.asarray(proxy[..., t0:t0 + chunk], dtype=np.float32)
        return
    data = img4d.dataobj if hasattr(img4d, "dataobj") else img4d
    for t0 in range(0, n_vol, chunk):
        yield t0, np.asarray(data[..., t0:t0 + chunk], dtype=np.float32)


def sidecar_path(composite_path) -> Path:
    """The JSON sidecar beside a transform file (``x.nii.gz`` → ``x.json``)."""
    name = Path(composite_path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return Path(composite_path).with_name(name[: -len(suffix)] + ".json")
    return Path(composite_path).with_suffix(".json")


def _check_sidecar(composite_path, native_img) -> None:
    """Compare ``native_img``'s grid with the native grid the registration recorded."""
    sidecar = sidecar_path(composite_path)
    if not sidecar.is_file():
        return
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{sidecar}: registration sidecar is not valid JSON ({exc})") from exc
    grid = meta.get("native_grid")
    if not grid:
        return
    shape, affine = _grid_of(native_img)
    if shape != tuple(grid["shape"]) or not np.allclose(affine, grid["affine"], atol=1e-3):
        def fmt(a):
            return np.array2string(np.asarray(a), precision=3)

        raise InputError(
            f"{image_name(native_img)}: grid (shape {shape}, affine\n{fmt(affine)})\n"
            f"does not match the native grid registered in {composite_path} (shape "
            f"{tuple(grid['shape'])}, affine\n{fmt(grid['affine'])}; recorded in {sidecar})")


def warp_volume_with_missing(resampler: MniResampler, data3d: np.ndarray, order: int = 1,
                             mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Warp a native volume holding invalid voxels (NaN, as NSD marks them) without spreading them.

    NaN → 0, and the 0/1 validity mask is warped alongside with the same weights:
    an MNI voxel whose interpolation touches an invalid native voxel (warped
    validity < 1) or that has no native source (outside the native field of view,
    or NSD's 9999) is marked missing: NaN in the output. Outside ``mask`` the
    output is 0 as in :meth:`MniResampler.volume`.

    Returns the (X, Y, Z) float32 MNI volume and counts over the in-mask voxels
    (all voxels without a mask): ``{"voxels": n, "touched_invalid": a,
    "no_source": b}``; the a + b missing voxels are NaN.
    """
    data3d = np.asarray(data3d, dtype=np.float32)
    valid = np.isfinite(data3d)
    values = resampler.volume(np.where(valid, data3d, 0.0), order, mask)
    weight = resampler.volume(valid.astype(np.float32), order, mask)
    support = resampler.volume(np.ones(data3d.shape, np.float32), order, mask)
    inside = np.ones(resampler.target_shape, bool) if mask is None else np.asarray(mask, bool)
    no_source = inside & (support < 0.5)
    # float32 sums of 8 weights: 1e-4 below a full weight means an invalid neighbour
    touched = inside & ~no_source & (weight < support - 1e-4)
    values[no_source | touched] = np.nan
    return values, {"voxels": int(inside.sum()), "touched_invalid": int(touched.sum()),
                    "no_source": int(no_source.sum())}


def warp_to_mni(native_img, resampler: MniResampler, *, mask_img=None, order: int = 1,
                chunk: int = DEFAULT_CHUNK, missing_as_nan: bool = False):
    """Warp a native 3D volume or 4D series to MNI; returns a float32 Nifti1Image.

    native_img : nibabel image on the resampler's native grid (checked: shape and
        affine; a mismatch raises InputError naming both files).
    mask_img : optional MNI mask on the target grid; voxels outside it are 0.
    missing_as_nan : for a 3D volume, mark in-mask voxels without a full valid
        source as missing (NaN; :func:`warp_volume_with_missing`). A volume holding
        NaN (NSD's invalid voxels, e.g. in ``ncsnr``) is always warped that way, so
        NaN never spreads through interpolation; the counts are in
        ``image.extra["missing"]``. A 4D series is warped as is (NSD's are int16,
        so finite).
    A 4D result keeps the input's TR (header zooms[3], s).
    """
    import nibabel as nib

    resampler.check_native(native_img)
    mask = None
    if mask_img is not None:
        if tuple(mask_img.shape[:3]) != resampler.target_shape or mask_img.ndim != 3:
            raise InputError(f"{image_name(mask_img)}: mask shape {mask_img.shape} is not the "
                             f"3D target grid {resampler.target_shape}")
        check_affine(mask_img.affine, resampler.target_affine, image_name(mask_img))
        mask = np.asarray(mask_img.dataobj) > 0
    extra = {}
    if native_img.ndim == 3:
        native = np.asarray(native_img.dataobj, dtype=np.float32)
        if missing_as_nan or not np.isfinite(native).all():
            data, extra["missing"] = warp_volume_with_missing(resampler, native, order, mask)
        else:
            data = resampler.volume(native, order, mask)
    elif native_img.ndim == 4:
        data = resampler.series(native_img, order=order, chunk=chunk, mask=mask)
    else:
        raise InputError(f"{image_name(native_img)}: expected a 3D or 4D image, "
                         f"found shape {native_img.shape}")
    out = nib.Nifti1Image(data, resampler.target_affine, extra=extra)
    if data.ndim == 4:
        # TR and its unit as the input states them (an 'unknown' unit stays unknown,
        # so later stages still fall back to the configured TR)
        out.header.set_xyzt_units("mm", native_img.header.get_xyzt_units()[1])
        out.header.set_zooms(out.header.get_zooms()[:3]
                             + (float(native_img.header.get_zooms()[3]),))
    else:
        out.header.set_xyzt_units("mm")
    return out


def missing_report(counts: dict, what: str) -> str:
    """One log line: how many MNI voxels of ``what`` were marked missing, and why."""
    n = counts["touched_invalid"] + counts["no_source"]
    return (f"{what}: {n} of {counts['voxels']} MNI voxels marked missing (NaN): "
            f"{counts['touched_invalid']} touched invalid native voxels (NaN in the input), "
            f"{counts['no_source']} have no native source (outside the field of view)")


def resampler_for(transform_path, native_img, target_grid=None) -> MniResampler:
    """A resampler from either transform file kind, told apart by its shape.

    An ANTs composed field is X×Y×Z×1×3; an NSD coordinate map is X×Y×Z×3 and
    needs ``target_grid`` (a :class:`~rest2visual.preprocess.template.Grid`).
    """
    import nibabel as nib

    from rest2visual.checks import require_file

    path = require_file(transform_path, "MNI transform")
    ndim = len(nib.load(str(path)).shape)
    if ndim == 5:
        return MniResampler.from_composite(path, native_img)
    if target_grid is None:
        raise InputError(f"{path}: an NSD coordinate map needs the target MNI resolution")
    return MniResampler.from_nsd_coordinates(path, native_img, target_grid)


# --- command line: rest2visual warp-to-mni ----------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rest2visual warp-to-mni",
        description="Warp a native 3D volume or 4D series to MNI with a subject's "
                    "registration (ANTs composed field or NSD coordinate map).")
    p.add_argument("--in", dest="inp", required=True, help="native NIfTI (3D or 4D)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--composite", help="composed displacement field from `register`")
    src.add_argument("--nsd-coords", help="NSD func1pt8-to-MNI coordinate map")
    p.add_argument("--resolution", type=float, default=None,
                   help="MNI grid, mm (needed with --nsd-coords)")
    p.add_argument("--out", required=True, help="output NIfTI in MNI (float32)")
    p.add_argument("--mask", default=None, help="MNI mask on the target grid: 0 outside")
    p.add_argument("--order", type=int, default=1, choices=(0, 1),
                   help="0 nearest neighbour (labels), 1 trilinear (default)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="volumes per product")
    p.add_argument("--missing-as-nan", action="store_true",
                   help="3D input: mark in-mask voxels without a full valid native source as "
                        "NaN (e.g. NSD's ncsnr, NaN at invalid voxels); always on when the "
                        "input holds NaN")
    return p


def main(argv: list[str] | None = None) -> int:
    """``rest2visual warp-to-mni --in NATIVE --composite XFM --out OUT [--mask MASK]``."""
    from rest2visual.atomic import save_nifti
    from rest2visual.checks import load_nifti

    args = _parser().parse_args(argv)
    native = load_nifti(args.inp, finite=False, what="native image")
    if args.nsd_coords and args.resolution is None:
        raise InputError("--nsd-coords needs --resolution (MNI grid, mm)")
    from rest2visual.preprocess.template import mni_grid

    grid = mni_grid(args.resolution) if args.resolution else None
    resampler = resampler_for(args.composite or args.nsd_coords, native, grid)
    mask = load_nifti(args.mask, ndim=3, what="MNI mask") if args.mask else None
    warped = warp_to_mni(native, resampler, mask_img=mask, order=args.order, chunk=args.chunk,
                         missing_as_nan=args.missing_as_nan)
    if "missing" in warped.extra:
        print(missing_report(warped.extra["missing"], args.inp))
    save_nifti(warped, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
