"""One place that names every output file (BIDS-like entities in a fixed order).

``sub-01_ses-21_run-01_space-MNI152_res-4_desc-pcc_zmap.nii.gz``: entities
appear in the order sub, ses, run, from, to, space, res, desc, then the suffix,
so files sort sensibly and open in FSLeyes/nilearn with readable names.
Workflow rules and tests build paths only through :func:`bids_name` and :func:`bids_path`.
"""

from __future__ import annotations

from pathlib import Path

ENTITY_ORDER = ("sub", "ses", "run", "from", "to", "space", "res", "desc")


def bids_name(suffix: str, ext: str, **entities) -> str:
    """File name from entities (values None are left out) + suffix + extension.

    >>> bids_name("zmap", "nii.gz", sub="01", ses="21", space="MNI152", res=4, desc="pcc")
    'sub-01_ses-21_space-MNI152_res-4_desc-pcc_zmap.nii.gz'
    """
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}; known: {ENTITY_ORDER}")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) is not None]
    return "_".join(parts + [suffix]) + "." + ext.lstrip(".")


def bids_path(root: str | Path, stage: str, suffix: str, ext: str, **entities) -> str:
    """``root/stage[/sub-XX]/name``: per-subject folders when ``sub`` is given."""
    folder = Path(root) / stage
    if entities.get("sub") is not None:
        folder = folder / f"sub-{entities['sub']}"
    return str(folder / bids_name(suffix, ext, **entities))
