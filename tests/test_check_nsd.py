"""rest2visual check-nsd: a broken NSD mirror is refused, naming each problem, before any job.

A toy simulated NSD (subjects 1 and 5, session 21, 6 mm) is broken the ways real
mirrors break: a deleted key, a truncated ``.nii.gz``, a betas file with the
wrong volume count, a float32 time series, and a late session (38, released in
2023) that the mirror lacks. The same mirror is then served by the local S3
server and checked through HEAD and ranged GETs only.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import s3server
from conftest import REPO, run_workflow
from rest2visual.checks import InputError
from rest2visual.nsd import check
from rest2visual.nsd import keys as K
from rest2visual.nsd.headers import HEADER_PROBE_BYTES, NiftiInfo, read_nifti_info
from rest2visual.nsd.keys import NeededKey
from rest2visual.nsd.mirror import LocalStore

SIM = dict(subjects=(1, 5), sessions=(21,), trials_per_session=20, voxel_mm=6.0, volumes=40,
           n_images=30, n_shared=6, mni_resolution_mm=6.0, seed=0)

DELETED = K.brainmask_key(5)
TRUNCATED = K.betas_key(1, 21)
SHORT = K.betas_key(5, 21)            # 19 volumes instead of 20
FLOAT = K.rest_key(5, 21, 14)         # float32 instead of int16
LATE = [K.betas_key(s, 38) for s in (1, 5)] + [K.rest_key(s, 38, r) for s in (1, 5)
                                                for r in K.REST_RUNS]


def config(root, *, sessions=(21,), rest=None, **nsd) -> dict:
    """The workflow's config for the toy mirror, layered and validated like the Snakefile's."""
    import tempfile

    from rest2visual.plan import load_workflow_config

    layer = {"nsd": {"source": "local", "local_root": str(root), "subjects": [1, 5],
                     "sessions": list(sessions), "trials_per_session": 20, **nsd},
             "mni": {"resolution_mm": 6}, "rest": rest or {}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fh:
        yaml.safe_dump(layer, fh)
        fh.flush()
        return load_workflow_config([fh.name], REPO)


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    from rest2visual.nsd.simulate import simulate_nsd

    return simulate_nsd(tmp_path_factory.mktemp("check-nsd") / "sim", **SIM).nsd_root


def _rewrite(path: Path, data: np.ndarray, dtype) -> None:
    import nibabel as nib

    old = nib.load(str(path))
    img = nib.Nifti1Image(data.astype(dtype), old.affine, old.header)
    img.header.set_data_dtype(dtype)
    nib.save(img, str(path))


@pytest.fixture(scope="module")
def broken_root(clean_root, tmp_path_factory) -> Path:
    import nibabel as nib

    root = tmp_path_factory.mktemp("broken") / "nsd"
    shutil.copytree(clean_root, root)
    (root / DELETED).unlink()
    body = (root / TRUNCATED).read_bytes()
    (root / TRUNCATED).write_bytes(body[: len(body) // 2])
    short = nib.load(str(root / SHORT))
    _rewrite(root / SHORT, np.asarray(short.dataobj)[..., :19], np.int16)
    _rewrite(root / FLOAT, np.asarray(nib.load(str(root / FLOAT)).dataobj), np.float32)
    return root


def _rows(findings) -> dict[str, list[check.Finding]]:
    rows: dict[str, list[check.Finding]] = {}
    for f in findings:
        if f.problem:
            rows.setdefault(f.key, []).append(f)
    return rows


def _assert_each_problem_named(findings, *extra: str) -> None:
    rows = _rows(findings)
    assert set(rows) == {DELETED, TRUNCATED, SHORT, FLOAT, *LATE, *extra}, sorted(rows)
    assert rows[DELETED][0].found == "missing"
    assert rows[DELETED][0].needed_by == "subj05 registration to MNI"
    assert "truncated" in rows[TRUNCATED][0].found
    assert rows[SHORT][0].expected.startswith("20 volumes") and rows[SHORT][0].found == "19 volumes"
    assert rows[FLOAT][0].expected.startswith("int16") and rows[FLOAT][0].found == "float32"
    assert rows[FLOAT][0].needed_by == "subj05 session 21 rest run14"
    for key in LATE:
        assert "released session 38" in rows[key][0].found and "2023" in rows[key][0].found
    assert all(len(r) == 1 for r in rows.values())


def test_clean_mirror_passes_with_nsd_header_notes(clean_root, capsys):
    findings = check.check_nsd(config(clean_root))
    assert not [f for f in findings if f.problem], check.format_table(findings)
    # NSD's own headers: no time unit, pixdim[4] = 4/3 → a note that nsd.tr_s is used
    assert any("xyzt_units 0" in f.found for f in findings if not f.problem)
    cfg_file = clean_root.parent / "clean.yaml"
    cfg_file.write_text(yaml.safe_dump({"nsd": {"source": "local", "local_root": str(clean_root),
                                                "subjects": [1, 5], "sessions": [21],
                                                "trials_per_session": 20}}))
    assert check.main(["--configfile", str(cfg_file), "--workflow-dir", str(REPO)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_broken_mirror_names_every_problem(broken_root, capsys):
    findings = check.check_nsd(config(broken_root, sessions=(21, 38)))
    _assert_each_problem_named(findings)
    cfg_file = broken_root.parent / "broken.yaml"
    cfg_file.write_text(yaml.safe_dump({"nsd": {"source": "local", "local_root": str(broken_root),
                                                "subjects": [1, 5], "sessions": [21, 38],
                                                "trials_per_session": 20}}))
    assert check.main(["--configfile", str(cfg_file), "--workflow-dir", str(REPO)]) == 1
    out = capsys.readouterr().out
    assert f"{len(_rows(findings))} problem(s)" in out
    assert f"| {FLOAT} | subj05 session 21 rest run14 | int16" in out


def test_motion_rows_must_match_the_run(clean_root, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(clean_root, root)
    motion = root / K.motion_key(5, 21, 14)
    lines = motion.read_text().splitlines()
    motion.write_text("\n".join(lines[:-3]) + "\n")
    findings = check.check_nsd(config(root, rest={"confounds": "motion"}))
    rows = _rows(findings)
    assert set(rows) == {motion.relative_to(root).as_posix()}
    only = rows[K.motion_key(5, 21, 14)][0]
    assert only.expected.startswith(f"{len(lines)} rows") and only.found == f"{len(lines) - 3} rows"


def test_gzip_trailer_catches_truncation_without_inflating(broken_root, clean_root):
    """One seek: the trailer's ISIZE disagrees with the header's data size."""
    class NoInflate(LocalStore):
        def open(self, key):
            raise AssertionError(f"{key} was inflated")

    size = (clean_root / TRUNCATED).stat().st_size
    info = read_nifti_info(NoInflate(clean_root), TRUNCATED, size)
    assert info.shape[3] == 20 and info.dtype == np.int16

    class LikeS3(LocalStore):
        """A folder read like a bucket: no local path, so no inflating fallback."""

        def local_path(self, key):
            return None

    with pytest.raises(InputError, match="gzip trailer"):
        read_nifti_info(LikeS3(broken_root), TRUNCATED, (broken_root / TRUNCATED).stat().st_size)


def test_workflow_stops_before_any_job(broken_root, tmp_path):
    cfg = {"nsd": {"source": "local", "local_root": str(broken_root), "subjects": [1, 5],
                   "sessions": [21, 38], "trials_per_session": 20},
           "simulate": {"voxel_mm": 6.0}, "mni": {"resolution_mm": 6},
           "splits": {"unseen_subjects": [], "n_test": 10}}
    proc = run_workflow(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    for key in (DELETED, TRUNCATED, SHORT, FLOAT, *LATE):
        assert key in proc.stdout, key
    assert "in 2023" in proc.stdout
    assert "nothing was run" in proc.stdout
    assert not (tmp_path / "results").exists()
    assert not re.search(r"^rule \w+:", proc.stdout, flags=re.M)


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _range_bytes(header: str) -> int:
    start, stop = re.fullmatch(r"bytes=(\d+)-(\d+)", header).groups()
    return int(stop) - int(start) + 1


def test_s3_same_problems_by_head_and_ranged_gets(broken_root, tmp_path, no_aws_credentials):
    refused, whole = K.ncsnr_key(1), K.anatomy_key(1)
    with s3server.local_nsd_bucket(broken_root) as endpoint:
        s3server.respond_with_error(endpoint, refused, 403, "AccessDenied")
        s3server.ignore_range(endpoint, whole, times=None)   # a server without Range support
        cfg = config(broken_root, sessions=(21, 38), source="s3", endpoint_url=endpoint,
                     download_dir=str(tmp_path / "downloads"))
        store = check.store_for(cfg)
        findings = check.check_nsd(cfg, store)
        seen = s3server.requests_seen(endpoint)
    _assert_each_problem_named(findings, refused, whole)
    assert "403" in _rows(findings)[refused][0].found
    assert "ignored the byte range" in _rows(findings)[whole][0].found
    gets = [(key, h) for method, key, h in seen if method == "GET"]
    assert gets and all("range" in h for _, h in gets)       # no whole-object GET
    received: dict[str, int] = {}
    for key, h in gets:
        received[key] = received.get(key, 0) + _range_bytes(h["range"])
    sizes = {p.relative_to(broken_root).as_posix(): p.stat().st_size
             for p in broken_root.rglob("*") if p.is_file()}
    for key, n in received.items():
        if key.endswith(".nii.gz"):        # header probe + the 4-byte gzip trailer
            assert n <= HEADER_PROBE_BYTES + 4, (key, n, sizes[key])
        if key.endswith(".hdf5"):          # HDF5 metadata: a few 64 KiB blocks
            assert n <= 4 * 65536 and n < sizes[key], (key, n, sizes[key])
    big = sum(sizes[k] for k in sizes if k.endswith((".nii.gz", ".hdf5")))
    assert store.s3.bytes_read < big / 10


def test_s3_workflow_stops_before_any_download(broken_root, tmp_path, no_aws_credentials):
    with s3server.local_nsd_bucket(broken_root) as endpoint:
        cfg = {"nsd": {"source": "s3", "endpoint_url": endpoint, "subjects": [1, 5],
                       "sessions": [21], "trials_per_session": 20},
               "simulate": {"voxel_mm": 6.0}, "mni": {"resolution_mm": 6},
               "splits": {"unseen_subjects": [], "n_test": 10}}
        proc = run_workflow(tmp_path, cfg, "--until", "download_nsd_key", check=False)
    assert proc.returncode != 0
    for key in (DELETED, TRUNCATED, SHORT, FLOAT):
        assert key in proc.stdout, key
    assert not (tmp_path / "resources/nsd").exists()
    assert "rest2visual download" not in proc.stdout


# --- TR sanity (unit) -------------------------------------------------------------

def _run(unit: str, pixdim4: float) -> NiftiInfo:
    return NiftiInfo((4, 4, 4, 50), np.dtype(np.int16), np.eye(4), (1.8,) * 3 + (pixdim4,),
                           unit, 0)


def _tr_findings(runs, tr_source="check"):
    cfg = {"nsd": {"tr_s": 1.33318, "space": "func1pt8mm", "tr_source": tr_source}}
    keyed = [(NeededKey(K.rest_key(1, ses, 1), "rest", f"subj01 session {ses} rest run01"), info)
             for ses, info in runs]
    return check.check_tr(cfg, keyed)


def test_tr_nsd_unknown_units_use_the_config_with_a_note():
    out = _tr_findings([(21, _run("unknown", 4 / 3)), (22, _run("unknown", 4 / 3))])
    assert [f.problem for f in out] == [False]
    assert "NSD's nominal TR" in out[0].found and "1.33318" in out[0].found


@pytest.mark.parametrize("tr_source, problem", [("check", True), ("header", False)])
def test_tr_header_disagreeing_above_one_percent(tr_source, problem):
    out = _tr_findings([(21, _run("sec", 2.0))], tr_source)
    assert len(out) == 1 and out[0].problem is problem
    assert "2 s (header, sec)" in out[0].found
    # a non-NSD value with unknown units: not NSD's nominal TR either
    out = _tr_findings([(21, _run("unknown", 2.0))], tr_source)
    assert len(out) == 1 and out[0].problem is problem and "unknown" in out[0].found


def test_tr_within_one_percent_passes_and_sessions_must_agree():
    assert _tr_findings([(21, _run("sec", 1.34)), (22, _run("msec", 1333.2))]) == []
    # each within 1 % of nsd.tr_s, but 1.7 % apart: one subject, two TRs
    out = _tr_findings([(21, _run("sec", 1.322)), (22, _run("sec", 1.3445))])
    assert [f.problem for f in out] == [True]
    assert "session 21" in out[0].expected and out[0].key == K.rest_key(1, 22, 1)
    # nsd.tr_source: header → each run uses its own header TR: noted, not a problem
    out = _tr_findings([(21, _run("sec", 1.322)), (22, _run("sec", 1.3445))], "header")
    assert [f.problem for f in out] == [False]
