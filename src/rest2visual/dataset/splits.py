"""Train/val/test split files of every evaluation protocol (``rest2visual splits``).

Each split file is a CSV with one row per packed trial (pack order) and the
columns ``subject, session, trial, nsd_id, split`` (split ∈ {train, val, test});
it names trials by their key, not by row number, so it stays meaningful if the
pack is rebuilt, and :func:`split_rows` fails loudly if it no longer matches.

Protocols (the paper's Section 4 plus its generalisation tests):

- ``paper``: ``n_test`` subject–stimulus pairs — a pair is (subject, nsd_id),
  all of its repeats together — ``n_shared_test`` images seen by every subject with
  all their pairs first, the rest drawn with equal counts per subject as far as
  each subject's pairs allow; the other pairs split ``val_fraction`` val / rest
  train, also by pair, so no image's repeats straddle two splits of one subject.
- ``unseen-stimulus``: whole images held out from every subject until the test
  holds ≥ ``n_test`` pairs; val is also drawn by image, so validation measures
  the same generalisation as the test.
- ``unseen-subject_sub-XX``: all of subject XX's trials are test; the other
  subjects' pairs split val/train.
- ``shared``: not a split but a list, ``split`` = ``shared``: the trials whose
  image was seen by every packed subject (inter-subject analyses).

Each protocol draws from its own generator seeded by (seed, protocol name),
so the files are byte-identical for a seed and adding a protocol changes none
of the others.
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from pathlib import Path

import numpy as np

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError, require_file
from rest2visual.dataset.pack import TRIAL_KEY
from rest2visual.protocols import PAPER, UNSEEN_STIMULUS, unseen_subject

SPLIT_COLUMNS = (*TRIAL_KEY, "nsd_id", "split")
SPLITS = ("train", "val", "test")


def _rng(seed: int, protocol: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(protocol.encode())])


def _equal_quotas(capacity: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` into per-group counts as equal as ``capacity`` allows (water filling).

    Every group gets min(capacity, L) for the highest level L that fits, and the
    remainder goes one each to random groups that still have room, so uncapped
    groups differ by at most one.
    """
    capacity = np.asarray(capacity, dtype=np.int64)
    level = 0
    while level < capacity.max() and np.minimum(capacity, level + 1).sum() <= total:
        level += 1
    quota = np.minimum(capacity, level)
    room = np.flatnonzero(capacity > level)
    quota[rng.permutation(room)[:total - int(quota.sum())]] += 1
    return quota


def _label_pairs(trials, pair_split) -> np.ndarray:
    """Map a DataFrame (subject, nsd_id, split) of pairs onto ``trials`` → split per trial."""
    merged = trials[["subject", "nsd_id"]].merge(pair_split, on=["subject", "nsd_id"], how="left")
    return merged["split"].to_numpy()


def _val_by_pair(trials, pairs, rng, val_fraction: float, what: str) -> np.ndarray:
    """Label ``pairs`` (DataFrame subject, nsd_id) train/val and return the trials' labels."""
    n_val = int(round(val_fraction * len(pairs)))
    if n_val >= len(pairs):
        raise ValueError(f"{what}: val_fraction={val_fraction} leaves no training pair "
                         f"({len(pairs)} pairs)")
    split = np.full(len(pairs), "train", dtype=object)
    split[rng.choice(len(pairs), n_val, replace=False)] = "val"
    return _label_pairs(trials, pairs.assign(split=split))


def _pairs(trials):
    return trials[["subject", "nsd_id"]].drop_duplicates().sort_values(
        ["subject", "nsd_id"]).reset_index(drop=True)


def _frame(trials, split):
    out = trials[list(SPLIT_COLUMNS[:-1])].reset_index(drop=True).copy()
    out["split"] = np.asarray(split, dtype=object)
    return out


def _check_args(n_test: int | None, val_fraction: float) -> None:
    if n_test is not None and n_test < 1:
        raise ValueError(f"n_test must be ≥ 1, got {n_test}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


def paper_split(trials, *, seed: int, n_test: int, val_fraction: float, n_shared_test: int = 0):
    """The paper's protocol: n_test (subject, nsd_id) pairs test, equal per subject.

    ``n_shared_test`` images seen by every packed subject go to test first, with all
    their pairs (every subject's), so the inter-subject analyses (Figure 4) have held-out
    data; they count towards ``n_test`` and the rest of the test is drawn as before. The
    paper's 1000 test pairs over 8 subjects are 125 per subject, and it reports 125
    shared images in its inter-subject matrices: ``n_shared_test: 125`` reproduces that
    reading (config/nsd.yaml).
    """
    _check_args(n_test, val_fraction)
    rng, pairs = _rng(seed, PAPER), _pairs(trials)
    if n_test >= len(pairs):
        raise ValueError(f"paper split: n_test={n_test} test pairs requested, but the pack has "
                         f"only {len(pairs)} subject–stimulus pairs (some must remain to train)")
    test = np.zeros(len(pairs), bool)
    if n_shared_test:
        n_subjects = pairs["subject"].nunique()
        seen_by = pairs.groupby("nsd_id")["subject"].nunique()
        shared = seen_by.index[seen_by == n_subjects].to_numpy()
        if n_shared_test < 0 or n_shared_test > len(shared):
            raise ValueError(f"paper split: n_shared_test={n_shared_test} images seen by every "
                             f"subject requested, the pack has {len(shared)} such images")
        if n_shared_test * n_subjects > n_test:
            raise ValueError(f"paper split: n_shared_test={n_shared_test} images × {n_subjects} "
                             f"subjects = {n_shared_test * n_subjects} test pairs, more than "
                             f"n_test={n_test}")
        chosen = rng.choice(shared, n_shared_test, replace=False)
        test[pairs["nsd_id"].isin(chosen).to_numpy()] = True
    subjects = np.unique(pairs["subject"])
    counts = np.array([int(((pairs["subject"] == s) & ~test).sum()) for s in subjects])
    quota = _equal_quotas(counts, n_test - int(test.sum()), rng)
    for s, q in zip(subjects, quota):
        free = np.flatnonzero((pairs["subject"].to_numpy() == s) & ~test)
        test[rng.choice(free, q, replace=False)] = True
    split = _val_by_pair(trials, pairs[~test], rng, val_fraction, "paper split")
    split[_label_pairs(trials, pairs[test].assign(split="test")) == "test"] = "test"
    return _frame(trials, split)


def unseen_stimulus_split(trials, *, seed: int, n_test: int, val_fraction: float):
    """Whole images held out from every subject until the test holds ≥ n_test pairs."""
    _check_args(n_test, val_fraction)
    rng = _rng(seed, UNSEEN_STIMULUS)
    pairs = _pairs(trials)
    ids, n_subjects = np.unique(pairs["nsd_id"], return_counts=True)
    order = rng.permutation(len(ids))
    n_ids = int(np.searchsorted(np.cumsum(n_subjects[order]), n_test)) + 1
    if n_ids >= len(ids):
        raise ValueError(f"unseen-stimulus split: n_test={n_test} test pairs need all "
                         f"{len(ids)} images ({len(pairs)} pairs); some must remain to train")
    n_val = int(round(val_fraction * (len(ids) - n_ids)))
    if n_ids + n_val >= len(ids):
        raise ValueError(f"unseen-stimulus split: val_fraction={val_fraction} leaves no "
                         f"training image")
    label = np.full(len(ids), "train", dtype=object)
    label[order[:n_ids]] = "test"
    label[order[n_ids:n_ids + n_val]] = "val"
    return _frame(trials, label[np.searchsorted(ids, trials["nsd_id"].to_numpy())])


def make_unseen_subject_split(trials, subject: int, *, seed: int, val_fraction: float):
    """All of ``subject``'s trials test; the other subjects' pairs split val/train."""
    _check_args(None, val_fraction)
    is_test = trials["subject"].to_numpy() == subject
    if not is_test.any():
        raise ValueError(f"unseen-subject split: subject {subject} has no packed trials "
                         f"(packed subjects: {sorted(trials['subject'].unique().tolist())})")
    if is_test.all():
        raise ValueError(f"unseen-subject split: subject {subject} is the only packed subject")
    rng = _rng(seed, unseen_subject(subject))
    split = np.full(len(trials), "test", dtype=object)
    others = trials[~is_test]
    split[~is_test] = _val_by_pair(others, _pairs(others), rng, val_fraction,
                                   f"unseen-subject {subject} split")
    return _frame(trials, split)


def shared_trials(trials):
    """The trials whose image was seen by every packed subject (``split`` = ``shared``)."""
    n_all = trials["subject"].nunique()
    seen_by = trials.groupby("nsd_id")["subject"].nunique()
    keep = trials["nsd_id"].isin(seen_by.index[seen_by == n_all]).to_numpy()
    return _frame(trials[keep], np.full(int(keep.sum()), "shared", dtype=object))


def make_splits(trials_df, *, seed: int, n_test: int, val_fraction: float,
                n_shared_test: int = 0) -> dict:
    """{protocol name: split DataFrame} for ``paper``, ``unseen-stimulus`` and ``shared``."""
    return {
        PAPER: paper_split(trials_df, seed=seed, n_test=n_test, val_fraction=val_fraction,
                           n_shared_test=n_shared_test),
        UNSEEN_STIMULUS: unseen_stimulus_split(trials_df, seed=seed, n_test=n_test,
                                                 val_fraction=val_fraction),
        "shared": shared_trials(trials_df),
    }


def write_splits(splits: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write each split DataFrame atomically to ``out_dir/<name>.csv``; return the paths."""
    paths = []
    for name, frame in splits.items():
        path = Path(out_dir) / f"{name}.csv"
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n")
        paths.append(path)
    return paths


def split_rows(pack_or_trials, split_csv: str | os.PathLike, split: str) -> np.ndarray:
    """Increasing rows of /trials (and /betas) that ``split_csv`` assigns to ``split``.

    ``pack_or_trials`` is a pack path, a :class:`~rest2visual.dataset.pack.Pack`
    or its ``trials`` DataFrame. Raises InputError if the file names trials the
    pack does not hold (a split file from another pack).
    """
    import pandas as pd

    from rest2visual.dataset.pack import Pack

    if isinstance(pack_or_trials, pd.DataFrame):
        trials = pack_or_trials
    else:
        pack = pack_or_trials if isinstance(pack_or_trials, Pack) else Pack(pack_or_trials)
        trials = pack.trials
    path = require_file(split_csv, "split file")
    table = pd.read_csv(path)
    missing = [c for c in SPLIT_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing} (expected {list(SPLIT_COLUMNS)})")
    chosen = table[table["split"] == split]
    if chosen.empty:
        raise InputError(f"{path}: no trials in split {split!r} "
                         f"(splits present: {sorted(table['split'].unique().tolist())})")
    rows = trials[list(TRIAL_KEY) + ["nsd_id"]].reset_index(names="row")
    merged = chosen.merge(rows, on=list(TRIAL_KEY), how="left", suffixes=("", "_pack"))
    unknown = merged["row"].isna() | (merged["nsd_id"] != merged["nsd_id_pack"])
    if unknown.any():
        raise InputError(f"{path}: {int(unknown.sum())} {split} trials are not in the pack or "
                         "show another image there (a split file of another pack? regenerate it)")
    return np.sort(merged["row"].to_numpy(dtype=np.int64))


def main(argv: list[str] | None = None) -> int:
    from rest2visual.config import defaults
    from rest2visual.dataset.pack import Pack

    parser = argparse.ArgumentParser(prog="rest2visual splits",
                                     description="write the split files of every protocol")
    parser.add_argument("--pack", required=True, help="the triplet pack (.h5)")
    parser.add_argument("--out-dir", required=True)
    schema = defaults("splits")  # the config's defaults, from its schema
    parser.add_argument("--seed", type=int, default=schema["seed"])
    parser.add_argument("--n-test", type=int, default=schema["n_test"],
                        help="test subject–stimulus pairs")
    parser.add_argument("--val-fraction", type=float, default=schema["val_fraction"])
    parser.add_argument("--n-shared-test", type=int, default=schema["n_shared_test"],
                        help="images seen by every subject held out first, all their pairs "
                             "(count towards --n-test)")
    parser.add_argument("--unseen-subjects", type=int, nargs="*", default=[])
    args = parser.parse_args(argv)
    try:
        with Pack(args.pack) as pack:
            trials = pack.trials
        splits = make_splits(trials, seed=args.seed, n_test=args.n_test,
                             val_fraction=args.val_fraction, n_shared_test=args.n_shared_test)
        for s in args.unseen_subjects:
            splits[unseen_subject(s)] = make_unseen_subject_split(
                trials, s, seed=args.seed, val_fraction=args.val_fraction)
    except ValueError as exc:  # InputError included
        print(f"rest2visual splits: error: {exc}", file=sys.stderr)
        return 1
    for path in write_splits(splits, args.out_dir):
        counts = splits[path.name[:-4]]["split"].value_counts().to_dict()
        print(f"{path}: {counts}")
    return 0
