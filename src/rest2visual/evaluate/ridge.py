"""Ridge regression with the penalty chosen by K-fold cross-validation, per target, via one SVD per fold.

Used in both directions: the image-only encoding baseline (image features →
hundreds of thousands of voxels) and the decoding probe (visual-cortex betas
→ image-embedding dimensions). scikit-learn's ``RidgeCV`` either uses
leave-one-out (GCV) or, with ``cv=K``, refits a grid search per alpha and has
no per-target alphas; neither fits "K-fold, alpha per voxel, 230k voxels".
The standard trick (as in himalaya) does: with the thin SVD of the fold's
standardized training features X = U S Vᵀ (:func:`thin_svd`), the ridge
weights for every alpha are

    W(α) = V diag(s / (s² + α)) Uᵀ Y,

so one SVD per fold serves the whole alpha grid and every target. The
validation error of every (alpha, target) is then computed in the k-
dimensional SVD space (k = min(n, p)) from A = X_val V, G = AᵀA, P = AᵀY_val:

    ‖Y_val − A D Uᵀ Y‖² = ‖Y_val‖² − 2 Σ (D UᵀY) ∘ P + Σ (D UᵀY) ∘ (G D UᵀY),

so its cost does not grow with the number of validation rows (when there are
fewer validation rows than k, the residuals are computed directly instead). Targets are
processed in column blocks, so Y may be an on-disk array (h5py dataset,
memmap) supporting ``Y[:, a:b]``.

Features are standardized (z-scored per column with the training rows'
mean and SD, zero-SD columns left unscaled) and targets centred, i.e. the
model is ``Pipeline(StandardScaler(), Ridge(alpha))`` of scikit-learn, whose
coefficients it reproduces. Costs: one SVD of (n × p) per fold plus one on
all rows, O(n·p·min(n, p)) each; the CV errors O(len(alphas)·n·k·T) in all;
memory for the weights p × T float64.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from rest2visual.checks import InputError
from rest2visual.evaluate.metrics import as_finite, blocks

log = logging.getLogger(__name__)

#: default penalty grid, one per decade (the CV cost grows linearly with its length);
#: wide because the best α of standardized features scales with n·p
DEFAULT_ALPHAS = np.logspace(-2, 8, 11)

#: eigenvalues of the Gram matrix below this fraction of the largest count as zero
_RANK_RTOL = 1e-12

#: float64 target values held in memory at once (~128 MB)
_BLOCK_ELEMENTS = 2**24


@dataclass
class RidgeFit:
    """A fitted ridge model: ``predict(X) = ((X − x_mean) / x_scale) @ coef + y_mean``.

    coef: (p, T); alphas: (T,) the penalty chosen for each target; alpha_grid:
    the candidates; cv_mse: (len(alpha_grid), T) mean squared validation error
    of each candidate, pooled over the folds.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    coef: np.ndarray
    alphas: np.ndarray
    alpha_grid: np.ndarray
    cv_mse: np.ndarray

    def predict(self, X) -> np.ndarray:
        """(n, p) features → (n, T) predictions, float64."""
        X = as_finite(X, "ridge predict: features")
        if X.shape[1] != self.coef.shape[0]:
            raise InputError(f"ridge predict: features have {X.shape[1]} columns, "
                             f"the model was fitted on {self.coef.shape[0]}")
        return ((X - self.x_mean) / self.x_scale) @ self.coef + self.y_mean

    @property
    def edge_fraction(self) -> tuple[float, float]:
        """Fractions of targets whose chosen alpha is the grid's smallest / largest (grid too narrow?)."""
        return (float(np.mean(self.alphas == self.alpha_grid[0])),
                float(np.mean(self.alphas == self.alpha_grid[-1])))


def _standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    return mean, scale


def thin_svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (n, p) = U diag(s) Vᵀ over its numerically non-zero singular values, from the smaller Gram matrix.

    An eigendecomposition of x xᵀ (n ≤ p) or xᵀx (p < n) is about ten times
    faster than LAPACK's SVD on these shapes. Squaring loses the directions
    with s² below 1e-12 of the largest, which are dropped: they are the
    zero-variance directions of centred features (rank n − 1 when p ≥ n),
    whose ridge weights s / (s² + α) vanish with s.
    """
    n, p = x.shape
    lam, vec = np.linalg.eigh(x @ x.T if n <= p else x.T @ x)
    keep = lam > _RANK_RTOL * max(lam.max(), 0.0)
    if not keep.any():
        raise InputError("ridge: the features have no variance (all columns constant)")
    s, vec = np.sqrt(lam[keep]), vec[:, keep]
    if n <= p:
        return vec, s, (vec.T @ x) / s[:, None]
    return (x @ vec) / s, s, vec.T


def cv_folds(n: int, cv: int, groups=None, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, validation) row-index pairs: shuffled KFold, or GroupKFold when ``groups`` is given.

    Pass the image id as ``groups`` when images repeat (NSD shows each image up
    to 3 times), so that no image sits on both sides of a fold.
    """
    from sklearn.model_selection import GroupKFold, KFold

    if int(cv) != cv or cv < 2:
        raise InputError(f"ridge: cv must be an integer ≥ 2 folds, got {cv}")
    if groups is None:
        if n < cv:
            raise InputError(f"ridge: {n} training rows cannot make {cv} folds")
        splitter = KFold(n_splits=cv, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(n)))
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise InputError(f"ridge: groups must have shape ({n},), got {groups.shape}")
    if len(np.unique(groups)) < cv:
        raise InputError(f"ridge: {len(np.unique(groups))} groups cannot make {cv} folds")
    return list(GroupKFold(n_splits=cv).split(np.zeros(n), groups=groups))


def fit_ridge_cv(
    X,
    Y,
    *,
    alphas=DEFAULT_ALPHAS,
    cv: int = 5,
    groups=None,
    alpha_per_target: bool = True,
    seed: int = 0,
) -> RidgeFit:
    """Fit ridge from X (n, p) to Y (n, T), choosing α by K-fold CV (mean squared error).

    ``alpha_per_target``: choose α for each target separately (encoding: each
    voxel has its own SNR) or one α minimising the error summed over targets.
    ``groups``: (n,) labels kept together in folds (e.g. image ids).
    ``seed``: shuffling of the folds when ``groups`` is None.
    """
    X = as_finite(X, "ridge: features").astype(np.float64)
    n, p = X.shape
    if not hasattr(Y, "shape") or len(Y.shape) != 2 or Y.shape[0] != n:
        raise InputError(f"ridge: targets must be a 2D array with {n} rows like the features, "
                         f"got shape {getattr(Y, 'shape', None)}")
    alpha_grid = np.asarray(alphas, dtype=np.float64).ravel()
    if alpha_grid.size == 0 or np.any(~(alpha_grid > 0)) or np.any(~np.isfinite(alpha_grid)):
        raise InputError(f"ridge: alphas must be positive and finite, got {alpha_grid}")
    n_targets = Y.shape[1]
    cv_mse = np.zeros((alpha_grid.size, n_targets))
    for train, val in cv_folds(n, cv, groups, seed):
        mean, scale = _standardizer(X[train])
        u, s, vt = thin_svd((X[train] - mean) / scale)
        a = ((X[val] - mean) / scale) @ vt.T
        # errors in the k-dim SVD space cost k² per target and alpha, directly n_val·k: take the cheaper
        gram = a.T @ a if len(val) > a.shape[1] else None
        for cols in blocks(n_targets, n, _BLOCK_ELEMENTS):
            y = _target_block(Y, cols)
            y_mean = y[train].mean(axis=0)
            uty = u.T @ (y[train] - y_mean)
            y_val = y[val] - y_mean
            if gram is not None:
                proj = a.T @ y_val
                sum_sq = np.einsum("nt,nt->t", y_val, y_val)
            for i, alpha in enumerate(alpha_grid):
                w = (s / (s * s + alpha))[:, None] * uty
                if gram is None:
                    resid = y_val - a @ w
                    cv_mse[i, cols] += np.einsum("nt,nt->t", resid, resid)
                else:
                    cv_mse[i, cols] += (sum_sq - 2 * np.einsum("kt,kt->t", w, proj)
                                        + np.einsum("kt,kt->t", w, gram @ w))
    cv_mse /= n
    if alpha_per_target:
        best = np.argmin(cv_mse, axis=0)
    else:
        best = np.full(n_targets, np.argmin(cv_mse.sum(axis=1)))
    chosen = alpha_grid[best]

    x_mean, x_scale = _standardizer(X)
    u, s, vt = thin_svd((X - x_mean) / x_scale)
    coef = np.empty((p, n_targets))
    y_mean = np.empty(n_targets)
    for cols in blocks(n_targets, n, _BLOCK_ELEMENTS):
        y = _target_block(Y, cols)
        y_mean[cols] = y.mean(axis=0)
        shrink = s[:, None] / (s[:, None] ** 2 + chosen[None, cols])
        coef[:, cols] = vt.T @ (shrink * (u.T @ (y - y_mean[cols])))
    fit = RidgeFit(x_mean, x_scale, y_mean, coef, chosen, alpha_grid, cv_mse)
    # The largest α is the natural choice of a target without predictable
    # signal (α → ∞ predicts its mean); piling up at the smallest means the grid
    # stops short of the best fit.
    low, _ = fit.edge_fraction
    if alpha_grid.size > 1 and low > 0.1:
        log.warning("ridge: %.0f%% of targets chose the smallest alpha %.3g; consider extending the grid "
                    "downwards", 100 * low, alpha_grid[0])
    return fit


def _target_block(Y, cols: slice) -> np.ndarray:
    block = np.asarray(Y[:, cols], dtype=np.float64)
    if not np.all(np.isfinite(block)):
        raise InputError(f"ridge: non-finite target values in columns {cols.start}:{cols.stop}")
    return block
