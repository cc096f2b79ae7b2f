"""A light decoding probe: can the seen image be identified from a (predicted) beta map?

Instead of the paper's MindEye2 reconstruction (a 9 GB checkpoint), a ridge
decoder maps measured visual-cortex betas (N, V_vc) to the image embeddings
(N, C) of the frozen image encoder, fitted on training trials only. On the
test trials it decodes measured betas and, with the same decoder, predicted
betas; if predicted maps carry the image's information as measured ones do,
identification from them approaches identification from the measurement.

Each beta map is z-scored over its voxels before decoding (as for the
metrics), so a prediction's overall scale or offset, which the decoder never
saw in training, does not count.

Scores, with C[i, j] the Pearson correlation between the decoded embedding of
test row i and the true embedding of test image j:
- top-1: the fraction of rows whose own image has the highest C among all
  distinct test images (chance 1 / number of images);
- 2-way: over pairs of rows (i, j) showing different images a ≠ b, the
  fraction with C[i, a] + C[j, b] > C[i, b] + C[j, a], i.e. the correct
  assignment beats the swapped one (ties count half; chance 0.5).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from rest2visual.checks import InputError
from rest2visual.evaluate.metrics import as_finite, zscore_rows
from rest2visual.evaluate.ridge import DEFAULT_ALPHAS, RidgeFit, fit_ridge_cv


def _image_table(true_embeddings, image_ids):
    """Distinct test images (their embeddings) and each row's index among them."""
    true_embeddings = as_finite(true_embeddings, "identification: true embeddings")
    n = len(true_embeddings)
    if image_ids is None:
        return true_embeddings, np.arange(n)
    image_ids = np.asarray(image_ids)
    if image_ids.shape != (n,):
        raise InputError(f"identification: image_ids must have shape ({n},), got {image_ids.shape}")
    _, first, inverse = np.unique(image_ids, return_index=True, return_inverse=True)
    return true_embeddings[first], inverse


def identification(decoded, true_embeddings, image_ids=None) -> dict:
    """Top-1 and 2-way identification of decoded embeddings (N, C) among the test images.

    ``true_embeddings``: (N, C) embedding of each row's image; ``image_ids``:
    (N,) image of each row, so that repeats of an image count once among the
    candidates (default: every row a distinct image).
    Returns {'top1', 'two_way', 'n_images', 'chance_top1'}.
    """
    decoded = as_finite(decoded, "identification: decoded embeddings")
    candidates, own = _image_table(true_embeddings, image_ids)
    if decoded.shape[0] != len(own) or decoded.shape[1] != candidates.shape[1]:
        raise InputError(f"identification: decoded embeddings {decoded.shape} do not match the true "
                         f"embeddings ({len(own)}, {candidates.shape[1]})")
    n_images = len(candidates)
    if n_images < 2:
        raise InputError("identification: need at least 2 distinct test images")
    corr = zscore_rows(decoded) @ zscore_rows(candidates).T / decoded.shape[1]  # (N, n_images)
    rows = np.arange(len(own))
    top1 = float(np.mean(np.argmax(corr, axis=1) == own))
    correct = corr[rows, own]
    crossed = corr[:, own]  # crossed[i, j] = C[i, image of row j]
    margin = correct[:, None] + correct[None, :] - crossed - crossed.T
    pairs = np.triu(own[:, None] != own[None, :], k=1)
    two_way = float(np.mean(margin[pairs] > 0) + 0.5 * np.mean(margin[pairs] == 0))
    return {"top1": top1, "two_way": two_way, "n_images": n_images, "chance_top1": 1.0 / n_images}


def fit_decoder(train_betas, train_embeddings, *, alphas=DEFAULT_ALPHAS, cv: int = 5, groups=None,
                seed: int = 0) -> RidgeFit:
    """Ridge decoder from z-scored visual-cortex betas (n, V_vc) to image embeddings (n, C).

    One α for all embedding dimensions, chosen by ``cv``-fold CV (pass image
    ids as ``groups`` so repeats of an image stay in one fold).
    """
    train_betas = zscore_rows(as_finite(train_betas, "decoder: training betas"))
    train_embeddings = as_finite(train_embeddings, "decoder: training embeddings")
    return fit_ridge_cv(train_betas, train_embeddings, alphas=alphas, cv=cv, groups=groups,
                        alpha_per_target=False, seed=seed)


def decoding_probe(
    train_betas,
    train_embeddings,
    test_betas: Mapping[str, np.ndarray],
    test_embeddings,
    *,
    image_ids=None,
    alphas=DEFAULT_ALPHAS,
    cv: int = 5,
    groups=None,
    seed: int = 0,
) -> pd.DataFrame:
    """Fit the decoder on measured training betas; score identification for each test source.

    ``test_betas``: source name → (N, V_vc) betas of the test rows, e.g.
    {'measured': ..., 'Rest2Visual': ..., 'group mean': ...}, all on the
    training betas' voxels. Returns one row per source: source, top1,
    two_way, n_images, chance_top1, alpha.
    """
    decoder = fit_decoder(train_betas, train_embeddings, alphas=alphas, cv=cv, groups=groups, seed=seed)
    records = []
    for source, betas in test_betas.items():
        betas = as_finite(betas, f"decoding probe: {source} test betas")
        decoded = decoder.predict(zscore_rows(betas))
        if not np.all(np.isfinite(decoded)):
            raise InputError(f"decoding probe: {source} test betas hold a constant map (no z-score)")
        scores = identification(decoded, test_embeddings, image_ids)
        records.append({"source": source, **scores, "alpha": float(decoder.alphas[0])})
    return pd.DataFrame.from_records(records)
