"""Noise ceiling from NSD's ``ncsnr`` and noise-normalized encoding accuracy.

NSD ships a noise-ceiling SNR per voxel (``ncsnr``: the SD of the stimulus-
driven signal over the SD of the trial noise, estimated from repeats; see
Allen et al. 2022). The share of variance a perfect model could explain in a
response averaged over ``n`` trials is

    NC = 100 · ncsnr² / (ncsnr² + 1/n)      (percent)

Our test rows are single trials, so ``n_trials = 1`` is the default; use the
number of repeats averaged when predicting trial-averaged responses.

Accuracy per voxel is signed R² = 100 · r·|r| (percent variance explained,
negative when the prediction anti-correlates), with r the voxelwise Pearson
correlation across test trials (:func:`rest2visual.evaluate.metrics.pearson_voxels`).
Noise-normalized accuracy is 100 · accuracy / NC: the percentage of the
explainable variance that the model explains (100 = at the ceiling).
``ncsnr`` must be on the same voxels as the predictions (MNI, in-mask). NaN in
``ncsnr`` marks a missing voxel (NSD writes NaN for invalid voxels; the pack keeps
NaN where warping to MNI touched them): its ceiling and its noise-normalized
accuracy are NaN, and the summaries skip it.
"""

from __future__ import annotations

import numpy as np

from rest2visual.checks import InputError
from rest2visual.evaluate.metrics import as_finite, describe


def noise_ceiling(ncsnr, n_trials: int = 1) -> np.ndarray:
    """Noise ceiling in percent of variance, per voxel, for responses averaged over ``n_trials``.

    NaN (missing) ncsnr gives a NaN ceiling; infinite or negative values are errors.
    """
    ncsnr = np.asarray(ncsnr, dtype=np.float64)
    missing = np.isnan(ncsnr)
    as_finite(np.where(missing, 0.0, ncsnr), "ncsnr", ndim=ncsnr.ndim)
    if np.any(ncsnr[~missing] < 0):
        raise InputError(f"ncsnr: {int((ncsnr < 0).sum())} negative values; "
                         "expected ncsnr ≥ 0 (an SD ratio)")
    if int(n_trials) != n_trials or n_trials < 1:
        raise InputError(f"noise_ceiling: n_trials must be a positive integer, got {n_trials}")
    snr2 = ncsnr**2
    return 100.0 * snr2 / (snr2 + 1.0 / n_trials)


def noise_normalized_accuracy(r, nc, *, min_nc: float = 1.0) -> np.ndarray:
    """Per voxel: 100 · (100 · r·|r|) / NC, in percent of the noise ceiling.

    ``r``: (V,) voxelwise Pearson across test trials; ``nc``: (V,) noise ceiling
    in percent (:func:`noise_ceiling`, NaN = missing voxel). Voxels with NC ≤
    ``min_nc`` percent or a missing NC get NaN: dividing by a ceiling near zero
    only amplifies noise.
    """
    r = as_finite(r, "noise_normalized_accuracy: r", ndim=1).astype(np.float64)
    nc = np.asarray(nc, dtype=np.float64)
    missing = np.isnan(nc)
    nc = as_finite(np.where(missing, 0.0, nc), "noise_normalized_accuracy: nc", ndim=1)
    if r.shape != nc.shape:
        raise InputError(f"noise_normalized_accuracy: r has shape {r.shape}, nc {nc.shape}; expected equal")
    if np.any(np.abs(r) > 1 + 1e-9) or np.any((nc < 0) | (nc > 100)):
        raise InputError("noise_normalized_accuracy: expected |r| ≤ 1 and 0 ≤ nc ≤ 100 (percent)")
    r2 = 100.0 * r * np.abs(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((nc > min_nc) & ~missing, 100.0 * r2 / nc, np.nan)


def summarize_noise_normalized(values) -> dict:
    """Median, mean, std and count over the voxels with a defined (finite) noise-normalized accuracy."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return {"median": float(np.median(finite)) if finite.size else np.nan, **describe(finite)}
