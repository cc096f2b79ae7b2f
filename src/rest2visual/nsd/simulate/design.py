"""The simulated experiment design: ``nsd_expdesign.mat`` and ``nsd_stim_info_merged.csv``.

As in NSD, the design spans 40 sessions of T trials; ``masterordering`` (one sequence
for all subjects) indexes each subject's image list ``subjectim`` (8 × m, 73k ids,
1-based), whose first ``n_shared`` columns are the shared images, identical for every
subject; ``sharedix`` holds their sorted ids. A subject's list needs m = ⌈40·T / 3⌉
images for each to be shown 3 times (NSD). Its other m − n_shared images are disjoint
between subjects (NSD) when the pool of non-shared images is large enough for that,
otherwise a random subset of the pool per subject (subjects then share some).

Toy sizes cannot show every image at most 3 times: 40 sessions × 40 trials need 534
images per subject, the demo's pool has ~200. The simulation then keeps NSD's formulas
and shapes, lists every non-shared image for every subject and shows each list entry
⌈40·T / m⌉ times (``design.showings_per_image`` in params.json), so ``repeat`` can
exceed 2 and the stimulus table's ``subjectN_rep0..2`` hold the first three showings.

Showings are spread over the experiment: R rounds of random permutations of the list,
each showing jittered by up to a round's length, then the first 40·T taken.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rest2visual.atomic import atomic_path
from rest2visual.nsd.keys import SUBJECTS
from rest2visual.nsd.simulate.fields import stream

DESIGN_SESSIONS = 40
NSD_SHOWINGS = 3
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by rest2visual simulate-nsd"


@dataclass(frozen=True)
class SimulatedDesign:
    """``masterordering`` (40·T,), ``subjectim`` (8, m), ``sharedix`` (n_shared,): all 1-based."""

    masterordering: np.ndarray
    subjectim: np.ndarray
    sharedix: np.ndarray
    trials_per_session: int
    showings_per_image: int
    disjoint_subject_images: bool

    def shown(self, subject: int) -> np.ndarray:
        """0-based 73k ids of every trial of the experiment for ``subject`` (40·T,)."""
        return self.subjectim[subject - 1][self.masterordering - 1] - 1

    def session_record(self, subject: int, session: int) -> pd.DataFrame:
        """What the generator showed ``subject`` in ``session``: one row per trial.

        Columns: trial (1-based), nsd_id (0-based), list_index (1-based), shared, repeat.
        """
        t = self.trials_per_session
        k = np.arange((session - 1) * t, session * t)
        ids = self.shown(subject)
        seen_before = showing_number(ids)
        return pd.DataFrame({
            "trial": np.arange(1, t + 1), "nsd_id": ids[k],
            "list_index": self.masterordering[k],
            "shared": self.masterordering[k] <= len(self.sharedix),
            "repeat": seen_before[k],
        })


def showing_number(ids: np.ndarray) -> np.ndarray:
    """For each trial, how many earlier trials showed the same image (0, 1, 2, ...)."""
    return pd.Series(ids).groupby(ids).cumcount().to_numpy()


def make_design(n_images: int, n_shared: int, trials_per_session: int,
                seed: int) -> SimulatedDesign:
    """Draw the experiment design (module docstring) from ``seed``."""
    rng = stream(seed, "design")
    n_trials = DESIGN_SESSIONS * trials_per_session
    m_needed = -(-n_trials // NSD_SHOWINGS)
    shared = rng.choice(n_images, n_shared, replace=False)
    pool = rng.permutation(np.setdiff1d(np.arange(n_images), shared))
    n_unique = max(0, min(m_needed - n_shared, len(pool)))
    disjoint = len(SUBJECTS) * n_unique <= len(pool)
    lists = []
    for s in range(len(SUBJECTS)):
        unique = (pool[s * n_unique:(s + 1) * n_unique] if disjoint
                  else rng.choice(pool, n_unique, replace=False))
        lists.append(np.concatenate([shared, unique]))
    subjectim = np.stack(lists) + 1
    m = subjectim.shape[1]
    rounds = -(-n_trials // m)
    # showing j of round r sits at slot r·m + j; jittering slots by up to a round's
    # length spreads an image's showings irregularly over the experiment
    entries = np.concatenate([rng.permutation(m) + 1 for _ in range(rounds)])
    slots = np.arange(rounds * m) + rng.uniform(0, m, rounds * m)
    masterordering = entries[np.argsort(slots, kind="stable")][:n_trials]
    return SimulatedDesign(masterordering.astype(np.int64), subjectim.astype(np.int64),
                           np.sort(shared) + 1, trials_per_session, rounds, disjoint)


def write_expdesign(design: SimulatedDesign, path: str | os.PathLike) -> None:
    """Save NSD's ``nsd_expdesign.mat`` (MATLAB 5; fields as 1 × n / 8 × m double arrays).

    The MAT header's creation date is replaced by a fixed text so that the same seed
    gives the same bytes.
    """
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, {"masterordering": design.masterordering[None].astype(np.float64),
                  "subjectim": design.subjectim.astype(np.float64),
                  "sharedix": design.sharedix[None].astype(np.float64)})
    raw = bytearray(buf.getvalue())
    raw[:116] = _MAT_HEADER.ljust(116, b" ")
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(raw))


def stim_info_table(design: SimulatedDesign, n_images: int, seed: int) -> pd.DataFrame:
    """NSD's ``nsd_stim_info_merged.csv`` columns for the simulated images.

    ``subjectN_repR``: 1-based experiment trial number of subject N's R-th showing of
    the image (R = 0, 1, 2), 0 when not shown that often.
    """
    rng = stream(seed, "design.stim_info")
    table = pd.DataFrame({
        "cocoId": rng.choice(np.arange(1, 600_000), n_images, replace=False),
        "cocoSplit": np.where(rng.random(n_images) < 0.9, "train2017", "val2017"),
        "cropBox": "(0, 0, 0.1671875, 0.1671875)",
        "loss": 0.0,
        "nsdId": np.arange(n_images),
        "flagged": False,
        "BOLD5000": False,
        "shared1000": np.isin(np.arange(n_images), design.sharedix - 1),
    })
    for s in SUBJECTS:
        table[f"subject{s}"] = np.isin(np.arange(n_images), design.subjectim[s - 1] - 1).astype(int)
    for s in SUBJECTS:
        ids = design.shown(s)
        rep = showing_number(ids)
        for r in range(NSD_SHOWINGS):
            col = np.zeros(n_images, np.int64)
            col[ids[rep == r]] = np.flatnonzero(rep == r) + 1
            table[f"subject{s}_rep{r}"] = col
    return table


def write_stim_info(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Save the stimulus table like NSD's CSV (leading unnamed index column)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=True)
