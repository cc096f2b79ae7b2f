"""One error style: ``rest2visual <command>: error: <file>: <expected, found>``, exit 1, no
traceback unless ``--debug`` (or REST2VISUAL_DEBUG=1)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from rest2visual import cli
from rest2visual.errors import DEBUG_ENV, describe, nsd_key
from rest2visual.nsd import keys as nsdkeys


def _run(capsys, *argv):
    """(exit status, stderr lines) of ``rest2visual argv`` run in this process."""
    rc = cli.main(list(argv))
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip()]


def _one_error_line(lines, command, *named):
    assert len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith(f"rest2visual {command}: error: "), lines[0]
    assert "Traceback" not in lines[0]
    for text in named:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def _rest_run(toy_nsd) -> tuple[Path, Path]:
    nsd = Path(toy_nsd.nsd_root)
    return nsd / nsdkeys.rest_key(1, 21, 1), nsd / nsdkeys.func_to_mni_key(1)


def test_truncated_nifti_to_warp_to_mni_names_the_file(toy_nsd, tmp_path, capsys):
    run, transform = _rest_run(toy_nsd)
    bad = tmp_path / "nsddata_timeseries" / run.name
    bad.parent.mkdir()
    data = run.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    rc, lines = _run(capsys, "warp-to-mni", "--in", str(bad), "--nsd-coords", str(transform),
                     "--resolution", "4", "--out", str(tmp_path / "out.nii.gz"))
    assert rc == 1
    line = _one_error_line(lines, "warp-to-mni", bad, "gzip")
    assert f"NSD key nsddata_timeseries/{run.name}" in line
    assert not (tmp_path / "out.nii.gz").exists()


def test_nan_in_a_rest_run_names_the_nsd_input(toy_nsd, tmp_path, capsys):
    import nibabel as nib

    run, transform = _rest_run(toy_nsd)
    img = nib.load(str(run))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[tuple(s // 2 for s in data.shape[:3]) + (3,)] = np.nan
    bad = tmp_path / "run-with-nan.nii.gz"
    header = img.header.copy()
    header.set_data_dtype(np.float32)  # NSD's int16 cannot hold a NaN; a float run can
    nib.save(nib.Nifti1Image(data, img.affine, header), str(bad))
    out = tmp_path / "sub-01_bold.nii"
    rc, lines = _run(capsys, "warp-to-mni", "--in", str(bad), "--nsd-coords", str(transform),
                     "--resolution", "4", "--out", str(out))
    assert rc == 1
    _one_error_line(lines, "warp-to-mni", bad, "NaN")
    assert not out.exists()


def _corrupt_h5(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an HDF5 file, " * 100)
    return path


def test_corrupt_hdf5_to_pack_names_the_file(tmp_path, capsys):
    evoked = _corrupt_h5(tmp_path / "sub-01_ses-21_betas.h5")
    rc, lines = _run(capsys, "pack", "--rest", str(tmp_path / "sub-01_ses-21_zmap.nii.gz"),
                     "--evoked", str(evoked), "--expdesign", "x.mat", "--stimuli", "s.hdf5",
                     "--mask", "m.nii.gz", "--out", str(tmp_path / "pack.h5"))
    assert rc == 1
    _one_error_line(lines, "pack", evoked, "expected an HDF5 file", "file signature not found")


def test_corrupt_hdf5_stimuli_names_the_nsd_key(tmp_path):
    import h5py

    stimuli = _corrupt_h5(tmp_path / "nsd" / nsdkeys.STIMULI)
    try:
        h5py.File(stimuli, "r")
    except OSError as exc:
        text = describe(exc)
    assert text.startswith(f"{stimuli} (NSD key {nsdkeys.STIMULI}): expected an HDF5 file"), text


def test_corrupt_pack_to_train_names_the_file(tmp_path, capsys):
    pack = _corrupt_h5(tmp_path / "pack.h5")
    split = tmp_path / "paper.csv"
    split.write_text("row,split\n0,train\n")
    rc, lines = _run(capsys, "train", "--pack", str(pack), "--split", str(split), "--params",
                     json.dumps({"model": {}, "train": {"device": "cpu"}}),
                     "--out-dir", str(tmp_path / "model"))
    assert rc == 1
    _one_error_line(lines, "train", pack, "expected an HDF5 file")


def test_train_without_config_or_params(tmp_path, capsys):
    rc, lines = _run(capsys, "train", "--pack", "p.h5", "--split", "s.csv", "--out-dir", str(tmp_path))
    assert rc == 1
    _one_error_line(lines, "train", "--config", "--params")


@pytest.mark.parametrize("error, found", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    # torch.save on a full disk
    (RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0; "
                  "basic_ios::clear: iostream error"), "a full disk is the usual cause"),
])
def test_disk_full_names_the_path_and_the_free_space(tmp_path, capsys, monkeypatch, error, found):
    import nibabel as nib

    def full(img, filename):
        raise error

    monkeypatch.setattr(nib, "save", full)
    out = tmp_path / "templates" / "T1w.nii.gz"
    rc, lines = _run(capsys, "template", "--resolution", "6", "--template", str(out),
                     "--mask", str(tmp_path / "templates" / "mask.nii.gz"))
    assert rc == 1
    line = _one_error_line(lines, "template", out, found, "GB free on its file system")
    assert line.startswith(f"rest2visual template: error: {out}: ")
    assert not list((tmp_path / "templates").glob(".*tmp-*"))


def test_unexpected_errors_hint_at_debug_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from rest2visual import plan

    def boom(*args, **kwargs):
        raise KeyError("nsd")

    monkeypatch.setattr(plan, "load_workflow_config", boom)
    rc, lines = _run(capsys, "plan")
    assert rc == 1
    _one_error_line(lines, "plan", "KeyError", "--debug")
    rc, lines = _run(capsys, "plan", "--debug")
    assert rc == 1 and lines[0].startswith("Traceback") and lines[-1].startswith("rest2visual plan: error:")
    monkeypatch.setenv(DEBUG_ENV, "1")
    rc, lines = _run(capsys, "plan")
    assert rc == 1 and lines[0].startswith("Traceback")


def test_nsd_key_of_a_path():
    assert nsd_key("/data/nsd/nsddata_betas/ppdata/subj01/x.nii.gz") == "nsddata_betas/ppdata/subj01/x.nii.gz"
    assert nsd_key("results/rest/sub-01/x.nii.gz") is None
