"""A local NSD mirror (``nsd.source: local``): read in place, checked up front.

Labs often hold NSD on shared storage already; the workflow reads it where it
is, without copying. Every key the configuration needs is checked when the
workflow starts, so a missing file fails in the first second with its key and
the subject/session that needed it, not hours later in a downstream job.
"""

from __future__ import annotations

from pathlib import Path

from rest2visual.checks import InputError
from rest2visual.nsd.keys import NeededKey


def check_local_mirror(root: str | Path, needed: list[NeededKey], show: int = 10) -> None:
    """Raise InputError listing the needed keys missing under ``root`` (first ``show``)."""
    root = Path(root)
    missing = [k for k in needed if not (root / k.key).is_file()]
    if missing:
        lines = "\n".join(f"  {k.key}  (needed by {k.needed_by})" for k in missing[:show])
        more = f"\n  ... and {len(missing) - show} more" if len(missing) > show else ""
        raise InputError(
            f"local NSD mirror {root}: {len(missing)} of {len(needed)} needed keys are missing:\n"
            f"{lines}{more}"
        )
