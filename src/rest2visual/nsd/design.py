"""Reading NSD's experiment design: which image each trial showed.

``nsd_expdesign.mat`` (all indices 1-based, MATLAB doubles):

- ``masterordering`` (1 × 30000): for experiment trial k (0-based over all sessions),
  the index into the subject's image list;
- ``subjectim`` (8 × 10000): each subject's image list as 73k ids; the first
  ``len(sharedix)`` columns are the shared images, identical for every subject;
- ``sharedix`` (1 × 1000): the shared images' 73k ids, sorted.

Trial i (1-based) of session s (1-based) is experiment trial
k = (s − 1)·750 + (i − 1): 750 is NSD's fixed session length
(``len(masterordering) / 40``), whatever number of trials a betas file holds (a
file with T < 750 trials holds the session's first T trials). Its image is the
0-based 73k id ``subjectim[subject − 1, masterordering[k] − 1] − 1``, a shared
image iff ``masterordering[k] <= len(sharedix)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rest2visual.checks import InputError, require_file
from rest2visual.nsd.keys import TRIALS_PER_SESSION

FIELDS = ("masterordering", "subjectim", "sharedix")
N_SUBJECTS = 8
#: sessions the design spans (NSD: 40 for every subject, though some ran fewer)
DESIGN_SESSIONS = 40
#: experiment trials of the design: 40 sessions × 750 trials
DESIGN_TRIALS = DESIGN_SESSIONS * TRIALS_PER_SESSION


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
    if order.size != DESIGN_TRIALS:
        raise InputError(f"{path}: 'masterordering' has {order.size} entries; NSD's design "
                         f"has {DESIGN_TRIALS} ({DESIGN_SESSIONS} sessions × "
                         f"{TRIALS_PER_SESSION} trials), the session stride of every trial")
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


def experiment_trials(session: int, n_trials: int = TRIALS_PER_SESSION) -> np.ndarray:
    """0-based experiment trials k of trials 1..``n_trials`` of ``session`` (NSD stride 750).

    k = (session − 1)·750 + (i − 1): the stride is NSD's session length, never the
    number of trials a betas file holds.
    """
    if not 1 <= session <= DESIGN_SESSIONS:
        raise ValueError(f"session {session} not in NSD's sessions 1..{DESIGN_SESSIONS}")
    if not 1 <= n_trials <= TRIALS_PER_SESSION:
        raise ValueError(f"n_trials ({n_trials}) must be 1..{TRIALS_PER_SESSION} (an NSD session "
                         f"has {TRIALS_PER_SESSION} trials)")
    start = (session - 1) * TRIALS_PER_SESSION
    return np.arange(start, start + n_trials)


def _check_subject(design: ExpDesign, subject: int) -> None:
    if not 1 <= subject <= design.subjectim.shape[0]:
        raise ValueError(f"subject {subject} not in 1..{design.subjectim.shape[0]}")


def trial_nsd_ids(design: ExpDesign, subject: int, session: int,
                  n_trials: int = TRIALS_PER_SESSION) -> np.ndarray:
    """0-based 73k ids of trials 1..``n_trials`` of ``subject``'s ``session``: (n_trials,) int64."""
    _check_subject(design, subject)
    k = experiment_trials(session, n_trials)
    return design.subjectim[subject - 1, design.masterordering[k] - 1] - 1


def trial_table(design: ExpDesign, subject: int, session: int,
                n_trials: int = TRIALS_PER_SESSION) -> pd.DataFrame:
    """One row per trial 1..``n_trials`` of ``subject``'s ``session`` (stride 750, see above).

    Columns: subject, session, trial (1-based), nsd_id (0-based 73k id), shared (bool),
    repeat (how many times the subject saw this image on any earlier trial of the
    experiment: 0, 1, 2 in NSD).
    """
    _check_subject(design, subject)
    k = experiment_trials(session, n_trials)
    upto = design.subjectim[subject - 1, design.masterordering[:k[-1] + 1] - 1] - 1
    repeat = pd.Series(upto).groupby(upto).cumcount().to_numpy()[k]
    return pd.DataFrame({
        "subject": subject, "session": session,
        "trial": np.arange(1, n_trials + 1),
        "nsd_id": upto[k],
        "shared": design.masterordering[k] <= design.n_shared,
        "repeat": repeat,
    })
