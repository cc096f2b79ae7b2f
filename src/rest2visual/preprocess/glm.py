"""Voxelwise ordinary least squares in one vectorised step, and z-scoring within a mask.

Every voxel shares the same design X (T × P: the seed regressor, an intercept,
optional confounds), so all V voxel fits are one product pinv(X) · Y of the
small P × T pseudo-inverse (float64, SVD-based, so a rank-deficient design gets
the minimum-norm solution like nilearn's OLS) with the T × V data. The data stay
float32 in memory and are promoted to float64 one voxel chunk at a time, which
bounds the extra memory and keeps float64 accuracy when the data carry a large
baseline (raw BOLD ~10³ around a signal of ~1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rest2visual.checks import InputError

#: float64 bytes per voxel chunk of the data in :func:`ols_betas`
CHUNK_BYTES = 64 * 2**20


def seed_design(regressor: np.ndarray, confounds: np.ndarray | None = None) -> np.ndarray:
    """(T, P) design [regressor, intercept, confounds...] of one run, float64.

    ``regressor`` is (T,); ``confounds`` is (T, K) (e.g. NSD's 6 motion
    parameters) or None. Confounds enter raw, like the voxel data they explain.
    """
    regressor = np.asarray(regressor, dtype=np.float64)
    if regressor.ndim != 1:
        raise ValueError(f"expected a (T,) regressor, got shape {regressor.shape}")
    columns = [regressor[:, None], np.ones((regressor.shape[0], 1))]
    if confounds is not None:
        confounds = np.asarray(confounds, dtype=np.float64)
        if confounds.ndim == 1:
            confounds = confounds[:, None]
        if confounds.ndim != 2 or confounds.shape[0] != regressor.shape[0]:
            raise InputError(f"confounds must be ({regressor.shape[0]}, K) for a run of "
                             f"{regressor.shape[0]} time points, got shape {confounds.shape}")
        columns.append(confounds)
    return np.hstack(columns)


def stack_run_designs(designs: list[np.ndarray]) -> np.ndarray:
    """Stack per-run designs (each (T_r, P), regressor first) into one (ΣT_r, ·) design.

    The regressor column (the first) is shared, so one β is fitted across runs;
    every other column (intercept, confounds) gets its own copy per run, block
    diagonal, because baselines and motion effects belong to one run.
    """
    if not designs:
        raise ValueError("no run designs to stack")
    n_nuisance = [d.shape[1] - 1 for d in designs]
    total_t = sum(d.shape[0] for d in designs)
    out = np.zeros((total_t, 1 + sum(n_nuisance)))
    row, col = 0, 1
    for d, k in zip(designs, n_nuisance):
        t = d.shape[0]
        out[row:row + t, 0] = d[:, 0]
        out[row:row + t, col:col + k] = d[:, 1:]
        row, col = row + t, col + k
    return out


def ols_betas(Y: np.ndarray, X: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """OLS coefficients of every voxel: Y (T, V) data, X (T, P) design → (P, V) float64 betas.

    Solves Y[:, v] = X · β[:, v] + ε in the least-squares sense for all v at once
    (β = pinv(X) · Y). ``Y`` may be any float dtype and any memory layout (a
    transposed (V, T) array is read without a copy of the whole).
    """
    return ols_betas_blocks([Y], X, chunk_bytes)


def ols_betas_blocks(blocks: Sequence[np.ndarray], X: np.ndarray,
                     chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """:func:`ols_betas` of data given as row blocks (T_r, V) stacked in time (runs).

    pinv(X) · [Y_1; Y_2; …] = Σ_r pinv(X)[:, rows_r] · Y_r, so runs are fitted
    together without concatenating their data.
    """
    X = np.asarray(X, dtype=np.float64)
    blocks = [np.asarray(b) for b in blocks]
    n_t = sum(b.shape[0] for b in blocks) if blocks else 0
    if (X.ndim != 2 or X.shape[0] != n_t or any(b.ndim != 2 for b in blocks)
            or len({b.shape[1] for b in blocks}) != 1):
        raise ValueError(f"expected data blocks (T_r, V) with one V and ΣT_r = X's rows, and "
                         f"X (T, P); got blocks {[b.shape for b in blocks]}, X {X.shape}")
    if X.shape[1] > X.shape[0]:
        raise InputError(f"the design has more columns ({X.shape[1]}) than time points "
                         f"({X.shape[0]})")
    pinv = np.linalg.pinv(X)  # (P, T), float64
    n_v = blocks[0].shape[1]
    betas = np.zeros((X.shape[1], n_v), dtype=np.float64)
    step = max(1, int(chunk_bytes // (8 * max(b.shape[0] for b in blocks))))
    # one float64 buffer, reused: a fresh allocation per chunk costs page faults
    buffer = np.empty((max(b.shape[0] for b in blocks), min(step, n_v)), order="F")
    row = 0
    for block in blocks:
        n_t = block.shape[0]
        rows = pinv[:, row:row + n_t]
        for start in range(0, n_v, step):
            stop = min(start + step, n_v)
            chunk = buffer[:n_t, :stop - start]
            np.copyto(chunk, block[:, start:stop])
            betas[:, start:stop] += rows @ chunk
        row += n_t
    return betas


def zscore_in_mask(values: np.ndarray) -> np.ndarray:
    """z-score in-mask values: (V,) → (V,) float64 with mean 0 and std 1 (ddof 0) over V.

    Raises ValueError when the values are constant or not finite (no z-map exists).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"expected a (V,) vector of in-mask values, V ≥ 2, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{int((~np.isfinite(values)).sum())} in-mask values are not finite")
    mean = values.mean()
    std = values.std()
    if not std > 1e-12 * max(1.0, abs(mean)):
        raise ValueError(f"in-mask values are constant ({mean:.6g}); cannot z-score")
    return (values - mean) / std
