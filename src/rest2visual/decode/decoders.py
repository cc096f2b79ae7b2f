"""``rest2visual reconstruct``: run an image decoder on one bridge file, keep its images.

The decoders of ``evaluate.decoder`` that reconstruct images (``ridge_identification``, the
default, is the decoding probe of ``rest2visual evaluate`` and reconstructs nothing):

- ``command``: any command, called as :mod:`rest2visual.decode.command` defines (its
  ``{input}``, ``{which}``, ``{output}``; run without a shell);
- ``mindeye2``: a user-provided MindEye2 (:mod:`rest2visual.decode.mindeye2`).

Either writes one PNG per bridge row into a fresh temporary folder beside the output; the
PNGs are checked (one per row, named by row, one size) and stored in one HDF5 (the
folder is removed; kept on failure for inspection)::

    /images              (n_trials, H, W, 3) uint8 RGB reconstructions, bridge row order
    /trials/subject, session, trial, nsd_id   (n_trials,) int32, copied from the bridge

with attributes ``which`` (predicted | measured), ``decoder``, ``command`` (the argument
list run, JSON), ``bridge`` (its path) and the bridge's ``subject`` and ``protocol``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError, require_file
from rest2visual.decode import command as decoder_command
from rest2visual.decode.names import WHICH

TRIAL_COLUMNS = ("subject", "session", "trial", "nsd_id")


def read_bridge(path, which: str) -> tuple[dict, np.ndarray, dict]:
    """(trials {column: (N,) int32}, betas (N, V) float32 ``/betas_<which>``, root attrs)."""
    import h5py

    path = require_file(path, "decoding bridge (to-native HDF5)")
    with h5py.File(path, "r") as h5:
        needed = [f"betas_{which}"] + [f"trials/{c}" for c in TRIAL_COLUMNS]
        missing = [n for n in needed if n not in h5]
        if missing:
            raise InputError(f"{path}: expected the datasets /{', /'.join(needed)} of "
                             f"`rest2visual to-native`, found no /{', /'.join(missing)}")
        trials = {c: h5[f"trials/{c}"][()].astype(np.int32) for c in TRIAL_COLUMNS}
        betas = h5[f"betas_{which}"][()].astype(np.float32)
        attrs = {k: h5.attrs[k] for k in ("subject", "protocol") if k in h5.attrs}
    return trials, betas, attrs


def read_pngs(folder: Path, n_rows: int, source: str) -> np.ndarray:
    """(n_rows, H, W, 3) uint8: the PNGs ``00000.png`` … of ``folder``, checked."""
    from PIL import Image

    expected = [decoder_command.png_name(r) for r in range(n_rows)]
    found = sorted(p.name for p in folder.iterdir())
    missing = [n for n in expected if n not in found]
    if missing:
        raise InputError(f"{folder}: expected {n_rows} PNGs from {source} (00000.png … "
                         f"{expected[-1] if expected else '-'}), found {len(found)} files, "
                         f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    images = []
    for name in expected:
        with Image.open(folder / name) as img:
            images.append(np.asarray(img.convert("RGB")))
        if images[-1].shape != images[0].shape:
            raise InputError(f"{folder / name}: expected one size for every reconstruction "
                             f"({images[0].shape[:2]} as 00000.png), found {images[-1].shape[:2]}")
    return np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)


def run_command(template: str, bridge, which: str, folder: Path) -> list[str]:
    """Run the decoder command on ``bridge`` for ``which`` into ``folder``; its argv.

    Its output goes to this process's stdout/stderr (the rule's log)."""
    argv = decoder_command.command_argv(template, input=bridge, which=which, output=folder)
    try:
        proc = subprocess.run(argv, check=False)
    except OSError as exc:
        raise InputError(f"{argv[0]}: expected a program to run as the decoder command "
                         f"(evaluate.decoder_command), found {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise InputError(f"{argv[0]}: expected the decoder command to exit with status 0, found "
                         f"status {proc.returncode} (its output is above; argv {argv})")
    return argv


def write_reconstructions(out_path, images: np.ndarray, trials: dict, attrs: dict) -> Path:
    """Write the reconstructions HDF5 (module docstring) atomically."""
    import h5py

    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        chunks = (1,) + images.shape[1:] if len(images) else None
        h5.create_dataset("images", data=images, chunks=chunks, compression="gzip",
                          compression_opts=4)
        for column, values in trials.items():
            h5.create_dataset(f"trials/{column}", data=values)
        h5.attrs.update(attrs)
    return Path(out_path)


def read_reconstructions(path) -> tuple[np.ndarray, dict, dict]:
    """(images (N, H, W, 3) uint8, trials {column: (N,)}, attrs) of a reconstructions HDF5."""
    import h5py

    path = require_file(path, "reconstructions (reconstruct HDF5)")
    with h5py.File(path, "r") as h5:
        if "images" not in h5 or any(f"trials/{c}" not in h5 for c in TRIAL_COLUMNS):
            raise InputError(f"{path}: expected /images and /trials of `rest2visual "
                             f"reconstruct`, found {sorted(h5.keys())}")
        images = h5["images"][()]
        trials = {c: h5[f"trials/{c}"][()] for c in TRIAL_COLUMNS}
        attrs = dict(h5.attrs)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise InputError(f"{path}: expected /images (n, H, W, 3) uint8, found "
                         f"{images.shape} {images.dtype}")
    return images, trials, attrs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rest2visual reconstruct",
        description="Reconstruct the seen image of every row of a decoding bridge file with "
                    "an image decoder (a command or MindEye2), from predicted or measured betas.")
    p.add_argument("--input", required=True, help="the bridge HDF5 of `rest2visual to-native`")
    p.add_argument("--which", required=True, choices=WHICH, help="which betas to decode")
    p.add_argument("--decoder", required=True, choices=("command", "mindeye2"))
    p.add_argument("--command", help="decoder command: the template with {input}, {which}, "
                                     "{output} (evaluate.decoder_command)")
    p.add_argument("--checkpoint", help="mindeye2: the subject's checkpoint (last.pth)")
    p.add_argument("--code", help="mindeye2: MindEyeV2's src/ folder")
    p.add_argument("--out", required=True, help="output HDF5 of reconstructions")
    return p


def main(argv: list[str] | None = None) -> int:
    """``rest2visual reconstruct --input B.h5 --which predicted --decoder command
    --command 'dec {input} {which} {output}' --out R.h5``."""
    args = _parser().parse_args(argv)
    trials, betas, bridge_attrs = read_bridge(args.input, args.which)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.pngs-", dir=out.parent))
    if args.decoder == "command":
        if not args.command:
            raise InputError("--command: expected the decoder command template, found none")
        run = run_command(args.command, args.input, args.which, folder)
        source = f"the decoder command {run[0]}"
    else:
        from rest2visual.decode import mindeye2

        if not (args.checkpoint and args.code):
            raise InputError("--checkpoint, --code: expected both for --decoder mindeye2")
        mindeye2.reconstruct(betas, args.checkpoint, args.code, folder)
        run, source = ["mindeye2", args.checkpoint, args.code], "MindEye2"
    images = read_pngs(folder, len(betas), source)
    write_reconstructions(out, images, trials, {
        "which": args.which, "decoder": args.decoder, "command": json.dumps(run),
        "bridge": str(args.input), **bridge_attrs})
    shutil.rmtree(folder)
    print(f"reconstruct: {len(images)} reconstructions from {args.which} betas "
          f"({args.decoder}, {images.shape[1]}×{images.shape[2]} px) → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
