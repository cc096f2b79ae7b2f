"""Config strings reach the shell only quoted: injection strings stay literal paths.

Two checks: every command ``snakemake -n -p`` prints for configs whose strings hold
``$( )``, backticks, ``;``, quotes and spaces is executed by bash with ``rest2visual``
(and ``torchrun``) replaced by a function recording its arguments — no injected command
may run and each value must arrive as one argument; and a real run of one session's
z-map with such a seed mask path and simulate.root.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_workflow, toy_config

#: file names with the shell metacharacters that an unquoted interpolation would run or split
#: on (quotes apart: an unbalanced quote would only make an unquoted command a syntax error)
EVIL = "a b$(touch PWNED1)`touch PWNED2`;touch PWNED3;x"
QUOTES = "it's \"q\" &|<>*"


def _printed_commands(stdout: str) -> list[str]:
    """The shell commands of ``snakemake -n -p`` output (its ``Shell command:`` lines)."""
    prefix = "Shell command: "
    return [line[len(prefix):] for line in stdout.splitlines()
            if line.startswith(prefix) and line != prefix + "None"]


def _run_recorded(commands: list[str], workdir: Path) -> list[list[str]]:
    """Run each command with bash, ``rest2visual``/``torchrun`` replaced by an argv recorder;
    returns each command's arguments."""
    argvs = []
    for i, command in enumerate(commands):
        record = workdir / f"argv-{i}"
        script = (f"rest2visual() {{ printf '%s\\0' \"$@\" > {shlex.quote(str(record))}; }}\n"
                  "torchrun() { rest2visual \"$@\"; }\n" + command)
        subprocess.run(["bash", "-c", script], cwd=workdir, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        argvs.append(record.read_bytes().decode().split("\0")[:-1] if record.exists() else [])
    return argvs


def _seed_mask(path: Path, resolution_mm: float) -> None:
    """An 8 mm sphere at the PCC on the MNI grid of the workflow."""
    import nibabel as nib

    from rest2visual.preprocess.template import mni_grid

    grid = mni_grid(resolution_mm)
    ijk = np.indices(grid.shape).reshape(3, -1).T
    xyz = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    inside = (np.linalg.norm(xyz - [0, -52, 26], axis=1) <= 8).reshape(grid.shape)
    nib.save(nib.Nifti1Image(inside.astype(np.uint8), grid.affine), str(path))


@pytest.mark.parametrize("evil", [EVIL, QUOTES], ids=["commands", "quotes"])
@pytest.mark.parametrize("source", ["simulated", "s3"])
def test_injection_strings_reach_commands_as_literal_arguments(tmp_path, source, evil):
    work = tmp_path / "work"
    work.mkdir()
    files = {"seed": f"seed-{evil}.nii.gz", "atlas": f"atlas-{evil}.nii.gz",
             "weights": f"weights-{evil}.pt"}
    for name in files.values():
        (work / name).write_bytes(b"")
    values = {"rest.seed_mask": files["seed"], "evaluate.roi_atlas": files["atlas"],
              "model.encoder_weights": files["weights"]}
    config = toy_config(rest={"seed_mask": files["seed"]}, evaluate={"roi_atlas": files["atlas"]},
                        model={"widths": [2, 4], "groups": 2, "embed_dim": 8,
                               "encoder_weights": files["weights"], "freeze_image_encoder": True})
    if source == "simulated":
        config["simulate"]["root"] = f"sim-{evil}"
        values["simulate.root"] = f"sim-{evil}"
    else:
        config["nsd"].update(source="s3", bucket=f"bucket-{evil}",
                             endpoint_url=f"http://127.0.0.1:9/{evil}")
        values.update({"nsd.bucket": f"bucket-{evil}", "nsd.endpoint_url": f"http://127.0.0.1:9/{evil}"})
    proc = run_workflow(work, config, "-n", "-p", "--forceall")
    commands = _printed_commands(proc.stdout)
    assert len(commands) > 10, proc.stdout[-3000:]
    for line in proc.stdout.splitlines():  # the commands' log folders, for their redirections
        if line.startswith("    log: "):
            for log in line[len("    log: "):].split(", "):
                (work / log).parent.mkdir(parents=True, exist_ok=True)
    argvs = _run_recorded(commands, work)
    assert not list(work.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    assert all(argvs), [c for c, a in zip(commands, argvs) if not a][:3]
    args = [a for argv in argvs for a in argv]
    for key, value in values.items():
        # the value is one argument, or the start of one (paths under simulate.root)
        assert any(a == value or a.startswith(value + "/") for a in args), (key, value)


def test_a_seed_mask_path_with_a_space_and_a_command_works(tmp_path):
    """A real run of one session's z-map: simulated NSD under a root holding a command
    substitution, the NSD registration, and a seed mask whose name has a space."""
    work = tmp_path / "work"
    work.mkdir()
    seed = f"my seed {EVIL}.nii.gz"
    _seed_mask(work / seed, 4.0)
    config = toy_config(nsd={"subjects": [1], "sessions": [21], "trials_per_session": 30},
                        simulate={"root": f"sim {EVIL}", "voxel_mm": 4.0, "volumes": 80,
                                  "images": 120, "shared_images": 20},
                        registration={"method": "nsd"}, rest={"seed_mask": seed})
    from rest2visual.paths import bids_path

    zmap = bids_path("results", "rest", "zmap", "nii.gz", sub="01", ses="21", space="MNI152",
                     res="4", desc="pcc")
    run_workflow(work, config, zmap)
    assert (work / zmap).is_file()
    assert not list(work.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    assert (work / f"sim {EVIL}" / "nsd").is_dir()
    os.utime(work / seed)  # editing the seed mask reruns the z-map (a declared input)
    proc = run_workflow(work, config, zmap, "-n", "--quiet", "rules")
    assert "pcc_zmap" in proc.stdout, proc.stdout[-2000:]


def test_every_shell_field_of_the_rules_is_quoted():
    """Static guard for new rules: each ``{input…}``, ``{output…}``, ``{log}``, ``{params…}``
    and ``{wildcards…}`` of a shell command carries ``:q`` (``{threads}`` is an integer the
    rule computes; ``{params.launcher}`` is a command prefix, not a value)."""
    import re

    from conftest import REPO

    unquoted = []
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "shell:":
                continue
            for text in lines[i + 1:]:
                if not text.strip().startswith(('"', "'")):
                    break
                for field, spec in re.findall(r"(?<!\{)\{([a-z][\w.\[\]]*)(:[^{}]*)?\}(?!\})", text):
                    if field not in ("threads", "params.launcher") and spec != ":q":
                        unquoted.append(f"{path.name}: {{{field}{spec}}}")
    assert not unquoted, unquoted
