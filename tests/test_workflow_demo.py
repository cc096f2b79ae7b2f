"""The whole workflow, end to end, on the toy simulated NSD: every stage's real rule.

One run (module fixture) from an empty folder to Table 1, the figures and the
HTML report; the tests then check what a user relies on: the pack validates,
a second run does nothing, `predict` reproduces the evaluation, and a rerun
after an interrupted job redoes it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import run_workflow, toy_config

pytestmark = pytest.mark.workflow

RES = "4"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    # every protocol of Table 4: the paper's split, unseen stimuli, one held-out subject
    config = toy_config(splits={"unseen_subjects": [1], "n_test": 10})
    proc = run_workflow(workdir, config)
    run_workflow(workdir, config, "--report", "results/report.html")
    return workdir, config, proc


def test_every_stage_ran_and_table1_has_the_paper_rows(demo):
    workdir, _, proc = demo
    for rule in ("simulate_nsd", "register_to_mni", "rest_to_mni", "pcc_zmap", "evoked_betas",
                 "pack_triplets", "split_files", "train_model", "evaluate_model", "figures"):
        assert f"rule {rule}:" in proc.stdout, rule
    table1 = pd.read_csv(workdir / "results/tables/table1.csv")
    assert {"Rest2Visual", "Random", "Resting", "Group mean"} <= set(table1["method"])
    assert (workdir / "results/tables/table1.md").read_text().count("Rest2Visual") >= 1
    table4 = pd.read_csv(workdir / "results/tables/table4.csv")
    assert set(table4["protocol"]) == {"paper", "unseen-stimulus", "unseen-subject_sub-01"}
    assert (workdir / "results/models/unseen-subject_sub-01/model.pt").exists()
    figures = list((workdir / "results/figures").glob("*.png"))
    assert len(figures) >= 5 and all(f.stat().st_size > 10_000 for f in figures)
    report = (workdir / "results/report.html").read_text(errors="replace")
    assert len(report) > 100_000


def test_temp_rest_series_are_gone_and_pack_validates(demo):
    workdir, _, _ = demo
    assert not list((workdir / "results/rest").rglob("*_bold.nii"))
    pack = workdir / f"results/dataset/rest2visual_space-MNI152_res-{RES}_triplets.h5"
    out = subprocess.run([str(Path(sys.executable).parent / "rest2visual"), "validate-pack",
                          str(pack)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_second_run_has_nothing_to_do(demo):
    workdir, config, _ = demo
    again = run_workflow(workdir, config)
    assert "Nothing to be done" in again.stdout


def test_predict_reproduces_the_evaluation_predictions(demo, tmp_path):
    """`rest2visual predict` on a demo rest map and a test image = the evaluation's prediction."""
    import nibabel as nib
    from PIL import Image

    from rest2visual.dataset.pack import Pack

    workdir, _, _ = demo
    pack_path = workdir / f"results/dataset/rest2visual_space-MNI152_res-{RES}_triplets.h5"
    with h5py.File(workdir / "results/evaluation/paper/predictions.h5") as f:
        row = int(f["rows"][0])
        expected = f["methods/rest2visual"][0].astype(np.float32)
    with Pack(pack_path) as pack:
        trial = pack.trials.iloc[row]
        image = pack.h5["images"][int(trial["image_row"])]
        rest = pack.grid.to_nifti(pack.h5["rest_maps"][int(trial["rest_row"])])
        grid = pack.grid
    nib.save(rest, tmp_path / "rest.nii.gz")
    Image.fromarray(image).save(tmp_path / "image.png")
    out = tmp_path / "pred.nii.gz"
    proc = subprocess.run([str(Path(sys.executable).parent / "rest2visual"), "predict",
                           "--model", str(workdir / "results/models/paper/model.pt"),
                           "--rest", str(tmp_path / "rest.nii.gz"),
                           "--image", str(tmp_path / "image.png"), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = grid.to_vectors(nib.load(out).get_fdata(dtype=np.float32))
    # predictions.h5 stores float16: equal within its precision
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_interrupted_job_output_is_redone(demo):
    """A job killed mid-way leaves only a temp file; the next run redoes that target."""
    workdir, config, _ = demo
    zmap = next((workdir / "results/rest").rglob("*_desc-pcc_zmap.nii.gz"))
    zmap.unlink()
    (zmap.parent / f".{zmap.name.split('.')[0]}.tmp-999-abcdef.nii.gz").write_bytes(b"partial")
    again = run_workflow(workdir, config, "--until", "pcc_zmap")
    assert "rule pcc_zmap:" in again.stdout and zmap.exists()
