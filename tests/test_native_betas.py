"""The decoding bridge: MNI betas → native nsdgeneral voxels (``rest2visual to-native``).

On the toy simulated NSD (conftest's ``toy_nsd``, 4 mm native and MNI), each subject is
registered with the project's registration (config/config.yaml's settings, as
test_recovery does); the session's NSD betas go to MNI through the forward resampler
(the evoked stage's path), and

- round trip: those measured MNI betas → native (ANTs inverse warp) → back to MNI
  correlate ≥ 0.95 with the originals inside the MNI brain mask, per trial on average;
  the same through NSD's coordinate maps both ways (the simulated NSD's
  ``func1pt8-to-MNI`` and ``MNI-to-func1pt8``, the latter checked against the truth);
- with ``registration.method: nsd`` the workflow plans the bridge on the simulated NSD,
  through its ``MNI-to-func1pt8`` maps;
- the CLI's HDF5 lists the voxels in NSD's nsdgeneral order, checked against an
  explicit C-order walk of the nsdgeneral file and against MindEye-style flattening
  (``volume.reshape(n, -1)[:, mask.flatten()]``) of the native betas;
- z-scores per session have mean 0 and SD 1, and are invariant to the predictions'
  scale (predicted = 2 × measured + 1 gives the same z);
- bad inputs give one line ``rest2visual to-native: error: <file>: <expected, found>``.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import REPO, TOY, register_toy_subjects, run_workflow, toy_config
from rest2visual import cli
from rest2visual.dataset.layout import TRIAL_COLUMNS
from rest2visual.decode.native_betas import zscore_per_session
from rest2visual.maskvec import MaskedGrid
from rest2visual.nsd import keys
from rest2visual.nsd.simulate import truth
from rest2visual.preprocess.native import NativeResampler
from rest2visual.preprocess.nsd_transform import FSL_1MM_AFFINE
from rest2visual.preprocess.resample import MniResampler, sidecar_path, warp_to_mni
from rest2visual.preprocess.template import Grid, mni_brain_mask

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
RES_MM = TOY["mni_resolution_mm"]
SESSION = TOY["sessions"][0]
MIN_CORRELATION = 0.95


@pytest.fixture(scope="module")
def bridge(toy_nsd, tmp_path_factory):
    """Each toy subject registered, and one session's measured betas in MNI."""
    out = tmp_path_factory.mktemp("bridge")
    nsd = Path(toy_nsd.nsd_root)
    mask_img = mni_brain_mask(RES_MM)
    grid = MaskedGrid.from_img(mask_img)
    subjects = {}
    for s, (result, anat) in register_toy_subjects(nsd, out, RES_MM).items():
        forward = MniResampler.from_composite(result.composite, anat)
        native_betas = nib.load(nsd / keys.betas_key(s, SESSION))
        mni = warp_to_mni(native_betas, forward, mask_img=mask_img)
        measured = grid.to_vectors(np.asarray(mni.dataobj)) / 300.0  # % signal change
        subjects[s] = dict(registration=result, forward=forward, anat=anat,
                           measured=measured.astype(np.float32),
                           roi=nsd / keys.nsdgeneral_key(s))
    return dict(out=out, nsd=nsd, truth=Path(toy_nsd.truth_root), grid=grid,
                mni_grid=Grid(shape=grid.shape, affine=grid.affine), subjects=subjects)


def _round_trip_correlation(grid: MaskedGrid, measured, inverse: NativeResampler,
                            forward: MniResampler) -> tuple[float, float]:
    """(mean per-trial r, fraction of brain voxels compared): MNI → native → MNI, over the
    MNI brain voxels whose way back reads only native voxels that received a value (at
    the mask's edge a native voxel with < MIN_WEIGHT of in-mask support gets none)."""
    everywhere = np.ones(inverse.native_shape, bool)
    native = inverse.to_native(measured, everywhere, grid.mask)  # (T, all native voxels)
    valid = np.isfinite(native[0])
    native_vol = np.where(valid, native, 0.0).reshape((-1,) + inverse.native_shape)
    # MNI voxels whose forward interpolation reads only native voxels with a source
    support = forward.volume(valid.reshape(inverse.native_shape).astype(np.float32),
                             mask=grid.mask)
    compared = grid.to_vectors(support) > 0.999
    back = np.stack([grid.to_vectors(forward.volume(v, mask=grid.mask)) for v in native_vol])
    r = [np.corrcoef(a[compared], b[compared])[0, 1] for a, b in zip(measured, back)]
    # for the record: over the whole MNI brain mask, voxels without a source counted as 0
    r_all = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(measured, back)])
    print(f"(whole brain mask, no-source voxels as 0: r = {r_all:.4f})", end=" ")
    assert r_all >= MIN_CORRELATION
    return float(np.mean(r)), float(compared.mean())


@pytest.mark.parametrize("subject", TOY["subjects"])
def test_round_trip_through_ants_inverse(bridge, subject):
    sub = bridge["subjects"][subject]
    reg = sub["registration"]
    inverse = NativeResampler.from_ants_inverse(reg.affine, reg.inverse_warp, sub["anat"],
                                                bridge["mni_grid"])
    r, fraction = _round_trip_correlation(bridge["grid"], sub["measured"], inverse,
                                          sub["forward"])
    print(f"sub-{subject:02d} ANTs round trip: mean per-trial r = {r:.4f} over "
          f"{100 * fraction:.1f} % of the MNI brain")
    assert fraction > 0.8
    assert r >= MIN_CORRELATION, f"sub-{subject:02d}: round-trip r {r:.4f}"


def _nsd_mni_to_func(bridge, subject: int) -> Path:
    """The simulated NSD's ``MNI-to-func1pt8`` map, checked against the truth: at each native
    voxel, the 1-based FSL 1 mm coordinates of its true MNI position (9999 outside)."""
    path = bridge["nsd"] / keys.mni_to_func_key(subject)
    written = np.asarray(nib.load(path).dataobj)
    mm = truth.native_to_mni_mm(bridge["truth"], subject).astype(np.float64)
    to_fsl = np.linalg.inv(FSL_1MM_AFFINE)
    ijk1 = mm @ to_fsl[:3, :3].T + to_fsl[:3, 3] + 1.0
    valid = np.all(written != 9999, axis=-1)
    assert written.shape == mm.shape and valid.mean() > 0.99
    np.testing.assert_allclose(written[valid], ijk1[valid], atol=1e-3)
    return path


@pytest.mark.parametrize("subject", TOY["subjects"])
def test_round_trip_through_nsd_maps(bridge, subject, tmp_path):
    sub = bridge["subjects"][subject]
    inverse = NativeResampler.from_nsd_coordinates(_nsd_mni_to_func(bridge, subject),
                                                   sub["anat"], bridge["mni_grid"])
    forward = MniResampler.from_nsd_coordinates(
        bridge["nsd"] / keys.func_to_mni_key(subject), sub["anat"], bridge["mni_grid"])
    mni = warp_to_mni(nib.load(bridge["nsd"] / keys.betas_key(subject, SESSION)), forward,
                      mask_img=mni_brain_mask(RES_MM))
    measured = bridge["grid"].to_vectors(np.asarray(mni.dataobj)) / 300.0
    r, fraction = _round_trip_correlation(bridge["grid"], measured, inverse, forward)
    print(f"sub-{subject:02d} NSD-map round trip: mean per-trial r = {r:.4f} over "
          f"{100 * fraction:.1f} % of the MNI brain")
    assert fraction > 0.8
    assert r >= MIN_CORRELATION


# --- the command: a pack and predictions.h5 as `pack` and `evaluate` write them -----------

def _write_pack(path: Path, grid: MaskedGrid, subjects: dict) -> tuple[np.ndarray, dict]:
    """A minimal pack (mask, betas, trials) of one session per subject; returns the test
    rows (every other trial) and the trial table."""
    betas, columns = [], {c: [] for c in TRIAL_COLUMNS}
    for s, sub in subjects.items():
        n = sub["measured"].shape[0]
        betas.append(sub["measured"])
        # two pseudo-sessions per subject, so that z-scoring per session is exercised
        for c, values in (("subject", [s] * n), ("session", [SESSION] * (n // 2)
                                                  + [SESSION + 1] * (n - n // 2)),
                          ("trial", list(range(1, n + 1))), ("nsd_id", list(range(100, 100 + n))),
                          ("shared", [False] * n), ("repeat", [0] * n),
                          ("image_row", list(range(n))), ("rest_row", [0] * n)):
            columns[c] += values
    with h5py.File(path, "w") as h5:
        grid.write_h5(h5)
        h5.create_dataset("betas", data=np.concatenate(betas).astype(np.float16))
        for c, values in columns.items():
            h5.create_dataset(f"trials/{c}", data=np.asarray(values))
    n_rows = len(columns["subject"])
    return np.arange(0, n_rows, 2), columns


def _write_predictions(path: Path, grid: MaskedGrid, pack: Path, rows: np.ndarray) -> None:
    """predictions.h5 as evaluate writes it; Rest2Visual's = 2 × measured + 1."""
    with h5py.File(pack, "r") as src, h5py.File(path, "w") as h5:
        grid.write_h5(h5)
        h5.create_dataset("rows", data=rows)
        measured = src["betas"][rows.tolist()].astype(np.float32)
        h5.create_dataset("methods/rest2visual", data=(2 * measured + 1).astype(np.float16))


@pytest.fixture(scope="module")
def command_inputs(bridge, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("to-native")
    pack = tmp / "pack.h5"
    rows, columns = _write_pack(pack, bridge["grid"], bridge["subjects"])
    predictions = tmp / "predictions.h5"
    _write_predictions(predictions, bridge["grid"], pack, rows)
    return dict(tmp=tmp, pack=pack, predictions=predictions, rows=rows, columns=columns)


def _args(bridge, inputs, subject: int, out: Path, **override) -> list[str]:
    reg = bridge["subjects"][subject]["registration"]
    args = {"--predictions": inputs["predictions"], "--pack": inputs["pack"],
            "--subject": subject, "--nsdgeneral": bridge["subjects"][subject]["roi"],
            "--protocol": "paper", "--affine": reg.affine, "--inverse-warp": reg.inverse_warp,
            "--sidecar": sidecar_path(reg.composite), "--out": out, **override}
    return ["to-native"] + [str(x) for kv in args.items() for x in kv]


@pytest.mark.parametrize("subject", TOY["subjects"])
def test_command_writes_nsd_ordered_zscored_betas(bridge, command_inputs, subject, tmp_path,
                                                  capsys):
    out = tmp_path / f"sub-{subject:02d}_betas.h5"
    assert cli.main(_args(bridge, command_inputs, subject, out)) == 0
    roi = np.asarray(nib.load(bridge["subjects"][subject]["roi"]).dataobj)
    with h5py.File(out, "r") as h5:
        voxel_indices = h5["voxel_indices"][()]
        measured_psc, predicted_psc = h5["psc/betas_measured"][()], h5["psc/betas_predicted"][()]
        z_measured, z_predicted = h5["betas_measured"][()], h5["betas_predicted"][()]
        sessions = h5["trials/session"][()]
        pack_rows = h5["trials/pack_row"][()]
        nsd_ids = h5["trials/nsd_id"][()]
        has_source = h5["voxel_has_source"][()]
        assert "ddof 0" in h5.attrs["normalisation"] and h5.attrs["subject"] == subject
    # NSD's order: an explicit C-order walk of the nsdgeneral file (values > 0)
    walk = [ijk for ijk in itertools.product(*map(range, roi.shape)) if roi[ijk] > 0]
    assert voxel_indices.tolist() == [list(ijk) for ijk in walk]
    # the test rows of this subject, in pack order, with their 73k ids
    columns = command_inputs["columns"]
    mine = [r for r in command_inputs["rows"] if columns["subject"][r] == subject]
    assert pack_rows.tolist() == mine
    assert nsd_ids.tolist() == [columns["nsd_id"][r] for r in mine]
    # values: MindEye-style flattening of the full native betas gives the same columns
    sub = bridge["subjects"][subject]
    reg = sub["registration"]
    inverse = NativeResampler.from_ants_inverse(reg.affine, reg.inverse_warp, sub["anat"],
                                                bridge["mni_grid"])
    with h5py.File(command_inputs["pack"], "r") as pack:
        mni = pack["betas"][mine].astype(np.float32)
    volume = inverse.to_native(mni, np.ones(inverse.native_shape, bool), bridge["grid"].mask)
    flat = volume.reshape(len(mine), -1)[:, (roi > 0).flatten()]
    np.testing.assert_allclose(measured_psc, flat, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert has_source.mean() > 0.9
    # the predictions are 2 × measured + 1 (float16 in predictions.h5): same z-scores
    np.testing.assert_allclose(predicted_psc[:, has_source], 2 * measured_psc[:, has_source] + 1,
                               rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(z_predicted, z_measured, atol=5e-3)
    for session in np.unique(sessions):
        z = z_measured[sessions == session][:, has_source]
        np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
        varying = z.std(axis=0) > 0
        np.testing.assert_allclose(z.std(axis=0)[varying], 1, atol=1e-4)


def test_zscore_per_session_constant_voxel_is_zero():
    betas = np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 2.0]])
    z = zscore_per_session(betas, np.array([1, 1, 2]))
    np.testing.assert_allclose(z, [[-1, 0], [1, 0], [0, 0]])


def _error_line(capsys, argv) -> str:
    assert cli.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("rest2visual to-native: error: "), lines[0]
    return lines[0]


def test_missing_file_is_one_line(bridge, command_inputs, tmp_path, capsys):
    missing = tmp_path / "nsdgeneral.nii.gz"
    line = _error_line(capsys, _args(bridge, command_inputs, 1, tmp_path / "o.h5",
                                     **{"--nsdgeneral": missing}))
    assert f"error: {missing}: nsdgeneral ROI not found" in line
    line = _error_line(capsys, _args(bridge, command_inputs, 1, tmp_path / "o.h5",
                                     **{"--predictions": tmp_path / "none.h5"}))
    assert f"{tmp_path / 'none.h5'}: evaluation predictions (predictions.h5) not found" in line
    assert not (tmp_path / "o.h5").exists()


def test_wrong_grid_is_one_line(bridge, command_inputs, tmp_path, capsys):
    other = bridge["subjects"][2]["roi"]
    assert nib.load(other).shape != nib.load(bridge["subjects"][1]["roi"]).shape
    # subject 2's nsdgeneral with subject 1's registration
    line = _error_line(capsys, _args(bridge, command_inputs, 1, tmp_path / "o.h5",
                                     **{"--nsdgeneral": other}))
    assert f"error: {other}" in line and "expected the grid registered in" in line
    assert "found shape" in line
    # predictions on another MNI grid than the pack's
    shifted = tmp_path / "predictions.h5"
    grid = bridge["grid"]
    mask = np.roll(grid.mask, 1, axis=0)
    _write_predictions(shifted, MaskedGrid(mask, grid.affine), command_inputs["pack"],
                       command_inputs["rows"][:2])
    line = _error_line(capsys, _args(bridge, command_inputs, 1, tmp_path / "o.h5",
                                     **{"--predictions": shifted}))
    assert f"error: {shifted}: expected the MNI grid of" in line and "found shape" in line
    # an NSD map on another subject's grid
    nsd_map = _nsd_mni_to_func(bridge, 2)
    argv = _args(bridge, command_inputs, 1, tmp_path / "o.h5")
    cut = argv.index("--affine")
    argv = argv[:cut] + argv[cut + 6:] + ["--nsd-mni-to-func", str(nsd_map)]
    line = _error_line(capsys, argv)
    assert f"error: {nsd_map}: expected NSD's MNI → func map on the native grid" in line


def test_nsd_method_plans_the_bridge_on_the_simulated_nsd(tmp_path):
    """registration.method nsd on the simulated NSD: the bridge's jobs are planned, reading
    the simulated NSD's MNI-to-func1pt8 maps (outputs of simulate_nsd)."""
    config = toy_config(registration={"method": "nsd"})
    proc = run_workflow(tmp_path, config, "-n", "-p", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    jobs = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", proc.stdout, flags=re.M)}
    assert jobs.get("native_betas") == len(TOY["subjects"]), proc.stdout[-3000:]
    for s in TOY["subjects"]:
        key = re.escape(keys.mni_to_func_key(s))
        assert re.search(rf"--nsd-mni-to-func \S*/nsd/{key}", proc.stdout), proc.stdout[-3000:]
