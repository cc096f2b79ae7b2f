"""Checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and primitives only (int, float, str, bool,
None, lists, tuples, dicts): RNG states are stored as tensors, the config as a
dict of primitives. So every checkpoint loads with ``weights_only=True``,
which refuses to run pickled code — a downloaded or shared ``model.pt`` cannot
execute anything. Writing goes through :func:`rest2visual.atomic.atomic_path`:
an interrupted save never leaves a truncated ``last.pt``.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError, require_file

_PRIMITIVES = (int, float, str, bool, type(None))


def check_serialisable(obj, where: str = "checkpoint") -> None:
    """Raise TypeError if ``obj`` holds anything weights_only loading would refuse."""
    if isinstance(obj, (torch.Tensor, *_PRIMITIVES)):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            check_serialisable(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is {type(key).__name__}, not str/int")
            check_serialisable(value, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold only tensors and "
                    "primitives so that they load with weights_only=True")


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """Check ``payload`` (tensors/primitives only) and torch.save it atomically to ``path``."""
    check_serialisable(payload)
    with atomic_path(path) as tmp:
        # to a file object, not a path: torch names the zip's root folder after a path
        # (here the random temporary name), which made two saves of equal payloads differ
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; refuse pickled objects clearly."""
    path = require_file(path, "checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refused to load: the checkpoint holds pickled objects other "
                         f"than tensors and primitives (weights_only=True). {exc}") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(payload, dict):
        raise InputError(f"{path}: expected a checkpoint dict, found {type(payload).__name__}")
    return payload


def grid_entries(mask: np.ndarray, affine: np.ndarray, image_size: int) -> dict:
    """The checkpoint entries that describe the model's MNI grid and image size."""
    return {"grid": {"mask": torch.from_numpy(np.asarray(mask).astype(np.uint8)),
                     "affine": torch.from_numpy(np.asarray(affine, dtype=np.float64))},
            "image_size": int(image_size)}


def save_model_file(path, state_dict: dict, config: dict, *, mask: np.ndarray,
                    affine: np.ndarray, image_size: int, metrics: dict | None = None) -> Path:
    """Write ``model.pt``: weights, config, grid (mask + affine) and image size.

    This is what ``rest2visual predict`` and the evaluation load
    (:func:`rest2visual.model.predict.load_model`).
    """
    from rest2visual import __version__

    payload = {"model": state_dict, "config": to_primitives(config), "version": __version__,
               "metrics": to_primitives(metrics or {}), **grid_entries(mask, affine, image_size)}
    return save_checkpoint(payload, path)


def to_primitives(obj):
    """Config-like objects (dicts, lists, tuples, numpy scalars, Paths) → primitives."""
    if isinstance(obj, dict):
        return {str(k): to_primitives(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_primitives(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, _PRIMITIVES):
        return obj
    raise TypeError(f"config value {obj!r} ({type(obj).__name__}) is not a primitive")


def rng_state() -> dict:
    """Python, numpy, torch (CPU and CUDA) RNG states, as tensors and ints."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": int(py_version),
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states saved by :func:`rng_state`."""
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()),
                     state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
