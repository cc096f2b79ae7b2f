"""``rest2visual to-native``: predicted and measured MNI betas → native nsdgeneral voxels.

Image decoders trained on NSD (MindEye2, NeuroPictor, Brain-IT) read each subject's
native func1pt8mm voxels inside NSD's ``nsdgeneral`` ROI. This bridge maps one
protocol's test trials of one subject there:

1. predicted betas (``predictions.h5`` of ``rest2visual evaluate``, ``/methods/<method>``)
   and measured betas (the pack's ``/betas``) of the subject's test rows, MNI in-mask
   vectors in % signal change;
2. → the native grid through the inverse registration
   (:class:`~rest2visual.preprocess.native.NativeResampler`: ANTs' inverse warp, or
   NSD's ``MNI-to-func1pt8`` map with ``registration.method: nsd``);
3. → the nsdgeneral voxels (values > 0; NSD writes 1 inside, 0 cortex outside, −1
   outside the brain) in NSD's order: numpy boolean indexing (C order) of the volume as
   nibabel loads it, ``volume[nsdgeneral > 0]``. That is how MedARC's MindEye-family
   preparation flattens nsdgeneral (MedARC-AI/MindEye_Imagery ``src/utils.py``:
   ``nb.load(...nsdgeneral.nii.gz).get_fdata()``, mask ``== 1``, ``.flatten()`` of the
   mask and of the reshaped betas) and what Python loaders of NSD do; NSD's MATLAB code
   (cvnlab/nsddatapaper, ``find(img > 0)``) lists the same voxels in column-major order
   instead, so decoders trained on MATLAB-prepared data need ``voxel_indices`` re-sorted;
4. → z-scored (below), written to one HDF5 per subject and protocol.

Normalisation: each voxel z-scored within each NSD session, over that session's trials in
the file (the protocol's test trials of the subject), predicted and measured separately
with their own mean and SD (population SD, ddof = 0): per-session z-scoring, the NSD
convention MindEye-family preparations and encoding benchmarks start from. A voxel whose
SD within a session is 0 (e.g. a session with one test trial) gets z = 0 there. MindEye2's
released data were instead z-scored with the training set's voxel mean and SD (MindEye2
paper, appendix A.2); for that or any other convention, the un-normalised betas (% signal
change) are stored too.

HDF5 layout (``n_trials`` test trials of the subject in pack order, ``n_voxels``
nsdgeneral voxels)::

    /betas_predicted, /betas_measured   (n_trials, n_voxels) float32, z (see above)
    /psc/betas_predicted, /psc/betas_measured   (n_trials, n_voxels) float32, % signal
                         change before z-scoring; NaN where the voxel has no MNI source
    /trials/subject, session, trial   (n_trials,) int32 (trial: 1-based within session)
    /trials/nsd_id       (n_trials,) int32, 0-based 73k image ids (as the pack stores them)
    /trials/pack_row     (n_trials,) int64, rows of the pack's /betas
    /voxel_indices       (n_voxels, 3) int32, (i, j, k) on the func1pt8mm grid, NSD order
    /voxel_has_source    (n_voxels,) bool: False where the MNI data give no value (z = 0)

Root attributes name the subject, protocol, method, transform, normalisation, voxel order,
native grid (shape, affine) and inputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError, load_nifti, require_file
from rest2visual.errors import name_file
from rest2visual.nsd.keys import SPACES
from rest2visual.preprocess.native import MIN_WEIGHT, NativeResampler
from rest2visual.preprocess.template import Grid

#: the normalisation, as written into the HDF5 attributes
NORMALISATION = ("z-score per voxel within each NSD session over that session's trials in "
                 "this file, predicted and measured each with its own mean and SD (ddof 0); "
                 "SD 0 gives z = 0; /psc holds the betas before it (% signal change)")
#: the voxel order, as written into the HDF5 attributes
VOXEL_ORDER = ("nsdgeneral > 0 in C order of the volume as nibabel loads it "
               "(numpy boolean indexing), MedARC's MindEye-family order")


def nsdgeneral_voxels(roi_img) -> np.ndarray:
    """(x, y, z) bool: the nsdgeneral ROI (values > 0; NSD: 1 in, 0 cortex out, −1 non-brain)."""
    data = np.asarray(roi_img.dataobj, dtype=np.float32)
    return np.nan_to_num(data, nan=-1.0) > 0


def zscore_per_session(betas: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """(n_trials, n_voxels) → float32 z-scores per voxel within each session (ddof 0).

    NaN (no source) and zero-SD voxels give 0.
    """
    betas = np.asarray(betas, dtype=np.float64)
    out = np.zeros(betas.shape, dtype=np.float32)
    for session in np.unique(sessions):
        rows = np.flatnonzero(np.asarray(sessions) == session)
        part = betas[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (part - part.mean(axis=0)) / part.std(axis=0)
        out[rows] = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def subject_test_betas(predictions_path, pack_path, subject: int, method: str = "rest2visual"):
    """The subject's test trials: (trials DataFrame with pack_row, predicted (N, V),
    measured (N, V) float32 % signal change, the pack's MNI MaskedGrid).

    predictions_path : ``predictions.h5`` of ``rest2visual evaluate`` (``/rows`` = pack rows,
        ``/methods/<method>`` (N_test, V) float16, the pack's ``/mask``).
    """
    import h5py

    from rest2visual.dataset.pack import Pack
    from rest2visual.evaluate.blocks import read_rows
    from rest2visual.maskvec import MaskedGrid

    predictions_path = require_file(predictions_path, "evaluation predictions (predictions.h5)")
    pack = Pack(pack_path)
    with h5py.File(predictions_path, "r") as h5:
        for name in ("rows", f"methods/{method}"):
            if name not in h5:
                raise InputError(f"{predictions_path}: expected the dataset /{name} of "
                                 f"`rest2visual evaluate`, found {sorted(h5.keys())}")
        grid = MaskedGrid.from_h5(h5)
        if grid.shape != pack.grid.shape or not np.array_equal(grid.mask, pack.grid.mask) \
                or not np.allclose(grid.affine, pack.grid.affine, atol=1e-3):
            raise InputError(f"{predictions_path}: expected the MNI grid of {pack.path} "
                             f"(shape {pack.grid.shape}, {pack.grid.n_voxels} in-mask voxels), "
                             f"found shape {grid.shape}, {grid.n_voxels} in-mask voxels")
        rows = h5["rows"][()].astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(pack.trials)):
            raise InputError(f"{predictions_path}: expected /rows within the {len(pack.trials)} "
                             f"rows of {pack.path}, found {rows.min()}..{rows.max()}")
        mine = np.flatnonzero(pack.trials["subject"].to_numpy()[rows] == subject)
        mine = mine[np.argsort(rows[mine], kind="stable")]
        predicted = read_rows(h5["methods"][method], mine)
    measured = read_rows(pack.h5["betas"], rows[mine])
    trials = pack.trials.loc[rows[mine], ["subject", "session", "trial", "nsd_id"]]
    trials = trials.assign(pack_row=rows[mine]).reset_index(drop=True)
    grid = pack.grid
    pack.close()
    return trials, predicted, measured, grid


def write_native_betas(out_path, *, trials, predicted, measured, voxels, roi_img,
                       attrs: dict) -> Path:
    """Write the bridge HDF5 (module docstring) atomically; returns its path.

    predicted, measured : (n_trials, n_voxels) float32 % signal change at the True
    ``voxels`` (C order), NaN where no source.
    """
    import h5py

    sessions = trials["session"].to_numpy()
    has_source = ~np.isnan(measured).any(axis=0) & ~np.isnan(predicted).any(axis=0) \
        if len(trials) else np.ones(measured.shape[1], bool)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        for name, values in (("betas_predicted", predicted), ("betas_measured", measured)):
            h5.create_dataset(name, data=zscore_per_session(values, sessions))
            h5.create_dataset(f"psc/{name}", data=np.asarray(values, np.float32))
        for column in ("subject", "session", "trial", "nsd_id"):
            h5.create_dataset(f"trials/{column}", data=trials[column].to_numpy(np.int32))
        h5.create_dataset("trials/pack_row", data=trials["pack_row"].to_numpy(np.int64))
        h5.create_dataset("voxel_indices", data=np.argwhere(voxels).astype(np.int32))
        h5.create_dataset("voxel_has_source", data=has_source)
        h5.attrs.update({
            **attrs, "normalisation": NORMALISATION, "voxel_order": VOXEL_ORDER,
            "units_psc": "% signal change", "nsd_id": "0-based 73k image ids",
            "n_trials": len(trials), "n_voxels": int(voxels.sum()),
            "n_voxels_without_source": int((~has_source).sum()),
            "native_shape": list(voxels.shape),
            "native_affine": np.asarray(roi_img.affine, float),
        })
    return Path(out_path)


def _check_registration_grids(sidecar, roi_img, mni_grid, roi_path, pack_path) -> None:
    """The registration's recorded native and MNI grids must be the nsdgeneral's and the pack's."""
    sidecar = require_file(sidecar, "registration sidecar (JSON)")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{sidecar}: registration sidecar is not valid JSON ({exc})") from exc
    for grid_key, shape, affine, path, what in (
            ("native_grid", roi_img.shape[:3], roi_img.affine, roi_path, "nsdgeneral ROI"),
            ("target_grid", mni_grid.shape, mni_grid.affine, pack_path, "pack's MNI grid")):
        grid = meta.get(grid_key)
        if grid and (tuple(grid["shape"]) != tuple(shape)
                     or not np.allclose(grid["affine"], affine, atol=1e-3)):
            found = np.round(np.asarray(affine)[:3], 3).tolist()
            raise InputError(f"{name_file(path)}: {what}: expected the grid registered in "
                             f"{sidecar} (shape {tuple(grid['shape'])}), found shape "
                             f"{tuple(shape)} (affine {found})")


def _parser() -> argparse.ArgumentParser:
    from rest2visual.evaluate.names import METHODS

    p = argparse.ArgumentParser(
        prog="rest2visual to-native",
        description="Predicted and measured MNI betas of one subject's test trials → native "
                    "func1pt8mm nsdgeneral voxels (NSD's order), z-scored per session, HDF5.")
    p.add_argument("--predictions", required=True, help="predictions.h5 of `rest2visual evaluate`")
    p.add_argument("--pack", required=True, help="the triplet pack the evaluation read")
    p.add_argument("--subject", type=int, required=True, help="NSD subject (1..8)")
    p.add_argument("--nsdgeneral", required=True,
                   help="the subject's nsdgeneral ROI (nsddata/ppdata/subjXX/func1pt8mm/roi/)")
    p.add_argument("--space", default="func1pt8mm", choices=SPACES,
                   help="the NSD space of --nsdgeneral (recorded)")
    p.add_argument("--protocol", default="", help="the evaluation protocol (recorded only)")
    p.add_argument("--method", default="rest2visual", choices=sorted(METHODS),
                   help="which predictions.h5 method is 'predicted' (default rest2visual)")
    ants = p.add_argument_group("registration.method ants")
    ants.add_argument("--affine",
                      help="registration affine (…from-func_to-MNI152…affine_xfm.mat)")
    ants.add_argument("--inverse-warp", help="inverse SyN warp (…from-MNI152_to-func…warp_xfm)")
    ants.add_argument("--sidecar", help="the registration's composite JSON sidecar (grids)")
    p.add_argument("--nsd-mni-to-func", help="registration.method nsd: NSD's MNI-to-func1pt8 map")
    p.add_argument("--min-weight", type=float, default=MIN_WEIGHT,
                   help="least fraction of a voxel's trilinear weight on in-mask MNI voxels")
    p.add_argument("--out", required=True, help="output HDF5")
    return p


def main(argv: list[str] | None = None) -> int:
    """``rest2visual to-native --predictions P --pack K --subject 1 --nsdgeneral R
    (--affine A --inverse-warp W --sidecar S | --nsd-mni-to-func M) --out O.h5``."""
    args = _parser().parse_args(argv)
    ants_args = (args.affine, args.inverse_warp, args.sidecar)
    if bool(args.nsd_mni_to_func) == any(ants_args) or (any(ants_args) and not all(ants_args)):
        raise InputError("give either --affine, --inverse-warp and --sidecar (registration."
                         "method ants) or --nsd-mni-to-func (method nsd)")
    roi_img = load_nifti(args.nsdgeneral, ndim=3, finite=False, what="nsdgeneral ROI")
    voxels = nsdgeneral_voxels(roi_img)
    if not voxels.any():
        raise InputError(f"{name_file(args.nsdgeneral)}: expected nsdgeneral voxels (> 0), "
                         "found none")
    trials, predicted, measured, grid = subject_test_betas(args.predictions, args.pack,
                                                           args.subject, args.method)
    mni_grid = Grid(shape=grid.shape, affine=grid.affine)
    if args.nsd_mni_to_func:
        resampler = NativeResampler.from_nsd_coordinates(args.nsd_mni_to_func, roi_img, mni_grid)
        transform = {"registration_method": "nsd", "transform": str(args.nsd_mni_to_func)}
    else:
        _check_registration_grids(args.sidecar, roi_img, mni_grid, args.nsdgeneral, args.pack)
        resampler = NativeResampler.from_ants_inverse(args.affine, args.inverse_warp, roi_img,
                                                      mni_grid)
        transform = {"registration_method": "ants",
                     "transform": f"{args.affine} (inverted) + {args.inverse_warp}"}
    native = {name: resampler.to_native(values, voxels, grid.mask, min_weight=args.min_weight)
              for name, values in (("predicted", predicted), ("measured", measured))}
    out = write_native_betas(
        args.out, trials=trials, predicted=native["predicted"], measured=native["measured"],
        voxels=voxels, roi_img=roi_img,
        attrs={"subject": args.subject, "protocol": args.protocol, "method": args.method,
               "space": args.space, **transform, "nsdgeneral": str(args.nsdgeneral),
               "predictions": str(args.predictions), "pack": str(args.pack),
               "min_weight": args.min_weight})
    print(f"to-native: sub-{args.subject:02d}: {len(trials)} test trials × {int(voxels.sum())} "
          f"nsdgeneral voxels → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
