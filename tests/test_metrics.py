"""Evaluation metrics, signal statistics, noise ceiling, ISC matrices and table writers.

Every metric is checked against an independent implementation on the same
arrays (scipy.stats, skimage, explicit loops), on random and structured data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats
from skimage.metrics import structural_similarity

from rest2visual.checks import InputError
from rest2visual.evaluate import metrics
from rest2visual.evaluate.intersubject import diagonality_index, intersubject_matrix
from rest2visual.evaluate.metrics import (
    mae_rows, pearson_rows, pearson_voxels, per_roi, rdm, region_scores, rsa, ssim3d, ssim_rows, zscore_rows,
)
from rest2visual.evaluate.noise_ceiling import (
    noise_ceiling, noise_normalized_accuracy, summarize_noise_normalized,
)
from rest2visual.evaluate.stats import cnr, paired_comparisons, snr, ttest_two_sided
from rest2visual.evaluate.tables import (
    markdown_table, pivot_mean_std, summarize, write_table1, write_table3, write_table4,
)
from rest2visual.maskvec import MaskedGrid


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def grid():
    """A toy brain: an ellipsoid mask on a 14×16×12 grid (4 mm voxels)."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (14, 16, 12)), indexing="ij")
    mask = (x / 0.9) ** 2 + (y / 0.95) ** 2 + (z / 0.85) ** 2 < 1
    return MaskedGrid(mask, np.diag([4.0, 4.0, 4.0, 1.0]))


def smooth_maps(rng, grid, n, sigma=1.5):
    """Spatially smooth random maps (in-mask vectors): structured data like real betas."""
    vols = ndimage.gaussian_filter(rng.normal(size=grid.shape + (n,)), sigma=(sigma,) * 3 + (0,))
    return grid.to_vectors(vols)


def pairs(rng, grid, n=6):
    """(pred, true) examples: independent random, and a noisy smooth prediction of a smooth truth."""
    v = grid.n_voxels
    true = smooth_maps(rng, grid, n)
    return [
        (rng.normal(size=(n, v)), rng.normal(size=(n, v)) * 3 + 1),
        (2.5 * true + 0.3 * rng.normal(size=true.shape) - 4, true),
    ]


# ---------------------------------------------------------------- per-sample metrics

def test_zscore_rows_and_constant_rows(rng):
    x = rng.normal(size=(4, 50)) * 5 + 3
    z = zscore_rows(x)
    np.testing.assert_allclose(z, stats.zscore(x, axis=1), atol=1e-12)
    const = zscore_rows(np.vstack([np.ones(10), 5 + 1e-14 * rng.normal(size=10)]))  # rounding-level spread
    assert np.isnan(const).all()
    tiny = 1e-20 * rng.normal(size=(1, 10))  # tiny units, but a real pattern
    np.testing.assert_allclose(zscore_rows(tiny), stats.zscore(tiny, axis=1))
    r = pearson_rows(np.vstack([np.full(10, 2.0), rng.normal(size=10)]), rng.normal(size=(2, 10)))
    assert np.isnan(r[0]) and np.isfinite(r[1])


def test_pearson_rows_matches_scipy(rng, grid):
    for pred, true in pairs(rng, grid):
        expected = [stats.pearsonr(p, t).statistic for p, t in zip(pred, true)]
        np.testing.assert_allclose(pearson_rows(pred, true), expected, atol=1e-12)
    true = rng.normal(size=(3, 40))
    np.testing.assert_allclose(pearson_rows(2 * true + 1, true), 1.0, atol=1e-12)
    np.testing.assert_allclose(pearson_rows(-true, true), -1.0, atol=1e-12)


def test_pearson_rows_blocks_and_float16(rng, monkeypatch):
    pred, true = rng.normal(size=(9, 30)).astype(np.float16), rng.normal(size=(9, 30)).astype(np.float16)
    whole = pearson_rows(pred, true)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 60)  # 2 rows per block
    np.testing.assert_array_equal(pearson_rows(pred, true), whole)
    expected = [stats.pearsonr(p.astype(float), t.astype(float)).statistic for p, t in zip(pred, true)]
    np.testing.assert_allclose(whole, expected, atol=1e-12)


def test_mae_rows_matches_formula(rng, grid):
    for pred, true in pairs(rng, grid):
        expected = [np.mean(np.abs(stats.zscore(p) - stats.zscore(t))) for p, t in zip(pred, true)]
        np.testing.assert_allclose(mae_rows(pred, true), expected, atol=1e-12)
    x = rng.normal(size=(2, 20))
    np.testing.assert_allclose(mae_rows(3 * x + 2, x), 0.0, atol=1e-12)


def test_pearson_voxels_matches_scipy(rng, monkeypatch):
    true = rng.normal(size=(25, 12))
    pred = true * rng.uniform(-1, 1, 12) + rng.normal(size=true.shape)
    expected = [stats.pearsonr(pred[:, j], true[:, j]).statistic for j in range(12)]
    np.testing.assert_allclose(pearson_voxels(pred, true), expected, atol=1e-12)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 50)  # 2 voxels per block
    np.testing.assert_allclose(pearson_voxels(pred, true), expected, atol=1e-12)


def test_metric_input_errors(rng):
    with pytest.raises(InputError, match="shape"):
        pearson_rows(rng.normal(size=(3, 10)), rng.normal(size=(3, 11)))
    bad = rng.normal(size=(3, 10))
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        mae_rows(bad, rng.normal(size=(3, 10)))
    with pytest.raises(InputError, match="3 samples"):
        rsa(rng.normal(size=(2, 10)), rng.normal(size=(2, 10)))


# ---------------------------------------------------------------- SSIM

def test_ssim3d_matches_skimage(rng, grid):
    true = grid.to_volume(smooth_maps(rng, grid, 1)[0])
    cases = [(rng.normal(size=grid.shape), rng.normal(size=grid.shape)),
             (true + 0.5 * rng.normal(size=grid.shape), true)]
    for pred, ref in cases:
        data_range = ref.max() - ref.min()
        for kwargs, sk in [({}, {}), ({"win_size": 5}, {"win_size": 5}),
                           ({"gaussian": True}, {"gaussian_weights": True})]:
            expected = structural_similarity(pred, ref, data_range=data_range, channel_axis=None, **sk)
            assert ssim3d(pred, ref, **kwargs) == pytest.approx(expected, abs=1e-6)
        assert ssim3d(ref, ref) == pytest.approx(1.0)


def test_ssim3d_mask_means_skimage_map_over_mask(rng, grid):
    pred, ref = rng.normal(size=grid.shape), rng.normal(size=grid.shape)
    _, full = structural_similarity(pred, ref, data_range=4.0, channel_axis=None, full=True)
    expected = full[grid.mask].mean()
    assert ssim3d(pred, ref, mask=grid.mask, data_range=4.0) == pytest.approx(expected, abs=1e-9)


def test_ssim3d_errors(rng):
    with pytest.raises(InputError, match="odd"):
        ssim3d(rng.normal(size=(9, 9, 9)), rng.normal(size=(9, 9, 9)), win_size=4)
    with pytest.raises(InputError, match="data_range"):
        ssim3d(rng.normal(size=(9, 9, 9)), np.zeros((9, 9, 9)))
    with pytest.raises(InputError, match="exceeds"):
        ssim3d(rng.normal(size=(5, 9, 9)), rng.normal(size=(5, 9, 9)))


def test_ssim_rows_matches_skimage_on_scattered_zscored_volumes(rng, grid):
    half = np.zeros(grid.n_voxels, bool)
    half[: grid.n_voxels // 2] = True
    # an interior blob: only a sub-box of the grid is filtered, the rest counts as SSIM 1
    ijk = np.argwhere(grid.mask)
    blob = np.sum((ijk - [6, 9, 5]) ** 2, axis=1) <= 2
    for pred, true in pairs(rng, grid, n=3):
        for region in (None, half, blob):
            sel = np.ones(grid.n_voxels, bool) if region is None else region
            region_vol = grid.to_volume(sel)
            expected, expected_in_region = [], []
            for p, t in zip(pred, true):
                pv, tv = np.zeros(grid.shape), np.zeros(grid.shape)
                pv[region_vol], tv[region_vol] = stats.zscore(p[sel]), stats.zscore(t[sel])
                mean, full = structural_similarity(pv, tv, data_range=tv.max() - tv.min(), channel_axis=None,
                                                   full=True)
                expected.append(mean)
                expected_in_region.append(full[region_vol].mean())
            np.testing.assert_allclose(ssim_rows(pred, true, grid, region=region, batch=2, over_region=False),
                                       expected, atol=1e-6)
            # the project's one convention (the default): the mean over the region's voxels
            np.testing.assert_allclose(ssim_rows(pred, true, grid, region=region, batch=2),
                                       expected_in_region, atol=1e-6)


# ---------------------------------------------------------------- RSA, ROIs, region table

def test_rdm_and_rsa_match_double_loop(rng, grid, monkeypatch):
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7 * 100)  # RDMs accumulated over voxel blocks
    for pred, true in pairs(rng, grid, n=7):
        n = len(pred)
        loop_rdm = np.array([[1 - stats.pearsonr(pred[i], pred[j]).statistic for j in range(n)]
                             for i in range(n)])
        np.testing.assert_allclose(rdm(pred), loop_rdm, atol=1e-12)
        a = [1 - stats.pearsonr(pred[i], pred[j]).statistic for i in range(n) for j in range(i + 1, n)]
        b = [1 - stats.pearsonr(true[i], true[j]).statistic for i in range(n) for j in range(i + 1, n)]
        assert rsa(pred, true) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)
    same_pattern = np.outer(rng.uniform(1, 2, 5), rng.normal(size=40))  # e.g. the group-mean baseline
    assert np.isnan(rsa(same_pattern, rng.normal(size=(5, 40))))


def _ssim_over_region(p, t, grid, sel, win_size=7):
    """skimage's SSIM map of the region's z-scored maps (0 elsewhere), averaged over the region."""
    region_vol = grid.to_volume(sel)
    pv, tv = np.zeros(grid.shape), np.zeros(grid.shape)
    pv[region_vol], tv[region_vol] = stats.zscore(p[sel]), stats.zscore(t[sel])
    _, full = structural_similarity(pv, tv, data_range=tv.max() - tv.min(), win_size=win_size,
                                    channel_axis=None, full=True)
    return full[region_vol].mean()


def test_per_roi_matches_independent_implementations(rng, grid):
    """Table 3's metrics per ROI: Pearson and RSA = scipy, SSIM = skimage, on the same arrays."""
    from scipy.spatial.distance import pdist

    pred, true = pairs(rng, grid, n=5)[1]
    labels = rng.integers(0, 6, grid.n_voxels)
    labels[labels == 5] = 0
    labels[0] = 5  # a one-voxel V5: left out, not an error
    table = per_roi(pred, true, labels, grid=grid, win_size=5, labels_columns={"method": "m"})
    assert list(table.columns) == ["method", "region", "metric", "sample", "value"]
    assert list(pd.unique(table["region"])) == ["V1", "V2", "V3", "V4"]
    for label in range(1, 5):
        sel = labels == label
        mine = table[table["region"] == f"V{label}"].set_index(["metric", "sample"])["value"]
        r = [stats.pearsonr(p[sel], t[sel]).statistic for p, t in zip(pred, true)]
        np.testing.assert_allclose(mine["pearson"].sort_index(), r, atol=1e-12)
        # RSA: Pearson of the condensed correlation-distance RDMs (scipy's pdist)
        expected_rsa = stats.pearsonr(pdist(pred[:, sel], "correlation"),
                                      pdist(true[:, sel], "correlation")).statistic
        assert mine["rsa"].item() == pytest.approx(expected_rsa, abs=1e-12)
        ssim = [_ssim_over_region(p, t, grid, sel, win_size=5) for p, t in zip(pred, true)]
        np.testing.assert_allclose(mine["ssim"].sort_index(), ssim, atol=1e-6)
    assert per_roi(pred, true, labels)["metric"].isin(["pearson", "mae", "rsa"]).all()  # no grid: no SSIM
    with pytest.raises(InputError, match="labels"):
        per_roi(pred, true, labels[:-1])


def test_ssim_convention_random_baseline_at_chance_in_every_region(rng, grid):
    """One SSIM convention: the Random baseline sits at chance (≈ 0) in the full brain, a
    small region and a tiny one alike. The whole-volume mean (the paper's full-brain value)
    would instead read 1 − (the region's share of the volume): near 1 for a small region."""
    from rest2visual.evaluate.baselines import random_baseline

    x, y, z = np.meshgrid(*(np.linspace(-1, 1, 26),) * 3, indexing="ij")
    grid = MaskedGrid(x**2 + y**2 + z**2 < 0.8, np.diag([4.0, 4.0, 4.0, 1.0]))  # a bigger toy brain
    true = smooth_maps(rng, grid, 6)
    pred = random_baseline(*true.shape, seed=3)
    ijk = np.argwhere(grid.mask)
    regions = {"FB": np.ones(grid.n_voxels, bool),
               "half": ijk[:, 1] < 13,
               "blob": np.sum((ijk - [13, 13, 13]) ** 2, axis=1) <= 5}
    chance = {}
    for name, sel in regions.items():
        chance[name] = ssim_rows(pred, true, grid, region=sel).mean()
        whole = ssim_rows(pred, true, grid, region=sel, over_region=False).mean()
        assert abs(chance[name]) < 0.1, (name, chance[name])
        assert np.mean([_ssim_over_region(p, t, grid, sel) for p, t in zip(pred, true)]) == pytest.approx(
            chance[name], abs=1e-6)
        if name == "blob":
            assert whole > 0.8  # why not the whole volume: a small region is mostly background
    assert np.ptp(list(chance.values())) < 0.1
    # and a good prediction is far above chance under the same convention
    good = ssim_rows(true + 0.5 * true.std() * rng.normal(size=true.shape), true, grid,
                     region=regions["half"]).mean()
    assert good > chance["half"] + 0.3


def test_region_scores_layout(rng, grid):
    pred, true = pairs(rng, grid, n=4)[1]
    region = np.arange(grid.n_voxels) % 3 == 0
    scores = region_scores(pred, true, grid=grid, region=region, labels={"method": "m", "region": "VC"})
    assert list(scores.columns) == ["method", "region", "metric", "sample", "value"]
    counts = scores.groupby("metric").size().to_dict()
    assert counts == {"pearson": 4, "mae": 4, "ssim": 4, "rsa": 1}
    np.testing.assert_allclose(scores.query("metric == 'pearson'")["value"],
                               pearson_rows(pred[:, region], true[:, region]))


# ---------------------------------------------------------------- SNR / CNR / t-test

def test_snr_cnr_by_hand():
    from rest2visual.evaluate.stats import signal_quality

    # one map of 6 voxels; z-scoring over all six first
    x = np.array([[4.0, 6.0, 8.0, 0.0, 1.0, -1.0]])
    roi = np.array([True, True, True, False, False, False])
    z = (x - x.mean()) / x.std()
    roi_mean, roi_std, bg_mean = z[0, :3].mean(), z[0, :3].std(), z[0, 3:].mean()
    assert snr(x, roi)[0] == pytest.approx(roi_mean / roi_std)
    assert cnr(x, roi, spread="sd")[0] == pytest.approx((roi_mean - bg_mean) / roi_std)
    # the paper's CNR (the default) divides by the ROI variance
    assert cnr(x, roi)[0] == pytest.approx((roi_mean - bg_mean) / roi_std**2)
    # by hand: mean 3, sd sqrt(9.6667) → roi z = (1,3,5)/3.1091..., bg z = (-3,-2,-4)/3.1091...
    sd = np.sqrt(np.mean((x - 3) ** 2))
    assert snr(x, roi)[0] == pytest.approx((3 / sd) / (np.std([1, 3, 5]) / sd))  # = 3 / 1.633 = 1.837
    assert cnr(x, roi, spread="sd")[0] == pytest.approx((3 - -3) / np.std([1, 3, 5]))
    assert cnr(x, roi)[0] == pytest.approx((6 / sd) / (np.var([1, 3, 5]) / sd**2))  # = 6·sd / (8/3)
    both = signal_quality(x, roi)
    assert set(both) == {"snr", "cnr", "cnr_sd"}
    for key, value in (("snr", snr(x, roi)), ("cnr", cnr(x, roi)), ("cnr_sd", cnr(x, roi, spread="sd"))):
        np.testing.assert_allclose(both[key], value)
    # sign: an ROI below the background gives negative CNR; scale and offset do not matter
    assert cnr(-x, roi)[0] < 0 and cnr(-x, roi, spread="sd")[0] < 0
    assert snr(10 * x + 7, roi)[0] == pytest.approx(snr(x, roi)[0])
    assert cnr(10 * x + 7, roi)[0] == pytest.approx(cnr(x, roi)[0])
    with pytest.raises(InputError, match="boolean"):
        snr(x, roi[:5])
    with pytest.raises(InputError, match="spread"):
        cnr(x, roi, spread="std")


def test_ttest_two_sided(rng):
    a = rng.normal(size=30)
    b = a + 0.5 + 0.1 * rng.normal(size=30)
    t, p = ttest_two_sided(a, b, paired=True)
    assert t < 0 and p < 1e-10
    t_ind, p_ind = ttest_two_sided(a, b, paired=False)
    assert p_ind > p  # pairing removes the shared between-sample variance
    assert (t_ind, p_ind) == pytest.approx(tuple(stats.ttest_ind(a, b, equal_var=False)))
    with pytest.raises(InputError, match="equal lengths"):
        ttest_two_sided(a, b[:-1], paired=True)


# ---------------------------------------------------------------- noise ceiling

def test_paired_comparisons_match_the_t_formula(rng, tmp_path):
    from rest2visual.evaluate.tables import write_comparisons

    n = 40
    ref = rng.normal(0.3, 0.1, n)
    others = {"Group mean": ref - rng.normal(0.05, 0.05, n), "noise image": ref + rng.normal(0, 0.1, n)}
    rows = [{"method": m, "region": r, "metric": "pearson", "sample": i, "value": v[i] + (r == "VC")}
            for r in ("FB", "VC") for m, v in {"Rest2Visual": ref, **others}.items() for i in range(n)]
    rows.append({"method": "Rest2Visual", "region": "FB", "metric": "rsa", "sample": 0, "value": 0.5})
    scores = pd.DataFrame(rows).sample(frac=1, random_state=0)  # row order must not matter
    table = paired_comparisons(scores, "Rest2Visual")
    assert sorted(zip(table["region"], table["method"])) == [
        ("FB", "Group mean"), ("FB", "noise image"), ("VC", "Group mean"), ("VC", "noise image")]
    for _, row in table.iterrows():
        d = ref - others[row["method"]]
        t = d.mean() / (d.std(ddof=1) / np.sqrt(n))  # the paired t statistic by hand
        assert row["t"] == pytest.approx(t, rel=1e-9) and row["n"] == n
        assert row["mean_difference"] == pytest.approx(d.mean())
        assert row["p"] == pytest.approx(2 * stats.t.sf(abs(t), n - 1), rel=1e-6)
    write_comparisons(table, tmp_path / "c.csv", tmp_path / "c.md", reference="Rest2Visual")
    assert "Δ Pearson (Rest2Visual − method)" in (tmp_path / "c.md").read_text()
    with pytest.raises(InputError, match="no pearson scores of 'Ridge'"):
        paired_comparisons(scores, "Ridge")


def test_noise_ceiling_matches_formula_loop(rng):
    ncsnr = rng.uniform(0, 2, 50)
    for n in (1, 3):
        expected = [100 * s**2 / (s**2 + 1 / n) for s in ncsnr]
        np.testing.assert_allclose(noise_ceiling(ncsnr, n_trials=n), expected, rtol=1e-12)
    assert noise_ceiling(np.array([1.0]))[0] == pytest.approx(50.0)
    with pytest.raises(InputError, match="negative"):
        noise_ceiling(np.array([-0.1, 1.0]))
    with pytest.raises(InputError, match="n_trials"):
        noise_ceiling(ncsnr, n_trials=0)


def test_noise_normalized_accuracy():
    r = np.array([0.5, -0.5, 0.3, 0.9])
    nc = np.array([50.0, 50.0, 0.5, 81.0])
    out = noise_normalized_accuracy(r, nc)
    np.testing.assert_allclose(out[[0, 1, 3]], [50.0, -50.0, 100.0])
    assert np.isnan(out[2])  # below min_nc
    summary = summarize_noise_normalized(out)
    assert summary["n"] == 3 and summary["median"] == pytest.approx(50.0)


# ---------------------------------------------------------------- inter-subject matrices

def test_intersubject_matrix_matches_loop(rng):
    subjects = [1, 2, 5]
    pred = {s: rng.normal(size=(4, 30)) for s in subjects}
    meas = {s: rng.normal(size=(4, 30)) for s in reversed(subjects)}  # order differs: realigned
    m = intersubject_matrix(pred, meas)
    assert list(m.index) == subjects and list(m.columns) == subjects
    for a in subjects:
        for b in subjects:
            loop = np.mean([stats.pearsonr(pred[a][i], meas[b][i]).statistic for i in range(4)])
            assert m.loc[a, b] == pytest.approx(loop, abs=1e-12)
    np.testing.assert_allclose(np.diag(intersubject_matrix(meas)), 1.0)


def test_diagonality_index_detects_subject_specificity(rng):
    shared = rng.normal(size=(10, 200))
    own = {s: rng.normal(size=(10, 200)) for s in range(4)}
    meas = {s: shared + own[s] for s in own}
    specific = {s: shared + own[s] + rng.normal(size=(10, 200)) for s in own}
    generic = {s: shared + rng.normal(size=(10, 200)) for s in own}
    m_specific, m_generic = intersubject_matrix(specific, meas), intersubject_matrix(generic, meas)
    assert diagonality_index(m_specific) > 0.3
    assert abs(diagonality_index(m_generic)) < 0.1
    assert diagonality_index(np.array([[1.0, 0.0], [0.0, 1.0]])) == 1.0
    assert diagonality_index(np.array([[0.2, 0.6], [0.6, 0.2]])) == pytest.approx(-0.5)
    with pytest.raises(InputError, match="same shared images"):
        intersubject_matrix({1: shared, 2: shared[:-1]})
    with pytest.raises(InputError, match="differ"):
        intersubject_matrix({1: shared}, {2: shared})


# ---------------------------------------------------------------- tables

def _scores(rng):
    rows = []
    for method, level in [("Random", 0.0), ("Rest2Visual", 0.4)]:
        for region in ("FB", "VC"):
            for metric in ("pearson", "mae", "ssim"):
                for sample, value in enumerate(level + 0.1 * rng.normal(size=5)):
                    rows.append((method, region, metric, sample, value))
            rows.append((method, region, "rsa", -1, level + 0.2))
    return pd.DataFrame(rows, columns=["method", "region", "metric", "sample", "value"])


def test_table1_csv_and_markdown(rng, tmp_path):
    scores = _scores(rng)
    summary = write_table1(scores, tmp_path / "t1.csv", tmp_path / "t1.md")
    csv = pd.read_csv(tmp_path / "t1.csv")
    assert list(csv.columns) == ["method", "region", "metric", "mean", "std", "n"]
    sel = scores.query("method == 'Rest2Visual' and region == 'VC' and metric == 'mae'")["value"]
    row = csv.query("method == 'Rest2Visual' and region == 'VC' and metric == 'mae'").iloc[0]
    assert row["mean"] == pytest.approx(sel.mean()) and row["std"] == pytest.approx(sel.std(ddof=0))
    assert row["n"] == 5 and len(summary) == 16
    md = (tmp_path / "t1.md").read_text().splitlines()
    header = [c.strip() for c in md[2].strip("|").split("|")]
    assert header == ["method", "Pearson (FB)", "RSA (FB)", "MAE (FB)", "SSIM (FB)",
                      "Pearson (VC)", "RSA (VC)", "MAE (VC)", "SSIM (VC)"]
    body = [c.strip() for c in md[5].strip("|").split("|")]
    assert body[0] == "Rest2Visual" and body[2] == "0.600"  # RSA: one value, no ±
    assert body[7] == f"{row['mean']:.3f} ± {row['std']:.3f}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.csv", "t1.md"]  # no temporary files left


def test_table3_and_table4(rng, tmp_path):
    roi = pd.DataFrame({"method": "Rest2Visual", "roi": ["V1", "V2", "V1", "V2", "V1", "V2"],
                        "metric": ["pearson", "pearson", "ssim", "ssim", "rsa", "rsa"],
                        "mean": [0.6, 0.62, 0.5, 0.4, 0.8, 0.7], "std": [0.1, 0.2, 0.05, 0.06, 0, 0],
                        "n": [10, 10, 10, 10, 1, 1]})
    write_table3(roi, tmp_path / "t3.csv", tmp_path / "t3.md")
    md = (tmp_path / "t3.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| Rest2Visual")]
    # one row per (method, metric) in the paper's order, one column per ROI
    assert lines == ["| Rest2Visual, Pearson | 0.600 ± 0.100 | 0.620 ± 0.200 |",
                     "| Rest2Visual, RSA     | 0.800         | 0.700         |",
                     "| Rest2Visual, SSIM    | 0.500 ± 0.050 | 0.400 ± 0.060 |"]
    assert metrics.SSIM_CONVENTION in md  # the caption states the SSIM convention
    scores = _scores(rng).query("method == 'Rest2Visual'").drop(columns="method")
    scores = pd.concat([scores.assign(protocol=p) for p in ("paper", "unseen-stimulus")])
    write_table4(scores, tmp_path / "t4.csv", tmp_path / "t4.md")
    md = (tmp_path / "t4.md").read_text()
    assert "| protocol" in md and "| unseen-stimulus" in md and "Pearson (VC)" in md


def test_pivot_refuses_ambiguous_cells_and_markdown_escapes(rng):
    summary = summarize(_scores(rng), ["method", "region"])
    with pytest.raises(InputError, match="several summary rows"):
        pivot_mean_std(summary, ["method"], ["metric"])
    with pytest.raises(InputError, match="lacks columns"):
        summarize(_scores(rng), ["protocol"])
    table = pd.DataFrame({"a|b": ["x"]}, index=pd.Index(["r"], name="k"))
    assert "a\\|b" in markdown_table(table)
