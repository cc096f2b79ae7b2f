"""Which training settings change the result, and which only how a run executes.

Torch-free, so the workflow (which runs without torch) imports it to build the
``train_model`` rule: only result-changing settings are the rule's params, so
editing a runtime key reruns nothing, while editing e.g. ``train.epochs``
starts a new training (see :mod:`rest2visual.model.train`, "Reruns").
"""

from __future__ import annotations

#: train keys that shape the optimisation trajectory: a resumed run must match them
TRAJECTORY_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "seed")
#: train keys that change how a run executes, not its weights (on one device)
RUNTIME_KEYS = ("device", "num_workers", "compile", "log_every")


def split_config(cfg: dict) -> tuple[dict, dict]:
    """(result config, runtime values) of a config with ``model`` and ``train`` blocks.

    The result config is both blocks without :data:`RUNTIME_KEYS` (the rule's
    params, ``rest2visual train --params``); the runtime values are those keys
    alone (``--runtime``).
    """
    train = dict(cfg.get("train") or {})
    runtime = {k: train.pop(k) for k in RUNTIME_KEYS if k in train}
    return {"model": dict(cfg.get("model") or {}), "train": train}, runtime


class RuntimeOptions:
    """The runtime keys as a rule param that does not trigger reruns.

    Snakemake compares a rule's params with those recorded for its outputs only
    for values of builtin types; this wrapper is not one, so editing
    ``train.num_workers`` (etc.) reruns nothing, while the shell command still
    receives the values: ``str()`` is their JSON text (``--runtime {params.runtime:q}``).
    """

    def __init__(self, values: dict):
        unknown = set(values) - set(RUNTIME_KEYS)
        if unknown:
            raise ValueError(f"not runtime keys: {sorted(unknown)}")
        self.values = dict(values)

    def __str__(self) -> str:
        import json

        return json.dumps(self.values, sort_keys=True)

    def __repr__(self) -> str:
        return f"RuntimeOptions({self.values!r})"
