"""Reproducible to the bit: the toy workflow run twice, in two folders, gives the same bytes.

Two runs of the real Snakefile (the demo test's toy configuration) from empty
folders, reading one simulated NSD, up to the paper protocol's Table 1
(registrations, rest maps, pack, training, evaluation): every file under
``results/`` is compared byte for byte,
except the logs and benchmarks (timings) and the files whose content records
when or how fast they were made (listed below, each checked otherwise).
``SOURCE_DATE_EPOCH`` fixes the pack's ``created_utc`` attribute, the one
timestamp in a result file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_workflow, toy_config

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

RES = "4"
TARGETS = ("results/evaluation/paper/table1.csv",
           *(f"results/registration/sub-{s:02d}/sub-{s:02d}_from-func_to-MNI152_res-{RES}"
             "_desc-composite_xfm.nii.gz" for s in (1, 2)))
#: files whose bytes may differ: they record training speed (samples_per_s of each log
#: row, also kept in the checkpoints to rewrite train_log.csv); checked otherwise below
TIMED = ("train_log.csv", "last.pt", "best.pt")


def _digests(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted((root / "results").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(("results/logs/", "results/benchmarks/")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    # the simulated NSD (the input) is made once and read by both runs: its own
    # reproducibility is test_simulate's (same seed, same bytes); this test is the pipeline's
    sim_root = tmp_path_factory.mktemp("repro-nsd") / "simulated-nsd"
    config = toy_config(splits={"n_test": 10}, simulate={"root": str(sim_root)})
    runs = []
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        for name in ("a", "b"):
            work = tmp_path_factory.mktemp(f"repro-{name}")
            run_workflow(work, config, *TARGETS)
            runs.append(work)
    finally:
        if saved is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved
    return runs


def test_two_runs_give_byte_identical_results(two_runs):
    a, b = (_digests(w) for w in two_runs)
    assert set(a) == set(b)
    wanted = ("_desc-composite_xfm.nii.gz", "_desc-pcc_zmap.nii.gz", "_triplets.h5", "model.pt",
              "last.pt", "table1.csv")
    for suffix in wanted:  # each kind of result was made and compared
        assert any(k.endswith(suffix) for k in a), suffix
    differ = sorted(k for k in a if a[k] != b[k] and not k.endswith(TIMED))
    assert differ == [], differ


def _same(a, b, where=""):
    """Nested checkpoint contents equal (tensors bit for bit), but for samples_per_s."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k != "samples_per_s":
                _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_timed_files_agree_but_for_their_timings(two_runs):
    logs = [pd.read_csv(w / "results/models/paper/train_log.csv") for w in two_runs]
    pd.testing.assert_frame_equal(*(log.drop(columns="samples_per_s") for log in logs))
    for name in ("last.pt", "best.pt"):
        _same(*(torch.load(w / "results/models/paper" / name, weights_only=True)
                for w in two_runs), name)


def test_weights_and_pack_betas_are_equal(two_runs):
    """The byte comparison above, stated in the terms a reader checks: tensors and arrays."""
    models = [torch.load(w / "results/models/paper/model.pt", weights_only=True)["model"]
              for w in two_runs]
    assert models[0].keys() == models[1].keys()
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])
    name = f"results/dataset/rest2visual_space-MNI152_res-{RES}_triplets.h5"
    with h5py.File(two_runs[0] / name) as f, h5py.File(two_runs[1] / name) as g:
        for key in ("betas", "rest_maps", "images"):
            assert np.array_equal(f[key][()], g[key][()]), key
