"""The simulated NSD: NSD's keys and formats, consistent truth, and the science it encodes."""

from __future__ import annotations

import hashlib
import json

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from rest2visual.checks import InputError
from rest2visual.nsd import keys
from rest2visual.nsd.design import load_expdesign, trial_table
from rest2visual.nsd.simulate import simulate_nsd, truth, writer
from rest2visual.nsd.simulate.cli import main as cli_main
from rest2visual.nsd.simulate.stimuli import FEATURES, image_features, standardized_features
from rest2visual.preprocess.rest_map import repetition_time
from rest2visual.preprocess.template import mni_brain_mask, mni_grid

SIM = dict(subjects=(1, 2), sessions=(21, 22), trials_per_session=24, voxel_mm=4.0, volumes=64,
           n_images=60, n_shared=12, mni_resolution_mm=4.0, seed=0)
SIM_TR = 1.33318  # simulate_nsd's default TR, s
#: a very small NSD for determinism, atomicity and CLI tests
TINY = dict(subjects=(3,), sessions=(21,), trials_per_session=6, voxel_mm=6.0, volumes=20,
            n_images=10, n_shared=3, mni_resolution_mm=6.0)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_nsd(tmp_path_factory.mktemp("simnsd") / "sim", **SIM)


def _data(path):
    return np.asarray(nib.load(str(path)).dataobj)


def _mni_index(affine, coords_mm):
    """Continuous voxel indices (3, N) of MNI mm points (N, 3) on a grid with ``affine``."""
    return np.linalg.solve(affine, np.c_[coords_mm, np.ones(len(coords_mm))].T)[:3]


def _native(sim, subject):
    """(liberal mask, true MNI mm of the in-mask voxels)."""
    mask = _data(sim.nsd_root / keys.brainmask_key(subject)) > 0
    return mask, truth.native_to_mni_mm(sim.truth_root, subject)[mask]


# --- NSD's keys, formats and header quirks ---------------------------------------

def test_every_key_the_pipeline_needs_exists(sim):
    config = {"nsd": {"subjects": list(SIM["subjects"]), "sessions": list(SIM["sessions"]),
                      "space": "func1pt8mm", "beta_version": "betas_fithrf_GLMdenoise_RR"},
              "registration": {"method": "nsd"}, "rest": {"confounds": "motion"}}
    missing = [k.key for k in keys.needed_keys(config) if not (sim.nsd_root / k.key).is_file()]
    assert not missing
    # and the workflow's (the decoding bridge reads NSD's MNI → func map with method nsd)
    from rest2visual.nsd.check import workflow_keys

    bridge = [k for k in workflow_keys(config) if k.kind == "mni_to_func"]
    assert len(bridge) == len(SIM["subjects"])
    assert all((sim.nsd_root / k.key).is_file() for k in bridge)
    assert (sim.nsd_root / keys.nsdgeneral_key(1)).is_file()


def test_native_volumes_have_nsd_dtypes_and_simple_headers(sim):
    for s in SIM["subjects"]:
        t1 = nib.load(str(sim.nsd_root / keys.anatomy_key(s)))
        shape = t1.shape
        assert t1.get_data_dtype() == np.int16 and len(shape) == 3
        # NSD's quirk: voxel size on the diagonal, origin at the grid centre
        assert np.allclose(t1.affine[:3, :3], np.eye(3) * SIM["voxel_mm"])
        assert np.allclose(t1.affine @ np.r_[(np.array(shape) - 1) / 2, 1], [0, 0, 0, 1])
        mask = nib.load(str(sim.nsd_root / keys.brainmask_key(s)))
        assert mask.shape == shape and set(np.unique(mask.dataobj)) == {0, 1}
        general = _data(sim.nsd_root / keys.nsdgeneral_key(s))
        assert set(np.unique(general)) == {-1, 0, 1}
        ncsnr = nib.load(str(sim.nsd_root / keys.ncsnr_key(s)))
        assert ncsnr.get_data_dtype() == np.float32 and ncsnr.shape == shape
        # NSD (export_noiseceiling.m): NaN at invalid voxels, i.e. outside the brain mask
        inside = np.asarray(mask.dataobj) > 0
        values = np.asarray(ncsnr.dataobj)
        assert np.isnan(values[~inside]).all() and np.isfinite(values[inside]).all()
        for ses in SIM["sessions"]:
            betas = nib.load(str(sim.nsd_root / keys.betas_key(s, ses)))
            assert betas.get_data_dtype() == np.int16
            assert betas.shape == (*shape, SIM["trials_per_session"])
            assert np.allclose(betas.affine, t1.affine)


def test_betas_are_truth_sampled_scaled_and_masked(sim):
    s, ses = 2, 22
    betas = _data(sim.nsd_root / keys.betas_key(s, ses))
    mask, xyz = _native(sim, s)
    assert not betas[~mask].any()  # 0 outside the liberal brain mask, as in NSD
    true = truth.true_mni_betas(sim.truth_root, s, ses)
    grid = truth.truth_grid(truth.load_params(sim.truth_root))
    assert true.shape == (*grid.shape, SIM["trials_per_session"]) and true.dtype == np.float32
    idx = _mni_index(grid.affine, xyz)
    sampled = np.stack([ndimage.map_coordinates(true[..., t], idx, order=1, mode="nearest")
                        for t in range(true.shape[-1])], axis=1)
    # NSD stores percent signal change × 300 as int16: off by at most half a step
    assert np.abs(betas[mask] / 300.0 - sampled).max() <= 0.5 / 300 + 1e-4


def test_rest_runs_have_nsd_time_header_and_motion_tsv(sim):
    for run in keys.REST_RUNS:
        img = nib.load(str(sim.nsd_root / keys.rest_key(1, 21, run)))
        assert img.get_data_dtype() == np.int16 and img.shape[3] == SIM["volumes"]
        # NSD: xyzt_units = 0 (unknown) and pixdim[4] = 4/3, though the true TR is 1.33318 s
        assert img.header["xyzt_units"] == 0
        assert img.header["pixdim"][4] == np.float32(4 / 3)
        assert truth.load_params(sim.truth_root)["tr_s"] == pytest.approx(1.33318)
        # the code path real NSD files take: unknown unit → the space's configured TR, logged
        lines = []
        assert repetition_time(img, fallback_s=1.33318, source="run", log=lines.append) == 1.33318
        assert "xyzt_units = 0, time code 0" in lines[0] and "pixdim[4] = 1.33333" in lines[0]
        with pytest.raises(InputError, match="no TR"):
            repetition_time(img)
        data = np.asarray(img.dataobj)
        mask = _data(sim.nsd_root / keys.brainmask_key(1)) > 0
        assert not data[~mask].any() and 500 < data[mask].mean() < 1500
        motion_path = sim.nsd_root / keys.motion_key(1, 21, run)
        assert not motion_path.read_text().splitlines()[0][0].isalpha()  # no header row
        motion = pd.read_csv(motion_path, sep="\t", header=None)
        assert motion.shape == (SIM["volumes"], 6)
        assert motion.iloc[:, :3].abs().max().max() < 3.0  # mm
        assert motion.iloc[:, 3:].abs().max().max() < 0.05  # rad


def test_imgbrick_and_features_from_pixels(sim):
    with h5py.File(sim.nsd_root / keys.STIMULI, "r") as f:
        brick = f["imgBrick"]
        assert brick.shape == (SIM["n_images"], 425, 425, 3) and brick.dtype == np.uint8
        assert brick.chunks == (1, 425, 425, 3)
        first, other = brick[0], brick[7]
    assert not np.array_equal(first, other) and first.std() > 0
    table = truth.image_features(sim.truth_root)
    for i, img in ((0, first), (7, other)):
        assert table.loc[i, list(FEATURES)].to_numpy(float) == pytest.approx(
            list(image_features(img).values()))


# --- design ----------------------------------------------------------------------

def test_design_reads_back_with_nsd_conventions(sim):
    from scipy.io import loadmat

    raw = loadmat(str(sim.nsd_root / keys.EXPDESIGN))
    # NSD's layout, as stored in nsd_expdesign.mat (MATLAB doubles, row vectors)
    assert raw["masterordering"].shape == (1, 30000) and raw["masterordering"].dtype == np.float64
    assert raw["subjectim"].shape == (8, 10000) and raw["subjectim"].dtype == np.float64
    assert raw["sharedix"].shape == (1, 1000) and raw["sharedix"].dtype == np.float64
    d = load_expdesign(sim.nsd_root / keys.EXPDESIGN)
    assert d.masterordering.min() == 1 and d.masterordering.max() <= 10000
    assert d.subjectim.max() <= 73000
    assert (np.diff(d.sharedix) > 0).all()
    # every simulated trial (the first T of each session) shows an image imgBrick holds
    for s in SIM["subjects"]:
        for ses in SIM["sessions"]:
            ids = trial_table(d, s, ses, SIM["trials_per_session"])["nsd_id"]
            assert ids.max() < SIM["n_images"]


def test_nsd_formula_matches_what_the_generator_showed(sim):
    d = load_expdesign(sim.nsd_root / keys.EXPDESIGN)
    for s in SIM["subjects"]:
        for ses in SIM["sessions"]:
            table = trial_table(d, s, ses, SIM["trials_per_session"])
            record = truth.trial_record(sim.truth_root, s, ses)
            for col in ("trial", "nsd_id", "shared", "repeat"):
                assert table[col].tolist() == record[col].tolist(), col


def test_stim_info_table_agrees_with_design(sim):
    info = pd.read_csv(sim.nsd_root / keys.STIM_INFO, index_col=0)
    expected = {"cocoId", "cocoSplit", "nsdId", "shared1000",
                *(f"subject{s}" for s in range(1, 9)),
                *(f"subject{s}_rep{r}" for s in range(1, 9) for r in range(3))}
    assert expected <= set(info.columns) and len(info) == SIM["n_images"]
    d = load_expdesign(sim.nsd_root / keys.EXPDESIGN)
    held = d.sharedix[d.sharedix <= SIM["n_images"]]  # the shared images imgBrick holds
    assert sorted(info.loc[info["shared1000"], "nsdId"] + 1) == held.tolist()
    assert held.size == SIM["n_shared"]
    table = trial_table(d, 1, 21, SIM["trials_per_session"])
    k0 = 20 * 750  # NSD's stride: session 21 starts at experiment trial 15001
    for row in table.itertuples():
        if row.repeat < 3:  # NSD's table lists the first three showings
            assert info.loc[row.nsd_id, f"subject1_rep{row.repeat}"] == k0 + row.trial


# --- geometry ----------------------------------------------------------------------

def test_nsd_coordinate_map_matches_true_coords(sim):
    from rest2visual.preprocess.nsd_transform import FSL_1MM_AFFINE

    params = truth.load_params(sim.truth_root)
    for s in SIM["subjects"]:
        img = nib.load(str(sim.nsd_root / keys.func_to_mni_key(s)))
        # NSD's file: FSL's 1 mm grid in the array, a plain centred header (no flip)
        assert img.shape == (182, 218, 182, 3) and img.get_data_dtype() == np.float32
        assert np.allclose(img.affine, [[1, 0, 0, -90.5], [0, 1, 0, -108.5], [0, 0, 1, -90.5],
                                        [0, 0, 0, 1]])
        assert img.header["xyzt_units"] == 0
        cmap = np.asarray(img.dataobj)
        # the truth grid's voxels sit on the 1 mm grid: compare there
        grid = mni_grid(SIM["mni_resolution_mm"])
        ijk = np.rint(voxel_index(FSL_1MM_AFFINE, grid)).astype(int)
        cmap = cmap[ijk[..., 0], ijk[..., 1], ijk[..., 2]]
        coords = truth.mni_to_native_coords(sim.truth_root, s)
        shape = params["per_subject"][str(s)]["shape"]
        inside = np.all((coords >= 0) & (coords <= np.array(shape) - 1), axis=-1)
        assert np.allclose(cmap[inside], coords[inside] + 1, atol=1e-3)  # 1-based
        assert (cmap[~inside] == 9999).all()
        brain = np.asarray(mni_brain_mask(SIM["mni_resolution_mm"]).dataobj) > 0
        assert inside[brain].mean() > 0.95  # the native field of view holds the brain


def test_nsd_mni_to_func_map_inverts_the_forward_map(sim):
    """NSD's MNI → func map (``MNI-to-func1pt8``) as NSD writes it: on the native grid with
    the native header, float32, X×Y×Z×3 of 1-based FSL 1 mm coordinates (9999 where
    undefined); composed with the func → MNI map it returns each native voxel (within one
    native voxel), and it is the truth's native → MNI mapping."""
    from rest2visual.preprocess.nsd_transform import FSL_1MM_AFFINE, FSL_1MM_SHAPE

    for s in SIM["subjects"]:
        img = nib.load(str(sim.nsd_root / keys.mni_to_func_key(s)))
        anat = nib.load(str(sim.nsd_root / keys.anatomy_key(s)))
        assert img.shape == anat.shape + (3,) and img.get_data_dtype() == np.float32
        assert np.allclose(img.affine, anat.affine) and img.header["xyzt_units"] == 0
        inv = np.asarray(img.dataobj)
        valid = np.all(inv != 9999, axis=-1)
        assert (inv[~valid] == 9999).all() and valid.mean() > 0.99
        fsl = inv[valid] - 1.0  # 0-based FSL 1 mm voxel index of each native voxel
        assert (fsl >= 0).all() and (fsl <= np.array(FSL_1MM_SHAPE) - 1).all()
        # the truth: each native voxel's true MNI position
        mm = truth.native_to_mni_mm(sim.truth_root, s)[valid]
        assert np.allclose(fsl @ FSL_1MM_AFFINE[:3, :3].T + FSL_1MM_AFFINE[:3, 3], mm, atol=1e-3)
        # composed with the forward map (trilinear, nsdcode's 'linear'): back to the voxel
        # (9999 → NaN first, as nsdcode does: a neighbour without a source gives none)
        fwd = np.asarray(nib.load(str(sim.nsd_root / keys.func_to_mni_key(s))).dataobj)
        fwd = np.where(fwd == 9999, np.float32(np.nan), fwd)
        back = np.stack([ndimage.map_coordinates(fwd[..., a], fsl.T, order=1, mode="nearest")
                         for a in range(3)], axis=1)
        ok = np.all(np.isfinite(back), axis=1)
        native = np.argwhere(valid)
        # every voxel but the outermost layer of the field of view (whose MNI neighbours
        # partly lie outside it, where the forward map has no source) comes back
        interior = np.all((native >= 1) & (native <= np.array(inv.shape[:3]) - 2), axis=1)
        assert ok[interior].all()
        err = np.linalg.norm(back[ok] - 1.0 - native[ok], axis=1)  # native voxels
        assert np.median(err) < 0.1 and err.max() < 1.0, (np.median(err), err.max())


def voxel_index(affine, grid):
    """Continuous voxel index under ``affine`` of every voxel centre of ``grid``: (X, Y, Z, 3)."""
    inv = np.linalg.inv(affine)
    ijk = np.indices(grid.shape).transpose(1, 2, 3, 0).astype(float)
    mm = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    return mm @ inv[:3, :3].T + inv[:3, 3]


def test_true_maps_are_mutual_inverses(sim):
    grid = mni_grid(SIM["mni_resolution_mm"])
    brain = np.asarray(mni_brain_mask(SIM["mni_resolution_mm"]).dataobj) > 0
    for s in SIM["subjects"]:
        coords = truth.mni_to_native_coords(sim.truth_root, s)[brain]
        to_mni = truth.native_to_mni_mm(sim.truth_root, s)
        mm = np.stack([ndimage.map_coordinates(to_mni[..., a], coords.T, order=1, mode="nearest")
                       for a in range(3)], axis=1)
        expected = np.argwhere(brain) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
        err = np.linalg.norm(mm - expected, axis=1)
        assert np.median(err) < 0.2 and np.percentile(err, 95) < 1.0
        # ... and the mapping is not the header's: the native header alone is cm off
        header = nib.load(str(sim.nsd_root / keys.anatomy_key(s))).affine
        naive = np.argwhere(np.ones(to_mni.shape[:3], bool)) @ header[:3, :3].T + header[:3, 3]
        assert np.median(np.linalg.norm(naive - to_mni.reshape(-1, 3), axis=1)) > 5.0


def test_native_anatomy_resampled_back_matches_template(sim):
    from nilearn import datasets

    grid = mni_grid(SIM["mni_resolution_mm"])
    brain = np.asarray(mni_brain_mask(SIM["mni_resolution_mm"]).dataobj) > 0
    t1 = datasets.load_mni152_template(resolution=1)
    # the template at the resolution both interpolations leave (σ ≈ one native voxel)
    blurred = ndimage.gaussian_filter(t1.get_fdata(), 0.6 * SIM["voxel_mm"])
    xyz = np.argwhere(np.ones(grid.shape, bool)) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    template = ndimage.map_coordinates(blurred, _mni_index(t1.affine, xyz), order=1)
    template = template.reshape(grid.shape)
    for s in SIM["subjects"]:
        anat = _data(sim.nsd_root / keys.anatomy_key(s)).astype(float)
        coords = truth.mni_to_native_coords(sim.truth_root, s)
        inside = brain & np.all((coords >= 0) & (coords <= np.array(anat.shape) - 1), axis=-1)
        back = ndimage.map_coordinates(anat, np.moveaxis(coords, -1, 0), order=1)
        assert np.corrcoef(back[inside], template[inside])[0, 1] > 0.9
        # negative control: trusting the native header instead of the true mapping fails
        header = nib.load(str(sim.nsd_root / keys.anatomy_key(s))).affine
        naive = _mni_index(header, xyz).T.reshape(*grid.shape, 3)
        wrong = ndimage.map_coordinates(anat, np.moveaxis(naive, -1, 0), order=1)
        assert np.corrcoef(wrong[inside], template[inside])[0, 1] < 0.8


# --- the science ---------------------------------------------------------------------

def _node_series(sim, subject, run, centre_mm, radius_mm=6.0):
    """Mean native series (detrended) of the voxels within ``radius_mm`` of an MNI point."""
    mask, xyz = _native(sim, subject)
    near = np.linalg.norm(xyz - centre_mm, axis=1) < radius_mm
    assert near.sum() >= 3
    series = _data(sim.nsd_root / keys.rest_key(subject, 21, run))[mask][near].mean(0)
    t = np.arange(series.size)
    return series - np.polyval(np.polyfit(t, series, 2), t)


def test_dmn_nodes_share_a_zero_lag_course(sim):
    """zero_lag (the default): the PCC node and the rest of the DMN (here mPFC) carry one
    shared course plus their own (ν = 0.3 of the variance): corr ≈ 0.7 at zero lag, and a
    node's series follows the seed at zero lag, not through the HRF."""
    from rest2visual.nsd.simulate.networks import NODE_NOISE_VAR
    from rest2visual.preprocess.signal import hrf_convolve

    params = truth.load_params(sim.truth_root)
    assert params["dmn_coupling"] == "zero_lag" and params["networks"]["coupling"] == "zero_lag"
    assert params["networks"]["names"][:2] == ["pcc", "dmn"]
    for s in SIM["subjects"]:
        dmn = params["per_subject"][str(s)]["networks"]["dmn"]
        pcc, mpfc = dmn[0]["centre_mm"], dmn[1]["centre_mm"]
        for run in keys.REST_RUNS:
            courses = truth.timecourses(sim.truth_root, s, 21, run)
            p, d = courses["pcc"].to_numpy(), courses["dmn"].to_numpy()
            assert abs(np.corrcoef(p, d)[0, 1] - (1 - NODE_NOISE_VAR)) < 0.25
            seed = _node_series(sim, s, run, pcc)
            assert np.corrcoef(seed, p)[0, 1] > 0.7
            assert abs(np.corrcoef(seed, courses["sensorimotor"])[0, 1]) < 0.5
            front = _node_series(sim, s, run, mpfc)
            # the node follows its own course (shared + node fluctuation) more than the PCC's
            assert np.corrcoef(front, d)[0, 1] > max(0.6, np.corrcoef(front, p)[0, 1])
            assert np.corrcoef(front, seed)[0, 1] > np.corrcoef(front, hrf_convolve(seed, SIM_TR))[0, 1]


def test_hrf_driven_coupling_is_the_pcc_through_the_hrf(tmp_path):
    """hrf_driven (the paper's assumption): the rest of the DMN carries h ∗ p, and the true
    seed map is that driven part only."""
    from rest2visual.nsd.simulate import networks
    from rest2visual.preprocess.signal import hrf_convolve

    rng = np.random.default_rng(3)
    p, d = networks.network_courses(rng, ("pcc", "dmn"), 400, SIM_TR, "hrf_driven")
    assert np.corrcoef(hrf_convolve(p, SIM_TR)[40:], d[40:])[0, 1] > 0.95
    with pytest.raises(ValueError, match="coupling"):
        networks.network_courses(rng, ("pcc", "dmn"), 40, SIM_TR, "lagged")
    sim = simulate_nsd(tmp_path / "sim", **TINY, dmn_coupling="hrf_driven")
    params = truth.load_params(sim.truth_root)
    assert params["dmn_coupling"] == "hrf_driven"
    maps = truth.network_maps(sim.truth_root, 3)
    assert np.array_equal(maps["dmn"], truth.dmn_map(sim.truth_root, 3).get_fdata(dtype=np.float32))
    with pytest.raises(ValueError, match="dmn_coupling"):
        simulate_nsd(tmp_path / "bad", **TINY, dmn_coupling="lagged")


def test_rest_seed_map_reveals_the_gain_topography(sim):
    """The mechanism that makes rest informative: PCC connectivity in visual cortex ∝ −h_s."""
    params = truth.load_params(sim.truth_root)
    atlas = truth.roi_atlas(sim.truth_root)
    for s in SIM["subjects"]:
        mask, xyz = _native(sim, s)
        series = _data(sim.nsd_root / keys.rest_key(s, 22, 1))[mask].astype(float)
        series -= series.mean(1, keepdims=True)
        pcc = params["per_subject"][str(s)]["networks"]["dmn"][0]["centre_mm"]
        # zero-lag seed correlation (the DMN's nodes share the seed's course)
        seed = series[np.linalg.norm(xyz - pcc, axis=1) < 6.0].mean(0)
        seed -= seed.mean()
        r = series @ seed / (np.linalg.norm(series, axis=1) * np.linalg.norm(seed) + 1e-9)
        gain = truth.gain_map(sim.truth_root, s)
        g = ndimage.map_coordinates(gain.get_fdata(), _mni_index(gain.affine, xyz), order=1)
        visual = ndimage.map_coordinates(np.asarray(atlas.dataobj), _mni_index(atlas.affine, xyz),
                                         order=0) > 0
        assert visual.sum() > 50
        assert np.corrcoef(r[visual], g[visual])[0, 1] < -0.5
    # and the topography is the subject's own
    g1, g2 = (truth.gain_map(sim.truth_root, s).get_fdata() for s in SIM["subjects"])
    roi = np.asarray(atlas.dataobj) > 0
    assert abs(np.corrcoef(g1[roi], g2[roi])[0, 1]) < 0.5


def test_contralateral_retinotopy_in_early_visual_cortex(sim):
    s, ses = 1, 21
    betas = truth.true_mni_betas(sim.truth_root, s, ses)
    atlas = truth.roi_atlas(sim.truth_root)
    labels = np.asarray(atlas.dataobj)
    x = atlas.affine[0, 0] * np.indices(labels.shape)[0] + atlas.affine[0, 3]  # MNI x, mm
    shown = truth.trial_record(sim.truth_root, s, ses)["nsd_id"]
    model = truth.response_model(sim.truth_root, s)
    phi = standardized_features(truth.image_features(sim.truth_root))[shown.to_numpy()]
    signal = np.stack([model.signal(row) for row in phi], axis=-1)
    # the betas are the model's signal plus trial noise of ~1 % in the brain
    brain = np.asarray(truth.mni_brain_mask(sim.truth_root).dataobj) > 0
    assert 0.8 < (betas - signal)[brain].std() < 1.2
    # the response model itself (noise-free: 24 trials of spatially broad noise would
    # blur the ROI-mean regression) puts each visual field in the opposite hemisphere
    betas = signal
    feats = truth.image_features(sim.truth_root).set_index("nsd_id").loc[shown, list(FEATURES)]
    design = np.c_[np.ones(len(feats)), (feats - feats.mean()) / feats.std()]
    early = (labels >= 1) & (labels <= 3)
    left = [1 + FEATURES.index(f) for f in ("energy_upper_left", "energy_lower_left")]
    right = [1 + FEATURES.index(f) for f in ("energy_upper_right", "energy_lower_right")]
    # MNI x > 0 is the right hemisphere, which sees the left visual field
    for hemi, contra, ipsi in ((x > 4, left, right), (x < -4, right, left)):
        coef = np.linalg.lstsq(design, betas[early & hemi].mean(0), rcond=None)[0]
        assert coef[contra].sum() > 0.2 and coef[contra].sum() > 3 * abs(coef[ipsi].sum())


def test_ncsnr_is_high_in_visual_cortex_only(sim):
    atlas = truth.roi_atlas(sim.truth_root)
    for s in SIM["subjects"]:
        mask, xyz = _native(sim, s)
        ncsnr = _data(sim.nsd_root / keys.ncsnr_key(s))[mask]
        visual = ndimage.map_coordinates(np.asarray(atlas.dataobj), _mni_index(atlas.affine, xyz),
                                         order=0) > 0
        assert ncsnr[visual].mean() > 0.3 > 10 * ncsnr[~visual].mean()


def test_roi_atlas_and_truth_files(sim):
    atlas = truth.roi_atlas(sim.truth_root)
    labels = np.asarray(atlas.dataobj)
    brain = np.asarray(mni_brain_mask(SIM["mni_resolution_mm"]).dataobj) > 0
    assert atlas.get_data_dtype() == np.int16 and set(np.unique(labels)) == set(range(6))
    assert not labels[~brain].any()
    names = pd.read_csv(sim.truth_root / truth.ROI_LABELS, sep="\t")
    assert names["name"].tolist() == ["V1", "V2", "V3", "V4", "V5"]
    params = truth.load_params(sim.truth_root)
    assert params["complete"] and params["seed"] == 0
    assert np.asarray(params["per_subject"]["1"]["linear_mm"]).shape == (4, 4)
    maps = truth.network_maps(sim.truth_root, 1)
    assert list(maps) == ["pcc", "dmn", "visual", "sensorimotor", "frontoparietal"]
    # zero_lag (the default): the true seed map is the whole DMN, the PCC node included
    assert params["dmn_coupling"] == "zero_lag"
    assert np.array_equal(maps["dmn"] + maps["pcc"],
                          truth.dmn_map(sim.truth_root, 1).get_fdata(dtype=np.float32))


def test_truth_readers_fail_clearly(sim, tmp_path):
    with pytest.raises(InputError, match="params.json"):
        truth.load_params(tmp_path)
    with pytest.raises(InputError, match="session 30"):
        truth.true_mni_betas(sim.truth_root, 1, 30)


# --- determinism, atomic writing, CLI -----------------------------------------------

def _digest(root, key):
    return hashlib.sha256((root / key).read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = simulate_nsd(tmp_path / "a", seed=5, **TINY)
    b = simulate_nsd(tmp_path / "b", seed=5, **TINY)
    c = simulate_nsd(tmp_path / "c", seed=6, **TINY)
    files = [keys.betas_key(3, 21), keys.rest_key(3, 21, 1), keys.EXPDESIGN, keys.STIMULI,
             keys.anatomy_key(3), keys.STIM_INFO]
    for key in files:
        assert _digest(a.nsd_root, key) == _digest(b.nsd_root, key), key
    for key in files:
        assert _digest(a.nsd_root, key) != _digest(c.nsd_root, key), key
    params = [(sim.truth_root / "params.json").read_bytes() for sim in (a, b)]
    assert params[0] == params[1]


def test_existing_output_refused_but_empty_folders_accepted(tmp_path):
    root = tmp_path / "out"
    (root / "nsd" / "nsddata").mkdir(parents=True)  # as Snakemake pre-creates output folders
    sim = simulate_nsd(root, **TINY)
    assert json.loads((sim.truth_root / "params.json").read_text())["complete"]
    with pytest.raises(FileExistsError, match="already exists"):
        simulate_nsd(root, **TINY)


def test_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "_write_rest_run", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        simulate_nsd(tmp_path / "out", **TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [dict(subjects=(9,)), dict(sessions=(41,)),
                                 dict(n_shared=10), dict(trials_per_session=0)])
def test_bad_arguments_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        simulate_nsd(tmp_path / "out", **{**TINY, **bad})
    assert not (tmp_path / "out").exists()


def test_cli_writes_and_reports_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [str(out), "--subjects", "4", "--sessions", "22", "--trials", "5", "--voxel-mm", "6",
            "--volumes", "20", "--images", "8", "--shared", "2", "--mni-mm", "6", "--seed", "1"]
    assert cli_main(args) == 0
    assert (out / "nsd" / keys.betas_key(4, 22)).is_file()
    params = truth.load_params(out / "truth")
    assert params["subjects"] == [4] and params["sessions"] == [22] and params["seed"] == 1
    assert cli_main(args) == 1  # OUT exists
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("n_images, disjoint", [(3000, True), (1000, False)])
def test_design_keeps_nsd_repeat_structure_when_the_pool_allows(n_images, disjoint):
    from rest2visual.nsd.simulate.design import make_design, showing_number

    d = make_design(n_images=n_images, n_shared=40, trials_per_session=30, seed=3)
    assert d.showings_per_image == 3 and d.disjoint_subject_images == disjoint
    assert d.subjectim.shape == (8, 10000) and d.masterordering.shape == (30000,)
    assert d.compact_list_length == 400  # ⌈40 · 30 / 3⌉ images per subject
    assert (d.subjectim[:, :1000] == d.subjectim[0, :1000]).all()
    assert np.bincount(d.masterordering).max() == 3  # each list entry ≤ 3 times, as in NSD
    held = d.subjectim[:, :40], d.subjectim[:, 1000:1360]  # the subset's images (1-based)
    assert held[0].max() <= n_images and held[1].max() <= n_images
    if disjoint:
        assert np.unique(held[1]).size == held[1].size
    assert np.unique(d.subjectim[0]).size == 10000
    simulated = np.concatenate([np.arange(30) + 750 * s for s in range(40)])
    ids = d.shown(1)[simulated]
    assert ids.max() < n_images and showing_number(ids).max() == 2
    assert len(set(ids)) == 400


def test_forty_trial_sessions_in_nsd_layout_map_to_the_recorded_images(tmp_path):
    """A simulated session of 40 trials is the first 40 trials of that NSD session."""
    from rest2visual.nsd.simulate.design import make_design, write_expdesign

    exp = make_design(n_images=200, n_shared=40, trials_per_session=40, seed=5)
    write_expdesign(exp, tmp_path / "nsd_expdesign.mat")
    d = load_expdesign(tmp_path / "nsd_expdesign.mat")
    assert d.masterordering.shape == (30000,) and d.subjectim.shape == (8, 10000)
    for subject in (1, 4, 8):
        for session in (1, 21, 30, 40):
            table = trial_table(d, subject, session, 40)
            record = exp.session_record(subject, session)
            assert table["nsd_id"].tolist() == record["nsd_id"].tolist()
            assert table["shared"].tolist() == record["shared"].tolist()
            assert table["repeat"].tolist() == record["repeat"].tolist()
            assert (table["nsd_id"] < 200).all()  # images the simulated imgBrick holds
            # trials 41..750 of the session show images outside the simulated subset
            assert (trial_table(d, subject, session)["nsd_id"][40:] >= 200).all()
