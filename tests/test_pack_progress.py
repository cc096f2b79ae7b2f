"""`pack` logs its progress: rows written, rate and ETA, at least every 5 %."""

from __future__ import annotations

import io
import re

from rest2visual.dataset.pack import Progress
from test_pack import make_world, pack_world


def test_progress_lines_every_five_percent_with_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    log = Progress("pack: betas", 1000, "rows", stream=out, clock=lambda: now[0])
    for _ in range(100):  # 10 rows a second
        now[0] += 1.0
        log.update(10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 20  # every 50 rows (5 %), the last at 100 %
    assert lines[0] == "pack: betas: 50/1000 rows (5 %), 10.0 rows/s, elapsed 0m05s, ETA 1m35s"
    assert lines[-1].startswith("pack: betas: 1000/1000 rows (100 %)") and "ETA 0m00s" in lines[-1]


def test_big_blocks_still_log_and_disabled_logs_nothing():
    out = io.StringIO()
    log = Progress("x", 100, stream=out, clock=lambda: 1.0)
    log.update(60)  # one block over many steps: one line
    log.update(40)
    assert [line.split(":")[1].split()[0] for line in out.getvalue().splitlines()] == ["60/100",
                                                                                       "100/100"]
    quiet = io.StringIO()
    off = Progress("x", 10, stream=quiet, enabled=False)
    off.update(10)
    assert quiet.getvalue() == ""


def test_pack_prints_progress_of_every_phase(tmp_path, capsys):
    w = make_world(tmp_path / "in")
    pack_world(w, tmp_path / "pack.h5", verbose=True)
    out = capsys.readouterr().out
    for phase in ("rest maps", "images", "betas"):
        assert re.search(rf"pack: {phase}: (\d+)/\1 \w+ \(100 %\), [\d.]+ \w+/s", out), phase
    assert len(re.findall(r"pack: betas: ", out)) >= 2
