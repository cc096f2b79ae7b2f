"""Register a subject's anatomy (functional space) to the MNI152 template with ANTs.

The moving image is the subject's T1 anatomy resampled into functional space
(NSD ``T1_to_func1pt8mm``); its header has the right voxel size but an origin at
the grid centre, unrelated to MNI. ``antsRegistration`` starts from a
centre-of-mass alignment (antspyx's default initial transform for every
affine-bearing ``type_of_transform``), so the origin offset, a few degrees of
rotation, ~±8 % scale and a smooth nonlinear warp are all recovered by the
affine + SyN stages.

Outputs (all written atomically under ``out_dir``):

* ``{prefix}_from-func_to-MNI152_res-{res}_desc-affine_xfm.mat`` — ANTs affine
  (ITK .mat),
* ``{prefix}_from-func_to-MNI152_res-{res}_desc-warp_xfm.nii.gz`` — SyN
  displacement field (on the template grid; zero for affine-only transform types),
* ``{prefix}_from-MNI152_to-func_res-{res}_desc-warp_xfm.nii.gz`` — its inverse,
* ``{prefix}_from-func_to-MNI152_res-{res}_desc-composite_xfm.nii.gz`` — all
  transforms composed into one displacement field sampled on the MNI grid
  (what every later stage uses, through
  :class:`~rest2visual.preprocess.resample.MniResampler`), with a JSON sidecar
  recording the native grid and the settings,
* ``{prefix}_space-MNI152_res-{res}_T1w.nii.gz`` — the anatomy warped to MNI
  through the composed field (so it shows exactly what later stages get).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rest2visual.atomic import atomic_path, save_nifti
from rest2visual.checks import InputError, check_affine, check_finite
from rest2visual.preprocess.qc import template_correlation
from rest2visual.preprocess.resample import (LPS, MniResampler, image_name, sidecar_path,
                                             warp_to_mni)

#: ``registration.metric`` values antspyx accepts for both the affine and SyN stages
METRICS = ("mattes", "meansquares", "GC", "CC", "demons")


@dataclass(frozen=True)
class RegistrationResult:
    """Paths of one subject's registration outputs (see the module docstring)."""

    affine: Path
    warp: Path
    inverse_warp: Path
    composite: Path
    sidecar: Path
    warped_anatomy: Path

    @property
    def transforms(self) -> list[str]:
        """Forward transform list for ``ants.apply_transforms`` (last applied first)."""
        return [str(self.warp), str(self.affine)]

    @property
    def files(self) -> list[Path]:
        return [self.affine, self.warp, self.inverse_warp, self.composite, self.sidecar,
                self.warped_anatomy]


def res_label(resolution_mm: float) -> str:
    """BIDS ``res-`` value of an MNI resolution: 2 → ``2``, 1.5 → ``1p5``."""
    r = float(resolution_mm)
    return str(int(r)) if r.is_integer() else f"{r:g}".replace(".", "p")


def registration_outputs(out_dir, prefix: str, resolution_mm: float) -> RegistrationResult:
    """The output paths :func:`register_to_mni` writes (for rules and callers)."""
    # every name carries res-: each transform was estimated against that template grid
    out_dir, res = Path(out_dir), res_label(resolution_mm)
    fwd = f"{prefix}_from-func_to-MNI152_res-{res}"
    composite = out_dir / f"{fwd}_desc-composite_xfm.nii.gz"
    return RegistrationResult(
        affine=out_dir / f"{fwd}_desc-affine_xfm.mat",
        warp=out_dir / f"{fwd}_desc-warp_xfm.nii.gz",
        inverse_warp=out_dir / f"{prefix}_from-MNI152_to-func_res-{res}_desc-warp_xfm.nii.gz",
        composite=composite,
        sidecar=sidecar_path(composite),
        warped_anatomy=out_dir / f"{prefix}_space-MNI152_res-{res}_T1w.nii.gz",
    )


def to_ants(img, what: str = "image"):
    """A nibabel image (3D or 4D) as an ANTsImage with the same physical space.

    ITK keeps origin and direction in LPS, so x and y of the RAS affine are
    negated. Sheared affines cannot be represented and raise InputError.
    """
    import ants

    affine = np.asarray(img.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    rotation = affine[:3, :3] / spacing
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4):
        raise InputError(f"{image_name(img)}: {what} has a sheared affine, which ITK cannot "
                         f"represent:\n{np.array2string(affine, precision=4)}")
    data = np.asarray(img.dataobj, dtype=np.float32)
    direction, origin = LPS @ rotation, LPS @ affine[:3, 3]
    if data.ndim == 4:
        tr = float(img.header.get_zooms()[3]) or 1.0
        direction4 = np.eye(4)
        direction4[:3, :3] = direction
        return ants.from_numpy(data, origin=tuple(origin) + (0.0,),
                               spacing=tuple(spacing) + (tr,), direction=direction4)
    return ants.from_numpy(data, origin=tuple(origin), spacing=tuple(spacing),
                           direction=direction)


def ants_seed(seed: int | None) -> int | None:
    """antsRegistration's ``--random-seed`` for our ``seed`` (≥ 0): ``seed + 1``.

    ANTs treats 0 as "seed from the clock", so the config's ``seed: 0`` would not
    be reproducible if passed through. None keeps ANTs' clock seeding.
    """
    if seed is None:
        return None
    if int(seed) < 0:
        raise InputError(f"registration seed {seed}: expected an integer ≥ 0")
    return int(seed) + 1


def itk_threads(n: int) -> None:
    """Make ITK (ANTs) in this process use ``n`` threads; call before the first ANTs call.

    ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, when it creates its
    first thread pool, so this must run before ``ants`` registers anything (the
    ``rest2visual register`` command does it first thing). ``n = 1`` is what
    makes registrations bitwise reproducible (see :func:`register_to_mni`).
    """
    if int(n) < 1:
        raise InputError(f"--threads {n}: expected an integer ≥ 1")
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(n))


@contextlib.contextmanager
def _ants_random_seed(seed: int | None):
    """Pass ``--random-seed`` to antsRegistration (antspyx keeps it module-global).

    ``set_ants_deterministic(on=False, ...)`` sets the seed without restricting
    the transform types to the ``Repro`` ones; the previous state is restored.
    """
    from ants import config as ants_config

    before = (ants_config._deterministic, ants_config._random_seed)
    ants_config.set_ants_deterministic(on=False, seed_value=ants_seed(seed))
    try:
        yield
    finally:
        ants_config._deterministic, ants_config._random_seed = before


def _check_inputs(anat_img, template_img, moving_mask_img, template_mask_img) -> None:
    if anat_img.ndim != 3:
        raise InputError(f"{image_name(anat_img)}: expected a 3D anatomy, "
                         f"found shape {anat_img.shape}")
    if template_img.ndim != 3:
        raise InputError(f"{image_name(template_img)}: expected a 3D template, "
                         f"found shape {template_img.shape}")
    for img, what in ((anat_img, "anatomy"), (template_img, "template")):
        data = np.asarray(img.dataobj)
        check_finite(data, image_name(img))
        if float(np.ptp(data)) == 0.0:
            raise InputError(f"{image_name(img)}: the {what} is constant ({data.flat[0]}); "
                             "nothing to register")
    for mask, ref, what in ((moving_mask_img, anat_img, "native brain mask"),
                            (template_mask_img, template_img, "template brain mask")):
        if mask is None:
            continue
        if tuple(mask.shape) != tuple(ref.shape):
            raise InputError(f"{image_name(mask)}: {what} has shape {mask.shape}, expected "
                             f"{ref.shape} like {image_name(ref)}")
        check_affine(mask.affine, ref.affine,
                     f"{image_name(mask)} ({what} vs {image_name(ref)})")
        if not np.any(np.asarray(mask.dataobj)):
            raise InputError(f"{image_name(mask)}: {what} is empty")


def _copy_atomic(src, dst) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _identity_files(fixed, tmp: Path, affine, warp):
    """Identity stand-ins so every transform type yields the same set of files."""
    import ants

    if affine is None:
        affine = str(tmp / "identity.mat")
        ants.write_transform(ants.create_ants_transform(transform_type="AffineTransform",
                                                        dimension=3), affine)
    if warp is None:
        warp = str(tmp / "identity_warp.nii.gz")
        zeros = np.zeros(tuple(fixed.shape) + (3,), dtype=np.float32)
        field = ants.from_numpy(zeros, origin=fixed.origin, spacing=fixed.spacing,
                                direction=fixed.direction, has_components=True)
        ants.image_write(field, warp)
    return affine, warp


def register_to_mni(anat_img, template_img, *, out_dir, prefix: str,
                    type_of_transform: str = "SyN", metric: str = "mattes",
                    iterations: Sequence[int] = (40, 20, 0), seed: int | None = 0,
                    moving_mask_img=None, template_mask_img=None) -> RegistrationResult:
    """Register a native anatomy to the MNI template; write transforms and composite.

    Parameters
    ----------
    anat_img : 3D nibabel image, the anatomy on the native functional grid
        (e.g. 1.8 mm); any origin.
    template_img : 3D MNI template on the target grid (e.g.
        :func:`~rest2visual.preprocess.template.mni_template`); its voxel size
        (mm) names the ``res-`` of the outputs.
    out_dir, prefix : where to write, and the file name stem (e.g. ``sub-01``).
    type_of_transform : any antspyx type (``SyN``, ``SyNRA``, ``Affine``, ...).
    metric : similarity for the affine and SyN stages (one of :data:`METRICS`).
    iterations : SyN iterations per level, coarse → fine (``reg_iterations``).
    seed : seeds antsRegistration's metric sampling (as ``--random-seed seed+1``,
        see :func:`ants_seed`); None seeds from the clock. Runs are bitwise
        reproducible with a seed and one ITK thread (``rest2visual register``'s
        default, ``--threads 1``: see :func:`itk_threads`). With more threads the
        metric's sums run in a varying order, and SyN amplifies those rounding
        differences: the composed fields of two 2-thread runs of the demo's
        subject differed by a median 1.1–4.1 mm (p95 up to 7 mm).
    moving_mask_img : native brain mask; the anatomy is multiplied by it first,
        because the template is skull-stripped and skull would pull the match.
    template_mask_img : optional MNI mask restricting the SyN metric.

    Returns
    -------
    RegistrationResult with the paths written.
    """
    import ants

    _check_inputs(anat_img, template_img, moving_mask_img, template_mask_img)
    if metric not in METRICS:
        raise InputError(f"registration metric {metric!r}: expected one of {METRICS}")
    ants_seed(seed)  # validates before any work
    iterations = tuple(int(i) for i in iterations)
    if not iterations or min(iterations) < 0:
        raise InputError(f"registration iterations {iterations}: expected non-negative counts")
    resolution = float(np.linalg.norm(np.asarray(template_img.affine)[:3, 0]))
    result = registration_outputs(out_dir, prefix, resolution)
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    moving_img = anat_img
    if moving_mask_img is not None:
        brain = np.asarray(anat_img.dataobj, dtype=np.float32) \
            * (np.asarray(moving_mask_img.dataobj) > 0)
        moving_img = anat_img.__class__(brain, anat_img.affine, anat_img.header)
    fixed = to_ants(template_img, "template")
    moving = to_ants(moving_img, "anatomy")
    extra = {}
    if template_mask_img is not None:
        extra["mask"] = to_ants(template_mask_img, "template mask")

    # ANTs' working folder; a killed run's (TemporaryDirectory never cleaned up) goes first
    for stale in Path(out_dir).glob(f".{prefix}-ants-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{prefix}-ants-") as tmp:
        tmp = Path(tmp)
        try:
            with _ants_random_seed(seed):
                reg = ants.registration(fixed, moving, type_of_transform=type_of_transform,
                                        outprefix=str(tmp / "reg_"), aff_metric=metric,
                                        syn_metric=metric, reg_iterations=iterations, **extra)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{image_name(anat_img)}: ANTs registration ({type_of_transform}, "
                             f"{metric}) failed: {exc}") from exc
        fwd = list(reg["fwdtransforms"])
        inv = list(reg["invtransforms"])
        affine = next((f for f in fwd if f.endswith(".mat")), None)
        warp = next((f for f in fwd if f.endswith("Warp.nii.gz")), None)
        inverse_warp = next((f for f in inv if f.endswith("InverseWarp.nii.gz")), None)
        composite = ants.apply_transforms(fixed, moving, fwd, compose=str(tmp / "composite_"))
        if composite is None:
            raise RuntimeError(f"antsApplyTransforms wrote no composed field for {prefix}")
        # affine-only types get a zero field, so every type writes the same files
        affine, warp = _identity_files(fixed, tmp, affine, warp)
        inverse_warp = inverse_warp or warp
        # the anatomy goes through the same composed field later stages use
        warped = warp_to_mni(anat_img, MniResampler.from_composite(composite, anat_img))
        # a previous run's sidecar would describe another native grid until rewritten
        result.sidecar.unlink(missing_ok=True)
        _copy_atomic(affine, result.affine)
        _copy_atomic(warp, result.warp)
        _copy_atomic(inverse_warp, result.inverse_warp)
        _copy_atomic(composite, result.composite)
    save_nifti(warped, result.warped_anatomy)
    meta = {
        "method": "ants",
        "type_of_transform": type_of_transform,
        "metric": metric,
        "iterations": list(iterations),
        "seed": seed,
        "ants_random_seed": ants_seed(seed),
        # "1": bitwise reproducible; unset: ITK's default (all cores)
        "itk_threads": os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"),
        "antspyx": getattr(ants, "__version__", "unknown"),
        "moving": image_name(anat_img),
        "native_grid": {"shape": list(anat_img.shape[:3]),
                        "affine": np.asarray(anat_img.affine, dtype=float).tolist()},
        "target_grid": {"shape": list(template_img.shape[:3]),
                        "affine": np.asarray(template_img.affine, dtype=float).tolist()},
        "transforms": [result.warp.name, result.affine.name],
        "template_correlation": template_correlation(warped, template_img,
                                                     template_mask_img),
    }
    with atomic_path(result.sidecar) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return result


# --- command line: rest2visual register ------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rest2visual register",
        description="Register a subject's anatomy (functional space) to MNI152 with ANTs.")
    p.add_argument("--anat", required=True, help="anatomy in functional space (NIfTI)")
    p.add_argument("--brainmask", required=True, help="native brain mask (same grid)")
    p.add_argument("--resolution", type=float, required=True, help="MNI grid, mm (2 or 4)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--prefix", required=True, help="file name stem, e.g. sub-01")
    p.add_argument("--type-of-transform", default="SyN")
    p.add_argument("--metric", default="mattes", choices=METRICS)
    p.add_argument("--iterations", type=int, nargs="+", default=[40, 20, 0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="ITK threads (default 1: bitwise-reproducible runs); more are faster "
                        "but two runs then differ (median 1-4 mm in the composed field)")
    p.add_argument("--qc", default=None, help="write the QC figure here (PNG)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``rest2visual register --anat A --brainmask M --resolution 4 --out-dir D --prefix P``."""
    from rest2visual.checks import load_nifti
    from rest2visual.preprocess.template import mni_brain_mask, mni_template

    args = _parser().parse_args(argv)
    itk_threads(args.threads)
    anat = load_nifti(args.anat, ndim=3, what="anatomy in functional space")
    mask = load_nifti(args.brainmask, ndim=3, shape=anat.shape, affine=anat.affine,
                      what="native brain mask")
    template = mni_template(args.resolution)
    result = register_to_mni(anat, template, out_dir=args.out_dir, prefix=args.prefix,
                             type_of_transform=args.type_of_transform, metric=args.metric,
                             iterations=args.iterations, seed=args.seed, moving_mask_img=mask)
    if args.qc:
        import nibabel as nib

        from rest2visual.preprocess.qc import plot_registration_qc

        plot_registration_qc(nib.load(str(result.warped_anatomy)), template, args.qc,
                             title=f"{args.prefix}: {args.type_of_transform} to MNI152 "
                                   f"{res_label(args.resolution)} mm",
                             mask_img=mni_brain_mask(args.resolution))
    for path in result.files:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
