"""Benchmark: warping a native 4D series to MNI — MniResampler.series vs ANTs' own 4D path.

Setup (once, cached in ``--workdir``): a synthetic anatomy on NSD subj01's 1.8 mm
functional grid (81×104×83, origin at the grid centre) made from nilearn's 1 mm
MNI152 through a known rotation/shift/scale, registered with
``register_to_mni`` (SyN, 40/20/0) to the FSL 2 mm MNI grid (91×109×91); and a
native series of ``--volumes`` volumes, int16 × scale like NSD's time series, of
random but spatially smooth data, written as ``.nii.gz``.

- (a) ours: ``MniResampler.from_composite`` (read the composed field once, sparse
  trilinear matrix) + ``MniResampler.series`` (chunks of volumes streamed from the
  gzip file, one sparse product each).
- (b) ANTs: ``ants.image_read`` of the series + ``ants.apply_transforms(fixed,
  moving4d, [warp, affine], imagetype=3)`` + ``.numpy()``.

Both start from the same files and end with an (X, Y, Z, T) float32 array in
memory. Each runs in its own subprocess, so ``ru_maxrss`` is each one's own peak.
Prints time, peak RSS (and above the post-import baseline), the ratios, and the
max |a − b|. Run: ``python benchmarks/apply_transforms.py [--volumes 226]``.
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

NATIVE_SHAPE = (81, 104, 83)  # NSD subj01 func1pt8mm
NATIVE_MM = 1.8
RES_MM = 2.0
TR_S = 1.333


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _native_affine() -> np.ndarray:
    affine = np.diag([NATIVE_MM] * 3 + [1.0])
    affine[:3, 3] = -(np.asarray(NATIVE_SHAPE) - 1) / 2 * NATIVE_MM
    return affine


def make_anatomy():
    """The 1 mm MNI152 seen through a known similarity transform, on the 1.8 mm grid."""
    import nibabel as nib
    from nilearn import datasets
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    from rest2visual.preprocess.seed import voxel_centers_mm
    from rest2visual.preprocess.template import Grid

    affine = _native_affine()
    rot = Rotation.from_euler("xyz", [5.0, -4.0, 3.0], degrees=True).as_matrix()
    native_mm = voxel_centers_mm(Grid(NATIVE_SHAPE, affine))
    mni_mm = native_mm @ (rot * 1.04).T + np.array([2.0, -20.0, 14.0])
    tpl = datasets.load_mni152_template(resolution=1)
    inv = np.linalg.inv(tpl.affine)
    pts = (mni_mm @ inv[:3, :3].T + inv[:3, 3]).reshape(-1, 3).T
    data = ndimage.map_coordinates(tpl.get_fdata(dtype=np.float32), pts, order=1)
    return nib.Nifti1Image(data.reshape(NATIVE_SHAPE).astype(np.float32), affine)


def make_series(path: Path, n_t: int, seed: int = 0) -> None:
    """Smooth random series: 8 smooth maps × random courses + moving smooth noise, int16."""
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(seed)

    def smooth_field(sigma_vox):
        field = ndimage.gaussian_filter(rng.standard_normal(NATIVE_SHAPE), sigma_vox)
        return (field / field.std()).astype(np.float32)

    maps = np.stack([smooth_field(3.0) for _ in range(8)], -1)
    courses = rng.standard_normal((8, n_t)).astype(np.float32)
    base, noise = smooth_field(2.0), smooth_field(1.0)
    data = np.empty(NATIVE_SHAPE + (n_t,), dtype=np.int16, order="F")
    for t in range(n_t):
        # the noise field rolled by a random shift: new smooth noise each volume, cheaply
        shifted = np.roll(noise, tuple(rng.integers(0, 40, 3)), axis=(0, 1, 2))
        vol = 1000.0 + 50 * base + 20 * (maps @ courses[:, t]) + 10 * shifted
        data[..., t] = np.round(vol).astype(np.int16)
    img = nib.Nifti1Image(data, _native_affine())
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((NATIVE_MM,) * 3 + (TR_S,))
    nib.save(img, path)


def setup(workdir: Path, n_t: int) -> dict:
    import nibabel as nib

    from rest2visual.preprocess.registration import register_to_mni, registration_outputs
    from rest2visual.preprocess.template import mni_template

    workdir.mkdir(parents=True, exist_ok=True)
    template = workdir / f"template_res-{RES_MM:g}.nii.gz"
    if not template.exists():
        nib.save(mni_template(RES_MM), template)
    result = registration_outputs(workdir / "reg", "sub-bench", RES_MM)
    if not result.composite.exists():
        start = time.perf_counter()
        anat = make_anatomy()
        register_to_mni(anat, nib.load(template), out_dir=workdir / "reg", prefix="sub-bench")
        print(f"setup: registration (SyN, 1.8 mm → MNI {RES_MM:g} mm) "
              f"{time.perf_counter() - start:.1f} s")
    series = workdir / f"series_T{n_t}.nii.gz"
    if not series.exists():
        start = time.perf_counter()
        make_series(series, n_t)
        print(f"setup: wrote {series.name} {time.perf_counter() - start:.1f} s")
    return {"template": str(template), "composite": str(result.composite),
            "transforms": result.transforms, "series": str(series)}


def run_ours(files: dict) -> np.ndarray:
    import nibabel as nib

    from rest2visual.preprocess.resample import MniResampler

    native = nib.load(files["series"])
    return MniResampler.from_composite(files["composite"], native).series(native)


def run_ants(files: dict) -> np.ndarray:
    import ants

    fixed = ants.image_read(files["template"])
    moving = ants.image_read(files["series"])
    return ants.apply_transforms(fixed, moving, files["transforms"], imagetype=3).numpy()


def worker(method: str, files: dict, out: Path) -> None:
    # imports are not part of the timing; each worker imports only what it uses
    # (antspyx's libraries alone raise the RSS high-water mark by hundreds of MiB)
    if method == "ants":
        import ants  # noqa: F401
    else:
        import nibabel  # noqa: F401
        import scipy.sparse  # noqa: F401

        import rest2visual.preprocess.resample  # noqa: F401
    base = _maxrss_mib()
    start = time.perf_counter()
    result = {"ours": run_ours, "ants": run_ants}[method](files)
    seconds = time.perf_counter() - start
    peak = _maxrss_mib()
    np.save(out, np.asarray(result, dtype=np.float32))
    print(json.dumps({"method": method, "seconds": seconds, "base_mib": base, "peak_mib": peak,
                      "shape": list(result.shape), "out_mib": result.nbytes / 2**20}))


def max_abs_diff(a_path: Path, b_path: Path) -> tuple[float, float]:
    a, b = np.load(a_path, mmap_mode="r"), np.load(b_path, mmap_mode="r")
    diff = scale = 0.0
    for t in range(a.shape[3]):
        diff = max(diff, float(np.abs(a[..., t] - b[..., t]).max()))
        scale = max(scale, float(np.abs(b[..., t]).max()))
    return diff, scale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--volumes", type=int, default=226, help="time points of the series")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the registration and series here (default: a temp dir)")
    p.add_argument("--worker", choices=["ours", "ants"], help=argparse.SUPPRESS)
    p.add_argument("--files", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.files), args.out)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        files = setup(workdir, args.volumes)
        print(f"warp a native series {NATIVE_SHAPE} × {args.volumes} ({NATIVE_MM} mm, int16 "
              f".nii.gz) to MNI {RES_MM:g} mm through a SyN registration")
        results = {}
        for method in ("ours", "ants"):
            out = Path(tmp) / f"{method}.npy"
            proc = subprocess.run([sys.executable, __file__, "--worker", method,
                                   "--files", json.dumps(files), "--out", str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return proc.returncode
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        diff, scale = max_abs_diff(Path(tmp) / "ours.npy", Path(tmp) / "ants.npy")
    ours, ref = results["ours"], results["ants"]
    print(f"output {tuple(ours['shape'])} float32 = {ours['out_mib']:.0f} MiB")
    labels = {"ours": "(a) MniResampler.series", "ants": "(b) ants.apply_transforms -e 3"}
    for r in (ours, ref):
        print(f"{labels[r['method']]:>32}: {r['seconds']:7.2f} s   peak RSS "
              f"{r['peak_mib']:6.0f} MiB (high-water mark after imports {r['base_mib']:.0f} MiB)")
    print(f"speed-up (b / a): {ref['seconds'] / ours['seconds']:.1f}x")
    print(f"peak memory (a / b): {ours['peak_mib'] / ref['peak_mib']:.2f}")
    print(f"max |a - b|: {diff:.3g} (max |b| {scale:.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
