"""Similarity between predicted and measured evoked maps (paper Section 4).

Every map is an in-mask vector: a row of an (N samples, V voxels) array whose
columns are the evaluation region's voxels (full brain or visual cortex, MNI).
Per-sample metrics first z-score each map over the region's voxels, so that
Pearson, MAE and SSIM compare spatial patterns on one scale whatever the
units of the model (betas in % signal change, rest maps in z).

Inputs may be float16/float32 (the pack's storage types); all arithmetic is
done in float64, in blocks of rows so that a (1000, 230k) test set does not
need a float64 copy of the whole array at once.

A map that is constant over the region has no z-score: its row becomes NaN
(as in ``scipy.stats.zscore``) and so do its Pearson, MAE and SSIM; summaries
report how many samples were finite. Non-finite inputs are an InputError.

SSIM, one convention for every region (:data:`SSIM_CONVENTION`): 3D SSIM of the
region's z-scored maps placed in the grid with 0 elsewhere, averaged over the
region's voxels. The paper's full-brain Random SSIM of 0.60 is reproduced by the
mean over the whole volume instead (background included; ``ssim_rows(...,
over_region=False)`` gives 0.59 for the Random baseline on the 2 mm grid), but
that mean tends to 1 for a small region (0.98 for visual cortex, 0.99 for V1;
the paper's Random visual-cortex value is 0.31). Averaged over the region's
voxels, chance is ≈ 0.01 in every region, so full brain, visual cortex and
V1–V5 read on one scale (README, "Metric conventions").
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage

from rest2visual.checks import InputError

#: default ROI labels of the visual-cortex atlas (label value → name)
VISUAL_ROIS: dict[int, str] = {1: "V1", 2: "V2", 3: "V3", 4: "V4", 5: "V5"}

#: float64 elements processed at once by the blocked row functions (~128 MB)
_BLOCK_ELEMENTS = 2**24

#: relative spread below which a map counts as constant (float rounding, not signal)
_CONSTANT_RTOL = 1e-10

#: how SSIM is averaged, for table captions (one convention for every region)
SSIM_CONVENTION = ("3D SSIM of the region's z-scored maps placed in the MNI grid with 0 elsewhere "
                   "(cubic window, data range = the measured volume's max − min), averaged over the "
                   "region's voxels, so chance is ≈ 0 in every region")

# Wang et al. (2004) constants, as skimage's defaults
_K1, _K2 = 0.01, 0.03
_GAUSSIAN_SIGMA, _GAUSSIAN_TRUNCATE = 1.5, 3.5


def as_finite(x, what: str = "maps", *, ndim: int = 2) -> np.ndarray:
    """Return ``x`` as an array of ``ndim`` dimensions, or raise InputError (non-finite, wrong ndim)."""
    x = np.asarray(x)
    if x.ndim == 1 and ndim == 2:
        x = x[None, :]
    if x.ndim != ndim:
        raise InputError(f"{what}: expected a {ndim}D array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"{what}: expected numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise InputError(f"{what}: {bad} non-finite values (NaN/inf) of {x.size}; expected finite maps")
    return x


def check_pair(pred, true, what: str = "prediction vs measurement") -> tuple[np.ndarray, np.ndarray]:
    """Validate two (N, V) arrays of equal shape (1D inputs become one row)."""
    pred = as_finite(pred, f"{what}: predicted")
    true = as_finite(true, f"{what}: measured")
    if pred.shape != true.shape:
        raise InputError(f"{what}: predicted maps have shape {pred.shape}, measured {true.shape}; "
                         "expected equal")
    if pred.shape[1] < 2:
        raise InputError(f"{what}: need at least 2 voxels per map, got {pred.shape[1]}")
    return pred, true


def blocks(n: int, size_each: int, budget: int | None = None) -> Iterator[slice]:
    """Slices over ``n`` rows (or columns) of ``size_each`` values, about ``budget`` values a slice.

    ``budget`` defaults to ``_BLOCK_ELEMENTS`` float64 values (~128 MB).
    """
    step = max(1, (_BLOCK_ELEMENTS if budget is None else budget) // max(1, size_each))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Slices of rows of an (n_rows, n_cols) array, about ``_BLOCK_ELEMENTS`` values each."""
    return blocks(n_rows, n_cols)


def zscore_rows(x) -> np.ndarray:
    """Z-score each row of ``x`` (N, V) over its V voxels (mean 0, std 1 with ddof=0), float64.

    A constant row (spread ≤ 1e-10 × |mean|, i.e. constant up to rounding)
    becomes NaN: its z-score is undefined.
    """
    z = np.array(x, dtype=np.float64)  # a copy, then in place: one (N, V) float64 array in all
    mean = z.mean(axis=-1, keepdims=True)
    z -= mean
    std = np.sqrt(np.einsum("...v,...v->...", z, z) / z.shape[-1])[..., None]
    # a spread at rounding level relative to the offset is no pattern either
    z /= np.where(std > _CONSTANT_RTOL * np.abs(mean), std, np.nan)
    return z


def pearson_rows(pred, true) -> np.ndarray:
    """(N,) Pearson correlation between ``pred[i]`` and ``true[i]`` over the V voxels of the region."""
    pred, true = check_pair(pred, true, "pearson_rows")
    out = np.empty(pred.shape[0])
    for rows in row_blocks(*pred.shape):
        out[rows] = np.einsum("nv,nv->n", zscore_rows(pred[rows]), zscore_rows(true[rows])) / pred.shape[1]
    return out


def mae_rows(pred, true) -> np.ndarray:
    """(N,) mean absolute error over voxels after z-scoring both maps within the region (units: SD)."""
    pred, true = check_pair(pred, true, "mae_rows")
    out = np.empty(pred.shape[0])
    for rows in row_blocks(*pred.shape):
        out[rows] = np.mean(np.abs(zscore_rows(pred[rows]) - zscore_rows(true[rows])), axis=1)
    return out


def pearson_voxels(pred, true) -> np.ndarray:
    """(V,) Pearson correlation per voxel across the N samples (no per-map z-scoring).

    This is the voxelwise encoding accuracy that the noise ceiling refers to,
    so the maps are used as given (trial betas), not z-scored per sample.
    """
    pred, true = check_pair(pred, true, "pearson_voxels")
    if pred.shape[0] < 2:
        raise InputError(f"pearson_voxels: need at least 2 samples, got {pred.shape[0]}")
    n_rows, n_cols = pred.shape
    out = np.empty(n_cols)
    for cols in blocks(n_cols, n_rows):
        out[cols] = np.einsum("vn,vn->v", zscore_rows(pred[:, cols].T), zscore_rows(true[:, cols].T)) / n_rows
    return out


def rdm(maps) -> np.ndarray:
    """(N, N) representational dissimilarity matrix: 1 − Pearson correlation between samples.

    Accumulated over blocks of voxels, so (N, V) float16 maps need no float64
    copy of their own size.
    """
    maps = as_finite(maps, "rdm")
    n, v = maps.shape
    mean, std = np.empty(n), np.empty(n)
    for rows in row_blocks(n, v):
        block = np.asarray(maps[rows], dtype=np.float64)
        mean[rows], std[rows] = block.mean(axis=1), block.std(axis=1)
    gram = np.zeros((n, n))
    for cols in blocks(v, n):
        block = np.asarray(maps[:, cols], dtype=np.float64) - mean[:, None]
        gram += block @ block.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - gram / (v * np.outer(std, std))


def rsa(pred, true) -> float:
    """Pearson correlation between the upper triangles (k=1) of the predicted and measured RDMs.

    Needs N ≥ 3 samples (at least 3 dissimilarities). Second-order: it asks
    whether the prediction ranks pairs of stimuli as alike as the brain does.
    NaN when all predicted maps are the same pattern (a constant RDM).
    """
    pred, true = check_pair(pred, true, "rsa")
    if pred.shape[0] < 3:
        raise InputError(f"rsa: need at least 3 samples for a representational comparison, "
                         f"got {pred.shape[0]}")
    upper = np.triu_indices(pred.shape[0], k=1)
    a, b = rdm(pred)[upper], rdm(true)[upper]
    # dissimilarities lie in [0, 2]: a spread at rounding level means one pattern repeated
    if min(a.std(), b.std()) < _CONSTANT_RTOL:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def ssim3d(
    pred_vol,
    true_vol,
    *,
    mask=None,
    win_size: int = 7,
    data_range: float | None = None,
    gaussian: bool = False,
) -> float:
    """Mean 3D structural similarity of two volumes (X, Y, Z) on the same grid.

    Local statistics use a uniform ``win_size``³ window (``gaussian=False``) or a
    Gaussian window of σ = 1.5 voxels truncated at 3.5σ (11 taps; ``win_size``
    is then 11, as in skimage and Wang et al. 2004), with ``scipy.ndimage``
    'reflect' borders, the sample (N−1) covariance, K1 = 0.01 and K2 = 0.03.

    ``data_range`` defaults to max(true) − min(true) over the whole volume (the
    measured map fixes the dynamic range, so a prediction cannot change C1, C2).
    Without ``mask`` the result is the mean SSIM over the volume less a border of
    (win_size − 1)/2 voxels, which equals ``skimage.metrics.structural_similarity``
    with the same window and data range. With a boolean ``mask`` (X, Y, Z) it is
    the mean over the mask's voxels instead (no border cropping).
    """
    pred_vol = as_finite(pred_vol, "ssim3d: predicted volume", ndim=3)
    true_vol = as_finite(true_vol, "ssim3d: measured volume", ndim=3)
    if pred_vol.shape != true_vol.shape:
        raise InputError(f"ssim3d: volume shapes differ: predicted {pred_vol.shape}, "
                         f"measured {true_vol.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != true_vol.shape:
            raise InputError(f"ssim3d: mask shape {mask.shape} differs from the volumes' {true_vol.shape}")
    if data_range is None:
        data_range = float(true_vol.max() - true_vol.min())
    ssim, radius = _ssim_map(pred_vol[..., None], true_vol[..., None], np.array([data_range]),
                             win_size=win_size, gaussian=gaussian)
    if mask is not None:
        return float(ssim[mask].mean())
    return float(_cropped_mean(ssim, radius, ((0, n) for n in true_vol.shape), true_vol.shape)[0])


def ssim_rows(pred, true, grid, *, region=None, over_region: bool = True, win_size: int = 7,
              gaussian: bool = False, batch: int = 8) -> np.ndarray:
    """(N,) 3D SSIM of each sample, from in-mask vectors on a :class:`~rest2visual.maskvec.MaskedGrid`.

    ``pred``/``true``: (N, grid.n_voxels) in-mask vectors (MNI). ``region``: an
    optional boolean (grid.n_voxels,) selecting the evaluation region (e.g. the
    visual cortex); each map is z-scored over the region's voxels and scattered
    into the grid with 0 elsewhere — so voxels outside the region agree
    perfectly, as they do in full-volume SSIM of masked maps. ``data_range`` is
    each measured volume's max − min. The mean runs over the region's voxels
    (``over_region``, the default: :data:`SSIM_CONVENTION`) or over the whole
    volume less skimage's border crop (``over_region=False``; the paper's
    full-brain convention, which tends to 1 for a small region). Equal to
    :func:`ssim3d` on the scattered volumes.

    Speed: SSIM is exactly 1 wherever both windows are all zero, so only the
    region's bounding box plus two window radii is filtered; the rest of the
    volume enters the mean as ones. ``batch`` volumes are filtered at once
    (memory: about 12 × batch × box size × 8 bytes).
    """
    pred, true = check_pair(pred, true, "ssim_rows")
    if pred.shape[1] != grid.n_voxels:
        raise InputError(f"ssim_rows: maps have {pred.shape[1]} voxels, the grid's mask has {grid.n_voxels}")
    region = np.ones(grid.n_voxels, bool) if region is None else np.asarray(region, dtype=bool)
    if region.shape != (grid.n_voxels,) or region.sum() < 2:
        raise InputError(f"ssim_rows: region must be a boolean ({grid.n_voxels},) vector of ≥ 2 voxels, "
                         f"got {region.shape} with {int(region.sum())}")
    radius = _window_radius(win_size, gaussian)
    coords = np.argwhere(grid.mask)[region]
    # the box filtered: data ± 2 radii (so every voxel within one radius of the
    # data sees its whole window, or the grid's own border, inside the box)
    box = [(max(0, lo - 2 * radius), min(n, hi + 1 + 2 * radius))
           for lo, hi, n in zip(coords.min(axis=0), coords.max(axis=0), grid.shape)]
    box_shape = tuple(b - a for a, b in box)
    local = tuple((coords - [a for a, _ in box]).T)
    flat = np.ravel_multi_index(local, box_shape)
    region_box = np.zeros(box_shape, bool)
    region_box[local] = True
    out = np.empty(pred.shape[0])
    for start in range(0, pred.shape[0], batch):
        rows = slice(start, min(pred.shape[0], start + batch))
        vols = []
        for maps in (pred[rows], true[rows]):
            stack = np.zeros((maps.shape[0], int(np.prod(box_shape))))
            stack[:, flat] = zscore_rows(maps[:, region])
            vols.append(np.moveaxis(stack.reshape((-1,) + box_shape), 0, -1))
        ranges = vols[1].max(axis=(0, 1, 2)) - vols[1].min(axis=(0, 1, 2))
        if len(coords) < grid.mask.size:  # the zeros outside the region belong to the volume's range
            ranges = np.maximum(vols[1].max(axis=(0, 1, 2)), 0) - np.minimum(vols[1].min(axis=(0, 1, 2)), 0)
        ssim, _ = _ssim_map(vols[0], vols[1], ranges, win_size=win_size, gaussian=gaussian)
        if over_region:
            out[rows] = ssim[region_box].mean(axis=0)
        else:
            out[rows] = _cropped_mean(ssim, radius, box, grid.shape)
    return out


def _window_radius(win_size: int, gaussian: bool) -> int:
    if gaussian:
        return int(_GAUSSIAN_TRUNCATE * _GAUSSIAN_SIGMA + 0.5)
    if win_size < 3 or win_size % 2 == 0:
        raise InputError(f"ssim: win_size must be an odd number ≥ 3, got {win_size}")
    return (win_size - 1) // 2


def _ssim_map(x, y, data_range, *, win_size, gaussian) -> tuple[np.ndarray, int]:
    """SSIM map of volume stacks (X, Y, Z, B), filtered along the spatial axes only; and the window radius."""
    radius = _window_radius(win_size, gaussian)
    win_size = 2 * radius + 1
    if gaussian:
        def smooth(a):
            return ndimage.gaussian_filter(a, sigma=(_GAUSSIAN_SIGMA,) * 3 + (0,),
                                           truncate=_GAUSSIAN_TRUNCATE, mode="reflect")
    else:
        def smooth(a):
            return ndimage.uniform_filter(a, size=(win_size,) * 3 + (1,), mode="reflect")
    data_range = np.asarray(data_range, dtype=np.float64)
    if np.any(~(data_range > 0)):
        raise InputError(f"ssim: data_range must be > 0 (a constant measured volume has none), "
                         f"got {data_range}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    cov_norm = win_size**3 / (win_size**3 - 1)  # sample covariance, skimage's default
    return ssim_index_map(x, y, smooth, data_range, cov_norm=cov_norm), radius


def ssim_index_map(x: np.ndarray, y: np.ndarray, smooth, data_range, *,
                   cov_norm: float = 1.0) -> np.ndarray:
    """Wang et al. (2004) SSIM map of two float64 arrays of one shape.

    ``smooth``: the local-window filter (linear, e.g. a Gaussian or box filter over
    the spatial axes); ``data_range``: scalar, or broadcastable against the arrays;
    ``cov_norm``: factor of the local (co)variances (n/(n−1) for sample covariances,
    1 for population ones). Constants K1 = 0.01, K2 = 0.03, as scikit-image.
    """
    ux, uy = smooth(x), smooth(y)
    vx = cov_norm * (smooth(x * x) - ux * ux)
    vy = cov_norm * (smooth(y * y) - uy * uy)
    vxy = cov_norm * (smooth(x * y) - ux * uy)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def _cropped_mean(ssim, radius: int, box, grid_shape) -> np.ndarray:
    """Mean over the grid less a ``radius`` border (skimage's crop), of a map known on ``box`` only.

    ``ssim`` (box shape…, B) covers the grid's sub-box ``box`` (per axis
    (start, stop)); outside it SSIM is 1 (all-zero windows). The map is trusted
    within one radius of the box's inner data, i.e. the box shrunk by
    ``radius`` wherever the box does not reach the grid's edge.
    """
    if min(grid_shape) <= 2 * radius:
        raise InputError(f"ssim: window of radius {radius} exceeds the volume extent {tuple(grid_shape)}")
    sel, n_trusted = [], 1
    for (a, b), n in zip(box, grid_shape):
        lo = max(radius, a + (radius if a > 0 else 0))
        hi = min(n - radius, b - (radius if b < n else 0))
        sel.append(slice(lo - a, max(lo, hi) - a))
        n_trusted *= max(0, hi - lo)
    n_crop = int(np.prod([n - 2 * radius for n in grid_shape]))
    inside = ssim[tuple(sel)].reshape(-1, ssim.shape[-1]).sum(axis=0)
    return (inside + (n_crop - n_trusted)) / n_crop


def per_roi(pred, true, labels, names: Mapping[int, str] | None = None, *, grid=None,
            win_size: int = 7, labels_columns: Mapping[str, object] | None = None) -> pd.DataFrame:
    """Long table of :func:`region_scores` for every visual ROI (the paper's Table 3 and more).

    ``labels``: (V,) integer ROI label of every voxel (0 = none), aligned with the
    columns of ``pred``/``true`` (N, V). ``names``: label → ROI name (default
    V1–V5 = 1–5), which fills the ``region`` column. Each ROI is scored as its
    own region: maps z-scored within it; Pearson, MAE and SSIM per sample (SSIM
    only with ``grid``, :data:`SSIM_CONVENTION`) and RSA per set.
    ``labels_columns`` (e.g. {'method': 'Rest2Visual'}) become leading columns.
    An ROI with fewer than 2 voxels is left out rather than an error, so one
    tiny area at a coarse resolution does not stop the table.
    """
    pred, true = check_pair(pred, true, "per_roi")
    labels = np.asarray(labels)
    if labels.shape != (pred.shape[1],):
        raise InputError(f"per_roi: labels must have shape ({pred.shape[1]},) like the maps' voxels, "
                         f"got {labels.shape}")
    names = dict(VISUAL_ROIS if names is None else names)
    frames = [region_scores(pred, true, grid=grid, region=labels == label, win_size=win_size,
                            labels={**(labels_columns or {}), "region": name})
              for label, name in names.items() if np.count_nonzero(labels == label) >= 2]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=[*(labels_columns or {}), "region", "metric", "sample", "value"])


def describe(values) -> dict:
    """Mean, std (ddof=0) and count of the finite entries of ``values``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": np.nan, "std": np.nan, "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def region_scores(pred, true, *, grid=None, region=None, win_size: int = 7,
                  labels: Mapping[str, object] | None = None) -> pd.DataFrame:
    """Long table of the paper's Table 1 metrics for one method on one evaluation region.

    ``pred``/``true``: (N, V) in-mask vectors on ``grid`` (a MaskedGrid; needed
    for SSIM, which is skipped when ``grid`` is None; SSIM as
    :data:`SSIM_CONVENTION`, window side ``win_size`` voxels); ``region``: boolean (V,)
    selecting the region's voxels (None = all, the full brain). ``labels``
    (e.g. {'method': 'Rest2Visual', 'region': 'VC'}) become leading columns.
    Returns columns ``*labels, metric, sample, value``: one row per sample for
    pearson, mae and ssim, and one row (sample = -1) for rsa, a set-level score.
    """
    pred, true = check_pair(pred, true, "region_scores")
    sel = slice(None) if region is None else np.asarray(region, dtype=bool)
    p, t = pred[:, sel], true[:, sel]
    per_sample = {"pearson": pearson_rows(p, t), "mae": mae_rows(p, t)}
    if grid is not None:
        per_sample["ssim"] = ssim_rows(pred, true, grid, region=region, win_size=win_size)
    frames = [pd.DataFrame({"metric": m, "sample": np.arange(len(v)), "value": v})
              for m, v in per_sample.items()]
    if len(p) >= 3:
        frames.append(pd.DataFrame({"metric": ["rsa"], "sample": [-1], "value": [rsa(p, t)]}))
    out = pd.concat(frames, ignore_index=True)
    for i, (key, value) in enumerate((labels or {}).items()):
        out.insert(i, key, value)
    return out
