"""The ``command`` decoder end to end: the workflow's real rules up to Table 2 and the figure.

One run on the toy simulated NSD with ``evaluate.decoder: command`` and a stand-in decoder
written here: ridge regression from the bridge's nsdgeneral betas to the seen images'
pixels (33 × 33 RGB), fitted on the subject's measured betas and applied to the betas it
is asked for. It lives in a folder whose name has a space, and the template passes the
stimuli path as a quoted literal, so the calling convention's quoting is exercised too.
Only the paper protocol's chain runs (Table 2 and the figure are the targets).
"""

from __future__ import annotations

import shlex
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import run_workflow, toy_config
from rest2visual.nsd import keys as nsdkeys

pytestmark = pytest.mark.workflow

STAND_IN = '''\
"""Stand-in decoder: ridge from bridge betas to 33 x 33 RGB pixels, fitted on measured betas."""
import argparse
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

p = argparse.ArgumentParser()
for name in ("--betas", "--which", "--out", "--stimuli"):
    p.add_argument(name, required=True)
a = p.parse_args()
with h5py.File(a.betas, "r") as h5:
    train, x = h5["betas_measured"][()], h5["betas_" + a.which][()]
    ids = h5["trials/nsd_id"][()]
with h5py.File(a.stimuli, "r") as h5:
    pixels = np.stack([h5["imgBrick"][int(i)][::13, ::13] for i in ids]) / 255.0
y = pixels.reshape(len(ids), -1)
mean = y.mean(axis=0)
gram = train @ train.T
weights = train.T @ np.linalg.solve(gram + 1e-3 * np.trace(gram) / len(gram) * np.eye(len(gram)),
                                    y - mean)
recon = np.clip(x @ weights + mean, 0, 1).reshape(pixels.shape)
for row, image in enumerate(recon):
    Image.fromarray((image * 255).round().astype(np.uint8)).save(Path(a.out) / f"{row:05d}.png")
'''

TABLE2 = "results/tables/table2.csv"
FIGURE = "results/figures/fig7_reconstructions.png"


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("decoder")
    script = tmp_path_factory.mktemp("stand-in decoder") / "ridge decoder.py"
    script.write_text(STAND_IN)
    stimuli = f"resources/simulated-nsd/nsd/{nsdkeys.STIMULI}"
    template = (f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} --betas {{input}} "
                f"--which={{which}} --out {{output}} --stimuli {shlex.quote(stimuli)}")
    config = toy_config(splits={"unseen_subjects": [], "n_test": 30},
                        evaluate={"decoder": "command", "decoder_command": template})
    proc = run_workflow(workdir, config, TABLE2, "results/tables/table2.md", FIGURE)
    return workdir, config, proc


def test_table2_has_pixcorr_and_ssim_from_measured_and_predicted(decoded):
    workdir, config, proc = decoded
    for rule in ("native_betas", "reconstruct", "table2", "reconstruction_figure"):
        assert f"rule {rule}:" in proc.stdout, rule
    table = pd.read_csv(workdir / TABLE2, dtype={"subject": str})
    subjects = [f"{s:02d}" for s in config["nsd"]["subjects"]]
    assert set(table["subject"]) == {*subjects, "mean"}
    assert set(table["source"]) == {"measured", "predicted"}
    scored = table[table["metric"].isin(["PixCorr", "SSIM"])]
    assert len(scored) == 2 * 2 * (len(subjects) + 1) and np.isfinite(scored["value"]).all()
    mean = scored[scored["subject"] == "mean"].set_index(["metric", "source"])["value"]
    # the stand-in is fitted on the measured betas: their reconstructions are near the images
    assert mean["PixCorr", "measured"] > 0.5
    assert mean["PixCorr", "measured"] > mean["PixCorr", "predicted"]
    assert mean["SSIM", "measured"] > mean["SSIM", "predicted"]
    # without local weights every network metric is skipped, and the table says why
    networks = table[~table["metric"].isin(["PixCorr", "SSIM"])]
    assert networks["value"].isna().all()
    assert networks["note"].str.contains("no evaluate.metric_weights").all()
    md = (workdir / "results/tables/table2.md").read_text()
    assert "PixCorr ↑" in md and "from predicted betas" in md and "AlexNet(2): skipped" in md


def test_reconstructions_one_per_test_trial_and_the_figure(decoded):
    import h5py

    workdir, config, _ = decoded
    for sub in config["nsd"]["subjects"]:
        folder = workdir / f"results/decode/paper/sub-{sub:02d}"
        with h5py.File(next(folder.glob("*_desc-nsdgeneral_betas.h5")), "r") as h5:
            ids = h5["trials/nsd_id"][()]
        for which in ("measured", "predicted"):
            with h5py.File(folder / f"sub-{sub:02d}_desc-{which}_recon.h5", "r") as h5:
                assert h5["images"].shape == (len(ids), 33, 33, 3)
                assert np.array_equal(h5["trials/nsd_id"][()], ids)
                assert h5.attrs["which"] == which
        assert not list(folder.glob(".*pngs-*"))  # the decoder's PNG folders are gone
    assert (workdir / FIGURE).stat().st_size > 10_000
