"""PCC seed rest connectivity: signal processing, vectorised GLM, the z-map stage and its CLI."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import signal as sp_signal

from rest2visual.checks import InputError
from rest2visual.preprocess.glm import (ols_betas, ols_betas_blocks, seed_design,
                                        stack_run_designs, zscore_in_mask)
from rest2visual.preprocess.rest_map import (main, pcc_seed_zmap, repetition_time,
                                             session_tr)
from rest2visual.preprocess.seed import seed_region, seed_timeseries, sphere_mask, voxel_centers_mm
from rest2visual.preprocess.signal import (bandpass, butterworth_sos, hrf_convolve, hrf_kernel,
                                           min_timepoints)
from rest2visual.preprocess.template import Grid, mni_brain_mask, mni_grid

RES_MM = 6.0
TR_S = 1.5
PCC = (0.0, -52.0, 26.0)
MPFC = (0.0, 50.0, 0.0)


@pytest.fixture(scope="module")
def grid():
    return mni_grid(RES_MM)


@pytest.fixture(scope="module")
def mask_img():
    return mni_brain_mask(RES_MM)


@pytest.fixture(scope="module")
def brain(mask_img):
    return np.asarray(mask_img.dataobj) > 0


def blob(grid, center_mm, sigma_mm=12.0):
    """Gaussian blob (X, Y, Z) around an MNI point: one node of a planted network."""
    d2 = ((voxel_centers_mm(grid) - np.asarray(center_mm)) ** 2).sum(axis=-1)
    return np.exp(-d2 / (2 * sigma_mm**2))


def network_map(grid):
    """The planted default-mode-like network: PCC + mPFC."""
    return blob(grid, PCC) + blob(grid, MPFC)


def slow_signal(rng, n_t, tr_s=TR_S):
    """A unit-variance band-limited (0.01–0.06 Hz) neural time course."""
    s = bandpass(rng.standard_normal(n_t), tr_s, 0.01, 0.06, 4)
    return s / s.std()


def run_img(data, grid, tr_s=TR_S, unit="sec", order="F"):
    """A 4D float32 NIfTI on ``grid`` with the TR in the header (in ``unit``)."""
    arr = np.asarray(data, dtype=np.float32, order=order)
    img = nib.Nifti1Image(arr, grid.affine)
    scale = {"sec": 1.0, "msec": 1000.0}[unit]
    img.header.set_xyzt_units("mm", unit)
    img.header.set_zooms(tuple(np.abs(np.diag(grid.affine)[:3])) + (tr_s * scale,))
    return img


def planted_run(grid, rng, n_t=180, amplitude=8.0, noise=1.0, extra=None):
    """Baseline 1000 + network × slow signal + white noise (+ ``extra`` (X,Y,Z,T))."""
    data = (1000.0 + amplitude * network_map(grid)[..., None] * slow_signal(rng, n_t)
            + noise * rng.standard_normal(grid.shape + (n_t,)))
    return data if extra is None else data + extra


# --- signal ------------------------------------------------------------------------------

@pytest.mark.parametrize("freq_hz", [0.005, 0.03, 0.06, 0.2])
def test_bandpass_gain_matches_butterworth_response(freq_hz):
    """A sine comes out scaled by |H(f)|² (forward-backward), from scipy's frequency response."""
    tr, n_t = 0.8, 2000
    t = np.arange(n_t) * tr
    x = np.sin(2 * np.pi * freq_hz * t)
    y = bandpass(x, tr, 0.01, 0.1, order=2)
    sos = sp_signal.butter(2, [0.01, 0.1], btype="band", fs=1 / tr, output="sos")
    _, h = sp_signal.sosfreqz(sos, worN=[freq_hz], fs=1 / tr)
    core = slice(n_t // 4, 3 * n_t // 4)  # away from the padded edges
    gain = np.sqrt(2) * y[core].std()
    assert gain == pytest.approx(abs(h[0]) ** 2, abs=0.02)
    if freq_hz in (0.03, 0.06):
        assert gain > 0.8
    else:
        assert gain < 0.3


def test_bandpass_is_zero_phase_and_filters_last_axis():
    tr, n_t = 1.0, 600
    t = np.arange(n_t) * tr
    x = np.stack([np.sin(2 * np.pi * 0.04 * t), 5 + np.cos(2 * np.pi * 0.04 * t)])
    y = bandpass(x, tr, 0.01, 0.1)
    assert y.shape == x.shape
    core = slice(100, 500)
    # zero phase: the in-band sine keeps its peaks in place; the DC offset is removed
    assert np.corrcoef(y[0, core], x[0, core])[0, 1] > 0.99
    assert abs(y[1, core].mean()) < 0.05


def test_bandpass_rejects_bad_cutoffs_and_short_series():
    with pytest.raises(ValueError, match="Nyquist"):
        butterworth_sos(2.0, 0.01, 0.3)  # Nyquist is 0.25 Hz at TR 2 s
    with pytest.raises(ValueError, match="0 < low < high"):
        butterworth_sos(1.0, 0.1, 0.01)
    sos = butterworth_sos(1.0, 0.01, 0.1, 2)
    needed = min_timepoints(sos)
    assert needed == 16  # 2 sections → 5 taps → scipy pads 15 samples per end
    sp_signal.sosfiltfilt(sos, np.ones(needed))  # scipy's own limit agrees
    with pytest.raises(ValueError, match="padlen"):
        sp_signal.sosfiltfilt(sos, np.ones(needed - 1))
    bandpass(np.random.default_rng(0).standard_normal(needed), 1.0, 0.01, 0.1)
    with pytest.raises(InputError, match=f"at least {needed}"):
        bandpass(np.ones(needed - 1), 1.0, 0.01, 0.1)


@pytest.mark.parametrize("model", ["glover", "spm"])
def test_hrf_convolve_is_causal_convolution_with_nilearn_kernel(model):
    from nilearn.glm.first_level import glover_hrf, spm_hrf

    kernel = {"glover": glover_hrf, "spm": spm_hrf}[model](TR_S, oversampling=1)
    np.testing.assert_allclose(hrf_kernel(TR_S, model), kernel)
    x = np.random.default_rng(3).standard_normal(90)
    y = hrf_convolve(x, TR_S, model)
    np.testing.assert_allclose(y, np.convolve(x, kernel)[:90], atol=1e-12)
    impulse = np.zeros(90)
    impulse[10] = 1.0
    response = hrf_convolve(impulse, TR_S, model)
    assert np.all(response[:10] == 0)  # nothing before the event
    np.testing.assert_allclose(response[10:10 + kernel.size], kernel)
    with pytest.raises(ValueError, match="unknown HRF"):
        hrf_kernel(TR_S, "fir")


# --- seed -------------------------------------------------------------------------------

def test_sphere_mask_counts_lattice_points():
    grid = Grid(shape=(21, 21, 21), affine=np.diag([-2.0, 2.0, 2.0, 1.0]) + np.array(
        [[0, 0, 0, 20], [0, 0, 0, -20], [0, 0, 0, -20], [0, 0, 0, 0]]))
    sphere = sphere_mask(grid, (0, 0, 0), 8.0)
    # integer points with i² + j² + k² ≤ 16 (radius 4 voxels of 2 mm)
    r = np.arange(-4, 5)
    expected = int(((r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
                    <= 16).sum())
    assert sphere.sum() == expected == 257
    assert sphere[10, 10, 10]  # (0, 0, 0) mm is voxel (10, 10, 10) on this grid
    moved = sphere_mask(grid, (-4, 0, 0), 2.0)  # x runs +20 → −20 mm: −4 mm is i = 12
    assert moved[12, 10, 10] and moved.sum() == 7


def test_seed_region_in_mask_and_timeseries(mask_img, brain, grid):
    region = seed_region(mask_img, center_mm=PCC, radius_mm=8.0)
    assert region.any() and not (region & ~brain).any()
    assert region.sum() == (sphere_mask(grid, PCC, 8.0) & brain).sum()
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(seed_timeseries(data, [1, 3]), [2.0, 6.0, 10.0])
    np.testing.assert_allclose(seed_timeseries(data, np.array([True, False, False, False])),
                               [0.0, 4.0, 8.0])


# --- GLM --------------------------------------------------------------------------------

def test_ols_betas_match_nilearn_first_level_model(mask_img, brain, grid):
    """Effect sizes equal nilearn's OLS FirstLevelModel on the same design and data."""
    from nilearn.glm.first_level import FirstLevelModel

    rng = np.random.default_rng(1)
    n_t = 70
    regressor = hrf_convolve(slow_signal(rng, n_t), TR_S)
    confounds = rng.standard_normal((n_t, 3))
    beta_true = rng.standard_normal(grid.shape)
    data = (800 + beta_true[..., None] * regressor + 0.5 * rng.standard_normal(grid.shape + (n_t,)))
    img = run_img(data, grid)
    for conf in (None, confounds):
        X = seed_design(regressor, conf)
        names = ["seed", "constant"] + [f"c{k}" for k in range(X.shape[1] - 2)]
        model = FirstLevelModel(noise_model="ols", drift_model=None, signal_scaling=False,
                                minimize_memory=False, mask_img=mask_img)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(img, design_matrices=pd.DataFrame(X, columns=names))
            effect = model.compute_contrast("seed", output_type="effect_size")
        reference = effect.get_fdata()[brain]
        ours = ols_betas(np.asarray(img.dataobj)[brain].T, X)[0]
        assert np.abs(ours - reference).max() <= 1e-4 * np.ptp(reference)
    assert np.corrcoef(ours, beta_true[brain])[0, 1] > 0.95


def test_ols_blocks_equal_stacked_fit_and_chunks_do_not_matter():
    rng = np.random.default_rng(2)
    X1, X2 = seed_design(rng.standard_normal(30)), seed_design(rng.standard_normal(40))
    X = stack_run_designs([X1, X2])
    assert X.shape == (70, 3)  # shared regressor, one intercept per run
    np.testing.assert_array_equal(X[:30, 1], 1) and np.testing.assert_array_equal(X[30:, 1], 0)
    Y1 = rng.standard_normal((30, 50)).astype(np.float32)
    Y2 = rng.standard_normal((40, 50)).astype(np.float32)
    stacked = ols_betas(np.vstack([Y1, Y2]), X)
    lstsq = np.linalg.lstsq(X, np.vstack([Y1, Y2]).astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(stacked, lstsq, atol=1e-10)
    np.testing.assert_allclose(ols_betas_blocks([Y1, Y2], X, chunk_bytes=8 * 70 * 7), stacked,
                               atol=1e-12)
    with pytest.raises(ValueError, match="blocks"):
        ols_betas_blocks([Y1, Y2[:, :10]], X)


def test_zscore_in_mask():
    z = zscore_in_mask(np.array([1.0, 2.0, 3.0, 10.0]))
    assert z.mean() == pytest.approx(0, abs=1e-12) and z.std() == pytest.approx(1)
    with pytest.raises(ValueError, match="constant"):
        zscore_in_mask(np.full(5, 3.0))


# --- the stage ---------------------------------------------------------------------------

@pytest.mark.parametrize("combine", ["mean", "concat"])
def test_zmap_recovers_planted_network(mask_img, brain, grid, combine):
    rng = np.random.default_rng(4)
    runs = [run_img(planted_run(grid, rng), grid), run_img(planted_run(grid, rng, 150), grid)]
    zmap = pcc_seed_zmap(runs, mask_img, seed_center_mm=PCC, seed_radius_mm=8,
                         combine_runs=combine)
    z = np.asarray(zmap.dataobj)
    assert z.dtype == np.float32 and z.shape == grid.shape
    np.testing.assert_allclose(zmap.affine, grid.affine)
    assert np.all(z[~brain] == 0)
    assert z[brain].mean() == pytest.approx(0, abs=1e-5)
    assert z[brain].std() == pytest.approx(1, abs=1e-5)
    assert np.corrcoef(z[brain], network_map(grid)[brain])[0, 1] > 0.9


def test_zmap_same_for_any_memory_layout_and_tr_unit(mask_img, grid):
    rng = np.random.default_rng(5)
    data = planted_run(grid, rng, 120)
    z_f = pcc_seed_zmap([run_img(data, grid, order="F")], mask_img).get_fdata()
    z_c = pcc_seed_zmap([run_img(data, grid, order="C", unit="msec")], mask_img).get_fdata()
    np.testing.assert_allclose(z_f, z_c, atol=1e-6)


def test_confounds_remove_motion_artifact(mask_img, brain, grid):
    """An artifact correlated with the seed inflates z until its regressor enters the design."""
    rng = np.random.default_rng(6)
    n_t = 160
    motion = hrf_convolve(slow_signal(rng, n_t), TR_S) + 0.5 * rng.standard_normal(n_t)
    artifact_map = blob(grid, (40.0, -20.0, 40.0), 10.0)
    data = planted_run(grid, rng, n_t, extra=6.0 * artifact_map[..., None] * motion)
    img = run_img(data, grid)
    table = np.column_stack([motion, rng.standard_normal(n_t)])
    plain = pcc_seed_zmap([img], mask_img).get_fdata()
    cleaned = pcc_seed_zmap([img], mask_img, confounds=[table]).get_fdata()
    hot = artifact_map > 0.5
    truth = network_map(grid)[brain]
    assert np.abs(cleaned[hot]).mean() < 0.5 * np.abs(plain[hot]).mean()
    assert np.corrcoef(cleaned[brain], truth)[0, 1] > np.corrcoef(plain[brain], truth)[0, 1]


def test_seed_mask_overrides_sphere(mask_img, grid):
    rng = np.random.default_rng(7)
    img = run_img(planted_run(grid, rng, 100), grid)
    seed = nib.Nifti1Image(sphere_mask(grid, PCC, 8.0).astype(np.uint8), grid.affine)
    far_sphere = dict(seed_center_mm=(40.0, -80.0, 0.0), seed_radius_mm=6.0)
    via_mask = pcc_seed_zmap([img], mask_img, seed_mask_img=seed, **far_sphere).get_fdata()
    via_sphere = pcc_seed_zmap([img], mask_img).get_fdata()
    np.testing.assert_allclose(via_mask, via_sphere, atol=1e-6)


# --- TR ---------------------------------------------------------------------------------

def test_repetition_time_units_fallback_and_refusals(grid):
    data = np.zeros(grid.shape + (2,))
    assert repetition_time(run_img(data, grid, 1.333, "msec")) == pytest.approx(1.333)
    bare = nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4))  # unit unknown
    assert repetition_time(bare, fallback_s=2.0) == 2.0
    with pytest.raises(InputError, match="no TR"):
        repetition_time(bare)
    with pytest.raises(InputError, match="> 0"):
        repetition_time(run_img(data, grid, 0.0))
    with pytest.raises(InputError, match="disagree"):
        session_tr([run_img(data, grid, 1.5), run_img(data, grid, 2.0)])


# --- bad input ----------------------------------------------------------------------------

def _save(img, path):
    nib.save(img, path)
    return nib.load(path)


def test_bad_runs_are_refused_with_file_names(mask_img, grid, tmp_path):
    rng = np.random.default_rng(8)
    good = run_img(planted_run(grid, rng, 60), grid)
    other = mni_grid(8.0)
    wrong_shape = _save(run_img(np.zeros(other.shape + (60,)), other), tmp_path / "small.nii")
    with pytest.raises(InputError, match=r"small\.nii.*\(31, 37, 31\)"):
        pcc_seed_zmap([good, wrong_shape], mask_img)
    shifted = grid.affine.copy()
    shifted[0, 3] += 3
    moved = _save(nib.Nifti1Image(np.asarray(good.dataobj), shifted, good.header),
                  tmp_path / "moved.nii")
    with pytest.raises(InputError, match=r"moved\.nii: expected the affine"):
        pcc_seed_zmap([moved], mask_img)
    data = np.asarray(good.dataobj).copy()
    data[15, 15, 15, 3] = np.nan
    with pytest.raises(InputError, match=r"nan\.nii.*non-finite"):
        pcc_seed_zmap([_save(run_img(data, grid), tmp_path / "nan.nii")], mask_img)
    slow = _save(run_img(np.asarray(good.dataobj), grid, tr_s=2.0), tmp_path / "tr2.nii")
    with pytest.raises(InputError, match=r"tr2\.nii has 2 s"):
        pcc_seed_zmap([good, slow], mask_img)
    short = _save(run_img(np.asarray(good.dataobj)[..., :12], grid), tmp_path / "short.nii")
    with pytest.raises(InputError, match=r"short\.nii: 12 time points.*at least 16"):
        pcc_seed_zmap([short], mask_img)


def test_empty_or_flat_seed_is_refused(mask_img, grid, brain, tmp_path):
    rng = np.random.default_rng(9)
    img = run_img(planted_run(grid, rng, 60), grid)
    with pytest.raises(InputError, match=r"seed sphere.*no voxel inside the brain mask"):
        pcc_seed_zmap([img], mask_img, seed_center_mm=(0, 0, 150), seed_radius_mm=6)
    empty = _save(nib.Nifti1Image(np.zeros(grid.shape, np.uint8), grid.affine),
                  tmp_path / "seed.nii")
    with pytest.raises(InputError, match=r"seed mask .*seed\.nii.*no voxel inside"):
        pcc_seed_zmap([img], mask_img, seed_mask_img=empty)
    data = np.asarray(img.dataobj).copy()
    data[seed_region(mask_img, center_mm=PCC, radius_mm=8.0)] = 7.0
    with pytest.raises(InputError, match="zero variance"):
        pcc_seed_zmap([run_img(data, grid)], mask_img)


# --- CLI ----------------------------------------------------------------------------------

def test_cli_writes_zmap_and_qc(mask_img, grid, tmp_path, capsys):
    rng = np.random.default_rng(10)
    runs = [run_img(planted_run(grid, rng, 90), grid) for _ in range(2)]
    paths = []
    for k, img in enumerate(runs):
        paths.append(tmp_path / f"run{k}.nii.gz")
        nib.save(img, paths[-1])
    nib.save(mask_img, tmp_path / "mask.nii.gz")
    motion = []
    for k in range(2):
        motion.append(tmp_path / f"motion{k}.tsv")
        np.savetxt(motion[-1], rng.standard_normal((90, 6)) * 0.1, delimiter="\t")
    out, qc = tmp_path / "out" / "zmap.nii.gz", tmp_path / "out" / "qc.png"
    argv = ["--runs", *map(str, paths), "--mask", str(tmp_path / "mask.nii.gz"),
            "--confounds", *map(str, motion), "--out", str(out), "--qc", str(qc)]
    assert main(argv) == 0
    from rest2visual.config import defaults

    rest = defaults("rest")  # the CLI's defaults are the config schema's
    expected = pcc_seed_zmap(runs, mask_img, confounds=[np.loadtxt(m) for m in motion],
                             hrf_model=rest["hrf_model"], units=rest["units"])
    np.testing.assert_allclose(nib.load(out).get_fdata(), expected.get_fdata(), atol=1e-6)
    assert qc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["qc.png", "zmap.json", "zmap.nii.gz"]

    np.savetxt(motion[1], np.zeros((80, 6)))
    bad = tmp_path / "out" / "bad.nii.gz"
    assert main(argv[:-4] + ["--out", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "motion1.tsv" in err and "expected 90 rows" in err
    assert not bad.exists()


def test_zero_lag_recipe_recovers_a_zero_lag_network(mask_img, brain, grid):
    """Nodes sharing one zero-lag course: hrf none recovers the map; the lagged HRF
    regressor of the paper's recipe is a worse (here: printed, not asserted) estimate."""
    rng = np.random.default_rng(11)
    z_none = np.asarray(pcc_seed_zmap([run_img(planted_run(grid, rng), grid)], mask_img,
                                      seed_center_mm=PCC, hrf_model="none").dataobj)
    truth = network_map(grid)[brain]
    assert np.corrcoef(z_none[brain], truth)[0, 1] > 0.9


def test_psc_units_remove_intensity_scaling(mask_img, brain, grid):
    """A voxel-wise intensity gain (coil sensitivity) scales raw β, not psc β."""
    rng = np.random.default_rng(12)
    data = planted_run(grid, rng)
    gain = np.linspace(0.5, 1.5, grid.shape[0])[:, None, None, None]
    maps = {}
    for units in ("raw", "psc"):
        plain = pcc_seed_zmap([run_img(data, grid)], mask_img, seed_center_mm=PCC,
                              hrf_model="none", units=units)
        scaled = pcc_seed_zmap([run_img(data * gain, grid)], mask_img, seed_center_mm=PCC,
                               hrf_model="none", units=units)
        maps[units] = np.corrcoef(np.asarray(plain.dataobj)[brain],
                                  np.asarray(scaled.dataobj)[brain])[0, 1]
    assert maps["psc"] > 0.999 > maps["raw"]
