"""The evaluation stage end to end on a tiny pack: outputs, test-rows-only scoring, tables,
figures and the ROI atlas."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

from rest2visual.dataset.pack import PackWriter
from rest2visual.dataset.splits import make_splits, write_splits
from rest2visual.evaluate import atlas, run
from rest2visual.maskvec import MaskedGrid
from rest2visual.model import predict
from rest2visual.model.checkpoint import save_model_file
from rest2visual.model.network import build_model

SHAPE = (12, 14, 12)
AFFINE = np.array([[-4.0, 0, 0, 24], [0, 4, 0, -28], [0, 0, 4, -20], [0, 0, 0, 1]])
IMAGE_SIZE = 16
TINY_MODEL = {"widths": [4, 8], "groups": 4, "embed_dim": 8}
SUBJECTS, SESSIONS, TRIALS = (1, 2, 3), (21, 22), 20
N_IMAGES, N_SHARED = 36, 12
N_HELD_OUT_SHARED = 4  # shared images in every subject's test rows
OUTPUTS = ("scores.csv", "predictions.h5", "snr_cnr.csv", "intersubject.csv", "decoding.csv",
           "noise_ceiling.csv", "table1.csv", "table1.md", "table3.csv", "table3.md",
           "comparisons.csv", "comparisons.md", "meta.json")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: OpenMP spin-waiting on a shared 2-core machine costs more than it gains;
    # and one thread count for the whole module keeps float sums in one order
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_atlas_labels(mask: np.ndarray) -> np.ndarray:
    """Labels 1..5 in five slabs along y at the back half of the brain, 0 elsewhere (X, Y, Z)."""
    labels = np.zeros(mask.shape, np.int16)
    for label, y in zip(range(1, 6), range(1, 6)):
        labels[:, y, :] = label
    return np.where(mask, labels, 0).astype(np.int16)


def write_world(root: Path) -> dict:
    """A pack where beta = gain(image) × (rest map + image pattern) + noise, with ncsnr;
    the split files (paper protocol, shared); the V1..V5 atlas; a random tiny model."""
    rng = np.random.default_rng(0)
    axes = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    mask = sum(a ** 2 for a in axes) < 0.95
    grid = MaskedGrid(mask, AFFINE)
    smooth = lambda: gaussian_filter(rng.standard_normal(SHAPE), 1.2)[mask]  # noqa: E731
    n_rest = len(SUBJECTS) * len(SESSIONS)
    rest = np.stack([smooth() for _ in range(n_rest)]).astype(np.float32)
    patterns = np.stack([smooth() for _ in range(4)])
    colours = rng.uniform(0, 1, (N_IMAGES, 4))
    images = (rng.integers(0, 60, (N_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 3))
              + 190 * colours[:, None, None, :3]).astype(np.uint8)
    records = []
    for s_i, subject in enumerate(SUBJECTS):
        own = np.concatenate([np.arange(N_SHARED), N_SHARED + rng.permutation(N_IMAGES - N_SHARED)[:12]])
        for t_i, session in enumerate(SESSIONS):
            shown = rng.permutation(np.concatenate([own, own[:TRIALS - len(own)]]))[:TRIALS]
            for trial, nsd_id in enumerate(shown, start=1):
                records.append((subject, session, trial, nsd_id, nsd_id < N_SHARED, 0, nsd_id,
                                s_i * len(SESSIONS) + t_i))
    trials = pd.DataFrame.from_records(records, columns=["subject", "session", "trial", "nsd_id", "shared",
                                                          "repeat", "image_row", "rest_row"])
    image_part = colours[trials["nsd_id"]] @ patterns
    betas = (1 + colours[trials["nsd_id"], :1]) * (rest[trials["rest_row"]] + image_part)
    betas += 0.3 * rng.standard_normal(betas.shape)
    pack = root / "pack.h5"
    with h5py.File(pack, "w") as h5:
        rest_index = pd.DataFrame({"subject": np.repeat(SUBJECTS, len(SESSIONS)),
                                   "session": np.tile(SESSIONS, len(SUBJECTS))})
        writer = PackWriter(h5, grid, trials, rest_index, np.arange(N_IMAGES), IMAGE_SIZE)
        for i, vec in enumerate(rest):
            writer.write_rest(i, vec)
        writer.write_images(0, images)
        writer.write_betas(betas)
        writer.write_ncsnr(list(SUBJECTS), rng.uniform(0.2, 1.0, (len(SUBJECTS), grid.n_voxels)))
        writer.finish(np.zeros((0, 3)))
    splits = make_splits(trials, seed=0, n_test=18, val_fraction=0.2)
    write_splits(splits, root / "splits")
    # as in the paper's test set, a few shared images are held out for every subject, so that
    # Fig. 4 (inter-subject) has held-out images to show
    paper = pd.read_csv(root / "splits" / "paper.csv")
    paper.loc[paper["nsd_id"] < N_HELD_OUT_SHARED, "split"] = "test"
    paper.to_csv(root / "splits" / "paper.csv", index=False)
    atlas_path = root / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(toy_atlas_labels(mask), AFFINE), atlas_path)
    torch.manual_seed(0)
    net = build_model(TINY_MODEL)
    for module in net.modules():  # random conditioning, so that the image matters
        if hasattr(module, "to_scale_shift"):
            torch.nn.init.normal_(module.to_scale_shift.weight, std=0.3)
    model = save_model_file(root / "model.pt", net.state_dict(), {"model": TINY_MODEL},
                            mask=mask, affine=AFFINE, image_size=IMAGE_SIZE)
    return {"pack": pack, "split": root / "splits" / "paper.csv", "shared": root / "splits" / "shared.csv",
            "atlas": atlas_path, "model": model, "trials": trials, "grid": grid, "images": images,
            "rest": rest, "root": root}


def evaluate_args(world: dict, out_dir: Path, pack=None) -> list[str]:
    return ["--pack", str(pack or world["pack"]), "--split", str(world["split"]), "--shared",
            str(world["shared"]), "--model", str(world["model"]), "--atlas", str(world["atlas"]),
            "--out-dir", str(out_dir), "--protocol", "paper", "--ridge-alphas", "-2", "4", "4",
            "--ssim-window", "5", "--device", "cpu", "--min-shared-images", "3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    w = write_world(root)
    out = root / "evaluation" / "paper"
    assert run.main(evaluate_args(w, out)) == 0
    w["out"] = out
    return w


def test_evaluate_writes_every_output(world):
    out = world["out"]
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*tmp-*"))  # no partial files left behind
    # what evaluate writes is exactly what the workflow declares (rest2visual.evaluate.names)
    from rest2visual.evaluate.names import EVALUATION_FILES

    assert sorted(p.name for p in out.iterdir()) == sorted(EVALUATION_FILES.values()) == sorted(OUTPUTS)
    scores = pd.read_csv(out / "scores.csv")
    test_rows = run.split_rows(world["trials"], world["split"], "test")
    n_test = len(test_rows)
    assert set(scores["method"]) == set(run.METHODS.values())
    for (method, region, metric), group in scores.groupby(["method", "region", "metric"]):
        expected = 1 if metric == "rsa" else n_test
        assert len(group) == expected, (method, region, metric)
        if metric != "rsa":
            assert sorted(group["row"]) == sorted(test_rows)
    assert set(scores["region"]) == {"FB", "VC", "V1", "V2", "V3", "V4", "V5"}
    fb = scores[(scores["region"] == "FB") & (scores["metric"] == "pearson")]
    fb = fb.groupby("method")["value"].mean()
    # beta = gain × (rest + image pattern): the subject's own rest map is far above chance
    assert fb["Resting"] > 0.4 and abs(fb["Random"]) < 0.1, fb
    assert fb["Ridge encoding"] > 0.05 and fb["Group mean"] > 0  # the image part, the mean response
    with h5py.File(out / "predictions.h5") as h5:
        assert h5["rows"][()].tolist() == test_rows.tolist()
        assert set(h5["methods"]) == set(run.METHODS)
        for ds in h5["methods"].values():
            assert ds.dtype == np.float16 and ds.shape == (n_test, world["grid"].n_voxels)
    decoding = pd.read_csv(out / "decoding.csv")
    assert set(decoding["source"]) == {run.MEASURED, *run.METHODS.values()}
    assert decoding["two_way"].between(0, 1).all()
    snr = pd.read_csv(out / "snr_cnr.csv")
    assert set(snr["source"]) == {run.MEASURED, *run.METHODS.values()}
    assert set(snr["metric"]) == {"snr", "cnr", "cnr_sd"}
    others = snr[snr["source"] != run.MODEL]
    assert others["p_vs_rest2visual"].between(0, 1).all()
    nc = pd.read_csv(out / "noise_ceiling.csv")
    assert set(nc["subject"]) <= set(SUBJECTS) and (nc.loc[nc["method"] == "Resting", "median"] > 0).all()


def test_table1_rows_and_markdown(world):
    table1 = pd.read_csv(world["out"] / "table1.csv")
    model = table1[table1["method"] == run.MODEL]
    for region in ("FB", "VC"):
        got = set(model.loc[model["region"] == region, "metric"])
        assert got == {"pearson", "mae", "ssim", "rsa"}, (region, got)
    text = (world["out"] / "table1.md").read_text()
    assert "| Rest2Visual" in text and "Pearson (FB)" in text and "SSIM (VC)" in text
    table3 = pd.read_csv(world["out"] / "table3.csv")
    assert set(table3["roi"]) == {"V1", "V2", "V3", "V4", "V5"}
    # Table 3 in full: Pearson, RSA and SSIM per visual area, for every method
    per_cell = table3.groupby(["method", "roi"])["metric"].agg(frozenset)
    assert len(per_cell) == len(run.METHODS) * 5
    full = frozenset({"pearson", "rsa", "ssim"})
    # RSA is NaN (not shown) only for the group mean: one pattern for every trial
    assert set(per_cell[per_cell != full].index.get_level_values(0)) == {"Group mean"}
    assert (per_cell[per_cell != full] == full - {"rsa"}).all()
    text = (world["out"] / "table3.md").read_text()
    assert "| Rest2Visual, SSIM" in text and "| Rest2Visual, RSA" in text and "| V5" in text


def test_region_scores_equal_independent_implementations(world, tmp_path):
    """scores.csv on the evaluation's own arrays (the Random baseline, FB, VC and each visual
    area): Pearson and RSA = scipy, SSIM = skimage; and, under the one SSIM convention, the
    Random baseline sits at chance (≈ 0) in every region."""
    from scipy import stats
    from scipy.spatial.distance import pdist
    from skimage.metrics import structural_similarity

    from rest2visual.evaluate import baselines

    ev = run.load_evaluation(run._parser().parse_args(evaluate_args(world, tmp_path)))
    true = ev.measured.astype(np.float64)  # the same numbers, compared in float64
    pred = baselines.random_baseline(*true.shape, seed=ev.seed).astype(np.float64)
    scores = pd.read_csv(world["out"] / "scores.csv")
    scores = scores[scores["method"] == "Random"]
    grid = ev.pack.grid
    for region in ("FB", "VC", "V1", "V2", "V3", "V4", "V5"):
        sel = ev.regions[region]
        mine = scores[scores["region"] == region].set_index(["metric", "row"])["value"]
        r = [stats.pearsonr(p[sel], t[sel]).statistic for p, t in zip(pred, true)]
        np.testing.assert_allclose(mine["pearson"].loc[ev.test], r, atol=1e-9)
        rsa = stats.pearsonr(pdist(pred[:, sel], "correlation"), pdist(true[:, sel], "correlation")).statistic
        assert mine["rsa"].item() == pytest.approx(rsa, abs=1e-9)
        region_vol = grid.to_volume(sel)
        ssim = []
        for p, t in zip(pred, true):
            pv, tv = np.zeros(grid.shape), np.zeros(grid.shape)
            pv[region_vol], tv[region_vol] = stats.zscore(p[sel]), stats.zscore(t[sel])
            _, full = structural_similarity(pv, tv, win_size=5, data_range=tv.max() - tv.min(),
                                            channel_axis=None, full=True)
            ssim.append(full[region_vol].mean())
        np.testing.assert_allclose(mine["ssim"].loc[ev.test], ssim, atol=1e-6)
        assert abs(np.mean(ssim)) < 0.1, (region, np.mean(ssim))  # chance, in every region


def test_predictions_are_the_predict_path(world, tmp_path):
    """predictions.h5 holds exactly what rest2visual predict computes for a test row."""
    from PIL import Image

    with h5py.File(world["out"] / "predictions.h5") as h5:
        row = int(h5["rows"][0])
        stored = h5["methods/rest2visual"][0]
    trial = world["trials"].loc[row]
    rest_path = tmp_path / "rest.nii.gz"
    nib.save(world["grid"].to_nifti(world["rest"][trial["rest_row"]]), rest_path)
    image_path = tmp_path / "image.png"
    Image.fromarray(world["images"][trial["image_row"]]).save(image_path)
    out = tmp_path / "pred.nii.gz"
    assert predict.main(["--model", str(world["model"]), "--rest", str(rest_path), "--image",
                         str(image_path), "-o", str(out)]) == 0
    cli = world["grid"].to_vectors(nib.load(out).get_fdata(dtype=np.float32))
    # the same numbers up to float16 storage (relative precision 2**-11), and most bits equal:
    # batches of another size may round float32 sums differently, flipping a float16 rounding
    stored = stored.astype(np.float32)
    np.testing.assert_allclose(cli, stored, rtol=2**-10, atol=1e-5 * np.abs(stored).max())
    assert np.mean(cli.astype(np.float16) == stored) > 0.95


def corrupted_copy(src: Path, dst: Path, rows: np.ndarray, seed: int) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        betas = h5["betas"]
        noise = np.random.default_rng(seed).normal(0, 50, (len(rows), betas.shape[1]))
        for row, values in zip(rows, noise):
            betas[int(row)] = values.astype(np.float16)
    return dst


def test_only_test_rows_are_scored(world, tmp_path):
    """Corrupting every val and train beta leaves the scores of methods that do not fit on
    train rows unchanged; corrupting test betas changes them (so the check can fail)."""
    trials = world["trials"]
    splits = pd.read_csv(world["split"])["split"].to_numpy()
    scores = pd.read_csv(world["out"] / "scores.csv")
    not_fitted = ["Rest2Visual", "Random", "Resting", "noise rest", "noise image"]
    reference = scores[scores["method"].isin(not_fitted)].reset_index(drop=True)

    non_test = np.flatnonzero(splits != "test")
    assert len(non_test) == len(trials) - len(run.split_rows(trials, world["split"], "test"))
    bad = corrupted_copy(world["pack"], tmp_path / "non_test.h5", non_test, seed=1)
    ev = run.load_evaluation(run._parser().parse_args(evaluate_args(world, tmp_path, bad)))
    seen = []
    original = ev.predict
    ev.predict = lambda rows, **kw: (seen.append(np.asarray(rows)), original(rows, **kw))[1]
    again = pd.concat([ev.scores(run.METHODS[k], p) for k, p in ev.predictions()
                       if run.METHODS[k] in not_fitted], ignore_index=True)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), reference)
    assert seen and all(np.array_equal(rows, ev.test) for rows in seen)
    capped = dataclasses.replace(ev, max_fit_rows=10)  # the ridge/decoder subset: train rows, seeded
    assert len(capped.fit_rows) == 10 and np.isin(capped.fit_rows, ev.train).all()
    assert np.all(np.diff(capped.fit_rows) > 0) and np.array_equal(ev.fit_rows, ev.train)

    test = run.split_rows(trials, world["split"], "test")
    bad = corrupted_copy(world["pack"], tmp_path / "test.h5", test[:3], seed=2)
    ev = run.load_evaluation(run._parser().parse_args(evaluate_args(world, tmp_path, bad)))
    changed = ev.scores(run.MODEL, ev.predict(ev.test))
    model_ref = reference[reference["method"] == run.MODEL].reset_index(drop=True)
    assert not np.allclose(changed["value"], model_ref["value"], equal_nan=True)


def test_figure4_rows_are_test_rows(world, tmp_path):
    """Fig. 4 (inter-subject) is computed on held-out rows only; without an image that every
    test subject saw it draws nothing and says so, never falling back to training rows."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    from rest2visual.checks import InputError
    from rest2visual.figures.intersubject import NO_HELD_OUT, plot_intersubject

    rows = np.asarray(json.loads((world["out"] / "meta.json").read_text())["intersubject_rows"])
    with h5py.File(world["out"] / "predictions.h5") as h5:
        evaluated = h5["rows"][()]  # the evaluation's test rows
    assert len(rows) and np.isin(rows, evaluated).all()
    trials = world["trials"].loc[rows]
    assert trials["nsd_id"].nunique() == N_HELD_OUT_SHARED
    assert (trials.groupby("nsd_id")["subject"].nunique() == len(SUBJECTS)).all()
    isc = pd.read_csv(world["out"] / "intersubject.csv")
    assert len(isc) and (isc["rows"] == "test").all() and (isc["n_images"] == N_HELD_OUT_SHARED).all()

    ev = run.load_evaluation(run._parser().parse_args(evaluate_args(world, tmp_path)))
    assert np.array_equal(run.held_out_isc_rows(ev, world["shared"], 3, 125), rows)
    with pytest.raises(InputError, match="not test rows"):
        run.intersubject_table(ev, ev.train[:4])
    # one test subject (as in the unseen-subject protocol): no held-out shared images, no figure
    one = dataclasses.replace(ev, test=ev.test[world["trials"].loc[ev.test, "subject"].to_numpy() == 1])
    assert len(run.held_out_isc_rows(one, world["shared"], 1, 125)) == 0
    one.predict = lambda rows, **kw: pytest.fail(f"predicted rows {rows} for an empty analysis")
    empty = run.intersubject_table(one, run.held_out_isc_rows(one, world["shared"], 1, 125))
    assert empty.empty and list(empty.columns) == run.ISC_COLUMNS
    for table in (empty, isc.assign(rows="all-shared")):
        fig = plot_intersubject(table)
        assert [t.get_text() for ax in fig.axes for t in ax.texts] == [NO_HELD_OUT]


def test_tables_gather_protocols(world, tmp_path):
    for protocol in ("paper", "unseen-stimulus"):
        (tmp_path / "evaluation" / protocol).mkdir(parents=True)
        shutil.copy(world["out"] / "scores.csv", tmp_path / "evaluation" / protocol / "scores.csv")
    scores = [str(tmp_path / "evaluation" / p / "scores.csv") for p in ("paper", "unseen-stimulus")]
    assert run.main(["tables", "--scores", *scores, "--out-dir", str(tmp_path / "tables")]) == 0
    table4 = pd.read_csv(tmp_path / "tables" / "table4.csv")
    assert list(pd.unique(table4["protocol"])) == ["paper", "unseen-stimulus"]
    assert set(table4["region"]) == {"FB", "VC"}
    text = (tmp_path / "tables" / "table4.md").read_text()
    assert "| unseen-stimulus" in text and "Pearson (FB)" in text
    assert (tmp_path / "tables" / "table1.md").read_text() == (world["out"] / "table1.md").read_text()
    from rest2visual.evaluate.names import TABLES  # the files the tables rule declares

    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(
        name for pair in TABLES.values() for name in pair)
    assert run.main(["tables", "--scores", scores[1], "--out-dir", str(tmp_path / "t2")]) == 1


def test_evaluate_input_errors(world, tmp_path, capsys):
    other = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.int16), AFFINE), other)
    args = evaluate_args(world, tmp_path / "out")
    args[args.index("--atlas") + 1] = str(other)
    assert run.main(args) == 1
    err = capsys.readouterr().err
    assert str(other) in err and "expected spatial shape (12, 14, 12)" in err
    args[args.index("--atlas") + 1] = str(world["atlas"])
    args[args.index("--split") + 1] = str(tmp_path / "missing.csv")
    assert run.main(args) == 1
    assert "missing.csv: split file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- the ROI atlas --------------------------------------------------------------------------------

def fine_atlas(path: Path) -> Path:
    """V1..V5 as blocks along y on a 2 mm grid covering the toy grid's field of view."""
    affine = np.array([[-2.0, 0, 0, 26], [0, 2, 0, -30], [0, 0, 2, -22], [0, 0, 0, 1]])
    data = np.zeros((26, 30, 26), np.int16)
    for label in range(1, 6):
        data[2:24, 2 + 4 * label:6 + 4 * label, 2:24] = label
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_atlas_resampling_keeps_labels(world, tmp_path):
    mask_img = nib.Nifti1Image(world["grid"].mask.astype(np.uint8), AFFINE)
    source = fine_atlas(tmp_path / "fine.nii.gz")
    out = atlas.visual_atlas(mask_img, source)
    data = np.asarray(out.dataobj)
    assert data.dtype == np.int16 and out.shape == SHAPE and np.allclose(out.affine, AFFINE)
    assert set(np.unique(data)) == {0, 1, 2, 3, 4, 5}
    assert not data[~world["grid"].mask].any()
    # nearest neighbour: each output voxel carries the label found at its centre in the source
    src = nib.load(source)
    ijk = np.argwhere(world["grid"].mask)
    world_mm = ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    src_ijk = np.rint((world_mm - src.affine[:3, 3]) @ np.linalg.inv(src.affine[:3, :3]).T).astype(int)
    inside = np.all((src_ijk >= 0) & (src_ijk < src.shape), axis=1)
    expected = np.asarray(src.dataobj)[tuple(src_ijk[inside].T)]
    assert np.mean(data[tuple(ijk[inside].T)] == expected) > 0.97  # ties at voxel borders aside

    assert atlas.main(["--mask", str(tmp_path / "mask.nii.gz"), "--out", str(tmp_path / "a.nii.gz")]) == 1
    nib.save(mask_img, tmp_path / "mask.nii.gz")
    assert atlas.main(["--mask", str(tmp_path / "mask.nii.gz"), "--atlas", str(source),
                       "--out", str(tmp_path / "a.nii.gz")]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj), data)


def test_atlas_rejects_bad_labels(world, tmp_path):
    mask_img = nib.Nifti1Image(world["grid"].mask.astype(np.uint8), AFFINE)
    bad = toy_atlas_labels(world["grid"].mask)
    bad[bad == 5] = 7
    nib.save(nib.Nifti1Image(bad, AFFINE), tmp_path / "bad.nii.gz")
    with pytest.raises(atlas.InputError, match=r"bad.nii.gz: label values \[7\] outside 0..5"):
        atlas.visual_atlas(mask_img, tmp_path / "bad.nii.gz")
    bad[bad == 7] = 0
    nib.save(nib.Nifti1Image(bad, AFFINE), tmp_path / "no_v5.nii.gz")
    with pytest.raises(atlas.InputError, match=r"no_v5.nii.gz: areas \['V5'\] have no voxel"):
        atlas.visual_atlas(mask_img, tmp_path / "no_v5.nii.gz")


def test_juelich_labels_map_to_v1_v5(world, monkeypatch):
    names = ["Background", "GM Amygdala_centromedian group", "GM Visual cortex V1 BA17",
             "GM Visual cortex V2 BA18", "GM Visual cortex V3V", "GM Visual cortex V4",
             "GM Visual cortex V5", "GM Visual cortex V1 BA17 L"]
    assert atlas.juelich_visual_labels(names) == {2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 1}
    with pytest.raises(atlas.InputError, match=r"lack visual areas \['V5'\]"):
        atlas.juelich_visual_labels(names[:6])

    # the fetch path, without the network: nilearn's Atlas replaced by the same fields
    import nilearn.datasets
    from sklearn.utils import Bunch

    mask = world["grid"].mask
    source = np.zeros(SHAPE, np.int16)
    source[toy_atlas_labels(mask) > 0] = 1 + toy_atlas_labels(mask)[toy_atlas_labels(mask) > 0]
    source[0, 0, 0] = 1  # the amygdala outside the brain: dropped
    calls = []

    def fake_fetch(name, data_dir=None, verbose=1):
        calls.append(name)
        return Bunch(maps=nib.Nifti1Image(source, AFFINE), labels=names[:7])

    monkeypatch.setattr(nilearn.datasets, "fetch_atlas_juelich", fake_fetch)
    out = atlas.visual_atlas(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), None)
    np.testing.assert_array_equal(np.asarray(out.dataobj), toy_atlas_labels(mask))
    assert calls == [atlas.JUELICH_ATLAS]


# -- figures --------------------------------------------------------------------------------------

def test_figures_render(world, tmp_path):
    from PIL import Image

    from rest2visual.figures import make

    template = tmp_path / "template.nii.gz"
    axes = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    nib.save(nib.Nifti1Image((100 * np.clip(1.2 - sum(a ** 2 for a in axes), 0, None)).astype(np.float32),
                             AFFINE), template)
    log = tmp_path / "train_log.csv"
    pd.DataFrame({"epoch": [1, 2, 3], "step": [4, 8, 12], "train_loss": [1.0, 0.8, 0.7],
                  "val_loss": [1.1, 0.9, 0.95], "val_pearson": [0.1, 0.3, 0.25],
                  "samples_per_s": 10.0, "lr": 1e-3}).to_csv(log, index=False)
    args = ["--pack", str(world["pack"]), "--evaluation-dir", str(world["out"]),
            "--atlas", str(world["atlas"]), "--template", str(template), "--train-log", str(log),
            "--out-dir", str(tmp_path / "figures")]
    assert make.main(args) == 0
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(make.FIGURES.values())
    sizes = {"fig1": (13, 8.6), "fig3": (16.5, 4.2), "fig4": (14, 4.6), "fig5": (12, 6.2),
             "fig6": (7.5, 10.4), "training": (10, 3.8)}
    for key, name in make.FIGURES.items():
        path = tmp_path / "figures" / name
        assert path.is_file() and path.stat().st_size > 10_000, name
        with Image.open(path) as png:
            assert png.size == tuple(round(s * make.DPI) for s in sizes[key]), (name, png.size)
            pixels = np.asarray(png.convert("L"))
        assert pixels.std() > 10, name  # not a blank canvas
