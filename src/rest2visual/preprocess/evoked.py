"""Evoked maps: one session's NSD trial betas as % signal change in MNI, brain-masked.

NSD stores betas as int16 = % signal change × 300 in native functional space,
zero outside its liberal brain mask. Per trial: divide by 300, resample to the
MNI grid through the subject's composed registration, keep the MNI152 brain
mask's voxels (the liberal native mask leaves extreme values outside the brain,
paper Section 3.1).

Output format: HDF5 with in-mask vectors (``rest2visual.maskvec``), not a 4D
NIfTI: at 2 mm a session is 750 × 235k voxels, 0.7 GB as float32 vectors
against 2.7 GB for the full float32 grid, and the pack stage reads it as rows
directly. ``MaskedGrid.to_nifti`` turns any row back into a NIfTI.

Datasets: ``betas`` (n_trials, n_voxels) float32 % signal change, chunked per
trial; ``trial`` (n_trials,) 1-based trial numbers; ``mask`` (X, Y, Z) uint8
with attribute ``affine``. Attributes: ``subject``, ``session``, ``source``,
``bad_trials`` (1-based trials that are all zero or non-finite in the input:
reported, flagged here, and excluded by the pack stage).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from rest2visual.checks import InputError, load_nifti
from rest2visual.maskvec import MaskedGrid

#: NSD's int16 beta scaling: stored value = % signal change × BETA_SCALE
BETA_SCALE = 300.0


def bad_trial_numbers(betas_native: np.ndarray) -> np.ndarray:
    """1-based numbers of trials that are all zero or hold non-finite values.

    betas_native : (x, y, z, n_trials) array in any dtype.
    """
    flat = betas_native.reshape(-1, betas_native.shape[-1])
    all_zero = ~np.any(flat != 0, axis=0)
    nonfinite = ~np.all(np.isfinite(flat), axis=0)
    return np.flatnonzero(all_zero | nonfinite) + 1


def write_evoked_betas(betas_path, resampler, grid: MaskedGrid, out_path, *, subject: int,
                       session: int, trials_per_session: int | None = None,
                       chunk: int = 50) -> np.ndarray:
    """Scale, warp and mask one session's trial betas; write the evoked HDF5 atomically.

    Parameters
    ----------
    betas_path : NSD ``betas_sessionNN.nii.gz`` (native X×Y×Z×trials, int16 × 300).
    resampler : ``rest2visual.preprocess.resample.MniResampler`` built for this subject.
    grid : the MNI brain mask and grid the output lives on.
    trials_per_session : expected number of trials (the 4th dimension); None skips the check.
    chunk : trials read and resampled at once (bounds memory: chunk native volumes).

    Returns the 1-based bad-trial numbers.
    """
    import h5py

    from rest2visual.atomic import atomic_path

    img = load_nifti(betas_path, ndim=4, finite=False, what="NSD trial betas")
    n_trials = img.shape[3]
    if trials_per_session is not None and n_trials != trials_per_session:
        raise InputError(
            f"{betas_path}: expected {trials_per_session} trials (nsd.trials_per_session), "
            f"found {n_trials} volumes"
        )
    bad = []
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        grid.write_h5(h5)
        out = h5.create_dataset("betas", shape=(n_trials, grid.n_voxels), dtype="f4",
                                chunks=(1, grid.n_voxels))
        h5.create_dataset("trial", data=np.arange(1, n_trials + 1, dtype=np.int32))
        for start in range(0, n_trials, chunk):
            stop = min(start + chunk, n_trials)
            native = np.asarray(img.dataobj[..., start:stop])
            bad.extend(bad_trial_numbers(native) + start)
            scaled = np.nan_to_num(native.astype(np.float32) / BETA_SCALE, nan=0.0,
                                   posinf=0.0, neginf=0.0)
            for j in range(stop - start):
                out[start + j] = resampler.volume(scaled[..., j])[grid.mask]
        h5.attrs.update(subject=int(subject), session=int(session), source=str(betas_path),
                        bad_trials=np.asarray(bad, dtype=np.int32), units="% signal change",
                        space="MNI152")
    return np.asarray(bad, dtype=np.int32)


def main(argv: list[str] | None = None) -> int:
    """``rest2visual evoked``: one session's betas → MNI brain-masked % signal change (HDF5)."""
    from rest2visual.preprocess.resample import resampler_for
    from rest2visual.preprocess.template import Grid

    p = argparse.ArgumentParser(prog="rest2visual evoked", description=main.__doc__)
    p.add_argument("--betas", required=True, help="NSD betas_sessionNN.nii.gz (native)")
    p.add_argument("--transform", required=True,
                   help="the subject's func→MNI transform: ANTs composed field or NSD coordinate map")
    p.add_argument("--mask", required=True, help="MNI brain mask NIfTI (defines the grid)")
    p.add_argument("--subject", type=int, required=True)
    p.add_argument("--session", type=int, required=True)
    p.add_argument("--trials", type=int, default=None, help="expected trials per session")
    p.add_argument("--out", required=True, help="output evoked HDF5")
    args = p.parse_args(argv)

    grid = MaskedGrid.from_img(load_nifti(args.mask, ndim=3, what="MNI brain mask"))
    native = load_nifti(args.betas, ndim=4, finite=False, what="NSD trial betas")
    resampler = resampler_for(args.transform, native, Grid(grid.shape, grid.affine))
    bad = write_evoked_betas(args.betas, resampler, grid, args.out, subject=args.subject,
                             session=args.session, trials_per_session=args.trials)
    if len(bad):
        print(f"{args.betas}: {len(bad)} trials all-zero or non-finite, flagged and excluded "
              f"from the pack: {bad.tolist()}", file=sys.stderr)
    print(f"wrote {args.out}: {native.shape[3]} trials × {grid.n_voxels} voxels")
    return 0
