"""The evaluation protocols' names, defined once (rules, plan, resources and splits use them).

- ``paper``: held-out subject–stimulus pairs (the paper's Section 4);
- ``unseen-stimulus``: whole images held out from every subject;
- ``unseen-subject_sub-NN``: all of subject NN's trials held out (one per
  ``splits.unseen_subjects``).

See :mod:`rest2visual.dataset.splits` for how each is drawn.
"""

from __future__ import annotations

import re
from typing import Iterable

PAPER = "paper"
UNSEEN_STIMULUS = "unseen-stimulus"
UNSEEN_SUBJECT = "unseen-subject"
_UNSEEN_SUBJECT_RE = re.compile(rf"{UNSEEN_SUBJECT}_sub-(\d+)")


def unseen_subject(subject: int) -> str:
    """The protocol that holds out ``subject`` entirely: ``unseen-subject_sub-NN``."""
    return f"{UNSEEN_SUBJECT}_sub-{int(subject):02d}"


def protocols(unseen_subjects: Iterable[int] = ()) -> list[str]:
    """Every protocol, one trained model and one evaluation each, in the tables' order."""
    return [PAPER, UNSEEN_STIMULUS] + [unseen_subject(s) for s in unseen_subjects]


def held_out_subject(protocol: str) -> int | None:
    """The subject an ``unseen-subject_sub-NN`` protocol holds out; None for the others."""
    match = _UNSEEN_SUBJECT_RE.fullmatch(str(protocol))
    return int(match.group(1)) if match else None
