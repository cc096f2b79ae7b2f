"""The simulated experiment design: ``nsd_expdesign.mat`` and ``nsd_stim_info_merged.csv``.

The file has NSD's layout exactly: ``masterordering`` 1 × 30000 (40 sessions × 750
trials, one sequence for all subjects), ``subjectim`` 8 × 10000 (each subject's list
of 73k ids, 1-based; the first 1000 columns are the shared images, identical for
every subject), ``sharedix`` 1 × 1000 (their sorted ids). Trial i of session s is
experiment trial k = (s − 1)·750 + (i − 1) as in NSD, so a simulated session of
T < 750 trials is the first T trials of that NSD session, the way a subset of NSD's
betas would look.

Where the simulation departs from NSD it departs as a subset of NSD would: only
``n_images`` images exist in the simulated ``imgBrick`` (73k ids 0..n_images − 1),
and only the first T trials of each session show them. Those trials follow a
*compact* design drawn as NSD's: a subject's compact list needs m = ⌈40·T / 3⌉
images for each to be shown 3 times; ``n_shared`` of them are shared; the others are
disjoint between subjects when the pool of non-shared images is large enough,
otherwise a random subset of the pool per subject (subjects then share some). Toy
pools cannot show every image at most 3 times (40 sessions × 40 trials need 534
images per subject); the compact list then holds every pool image and each is shown
⌈40·T / m⌉ times (``design.showings_per_image`` in params.json), so ``repeat`` can
exceed 2. The compact shared entries take the first columns of ``subjectim``, the
compact non-shared entries the columns from 1001 on; the remaining columns list 73k
ids from ``n_images`` on (images of NSD the subset does not hold), shown in trials
T + 1..750 of each session, each column about 3 times, as in NSD.

Showings are spread over the experiment: R rounds of random permutations of a list,
each showing jittered by up to a round's length, then the first N taken.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rest2visual.atomic import atomic_path
from rest2visual.nsd.design import DESIGN_SESSIONS, DESIGN_TRIALS
from rest2visual.nsd.keys import SUBJECTS, TRIALS_PER_SESSION
from rest2visual.nsd.simulate.fields import stream

NSD_SHOWINGS = 3
#: NSD's list length per subject and number of shared images (columns of subjectim)
NSD_LIST_LENGTH = 10_000
NSD_SHARED = 1_000
#: 73k ids: NSD's image count
NSD_IMAGES = 73_000
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by rest2visual simulate-nsd"


@dataclass(frozen=True)
class SimulatedDesign:
    """NSD-layout design, all 1-based: ``masterordering`` (30000,), ``subjectim``
    (8, 10000), ``sharedix`` (1000,); ``trials_per_session`` T: the trials simulated per
    session (the first T of each NSD session).

    The compact design the simulated trials were drawn from (module docstring):
    ``compact_order`` (40·T,) 1-based entries of ``compact_lists`` (8, m) 0-based 73k
    ids, whose first ``compact_shared`` entries are the shared images; ``compact_columns``
    (m,) the 1-based column of ``subjectim`` each compact entry was placed in.
    """

    masterordering: np.ndarray
    subjectim: np.ndarray
    sharedix: np.ndarray
    trials_per_session: int
    showings_per_image: int
    disjoint_subject_images: bool
    compact_order: np.ndarray
    compact_lists: np.ndarray
    compact_shared: int
    compact_columns: np.ndarray

    @property
    def compact_list_length(self) -> int:
        return int(self.compact_lists.shape[1])

    def shown(self, subject: int) -> np.ndarray:
        """0-based 73k ids of every trial of the experiment for ``subject`` (30000,)."""
        return self.subjectim[subject - 1][self.masterordering - 1] - 1

    def session_record(self, subject: int, session: int) -> pd.DataFrame:
        """What the generator showed ``subject`` in ``session``: one row per simulated trial.

        Read from the compact design (sessions of T trials), not from the NSD layout,
        so it checks the readers' stride independently. Columns: trial (1-based),
        nsd_id (0-based), list_index (1-based column of ``subjectim``), shared, repeat
        (earlier showings of the image; the other trials of the NSD layout show images
        outside the simulated subset, so they never count).
        """
        t = self.trials_per_session
        pos = np.arange((session - 1) * t, session * t)
        entries = self.compact_order
        ids = self.compact_lists[subject - 1][entries - 1]
        return pd.DataFrame({
            "trial": np.arange(1, t + 1), "nsd_id": ids[pos],
            "list_index": self.compact_columns[entries[pos] - 1],
            "shared": entries[pos] <= self.compact_shared,
            "repeat": showing_number(ids)[pos],
        })


def showing_number(ids: np.ndarray) -> np.ndarray:
    """For each trial, how many earlier trials showed the same image (0, 1, 2, ...)."""
    return pd.Series(ids).groupby(ids).cumcount().to_numpy()


def _spread(m: int, n: int, rng) -> np.ndarray:
    """n entries (1-based, of 1..m) in R = ⌈n/m⌉ jittered rounds of permutations."""
    rounds = -(-n // m)
    # showing j of round r sits at slot r·m + j; jittering slots by up to a round's
    # length spreads an entry's showings irregularly over the experiment
    entries = np.concatenate([rng.permutation(m) + 1 for _ in range(rounds)])
    slots = np.arange(rounds * m) + rng.uniform(0, m, rounds * m)
    return entries[np.argsort(slots, kind="stable")][:n]


def make_design(n_images: int, n_shared: int, trials_per_session: int,
                seed: int) -> SimulatedDesign:
    """Draw the experiment design (module docstring) from ``seed``."""
    t = int(trials_per_session)
    if not 1 <= t <= TRIALS_PER_SESSION:
        raise ValueError(f"trials_per_session must be 1..{TRIALS_PER_SESSION} (NSD's session "
                         f"length), got {t}")
    if n_shared > NSD_SHARED:
        raise ValueError(f"n_shared ({n_shared}) must be at most NSD's {NSD_SHARED}")
    rng = stream(seed, "design")
    n_trials = DESIGN_SESSIONS * t
    m_needed = -(-n_trials // NSD_SHOWINGS)
    shared = rng.choice(n_images, n_shared, replace=False)
    pool = rng.permutation(np.setdiff1d(np.arange(n_images), shared))
    n_unique = max(0, min(m_needed - n_shared, len(pool), NSD_LIST_LENGTH - NSD_SHARED))
    disjoint = len(SUBJECTS) * n_unique <= len(pool)
    uniques = [pool[s * n_unique:(s + 1) * n_unique] if disjoint
               else rng.choice(pool, n_unique, replace=False) for s in range(len(SUBJECTS))]
    m = n_shared + n_unique
    compact = _spread(m, n_trials, rng)
    rounds = -(-n_trials // m)

    # NSD layout: compact entry j ≤ n_shared → column j, j > n_shared → 1000 + j − n_shared
    entry = np.arange(1, m + 1)
    columns = np.where(entry <= n_shared, entry, NSD_SHARED + entry - n_shared)
    filler_cols = np.setdiff1d(np.arange(1, NSD_LIST_LENGTH + 1), columns)
    # compact session s, trial i → NSD's experiment trial (s − 1)·750 + (i − 1)
    order = np.empty(DESIGN_TRIALS, np.int64)
    simulated = np.zeros(DESIGN_TRIALS, bool)
    for s in range(DESIGN_SESSIONS):
        simulated[s * TRIALS_PER_SESSION:s * TRIALS_PER_SESSION + t] = True
    order[simulated] = columns[compact - 1]
    n_filler = DESIGN_TRIALS - n_trials
    if n_filler:
        order[~simulated] = filler_cols[_spread(filler_cols.size, n_filler, rng) - 1]

    # filler columns list images the subset does not hold: 73k ids from n_images on
    outside = np.arange(n_images, NSD_IMAGES)
    n_fill_shared = NSD_SHARED - n_shared
    n_fill_unique = NSD_LIST_LENGTH - NSD_SHARED - n_unique
    if outside.size < n_fill_shared + n_fill_unique:
        raise ValueError(f"n_images ({n_images}) leaves too few of NSD's {NSD_IMAGES} ids for "
                         "the design's other images")
    fill_shared = outside[:n_fill_shared]
    rest = outside[n_fill_shared:]
    fill_disjoint = len(SUBJECTS) * n_fill_unique <= rest.size
    rows = []
    for s in range(len(SUBJECTS)):
        fill = (rest[s * n_fill_unique:(s + 1) * n_fill_unique] if fill_disjoint
                else rng.choice(rest, n_fill_unique, replace=False))
        rows.append(np.concatenate([shared, fill_shared, uniques[s], fill]))
    subjectim = np.stack(rows) + 1
    compact_lists = np.stack([np.concatenate([shared, u]) for u in uniques])
    return SimulatedDesign(order, subjectim.astype(np.int64), np.sort(subjectim[0, :NSD_SHARED]),
                           t, rounds, disjoint, compact.astype(np.int64),
                           compact_lists.astype(np.int64), int(n_shared), columns)


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
        held = ids < n_images  # trials of images in the simulated subset
        for r in range(NSD_SHOWINGS):
            col = np.zeros(n_images, np.int64)
            pick = (rep == r) & held
            col[ids[pick]] = np.flatnonzero(pick) + 1
            table[f"subject{s}_rep{r}"] = col
    return table


def write_stim_info(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Save the stimulus table like NSD's CSV (leading unnamed index column)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=True)
