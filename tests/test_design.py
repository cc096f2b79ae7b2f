"""Reading NSD's experiment design (rest2visual.nsd.design) on hand-made .mat files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from rest2visual.checks import InputError
from rest2visual.nsd.design import FIELDS, load_expdesign, trial_nsd_ids, trial_table

T = 4  # trials per session in the toy design (3 sessions)
SHARED = [50, 10]  # 73k ids (1-based) of the shared images, in list order
MASTER = [1, 3, 2, 4, 5, 1, 6, 3, 2, 1, 4, 5]


def _subjectim() -> np.ndarray:
    rows = [SHARED + [1000 + 10 * s + j for j in range(1, 5)] for s in range(8)]
    return np.array(rows, dtype=float)


def _write(path, **override):
    fields = {"masterordering": np.array([MASTER], dtype=float), "subjectim": _subjectim(),
              "sharedix": np.array([sorted(SHARED)], dtype=float)}
    fields.update(override)
    savemat(path, {k: v for k, v in fields.items() if v is not None})
    return path


@pytest.fixture
def design_path(tmp_path):
    return _write(tmp_path / "nsd_expdesign.mat")


def test_loads_nsd_shapes_one_based(design_path):
    d = load_expdesign(design_path)
    assert d.masterordering.shape == (12,) and d.masterordering.dtype == np.int64
    assert d.subjectim.shape == (8, 6)
    assert d.sharedix.tolist() == [10, 50] and d.n_shared == 2


def test_trial_ids_follow_nsd_formula(design_path):
    d = load_expdesign(design_path)
    sim = _subjectim().astype(int)
    for subject in (1, 5, 8):
        for session in (1, 2, 3):
            expected = []
            for i in range(1, T + 1):  # NSD: k = (s − 1)·T + (i − 1), 0-based id
                k = (session - 1) * T + (i - 1)
                expected.append(sim[subject - 1][MASTER[k] - 1] - 1)
            assert trial_nsd_ids(d, subject, session, T).tolist() == expected


def test_trial_table_shared_and_repeats(design_path):
    table = trial_table(load_expdesign(design_path), 2, 3, T)
    assert list(table.columns) == ["subject", "session", "trial", "nsd_id", "shared", "repeat"]
    assert table["trial"].tolist() == [1, 2, 3, 4]
    # session 3 shows list entries 2, 1, 4, 5: entries 1 and 2 are the shared images
    assert table["shared"].tolist() == [True, True, False, False]
    assert table["nsd_id"].tolist() == [9, 49, 1011, 1012]  # subject 2: 1010 + j, 0-based
    # entry 2 was shown at k=2 before; entry 1 at k=0 and k=5; entries 4, 5 once each
    assert table["repeat"].tolist() == [1, 2, 1, 1]
    first = trial_table(load_expdesign(design_path), 2, 1, T)
    assert first["repeat"].tolist() == [0, 0, 0, 0]


def test_column_vector_fields_accepted(tmp_path):
    path = _write(tmp_path / "d.mat", masterordering=np.array(MASTER, dtype=float)[:, None])
    assert load_expdesign(path).masterordering.shape == (12,)


@pytest.mark.parametrize("field", FIELDS)
def test_missing_field_names_file_and_field(tmp_path, field):
    path = _write(tmp_path / "broken.mat", **{field: None})
    with pytest.raises(InputError) as err:
        load_expdesign(path)
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("override, expected", [
    ({"subjectim": _subjectim()[:7]}, "8 × m"),
    ({"masterordering": np.array([MASTER + [7]], dtype=float)}, "list entry 7"),
    ({"masterordering": np.array([[0] + MASTER[1:]], dtype=float)}, "1-based"),
    ({"masterordering": np.array([[1.5] + MASTER[1:]], dtype=float)}, "whole numbers"),
    ({"sharedix": np.array([[10, 51]], dtype=float)}, "shared"),
    ({"sharedix": np.arange(1, 8, dtype=float)[None]}, "more than"),
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


def test_session_beyond_design_and_bad_subject(design_path):
    d = load_expdesign(design_path)
    with pytest.raises(InputError, match="session 4") as err:
        trial_nsd_ids(d, 1, 4, T)
    assert str(design_path) in str(err.value)
    with pytest.raises(ValueError, match="subject 9"):
        trial_table(d, 9, 1, T)
