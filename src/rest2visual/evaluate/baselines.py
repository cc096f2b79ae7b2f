"""Reference predictions for the test rows, against which Rest2Visual is judged.

Each baseline returns (N test rows, V voxels) in-mask vectors on the same MNI
grid and voxels as the measured betas, ready for the metrics:

- random: Gaussian noise (the chance level of every metric);
- resting: the subject's own rest z-map (does the rest map alone already
  look like the evoked response?);
- group mean: the mean training beta map (what every image evokes on
  average; a strong baseline for full-brain Pearson);
- image-only ridge encoding: image features → voxels, the field's standard
  encoding model, which knows the image but not the subject's rest map.

The two noise ablations (noise rest input, noise image input) come from the
model's own predict code, fed :func:`noise_maps` or :func:`noise_images` in
place of the rest maps or the images, and are scored like any method.
"""

from __future__ import annotations

import numpy as np

from rest2visual.checks import InputError
from rest2visual.evaluate.metrics import as_finite
from rest2visual.evaluate.ridge import DEFAULT_ALPHAS, RidgeFit, fit_ridge_cv

#: training rows read at once by group_mean_baseline
_ROWS_PER_READ = 1024
#: noise images drawn at once (float32 temporaries of this many images)
_IMAGES_PER_DRAW = 64


def random_baseline(n: int, v: int, seed: int = 0) -> np.ndarray:
    """(n, v) float32 standard-normal noise from ``numpy.random.default_rng(seed)``."""
    if n < 1 or v < 1:
        raise InputError(f"random_baseline: need n ≥ 1 rows and v ≥ 1 voxels, got {n}, {v}")
    return np.random.default_rng(seed).standard_normal((n, v), dtype=np.float32)


def resting_baseline(rest_maps, rest_index=None) -> np.ndarray:
    """The rest z-map of each test row's (subject, session), as the prediction.

    ``rest_maps``: (n_sessions, V) rest maps (the pack's ``/rest_maps``);
    ``rest_index``: (N,) row of ``rest_maps`` for each test row (the trial
    table's ``rest_row``). Without ``rest_index``, ``rest_maps`` is taken to be
    already one map per test row. Returns (N, V) float32.
    """
    if rest_index is None:
        return as_finite(rest_maps, "resting_baseline: rest maps").astype(np.float32)
    rest_index = np.asarray(rest_index)
    if rest_index.ndim != 1 or not np.issubdtype(rest_index.dtype, np.integer):
        raise InputError(f"resting_baseline: rest_index must be a 1D integer array, "
                         f"got {rest_index.dtype} {rest_index.shape}")
    n_maps = rest_maps.shape[0]
    if rest_index.size and (rest_index.min() < 0 or rest_index.max() >= n_maps):
        raise InputError(f"resting_baseline: rest_index outside [0, {n_maps}) (there are {n_maps} rest maps)")
    unique, inverse = np.unique(rest_index, return_inverse=True)
    maps = as_finite(np.asarray(rest_maps[unique.tolist()]), "resting_baseline: rest maps")
    return maps[inverse].astype(np.float32)


def group_mean_baseline(train_betas, n_test: int, rows=None) -> np.ndarray:
    """The mean training beta map, repeated for each of ``n_test`` rows: (n_test, V) float32.

    ``train_betas``: (n, V) array or on-disk dataset (e.g. the pack's h5py
    ``/betas``); ``rows``: the training rows to average (default all). Rows are
    read in blocks and summed in float64, so the pack need not fit in memory.
    The result is a read-only broadcast view (one map in memory).
    """
    n_total, n_voxels = train_betas.shape
    rows = np.arange(n_total) if rows is None else np.unique(np.asarray(rows))
    if rows.size == 0:
        raise InputError("group_mean_baseline: no training rows to average")
    if rows.min() < 0 or rows.max() >= n_total:
        raise InputError(f"group_mean_baseline: rows outside [0, {n_total}) of the training betas")
    total = np.zeros(n_voxels)
    for start in range(0, rows.size, _ROWS_PER_READ):
        block = rows[start:start + _ROWS_PER_READ]
        # sorted indices: h5py's fancy indexing needs increasing order
        betas = as_finite(np.asarray(train_betas[block.tolist()]), "group_mean_baseline: training betas")
        total += betas.sum(axis=0, dtype=np.float64)
    mean_map = (total / rows.size).astype(np.float32)
    return np.broadcast_to(mean_map, (int(n_test), n_voxels))


def noise_maps(maps, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise in place of each map: (N, V) float32, row i i.i.d. N(mean_i, sd_i²).

    ``maps``: (N, V) in-mask vectors (the rest z-maps of the noise-rest
    ablation); mean_i and sd_i (ddof=0) are row i's over its V voxels, so the
    noise keeps each map's level and spread but none of its pattern.
    """
    maps = as_finite(maps, "noise_maps: maps")
    noise = rng.standard_normal(maps.shape, dtype=np.float32)
    return (noise * maps.std(axis=1, keepdims=True) + maps.mean(axis=1, keepdims=True)).astype(np.float32)


def noise_images(images, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-noise images like ``images`` (the paper's noise-image ablation): (N, H, W, 3) uint8.

    Every pixel and channel c is drawn i.i.d. from N(mean_c, sd_c²), mean_c and
    sd_c (ddof=0) being channel c's over all pixels of ``images`` (the test
    images the noise replaces; uint8, 0–255), then rounded and clipped to 0–255.
    The noise thus has the image set's colour and contrast per channel but no
    spatial structure.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or images.size == 0:
        raise InputError(f"noise_images: expected (N, H, W, 3) uint8 RGB images, got {images.dtype} "
                         f"{images.shape}")
    # exact moments from each channel's histogram of 0..255: no float copy of the images
    levels = np.arange(256, dtype=np.float64)
    counts = np.stack([np.bincount(images[..., c].ravel(), minlength=256) for c in range(3)])
    mean = counts @ levels / counts.sum(axis=1)
    sd = np.sqrt(np.maximum(counts @ levels**2 / counts.sum(axis=1) - mean**2, 0))
    out = np.empty_like(images)
    for start in range(0, len(images), _IMAGES_PER_DRAW):
        block = out[start:start + _IMAGES_PER_DRAW]
        noise = rng.standard_normal(block.shape, dtype=np.float32) * sd.astype(np.float32)
        block[...] = np.clip(np.rint(noise + mean.astype(np.float32)), 0, 255)
    return out


def pixel_features(images, size: int = 16) -> np.ndarray:
    """(N, H, W, 3) uint8 images → (N, size·size·3) float32 pixel features in [0, 1].

    Each image is low-pass filtered and resized to ``size``×``size`` (skimage
    ``resize`` with anti-aliasing): the simplest image features for the ridge
    encoding baseline when no frozen image embedding is available.
    """
    from skimage.transform import resize

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"pixel_features: expected (N, H, W, 3) RGB images, got shape {images.shape}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    out = np.empty((len(images), size * size * 3), dtype=np.float32)
    for i, image in enumerate(images):
        small = resize(image.astype(np.float64) / scale, (size, size), anti_aliasing=True)
        out[i] = small.ravel()
    return out


def ridge_encoding_baseline(
    train_features,
    train_betas,
    test_features,
    *,
    alphas=DEFAULT_ALPHAS,
    cv: int = 5,
    groups=None,
    seed: int = 0,
) -> tuple[np.ndarray, RidgeFit]:
    """Image-only encoding model: ridge from image features to every voxel's beta.

    ``train_features``/``test_features``: (n, p) per-trial image features —
    the frozen image encoder's embeddings of the packed images (the
    ``embed-images`` cache), or :func:`pixel_features` when there is none.
    ``train_betas``: (n, V) measured betas of the training trials (array or
    on-disk dataset, read in column blocks). α is chosen per voxel by
    ``cv``-fold cross-validation over ``alphas`` (see
    :mod:`rest2visual.evaluate.ridge`); pass image ids as ``groups`` so that
    repeats of one image never straddle a fold.

    Returns (predictions (N_test, V) float32, the fit with its chosen alphas).
    """
    fit = fit_ridge_cv(train_features, train_betas, alphas=alphas, cv=cv, groups=groups,
                       alpha_per_target=True, seed=seed)
    test_features = as_finite(test_features, "ridge_encoding_baseline: test features")
    return fit.predict(test_features).astype(np.float32), fit
