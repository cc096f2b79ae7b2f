"""Reading NSD's experiment design: which image each trial showed.

``nsd_expdesign.mat`` (all indices 1-based, MATLAB doubles):

- ``masterordering`` (1 × 30000): for experiment trial k (0-based over all sessions),
  the index into the subject's image list;
- ``subjectim`` (8 × 10000): each subject's image list as 73k ids; the first
  ``len(sharedix)`` columns are the shared images, identical for every subject;
- ``sharedix`` (1 × 1000): the shared images' 73k ids, sorted.

Trial i (1-based) of session s (1-based) with T trials per session is experiment
trial k = (s − 1)·T + (i − 1); its image is the 0-based 73k id
``subjectim[subject − 1, masterordering[k] − 1] − 1``, a shared image iff
``masterordering[k] <= len(sharedix)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rest2visual.checks import InputError, require_file

FIELDS = ("masterordering", "subjectim", "sharedix")
N_SUBJECTS = 8


@dataclass(frozen=True)
class ExpDesign:
    """NSD's design (module docstring): 1-based integer arrays as in the .mat file.

    ``masterordering`` (n,), ``subjectim`` (8, m), ``sharedix`` (k,); ``source`` names
    the file for error messages.
    """

    masterordering: np.ndarray
    subjectim: np.ndarray
    sharedix: np.ndarray
    source: str = "<design>"

    @property
    def n_shared(self) -> int:
        return int(self.sharedix.size)


def _integer_array(value, path: Path, field: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        raise InputError(f"{path}: field {field!r} must be a non-empty numeric array, "
                         f"found dtype {arr.dtype} and shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"{path}: field {field!r} must hold whole numbers (1-based indices)")
    arr = arr.astype(np.int64)
    if arr.min() < 1:
        raise InputError(f"{path}: field {field!r} holds {arr.min()}; expected 1-based "
                         "indices (≥ 1)")
    return arr


def _vector(arr: np.ndarray, path: Path, field: str) -> np.ndarray:
    if arr.ndim > 2 or (arr.ndim == 2 and min(arr.shape) != 1):
        raise InputError(f"{path}: field {field!r} must be a vector (1 × n), found shape "
                         f"{arr.shape}")
    return arr.reshape(-1)


def load_expdesign(path: str | os.PathLike) -> ExpDesign:
    """Read and check ``nsd_expdesign.mat`` (see the module docstring).

    Raises InputError naming the file when it is missing or unreadable, a field is
    missing, or the fields disagree (shapes, index ranges, shared images).
    """
    from scipy.io import loadmat

    path = require_file(path, "NSD experiment design (nsd_expdesign.mat)")
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # not a MAT file, truncated, ...
        raise InputError(f"{path}: cannot read as a MATLAB .mat file ({exc})") from exc
    missing = [f for f in FIELDS if f not in mat]
    if missing:
        raise InputError(f"{path}: missing field(s) {', '.join(missing)}; an NSD experiment "
                         f"design holds {', '.join(FIELDS)}")
    order = _vector(_integer_array(mat["masterordering"], path, "masterordering"), path,
                    "masterordering")
    subjectim = _integer_array(mat["subjectim"], path, "subjectim")
    sharedix = _vector(_integer_array(mat["sharedix"], path, "sharedix"), path, "sharedix")
    if subjectim.ndim != 2 or subjectim.shape[0] != N_SUBJECTS:
        raise InputError(f"{path}: field 'subjectim' must be {N_SUBJECTS} × m (one image list "
                         f"per subject), found shape {subjectim.shape}")
    m, k = subjectim.shape[1], sharedix.size
    if order.max() > m:
        raise InputError(f"{path}: 'masterordering' indexes list entry {order.max()} but "
                         f"'subjectim' lists only {m} images per subject")
    if k > m:
        raise InputError(f"{path}: 'sharedix' has {k} shared images, more than the {m} "
                         "columns of 'subjectim'")
    first = subjectim[:, :k]
    if not np.all(first == first[0]) or not np.array_equal(np.sort(first[0]), np.sort(sharedix)):
        raise InputError(f"{path}: the first {k} columns of 'subjectim' must be the shared "
                         "images of 'sharedix', identical for every subject")
    return ExpDesign(order, subjectim, sharedix, str(path))


def _experiment_trials(design: ExpDesign, subject: int, session: int,
                       trials_per_session: int) -> np.ndarray:
    """0-based experiment trial numbers k of (session, trials 1..T), range-checked."""
    if not 1 <= subject <= design.subjectim.shape[0]:
        raise ValueError(f"subject {subject} not in 1..{design.subjectim.shape[0]}")
    if trials_per_session < 1 or session < 1:
        raise ValueError(f"session ({session}) and trials_per_session ({trials_per_session}) "
                         "must be ≥ 1")
    k = np.arange((session - 1) * trials_per_session, session * trials_per_session)
    if k[-1] >= design.masterordering.size:
        n_sessions = design.masterordering.size // trials_per_session
        raise InputError(f"{design.source}: session {session} needs experiment trials up to "
                         f"{k[-1] + 1}, but 'masterordering' has {design.masterordering.size} "
                         f"({n_sessions} sessions of {trials_per_session} trials)")
    return k


def trial_nsd_ids(design: ExpDesign, subject: int, session: int,
                  trials_per_session: int = 750) -> np.ndarray:
    """0-based 73k ids of the images of ``subject``'s ``session``, trial order: (T,) int64."""
    k = _experiment_trials(design, subject, session, trials_per_session)
    return design.subjectim[subject - 1, design.masterordering[k] - 1] - 1


def trial_table(design: ExpDesign, subject: int, session: int,
                trials_per_session: int = 750) -> pd.DataFrame:
    """One row per trial of ``subject``'s ``session``.

    Columns: subject, session, trial (1-based), nsd_id (0-based 73k id), shared (bool),
    repeat (how many times the subject saw this image on any earlier trial of the
    experiment: 0, 1, 2 in NSD).
    """
    k = _experiment_trials(design, subject, session, trials_per_session)
    upto = design.subjectim[subject - 1, design.masterordering[:k[-1] + 1] - 1] - 1
    repeat = pd.Series(upto).groupby(upto).cumcount().to_numpy()[k]
    return pd.DataFrame({
        "subject": subject, "session": session,
        "trial": np.arange(1, trials_per_session + 1),
        "nsd_id": upto[k],
        "shared": design.masterordering[k] <= design.n_shared,
        "repeat": repeat,
    })
