"""The configuration: its schema, validation with defaults, semantic checks and hashes.

The schema (``config.schema.yaml``, package data beside this module; the workflow's
``workflow/schemas/config.schema.yaml`` is a link to it) is the one place where every
key, type and default lives: the Snakefile, ``rest2visual plan`` and the package's
own defaults (:func:`defaults`) all read it. :func:`validate_config` catches unknown
keys (one line with the key, where it is and the closest valid key) and wrong types;
:func:`check_config` catches what a schema cannot express: a session without
resting-state runs, a local mirror that does not exist, a seed mask file that is
missing. Each error names the config key.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
from pathlib import Path

from rest2visual.errors import Rest2VisualError
from rest2visual.nsd import keys as nsdkeys


class ConfigError(Rest2VisualError, ValueError):
    """A configuration value is invalid (the message names the key)."""


#: the JSON schema of the configuration (package data)
SCHEMA = Path(__file__).with_name("config.schema.yaml")


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


def load_schema() -> dict:
    """The configuration's JSON schema (a fresh copy)."""
    return copy.deepcopy(_schema())


def defaults(section: str) -> dict:
    """The schema's default of every key of a config ``section`` (e.g. ``"model"``)."""
    return {key: copy.deepcopy(spec["default"])
            for key, spec in _schema()["properties"][section]["properties"].items()
            if "default" in spec}


def _fill_defaults(instance: dict, schema: dict) -> None:
    """Set the schema's defaults of the missing keys of ``instance``, recursively."""
    for key, spec in schema.get("properties", {}).items():
        if key not in instance and "default" in spec:
            instance[key] = copy.deepcopy(spec["default"])
        if isinstance(instance.get(key), dict) and "properties" in spec:
            _fill_defaults(instance[key], spec)


def _where(path) -> str:
    return ".".join(str(p) for p in path)


def _error_line(error) -> str:
    """One line for a jsonschema error: the key, where it is, what was expected/found."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        key = unknown[0] if unknown else "?"
        parent = f"section {_where(path)}" if path else "the top level"
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = (f"closest valid key: {_where(path + close)}" if close
                else f"valid keys: {', '.join(known)}")
        return f"config {_where(path + [key])}: unknown key in {parent}; {hint}"
    what = " ".join(str(error.message).split())
    if len(what) > 200:
        what = what[:200] + "…"
    return f"config {_where(path) or '(top level)'}: {what}"


def validate_config(config: dict) -> dict:
    """Validate ``config`` against the schema and fill in its defaults (in place).

    Raises ConfigError with one line for the first error (an unknown key: the key,
    its section and the closest valid key). Returns ``config``.
    """
    import jsonschema

    schema = _schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(list(e.absolute_path))))
    if errors:
        raise ConfigError(_error_line(errors[0]))
    _fill_defaults(config, schema)
    errors = list(validator.iter_errors(config))  # defaults are valid, but say so if not
    if errors:
        raise ConfigError(_error_line(errors[0]))
    return config


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
    allowed = nsdkeys.SPACE_BETA_VERSIONS[nsd["space"]]
    if nsd["beta_version"] not in allowed:
        raise ConfigError(
            f"config nsd.space {nsd['space']} with nsd.beta_version {nsd['beta_version']}: NSD "
            f"has no such betas (in {nsd['space']}: {', '.join(allowed)})")
    if nsd["source"] == "simulated" and nsd["space"] != "func1pt8mm":
        raise ConfigError(f"config nsd.space {nsd['space']}: the simulated NSD (nsd.source "
                          "simulated) writes func1pt8mm only")
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
    _check_decoder(config)
    unseen = config.get("splits", {}).get("unseen_subjects", [])
    missing = sorted(set(unseen) - set(nsd["subjects"]))
    if missing:
        raise ConfigError(
            f"config splits.unseen_subjects: {missing} not among nsd.subjects {nsd['subjects']}"
        )


def _check_decoder(config: dict) -> None:
    """evaluate.decoder's settings: the command template, the MindEye2 files, metric weights."""
    from rest2visual.decode import command, mindeye2

    ev, nsd = config.get("evaluate", {}), config["nsd"]
    for name, path in (ev.get("metric_weights") or {}).items():
        if path and not Path(path).is_file():
            raise ConfigError(f"config evaluate.metric_weights.{name}: {path} not found")
    decoder = ev.get("decoder", "ridge_identification")
    if decoder == "ridge_identification":
        return
    if decoder == "command":
        template = ev.get("decoder_command")
        if not template:
            raise ConfigError("config evaluate.decoder_command: required when evaluate.decoder "
                              "is command (a command line with {input}, {which} and {output})")
        try:
            command.parse_template(template)
        except ValueError as exc:
            raise ConfigError(f"config evaluate.decoder_command: {exc}") from None
    elif decoder == "mindeye2":
        problem = mindeye2.config_problem(ev.get("mindeye2_checkpoint"), ev.get("mindeye2_code"),
                                          nsd["subjects"])
        if problem:
            raise ConfigError(problem)


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
    p.add_argument("--schema", default=str(SCHEMA),
                   help="JSON schema (YAML); default: the package's own")
    args = p.parse_args(argv)
    print(schema_markdown(yaml.safe_load(Path(args.schema).read_text())))
    return 0
