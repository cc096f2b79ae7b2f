"""The workflow on a real SLURM: a one-node cluster on 127.0.0.1 started by the test.

The slurm profile (profiles/slurm) runs the first rules of the demo on the toy NSD: every
job must go through sbatch and produce the same outputs as a local run; a job that fails
on a node must fail the Snakemake run and print the rule's log. The cluster's daemons
are children of this test and are stopped by PID, also on failure.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_workflow, toy_config
from slurm_cluster import LoopbackSlurm, SlurmUnavailable, ensure_slurm_installed

pytestmark = pytest.mark.workflow

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
RES = "4"
#: the outputs built on SLURM and locally: the simulated NSD (its truth file stands for
#: the rule) and the MNI template grid; all outputs of both rules are compared. (A
#: registration would add a dependent round of submission and status polling, ~40 s.)
TARGETS = {
    "simulate_nsd": "resources/simulated-nsd/truth/params.json",
    "mni_template": f"results/templates/space-MNI152_res-{RES}_T1w.nii.gz",
}
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) "
                       r"\(log: \S*/rule_(\w+)/\d+\.log\)")


def slurm_toy_config(**overrides) -> dict:
    """The toy config; the unseen-subject protocol off (its subjects must be the toy's)."""
    return toy_config(splits={"unseen_subjects": []}, **overrides)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running loopback SLURM; installs slurm-wlm and munge with apt-get if missing."""
    try:
        ensure_slurm_installed()
    except SlurmUnavailable as exc:
        pytest.skip(f"no test SLURM on this machine: {exc}")
    cluster = LoopbackSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm_env(slurm, monkeypatch):
    """Point this test's Snakemake runs (and their jobs, via --export=ALL) at the cluster."""
    env = slurm.env()
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    monkeypatch.setenv("PATH", env["PATH"])
    return slurm


def test_missing_slurm_skips_only_where_packages_cannot_be_installed(monkeypatch):
    import slurm_cluster

    monkeypatch.setattr(slurm_cluster, "missing_binaries", lambda: ["slurmctld"])
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(SlurmUnavailable, match="needs root"):
        ensure_slurm_installed()
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 0)
    real_which = slurm_cluster._which
    monkeypatch.setattr(slurm_cluster, "_which",
                        lambda name: None if name == "apt-get" else real_which(name))
    with pytest.raises(SlurmUnavailable, match="no apt-get"):
        ensure_slurm_installed()


def test_profile_options_exist_in_the_installed_plugin():
    """Every key of the profile is an option of snakemake with the SLURM plugin."""
    import subprocess
    import sys

    snakemake = Path(sys.executable).parent / "snakemake"
    help_text = subprocess.run([str(snakemake), "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=120).stdout
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    unknown = [key for key in profile if f"--{key}" not in help_text]
    assert not unknown, f"{PROFILE}: options unknown to snakemake --help: {unknown}"
    assert "--slurm-status-command" in help_text
    assert "slurm_account" not in str(profile.get("default-resources"))


def test_profile_groups_each_session_into_one_slurm_job(tmp_path):
    """Dry run with the profile: one group job per (subject, session), four jobs each."""
    proc = run_workflow(tmp_path / "dry", slurm_toy_config(), "--profile", str(PROFILE.parent),
                        "--dry-run")
    groups = re.findall(r"Group job (sub-\d\d_ses-\d\d) \(jobs in lexicogr. order\)", proc.stdout)
    assert sorted(set(groups)) == ["sub-01_ses-21", "sub-01_ses-22",
                                   "sub-02_ses-21", "sub-02_ses-22"], proc.stdout[-3000:]
    block = proc.stdout.split("Group job sub-01_ses-21")[1].split("Group job")[0]
    rules = re.findall(r"^\s+rule (\w+):", block, flags=re.M)
    assert sorted(rules) == ["evoked_betas", "pcc_zmap", "rest_to_mni", "rest_to_mni"], block


def test_toy_rules_run_through_sbatch_like_a_local_run(slurm_env, tmp_path):
    """simulate_nsd and mni_template as SLURM jobs: submitted by sbatch, same outputs."""
    profile = cluster_profile(tmp_path / "profile", slurm_env.partition)
    targets = list(TARGETS.values())
    on_slurm = run_workflow(tmp_path / "slurm", slurm_toy_config(), "--profile", str(profile),
                            *targets, timeout=300)
    submitted = dict((rule, job) for job, rule in SUBMITTED.findall(on_slurm.stdout))
    assert set(submitted) == set(TARGETS), on_slurm.stdout[-4000:]
    states = {job: state for job, _, state in slurm_env.squeue()}
    assert all(states.get(job) == "COMPLETED" for job in submitted.values()), states

    run_workflow(tmp_path / "local", slurm_toy_config(), *targets, timeout=300)
    compared = 0
    for rule_outputs in (_simulated_nsd_files(tmp_path / "local"),
                         [f"results/templates/space-MNI152_res-{RES}_T1w.nii.gz",
                          f"results/templates/space-MNI152_res-{RES}_desc-brain_mask.nii.gz"]):
        for rel in rule_outputs:
            assert_same_content(tmp_path / "local" / rel, tmp_path / "slurm" / rel)
            compared += 1
    assert compared > 10


def test_failing_job_on_slurm_fails_the_run_and_prints_its_log(slurm_env, tmp_path):
    """A schema-valid config the simulator rejects at run time (more shared images than
    images): the SLURM job fails, Snakemake stops non-zero and prints the rule's log."""
    profile = cluster_profile(tmp_path / "profile", slurm_env.partition)
    config = slurm_toy_config(simulate={"images": 20, "shared_images": 30})
    proc = run_workflow(tmp_path / "run", config, "--profile", str(profile),
                        TARGETS["simulate_nsd"], check=False, timeout=300)
    out = proc.stdout
    assert proc.returncode != 0, out[-4000:]
    assert SUBMITTED.search(out), out[-4000:]
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", out), out[-4000:]
    assert "Error in rule simulate_nsd" in out
    log = "results/logs/nsd/simulate_nsd.log"
    assert f"Logfile {log}:" in out, out[-4000:]
    # the log's text itself is shown: the simulator's own message
    assert "n_shared (30) must be smaller than n_images (20)" in out, out[-4000:]
    assert not (tmp_path / "run" / TARGETS["simulate_nsd"]).exists()


# --- helpers ---------------------------------------------------------------------------

def cluster_profile(folder: Path, partition: str) -> Path:
    """profiles/slurm with only what a one-node test cluster needs changed.

    The partition names, squeue as status command (no slurmdbd: sacct cannot work), a
    1 s first status check instead of 40 s, 2 jobs, no account lookup, no retry (the
    failing test's job fails deterministically) and a short latency wait (local disk).
    """
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"]["slurm_partition"] = partition
    for rule_resources in profile["set-resources"].values():
        rule_resources["slurm_partition"] = partition
    profile.update({"jobs": 2, "slurm-status-command": "squeue",
                    "slurm-init-seconds-before-status-checks": 1, "slurm-no-account": True,
                    "retries": 0, "latency-wait": 5})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder



def _simulated_nsd_files(workdir: Path) -> list[str]:
    root = workdir / "resources" / "simulated-nsd"
    files = sorted(str(p.relative_to(workdir)) for p in root.rglob("*") if p.is_file())
    assert files, f"{root}: no files"
    return files


def assert_same_content(a: Path, b: Path) -> None:
    """Same data in two files: arrays for NIfTI/HDF5/MAT/PNG (their headers carry
    timestamps), bytes otherwise."""
    import numpy as np

    assert b.is_file(), f"{b} missing (present locally: {a})"
    name = a.name
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        ia, ib = nib.load(str(a)), nib.load(str(b))
        np.testing.assert_array_equal(ia.affine, ib.affine, err_msg=str(b))
        np.testing.assert_array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj),
                                      err_msg=str(b))
    elif name.endswith((".h5", ".hdf5")):
        import h5py

        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            names_a, names_b = [], []
            fa.visit(names_a.append)
            fb.visit(names_b.append)
            assert names_a == names_b, f"{b}: HDF5 members differ"
            for key in names_a:
                if isinstance(fa[key], h5py.Dataset):
                    np.testing.assert_array_equal(fa[key][()], fb[key][()], err_msg=f"{b}:{key}")
    elif name.endswith(".mat"):
        from scipy.io import loadmat

        ma, mb = loadmat(a), loadmat(b)
        keys = sorted(k for k in ma if not k.startswith("__"))
        assert keys == sorted(k for k in mb if not k.startswith("__")), str(b)
        for k in keys:
            np.testing.assert_array_equal(ma[k], mb[k], err_msg=f"{b}:{k}")
    elif name.endswith(".png"):
        import matplotlib.image as mpimg

        np.testing.assert_array_equal(mpimg.imread(a), mpimg.imread(b), err_msg=str(b))
    else:
        assert a.read_bytes() == b.read_bytes(), f"{b} differs from {a}"
