"""Checks of a workflow configuration beyond its JSON schema, and its hashes.

The schema (``workflow/schemas/config.schema.yaml``) catches unknown keys and
wrong types; :func:`check_config` catches what a schema cannot express: a
session without resting-state runs, a local mirror that does not exist, a seed
mask file that is missing. Each error names the config key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rest2visual.nsd import keys as nsdkeys


class ConfigError(ValueError):
    """A configuration value is invalid (the message names the key)."""


def check_config(config: dict) -> None:
    """Raise ConfigError for semantically invalid settings (naming the key)."""
    nsd = config["nsd"]
    for s in nsd["subjects"]:
        if s not in nsdkeys.SUBJECTS:
            raise ConfigError(f"config nsd.subjects: {s} is not an NSD subject (1..8)")
        try:
            nsdkeys.sessions_for(config, s)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if nsd["source"] == "local":
        root = nsd.get("local_root")
        if not root:
            raise ConfigError("config nsd.local_root: required when nsd.source is local")
        if not Path(root).is_dir():
            raise ConfigError(f"config nsd.local_root: {root} is not a folder")
    lo, hi = config["rest"]["bandpass_hz"]
    if not lo < hi:
        raise ConfigError(f"config rest.bandpass_hz: low {lo} Hz must be below high {hi} Hz")
    mask = config["rest"].get("seed_mask")
    if mask and not Path(mask).is_file():
        raise ConfigError(f"config rest.seed_mask: {mask} not found")
    atlas = config.get("evaluate", {}).get("roi_atlas")
    if atlas and not Path(atlas).is_file():
        raise ConfigError(f"config evaluate.roi_atlas: {atlas} not found")
    unseen = config.get("splits", {}).get("unseen_subjects", [])
    missing = sorted(set(unseen) - set(nsd["subjects"]))
    if missing:
        raise ConfigError(
            f"config splits.unseen_subjects: {missing} not among nsd.subjects {nsd['subjects']}"
        )


def config_hash(*sections: dict) -> str:
    """Short, stable SHA-256 of config sections (sorted JSON), for provenance attributes."""
    blob = json.dumps(sections, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def schema_markdown(schema: dict) -> str:
    """The config reference as a Markdown table (key, type, default, description).

    The README's "Configuration" table is generated from the schema with this
    function, and a test fails when the two drift apart.
    """
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for section, spec in schema["properties"].items():
        rows.append(f"| **`{section}`** | | | {spec.get('description', '')} |")
        for key, sub in spec["properties"].items():
            kind = sub.get("type", " or ".join(o.get("type", "") for o in sub.get("oneOf", [])))
            kind = " or ".join(kind) if isinstance(kind, list) else kind
            if "enum" in sub:
                kind = " \\| ".join(str(v) for v in sub["enum"])
            default = json.dumps(sub.get("default"))
            text = " ".join(str(sub.get("description", "")).split()).replace("|", "\\|")
            rows.append(f"| `{section}.{key}` | {kind} | `{default}` | {text} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """``rest2visual config-docs``: print the configuration reference (Markdown) from the schema."""
    import argparse

    import yaml

    p = argparse.ArgumentParser(prog="rest2visual config-docs", description=main.__doc__)
    p.add_argument("--schema", default="workflow/schemas/config.schema.yaml")
    args = p.parse_args(argv)
    print(schema_markdown(yaml.safe_load(Path(args.schema).read_text())))
    return 0
