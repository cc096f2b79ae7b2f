"""Cross-check of the two registrations (ANTs vs NSD's own func → MNI transform)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rest2visual.preprocess import crosscheck as xc


def _grid_map(shape, fn):
    """Pull-back map on an MNI voxel grid: native coordinate = fn(MNI voxel index)."""
    ijk = np.indices(shape, dtype=float).reshape(3, -1).T
    return fn(ijk).reshape(*shape, 3)


def test_inverting_an_affine_map_is_exact():
    rng = np.random.default_rng(0)
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0] * 0.7      # rotation + 0.7 scaling
    shift = np.array([3.0, 4.0, 2.5])
    coords = _grid_map((30, 32, 28), lambda x: x @ rot.T + shift)
    truth = rng.uniform(8, 20, size=(200, 3))                    # MNI voxel indices
    points = truth @ rot.T + shift                               # native coordinates
    got = xc.invert_coordinate_map(coords, points, (1.8, 1.8, 1.8))
    np.testing.assert_allclose(got, truth, atol=1e-6)


def test_inverting_a_smooth_warp_and_unreachable_points():
    def warp(x):
        return 0.5 * x + 1.5 * np.sin(x[:, [1, 2, 0]] / 6.0) + 2.0

    coords = _grid_map((40, 40, 40), warp)
    coords[:, :, 30:] = np.nan                                   # NSD's 9999 region
    rng = np.random.default_rng(1)
    truth = rng.uniform(5, 25, size=(300, 3))
    got = xc.invert_coordinate_map(coords, warp(truth))
    assert np.abs(got - truth).max() < 0.02                      # voxels
    outside = warp(np.array([[20.0, 20.0, 35.0], [20.0, 20.0, 60.0]]))
    assert np.isnan(xc.invert_coordinate_map(coords, outside)).all()


def test_inverted_nsd_transform_matches_the_generators_truth(toy_nsd):
    """Where NSD's map puts each native brain voxel = where the simulator put it."""
    import nibabel as nib

    from conftest import TOY
    from rest2visual.nsd import keys
    from rest2visual.nsd.simulate import truth
    from rest2visual.preprocess.resample import MniResampler
    from rest2visual.preprocess.template import mni_grid

    nsd = Path(toy_nsd.nsd_root)
    anat = nib.load(nsd / keys.anatomy_key(1))
    brain = np.argwhere(np.asarray(nib.load(nsd / keys.brainmask_key(1)).dataobj) > 0)
    nsd_map = MniResampler.from_nsd_coordinates(nsd / keys.func_to_mni_key(1), anat,
                                                mni_grid(TOY["mni_resolution_mm"]))
    ijk = xc.invert_coordinate_map(nsd_map.source_coordinates(), brain, (TOY["voxel_mm"],) * 3)
    found = ijk @ nsd_map.target_affine[:3, :3].T + nsd_map.target_affine[:3, 3]
    true = truth.native_to_mni_mm(toy_nsd.truth_root, 1)[tuple(brain.T)]
    reached = np.all(np.isfinite(found), axis=1)
    assert reached.mean() > 0.95
    error_mm = np.linalg.norm(found[reached] - true[reached], axis=1)
    assert np.median(error_mm) < 0.05 and error_mm.max() < 0.5


@pytest.fixture(scope="module")
def registered(toy_nsd, tmp_path_factory):
    """ANTs registration of the toy simulated NSD's subject 1 (the workflow's command)."""
    from conftest import TOY
    from rest2visual.nsd import keys
    from rest2visual.preprocess import registration

    out = tmp_path_factory.mktemp("xc-reg")
    nsd = Path(toy_nsd.nsd_root)
    assert registration.main([
        "--anat", str(nsd / keys.anatomy_key(1)), "--brainmask", str(nsd / keys.brainmask_key(1)),
        "--resolution", str(TOY["mni_resolution_mm"]), "--out-dir", str(out),
        "--prefix", "sub-01", "--iterations", "40", "20", "0", "--seed", "0",
        "--threads", "1"]) == 0
    return out, nsd


def test_simulated_nsd_ants_within_one_native_voxel_of_nsd_transform(registered, tmp_path):
    from conftest import TOY
    from rest2visual.nsd import keys

    out, nsd = registered
    composite = next(out.glob("sub-01_*desc-composite_xfm.nii.gz"))
    csv, md, qc = tmp_path / "sub-01.csv", tmp_path / "sub-01.md", tmp_path / "qc.png"
    assert xc.main(["--subject", "1", "--composite", str(composite),
                    "--nsd-coords", str(nsd / keys.func_to_mni_key(1)),
                    "--anat", str(nsd / keys.anatomy_key(1)),
                    "--brainmask", str(nsd / keys.brainmask_key(1)),
                    "--resolution", str(TOY["mni_resolution_mm"]),
                    "--qc", str(qc), "--csv", str(csv), "--md", str(md)]) == 0
    row = pd.read_csv(csv).iloc[0]
    assert row.subject == 1 and row.native_voxel_mm == pytest.approx(TOY["voxel_mm"])
    assert row.compared_voxels > 0.9 * row.native_brain_voxels
    assert row.median_mm < TOY["voxel_mm"], row.to_dict()
    assert row.p95_mm >= row.median_mm
    assert qc.read_bytes()[:4] == b"\x89PNG"
    assert "| sub-01 |" in md.read_text()
    combined = tmp_path / "all.csv"
    assert xc.main(["--combine", str(csv), str(csv), "--csv", str(combined),
                    "--md", str(tmp_path / "all.md")]) == 0
    assert len(pd.read_csv(combined)) == 2


def test_a_wrong_transform_is_seen(registered, tmp_path):
    """Another subject's NSD transform: the distance is far above one native voxel."""
    from conftest import TOY
    from rest2visual.checks import load_nifti
    from rest2visual.nsd import keys
    from rest2visual.preprocess.resample import MniResampler
    from rest2visual.preprocess.template import mni_grid

    out, nsd = registered
    anat = load_nifti(nsd / keys.anatomy_key(1), ndim=3)
    mask = np.asarray(load_nifti(nsd / keys.brainmask_key(1), ndim=3).dataobj) > 0
    ants = MniResampler.from_composite(next(out.glob("sub-01_*desc-composite_xfm.nii.gz")), anat)
    grid = mni_grid(TOY["mni_resolution_mm"])
    right = MniResampler.from_nsd_coordinates(nsd / keys.func_to_mni_key(1), anat, grid)
    shifted = MniResampler(np.roll(right.source_coordinates(), 3, axis=0), right.native_shape,
                           right.native_affine, right.target_shape, right.target_affine)
    good = xc.compare_registrations(ants, right, mask, 1)
    bad = xc.compare_registrations(ants, shifted, mask, 1)
    assert bad.median_mm > good.median_mm + 2 * TOY["mni_resolution_mm"]
