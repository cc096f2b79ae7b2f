"""Inter-subject correlation (ISC) matrices on the images every subject saw.

The paper's subject-specificity check: if a prediction made from subject a's
rest map carries a's own functional topography, it should match a's measured
response to an image better than subject b's measured response to the same
image. With maps of the shared images in the same order for every subject,

    M[a, b] = mean over images i of Pearson(pred_a(i), meas_b(i))

(rows: the subject whose rest map made the prediction; columns: the subject
whose measurement it is compared with; correlation over the region's voxels,
MNI). Passing the measured maps as both arguments gives the measured-vs-
measured ISC, whose diagonal is 1 by construction.

Diagonality index = (mean diagonal − mean off-diagonal) /
(|mean diagonal| + |mean off-diagonal|), in [−1, 1]: 0 when a prediction
matches every subject alike (no subject specificity), > 0 when it matches its
own subject best.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from rest2visual.checks import InputError
from rest2visual.evaluate.metrics import as_finite, zscore_rows


def _zscored_by_subject(maps_by_subject: Mapping, what: str, shape=None) -> dict:
    out = {}
    for subject, maps in maps_by_subject.items():
        maps = as_finite(maps, f"{what} maps of subject {subject}")
        if shape is None:
            shape = maps.shape
        if maps.shape != shape:
            raise InputError(
                f"{what} maps of subject {subject} have shape {maps.shape}; expected {shape} "
                "(the same shared images, in the same order, on the same voxels for every subject)"
            )
        out[subject] = zscore_rows(maps)
    return out


def intersubject_matrix(pred_by_subject: Mapping, meas_by_subject: Mapping | None = None) -> pd.DataFrame:
    """(S, S) ISC matrix M[a, b] = mean_i corr(pred_a(i), meas_b(i)), as a labelled DataFrame.

    ``pred_by_subject``/``meas_by_subject``: subject → (n_images, V) maps of the
    shared images (same image order and voxels for all). ``meas_by_subject``
    None compares the first argument with itself. Both dicts hold the same
    subjects; rows (index 'predicted') and columns ('measured') follow the
    predicted dict's order, so the diagonal pairs each subject with itself.
    """
    if not pred_by_subject:
        raise InputError("intersubject_matrix: no subjects given")
    meas_by_subject = pred_by_subject if meas_by_subject is None else meas_by_subject
    if set(meas_by_subject) != set(pred_by_subject):
        raise InputError(f"intersubject_matrix: predicted subjects {sorted(pred_by_subject)} differ "
                         f"from measured subjects {sorted(meas_by_subject)}")
    # same order on both axes, so that the diagonal pairs each subject with itself
    meas_by_subject = {s: meas_by_subject[s] for s in pred_by_subject}
    first = as_finite(next(iter(pred_by_subject.values())), "intersubject_matrix")
    if first.shape[0] < 1 or first.shape[1] < 2:
        raise InputError(f"intersubject_matrix: need ≥1 image and ≥2 voxels per map, got {first.shape}")
    pred = _zscored_by_subject(pred_by_subject, "predicted", first.shape)
    meas = _zscored_by_subject(meas_by_subject, "measured", first.shape)
    n_images, n_voxels = first.shape
    matrix = np.empty((len(pred), len(meas)))
    for i, zp in enumerate(pred.values()):
        for j, zm in enumerate(meas.values()):
            # mean over images of per-image correlations = one dot product of z-scored maps
            matrix[i, j] = np.einsum("iv,iv->", zp, zm) / (n_images * n_voxels)
    return pd.DataFrame(matrix, index=pd.Index(list(pred), name="predicted"),
                        columns=pd.Index(list(meas), name="measured"))


def diagonality_index(matrix) -> float:
    """(mean diag − mean off-diag) / (|mean diag| + |mean off-diag|) of a square (S ≥ 2) matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise InputError(f"diagonality_index: expected a square matrix of at least 2×2, got shape {m.shape}")
    diag = np.diag(m).mean()
    off = m[~np.eye(len(m), dtype=bool)].mean()
    denom = abs(diag) + abs(off)
    return float((diag - off) / denom) if denom > 0 else float("nan")
