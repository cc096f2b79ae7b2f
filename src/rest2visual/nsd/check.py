"""``rest2visual check-nsd``: every NSD key a configuration needs, checked before any compute.

A day of cluster time on NSD should not end in hour five on a truncated file.
For each key :func:`workflow_keys` lists (the list the workflow builds its jobs
from), this checks, reading headers and trailers only:

- present (a missing late session says NSD released it in 2023);
- readable: the NIfTI header parses, and for ``.nii.gz`` the gzip trailer's
  uncompressed size (ISIZE, the last 4 bytes) equals the header's ``vox_offset``
  + voxels × bytes per voxel, so a truncated file is caught by one seek instead
  of inflating a gigabyte (``--full`` inflates every stream);
- on the subject's grid: the shape and affine of the subject's anatomy in the
  space (what the registration and every warp use), and, at NSD's own voxel
  size, NSD's published grid shape for the subject;
- dtype int16 for trial betas and time series; the betas' volume count equals
  ``nsd.trials_per_session`` (≤ 750);
- the design (``nsd_expdesign.mat``: :func:`rest2visual.nsd.design.load_expdesign`),
  its image ids within the stimulus brick, ``imgBrick``'s shape and dtype;
- ncsnr readable (NaN outside the brain is NSD's convention, not a problem);
- motion TSVs: 6 numeric columns, one row per volume of their run;
- the rest runs' TR against the configured TR (``nsd.tr_s``, func1mm:
  ``nsd.tr_s_func1mm``), and the same
  TR in all of a subject's sessions (see :func:`check_tr`).

On S3 (``nsd.source: s3``) it sends anonymous HEADs and ranged GETs (a few KB of
each NIfTI, the 4-byte gzip trailer, the HDF5 metadata); only the design
(2.5 MB) and motion TSVs (30 KB) are read whole. Keys already in the download
folder are read there. The result is one table of problems, each naming the
key, what needs it, what was expected and what was found; notes (e.g. NSD's
unknown header time units) are listed after it and do not fail the check.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rest2visual.checks import InputError
from rest2visual.nsd import keys as nsdkeys
from rest2visual.nsd.headers import NiftiInfo, read_nifti_info
from rest2visual.nsd.mirror import LocalStore, S3Store

#: header TR and configured TR may differ by this fraction (issue: > 1 % stops the run)
TR_TOLERANCE = 0.01
#: files up to this size are read whole (the design .mat, motion TSVs)
SMALL_BYTES = 16 * 1024 * 1024
#: NSD's voxel size (mm) and published grid shapes per space
NSD_VOXEL_MM = {"func1pt8mm": 1.8, "func1mm": 1.0}
#: the year NSD released each subject's last three sessions
LATE_RELEASE_YEAR = 2023
LATE_SESSIONS = 3
NIFTI_KINDS_3D = {"anatomy", "brainmask", "ncsnr", "nsdgeneral"}
INT16_KINDS = {"betas", "rest"}


@dataclass(frozen=True)
class Finding:
    """One row of the table: a problem (fails the check) or a note (does not)."""

    key: str
    needed_by: str
    expected: str
    found: str
    problem: bool = True


def workflow_keys(config: dict) -> list[nsdkeys.NeededKey]:
    """Every NSD key the configured workflow reads: :func:`rest2visual.nsd.keys.needed_keys`,
    plus each subject's NSD func → MNI transform when ``registration.crosscheck`` is on
    (the cross-check of the two registrations reads it whatever ``registration.method``),
    and NSD's MNI → func transform with ``registration.method: nsd`` (the decoding bridge,
    ``rest2visual to-native``, maps MNI betas back to native space through it; the
    simulated NSD writes it too)."""
    keys = nsdkeys.needed_keys(config)
    registration = config.get("registration", {})
    if registration.get("method") == "nsd":
        keys += [nsdkeys.NeededKey(nsdkeys.mni_to_func_key(s, config["nsd"]["space"]),
                                   "mni_to_func", f"{nsdkeys.subj(s)} decoding bridge "
                                   "(MNI betas → native, method: nsd)")
                 for s in config["nsd"]["subjects"]]
    if registration.get("crosscheck"):
        have = {k.key for k in keys}
        for s in config["nsd"]["subjects"]:
            key = nsdkeys.func_to_mni_key(s, config["nsd"]["space"])
            if key not in have:
                keys.append(nsdkeys.NeededKey(key, "func_to_mni", f"{nsdkeys.subj(s)} "
                                              "cross-check of ANTs with NSD's transform"))
    return keys


def nsd_grid_shape(subject: int, space: str) -> tuple[int, int, int] | None:
    """NSD's published native grid (X, Y, Z) of ``subject`` in ``space``, if known."""
    if space == "func1pt8mm":
        return tuple(nsdkeys.FUNC1PT8MM_SHAPES[subject])
    return None  # func1mm: NSD's code lists no grid shapes (see keys.py)


def late_sessions(subject: int) -> range:
    """NSD's last three sessions of ``subject``, released in 2023 (older mirrors lack them)."""
    n = nsdkeys.N_SESSIONS[subject]
    return range(n - LATE_SESSIONS + 1, n + 1)


def _subject_session(key: str) -> tuple[int | None, int | None]:
    s = re.search(r"/subj(\d\d)/", key)
    t = re.search(r"session(\d\d)", key)
    return (int(s.group(1)) if s else None), (int(t.group(1)) if t else None)


# --- the checks ------------------------------------------------------------------

class _Check:
    """Runs the checks of one configuration against one store; collects findings."""

    def __init__(self, config: dict, store, *, full: bool = False, workers: int = 1) -> None:
        self.config, self.store, self.full, self.workers = config, store, full, workers
        self.nsd = config["nsd"]
        self.space = self.nsd["space"]
        self.needed = workflow_keys(config)
        self.findings: list[Finding] = []
        self.sizes: dict[str, int | None] = {}
        self.infos: dict[str, NiftiInfo] = {}

    def add(self, k, expected: str, found: str, problem: bool = True) -> None:
        self.findings.append(Finding(k.key, k.needed_by, expected, found, problem))

    def _map(self, func, items):
        if self.workers > 1 and len(items) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(func, items))
        return [func(i) for i in items]

    def _size(self, k):
        try:
            return self.store.size(k.key)
        except Exception as exc:  # 403, connection refused, permission denied, ...
            return exc

    def run(self) -> list[Finding]:
        sizes = self._map(self._size, self.needed)
        self.sizes = {k.key: n for k, n in zip(self.needed, sizes)}
        present = []
        for k in self.needed:
            if isinstance(self.sizes[k.key], Exception):
                self.add(k, "readable", f"{type(self.sizes[k.key]).__name__}: "
                                        f"{self.sizes[k.key]}")
            elif self.sizes[k.key] is None:
                self.missing(k)
            elif self.sizes[k.key] == 0:
                self.add(k, "a non-empty file", "0 bytes")
            else:
                present.append(k)
        self.declared_sizes(present)
        niftis = [k for k in present if k.key.endswith((".nii", ".nii.gz"))]
        for k, result in zip(niftis, self._map(self._read_info, niftis)):
            if isinstance(result, NiftiInfo):
                self.infos[k.key] = result
            else:
                self.add(k, "a readable NIfTI file", str(result))
        self.grids()
        self.contents()
        self.design_and_stimuli(present)
        self.motion(present)
        self.findings += check_tr(self.config, [(k, self.infos[k.key]) for k in self.needed
                                                if k.kind == "rest" and k.key in self.infos])
        order = {k.key: i for i, k in enumerate(self.needed)}
        return sorted(self.findings, key=lambda f: order.get(f.key, len(order)))

    def _read_info(self, k):
        try:
            return read_nifti_info(self.store, k.key, self.sizes[k.key], full=self.full)
        except InputError as exc:
            return exc
        except Exception as exc:  # the store's own errors (S3 request failed, EIO, ...)
            return InputError(f"{type(exc).__name__}: {exc}")

    def missing(self, k) -> None:
        subject, session = _subject_session(k.key)
        found = "missing"
        if subject and session in late_sessions(subject):
            found += (f": NSD released session {session} of subj{subject:02d} (one of its last "
                      f"{LATE_SESSIONS}) in {LATE_RELEASE_YEAR}, mirrors made before then lack "
                      "it; update the mirror or drop the session from nsd.sessions")
        self.add(k, "present", found)

    def declared_sizes(self, present) -> None:
        """S3 objects whose ``x-amz-meta-size`` disagrees with their stored bytes."""
        s3 = getattr(self.store, "s3", self.store)
        if not hasattr(s3, "declared_size"):
            return
        for k in present:
            if self.store.local_path(k.key) is None:
                declared = s3.declared_size(k.key)
                if declared is not None and declared != self.sizes[k.key]:
                    self.add(k, f"{declared} bytes (x-amz-meta-size)",
                             f"{self.sizes[k.key]} bytes stored: truncated or padded upload")

    def grids(self) -> None:
        """Every native file of a subject on the grid of its anatomy (and NSD's grid)."""
        for s in self.nsd["subjects"]:
            mine = [k for k in self.needed if k.key in self.infos
                    and f"/{nsdkeys.subj(s)}/{self.space}/" in k.key]
            ref = next((k for kind in ("anatomy", "brainmask") for k in mine if k.kind == kind),
                       None)
            if ref is None:
                continue
            grid = self.infos[ref.key]
            voxel = float(np.mean(grid.zooms[:3]))
            nsd_shape, nsd_mm = nsd_grid_shape(s, self.space), NSD_VOXEL_MM.get(self.space)
            if nsd_mm and abs(voxel - nsd_mm) > 0.01 * nsd_mm:
                self.add(ref, f"NSD's {nsd_mm:g} mm {self.space} grid",
                         f"{voxel:.3g} mm voxels, shape {grid.shape[:3]}: not NSD's grid (a "
                         "resampled or simulated mirror?); files checked against this grid",
                         problem=False)
            elif nsd_shape and grid.shape[:3] != nsd_shape:
                self.add(ref, f"NSD's {nsdkeys.subj(s)} {self.space} grid {nsd_shape}",
                         f"shape {grid.shape[:3]} (another subject's or space's file?)")
            for k in mine:
                info = self.infos[k.key]
                if k is ref or len(info.shape) < 3:
                    continue
                if info.shape[:3] != grid.shape[:3]:
                    self.add(k, f"the grid of {ref.key}: shape {grid.shape[:3]}",
                             f"shape {info.shape[:3]}")
                elif not np.allclose(info.affine, grid.affine, atol=1e-3):
                    self.add(k, f"the affine of {ref.key}: "
                                f"{np.round(grid.affine[:3], 3).tolist()}",
                             f"{np.round(info.affine[:3], 3).tolist()}")

    def contents(self) -> None:
        """Dimensions, dtypes and volume counts by kind; ncsnr readable."""
        trials = int(self.nsd["trials_per_session"])
        for k in self.needed:
            info = self.infos.get(k.key)
            if info is None:
                continue
            shape = info.shape
            if k.kind in NIFTI_KINDS_3D and not (len(shape) == 3
                                                 or (len(shape) == 4 and shape[3] == 1)):
                self.add(k, "a 3D volume", f"shape {shape}")
            if k.kind in INT16_KINDS and info.dtype != np.int16:
                self.add(k, "int16 (NSD's storage)", str(info.dtype))
            if k.kind in INT16_KINDS and len(shape) != 4:
                self.add(k, "a 4D series X×Y×Z×T", f"shape {shape}")
            elif k.kind == "betas" and shape[3] != trials:
                self.add(k, f"{trials} volumes (nsd.trials_per_session; NSD: "
                            f"{nsdkeys.TRIALS_PER_SESSION})", f"{shape[3]} volumes")
            if k.kind in ("func_to_mni", "mni_to_func") and (len(shape) != 4 or shape[3] != 3):
                self.add(k, "an NSD coordinate map X×Y×Z×3", f"shape {shape}")
            if k.kind == "ncsnr":
                self.ncsnr(k, info)

    def ncsnr(self, k, info: NiftiInfo) -> None:
        if info.dtype.kind != "f":
            self.add(k, "float values (NaN marks invalid voxels)", str(info.dtype))
            return
        path = self.store.local_path(k.key)
        if path is None:  # on S3: header and trailer only
            return
        import nibabel as nib

        try:
            data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        except Exception as exc:
            self.add(k, "readable ncsnr values", f"cannot read the data ({exc})")
            return
        if not np.any(np.isfinite(data) & (data != 0)):
            self.add(k, "finite, non-zero ncsnr inside the brain", "no finite non-zero value")

    def _local_copy(self, k, tmpdir: str) -> Path | None:
        path = self.store.local_path(k.key)
        if path is not None:
            return path
        size = self.sizes[k.key]
        if size > SMALL_BYTES:
            self.add(k, f"at most {SMALL_BYTES} bytes to read whole", f"{size} bytes")
            return None
        path = Path(tmpdir) / Path(k.key).name
        path.write_bytes(self.store.read(k.key, 0, size))
        return path

    def design_and_stimuli(self, present) -> None:
        from rest2visual.nsd.design import load_expdesign

        design, n_images = None, None
        with tempfile.TemporaryDirectory(prefix="check-nsd-") as tmp:
            for k in present:
                if k.kind == "expdesign":
                    path = self._local_copy(k, tmp)
                    try:
                        design = path and load_expdesign(path)
                    except InputError as exc:
                        self.add(k, "NSD's design fields (masterordering 30000, subjectim "
                                    "8 × n, sharedix)", str(exc).replace(f"{path}: ", ""))
                elif k.kind == "stimuli":
                    n_images = self.stimuli(k)
        if design is not None and n_images is not None:
            self.trial_images(next(k for k in present if k.kind == "expdesign"), design,
                              n_images)

    def trial_images(self, k, design, n_images: int) -> None:
        """The images of the trials used (first trials_per_session of each session) exist."""
        from rest2visual.nsd.design import trial_nsd_ids

        trials = int(self.nsd["trials_per_session"])
        for s in self.nsd["subjects"]:
            for t in nsdkeys.sessions_for(self.config, s):
                ids = trial_nsd_ids(design, s, t, trials)
                if ids.max() >= n_images:
                    self.add(k, f"{nsdkeys.subj(s)} session {t} trials 1–{trials} showing "
                                f"images within imgBrick's {n_images}",
                             f"73k id {int(ids.max())} (0-based)")

    def stimuli(self, k) -> int | None:
        import h5py

        from rest2visual.dataset.images import check_imgbrick

        try:
            with self.store.open(k.key) as raw, h5py.File(raw, "r") as h5:
                return int(check_imgbrick(h5, k.key).shape[0])
        except InputError as exc:
            self.add(k, "imgBrick (n, 425, 425, 3) uint8", str(exc).replace(f"{k.key}: ", ""))
        except Exception as exc:  # h5py: not an HDF5 file, truncated superblock, ...
            self.add(k, "a readable HDF5 file", f"{type(exc).__name__}: {exc}")
        return None

    def motion(self, present) -> None:
        """Motion TSVs: 6 numeric columns, one row per volume of the run they belong to."""
        for k in present:
            if k.kind != "motion":
                continue
            (subject, session), run = _subject_session(k.key), re.search(r"_run(\d\d)", k.key)
            run_key = nsdkeys.rest_key(subject, session, int(run.group(1)), self.space)
            try:
                text = self.store.read(k.key, 0, self.sizes[k.key]).decode()
                table = np.loadtxt(io.StringIO(text), delimiter="\t", ndmin=2)
            except (ValueError, UnicodeDecodeError) as exc:
                self.add(k, "tab-separated numbers, 6 columns, no header", str(exc))
                continue
            if table.shape[1] != 6:
                self.add(k, "6 columns (3 translations mm, 3 rotations rad)",
                         f"{table.shape[1]} columns")
            run = self.infos.get(run_key)
            if run is not None and len(run.shape) == 4 and table.shape[0] != run.shape[3]:
                self.add(k, f"{run.shape[3]} rows (the volumes of {run_key})",
                         f"{table.shape[0]} rows")


def check_tr(config: dict, runs: list) -> list[Finding]:
    """TR of each rest run's header against the configured TR, and across sessions.

    ``runs``: (NeededKey, NiftiInfo) of the rest runs. NSD writes ``xyzt_units``
    = 0 (unknown) and pixdim[4] = 4/3 for the 1.8 mm series (true TR 1.33317 s):
    with unknown units, pixdim[4] within 1 % of the configured TR is NSD's nominal
    value and the configured TR is used (a note). A header TR more than 1 % from
    the configured one, or one subject's sessions more than 1 % apart, is a
    problem under ``nsd.tr_source: check`` (the default) and a note under
    ``header`` (rest-map then uses each header's TR where it has a time unit, the
    configured TR where not).
    """
    from rest2visual.preprocess.rest_map import _TIME_UNIT_S  # the units rest-map trusts

    (cfg, cfg_key), policy = nsdkeys.configured_tr(config["nsd"]), config["nsd"]["tr_source"]
    problem = policy == "check"
    advice = " (or set nsd.tr_source: header)" if problem else ""
    out, per_subject, nominal = [], {}, {}
    for k, info in runs:
        unit, value = info.time_unit, info.tr_field
        known = unit in _TIME_UNIT_S
        tr = value * _TIME_UNIT_S[unit] if known else value
        subject, session = _subject_session(k.key)
        per_subject.setdefault(subject, []).append((k, session, tr))
        off = not tr > 0 or abs(tr - cfg) > TR_TOLERANCE * cfg
        if not known and not off:
            first, _, n = nominal.get(subject, (k, value, 0))
            nominal[subject] = (first, value, n + 1)
        elif off:
            said = (f"{tr:.6g} s (header, {unit})" if known
                    else f"pixdim[4] = {value:.6g} with unknown time units (xyzt_units 0)")
            use = "" if problem else (f"; using the header's {tr:.6g} s" if known
                                      else f"; using {cfg_key}")
            out.append(Finding(k.key, k.needed_by, f"within 1 % of {cfg_key} = {cfg:g} s"
                               + advice, said + use, problem=problem))
    for subject, (k, value, n) in nominal.items():
        out.append(Finding(k.key, f"subj{subject:02d} rest runs", "a TR in the header",
                           f"{n} runs: time units unknown (xyzt_units 0), pixdim[4] = {value:.6g}"
                           f" (NSD's nominal TR): the workflow uses {cfg_key} = {cfg:g} s",
                           problem=False))
    for subject, items in per_subject.items():
        _, first_session, first = items[0]
        for k, _, tr in items[1:]:
            if abs(tr - first) > TR_TOLERANCE * max(first, 1e-9):
                out.append(Finding(k.key, k.needed_by, f"the TR of subj{subject:02d}'s other "
                                   f"sessions ({first:.6g} in session {first_session}){advice}",
                                   f"{tr:.6g}", problem=problem))
    return out


def check_nsd(config: dict, store=None, *, full: bool = False,
              workers: int | None = None) -> list[Finding]:
    """Findings (problems and notes) for every key ``config`` needs, in the order of the keys.

    store : where the keys are (default: from ``nsd.source``; see :func:`store_for`).
    full : inflate every ``.nii.gz`` stream (seconds per GB) instead of the trailer check.
    workers : parallel requests (default 16 on S3, 1 for a folder).
    """
    store = store or store_for(config)
    if workers is None:
        workers = 1 if isinstance(store, LocalStore) else S3Store.CONNECTIONS
    return _Check(config, store, full=full, workers=workers).run()


def store_for(config: dict):
    """The store of ``nsd.source``: the local mirror, or S3 (downloaded keys read locally)."""
    from rest2visual.nsd.mirror import DownloadedOrS3Store

    nsd = config["nsd"]
    if nsd["source"] == "local":
        return LocalStore(nsd["local_root"])
    if nsd["source"] == "s3":
        return DownloadedOrS3Store(nsd["download_dir"], S3Store(nsd["bucket"],
                                                                nsd["endpoint_url"]))
    return LocalStore(Path(config["simulate"]["root"]) / "nsd")


# --- the table and the command ---------------------------------------------------

def format_table(findings: list[Finding]) -> str:
    """Problems, then notes, as Markdown tables (key, needed by, expected, found)."""
    def table(rows):
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = ["| key | needed by | expected | found |", "|---|---|---|---|"]
        lines += [f"| {cell(f.key)} | {cell(f.needed_by)} | {cell(f.expected)} | "
                  f"{cell(f.found)} |" for f in rows]
        return "\n".join(lines)

    problems = [f for f in findings if f.problem]
    notes = [f for f in findings if not f.problem]
    parts = [f"{len(problems)} problem(s):\n" + table(problems)] if problems else []
    if notes:
        parts.append(f"{len(notes)} note(s):\n" + table(notes))
    return "\n\n".join(parts)


class NSDCheckError(InputError):
    """check-nsd found problems; the message is the table."""


def preflight(config: dict, log=None) -> None:
    """The workflow's start-up check (``nsd.source`` local or s3): raise NSDCheckError
    with the table on any problem; notes go to ``log`` (a callable taking a str)."""
    store = store_for(config)
    findings = check_nsd(config, store)
    problems = [f for f in findings if f.problem]
    n = len(workflow_keys(config))
    if problems:
        raise NSDCheckError(f"check-nsd: {store.where}: {len(problems)} problem(s) in the "
                            f"{n} NSD keys this configuration needs; nothing was run.\n"
                            + format_table(findings))
    if log is not None:
        log(f"check-nsd: {n} NSD keys in {store.where} checked, no problem"
            + ("\n" + format_table(findings) if findings else ""))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rest2visual check-nsd",
        description="Check every NSD key a configuration needs (present, readable, grid, "
                    "dtype, volumes, design, TR) from headers and trailers, before any "
                    "compute. Exit 1 on any problem.")
    parser.add_argument("--configfile", action="append", default=[], metavar="FILE",
                        help="config layered over config/config.yaml (repeatable)")
    parser.add_argument("--workflow-dir", default=".",
                        help="the repository (holds config/ and workflow/schemas/)")
    parser.add_argument("--full", action="store_true",
                        help="inflate every .nii.gz stream instead of checking its trailer")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rest2visual check-nsd --configfile my.yaml``: print the table; 0 clean, 1 problems."""
    from snakemake.exceptions import WorkflowError

    from rest2visual.config import ConfigError
    from rest2visual.plan import load_workflow_config

    args = _parser().parse_args(argv)
    try:
        config = load_workflow_config(args.configfile, args.workflow_dir)
        store = store_for(config)
        findings = check_nsd(config, store, full=args.full)
    except (InputError, ConfigError, OSError, WorkflowError) as exc:
        print(f"rest2visual check-nsd: error: {exc}", file=sys.stderr)
        return 1
    n = len(workflow_keys(config))
    problems = sum(f.problem for f in findings)
    print(f"check-nsd: {n} NSD keys needed by the configuration, in {store.where}: "
          f"{problems} problem(s)")
    if findings:
        print(format_table(findings))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
