"""Reading NSD's experiment design (rest2visual.nsd.design) on hand-made .mat files in NSD's layout.

The designs here have NSD's shapes (``masterordering`` 1 × 30000, ``subjectim`` 8 × 10000,
``sharedix`` 1 × 1000) so the session stride (750) is exercised as on the real file.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from rest2visual.checks import InputError
from rest2visual.nsd.design import (FIELDS, experiment_trials, load_expdesign, trial_nsd_ids,
                                    trial_table)

N_LIST, N_SHARED, N_TRIALS = 10_000, 1_000, 30_000


def _subjectim() -> np.ndarray:
    """8 × 10000 73k ids (1-based): 1000 shared (ids 70001.., reversed), then 9000 per subject."""
    shared = np.arange(70_000 + N_SHARED, 70_000, -1)
    rows = [np.concatenate([shared, 1 + s * 9000 + np.arange(N_LIST - N_SHARED)])
            for s in range(8)]
    return np.stack(rows).astype(float)


def _masterordering() -> np.ndarray:
    """Each list entry shown 3 times, in a fixed pseudo-random order (1-based)."""
    rng = np.random.default_rng(7)
    return np.concatenate([rng.permutation(N_LIST) + 1 for _ in range(3)]).astype(float)


MASTER = _masterordering()
SUBJECTIM = _subjectim()


def _write(path, **override):
    fields = {"masterordering": MASTER[None], "subjectim": SUBJECTIM,
              "sharedix": np.sort(SUBJECTIM[0, :N_SHARED])[None]}
    fields.update(override)
    savemat(path, {k: v for k, v in fields.items() if v is not None})
    return path


@pytest.fixture(scope="module")
def design_path(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("design") / "nsd_expdesign.mat")


def _by_formula(subject: int, session: int, trial: int) -> int:
    """NSD's formula written out: k = (s − 1)·750 + (i − 1), 0-based 73k id."""
    k = (session - 1) * 750 + (trial - 1)
    return int(SUBJECTIM[subject - 1, int(MASTER[k]) - 1]) - 1


def test_loads_nsd_shapes_one_based(design_path):
    d = load_expdesign(design_path)
    assert d.masterordering.shape == (N_TRIALS,) and d.masterordering.dtype == np.int64
    assert d.subjectim.shape == (8, N_LIST)
    assert d.sharedix.shape == (N_SHARED,) and d.n_shared == N_SHARED


def test_real_size_arithmetic_last_trial_of_subject8_session30(design_path):
    d = load_expdesign(design_path)
    assert experiment_trials(30, 750)[-1] == 29 * 750 + 749 == 22_499
    assert trial_nsd_ids(d, 8, 30)[-1] == _by_formula(8, 30, 750)
    assert trial_table(d, 8, 30).iloc[-1]["nsd_id"] == _by_formula(8, 30, 750)


@pytest.mark.parametrize("n_trials", [40, 150, 750])
def test_stride_is_750_whatever_the_number_of_trials(design_path, n_trials):
    # a betas file with n_trials < 750 holds the session's first n_trials trials
    d = load_expdesign(design_path)
    for subject, session in ((1, 1), (5, 21), (8, 30), (2, 40)):
        expected = [_by_formula(subject, session, i) for i in range(1, n_trials + 1)]
        assert trial_nsd_ids(d, subject, session, n_trials).tolist() == expected
        full = trial_nsd_ids(d, subject, session)
        assert full[:n_trials].tolist() == expected


def test_trial_table_shared_and_repeats(design_path):
    d = load_expdesign(design_path)
    table = trial_table(d, 2, 21, 40)
    assert list(table.columns) == ["subject", "session", "trial", "nsd_id", "shared", "repeat"]
    assert table["trial"].tolist() == list(range(1, 41))
    k = 20 * 750 + np.arange(40)
    assert table["shared"].tolist() == (MASTER[k] <= N_SHARED).tolist()
    assert table["shared"].tolist() == (table["nsd_id"] >= 70_000).tolist()
    # repeat: earlier showings of the same list entry over the whole experiment
    expected = [int(np.sum(MASTER[:kk] == MASTER[kk])) for kk in k]
    assert table["repeat"].tolist() == expected
    assert trial_table(d, 2, 1, 40)["repeat"].tolist() == [
        int(np.sum(MASTER[:kk] == MASTER[kk])) for kk in range(40)]


def test_column_vector_fields_accepted(tmp_path):
    path = _write(tmp_path / "d.mat", masterordering=MASTER[:, None])
    assert load_expdesign(path).masterordering.shape == (N_TRIALS,)


@pytest.mark.parametrize("field", FIELDS)
def test_missing_field_names_file_and_field(tmp_path, field):
    path = _write(tmp_path / "broken.mat", **{field: None})
    with pytest.raises(InputError) as err:
        load_expdesign(path)
    assert str(path) in str(err.value) and field in str(err.value)


def _replace(arr, index, value):
    out = arr.copy()
    out[index] = value
    return out


@pytest.mark.parametrize("override, expected", [
    ({"subjectim": SUBJECTIM[:7]}, "8 × m"),
    ({"masterordering": MASTER[None, :40 * 40]}, "30000"),
    ({"masterordering": _replace(MASTER, 5, N_LIST + 1)[None]}, "list entry 10001"),
    ({"masterordering": _replace(MASTER, 0, 0)[None]}, "1-based"),
    ({"masterordering": _replace(MASTER, 0, 1.5)[None]}, "whole numbers"),
    ({"sharedix": _replace(np.sort(SUBJECTIM[0, :N_SHARED]), 0, 5.0)[None]}, "shared"),
])
def test_inconsistent_design_rejected(tmp_path, override, expected):
    path = _write(tmp_path / "bad.mat", **override)
    with pytest.raises(InputError, match=expected) as err:
        load_expdesign(path)
    assert str(path) in str(err.value)


def test_unreadable_or_missing_file(tmp_path):
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(InputError, match="junk.mat"):
        load_expdesign(junk)
    with pytest.raises(InputError, match="absent.mat"):
        load_expdesign(tmp_path / "absent.mat")


def test_session_or_trials_beyond_nsd_and_bad_subject(design_path):
    d = load_expdesign(design_path)
    with pytest.raises(ValueError, match="session 41"):
        trial_nsd_ids(d, 1, 41)
    with pytest.raises(ValueError, match="751"):
        trial_nsd_ids(d, 1, 1, 751)
    with pytest.raises(ValueError, match="subject 9"):
        trial_table(d, 9, 1)
