"""Signal quality of maps in visual cortex (SNR, CNR) and the t-tests that compare them.

The paper reports SNR and CNR of predicted and measured maps in visual cortex
and compares methods with two-sided t-tests. Maps are (N samples, V voxels)
in-mask vectors; ``roi`` and ``background`` are boolean (V,) selections of
those voxels (e.g. visual cortex and the rest of the brain).

Normalisation: each map is first z-scored over all V voxels it is given (the
evaluation region, e.g. the full brain). SNR and the usual CNR are ratios, so
the map's scale cancels, but SNR also depends on the map's offset; z-scoring
fixes that offset at the region's mean, so SNR reads "how far the ROI's mean
response lies above the brain's mean, in units of the ROI's spatial SD". The
paper divides CNR by the ROI's variance instead; that version depends on the
scale, which z-scoring fixes too. Both are reported, labelled ('cnr': ÷
variance, the paper's; 'cnr_sd': ÷ SD). On maps z-scored over ROI and
background together the background mean is −ROI mean × n_roi / n_background,
so 'cnr_sd' = SNR × (1 + n_roi / n_background): the same test results as SNR.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from rest2visual.checks import InputError
from rest2visual.evaluate.metrics import as_finite, row_blocks, zscore_rows


def _selection(sel, n_voxels: int, what: str) -> np.ndarray:
    sel = np.asarray(sel)
    if sel.dtype != bool or sel.shape != (n_voxels,):
        raise InputError(f"{what}: expected a boolean ({n_voxels},) voxel selection, "
                         f"got {sel.dtype} {sel.shape}")
    if sel.sum() < 2:
        raise InputError(f"{what}: selects {int(sel.sum())} voxels; need at least 2")
    return sel


def _roi_stats(vectors, roi, background=None):
    """Per sample: ROI mean, ROI std (ddof=0) and background mean of z-scored maps."""
    vectors = as_finite(vectors, "snr/cnr maps")
    roi = _selection(roi, vectors.shape[1], "roi")
    if background is not None:
        background = _selection(background, vectors.shape[1], "background")
    n = vectors.shape[0]
    roi_mean, roi_std, bg_mean = np.empty(n), np.empty(n), np.empty(n)
    for rows in row_blocks(*vectors.shape):
        z = zscore_rows(vectors[rows])
        roi_mean[rows] = z[:, roi].mean(axis=1)
        roi_std[rows] = z[:, roi].std(axis=1)
        if background is not None:
            bg_mean[rows] = z[:, background].mean(axis=1)
    return roi_mean, roi_std, bg_mean


def snr(vectors, roi) -> np.ndarray:
    """(N,) signal-to-noise ratio: ROI mean / ROI std (ddof=0) of each z-scored map.

    Positive when the ROI responds above the region's mean, negative below; a
    map constant within the ROI gives ±inf (or NaN when also zero-mean).
    """
    roi_mean, roi_std, _ = _roi_stats(vectors, roi)
    return _ratio(roi_mean, roi_std)


#: CNR denominators: the paper's ROI variance, and the ROI SD of the usual definition
CNR_SPREADS = ("variance", "sd")


def cnr(vectors, roi, background=None, *, spread: str = "variance") -> np.ndarray:
    """(N,) contrast-to-noise ratio of each z-scored map: (ROI mean − background mean) / spread.

    ``spread``: 'variance' — the ROI's variance (ddof=0), as the paper defines
    CNR — or 'sd' — the ROI's standard deviation, the usual definition. On maps
    z-scored over the region the ROI's variance is below 1 wherever the ROI is
    more uniform than the region, so the two differ in scale, not in sign.
    ``background`` defaults to every voxel outside ``roi``. Positive when the
    ROI responds more than the background (the expected sign for visual cortex
    under visual stimulation).
    """
    if spread not in CNR_SPREADS:
        raise InputError(f"cnr: spread must be one of {CNR_SPREADS}, got {spread!r}")
    roi = np.asarray(roi)
    if background is None and roi.dtype == bool:
        background = ~roi
    roi_mean, roi_std, bg_mean = _roi_stats(vectors, roi, background)
    return _contrast(roi_mean, roi_std, bg_mean, spread)


def _ratio(a, b) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


def _contrast(roi_mean, roi_std, bg_mean, spread: str) -> np.ndarray:
    return _ratio(roi_mean - bg_mean, roi_std**2 if spread == "variance" else roi_std)


def signal_quality(vectors, roi) -> dict[str, np.ndarray]:
    """SNR and both CNRs of (N, V) maps in ``roi`` (background: the rest of the region).

    Returns {'snr', 'cnr' (÷ ROI variance, the paper's), 'cnr_sd' (÷ ROI SD)}, each (N,).
    """
    roi = np.asarray(roi)
    roi_mean, roi_std, bg_mean = _roi_stats(vectors, roi, ~roi if roi.dtype == bool else None)
    return {"snr": _ratio(roi_mean, roi_std), "cnr": _contrast(roi_mean, roi_std, bg_mean, "variance"),
            "cnr_sd": _contrast(roi_mean, roi_std, bg_mean, "sd")}


def ttest_two_sided(a, b, *, paired: bool) -> tuple[float, float]:
    """Two-sided t-test of mean(a) = mean(b); returns (t, p).

    ``paired=True``: ``scipy.stats.ttest_rel`` on the same samples scored two ways
    (e.g. SNR of predicted and measured maps of the same test trials), a and b
    of equal length. ``paired=False``: Welch's ``ttest_ind`` (unequal variances).
    Non-finite values are an InputError rather than silently dropped.
    """
    a = as_finite(np.ravel(a), "ttest: a", ndim=1)
    b = as_finite(np.ravel(b), "ttest: b", ndim=1)
    if min(a.size, b.size) < 2:
        raise InputError(f"ttest: need at least 2 values per group, got {a.size} and {b.size}")
    if paired:
        if a.size != b.size:
            raise InputError(f"ttest: a paired test needs equal lengths, got {a.size} and {b.size}")
        res = stats.ttest_rel(a, b)
    else:
        res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def paired_comparisons(scores: pd.DataFrame, reference: str, *, metric: str = "pearson",
                       regions=("FB", "VC")) -> pd.DataFrame:
    """``reference`` against every other method on the same test samples, per region.

    ``scores``: long table with columns method, region, metric, sample, value (one row
    per test sample and method). Returns one row per (region, method ≠ reference):
    ``mean_difference`` and ``std_difference`` (ddof=0) of reference − method over the
    samples both scored, the paired two-sided t-test's ``t`` and ``p``
    (:func:`ttest_two_sided`) and ``n``. Methods without per-sample values of ``metric``
    (e.g. RSA, one value per set) are left out.
    """
    sub = scores[(scores["metric"] == metric) & scores["region"].isin(regions)]
    if reference not in set(sub["method"]):
        raise InputError(f"paired comparisons: no {metric} scores of {reference!r}")
    wide = sub.pivot_table(index=["region", "sample"], columns="method", values="value",
                           sort=False)
    rows = []
    for region in [r for r in regions if r in wide.index.get_level_values("region")]:
        block = wide.xs(region, level="region")
        for method in [m for m in sub["method"].unique() if m != reference]:
            both = block[[reference, method]].dropna()
            if len(both) < 2:
                continue
            diff = both[reference] - both[method]
            t, p = ttest_two_sided(both[reference], both[method], paired=True)
            rows.append({"region": region, "method": method, "metric": metric,
                         "mean_difference": float(diff.mean()),
                         "std_difference": float(diff.std(ddof=0)), "t": t, "p": p,
                         "n": len(both)})
    return pd.DataFrame(rows, columns=["region", "method", "metric", "mean_difference",
                                       "std_difference", "t", "p", "n"])
