"""Baselines, the K-fold SVD ridge, and the decoding probe.

The ridge is checked against scikit-learn (coefficients per alpha, and the
per-target alpha choice by an explicit fold × alpha loop over sklearn's
Ridge); encoding and decoding against planted linear problems and noise.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rest2visual.checks import InputError
from rest2visual.evaluate import ridge
from rest2visual.evaluate.baselines import (
    group_mean_baseline, noise_images, noise_maps, pixel_features, random_baseline, resting_baseline,
    ridge_encoding_baseline,
)
from rest2visual.evaluate.decoding import decoding_probe, identification
from rest2visual.evaluate.metrics import pearson_voxels
from rest2visual.evaluate.ridge import cv_folds, fit_ridge_cv, thin_svd


@pytest.fixture
def rng():
    return np.random.default_rng(3)


# ---------------------------------------------------------------- simple baselines

def test_random_baseline():
    a = random_baseline(200, 300, seed=1)
    assert a.shape == (200, 300) and a.dtype == np.float32
    np.testing.assert_array_equal(a, random_baseline(200, 300, seed=1))
    assert not np.array_equal(a, random_baseline(200, 300, seed=2))
    assert abs(a.mean()) < 0.02 and abs(a.std() - 1) < 0.02


def test_resting_baseline_gathers_each_rows_rest_map(rng, tmp_path):
    rest = rng.normal(size=(4, 20)).astype(np.float32)
    index = np.array([3, 0, 3, 2])
    np.testing.assert_array_equal(resting_baseline(rest, index), rest[index])
    with h5py.File(tmp_path / "pack.h5", "w") as f:
        f["rest_maps"] = rest
    with h5py.File(tmp_path / "pack.h5", "r") as f:
        np.testing.assert_array_equal(resting_baseline(f["rest_maps"], index), rest[index])
    np.testing.assert_array_equal(resting_baseline(rest), rest)
    with pytest.raises(InputError, match="outside"):
        resting_baseline(rest, np.array([0, 4]))


def test_group_mean_baseline(rng, tmp_path, monkeypatch):
    from rest2visual.evaluate import baselines

    betas = rng.normal(size=(30, 15)).astype(np.float16)
    rows = np.array([25, 3, 7, 8, 20])
    out = group_mean_baseline(betas, 4, rows)
    assert out.shape == (4, 15) and not out.flags.writeable
    np.testing.assert_allclose(out[2], betas[rows].astype(np.float64).mean(axis=0), rtol=1e-6)
    with h5py.File(tmp_path / "pack.h5", "w") as f:
        f["betas"] = betas
    monkeypatch.setattr(baselines, "_ROWS_PER_READ", 7)  # several blocks
    with h5py.File(tmp_path / "pack.h5", "r") as f:
        np.testing.assert_allclose(group_mean_baseline(f["betas"], 2)[0],
                                   betas.astype(np.float64).mean(axis=0), rtol=1e-6)
    with pytest.raises(InputError, match="outside"):
        group_mean_baseline(betas, 2, np.array([30]))


def test_noise_images_are_gaussian_with_the_image_sets_channel_moments(rng, monkeypatch):
    """The noise-image ablation: N(mean_c, sd_c) per RGB channel of the images, i.i.d. per pixel,
    rounded and clipped to 0..255 (the paper: Gaussian noise)."""
    from scipy import stats

    from rest2visual.evaluate import baselines

    # images with distinct channel levels and contrasts, and spatial structure
    ramp = np.linspace(0, 1, 48)[None, :, None, None] * np.ones((6, 48, 48, 3))
    images = np.clip(np.rint([20, 60, 100] + ramp * [120, 150, 90] + rng.normal(0, 5, ramp.shape)),
                     0, 255).astype(np.uint8)
    monkeypatch.setattr(baselines, "_IMAGES_PER_DRAW", 4)  # several draws
    noise = noise_images(images, np.random.default_rng(0))
    assert noise.shape == images.shape and noise.dtype == np.uint8
    np.testing.assert_array_equal(noise, noise_images(images, np.random.default_rng(0)))
    pixels, drawn = images.reshape(-1, 3).astype(float), noise.reshape(-1, 3).astype(float)
    np.testing.assert_allclose(drawn.mean(axis=0), pixels.mean(axis=0), atol=1.5)  # ≈ 5 SE
    np.testing.assert_allclose(drawn.std(axis=0), pixels.std(axis=0), rtol=0.03)
    for c in range(3):  # normal, not uniform: Kolmogorov–Smirnov against N(mean_c, sd_c)
        z = (drawn[:, c] - pixels[:, c].mean()) / pixels[:, c].std()
        assert stats.kstest(z, "norm").statistic < 0.02
        assert stats.kstest(z, "uniform", args=(-np.sqrt(3), 2 * np.sqrt(3))).statistic > 0.05
    # no spatial structure left: neighbouring pixels are uncorrelated
    assert abs(np.corrcoef(noise[:, :, :-1, 0].ravel(), noise[:, :, 1:, 0].ravel())[0, 1]) < 0.03
    # clipped to the valid range: a saturated channel stays within 0..255
    bright = np.full((2, 20, 20, 3), 250, np.uint8)
    bright[..., 0] = rng.integers(200, 256, (2, 20, 20))
    assert noise_images(bright, rng)[..., 0].max() == 255
    with pytest.raises(InputError, match="uint8 RGB"):
        noise_images(images.astype(np.float32), rng)


def test_noise_maps_keep_each_maps_mean_and_sd(rng):
    maps = rng.normal(size=(3, 5000)) * [[1.0], [4.0], [0.5]] + [[0.0], [10.0], [-2.0]]
    noise = noise_maps(maps, np.random.default_rng(1))
    assert noise.shape == maps.shape and noise.dtype == np.float32
    np.testing.assert_allclose(noise.mean(axis=1), maps.mean(axis=1), atol=0.1)
    np.testing.assert_allclose(noise.std(axis=1), maps.std(axis=1), rtol=0.03)
    assert max(abs(np.corrcoef(a, b)[0, 1]) for a, b in zip(noise, maps)) < 0.05


def test_pixel_features():
    images = np.zeros((2, 40, 40, 3), np.uint8)
    images[0, ..., 0] = 255
    images[1, :20] = 128
    feats = pixel_features(images, size=8)
    assert feats.shape == (2, 8 * 8 * 3) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[0].reshape(8, 8, 3)[..., 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(feats[0].reshape(8, 8, 3)[..., 1:], 0.0, atol=1e-6)
    top, bottom = feats[1].reshape(8, 8, 3)[:2], feats[1].reshape(8, 8, 3)[-2:]
    assert np.allclose(top, 128 / 255, atol=0.02) and np.allclose(bottom, 0, atol=0.02)
    with pytest.raises(InputError, match="RGB"):
        pixel_features(np.zeros((2, 8, 8)))


# ---------------------------------------------------------------- ridge

def _problem(rng, n=90, p=12, t=25, noise=2.0):
    x = rng.normal(size=(n, p)) * rng.uniform(0.3, 4, p) + rng.normal(size=p)
    w = rng.normal(size=(p, t)) * rng.uniform(0, 1, t)  # targets of different SNR
    y = x @ w + noise * rng.normal(size=(n, t)) + 3
    return x, y


@pytest.mark.parametrize("shape", [(40, 7), (7, 40)])
def test_thin_svd_matches_lapack(rng, shape):
    x = rng.normal(size=shape)
    x -= x.mean(axis=0)  # centred: one zero singular value when wide, which is dropped
    u, s, vt = thin_svd(x)
    np.testing.assert_allclose(u @ np.diag(s) @ vt, x, atol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(len(s)), atol=1e-10)
    np.testing.assert_allclose(vt @ vt.T, np.eye(len(s)), atol=1e-10)
    lapack = np.linalg.svd(x, compute_uv=False)
    np.testing.assert_allclose(np.sort(s)[::-1], lapack[lapack > 1e-6 * lapack[0]], rtol=1e-10)
    with pytest.raises(InputError, match="no variance"):
        thin_svd(np.zeros(shape))


@pytest.mark.parametrize("p", [12, 150])  # tall (n > p) and wide (p > n) features
def test_ridge_matches_sklearn_pipeline(rng, p):
    x, y = _problem(rng, p=p)
    x_test = rng.normal(size=(7, p))
    fit = fit_ridge_cv(x, y, alphas=[5.0])
    model = make_pipeline(StandardScaler(), Ridge(alpha=5.0)).fit(x, y)
    np.testing.assert_allclose(fit.predict(x_test), model.predict(x_test), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("per_target, p", [(True, 12), (False, 12), (True, 150)])
def test_ridge_alpha_choice_matches_explicit_cv_loop(rng, per_target, p, monkeypatch):
    x, y = _problem(rng, p=p)  # p=12: errors via the Gram path; p=150 > n_val: direct residuals
    alphas = np.logspace(-2, 5, 8)
    monkeypatch.setattr(ridge, "_BLOCK_ELEMENTS", 90 * 4)  # 4 targets per block
    fit = fit_ridge_cv(x, y, alphas=alphas, cv=4, seed=5, alpha_per_target=per_target)
    mse = np.zeros((len(alphas), y.shape[1]))
    for train, val in cv_folds(len(x), 4, seed=5):
        for i, alpha in enumerate(alphas):
            model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[train], y[train])
            mse[i] += ((model.predict(x[val]) - y[val]) ** 2).sum(axis=0)
    np.testing.assert_allclose(fit.cv_mse, mse / len(x), rtol=1e-8)
    expected = alphas[mse.argmin(axis=0)] if per_target else np.full(y.shape[1], alphas[mse.sum(1).argmin()])
    np.testing.assert_array_equal(fit.alphas, expected)


def test_ridge_group_folds_keep_groups_together(rng):
    groups = np.repeat(np.arange(20), 3)
    for train, val in cv_folds(60, 5, groups):
        assert not set(groups[train]) & set(groups[val])
    with pytest.raises(InputError, match="groups"):
        cv_folds(60, 5, groups[:-1])
    with pytest.raises(InputError, match="cv"):
        cv_folds(60, 1)


def test_ridge_reads_targets_from_h5(rng, tmp_path, monkeypatch):
    x, y = _problem(rng)
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["betas"] = y.astype(np.float32)
    monkeypatch.setattr(ridge, "_BLOCK_ELEMENTS", 90 * 6)
    with h5py.File(tmp_path / "y.h5", "r") as f:
        from_disk = fit_ridge_cv(x, f["betas"], alphas=[0.1, 10.0, 1000.0])
    in_memory = fit_ridge_cv(x, y.astype(np.float32), alphas=[0.1, 10.0, 1000.0])
    np.testing.assert_array_equal(from_disk.coef, in_memory.coef)
    with pytest.raises(InputError, match="rows"):
        fit_ridge_cv(x, y[:-1])
    with pytest.raises(InputError, match="positive"):
        fit_ridge_cv(x, y, alphas=[0.0, 1.0])


def test_ridge_encoding_recovers_planted_map(rng):
    n_train, n_test, p, v_signal, v_noise = 400, 100, 20, 60, 40
    feats = rng.normal(size=(n_train + n_test, p))
    weights = rng.normal(size=(p, v_signal))
    signal = feats @ weights
    # per-voxel noise SD half the signal's SD: best possible test r = 1/sqrt(1.25) ≈ 0.89
    betas = np.hstack([signal + 0.5 * signal.std(axis=0) * rng.normal(size=signal.shape),
                       rng.normal(size=(n_train + n_test, v_noise))])
    pred, fit = ridge_encoding_baseline(feats[:n_train], betas[:n_train], feats[n_train:], cv=5)
    assert pred.shape == (n_test, v_signal + v_noise) and pred.dtype == np.float32
    r = pearson_voxels(pred, betas[n_train:])
    assert r[:v_signal].min() > 0.8 and np.median(r[:v_signal]) > 0.85
    noiseless = pearson_voxels(pred[:, :v_signal], signal[n_train:])
    assert noiseless.min() > 0.9  # the planted linear map itself is recovered
    # sensible penalties: signal voxels need little shrinkage, pure-noise voxels the most
    assert np.median(fit.alphas[:v_signal]) <= 1e2
    assert np.median(fit.alphas[v_signal:]) >= 1e4
    assert abs(np.median(r[v_signal:])) < 0.1


# ---------------------------------------------------------------- decoding probe

def test_identification_by_hand_and_by_loop(rng):
    true = rng.normal(size=(6, 8))
    perfect = identification(3 * true + 1, true)
    assert perfect == {"top1": 1.0, "two_way": 1.0, "n_images": 6, "chance_top1": pytest.approx(1 / 6)}
    decoded = true + 1.5 * rng.normal(size=true.shape)
    scores = identification(decoded, true)
    c = np.corrcoef(decoded, true)[:6, 6:]
    assert scores["top1"] == np.mean(c.argmax(axis=1) == np.arange(6))
    wins = [c[i, i] + c[j, j] > c[i, j] + c[j, i] for i in range(6) for j in range(i + 1, 6)]
    assert scores["two_way"] == pytest.approx(np.mean(wins))


def test_identification_counts_repeated_images_once(rng):
    images = rng.normal(size=(3, 5))
    ids = np.array([10, 11, 10, 12, 11])
    true = images[[0, 1, 0, 2, 1]]
    scores = identification(true + 0.01 * rng.normal(size=true.shape), true, image_ids=ids)
    assert scores["n_images"] == 3 and scores["top1"] == 1.0 and scores["two_way"] == 1.0
    with pytest.raises(InputError, match="image_ids"):
        identification(true, true, image_ids=ids[:-1])


def test_decoding_probe_planted_vs_noise(rng):
    n_train, n_test, c, v = 300, 100, 16, 120
    emb = rng.normal(size=(n_train + n_test, c))
    mixing = rng.normal(size=(c, v))
    betas = emb @ mixing + 6.0 * rng.normal(size=(n_train + n_test, v))
    noise = rng.normal(size=(n_test, v))
    table = decoding_probe(betas[:n_train], emb[:n_train],
                           {"measured": betas[n_train:], "predicted": 0.2 * betas[n_train:] + 5,
                            "noise": noise},
                           emb[n_train:], cv=5)
    rows = table.set_index("source")
    chance = rows.loc["measured", "chance_top1"]
    assert chance == pytest.approx(1 / n_test)
    assert rows.loc["measured", "top1"] > 0.5  # chance: 0.01
    assert rows.loc["measured", "two_way"] > 0.95
    # z-scoring each map: an affinely rescaled prediction decodes exactly like the measurement
    assert rows.loc["predicted", "top1"] == rows.loc["measured", "top1"]
    assert rows.loc["noise", "top1"] <= 4 * chance
    assert abs(rows.loc["noise", "two_way"] - 0.5) < 0.15  # null SD ≈ 0.04 here (8 seeds)
