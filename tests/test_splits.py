"""Split files: protocol guarantees, reproducibility from the seed, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rest2visual.checks import InputError
from rest2visual.dataset import splits as sp
from test_loader import synthetic_trials, write_synthetic_pack


@pytest.fixture(scope="module")
def trials():
    return synthetic_trials(subjects=(1, 2, 3, 4), sessions=(21, 22, 23), tps=40, n_images=90)[0]


def pair_labels(frame):
    """{(subject, nsd_id): set of splits its trials fall in}."""
    return frame.groupby(["subject", "nsd_id"])["split"].agg(set)


def test_paper_split_holds_out_whole_pairs_equally_per_subject(trials):
    out = sp.paper_split(trials, seed=0, n_test=50, val_fraction=0.1)
    assert list(out.columns) == list(sp.SPLIT_COLUMNS) and len(out) == len(trials)
    assert out[["subject", "session", "trial"]].equals(trials[["subject", "session", "trial"]])
    labels = pair_labels(out)
    assert (labels.map(len) == 1).all()  # repeats never straddle two splits
    test_pairs = labels[labels == {"test"}]
    assert len(test_pairs) == 50
    per_subject = test_pairs.index.get_level_values("subject").value_counts()
    assert sorted(per_subject.index) == [1, 2, 3, 4] and per_subject.max() - per_subject.min() <= 1
    n_val = (labels == {"val"}).sum()
    assert n_val == round(0.1 * (len(labels) - 50))
    test_keys = set(test_pairs.index)
    train_val = out[out.split != "test"]
    assert not test_keys & set(zip(train_val.subject, train_val.nsd_id))


def test_equal_quotas_respect_small_subjects():
    rng = np.random.default_rng(0)
    quota = sp._equal_quotas(np.array([2, 50, 50, 3]), 41, rng)
    assert quota.sum() == 41 and quota[0] == 2 and quota[3] == 3
    assert abs(int(quota[1]) - int(quota[2])) <= 1


def test_unseen_stimulus_split_never_shows_test_images(trials):
    out = sp.unseen_stimulus_split(trials, seed=0, n_test=60, val_fraction=0.1)
    test_ids = set(out.nsd_id[out.split == "test"])
    assert not test_ids & set(out.nsd_id[out.split != "test"])
    val_ids = set(out.nsd_id[out.split == "val"])
    assert val_ids and not val_ids & set(out.nsd_id[out.split == "train"])
    n_test_pairs = len(out[out.split == "test"][["subject", "nsd_id"]].drop_duplicates())
    assert 60 <= n_test_pairs < 60 + trials.subject.nunique()


def test_unseen_subject_split(trials):
    out = sp.make_unseen_subject_split(trials, 3, seed=0, val_fraction=0.2)
    assert (out.split[out.subject == 3] == "test").all()
    assert (out.split[out.subject != 3] != "test").all()
    assert (pair_labels(out).map(len) == 1).all()
    with pytest.raises(ValueError, match="subject 7 has no packed trials"):
        sp.make_unseen_subject_split(trials, 7, seed=0, val_fraction=0.1)


def test_shared_lists_images_seen_by_every_subject(trials):
    out = sp.shared_trials(trials)
    assert set(out.split) == {"shared"}
    by_id = trials.groupby("nsd_id").subject.nunique()
    everyone = set(by_id.index[by_id == 4])
    assert everyone and set(out.nsd_id) == everyone
    assert len(out) == trials.nsd_id.isin(everyone).sum()


def test_too_many_test_pairs_is_a_clear_error(trials):
    n_pairs = len(trials[["subject", "nsd_id"]].drop_duplicates())
    with pytest.raises(ValueError, match=f"only {n_pairs} subject–stimulus pairs"):
        sp.paper_split(trials, seed=0, n_test=n_pairs + 5, val_fraction=0.1)
    with pytest.raises(ValueError, match="unseen-stimulus split: n_test"):
        sp.unseen_stimulus_split(trials, seed=0, n_test=n_pairs, val_fraction=0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        sp.paper_split(trials, seed=0, n_test=5, val_fraction=1.0)


def test_cli_files_are_byte_identical_per_seed(tmp_path, capsys):
    pack = tmp_path / "pack.h5"
    write_synthetic_pack(pack, subjects=(1, 2, 3), sessions=(21, 22), tps=30, n_images=60)

    def run(out, seed):
        args = ["--pack", str(pack), "--out-dir", str(out), "--seed", str(seed), "--n-test", "12",
                "--val-fraction", "0.1", "--unseen-subjects", "1", "3"]
        assert sp.main(args) == 0
        return {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}

    a, b, c = run(tmp_path / "a", 0), run(tmp_path / "b", 0), run(tmp_path / "c", 1)
    assert sorted(a) == ["paper.csv", "shared.csv", "unseen-stimulus.csv",
                         "unseen-subject_sub-01.csv", "unseen-subject_sub-03.csv"]
    assert a == b
    for name in ("paper.csv", "unseen-stimulus.csv"):
        assert a[name] != c[name]
    assert sp.main(["--pack", str(pack), "--out-dir", str(tmp_path / "d"), "--n-test", "999"]) == 1
    assert "only" in capsys.readouterr().err and not (tmp_path / "d" / "paper.csv").exists()
    # a split file from another pack is refused
    stale = pd.read_csv(tmp_path / "a" / "paper.csv")
    stale.loc[stale.split == "train", "trial"] += 1000
    stale.to_csv(tmp_path / "stale.csv", index=False)
    with pytest.raises(InputError, match="not in the pack"):
        sp.split_rows(pack, tmp_path / "stale.csv", "train")
    with pytest.raises(InputError, match="no trials in split 'tset'"):
        sp.split_rows(pack, tmp_path / "a" / "paper.csv", "tset")


def test_paper_split_holds_out_shared_images_for_every_subject(trials):
    """n_shared_test images seen by everyone go to test with all their pairs (Figure 4's
    held-out data); the rest of the test is drawn as before and the total stays n_test."""
    by_id = trials.groupby("nsd_id").subject.nunique()
    everyone = set(by_id.index[by_id == 4])
    out = sp.paper_split(trials, seed=0, n_test=50, val_fraction=0.1, n_shared_test=3)
    labels = pair_labels(out)
    assert (labels.map(len) == 1).all()
    test_pairs = labels[labels == {"test"}]
    assert len(test_pairs) == 50
    test_ids = test_pairs.index.to_frame(index=False)
    held = [i for i in everyone if (test_ids.nsd_id == i).sum() == 4]
    assert len(held) >= 3  # every subject's pair of 3 shared images is test
    # nothing of a held-out shared image is left in train or val, for any subject
    assert not out[out.nsd_id.isin(held) & (out.split != "test")].size
    # without it, the draw is the plain paper split (same seed, same file)
    assert sp.paper_split(trials, seed=0, n_test=50, val_fraction=0.1, n_shared_test=0).equals(
        sp.paper_split(trials, seed=0, n_test=50, val_fraction=0.1))
    with pytest.raises(ValueError, match="n_shared_test=13 images × 4 subjects"):
        sp.paper_split(trials, seed=0, n_test=50, val_fraction=0.1, n_shared_test=13)
    with pytest.raises(ValueError, match="such images"):
        sp.paper_split(trials, seed=0, n_test=4 * (len(everyone) + 1), val_fraction=0.1,
                       n_shared_test=len(everyone) + 1)
