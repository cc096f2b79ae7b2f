"""Atomic writes: a killed writer's temporary file is removed by the next write of its target."""

from __future__ import annotations

import pytest

from rest2visual.atomic import atomic_path, stale_temporaries, temporary_sibling


def test_next_write_removes_only_its_own_targets_temporaries(tmp_path):
    target = tmp_path / "sub-01_zmap.nii.gz"
    other = tmp_path / "sub-01_zmap2.nii.gz"
    dead = [tmp_path / ".sub-01_zmap.tmp-123-abcdef.nii.gz", temporary_sibling(target)]
    for p in dead:
        p.write_bytes(b"partial")
    kept = [temporary_sibling(other), tmp_path / ".sub-01_zmap.tmp-notours.nii.gz",
            tmp_path / ".sub-01_zmap.tmp-123-abcdef.nii"]
    for p in kept:
        p.write_bytes(b"someone else's")
    assert stale_temporaries(target) == sorted(dead)
    with atomic_path(target) as tmp:
        assert not any(p.exists() for p in dead)  # gone before the new write starts
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert all(p.exists() for p in kept) and stale_temporaries(target) == []


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
