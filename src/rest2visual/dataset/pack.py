"""Pack (rest map, image, evoked beta) triplets into one HDF5 file.

Layout (n_vox = voxels in the MNI brain mask, C order of the mask's True voxels)::

    /mask              (X, Y, Z) uint8, attr affine (4×4, mm, MNI)  — MaskedGrid.write_h5
    /betas             (n_trials, n_vox) float16, % signal change, chunks (1, n_vox)
    /rest_maps         (n_rest, n_vox) float32, PCC-seed z, one per (subject, session)
    /images            (n_images, S, S, 3) uint8 RGB, one per NSD image, chunks (1, S, S, 3)
    /image_nsd_ids     (n_images,) 0-based 73k ids, increasing
    /trials/<column>   (n_trials,) one 1D dataset per TRIAL_COLUMNS entry
    /rest_index/subject, /rest_index/session   (n_rest,)
    /excluded_trials   (n_excluded, 3) int32 (subject, session, trial): bad trials left out
    /ncsnr, /ncsnr_subjects   optional (n_subjects, n_vox) float32 noise-ceiling SNR in MNI;
                       NaN marks missing voxels (NSD's invalid voxels and their MNI
                       neighbours, see resample.warp_volume_with_missing), counted per
                       subject in the attr ``missing_voxels``; ncsnr metrics skip them

Root attribute ``rest_recipe``: the settings the rest maps were computed with (JSON,
``preprocess.recipe``; "" when the maps came without recipe sidecars).

Rows of ``/trials`` are sorted by (subject, session, trial) and are the rows of
``/betas``; ``image_row`` and ``rest_row`` index ``/images`` and ``/rest_maps``.

One file rather than per-subject shards joined by a virtual dataset (VDS):
the whole paper dataset is ~35 GB of float16 betas, which one file system holds
easily; a training sample mixes subjects, so one handle per loader worker
reaches every row; and one file is one Snakemake target that is either complete
or absent (written to a temporary sibling, validated, then renamed). A VDS
would store source paths that break when results/ moves, and reads a missing
shard silently as fill values. Shards would only help to write subjects in
parallel, but packing is bound by the disk, and any input change reruns the
whole (minutes-long) pack — acceptable for a stage that runs once per config.

The writer streams: rest maps and images one at a time, betas in blocks of
rows of one session, so memory stays bounded by one block whatever the size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError, check_affine, load_nifti, require_file
from rest2visual.dataset.layout import REQUIRED_ATTRS, TRIAL_COLUMNS, TRIAL_DTYPES, TRIAL_KEY
from rest2visual.dataset.validate import validate_pack
from rest2visual.maskvec import MaskedGrid
from rest2visual.preprocess import recipe

__all__ = ["REQUIRED_ATTRS", "TRIAL_COLUMNS", "TRIAL_DTYPES", "TRIAL_KEY", "Pack", "PackWriter",
           "pack_triplets", "validate_pack", "write_pack"]

DEFAULT_TEMPLATE = "MNI152 2009 (nilearn) resampled onto the FSL MNI152 grid"
#: rows of evoked betas read at once: bounds memory to ~64 MB per block
_BLOCK_BYTES = 64 * 2**20


def to_float16(values: np.ndarray) -> np.ndarray:
    """float32 → float16, round to nearest even (overflow → ±inf).

    numpy's cast is scalar code (measured ~20–40 ns a value on the AVX2/F16C
    CPU here, slower than the disk); torch's uses F16C (~5 ns), so torch does
    it when installed. Both give identical bits.
    """
    try:
        import torch
    except ImportError:
        with np.errstate(over="ignore"):  # overflow → inf, reported by the caller's check
            return np.asarray(values, dtype=np.float16)
    values = np.ascontiguousarray(values, dtype=np.float32)
    return torch.from_numpy(values).to(torch.float16).numpy()


class Progress:
    """Log lines ``<what>: done/total <unit> (p %), rate, ETA`` to ``stream``.

    A line every ``every`` of the total (default 5 %), and at the end; a stage of
    minutes to hours (the paper's pack: ~225 min) then shows that it moves and
    when it will finish. ``clock`` is injectable for tests.
    """

    def __init__(self, what: str, total: int, unit: str = "rows", *, every: float = 0.05,
                 enabled: bool = True, stream=None, clock=None):
        import time

        self.what, self.total, self.unit, self.enabled = what, int(total), unit, enabled
        self.stream = sys.stdout if stream is None else stream
        self.clock = clock or time.monotonic
        self.step = max(1, int(np.ceil(every * self.total)))
        self.done, self.t0, self._next = 0, self.clock(), self.step

    def update(self, n: int) -> None:
        """``n`` more units done; log when a multiple of the step is passed or at the end."""
        self.done += int(n)
        if self.done >= self._next or self.done >= self.total:
            while self._next <= self.done:
                self._next += self.step
            self._log()

    def _log(self) -> None:
        if not self.enabled:
            return
        elapsed = self.clock() - self.t0
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / max(self.total, 1)
        print(f"{self.what}: {self.done}/{self.total} {self.unit} ({pct:.0f} %), "
              f"{rate:.1f} {self.unit}/s, elapsed {_duration(elapsed)}, ETA {_duration(left)}",
              file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def created_utc() -> str:
    """Now (UTC, ISO 8601, seconds), or ``SOURCE_DATE_EPOCH`` when set.

    The pack's only content that differs between two runs of the same inputs
    (HDF5 object timestamps are off: h5py's ``track_times=False``); with
    ``SOURCE_DATE_EPOCH`` set (the reproducible-builds convention) two packs
    are byte-identical.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.fromtimestamp(int(epoch), timezone.utc) if epoch
            else datetime.now(timezone.utc))
    return when.isoformat(timespec="seconds")


class PackWriter:
    """Create a pack's datasets at their final sizes in an open h5py file, then fill them.

    ``trials`` holds TRIAL_COLUMNS (rows in pack order), ``rest_index`` the
    (subject, session) columns of the rest maps, ``image_nsd_ids`` the increasing
    0-based ids of /images. Betas are appended in row order by :meth:`write_betas`;
    :meth:`finish` writes the root attributes and checks that every row came.
    """

    def __init__(self, h5, grid: MaskedGrid, trials, rest_index, image_nsd_ids: np.ndarray,
                 image_size: int, compression: str | None = None):
        self.h5, self.grid, self.n_trials = h5, grid, len(trials)
        n_vox, s = grid.n_voxels, int(image_size)
        comp = {"compression": compression} if compression else {}
        grid.write_h5(h5)
        for col, dtype in TRIAL_DTYPES.items():
            h5.create_dataset(f"trials/{col}", data=np.asarray(trials[col], dtype=dtype))
        for col in ("subject", "session"):
            h5.create_dataset(f"rest_index/{col}", data=np.asarray(rest_index[col], np.int32))
        h5.create_dataset("image_nsd_ids", data=np.asarray(image_nsd_ids, dtype=np.int32))
        self.rest_maps = h5.create_dataset("rest_maps", (len(h5["rest_index/subject"]), n_vox),
                                           np.float32, chunks=(1, n_vox), **comp)
        self.images = h5.create_dataset("images", (len(image_nsd_ids), s, s, 3), np.uint8,
                                        chunks=(1, s, s, 3), **comp)
        self.betas = h5.create_dataset("betas", (self.n_trials, n_vox), np.float16,
                                       chunks=(1, n_vox), **comp)
        self._next_beta = 0

    def write_rest(self, row: int, vector: np.ndarray) -> None:
        self.rest_maps[row] = np.asarray(vector, dtype=np.float32)

    def write_images(self, start: int, block: np.ndarray) -> None:
        self.images[start:start + len(block)] = block

    def write_betas(self, block: np.ndarray, source: str = "betas", trials=None) -> None:
        """Append (n, n_vox) betas (% signal change) as float16 after the last written row.

        ``source`` and ``trials`` (the block's trial numbers) name bad rows in errors.
        """
        half = to_float16(block)
        # exponent bits all set = inf or NaN, including values beyond float16's ±65504
        bad = ((half.view(np.uint16) & 0x7C00) == 0x7C00).any(axis=1)
        if bad.any():
            where = np.flatnonzero(bad) if trials is None else np.asarray(trials)[bad]
            raise InputError(f"{source}: trials {where.tolist()[:10]} hold NaN/inf or |beta| > "
                             "65504 (float16 range) but are not listed as bad trials")
        end = self._next_beta + len(half)
        if end > self.n_trials:
            raise ValueError(f"{source}: {end} beta rows given for {self.n_trials} trials")
        self.betas[self._next_beta:end] = half
        self._next_beta = end

    def write_ncsnr(self, subjects, vectors: np.ndarray) -> None:
        """(n_subjects, n_vox) noise-ceiling SNR maps in MNI (NaN = missing) and their subjects."""
        vectors = np.asarray(vectors, dtype=np.float32)
        self.h5.create_dataset("ncsnr_subjects", data=np.asarray(subjects, dtype=np.int32))
        ds = self.h5.create_dataset("ncsnr", data=vectors)
        ds.attrs["missing_voxels"] = np.isnan(vectors).sum(axis=1).astype(np.int64)

    def finish(self, excluded, *, config_hash: str = "", template: str = DEFAULT_TEMPLATE,
               mask_description: str = "", rest_recipe: dict | None = None) -> None:
        """Store the excluded (subject, session, trial) rows and the root attributes
        (``rest_recipe``: the rest maps' recipe, ``preprocess.recipe``; None: unknown)."""
        import rest2visual

        if self._next_beta != self.n_trials:
            raise ValueError(f"{self._next_beta} beta rows written for {self.n_trials} trials")
        ds = self.h5.create_dataset("excluded_trials",
                                    data=np.asarray(excluded, dtype=np.int32).reshape(-1, 3))
        ds.attrs["columns"] = list(TRIAL_KEY)
        self.h5.attrs.update({
            "config_hash": str(config_hash), "rest2visual_version": rest2visual.__version__,
            "template": template, "mask_description": mask_description,
            "resolution_mm": float(abs(self.grid.affine[0, 0])),
            "image_size": int(self.images.shape[1]),
            "created_utc": created_utc(),
            "n_trials": self.n_trials, "n_voxels": self.grid.n_voxels,
            "n_excluded_trials": len(ds),
            recipe.PACK_ATTR: json.dumps(rest_recipe, sort_keys=True) if rest_recipe else "",
        })


@dataclass
class _Session:
    """One (subject, session) to pack: its inputs and which evoked rows go in."""

    subject: int
    session: int
    rest_path: Path
    evoked_path: Path
    rows: np.ndarray = field(default=None)      # rows of the evoked /betas to pack
    trials: np.ndarray = field(default=None)    # their 1-based trial numbers
    excluded: np.ndarray = field(default=None)  # bad trial numbers left out


def _read_evoked_meta(s: _Session, grid: MaskedGrid) -> None:
    """Check one evoked betas file against the pack's mask and fill ``rows``/``trials``."""
    import h5py

    path = require_file(s.evoked_path, "evoked betas file")
    with h5py.File(path, "r") as h5:
        for name in ("betas", "trial"):
            if name not in h5:
                raise InputError(f"{path}: no '{name}' dataset (expected an evoked betas file)")
        own = MaskedGrid.from_h5(h5)
        check_affine(own.affine, grid.affine, path)
        if own.shape != grid.shape or not np.array_equal(own.mask, grid.mask):
            diff = int((own.mask != grid.mask).sum()) if own.shape == grid.shape else "all"
            raise InputError(f"{path}: brain mask differs from the pack's mask "
                             f"({diff} voxels differ; grid {own.shape} vs {grid.shape})")
        shape, trials = h5["betas"].shape, h5["trial"][()].astype(np.int64)
        if len(shape) != 2 or shape[1] != grid.n_voxels or shape[0] != len(trials):
            raise InputError(f"{path}: expected 'betas' of shape ({len(trials)}, {grid.n_voxels}) "
                             f"(trials × in-mask voxels), found {shape}")
        for attr, want in (("subject", s.subject), ("session", s.session)):
            if attr in h5.attrs and int(h5.attrs[attr]) != want:
                raise InputError(f"{path}: attribute {attr}={int(h5.attrs[attr])}, but the file "
                                 f"was given for subject {s.subject} session {s.session}")
        bad = np.asarray(h5.attrs.get("bad_trials", []), dtype=np.int64).ravel()
    if np.any(np.diff(trials) <= 0):
        # rows are copied in file order, and the pack keeps trials sorted
        raise InputError(f"{path}: 'trial' must be strictly increasing (no duplicates)")
    keep = ~np.isin(trials, bad)
    s.rows, s.trials = np.flatnonzero(keep), trials[keep]
    s.excluded = np.sort(trials[~keep])


def _trial_table(sessions: list[_Session], expdesign_path, trials_per_session: int):
    """The pack's /trials table (pandas DataFrame, pack order) from NSD's design."""
    import pandas as pd

    from rest2visual.nsd import design

    expdesign = design.load_expdesign(expdesign_path)
    parts = []
    for rest_row, s in enumerate(sessions):
        table = design.trial_table(expdesign, s.subject, s.session, trials_per_session)
        table = table.set_index("trial")
        missing = np.setdiff1d(s.trials, table.index.to_numpy())
        if missing.size:
            raise InputError(f"{s.evoked_path}: trials {missing.tolist()[:10]} are not trials "
                             f"1..{trials_per_session} of the design for subject {s.subject} "
                             f"session {s.session}")
        part = table.loc[s.trials].reset_index()
        part["rest_row"] = rest_row
        parts.append(part)
    trials = pd.concat(parts, ignore_index=True)
    image_nsd_ids = np.unique(trials["nsd_id"].to_numpy())
    trials["image_row"] = np.searchsorted(image_nsd_ids, trials["nsd_id"].to_numpy())
    return trials[list(TRIAL_COLUMNS)], image_nsd_ids


def _evoked_blocks(s: _Session, n_vox: int):
    """Yield (source, trial numbers, (≤ block, n_vox) float32 betas) of the packed rows."""
    import h5py

    step = max(1, _BLOCK_BYTES // (4 * n_vox))
    with h5py.File(s.evoked_path, "r") as h5:
        ds = h5["betas"]
        for a in range(0, ds.shape[0], step):
            take = (s.rows >= a) & (s.rows < a + step)
            if take.any():
                yield str(s.evoked_path), s.trials[take], ds[a:a + step][s.rows[take] - a]


def _ncsnr_vectors(ncsnr: dict, grid: MaskedGrid, subjects: set[int]):
    vectors = []
    for subject in sorted(ncsnr):
        if subject not in subjects:
            raise InputError(f"{ncsnr[subject]}: ncsnr given for subject {subject}, "
                             f"which has no packed session (packed: {sorted(subjects)})")
        img = load_nifti(ncsnr[subject], ndim=3, shape=grid.shape, affine=grid.affine,
                         finite=False, what="ncsnr map in MNI")
        vec = grid.to_vectors(np.asarray(img.dataobj, dtype=np.float32))
        if np.isinf(vec).any() or (vec < 0).any():
            raise InputError(f"{ncsnr[subject]}: expected ncsnr ≥ 0 or NaN (missing) inside the "
                             f"brain mask, found {int(np.isinf(vec).sum())} infinite and "
                             f"{int((vec < 0).sum())} negative values")
        vectors.append(vec)
    return sorted(ncsnr), np.stack(vectors)


def ncsnr_missing_report(ncsnr) -> list[str]:
    """Log lines: per subject, the in-mask voxels whose ncsnr is missing (NaN)."""
    subjects, vectors = ncsnr
    return [f"sub-{s:02d}: {int(np.isnan(v).sum())} of {v.size} in-mask voxels have no valid "
            "ncsnr (NaN: invalid in NSD or touched by invalid voxels when warped to MNI); "
            "noise-ceiling metrics skip them" for s, v in zip(subjects, vectors)]


def write_pack(out_path, *, grid: MaskedGrid, trials, rest_index, image_nsd_ids, image_size: int,
               rest_vectors, image_blocks, beta_blocks, excluded=(), ncsnr=None,
               config_hash: str = "", template: str = DEFAULT_TEMPLATE,
               mask_description: str = "", compression: str | None = None,
               validate: bool = True, progress: bool = False,
               rest_recipe: dict | None = None) -> Path:
    """Stream arrays into a new pack at ``out_path``: atomic, validated before the rename.

    ``trials`` (TRIAL_COLUMNS, pack order), ``rest_index`` (subject, session
    columns) and ``image_nsd_ids`` fix the sizes; then ``rest_vectors`` yields
    one (n_vox,) z-map per rest_index row, ``image_blocks`` yields (start row,
    (b, S, S, 3) uint8), ``beta_blocks`` yields (source name, trial numbers,
    (b, n_vox) betas in % signal change) in pack order. ``excluded``: (subject,
    session, trial) of left-out bad trials; ``ncsnr``: (subjects, (n_subjects,
    n_vox) array) or None. All datasets are created at their final size first
    (:class:`PackWriter`), so memory holds one block at a time. ``progress``:
    log images and beta rows written, rate and ETA every 5 % (:class:`Progress`).
    ``rest_recipe``: the settings the rest maps were made with (``preprocess.recipe``).
    """
    import h5py

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w", libver="v110") as h5:
            writer = PackWriter(h5, grid, trials, rest_index, image_nsd_ids, image_size,
                                compression)
            logs = {name: Progress(f"pack: {name}", n, unit, enabled=progress) for name, n, unit in (
                ("rest maps", writer.rest_maps.shape[0], "maps"),
                ("images", writer.images.shape[0], "images"), ("betas", writer.n_trials, "rows"))}
            for row, vector in enumerate(rest_vectors):
                writer.write_rest(row, vector)
                logs["rest maps"].update(1)
            for start, block in image_blocks:
                writer.write_images(start, block)
                logs["images"].update(len(block))
            for source, trial_numbers, block in beta_blocks:
                writer.write_betas(block, source, trial_numbers)
                logs["betas"].update(len(block))
            if ncsnr is not None:
                writer.write_ncsnr(*ncsnr)
            writer.finish(excluded, config_hash=config_hash, template=template,
                          mask_description=mask_description, rest_recipe=rest_recipe)
        if validate and progress:
            print(f"pack: validating {out_path.name}", flush=True)
        problems = validate_pack(tmp) if validate else []
        if problems:
            raise InputError(f"{out_path}: the packed file failed validation:\n  "
                             + "\n  ".join(problems))
    return out_path


def pack_triplets(out_path, *, rest_maps: dict, evoked: dict, expdesign_path, stimuli_path,
                  mask_path, image_size: int = 64, trials_per_session: int = 750,
                  config_hash: str = "", ncsnr: dict | None = None,
                  template: str = DEFAULT_TEMPLATE, compression: str | None = None,
                  verbose: bool = True) -> Path:
    """Pack the workflow's per-session files into the triplet pack ``out_path``.

    ``rest_maps`` / ``evoked`` map (subject, session) to a PCC z-map NIfTI in MNI
    and to an evoked betas HDF5 (``betas``, ``mask``, ``trial``, attrs
    ``bad_trials``); both must cover the same sessions. ``mask_path`` is the MNI
    brain mask NIfTI every input must share; ``ncsnr`` maps subject → ncsnr NIfTI
    in MNI (optional). Bad trials are left out and listed in /excluded_trials. The
    z-maps' recipe sidecars (``preprocess.recipe``) must agree; the recipe is stored
    as the root attribute ``rest_recipe``. The pack is validated (:func:`rest2visual.dataset.validate.validate_pack`)
    before it is renamed to ``out_path``, so an invalid pack never appears there.
    """
    from rest2visual.dataset.images import iter_resized_images

    if set(rest_maps) != set(evoked):
        raise InputError(f"rest maps and evoked betas cover different (subject, session) pairs: "
                         f"only rest {sorted(set(rest_maps) - set(evoked))}, "
                         f"only evoked {sorted(set(evoked) - set(rest_maps))}")
    if not rest_maps:
        raise InputError("no sessions to pack")
    grid = MaskedGrid.from_img(load_nifti(mask_path, ndim=3, what="MNI brain mask"))
    sessions = [_Session(int(sub), int(ses), Path(rest_maps[sub, ses]), Path(evoked[sub, ses]))
                for sub, ses in sorted(evoked)]
    for s in sessions:
        _read_evoked_meta(s, grid)
    trials, image_nsd_ids = _trial_table(sessions, expdesign_path, trials_per_session)
    excluded = [(s.subject, s.session, int(t)) for s in sessions for t in s.excluded]
    rest_index = {"subject": [s.subject for s in sessions],
                  "session": [s.session for s in sessions]}

    def rest_vectors():
        for s in sessions:
            img = load_nifti(s.rest_path, ndim=3, shape=grid.shape, affine=grid.affine,
                             what="PCC rest z-map in MNI")
            yield grid.to_vectors(np.asarray(img.dataobj, dtype=np.float32))

    ncsnr_vectors = _ncsnr_vectors(ncsnr, grid, set(rest_index["subject"])) if ncsnr else None
    rest_recipe = recipe.common_recipe(s.rest_path for s in sessions)
    write_pack(
        out_path, grid=grid, trials=trials, rest_index=rest_index, image_nsd_ids=image_nsd_ids,
        image_size=image_size, rest_vectors=rest_vectors(),
        image_blocks=iter_resized_images(stimuli_path, image_nsd_ids, image_size),
        beta_blocks=(b for s in sessions for b in _evoked_blocks(s, grid.n_voxels)),
        excluded=excluded,
        ncsnr=ncsnr_vectors,
        config_hash=config_hash, template=template, compression=compression,
        mask_description=f"{Path(mask_path).name}: {grid.n_voxels} in-mask voxels of {grid.shape}",
        progress=verbose, rest_recipe=rest_recipe,
    )
    if verbose:
        print(f"packed {len(trials)} trials, {len(sessions)} rest maps, {len(image_nsd_ids)} "
              f"images, {grid.n_voxels} voxels -> {out_path}; excluded {len(excluded)} bad "
              f"trials" + (f": {excluded[:20]}" if excluded else ""))
        for line in ncsnr_missing_report(ncsnr_vectors) if ncsnr_vectors else []:
            print(line)
    return Path(out_path)


class Pack:
    """Read-only access to a triplet pack; the HDF5 file opens lazily, once per process.

    Safe across ``fork`` (a DataLoader worker reopens the file instead of using
    its parent's handle) and picklable (the handle is not pickled).
    """

    def __init__(self, path):
        self.path = require_file(path, "triplet pack")
        self._h5, self._pid = None, None

    @property
    def h5(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = self._pid = None

    def __enter__(self) -> "Pack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        return {**self.__dict__, "_h5": None, "_pid": None}

    @cached_property
    def grid(self) -> MaskedGrid:
        return MaskedGrid.from_h5(self.h5)

    @cached_property
    def trials(self):
        """DataFrame of TRIAL_COLUMNS; the index is the row in /betas."""
        import pandas as pd

        return pd.DataFrame({c: self.h5["trials"][c][()] for c in TRIAL_COLUMNS})

    @cached_property
    def rest_index(self):
        """DataFrame (subject, session); the index is the row in /rest_maps."""
        import pandas as pd

        return pd.DataFrame({c: self.h5["rest_index"][c][()] for c in ("subject", "session")})

    @cached_property
    def image_nsd_ids(self) -> np.ndarray:
        return self.h5["image_nsd_ids"][()]

    @property
    def attrs(self) -> dict:
        return dict(self.h5.attrs)

    def ncsnr(self, subject: int) -> np.ndarray | None:
        """(n_vox,) float32 ncsnr of ``subject`` in MNI (NaN = missing), or None if none."""
        if "ncsnr" not in self.h5:
            return None
        hit = np.flatnonzero(self.h5["ncsnr_subjects"][()] == subject)
        return self.h5["ncsnr"][int(hit[0])] if hit.size else None


_ENTITY = {"subject": re.compile(r"(?:^|_)sub-0*(\d+)"),
           "session": re.compile(r"(?:^|_)ses-0*(\d+)")}


def entity(path, name: str) -> int:
    """The BIDS entity ``sub-`` / ``ses-`` of a file name as an int, or InputError."""
    hit = _ENTITY[name].search(Path(path).name)
    if not hit:
        raise InputError(f"{path}: no '{'sub' if name == 'subject' else 'ses'}-NN' in the name "
                         f"(needed to match the file to its {name})")
    return int(hit.group(1))


def _evoked_key(path) -> tuple[int, int]:
    import h5py

    with h5py.File(require_file(path, "evoked betas file"), "r") as h5:
        if "subject" in h5.attrs and "session" in h5.attrs:
            return int(h5.attrs["subject"]), int(h5.attrs["session"])
    return entity(path, "subject"), entity(path, "session")


def _by_key(paths, key) -> dict:
    out = {}
    for p in paths:
        k = key(p)
        if k in out:
            raise InputError(f"{p} and {out[k]} are both for {k}")
        out[k] = p
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rest2visual pack", description=__doc__.split("\n")[0])
    parser.add_argument("--rest", nargs="+", required=True, help="PCC z-map NIfTIs in MNI "
                        "(matched by sub-NN/ses-NN in the name)")
    parser.add_argument("--evoked", nargs="+", required=True, help="evoked betas HDF5 files "
                        "(matched by their subject/session attributes, else the name)")
    parser.add_argument("--expdesign", required=True, help="nsd_expdesign.mat")
    parser.add_argument("--stimuli", required=True, help="nsd_stimuli.hdf5 (imgBrick)")
    parser.add_argument("--mask", required=True, help="MNI brain mask NIfTI")
    parser.add_argument("--ncsnr", nargs="*", default=[], help="ncsnr NIfTIs in MNI (sub-NN)")
    parser.add_argument("--image-size", type=int, default=64, help="pixels (square)")
    parser.add_argument("--trials-per-session", type=int, default=750)
    parser.add_argument("--config-hash", default="")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE)
    parser.add_argument("--compression", choices=("none", "lzf", "gzip"), default="none")
    parser.add_argument("--out", required=True, help="the pack (.h5)")
    args = parser.parse_args(argv)
    try:
        pack_triplets(
            args.out,
            rest_maps=_by_key(args.rest, lambda p: (entity(p, "subject"), entity(p, "session"))),
            evoked=_by_key(args.evoked, _evoked_key),
            ncsnr=_by_key(args.ncsnr, lambda p: entity(p, "subject")) or None,
            expdesign_path=args.expdesign, stimuli_path=args.stimuli, mask_path=args.mask,
            image_size=args.image_size, trials_per_session=args.trials_per_session,
            config_hash=args.config_hash, template=args.template,
            compression=None if args.compression == "none" else args.compression,
        )
    except InputError as exc:
        print(f"rest2visual pack: error: {exc}", file=sys.stderr)
        return 1
    return 0
