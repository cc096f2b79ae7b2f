"""Rest-map quality metrics (test–retest, between-subject, identification, r with truth)
against direct numpy loops, and the rest-map recipes (zero-lag, percent signal change)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rest2visual.preprocess import rest_quality
from rest2visual.preprocess.rest_map import percent_signal_change
from rest2visual.preprocess.signal import hrf_convolve


def _maps(seed=0, n_subjects=4, n_sessions=3, n_vox=500, individuality=1.0):
    rng = np.random.default_rng(seed)
    group = rng.standard_normal(n_vox)
    maps, subjects = [], []
    for s in range(1, n_subjects + 1):
        own = group + individuality * rng.standard_normal(n_vox)
        for _ in range(n_sessions):
            maps.append(own + 0.8 * rng.standard_normal(n_vox))
            subjects.append(s)
    return np.array(maps), np.array(subjects)


def test_reliability_equals_direct_loops():
    maps, subjects = _maps(n_sessions=3)
    subjects[-1] = 4  # keep labels; one subject with 2 sessions below
    maps, subjects = maps[:-1], subjects[:-1]
    table = rest_quality.reliability(maps, subjects).set_index("subject")
    r = lambda a, b: np.corrcoef(a, b)[0, 1]
    for s in np.unique(subjects):
        own = [i for i in range(len(maps)) if subjects[i] == s]
        other = [i for i in range(len(maps)) if subjects[i] != s]
        retest = np.mean([r(maps[i], maps[j]) for i, j in itertools.combinations(own, 2)])
        between = np.mean([r(maps[i], maps[j]) for i in own for j in other])
        hits = []
        for i in own:
            scores = {}
            for t in np.unique(subjects):
                idx = [j for j in range(len(maps)) if subjects[j] == t and j != i]
                scores[t] = r(maps[i], maps[idx].mean(axis=0))
            hits.append(max(scores, key=scores.get) == s)
        assert table.loc[s, "n_sessions"] == len(own)
        assert table.loc[s, "test_retest_r"] == pytest.approx(retest, abs=1e-12)
        assert table.loc[s, "between_subject_r"] == pytest.approx(between, abs=1e-12)
        assert table.loc[s, "identification"] == pytest.approx(np.mean(hits))


def test_identification_tracks_individuality():
    distinct = rest_quality.reliability(*_maps(individuality=1.5))
    alike = rest_quality.reliability(*_maps(individuality=0.0))
    assert distinct["identification"].mean() == 1.0
    assert alike["identification"].mean() < 0.75
    assert (distinct["test_retest_r"] > distinct["between_subject_r"]).all()


def test_single_session_subject_has_no_retest_or_identification():
    maps, subjects = _maps(n_subjects=2, n_sessions=1)
    table = rest_quality.reliability(maps, subjects)
    assert table["test_retest_r"].isna().all() and table["identification"].isna().all()
    assert table["between_subject_r"].notna().all()


def test_truth_correlation_and_table():
    maps, subjects = _maps()
    truth = {s: maps[subjects == s].mean(axis=0) for s in np.unique(subjects)}
    table = rest_quality.quality_table({"none-raw": maps, "glover-raw": -maps}, subjects, truth)
    assert list(table.columns) == list(rest_quality.COLUMNS)
    first = table[(table.recipe == "none-raw") & (table.subject == 1)]["r_truth"].item()
    direct = np.mean([np.corrcoef(m, truth[1])[0, 1] for m in maps[subjects == 1]])
    assert first == pytest.approx(direct, abs=1e-12)
    assert table[table.recipe == "glover-raw"]["r_truth"].lt(0).all()
    md = rest_quality.summary_markdown(table, "none-raw")
    assert "**none-raw** (configured)" in md and "chance level 0.25" in md


def test_constant_map_is_refused():
    maps, subjects = _maps()
    maps[0] = 1.0
    with pytest.raises(ValueError, match="constant"):
        rest_quality.reliability(maps, subjects)


def test_percent_signal_change_per_voxel():
    rng = np.random.default_rng(1)
    base = np.array([1000.0, 400.0, 0.0, 20.0])
    series = (base * (1 + 0.01 * rng.standard_normal((50, 4)))).astype(np.float32)
    psc = percent_signal_change(series)
    for v in (0, 1):
        expected = 100 * (series[:, v] - series[:, v].mean()) / series[:, v].mean()
        np.testing.assert_allclose(psc[:, v], expected, rtol=1e-4, atol=1e-4)
    # no signal (0) and below 10 % of the median mean (20 < 0.1 · 400): zeroed, β = 0
    assert not psc[:, 2].any() and not psc[:, 3].any()
    # intensity no longer scales the series: same relative fluctuation, same psc std
    assert psc[:, 0].std() == pytest.approx(psc[:, 1].std(), rel=0.3)


def test_hrf_none_is_zero_lag():
    x = np.random.default_rng(2).standard_normal(60)
    np.testing.assert_array_equal(hrf_convolve(x, 1.33, "none"), x)
