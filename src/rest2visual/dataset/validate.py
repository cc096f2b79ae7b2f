"""Check a triplet pack's internal consistency (``rest2visual validate-pack``).

The pack writer runs these checks on its temporary file before renaming it, so
a pack under its final name has passed them; run them again on a pack copied
from elsewhere or suspected of corruption. Values are checked block by block,
so memory stays bounded whatever the pack's size.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from rest2visual.dataset.layout import REQUIRED_ATTRS, TRIAL_COLUMNS, TRIAL_KEY

_DATASETS = ("mask", "betas", "rest_maps", "images", "image_nsd_ids", "excluded_trials",
             "rest_index/subject", "rest_index/session",
             *(f"trials/{c}" for c in TRIAL_COLUMNS))
#: bytes of values read at once when checking that values are finite
_BLOCK_BYTES = 64 * 2**20


def _count_nonfinite(ds) -> int:
    step = max(1, _BLOCK_BYTES // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
    return sum(int((~np.isfinite(ds[a:a + step])).sum()) for a in range(0, ds.shape[0], step))


def _check_table(h5, problems: list[str]) -> None:
    """Cross-references of /trials against /images, /rest_maps and /betas."""
    t = {c: h5["trials"][c][()] for c in TRIAL_COLUMNS}
    n = h5["betas"].shape[0]
    for c, col in t.items():
        if col.shape != (n,):
            problems.append(f"/trials/{c} has shape {col.shape}, expected ({n},) (rows of /betas)")
    if problems:
        return
    ids = h5["image_nsd_ids"][()]
    rest = {c: h5["rest_index"][c][()] for c in ("subject", "session")}
    n_img, n_rest = h5["images"].shape[0], h5["rest_maps"].shape[0]
    if ids.shape != (n_img,):
        problems.append(f"/image_nsd_ids has shape {ids.shape}, expected ({n_img},) "
                        "(rows of /images)")
    elif np.any(np.diff(ids) <= 0):
        problems.append("/image_nsd_ids is not strictly increasing (duplicate or unsorted images)")
    if any(v.shape != (n_rest,) for v in rest.values()):
        problems.append(f"/rest_index columns do not have {n_rest} rows (rows of /rest_maps)")
    bad_img = (t["image_row"] < 0) | (t["image_row"] >= n_img)
    if bad_img.any():
        problems.append(f"{int(bad_img.sum())} trials have image_row outside 0..{n_img - 1}, "
                        f"e.g. rows {np.flatnonzero(bad_img)[:5].tolist()}")
    elif ids.shape == (n_img,):
        wrong = t["nsd_id"] != ids[t["image_row"]]
        if wrong.any():
            problems.append(f"{int(wrong.sum())} trials have nsd_id != image_nsd_ids[image_row], "
                            f"e.g. rows {np.flatnonzero(wrong)[:5].tolist()}")
    bad_rest = (t["rest_row"] < 0) | (t["rest_row"] >= n_rest)
    if bad_rest.any():
        problems.append(f"{int(bad_rest.sum())} trials have rest_row outside 0..{n_rest - 1}, "
                        f"e.g. rows {np.flatnonzero(bad_rest)[:5].tolist()}")
    elif all(v.shape == (n_rest,) for v in rest.values()):
        wrong = ((t["subject"] != rest["subject"][t["rest_row"]])
                 | (t["session"] != rest["session"][t["rest_row"]]))
        if wrong.any():
            problems.append(f"{int(wrong.sum())} trials' (subject, session) differ from "
                            "rest_index[rest_row], e.g. rows "
                            f"{np.flatnonzero(wrong)[:5].tolist()}")
    keys = np.stack([t[c] for c in TRIAL_KEY], axis=1)
    n_unique = len(np.unique(keys, axis=0)) if n else 0
    if n_unique != n:
        problems.append(f"{n - n_unique} duplicate (subject, session, trial) rows in /trials")
    if (t["repeat"] < 0).any() or (t["nsd_id"] < 0).any():
        problems.append("negative repeat or nsd_id values in /trials")


def _check(h5, problems: list[str]) -> None:
    missing = [d for d in _DATASETS if d not in h5]
    if missing:
        problems.append(f"missing datasets: {', '.join(missing)}")
        return
    problems += [f"missing root attribute '{a}'" for a in REQUIRED_ATTRS if a not in h5.attrs]
    n_vox = int((h5["mask"][()] > 0).sum())
    if "affine" not in h5["mask"].attrs or np.shape(h5["mask"].attrs["affine"]) != (4, 4):
        problems.append("/mask has no 4×4 'affine' attribute")
    widths = {name: h5[name].shape[1] for name in ("betas", "rest_maps", "ncsnr")
              if name in h5 and h5[name].ndim == 2}
    for name in ("betas", "rest_maps"):
        if h5[name].ndim != 2:
            problems.append(f"/{name} has shape {h5[name].shape}, expected 2D (rows, n_vox)")
    for name, width in widths.items():
        if width != n_vox:
            problems.append(f"/{name} has {width} voxel columns, the mask holds {n_vox}")
    if int(h5.attrs.get("n_voxels", n_vox)) != n_vox:
        problems.append(f"attribute n_voxels={h5.attrs['n_voxels']} but the mask holds {n_vox}")
    if int(h5.attrs.get("n_trials", h5["betas"].shape[0])) != h5["betas"].shape[0]:
        problems.append(f"attribute n_trials={h5.attrs['n_trials']} but /betas has "
                        f"{h5['betas'].shape[0]} rows")
    images, size = h5["images"], h5.attrs.get("image_size")
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or (
            size is not None and images.shape[1:3] != (size, size)):
        problems.append(f"/images has shape {images.shape} {images.dtype}, expected "
                        f"(n, {size}, {size}, 3) uint8")
    if "ncsnr" in h5 and ("ncsnr_subjects" not in h5
                          or h5["ncsnr_subjects"].shape[0] != h5["ncsnr"].shape[0]):
        problems.append("/ncsnr rows do not match /ncsnr_subjects")
    if problems:
        return
    _check_table(h5, problems)
    for name in ("betas", "rest_maps"):
        bad = _count_nonfinite(h5[name])
        if bad:
            problems.append(f"/{name} holds {bad} non-finite values (NaN/inf)")
    if "ncsnr" in h5:
        _check_ncsnr(h5["ncsnr"], problems)


def _check_ncsnr(ds, problems: list[str]) -> None:
    """/ncsnr: NaN only at the voxels its ``missing_voxels`` attr counts, never inf."""
    data = ds[()]
    if np.isinf(data).any():
        problems.append(f"/ncsnr holds {int(np.isinf(data).sum())} infinite values")
    n_nan = np.isnan(data).sum(axis=1)
    declared = np.asarray(ds.attrs.get("missing_voxels", np.zeros(len(data), np.int64)))
    if declared.shape != n_nan.shape or not np.array_equal(declared, n_nan):
        problems.append(f"/ncsnr holds {n_nan.tolist()} NaN (missing) voxels per subject but "
                        f"its 'missing_voxels' attribute declares {declared.tolist()}")


def validate_pack(path: str | os.PathLike) -> list[str]:
    """Return the problems found in the pack at ``path``, each naming the file; [] if valid.

    Checks: datasets and root attributes present; voxel count = mask sum in
    /betas, /rest_maps, /ncsnr and the attrs; /trials columns one row per
    /betas row; image_row and rest_row in range; nsd_id = image_nsd_ids[image_row];
    (subject, session) = rest_index[rest_row]; no duplicate (subject, session,
    trial); every value of /betas and /rest_maps finite; /ncsnr finite except the
    missing voxels (NaN) its ``missing_voxels`` attribute counts.
    """
    import h5py

    problems: list[str] = []
    try:
        with h5py.File(path, "r") as h5:
            _check(h5, problems)
    except (OSError, KeyError, ValueError) as exc:  # not HDF5, truncated, unreadable
        problems.append(f"cannot read the pack ({exc})")
    return [f"{path}: {p}" for p in problems]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rest2visual validate-pack",
                                     description="check a triplet pack; exit 1 if it has problems")
    parser.add_argument("pack", help="the pack (.h5)")
    args = parser.parse_args(argv)
    problems = validate_pack(args.pack)
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"{args.pack}: OK")
    return 1 if problems else 0
