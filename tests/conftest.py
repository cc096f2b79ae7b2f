"""Shared fixtures: a toy simulated NSD and a runner for the real Snakemake workflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

#: the toy simulated NSD used across tests (seconds to write)
TOY = dict(subjects=(1, 2), sessions=(21, 22), trials_per_session=30, voxel_mm=4.0, volumes=80,
           n_images=120, n_shared=20, mni_resolution_mm=4.0, seed=0)


@pytest.fixture(scope="session")
def toy_nsd(tmp_path_factory):
    """A simulated NSD (2 subjects × 2 rest sessions × 30 trials, 4 mm) and its truth."""
    from rest2visual.nsd.simulate import simulate_nsd

    root = tmp_path_factory.mktemp("toy-nsd") / "sim"
    return simulate_nsd(root, **TOY)


def register_toy_subjects(nsd_root, out_dir, res_mm: float) -> dict:
    """Each toy subject's anatomy registered to MNI as the workflow's ``register_to_mni``
    rule does it (config/config.yaml's ``registration`` settings, its ITK thread count):
    subject → (RegistrationResult, native anatomy image)."""
    import nibabel as nib

    from rest2visual.nsd import keys
    from rest2visual.preprocess.registration import register_to_mni
    from rest2visual.preprocess.template import mni_template

    reg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["registration"]
    template, nsd_root = mni_template(res_mm), Path(nsd_root)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        # read when ITK makes its first thread pool (the rule runs `register --threads N`)
        mp.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(reg.get("threads", 1)))
        for s in TOY["subjects"]:
            anat = nib.load(nsd_root / keys.anatomy_key(s))
            out[s] = (register_to_mni(
                anat, template, out_dir=Path(out_dir) / "registration", prefix=f"sub-{s:02d}",
                type_of_transform=reg["type_of_transform"], metric=reg["metric"],
                iterations=reg["iterations"], seed=reg["seed"],
                moving_mask_img=nib.load(nsd_root / keys.brainmask_key(s))), anat)
    return out


@pytest.fixture
def torch_one_thread():
    """Tiny tensors: OpenMP spin-waiting on a shared 2-core machine costs more than it gains."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_config(**overrides) -> dict:
    """The demo config shrunk to the toy simulated NSD, with nested overrides."""
    config = {
        "nsd": {"subjects": list(TOY["subjects"]), "sessions": list(TOY["sessions"]),
                "trials_per_session": TOY["trials_per_session"]},
        "simulate": {"voxel_mm": TOY["voxel_mm"], "volumes": TOY["volumes"],
                     "images": TOY["n_images"], "shared_images": TOY["n_shared"]},
        "mni": {"resolution_mm": TOY["mni_resolution_mm"]},
        "splits": {"unseen_subjects": [], "n_test": 10},
        "dataset": {"image_size": 32},
        "model": {"widths": [2, 4], "groups": 2, "embed_dim": 8},
        "train": {"epochs": 1, "batch_size": 4, "warmup_steps": 2, "device": "cpu",
                  "num_workers": 0, "gpus": 0, "log_every": 10},
    }
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    return config


def run_workflow(workdir: Path, config: dict, *args: str, check: bool = True,
                 timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with ``config`` layered over the default.

    Returns the completed process (stdout and stderr merged into ``.stdout``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "test-config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(Path(bindir) / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(cfg), "--cores", "2", "--show-failed-logs", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc
