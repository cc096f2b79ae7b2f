"""Configuration: schema validation at start-up, semantic checks, and the dry-run plan."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, run_workflow, toy_config


def _dry_run(tmp_path, config, *args):
    return run_workflow(tmp_path, config, "-n", "--quiet", "rules", *args, check=False)


@pytest.mark.parametrize(
    "config, named",
    [
        ({"nsd": {"subjcts": [1]}}, "subjcts"),                      # unknown key (typo)
        ({"mystery": {"x": 1}}, "mystery"),                         # unknown section
        ({"train": {"epochs": "many"}}, "epochs"),                  # wrong type
        ({"nsd": {"subjects": [9]}}, "subjects"),                   # not an NSD subject
        ({"mni": {"resolution_mm": 5}}, "resolution_mm"),           # not an allowed grid
        ({"nsd": {"source": "ftp"}}, "source"),                     # unknown enum value
    ],
)
def test_bad_config_fails_at_startup_naming_the_key(tmp_path, config, named):
    proc = _dry_run(tmp_path, config)
    assert proc.returncode != 0
    assert named in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / "results").exists()


def test_session_without_rest_runs_is_refused(tmp_path):
    proc = _dry_run(tmp_path, {"nsd": {"subjects": [2], "sessions": [21, 35]}})
    assert proc.returncode != 0
    assert "nsd.sessions" in proc.stdout and "35" in proc.stdout


def test_local_source_needs_an_existing_mirror(tmp_path):
    proc = _dry_run(tmp_path, {"nsd": {"source": "local", "local_root": str(tmp_path / "none")}})
    assert proc.returncode != 0 and "nsd.local_root" in proc.stdout


def test_local_mirror_missing_key_named_with_its_subject_session(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    proc = _dry_run(tmp_path / "wd", {"nsd": {"source": "local", "local_root": str(mirror),
                                              "subjects": [3], "sessions": [24]}})
    assert proc.returncode != 0
    assert "betas_session24.nii.gz" in proc.stdout and "subj03 session 24" in proc.stdout


def test_defaults_fill_every_section(tmp_path):
    """Every schema key has a default and a description (docs and defaults from one source)."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    for section, spec in schema["properties"].items():
        assert "description" in spec and spec.get("default") == {}, section
        for key, sub in spec["properties"].items():
            assert "description" in sub, f"{section}.{key} has no description"
            assert "default" in sub, f"{section}.{key} has no default"


def test_full_nsd_dry_run_plans_the_download_offline(tmp_path):
    """config/nsd.yaml: 8 subjects, 96 rest sessions, planned without touching the network."""
    cfg = yaml.safe_load((REPO / "config/nsd.yaml").read_text())
    proc = run_workflow(tmp_path, cfg, "-n", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "NSD download plan: 314 keys" in proc.stdout
    assert "GB" in proc.stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["download_nsd_key"] == 314
    assert counts["pcc_zmap"] == 96 and counts["evoked_betas"] == 96
    assert counts["rest_to_mni"] == 192 and counts["register_to_mni"] == 8


def test_snakemake_lint_passes(tmp_path):
    proc = run_workflow(tmp_path, toy_config(), "--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_readme_config_table_matches_the_schema():
    from rest2visual.config import schema_markdown

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- config:start -->\n")[1].split("\n<!-- config:end -->")[0]
    assert table == schema_markdown(schema), "README config table is stale: rest2visual config-docs"
