"""The rest-map recipe: the settings a PCC z-map was computed with, kept beside it.

``rest2visual rest-map --out X.nii.gz`` writes ``X.json`` (a BIDS-derivatives-style
sidecar) holding :data:`RECIPE_KEYS`: the seed (centre and radius in MNI mm, or a
seed mask file), the band (Hz) and filter order, the HRF model (``glover``, ``spm``
or ``none``), the units (``raw`` or ``psc``), how runs are combined, the confounds
(``motion`` or ``none``) and ``tr_s``, the TR (s) the session was analysed with (the
header's, or the configured TR of the space when the header has no time unit, as in
NSD). ``pack`` reads the sidecars of its z-maps, checks they agree and stores the
recipe in the pack (root attribute ``rest_recipe``, JSON); ``train`` copies it into
``model.pt`` (config block ``rest``), and ``predict --rest-run`` recomputes a z-map
from rest runs with exactly that recipe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError

#: what a recipe holds (values JSON: lists for the band and the seed centre)
RECIPE_KEYS = ("hrf_model", "units", "bandpass_hz", "filter_order", "combine_runs",
               "seed_center_mm", "seed_radius_mm", "seed_mask", "confounds", "tr_s")
#: two sessions' TRs closer than this (s) are the same TR
TR_TOLERANCE_S = 1e-3
#: the pack's root attribute holding the recipe (JSON text; "" when its maps had none)
PACK_ATTR = "rest_recipe"


def sidecar_path(zmap_path: str | os.PathLike) -> Path:
    """``X.nii.gz`` / ``X.nii`` → ``X.json``."""
    path = Path(zmap_path)
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_name(name + ".json")


def make_recipe(*, hrf_model: str, units: str, bandpass_hz, filter_order: int,
                combine_runs: str, seed_center_mm, seed_radius_mm: float,
                seed_mask: str | os.PathLike | None, confounds: bool, tr_s: float) -> dict:
    """A recipe dict (:data:`RECIPE_KEYS`) with JSON-able values."""
    return {"hrf_model": str(hrf_model), "units": str(units),
            "bandpass_hz": [float(b) for b in bandpass_hz], "filter_order": int(filter_order),
            "combine_runs": str(combine_runs),
            "seed_center_mm": [float(c) for c in seed_center_mm],
            "seed_radius_mm": float(seed_radius_mm),
            "seed_mask": None if seed_mask is None else str(seed_mask),
            "confounds": "motion" if confounds else "none", "tr_s": float(tr_s)}


def write_recipe(zmap_path, recipe: dict) -> Path:
    """Write the sidecar of ``zmap_path`` (atomically); returns its path."""
    path = sidecar_path(zmap_path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    return path


def read_recipe(zmap_path) -> dict:
    """The recipe of a z-map from its sidecar; InputError naming the sidecar when it is
    missing, not JSON or lacks a key."""
    path = sidecar_path(zmap_path)
    if not path.is_file():
        raise InputError(f"{path}: expected the rest-map recipe written beside {Path(zmap_path).name} "
                         "by `rest2visual rest-map`, not found")
    try:
        recipe = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: expected a JSON rest-map recipe, found invalid JSON "
                         f"({exc})") from exc
    missing = [k for k in RECIPE_KEYS if not isinstance(recipe, dict) or k not in recipe]
    if missing:
        raise InputError(f"{path}: expected the keys {', '.join(RECIPE_KEYS)}; missing "
                         f"{', '.join(missing)}")
    return {k: recipe[k] for k in RECIPE_KEYS}


def common_recipe(zmap_paths) -> dict | None:
    """The one recipe every z-map of a pack was computed with.

    None when no z-map has a sidecar (maps made elsewhere: the pack then records no
    recipe, and ``predict --rest-run`` refuses its model). InputError when only some
    have one, or when two differ (naming both files and the key).
    """
    paths = [Path(p) for p in zmap_paths]
    have = [sidecar_path(p).is_file() for p in paths]
    if not any(have):
        return None
    if not all(have):
        missing = paths[have.index(False)]
        read_recipe(missing)  # raises, naming the missing sidecar
    first = read_recipe(paths[0])
    for path in paths[1:]:
        other = read_recipe(path)
        for key in RECIPE_KEYS:
            same = (abs(other[key] - first[key]) <= TR_TOLERANCE_S if key == "tr_s"
                    else other[key] == first[key])
            if not same:
                raise InputError(f"{sidecar_path(path)}: expected the rest-map recipe of "
                                 f"{sidecar_path(paths[0]).name} ({key} = {first[key]!r}), "
                                 f"found {key} = {other[key]!r}: one pack holds maps of one recipe")
    return first


def recipe_from_attr(text: str, source: str) -> dict | None:
    """The recipe stored in a pack attribute or a model config (JSON text or dict)."""
    if text is None or text == "" or text == {}:
        return None
    recipe = json.loads(text) if isinstance(text, (str, bytes)) else dict(text)
    missing = [k for k in RECIPE_KEYS if k not in recipe]
    if missing:
        raise InputError(f"{source}: the rest-map recipe lacks {', '.join(missing)}")
    return recipe
