"""The rest stage: a session's PCC seed connectivity z-map in MNI space (paper Section 3.1).

Per rest run (already warped to the MNI grid of the brain mask):

0. units (``units``): ``raw`` scanner units (the paper), or ``psc``: each voxel's
   series as percent signal change of its own temporal mean, 100·(x − x̄)/x̄, so
   the EPI intensity (coil sensitivity, tissue T2*) does not scale β;
1. seed r(t): mean series of the seed voxels (PCC sphere or seed mask, ∩ brain mask);
2. zero-phase Butterworth band-pass of r (default 0.01–0.1 Hz);
3. ``hrf_model``: causal convolution with the canonical HRF at the run's TR → r̃(t)
   (``glover``/``spm``: the paper's recipe), or ``none``: r̃ = the band-passed seed
   (zero-lag seed regression, the field's standard: the seed is already a BOLD
   signal, and the HRF's ~5 s delay decorrelates a 0.01–0.1 Hz regressor from it);
4. voxelwise OLS x(v, t) = β(v)·r̃(t) + c(v) [+ confounds] over the brain mask;
5. z-score β over the mask (mean 0, std 1 over mask voxels).

Runs are combined by ``combine_runs``:

- ``mean``: the mean of the per-run z-maps, z-scored again over the mask. The
  second z-scoring keeps the output a z-map in the paper's sense (mean 0, std 1
  in the mask) whatever the agreement between runs: the mean of two z-maps has a
  std below 1 by an amount that depends on their correlation, and the model
  should not see that as a change of scale between sessions.
- ``concat``: one fit on the runs stacked in time, with a shared β and a
  separate intercept (and confound columns) per run; then one z-scoring.

The output is a 3D float32 NIfTI on the mask's grid, zeros outside the mask.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from rest2visual.atomic import save_figure, save_nifti
from rest2visual.checks import InputError, check_affine, check_finite, load_nifti, require_file
from rest2visual.config import defaults
from rest2visual.preprocess.glm import (ols_betas, ols_betas_blocks, seed_design,
                                        stack_run_designs, zscore_in_mask)
from rest2visual.preprocess.recipe import make_recipe, write_recipe
from rest2visual.preprocess.seed import seed_region, seed_timeseries
from rest2visual.preprocess.signal import HRF_MODELS, bandpass, hrf_convolve

COMBINE_MODES = ("mean", "concat")
#: voxel series units before the fit (see the module docstring, step 0)
UNITS = ("raw", "psc")
#: psc: voxels whose temporal mean is below this fraction of the median in-mask mean
#: (outside the acquired brain: NSD's masked time series are 0 there) get β = 0
PSC_MIN_MEAN_FRACTION = 0.1
#: default PCC seed (MNI mm) and radius (mm), as in config/config.yaml
PCC_CENTER_MM = (0.0, -52.0, 26.0)
PCC_RADIUS_MM = 8.0
#: runs of one session whose TRs differ by more than this (s) are refused
TR_TOLERANCE_S = 1e-3
_TIME_UNIT_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def _name(img, index: int) -> str:
    path = img.get_filename() if hasattr(img, "get_filename") else None
    return str(path) if path else f"rest run {index + 1} (in-memory image)"


def repetition_time(img, fallback_s: float | None = None, source: str = "rest run",
                    log=print) -> float:
    """TR (s) of a 4D NIfTI: pixdim[4] in the header's time unit, else ``fallback_s``.

    The header value is trusted only when ``xyzt_units`` names a time unit (s, ms,
    µs). NSD's headers carry xyzt_units = 0 (unknown) and pixdim[4] = 4/3 for the
    1.8 mm series although the true TR is 1.33318 s (nibabel and many tools also
    write pixdim[4] = 1 with an unknown unit): with an unknown unit the TR is
    ``fallback_s``, the configured TR of the space (``nsd.tr_s`` for func1pt8mm,
    ``nsd.tr_s_func1mm`` for func1mm). ``log`` gets one line saying which TR was
    used and why. Raises InputError for a TR ≤ 0 or when neither the header nor
    the fallback gives one.
    """
    unit = img.header.get_xyzt_units()[1]
    pixdim4 = float(img.header.get_zooms()[3])
    if unit in _TIME_UNIT_S:
        tr_s = pixdim4 * _TIME_UNIT_S[unit]
        origin = f"the header (pixdim[4] = {pixdim4:.6g} {unit})"
        if fallback_s is not None and abs(tr_s - fallback_s) > TR_TOLERANCE_S:
            warnings.warn(f"{source}: header TR {tr_s:.6g} s differs from the configured "
                          f"{fallback_s:.6g} s; using the header", stacklevel=2)
    elif fallback_s is not None:
        tr_s = float(fallback_s)
        raw = int(img.header["xyzt_units"])
        origin = (f"the configured TR of the space (--tr): the header's time unit is "
                  f"{unit!r} (xyzt_units = {raw}, time code {raw & 0x38}; NSD's headers carry "
                  f"xyzt_units = 0), so its pixdim[4] = {pixdim4:.6g} is not taken as a TR")
    else:
        raise InputError(f"{source}: the header has no TR (time unit {unit!r}) and no "
                         "fallback TR was given (--tr / nsd.tr_s, nsd.tr_s_func1mm)")
    if not tr_s > 0:
        raise InputError(f"{source}: repetition time must be > 0 s, found {tr_s} ({origin})")
    if log is not None:
        log(f"{source}: TR {tr_s:.6g} s from {origin}")
    return tr_s


def session_tr(run_imgs, fallback_s: float | None = None, log=print) -> float:
    """The common TR (s) of a session's runs; InputError if they disagree by > 1 ms.
    ``log``: where :func:`repetition_time` says which TR it used (None: nowhere)."""
    trs = [repetition_time(img, fallback_s, _name(img, i), log=log)
           for i, img in enumerate(run_imgs)]
    for i, tr in enumerate(trs[1:], start=1):
        if abs(tr - trs[0]) > TR_TOLERANCE_S:
            raise InputError(f"TRs of the session's runs disagree: {_name(run_imgs[0], 0)} has "
                             f"{trs[0]:.6g} s, {_name(run_imgs[i], i)} has {tr:.6g} s")
    return trs[0]


class MaskIndex:
    """In-mask voxels of a 3D brain mask, enumerated in one fixed (Fortran) order.

    nibabel returns Fortran-ordered arrays; gathering the (V, T) rows of the
    (X·Y·Z, T) view of such an array is ~10× faster than ``data[mask]``
    (91×109×91×226 float32: 0.11 s vs 1.3 s). The voxel order is the same for
    every run whatever its memory layout, so per-run vectors line up.
    """

    def __init__(self, brain: np.ndarray):
        self.brain = np.asarray(brain, dtype=bool)
        self._flat = {"F": np.flatnonzero(self.brain.ravel(order="F"))}
        coords = np.unravel_index(self._flat["F"], self.brain.shape, order="F")
        self._flat["C"] = np.ravel_multi_index(coords, self.brain.shape, order="C")

    def series(self, data: np.ndarray) -> np.ndarray:
        """(X, Y, Z, T) → (T, V) float32 (a transposed view of a C-ordered (V, T) array)."""
        order = "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"
        flat = data.reshape(-1, data.shape[3], order=order)
        return flat[self._flat[order]].astype(np.float32, copy=False).T

    def select(self, region: np.ndarray) -> np.ndarray:
        """(V,) boolean: which in-mask voxels lie in the 3D boolean ``region``."""
        return region.ravel(order="F")[self._flat["F"]]

    def volume(self, values: np.ndarray) -> np.ndarray:
        """(V,) → (X, Y, Z) float32, zeros outside the mask."""
        out = np.zeros(self.brain.shape, dtype=np.float32, order="F")
        out.reshape(-1, order="F")[self._flat["F"]] = values
        return out


def _run_series(img, index: int, mask_img, voxels: MaskIndex) -> np.ndarray:
    """Check a run against the mask grid and return its (T, V) in-mask series, float32."""
    name = _name(img, index)
    if img.ndim != 4 or tuple(img.shape[:3]) != voxels.brain.shape:
        raise InputError(f"{name}: expected a 4D rest run on the grid of the brain mask "
                         f"{_name(mask_img, -1)}, shape {voxels.brain.shape} × T; "
                         f"found {img.shape}")
    check_affine(img.affine, mask_img.affine, name)
    series = voxels.series(np.asanyarray(img.dataobj))
    # a float64 sum is NaN/inf iff some value is (float32 values cannot overflow it);
    # cheaper than an isfinite mask, which is only built to count the bad values
    if not np.isfinite(series.sum(dtype=np.float64)):
        check_finite(series, f"{name} (inside the brain mask)")
    return series


def percent_signal_change(series: np.ndarray, source: str = "rest run") -> np.ndarray:
    """(T, V) series → 100·(x − x̄)/x̄ per voxel (column), float32.

    Columns whose temporal mean is below ``PSC_MIN_MEAN_FRACTION`` of the median
    column mean (no signal: outside the acquired brain) become 0, so their β is 0
    as it is in raw units. Raises InputError when no column has a positive mean.
    """
    mean = series.mean(axis=0, dtype=np.float64)
    positive = mean[mean > 0]
    if positive.size == 0:
        raise InputError(f"{source}: percent signal change needs a positive mean signal; "
                         "every in-mask voxel has mean ≤ 0")
    valid = mean >= PSC_MIN_MEAN_FRACTION * np.median(positive)
    scale = np.where(valid, 100.0 / np.where(valid, mean, 1.0), 0.0)
    return ((series - mean.astype(np.float32)) * scale.astype(np.float32)).astype(
        np.float32, copy=False)


def recipe_name(hrf_model: str, units: str) -> str:
    """The rest-map recipe's label in file names and tables, e.g. ``glover-raw``, ``none-psc``."""
    return f"{hrf_model}-{units}"


def seed_regressor(seed: np.ndarray, tr_s: float, *, bandpass_hz=(0.01, 0.1),
                   filter_order: int = 2, hrf_model: str = "glover",
                   source: str = "rest run") -> np.ndarray:
    """Seed series (T,) → band-passed (and HRF-convolved unless ``hrf_model`` is none)
    regressor r̃ (T,) float64.

    Raises InputError when the seed series (or what the band keeps of it) is constant.
    """
    scale = max(float(np.abs(seed).max()), 1e-30)
    if not seed.std() > 1e-9 * scale:
        raise InputError(f"{source}: the seed time series has zero variance "
                         f"(constant {seed.mean():.6g} over {seed.size} time points)")
    low, high = bandpass_hz
    try:
        filtered = bandpass(seed, tr_s, low, high, filter_order)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from exc
    regressor = hrf_convolve(filtered, tr_s, hrf_model)
    if not regressor.std() > 1e-9 * seed.std():
        raise InputError(f"{source}: the seed time series has no power in the "
                         f"{low}–{high} Hz band")
    return regressor


def pcc_seed_zmap(run_imgs, mask_img, *, seed_center_mm=PCC_CENTER_MM,
                  seed_radius_mm: float = PCC_RADIUS_MM, seed_mask_img=None,
                  bandpass_hz=(0.01, 0.1), filter_order: int = 2, hrf_model: str = "glover",
                  combine_runs: str = "mean", confounds: Sequence[np.ndarray] | None = None,
                  tr_s: float | None = None, units: str = "raw"):
    """PCC seed connectivity z-map of one session's rest runs, in MNI space.

    Parameters
    ----------
    run_imgs : one or more 4D rest runs (X, Y, Z, T_r) on the mask's MNI grid
        (nibabel images or paths); NSD: run01 and run14.
    mask_img : MNI brain mask (X, Y, Z), nonzero = brain (image or path).
    seed_center_mm, seed_radius_mm : seed sphere, MNI mm.
    seed_mask_img : seed mask on the same grid; overrides the sphere.
    bandpass_hz : (low, high) pass band, Hz.
    filter_order : Butterworth order of one pass (applied forward and backward).
    hrf_model : "glover" or "spm" (the paper), or "none" (zero-lag).
    combine_runs : "mean" or "concat" (see the module docstring).
    confounds : one (T_r, K) array per run (e.g. 6 motion parameters) or None.
    tr_s : fallback TR (s) for runs whose header has no time unit.
    units : "raw" (scanner units, the paper) or "psc" (percent signal change per voxel).

    Returns
    -------
    nibabel.Nifti1Image, 3D float32 z-map on the mask's grid (MNI), zeros outside the mask.
    """
    import nibabel as nib

    if combine_runs not in COMBINE_MODES:
        raise ValueError(f"combine_runs must be one of {COMBINE_MODES}, got {combine_runs!r}")
    if hrf_model not in HRF_MODELS:
        raise ValueError(f"hrf_model must be one of {HRF_MODELS}, got {hrf_model!r}")
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    run_imgs = [load_nifti(r, ndim=4, finite=False, what="rest run")
                if isinstance(r, (str, os.PathLike)) else r for r in run_imgs]
    if not run_imgs:
        raise ValueError("no rest run given")
    if isinstance(mask_img, (str, os.PathLike)):
        mask_img = load_nifti(mask_img, ndim=3, what="MNI brain mask")
    if confounds is not None and len(confounds) != len(run_imgs):
        raise InputError(f"got {len(confounds)} confound tables for {len(run_imgs)} runs")
    brain = np.asarray(mask_img.dataobj) > 0
    if brain.ndim != 3 or brain.sum() < 2:
        raise InputError(f"{_name(mask_img, -1)}: expected a 3D brain mask with ≥ 2 voxels, "
                         f"found shape {brain.shape}, {int(brain.sum())} voxels")
    region = seed_region(mask_img, center_mm=seed_center_mm, radius_mm=seed_radius_mm,
                         seed_mask_img=seed_mask_img)
    tr = session_tr(run_imgs, tr_s)

    voxels = MaskIndex(brain)
    seed_cols = voxels.select(region)
    run_z, blocks, designs = [], [], []
    for i, img in enumerate(run_imgs):
        series = _run_series(img, i, mask_img, voxels)
        if units == "psc":
            series = percent_signal_change(series, _name(img, i))
        regressor = seed_regressor(
            seed_timeseries(series, seed_cols), tr, bandpass_hz=bandpass_hz,
            filter_order=filter_order, hrf_model=hrf_model, source=_name(img, i))
        design = seed_design(regressor, None if confounds is None else confounds[i])
        if combine_runs == "mean":
            run_z.append(zscore_in_mask(ols_betas(series, design)[0]))
        else:
            blocks.append(series)
            designs.append(design)
    if combine_runs == "mean":
        z = zscore_in_mask(np.mean(run_z, axis=0)) if len(run_z) > 1 else run_z[0]
    else:
        z = zscore_in_mask(ols_betas_blocks(blocks, stack_run_designs(designs))[0])

    out = nib.Nifti1Image(voxels.volume(z), np.asarray(mask_img.affine, dtype=np.float64))
    out.header.set_data_dtype(np.float32)
    out.header.set_xyzt_units("mm")
    out.header.set_intent("z score")
    out.set_sform(out.affine, code="mni")
    out.set_qform(out.affine, code="mni")
    out.header["descrip"] = b"rest2visual PCC seed connectivity z-map"
    return out


def load_confounds(path: str | os.PathLike, n_timepoints: int) -> np.ndarray:
    """A run's confound table (T, K) from a headerless whitespace/tab TSV (NSD motion: K = 6)."""
    path = require_file(path, "confound table")
    try:
        table = np.loadtxt(path, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: cannot read a numeric confound table without header "
                         f"({exc})") from exc
    if table.shape[0] != n_timepoints:
        raise InputError(f"{path}: expected {n_timepoints} rows (one per time point of its "
                         f"run), found {table.shape[0]}")
    check_finite(table, path)
    return table


def plot_zmap_qc(zmap_img, *, bg_img=None, seed_mask=None, cut_coords=None, title=None):
    """QC figure: the z-map over the template, orthogonal cuts through ``cut_coords`` (MNI mm).

    ``seed_mask`` (3D boolean on the z-map's grid) is outlined. Returns the matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    fig = plt.figure(figsize=(9, 3.2))
    kwargs = {} if bg_img is None else {"bg_img": bg_img}
    display = plotting.plot_stat_map(zmap_img, display_mode="ortho", cut_coords=cut_coords,
                                     threshold=2.0, vmax=6.0, title=title, figure=fig,
                                     draw_cross=False, **kwargs)
    if seed_mask is not None:
        seed_img = nib.Nifti1Image(seed_mask.astype(np.float32), zmap_img.affine)
        display.add_contours(seed_img, levels=[0.5], colors="lime", linewidths=1.0)
    return fig


def _default_template(mask_img):
    """The MNI template on the mask's grid when the mask is on an FSL MNI grid, else None."""
    from rest2visual.preprocess.template import mni_grid, mni_template

    res = float(abs(mask_img.affine[0, 0]))
    grid = mni_grid(res)
    if tuple(mask_img.shape) == grid.shape and np.allclose(mask_img.affine, grid.affine,
                                                           atol=1e-3):
        return mni_template(res)
    return None  # nilearn's own MNI152 background


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rest2visual rest-map",
        description="PCC seed connectivity z-map of one session's rest runs (already in MNI).")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_MNI.nii.gz",
                   help="4D rest runs on the mask's MNI grid (NSD: run01 run14)")
    p.add_argument("--mask", required=True, help="MNI brain mask NIfTI")
    rest = defaults("rest")  # the config's defaults, from its schema
    p.add_argument("--seed-center", nargs=3, type=float, default=rest["seed_center_mm"],
                   metavar=("X", "Y", "Z"), help="seed sphere centre, MNI mm (default PCC)")
    p.add_argument("--seed-radius", type=float, default=rest["seed_radius_mm"],
                   help="seed radius, mm")
    p.add_argument("--seed-mask", help="seed mask NIfTI on the mask's grid (overrides the sphere)")
    p.add_argument("--bandpass", nargs=2, type=float, default=rest["bandpass_hz"],
                   metavar=("LOW_HZ", "HIGH_HZ"), help="seed band-pass, Hz")
    p.add_argument("--filter-order", type=int, default=rest["filter_order"],
                   help="Butterworth order of one pass (applied forward-backward)")
    p.add_argument("--hrf", choices=HRF_MODELS, default=rest["hrf_model"],
                   help="canonical HRF convolved with the seed (the paper's recipe), or none "
                        "(zero-lag seed regression)")
    p.add_argument("--units", choices=UNITS, default=rest["units"],
                   help="voxel series in raw scanner units or percent signal change")
    p.add_argument("--combine", choices=COMBINE_MODES, default=rest["combine_runs"],
                   help="mean of run z-maps (re-z-scored) or one fit on concatenated runs")
    p.add_argument("--confounds", nargs="+", metavar="MOTION.tsv",
                   help="one headerless confound TSV per run, in the order of --runs")
    p.add_argument("--tr", type=float, help="TR (s) for runs whose header has no time unit")
    p.add_argument("--out", required=True,
                   help="output z-map NIfTI (MNI); its recipe goes beside it (.json)")
    p.add_argument("--qc", help="QC figure (png/svg/pdf)")
    p.add_argument("--template", help="QC background (default: MNI template on the mask grid)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        mask_img = load_nifti(args.mask, ndim=3, what="MNI brain mask")
        grid = {"shape": mask_img.shape, "affine": mask_img.affine}
        runs = [load_nifti(r, ndim=4, finite=False, what="rest run in MNI", **grid)
                for r in args.runs]
        seed_img = (load_nifti(args.seed_mask, ndim=3, what="seed mask", **grid)
                    if args.seed_mask else None)
        confounds = None
        if args.confounds:
            if len(args.confounds) != len(runs):
                raise InputError(f"--confounds: got {len(args.confounds)} tables for "
                                 f"{len(runs)} runs")
            confounds = [load_confounds(c, r.shape[3]) for c, r in zip(args.confounds, runs)]
        zmap = pcc_seed_zmap(runs, mask_img, seed_center_mm=args.seed_center,
                             seed_radius_mm=args.seed_radius, seed_mask_img=seed_img,
                             bandpass_hz=tuple(args.bandpass), filter_order=args.filter_order,
                             hrf_model=args.hrf, combine_runs=args.combine,
                             confounds=confounds, tr_s=args.tr, units=args.units)
        save_nifti(zmap, args.out)
        write_recipe(args.out, make_recipe(
            hrf_model=args.hrf, units=args.units, bandpass_hz=args.bandpass,
            filter_order=args.filter_order, combine_runs=args.combine,
            seed_center_mm=args.seed_center, seed_radius_mm=args.seed_radius,
            seed_mask=args.seed_mask, confounds=bool(args.confounds),
            tr_s=session_tr(runs, args.tr, log=None)))
        if args.qc:
            bg = (load_nifti(args.template, ndim=3, what="QC template") if args.template
                  else _default_template(mask_img))
            seed = seed_region(mask_img, center_mm=args.seed_center,
                               radius_mm=args.seed_radius, seed_mask_img=seed_img)
            cut = (np.asarray(mask_img.affine)[:3, :3] @ np.argwhere(seed).mean(axis=0)
                   + np.asarray(mask_img.affine)[:3, 3])
            fig = plot_zmap_qc(zmap, bg_img=bg, seed_mask=seed, cut_coords=tuple(cut),
                               title=Path(args.out).name.split(".")[0])
            save_figure(fig, args.qc, dpi=120)
    except ValueError as exc:  # InputError and bad parameter values: a message, no traceback
        print(f"rest2visual rest-map: error: {exc}", file=sys.stderr)
        return 1
    return 0
