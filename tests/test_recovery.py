"""The real preprocessing pipeline recovers the simulated NSD's ground truth.

On the toy simulated NSD (conftest's ``toy_nsd``: 4 mm native, 4 mm MNI, 80 volumes per
rest run) this runs what the workflow's rules run — ANTs registration of each subject's
anatomy with config/config.yaml's ``registration`` settings, the composed-field
resampler, rest runs to MNI, the PCC seed z-map with the config's ``rest`` settings, and
the evoked stage — and compares every output with the generator's truth, for every
subject and session:

- registration: the MNI → native mapping (each MNI voxel's native source point) is
  within one target voxel of the true one, on average over the MNI brain mask
  (displacement error, the stronger of the issue's two criteria; Dice of warped masks
  says less, and NSD's liberal native mask is dilated);
- rest: the zero-lag z-map (``hrf_model: none``) correlates with ``truth.dmn_map`` (the
  DMN, whose nodes share one zero-lag course, see ``rest2visual.nsd.simulate.networks``)
  at least 0.8 × as well as an independent seed correlation on the runs warped with the
  true transform, over the MNI brain mask;
- evoked: every trial's MNI betas correlate ≥ 0.9 on average (≥ 0.85 each) with
  ``truth.true_mni_betas`` over the MNI brain mask.

The z-map uses NSD's motion parameters as confounds (``rest.confounds: motion``): the
simulated head motion is real, and over 80 volumes its uncorrected edge artefacts
decide ~0.05 of the correlation.

Controls show each measure can fail: the header alone misses the registration by
several voxels, the z-map does not match the other networks, and trials matched to
the wrong truth trial do not correlate. The z-map also shows, in visual cortex, the
subject's gain topography of evoked responses (inverted), the link between rest and
evoked data that the simulation builds in.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import REPO, TOY, register_toy_subjects
from rest2visual.maskvec import MaskedGrid
from rest2visual.nsd import keys
from rest2visual.nsd.simulate import truth
from rest2visual.preprocess.evoked import write_evoked_betas
from rest2visual.preprocess.resample import MniResampler, warp_to_mni
from rest2visual.preprocess.rest_map import load_confounds, pcc_seed_zmap
from rest2visual.preprocess.template import mni_brain_mask

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
RES_MM = TOY["mni_resolution_mm"]
CASES = [(s, ses) for s in TOY["subjects"] for ses in TOY["sessions"]]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def pipeline(toy_nsd, tmp_path_factory):
    """Each toy subject registered as the workflow does it."""
    out = tmp_path_factory.mktemp("recovery")
    nsd = Path(toy_nsd.nsd_root)
    resamplers = {s: MniResampler.from_composite(result.composite, anat)
                  for s, (result, anat) in register_toy_subjects(nsd, out, RES_MM).items()}
    mask_img = mni_brain_mask(RES_MM)
    return dict(nsd=nsd, truth=Path(toy_nsd.truth_root), out=out, resamplers=resamplers,
                mask_img=mask_img, brain=np.asarray(mask_img.dataobj) > 0)


def _zmap(p, subject: int, session: int, hrf_model: str):
    """The session's PCC z-map (MNI), as the rest_to_mni and pcc_zmap rules make it."""
    rest = CONFIG["rest"]
    runs, confounds = [], []
    for run in keys.REST_RUNS:
        native = nib.load(p["nsd"] / keys.rest_key(subject, session, run))
        runs.append(warp_to_mni(native, p["resamplers"][subject], mask_img=p["mask_img"]))
        confounds.append(load_confounds(p["nsd"] / keys.motion_key(subject, session, run),
                                        native.shape[3]))
    return pcc_seed_zmap(runs, p["mask_img"], seed_center_mm=rest["seed_center_mm"],
                         seed_radius_mm=rest["seed_radius_mm"],
                         bandpass_hz=tuple(rest["bandpass_hz"]),
                         filter_order=rest["filter_order"], hrf_model=hrf_model,
                         combine_runs=rest["combine_runs"], confounds=confounds, units=rest["units"],
                         tr_s=CONFIG["nsd"]["tr_s"])


@pytest.mark.parametrize("subject", TOY["subjects"])
def test_registration_within_one_target_voxel(pipeline, subject):
    brain = pipeline["brain"]
    voxel_mm = TOY["voxel_mm"]
    true = truth.mni_to_native_coords(pipeline["truth"], subject)
    found = pipeline["resamplers"][subject].source_coordinates()
    error_mm = np.linalg.norm(found - true, axis=-1)[brain] * voxel_mm
    assert error_mm.mean() < RES_MM, (
        f"sub-{subject:02d}: mean displacement error {error_mm.mean():.2f} mm ≥ one "
        f"{RES_MM:g} mm target voxel (95th percentile {np.percentile(error_mm, 95):.2f} mm)")
    # control: the header alone (NSD's origin at the grid centre) is several voxels off
    native_affine = nib.load(pipeline["nsd"] / keys.anatomy_key(subject)).affine
    mni_mm = nib.affines.apply_affine(pipeline["mask_img"].affine, np.argwhere(brain))
    header_only = nib.affines.apply_affine(np.linalg.inv(native_affine), mni_mm)
    assert np.linalg.norm(header_only - true[brain], axis=-1).mean() * voxel_mm > 3 * RES_MM


def _reference_seed_map(p, subject: int, session: int) -> np.ndarray:
    """An independent zero-lag seed correlation on the runs warped with the TRUE transform.

    scipy only: each run sampled at the generator's MNI → native coordinates, band-passed
    (scipy Butterworth, the config's band), motion regressed out, Pearson r of every voxel
    with the mean PCC-sphere series, Fisher z, averaged over runs. (n_brain,) float64:
    what the best registration and the field's standard seed correlation give.
    """
    from scipy import ndimage, signal

    rest = CONFIG["rest"]
    brain = p["brain"]
    coords = truth.mni_to_native_coords(p["truth"], subject)[brain].T
    ijk = np.argwhere(brain)
    mm = ijk @ p["mask_img"].affine[:3, :3].T + p["mask_img"].affine[:3, 3]
    seed = np.linalg.norm(mm - np.asarray(rest["seed_center_mm"]), axis=1) <= rest["seed_radius_mm"]
    sos = signal.butter(rest["filter_order"], rest["bandpass_hz"], btype="bandpass",
                        fs=1.0 / CONFIG["nsd"]["tr_s"], output="sos")
    zs = []
    for run in keys.REST_RUNS:
        data = np.asarray(nib.load(p["nsd"] / keys.rest_key(subject, session, run)).dataobj,
                          dtype=np.float64)
        x = np.stack([ndimage.map_coordinates(data[..., t], coords, order=1)
                      for t in range(data.shape[-1])], axis=1)
        motion = np.loadtxt(p["nsd"] / keys.motion_key(subject, session, run))
        design = np.column_stack([np.ones(len(motion)), motion])
        x = x - (design @ np.linalg.lstsq(design, x.T, rcond=None)[0]).T
        x = signal.sosfiltfilt(sos, x, axis=1)
        s = x[seed].mean(axis=0)
        r = [np.corrcoef(v, s)[0, 1] if v.std() > 0 else 0.0 for v in x]
        zs.append(np.arctanh(np.clip(r, -0.999999, 0.999999)))
    return np.mean(zs, axis=0)


@pytest.mark.parametrize("subject,session", CASES)
def test_pcc_zmap_recovers_the_default_mode_map(pipeline, subject, session):
    """The toy NSD's DMN nodes co-fluctuate at zero lag (``simulate.dmn_coupling``'s
    default, the physiology). The zero-lag recipe (``hrf_model: none``) recovers the true
    DMN map at least 0.8 × as well as a seed correlation on perfectly registered runs;
    the paper's recipe (Glover HRF) is reported, not asserted (see the rest-map quality
    report and the README's comparison)."""
    assert truth.load_params(pipeline["truth"])["dmn_coupling"] == "zero_lag"
    brain = pipeline["brain"]
    maps = truth.network_maps(pipeline["truth"], subject)
    dmn = np.asarray(truth.dmn_map(pipeline["truth"], subject).dataobj)[brain]
    np.testing.assert_array_equal(dmn, (maps["dmn"] + maps["pcc"])[brain])
    r_reference = _corr(_reference_seed_map(pipeline, subject, session), dmn)
    z = np.asarray(_zmap(pipeline, subject, session, hrf_model="none").dataobj)[brain]
    r = _corr(z, dmn)
    r_paper = _corr(np.asarray(_zmap(pipeline, subject, session, hrf_model="glover")
                               .dataobj)[brain], dmn)
    print(f"sub-{subject:02d} ses-{session:02d}: r(true DMN) hrf none {r:.3f}, reference "
          f"seed correlation {r_reference:.3f}, paper recipe (glover) {r_paper:.3f}")
    assert r_reference > 0.7, f"the reference seed correlation itself fails: {r_reference:.3f}"
    assert r >= 0.8 * r_reference, (
        f"sub-{subject:02d} ses-{session:02d}: corr(z-map, dmn_map) = {r:.3f} < 0.8 × "
        f"{r_reference:.3f} (seed correlation on the true-warped runs)")
    # control: the networks independent of the PCC are not what the map shows
    for name in ("visual", "sensorimotor", "frontoparietal"):
        assert abs(_corr(z, maps[name][brain])) < 0.5, name
    # and in visual cortex it shows the subject's gain topography, inverted
    atlas = np.asarray(truth.roi_atlas(pipeline["truth"]).dataobj)[brain] > 0
    gain = np.asarray(truth.gain_map(pipeline["truth"], subject).dataobj)[brain]
    assert _corr(z[atlas], gain[atlas]) < -0.7


@pytest.mark.parametrize("subject,session", CASES)
def test_evoked_betas_recover_the_true_mni_betas(pipeline, subject, session):
    grid = MaskedGrid.from_img(pipeline["mask_img"])
    out = pipeline["out"] / f"sub-{subject:02d}_ses-{session:02d}_evoked.h5"
    bad = write_evoked_betas(pipeline["nsd"] / keys.betas_key(subject, session),
                             pipeline["resamplers"][subject], grid, out, subject=subject,
                             session=session, trials_per_session=TOY["trials_per_session"])
    assert len(bad) == 0
    with h5py.File(out, "r") as h5:
        found = h5["betas"][()]
    expected = grid.to_vectors(truth.true_mni_betas(pipeline["truth"], subject, session))
    assert found.shape == expected.shape == (TOY["trials_per_session"], grid.n_voxels)
    r = np.array([_corr(f, e) for f, e in zip(found, expected)])
    where = f"sub-{subject:02d} ses-{session:02d}"
    assert r.mean() >= 0.9, f"{where}: mean per-trial correlation {r.mean():.3f}"
    assert r.min() >= 0.85, f"{where}: trial {int(r.argmin()) + 1} correlates {r.min():.3f}"
    # the scale is kept too (% signal change, not just a pattern): the mean response in
    # visual cortex, where every image evokes one, less the ~10 % that two interpolations
    # and misregistration spread beyond the ROIs
    visual = grid.to_vectors(np.asarray(truth.roi_atlas(pipeline["truth"]).dataobj) > 0)
    ratio = found[:, visual].mean() / expected[:, visual].mean()
    assert 0.8 < ratio < 1.1, f"{where}: mean visual response {ratio:.3f} × the truth's"
    # control: another trial's truth does not match (the trial noise is the trial's own)
    shifted = np.array([_corr(f, e) for f, e in zip(found, np.roll(expected, 1, axis=0))])
    assert shifted.mean() < 0.5
