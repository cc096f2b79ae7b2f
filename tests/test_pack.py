"""The triplet pack: round trip, trial table, bad inputs, validation, interrupted writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from rest2visual.checks import InputError
from rest2visual.dataset import validate
from rest2visual.dataset.images import resize_image
from rest2visual.dataset.pack import Pack, entity, main as pack_main, pack_triplets, to_float16
from rest2visual.maskvec import MaskedGrid
from rest2visual.nsd import design
from rest2visual.paths import bids_name

def make_world(root: Path, *, shape=(9, 11, 9), tps=20, n_images=60, image_px=40,
               sessions=((1, 21), (1, 22), (2, 21), (2, 22)), seed=0) -> dict:
    """Fake inputs of the pack stage: mask, design, stimuli, rest maps, evoked files, ncsnr.

    Bad trials: sub-01 ses-21 trial 5 (all zero), sub-02 ses-22 trial 7 (NaN), both listed.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = (16, -20, -16)
    ijk = np.indices(shape).reshape(3, -1).T
    centre, radii = (np.array(shape) - 1) / 2, np.array(shape) / 2.2
    mask = (((ijk - centre) / radii) ** 2).sum(1).reshape(shape) <= 1
    grid = MaskedGrid(mask, affine)
    w = {"grid": grid, "root": root, "tps": tps, "mask": root / "mask.nii.gz"}
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), w["mask"])
    # design in NSD's layout (30000 trials, stride 750): the simulated NSD's generator,
    # 20 shared images, the first ``tps`` trials of each session show images 0..n_images-1
    from rest2visual.nsd.simulate.design import make_design, write_expdesign

    w["expdesign"] = root / "nsd_expdesign.mat"
    write_expdesign(make_design(n_images, 20, tps, seed), w["expdesign"])
    w["stimuli"] = root / "nsd_stimuli.hdf5"
    w["brick"] = rng.integers(0, 256, (n_images, image_px, image_px, 3), dtype=np.uint8)
    with h5py.File(w["stimuli"], "w") as h5:
        h5["imgBrick"] = w["brick"]
    w["rest"], w["evoked"], w["rest_data"], w["beta_data"] = {}, {}, {}, {}
    for sub, ses in sessions:
        vol = np.zeros(shape, np.float32)
        vol[mask] = rng.normal(size=grid.n_voxels)
        w["rest_data"][sub, ses] = vol
        path = root / bids_name("zmap", "nii.gz", sub=f"{sub:02d}", ses=ses, space="MNI152",
                                res=4, desc="pcc")
        nib.save(nib.Nifti1Image(vol, affine), path)
        w["rest"][sub, ses] = path
        betas = rng.normal(scale=3, size=(tps, grid.n_voxels)).astype(np.float32)
        bad = []
        if (sub, ses) == (1, 21):
            betas[4], bad = 0, [5]
        if (sub, ses) == (2, 22):
            betas[6, :3], bad = np.nan, [7]
        w["beta_data"][sub, ses] = betas
        w["evoked"][sub, ses] = write_evoked(root, grid, sub, ses, betas, bad)
    w["ncsnr"] = {}
    for sub in sorted({s for s, _ in sessions}):
        path = root / bids_name("ncsnr", "nii.gz", sub=f"{sub:02d}", space="MNI152", res=4)
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), affine), path)
        w["ncsnr"][sub] = path
    return w


def write_evoked(root, grid, sub, ses, betas, bad, name=None):
    path = root / (name or bids_name("betas", "h5", sub=f"{sub:02d}", ses=ses, space="MNI152",
                                     res=4))
    with h5py.File(path, "w") as h5:
        grid.write_h5(h5)
        h5.create_dataset("betas", data=betas, chunks=(1, betas.shape[1]))
        h5["trial"] = np.arange(1, len(betas) + 1, dtype=np.int32)
        h5.attrs.update(subject=sub, session=ses, bad_trials=np.asarray(bad, np.int32))
    return path


def pack_world(w, out, **kw) -> Path:
    return pack_triplets(out, rest_maps=w["rest"], evoked=w["evoked"],
                         expdesign_path=w["expdesign"], stimuli_path=w["stimuli"],
                         mask_path=w["mask"], image_size=16, trials_per_session=w["tps"],
                         config_hash="abc123", ncsnr=w["ncsnr"], **{"verbose": False, **kw})


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path / "in")


def test_round_trip_and_trial_table(world, tmp_path):
    path = pack_world(world, tmp_path / "pack.h5")
    grid = world["grid"]
    with Pack(path) as pack:
        assert np.array_equal(pack.grid.mask, grid.mask)
        assert np.allclose(pack.grid.affine, grid.affine)
        trials, rest_index = pack.trials, pack.rest_index
        h5 = pack.h5
        assert h5["betas"].dtype == np.float16 and h5["betas"].chunks == (1, grid.n_voxels)
        for key, vol in world["rest_data"].items():
            row = np.flatnonzero((rest_index.subject == key[0]) & (rest_index.session == key[1]))
            back = pack.grid.to_nifti(h5["rest_maps"][int(row[0])])
            assert np.array_equal(back.get_fdata(dtype=np.float32), vol)  # float32: exact
            assert np.allclose(back.affine, grid.affine)
        expdesign = design.load_expdesign(world["expdesign"])
        order, subjectim = expdesign.masterordering, expdesign.subjectim
        for (sub, ses), betas in world["beta_data"].items():
            mine = trials[(trials.subject == sub) & (trials.session == ses)]
            table = design.trial_table(expdesign, sub, ses, world["tps"]).set_index("trial")
            want = table.loc[mine.trial]
            for col in ("nsd_id", "shared", "repeat"):
                assert np.array_equal(mine[col].to_numpy(), want[col].to_numpy()), col
            # and NSD's rule directly: trial i of session s is experiment trial
            # (s-1)·750 + i-1, whatever the number of trials the betas file holds
            k = (ses - 1) * 750 + mine.trial.to_numpy() - 1
            assert np.array_equal(mine.nsd_id, subjectim[sub - 1, order[k] - 1] - 1)
            assert np.array_equal(mine.shared, order[k] <= 1000)
            packed = h5["betas"][mine.index.to_numpy()].astype(np.float32)
            assert np.allclose(packed, betas[mine.trial - 1], rtol=1e-3, atol=1e-3)  # float16
            vol = pack.grid.to_nifti(h5["betas"][int(mine.index[0])]).get_fdata()
            assert np.allclose(vol[grid.mask], betas[mine.trial.iloc[0] - 1], rtol=1e-3, atol=1e-3)
            assert not vol[~grid.mask].any()
        # every trial's image is the resized imgBrick entry of its 73k id
        ids = pack.image_nsd_ids
        assert np.array_equal(ids[trials.image_row], trials.nsd_id)
        for row in (0, len(ids) // 2, len(ids) - 1):
            assert np.array_equal(h5["images"][row], resize_image(world["brick"][ids[row]], 16))
        # bad trials left out and listed
        assert len(trials) == 4 * world["tps"] - 2
        assert sorted(map(tuple, h5["excluded_trials"][()])) == [(1, 21, 5), (2, 22, 7)]
        assert not ((trials.subject == 1) & (trials.session == 21) & (trials.trial == 5)).any()
        attrs = pack.attrs
        assert attrs["config_hash"] == "abc123" and attrs["n_trials"] == len(trials)
        assert attrs["n_voxels"] == grid.n_voxels and attrs["resolution_mm"] == 4.0
        assert attrs["n_excluded_trials"] == 2
        for key in validate.REQUIRED_ATTRS:
            assert key in attrs
        ncsnr = nib.load(world["ncsnr"][2]).get_fdata(dtype=np.float32)[grid.mask]
        assert np.array_equal(pack.ncsnr(2), ncsnr) and pack.ncsnr(5) is None
    assert validate.validate_pack(path) == []
    assert validate.main([str(path)]) == 0


def test_float16_conversion_matches_numpy():
    edge = np.array([0, -0.0, 1e-8, 6e-8, 3e-5, 1 + 2**-11, 1 + 3 * 2**-11, 65504, 65520, 1e6,
                     -1e6, np.inf, -np.inf, np.nan], np.float32)
    values = np.concatenate([edge, np.random.default_rng(0).normal(scale=50, size=10000)])
    values = values.astype(np.float32).reshape(2, -1)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    assert np.array_equal(to_float16(values).view(np.uint16), expected.view(np.uint16))


def test_cli_matches_files_by_entities(world, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    rest = [str(p) for p in world["rest"].values()][::-1]
    # evoked matched by its attributes, even under a name without entities
    evoked = []
    for i, p in enumerate(world["evoked"].values()):
        evoked.append(str(shutil.copy(p, tmp_path / f"evoked{i}.h5")))
    args = ["--rest", *rest, "--evoked", *evoked[::-1], "--expdesign", str(world["expdesign"]),
            "--stimuli", str(world["stimuli"]), "--mask", str(world["mask"]),
            "--ncsnr", *map(str, world["ncsnr"].values()), "--image-size", "16",
            "--trials-per-session", str(world["tps"]), "--config-hash", "h", "--out", str(out)]
    assert pack_main(args) == 0
    assert "excluded 2 bad trials" in capsys.readouterr().out
    ref = pack_world(world, tmp_path / "api.h5")
    with Pack(out) as a, Pack(ref) as b:
        assert a.trials.equals(b.trials)
        assert np.array_equal(a.h5["betas"][()], b.h5["betas"][()])
    assert entity("sub-03_ses-21_space-MNI152_res-4_desc-pcc_zmap.nii.gz", "session") == 21
    with pytest.raises(InputError, match="no 'sub-NN'"):
        entity("zmap.nii.gz", "subject")


def test_bad_inputs_name_the_file(world, tmp_path):
    out = tmp_path / "bad.h5"
    key = (2, 21)
    # evoked on another mask
    grid = world["grid"]
    other = MaskedGrid(np.roll(grid.mask, 1, axis=0), grid.affine)
    bad = dict(world["evoked"])
    bad[key] = write_evoked(tmp_path, other, *key, np.zeros((world["tps"], other.n_voxels),
                                                            np.float32), [], "other.h5")
    with pytest.raises(InputError, match="other.h5: brain mask differs"):
        pack_world({**world, "evoked": bad}, out)
    # a NaN beta that the evoked stage did not list as bad
    betas = world["beta_data"][key].copy()
    betas[3, 0] = np.nan
    bad[key] = write_evoked(tmp_path, grid, *key, betas, [], "nan.h5")
    with pytest.raises(InputError, match=r"nan.h5: trials \[4\] hold NaN"):
        pack_world({**world, "evoked": bad}, out)
    # a rest map on another grid
    rest = dict(world["rest"])
    rest[key] = tmp_path / "shifted.nii.gz"
    shifted = grid.affine.copy()
    shifted[:3, 3] += 2
    nib.save(nib.Nifti1Image(world["rest_data"][key], shifted), rest[key])
    with pytest.raises(InputError, match="shifted.nii.gz: .*affine"):
        pack_world({**world, "rest": rest}, out)
    # sessions that do not pair up
    with pytest.raises(InputError, match="only evoked"):
        pack_world({**world, "rest": {k: v for k, v in world["rest"].items() if k != key}}, out)
    # an image id beyond imgBrick
    with h5py.File(tmp_path / "small_brick.hdf5", "w") as h5:
        h5["imgBrick"] = world["brick"][:10]
    with pytest.raises(InputError, match="small_brick.hdf5: image ids"):
        pack_world({**world, "stimuli": tmp_path / "small_brick.hdf5"}, out)
    assert not out.exists() and not list(tmp_path.glob(".bad.tmp-*"))


def corrupt(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        edit(h5)
    return dst


def test_validate_catches_corruption(world, tmp_path, capsys):
    good = pack_world(world, tmp_path / "good.h5")

    def out_of_range(h5):
        h5["trials/image_row"][0] = h5["images"].shape[0] + 3

    def nan_beta(h5):
        h5["betas"][2, 5] = np.nan

    def duplicate(h5):
        h5["trials/trial"][1] = h5["trials/trial"][0]

    def wrong_rest(h5):
        h5["trials/rest_row"][0] = h5["rest_maps"].shape[0] - 1

    def no_attr(h5):
        del h5.attrs["config_hash"]

    cases = {"image_row outside": out_of_range, "non-finite": nan_beta,
             "duplicate": duplicate, "rest_index": wrong_rest, "config_hash": no_attr}
    for i, (expected, edit) in enumerate(cases.items()):
        bad = corrupt(good, tmp_path / f"bad{i}.h5", edit)
        problems = validate.validate_pack(bad)
        assert any(expected in p for p in problems), (expected, problems)
        assert all(str(bad) in p for p in problems)
        assert validate.main([str(bad)]) == 1
    assert expected in capsys.readouterr().err
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert validate.validate_pack(tmp_path / "junk.h5")


def test_killed_pack_leaves_no_final_file_and_reruns(tmp_path):
    """SIGKILL while the pack is being written: no file under the final name; a rerun packs."""
    w = make_world(tmp_path / "in", shape=(22, 26, 22), tps=120, n_images=80, image_px=425,
                   sessions=((1, 21), (1, 22), (2, 21), (2, 22)), seed=1)
    out = tmp_path / "out" / "pack.h5"
    args = ["--rest", *map(str, w["rest"].values()), "--evoked", *map(str, w["evoked"].values()),
            "--expdesign", str(w["expdesign"]), "--stimuli", str(w["stimuli"]),
            "--mask", str(w["mask"]), "--image-size", "64",
            "--trials-per-session", str(w["tps"]), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "rest2visual.cli", "pack", *args])
    deadline = time.monotonic() + 60
    while not list(out.parent.glob(".pack.tmp-*")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the pack never started writing"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the pack finished before it could be killed"
    assert not out.exists()
    assert list(out.parent.glob(".pack.tmp-*"))  # the killed writer's partial file
    assert pack_main(args) == 0  # the rerun
    assert validate.validate_pack(out) == []
    # the rerun removed the killed writer's temporary file: nothing but the pack is left
    assert [p.name for p in out.parent.iterdir()] == ["pack.h5"]


# --- ncsnr: NSD's NaN at invalid voxels, warped to MNI, packed ---------------------

def _native_ncsnr_with_nan(shape, rng):
    """NSD-style ncsnr: values ≥ 0 inside an ellipsoidal brain, NaN outside (float32)."""
    ijk = np.indices(shape).reshape(3, -1).T
    centre, radii = (np.array(shape) - 1) / 2, np.array(shape) / 2.6
    brain = ((((ijk - centre) / radii) ** 2).sum(1) <= 1).reshape(shape)
    data = rng.uniform(0.1, 1.5, shape).astype(np.float32)
    data[~brain] = np.nan
    return data, brain


def test_ncsnr_nan_outside_the_mask_never_spreads_and_packs(world, tmp_path, capsys):
    from rest2visual.evaluate.noise_ceiling import noise_ceiling
    from rest2visual.preprocess.resample import MniResampler, warp_to_mni

    rng = np.random.default_rng(3)
    grid = world["grid"]
    native_shape = (10, 12, 10)
    native_affine = np.diag([3.6, 3.6, 3.6, 1.0])
    # each MNI voxel samples between native voxels (fractional coordinates): trilinear
    # weights reach 8 neighbours, so invalid neighbours matter
    ijk = np.indices(grid.shape).transpose(1, 2, 3, 0).astype(float)
    coords = ijk * 0.95 + 0.45
    mask_img = nib.load(str(world["mask"]))
    for sub in world["ncsnr"]:
        data, brain = _native_ncsnr_with_nan(native_shape, rng)
        resampler = MniResampler(coords, native_shape, native_affine, grid.shape, grid.affine)
        warped = warp_to_mni(nib.Nifti1Image(data, native_affine), resampler, mask_img=mask_img)
        out = warped.get_fdata(dtype=np.float32)
        counts = warped.extra["missing"]
        inmask_nan = np.isnan(out) & grid.mask
        assert counts["touched_invalid"] + counts["no_source"] == inmask_nan.sum() > 0
        assert not np.isnan(out[~grid.mask]).any()
        # NaN never leaks: finite voxels are the same whatever value invalid voxels hold
        for fill in (0.0, 1e6):
            filled = resampler.volume(np.where(brain, data, fill), 1, grid.mask)
            ok = grid.mask & ~inmask_nan
            np.testing.assert_allclose(out[ok], filled[ok], rtol=1e-6)
        nib.save(warped, world["ncsnr"][sub])
    path = pack_world(world, tmp_path / "pack.h5", verbose=True)
    printed = capsys.readouterr().out
    assert validate.validate_pack(path) == []
    with Pack(path) as pack:
        missing = pack.h5["ncsnr"].attrs["missing_voxels"]
        for row, sub in enumerate(pack.h5["ncsnr_subjects"][()]):
            ncsnr = pack.ncsnr(int(sub))
            vol = nib.load(str(world["ncsnr"][sub])).get_fdata(dtype=np.float32)
            assert np.isnan(ncsnr).sum() == missing[row] == np.isnan(vol[grid.mask]).sum()
            assert f"sub-{sub:02d}: {missing[row]} of {grid.n_voxels} in-mask voxels" in printed
            nc = noise_ceiling(ncsnr)  # metrics skip the missing voxels
            assert np.array_equal(np.isnan(nc), np.isnan(ncsnr))
            assert np.isfinite(nc[~np.isnan(ncsnr)]).all()


def test_ncsnr_nan_count_must_match_its_attribute(world, tmp_path):
    path = pack_world(world, tmp_path / "pack.h5")
    with h5py.File(path, "r+") as h5:
        h5["ncsnr"][0, :3] = np.nan  # NaN not declared as missing
    assert any("missing_voxels" in p for p in validate.validate_pack(path))


def test_pack_records_the_rest_maps_recipe(world, tmp_path):
    """The z-maps' recipe sidecars go into the pack; mixed recipes or a missing sidecar
    among present ones are refused, naming the file and the key."""
    from rest2visual.preprocess.recipe import PACK_ATTR, make_recipe, sidecar_path, write_recipe

    with h5py.File(pack_world(world, tmp_path / "none.h5"), "r") as h5:
        assert h5.attrs[PACK_ATTR] == ""  # maps made elsewhere: no recipe claimed
    want = make_recipe(hrf_model="none", units="psc", bandpass_hz=(0.01, 0.1), filter_order=2,
                       combine_runs="mean", seed_center_mm=(0, -52, 26), seed_radius_mm=6.0,
                       seed_mask=None, confounds=True, tr_s=1.33318)
    paths = list(world["rest"].values())
    write_recipe(paths[0], want)
    with pytest.raises(InputError, match=f"{sidecar_path(paths[1]).name}.*not found"):
        pack_world(world, tmp_path / "partial.h5")
    for p in paths[1:]:
        write_recipe(p, want)
    with h5py.File(pack_world(world, tmp_path / "pack.h5"), "r") as h5:
        assert json.loads(h5.attrs[PACK_ATTR]) == want
    write_recipe(paths[-1], dict(want, units="raw"))
    with pytest.raises(InputError, match="units = 'raw'"):
        pack_world(world, tmp_path / "mixed.h5")
    assert not (tmp_path / "mixed.h5").exists()
