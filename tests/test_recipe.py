"""A model remembers its rest-map recipe: rest-map → sidecar → pack → model.pt → predict.

``predict --rest-run`` must compute the z-map exactly as the training pack's maps were
computed, whatever recipe that was (here the non-default zero-lag, percent-signal-change
recipe with motion confounds and the fallback TR of NSD-style headers).
"""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from rest2visual.checks import InputError
from rest2visual.dataset.pack import PackWriter
from rest2visual.maskvec import MaskedGrid
from rest2visual.model import predict
from rest2visual.model.train import train
from rest2visual.preprocess import recipe
from rest2visual.preprocess.rest_map import main as rest_map_main

SHAPE = (12, 14, 12)
AFFINE = np.array([[4.0, 0, 0, -22], [0, 4.0, 0, -26], [0, 0, 4.0, -22], [0, 0, 0, 1]])
TR_S = 1.5
IMAGE_SIZE = 16


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    yield


def _runs(tmp_path, rng, n_runs=2, volumes=90):
    """NSD-style runs (xyzt_units 0, pixdim[4] 4/3: the TR must come from --tr), a shared
    course at the seed and elsewhere, baseline ~1000 with a coil-like gain."""
    axes = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    mask = sum(a ** 2 for a in axes) < 0.8
    loading = gaussian_filter(rng.standard_normal(SHAPE), 1.5)
    gain = 800 + 400 * (axes[0] + 1)
    paths, motion = [], []
    for r in range(n_runs):
        course = gaussian_filter(rng.standard_normal(volumes), 2.0)
        data = gain[..., None] * (1 + 0.02 * (loading[..., None] * course
                                              + 0.5 * rng.standard_normal(SHAPE + (volumes,))))
        img = nib.Nifti1Image((data * mask[..., None]).astype(np.float32), AFFINE)
        img.header["xyzt_units"] = 0
        img.header["pixdim"][4] = 4.0 / 3.0
        paths.append(tmp_path / f"run{r}.nii.gz")
        nib.save(img, paths[-1])
        motion.append(tmp_path / f"motion{r}.tsv")
        np.savetxt(motion[-1], rng.standard_normal((volumes, 6)) * 0.05, delimiter="\t")
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), mask_path)
    return paths, motion, mask_path, mask


def _rest_map(tmp_path, name, runs, motion, mask_path, *extra):
    out = tmp_path / f"{name}_zmap.nii.gz"
    argv = ["--runs", *map(str, runs), "--mask", str(mask_path), "--confounds", *map(str, motion),
            "--seed-center", "0", "0", "0", "--seed-radius", "6", "--bandpass", "0.01", "0.2",
            "--tr", str(TR_S), "--out", str(out), *extra]
    assert rest_map_main(argv) == 0
    return out


def test_rest_map_writes_its_recipe(tmp_path):
    runs, motion, mask_path, _ = _runs(tmp_path, np.random.default_rng(0))
    out = _rest_map(tmp_path, "a", runs, motion, mask_path, "--hrf", "none", "--units", "psc")
    side = recipe.sidecar_path(out)
    assert side.name == "a_zmap.json"
    assert json.loads(side.read_text()) == {
        "hrf_model": "none", "units": "psc", "bandpass_hz": [0.01, 0.2], "filter_order": 2,
        "combine_runs": "mean", "seed_center_mm": [0.0, 0.0, 0.0], "seed_radius_mm": 6.0,
        "seed_mask": None, "confounds": "motion", "tr_s": TR_S}  # NSD header: the --tr fallback
    side.write_text("{not json")
    with pytest.raises(InputError, match="a_zmap.json: expected a JSON rest-map recipe"):
        recipe.read_recipe(out)


@pytest.mark.parametrize("hrf,units,other", [("none", "psc", ("glover", "raw")),
                                              ("spm", "raw", ("none", "psc"))])
def test_predict_rest_run_reproduces_the_pack_rest_map(tmp_path, hrf, units, other):
    """A recipe + motion confounds + the fallback TR: the map predict --rest-run computes
    equals the pack's row, whatever the config and the command-line defaults say."""
    rng = np.random.default_rng(1)
    runs, motion, mask_path, mask = _runs(tmp_path, rng)
    zmap = _rest_map(tmp_path, "sub-01_ses-21", runs, motion, mask_path,
                     "--hrf", hrf, "--units", units)
    grid = MaskedGrid(mask, AFFINE)
    vector = grid.to_vectors(np.asarray(nib.load(zmap).dataobj, dtype=np.float32))
    n = 24
    trials = pd.DataFrame({"subject": 1, "session": 21, "trial": np.arange(1, n + 1),
                           "nsd_id": np.arange(n), "shared": False, "repeat": 0,
                           "image_row": np.arange(n), "rest_row": 0})
    pack = tmp_path / "pack.h5"
    with h5py.File(pack, "w") as h5:
        writer = PackWriter(h5, grid, trials, pd.DataFrame({"subject": [1], "session": [21]}),
                            np.arange(n), IMAGE_SIZE)
        writer.write_rest(0, vector)
        writer.write_images(0, rng.integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
        writer.write_betas(rng.standard_normal((n, grid.n_voxels)).astype(np.float32))
        writer.finish(np.zeros((0, 3)), rest_recipe=recipe.common_recipe([zmap]))
    split = trials[["subject", "session", "trial", "nsd_id"]].assign(
        split=np.where(np.arange(n) % 4 == 0, "val", "train"))
    split.to_csv(tmp_path / "split.csv", index=False)
    cfg = {"model": {"widths": [4, 8], "groups": 4, "embed_dim": 8},
           "train": {"epochs": 1, "batch_size": 6, "device": "cpu", "num_workers": 0, "seed": 0},
           # a config that claims another recipe does not override the pack's
           "rest": {"hrf_model": other[0], "units": other[1]}}
    train(pack, tmp_path / "split.csv", tmp_path / "run", cfg)
    model = predict.load_model(tmp_path / "run" / "model.pt")
    assert model.config["rest"] == recipe.read_recipe(zmap)
    with h5py.File(pack, "r") as h5:
        packed = h5["rest_maps"][0]
    found = predict.rest_vector_from_runs(model, runs, motion)
    np.testing.assert_array_equal(found, packed)
    # another recipe gives another map: the recipe mattered
    other = grid.to_vectors(np.asarray(nib.load(_rest_map(
        tmp_path, "other", runs, motion, mask_path, "--hrf", other[0], "--units", other[1])).dataobj,
        dtype=np.float32))
    assert np.abs(other - packed).max() > 0.1
    with pytest.raises(InputError, match="give --confounds"):
        predict.rest_vector_from_runs(model, runs)
