"""rest2visual plan and rest2visual.resources: job counts against snakemake -n, estimates
against the measurements they were fitted to, and the Snakemake glue."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import yaml

from conftest import REPO, run_workflow, toy_config
from rest2visual import plan, resources
from rest2visual.nsd.check import workflow_keys
from rest2visual.nsd import keys as nsdkeys

NSD_YAML = REPO / "config" / "nsd.yaml"


def nsd_config() -> dict:
    return plan.load_workflow_config([NSD_YAML], REPO)


def layered(tmp_path, overrides: dict, base=()) -> dict:
    """The demo config, then the files in ``base``, then ``overrides``."""
    path = tmp_path / "over.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return plan.load_workflow_config([*base, path], REPO)


def dry_run_counts(workdir, config: dict) -> dict[str, int]:
    """Jobs per rule from `snakemake -n --quiet rules` (the job stats table)."""
    proc = run_workflow(workdir, config, "--dry-run", "--quiet", "rules")
    table = proc.stdout.split("Job stats:")[1]
    counts = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}
    counts.pop("total")
    counts.pop("all")
    return counts


# --- job counts: computed from the config == what Snakemake schedules -------------

@pytest.mark.workflow
def test_job_counts_agree_with_snakemake_dry_run_on_nsd_config(tmp_path):
    config = nsd_config()
    expected = dry_run_counts(tmp_path / "nsd", yaml.safe_load(NSD_YAML.read_text()))
    rules = plan.workflow_rules(REPO)
    counts = {r: n for r, n in plan.job_counts(config).items() if r in rules}
    assert counts == expected
    # the paper protocol: 8 subjects, 96 rest sessions, two runs each, S3 keys
    assert counts["rest_to_mni"] == 192 and counts["pcc_zmap"] == 96
    assert counts["download_nsd_key"] == len(workflow_keys(config))


@pytest.mark.workflow
def test_job_counts_agree_with_snakemake_dry_run_on_simulated_config(tmp_path):
    config = toy_config(nsd={"subjects": [2, 5], "sessions": [21, 23, 24]},
                        splits={"unseen_subjects": [5]})
    expected = dry_run_counts(tmp_path / "toy", config)
    rules = plan.workflow_rules(REPO)
    counts = plan.job_counts(layered(tmp_path, config))
    assert {r: n for r, n in counts.items() if r in rules} == expected
    assert expected["simulate_nsd"] == 1 and expected["rest_to_mni"] == 12


def test_workflow_rules_reads_the_rule_files():
    rules = plan.workflow_rules(REPO)
    assert {"simulate_nsd", "download_nsd_key", "register_to_mni", "pcc_zmap"} <= rules
    assert "all" not in rules


# --- config loading -----------------------------------------------------------------

def test_config_is_layered_and_validated_like_the_snakefile(tmp_path):
    config = nsd_config()
    assert config["nsd"]["source"] == "s3" and config["mni"]["resolution_mm"] == 2
    assert config["rest"]["bandpass_hz"] == [0.01, 0.1]          # from config/config.yaml
    assert config["splits"]["val_fraction"] == 0.1                # schema default filled in
    with pytest.raises(Exception, match="volumez"):
        layered(tmp_path, {"simulate": {"volumez": 10}})
    with pytest.raises(ValueError, match="nsd.sessions"):
        layered(tmp_path, {"nsd": {"sessions": [3]}})


# --- the estimates reproduce the measurements they were fitted to -----------------

#: rule → (CPU s, peak RSS MiB) measured with /usr/bin/time -v (see rest2visual.resources)
MEASURED_TOY = {"rest_to_mni": (0.9, 136), "pcc_zmap": (8.4, 264), "evoked_betas": (1.2, 121),
                "ncsnr_to_mni": (0.9, 88), "register_to_mni": (8.3, 345),
                "simulate_nsd": (9.0, 519), "pack_triplets": (6.1, 321)}
MEASURED_PAPERLIKE = {"rest_to_mni": (9.7, 1078), "pcc_zmap": (8.8, 1281),
                      "evoked_betas": (12.9, 832), "ncsnr_to_mni": (1.8, 205),
                      "register_to_mni": (80.3, 646), "mni_template": (4.9, 334),
                      "simulate_nsd": (54.5, 1024), "pack_triplets": (14.7, 530)}


def measured_configs(tmp_path):
    toy = layered(tmp_path, {
        "nsd": {"subjects": [1], "sessions": [21], "trials_per_session": 30},
        "simulate": {"voxel_mm": 4.0, "volumes": 80, "images": 120, "shared_images": 20},
        "mni": {"resolution_mm": 4}, "registration": {"iterations": [40, 20, 0]},
        "splits": {"unseen_subjects": []}})
    paperlike = layered(tmp_path, {
        "nsd": {"subjects": [1], "sessions": [21], "trials_per_session": 150},
        "simulate": {"voxel_mm": 1.8, "volumes": 226, "images": 136, "shared_images": 40},
        "mni": {"resolution_mm": 2}, "registration": {"iterations": [100, 70, 40]},
        "splits": {"unseen_subjects": []}})
    return toy, paperlike


@pytest.mark.parametrize("which", ["toy", "paperlike"])
def test_estimates_match_the_measurements(tmp_path, which):
    toy, paperlike = measured_configs(tmp_path)
    config, measured = (toy, MEASURED_TOY) if which == "toy" else (paperlike, MEASURED_PAPERLIKE)
    for rule, (cpu_s, rss_mib) in measured.items():
        r = resources.estimate(config, rule, 1)
        assert 0.7 * cpu_s <= r.cpu_s <= 1.4 * cpu_s, (rule, r.cpu_s, cpu_s)
        # memory never materially below what was used; margins come on top
        assert 0.95 * rss_mib <= r.peak_mib <= 2.0 * rss_mib + 100, (rule, r.peak_mib, rss_mib)
        assert r.mem_mb >= resources.MEM_SAFETY * r.peak_mib - 1
        assert r.runtime >= resources.MIN_RUNTIME_MIN


def test_estimates_grow_with_the_config_sizes(tmp_path):
    small = layered(tmp_path, {"mni": {"resolution_mm": 4}})
    big = layered(tmp_path, {"mni": {"resolution_mm": 2}, "nsd": {"trials_per_session": 750}})
    for rule in ("rest_to_mni", "pcc_zmap", "evoked_betas", "register_to_mni"):
        assert resources.estimate(big, rule).cpu_s > resources.estimate(small, rule).cpu_s
        assert resources.estimate(big, rule).peak_mib > resources.estimate(small, rule).peak_mib
    # NSD subjects differ in grid size: subj06 (85×113×83) is larger than subj07 (78×95×81)
    config = nsd_config()
    assert (resources.estimate(config, "evoked_betas", 6).peak_mib
            > resources.estimate(config, "evoked_betas", 7).peak_mib)
    assert resources.sizes(config).native_voxels[1] == 81 * 104 * 83


def test_train_is_a_gpu_job_unless_configured_for_cpu(tmp_path):
    gpu = resources.estimate(nsd_config(), "train_model")
    assert gpu.gpus == 1 and gpu.gpu_s > 3600 and gpu.threads == 9       # 8 workers + 1
    cpu = resources.estimate(layered(tmp_path, {"train": {"device": "cpu"}}, [NSD_YAML]),
                             "train_model")
    assert cpu.gpus == 0 and cpu.gpu_s == 0 and cpu.cpu_s > 1000 * gpu.gpu_s
    two = resources.estimate(layered(tmp_path, {"train": {"gpus": 2}}, [NSD_YAML]),
                             "train_model")
    assert two.gpus == 2 and two.gpu_s == pytest.approx(gpu.gpu_s / 2)
    # an unseen-subject model trains on the other subjects' trials only
    assert resources.estimate(nsd_config(), "train_model", 1).gpu_s < gpu.gpu_s


def test_unknown_rule_has_no_estimate():
    with pytest.raises(KeyError, match="no resource estimate for rule 'figures'"):
        resources.estimate(nsd_config(), "figures")


# --- Snakemake glue -------------------------------------------------------------------

def test_rule_resources_are_per_subject_and_grow_on_retry():
    config = nsd_config()
    res = resources.rule_resources(config, "evoked_betas")
    assert set(res) == {"mem_mb", "runtime"}
    wc6, wc7 = SimpleNamespace(sub="06", ses="21"), SimpleNamespace(sub="07", ses="21")
    assert res["mem_mb"](wc6, 1) == resources.estimate(config, "evoked_betas", 6).mem_mb
    assert res["mem_mb"](wc6, 1) >= res["mem_mb"](wc7, 1)
    assert res["mem_mb"](wc6, 2) >= 1.5 * res["mem_mb"](wc6, 1)
    assert res["runtime"](wc6, 2) == 2 * res["runtime"](wc6, 1)
    # one ITK thread by default (reproducible registrations), more when configured
    assert resources.rule_threads(config, "register_to_mni") == 1
    config["registration"]["threads"] = 4
    assert resources.rule_threads(config, "register_to_mni") == 4
    config["registration"]["threads"] = 1
    # a rule without a sub wildcard gets the largest subject's request
    assert res["mem_mb"](SimpleNamespace(), 1) == res["mem_mb"](wc6, 1)
    train = resources.rule_resources(config, "train_model")
    assert train["gpu"] == 1
    unseen = SimpleNamespace(protocol="unseen-subject_sub-05")
    assert resources.wildcard_subject(unseen) == 5
    assert resources.wildcard_subject(SimpleNamespace(protocol="paper")) is None
    assert train["runtime"](unseen, 1) < train["runtime"](SimpleNamespace(protocol="paper"), 1)


# --- downloads, disk, output --------------------------------------------------------

def test_download_size_counts_only_s3(tmp_path):
    config = nsd_config()
    assert plan.download_bytes(config) == nsdkeys.estimated_bytes(workflow_keys(config))
    assert 150e9 < plan.download_bytes(config) < 250e9
    assert plan.download_bytes(layered(tmp_path, {})) == 0


def test_temp_rest_runs_are_bounded_by_concurrent_jobs():
    config = nsd_config()
    run_bytes = 4 * 91 * 109 * 91 * resources.NSD_REST_VOLUMES
    one = plan.disk_footprint(config, jobs=1)
    assert one["temp rest runs (peak)"] == 2 * run_bytes
    many = plan.disk_footprint(config, jobs=10_000)
    assert many["temp rest runs (peak)"] == 192 * run_bytes
    assert one["evoked betas"] == 96 * 4 * 750 * resources.sizes(config).brain_voxels
    assert many["NSD download"] == plan.download_bytes(config)


def test_main_prints_the_plan(capsys):
    assert plan.main(["--configfile", str(NSD_YAML), "--workflow-dir", str(REPO),
                      "--jobs", "50"]) == 0
    out = capsys.readouterr().out
    assert "| rest_to_mni | 192 | 1 |" in out
    assert "| download_nsd_key | 330 |" in out
    assert re.search(r"NSD download: 19\d\.\d GB", out)
    assert "with at most 50 concurrent jobs" in out
    assert "Compute:" in out and "GPU-hours" in out


def test_main_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        plan.main(["--jobs", "0", "--workflow-dir", str(REPO)])
    with pytest.raises(FileNotFoundError):
        plan.main(["--configfile", str(tmp_path / "missing.yaml"), "--workflow-dir", str(REPO)])
