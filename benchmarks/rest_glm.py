"""Benchmark: rest2visual's PCC seed z-map against the same maths written with plain nilearn.

One synthetic rest run in MNI space (full: FSL 2 mm grid 91×109×91, 226 volumes,
TR 1.333 s, float32, Fortran order like a loaded NIfTI; small: 4 mm, 120
volumes) with a planted default-mode network (PCC + mPFC + angular gyri) times
a band-limited time course, plus noise on a baseline of 1000.

- ours: ``rest2visual.preprocess.rest_map.pcc_seed_zmap`` (seed mean, Butterworth
  band-pass, HRF convolution, vectorised OLS, z-score in the mask), whole call.
- nilearn: ``NiftiSpheresMasker`` seed (sphere ∩ mask) → ``nilearn.signal.clean``
  (same Butterworth band-pass, no detrending or standardising) → the same causal
  convolution with nilearn's ``glover_hrf`` → ``FirstLevelModel(noise_model='ols',
  drift_model=None, signal_scaling=False)`` fitted on the 4D image with the brain
  mask and the design [seed, constant] → effect-size map → z-score in the mask.

Each implementation runs in its own subprocess that first builds the data, so
peak memory (``ru_maxrss``) is measured per implementation; the script prints
time, peak RSS above the loaded data, the speed ratio, and the max |Δz| between
the two z-maps (~1e-4: NiftiSpheresMasker averages the seed in float32, ours in
float64). Run: ``python benchmarks/rest_glm.py --size full`` (~3 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"full": (2.0, 226), "small": (4.0, 120)}
TR_S = 1.333
PCC_MM, RADIUS_MM = (0.0, -52.0, 26.0), 8.0
BAND_HZ, ORDER = (0.01, 0.1), 2
NETWORK_MM = [PCC_MM, (0.0, 52.0, -2.0), (-46.0, -68.0, 32.0), (46.0, -68.0, 32.0)]


def synthetic_run(resolution_mm: float, n_t: int, seed: int = 0):
    """A 4D run image on the MNI grid: planted network × slow signal + noise, float32 F-order."""
    import nibabel as nib

    from rest2visual.preprocess.seed import voxel_centers_mm
    from rest2visual.preprocess.signal import bandpass
    from rest2visual.preprocess.template import mni_grid

    grid = mni_grid(resolution_mm)
    rng = np.random.default_rng(seed)
    xyz = voxel_centers_mm(grid)
    network = sum(np.exp(-((xyz - np.asarray(c)) ** 2).sum(-1) / (2 * 10.0**2))
                  for c in NETWORK_MM).astype(np.float32)
    del xyz
    course = bandpass(rng.standard_normal(n_t), TR_S, 0.01, 0.08, 4)
    course = (3.0 * course / course.std()).astype(np.float32)
    # filled volume by volume so that building the data never holds more than the data
    data = np.empty(grid.shape + (n_t,), dtype=np.float32, order="F")
    for t in range(n_t):
        vol = rng.standard_normal(grid.shape, dtype=np.float32)
        vol += 1000.0
        vol += network * course[t]
        data[..., t] = vol
    img = nib.Nifti1Image(data, grid.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((resolution_mm,) * 3 + (TR_S,))
    return img


def zmap_ours(img, mask_img) -> np.ndarray:
    from rest2visual.preprocess.rest_map import pcc_seed_zmap

    z = pcc_seed_zmap([img], mask_img, seed_center_mm=PCC_MM, seed_radius_mm=RADIUS_MM,
                      bandpass_hz=BAND_HZ, filter_order=ORDER, hrf_model="glover")
    return np.asarray(z.dataobj)


def zmap_nilearn(img, mask_img) -> np.ndarray:
    import warnings

    import pandas as pd
    from nilearn.glm.first_level import FirstLevelModel, glover_hrf
    from nilearn.maskers import NiftiSpheresMasker
    from nilearn.signal import clean

    seed = NiftiSpheresMasker([PCC_MM], radius=RADIUS_MM, mask_img=mask_img).fit_transform(img)
    filtered = clean(seed, detrend=False, standardize=False, filter="butterworth",
                     high_pass=BAND_HZ[0], low_pass=BAND_HZ[1], t_r=TR_S,
                     butterworth__order=ORDER)[:, 0]
    n_t = filtered.shape[0]
    regressor = np.convolve(filtered, glover_hrf(TR_S, oversampling=1))[:n_t]
    design = pd.DataFrame({"seed": regressor, "constant": np.ones(n_t)})
    model = FirstLevelModel(t_r=TR_S, noise_model="ols", drift_model=None,
                            signal_scaling=False, mask_img=mask_img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "design matrices supplied: t_r ignored"
        model.fit(img, design_matrices=design)
        beta = np.asarray(model.compute_contrast("seed", output_type="effect_size").dataobj)
    brain = np.asarray(mask_img.dataobj) > 0
    z = np.zeros(brain.shape, dtype=np.float32)
    z[brain] = (beta[brain] - beta[brain].mean()) / beta[brain].std()
    return z


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(impl: str, size: str, mask: Path, out: Path, repeats: int) -> None:
    """Build the data, time one implementation ``repeats`` times, save its z vector, print JSON."""
    import nibabel as nib
    import nilearn.glm.first_level  # noqa: F401  imports are not part of the timing
    import nilearn.maskers  # noqa: F401
    import nilearn.signal  # noqa: F401
    import scipy.signal  # noqa: F401

    # the mask comes from a file: resampling nilearn's 1 mm mask here would raise the
    # RSS high-water mark above what either implementation needs
    mask_img = nib.load(mask)
    img = synthetic_run(*SIZES[size])
    base = _maxrss_mib()
    fn = {"ours": zmap_ours, "nilearn": zmap_nilearn}[impl]
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        z = fn(img, mask_img)
        seconds.append(time.perf_counter() - start)
    peak = _maxrss_mib()
    np.save(out, z[np.asarray(mask_img.dataobj) > 0])
    print(json.dumps({"impl": impl, "seconds": seconds, "base_mib": base, "peak_mib": peak,
                      "data_mib": img.dataobj.nbytes / 2**20}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="full")
    p.add_argument("--repeats", type=int, default=2,
                   help="calls per implementation; the first includes first-touch page faults")
    p.add_argument("--worker", choices=["ours", "nilearn"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--mask", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.size, args.mask, args.out, args.repeats)
        return 0

    res_mm, n_t = SIZES[args.size]
    print(f"rest GLM benchmark: MNI {res_mm:g} mm grid, {n_t} volumes, TR {TR_S} s, float32")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        import nibabel as nib

        from rest2visual.preprocess.template import mni_brain_mask

        mask = Path(tmp) / "mask.nii"
        nib.save(mni_brain_mask(res_mm), mask)
        for impl in ("ours", "nilearn"):
            out = Path(tmp) / f"{impl}.npy"
            proc = subprocess.run([sys.executable, __file__, "--size", args.size,
                                   "--repeats", str(args.repeats), "--worker", impl,
                                   "--mask", str(mask), "--out", str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return proc.returncode
            results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[impl]["z"] = np.load(out)
    ours, ref = results["ours"], results["nilearn"]
    print(f"data in memory: {ours['data_mib']:.0f} MiB; in-mask voxels: {ours['z'].size}")
    for r in (ours, ref):
        print(f"{r['impl']:>8}: first {r['seconds'][0]:7.2f} s, best of {len(r['seconds'])} "
              f"{min(r['seconds']):7.2f} s   peak RSS {r['peak_mib']:6.0f} MiB "
              f"(+{r['peak_mib'] - r['base_mib']:.0f} MiB over the loaded data)")
    print(f"speed-up (nilearn / ours): first call {ref['seconds'][0] / ours['seconds'][0]:.1f}x, "
          f"best {min(ref['seconds']) / min(ours['seconds']):.1f}x")
    print(f"max |z_ours - z_nilearn| over the mask: {np.abs(ours['z'] - ref['z']).max():.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
