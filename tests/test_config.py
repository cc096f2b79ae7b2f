"""Configuration: schema validation at start-up, semantic checks, and the dry-run plan."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, run_workflow, toy_config

from rest2visual.config import SCHEMA


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
    schema = yaml.safe_load(SCHEMA.read_text())
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
    # 314 + 8 transforms (cross-check) + 8 nsdgeneral ROIs (decoding bridge)
    assert "NSD download plan: 330 keys" in proc.stdout
    assert "GB" in proc.stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["download_nsd_key"] == 330
    assert counts["pcc_zmap"] == 96 and counts["evoked_betas"] == 96
    assert counts["rest_to_mni"] == 192 and counts["register_to_mni"] == 8


def test_snakemake_lint_passes(tmp_path):
    proc = run_workflow(tmp_path, toy_config(), "--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_readme_config_table_matches_the_schema():
    from rest2visual.config import schema_markdown

    schema = yaml.safe_load(SCHEMA.read_text())
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- config:start -->\n")[1].split("\n<!-- config:end -->")[0]
    assert table == schema_markdown(schema), "README config table is stale: rest2visual config-docs"


@pytest.mark.parametrize(
    "config, line",
    [
        ({"nsd": {"subjcts": [1]}},
         "config nsd.subjcts: unknown key in section nsd; closest valid key: nsd.subjects"),
        ({"trian": {"epochs": 1}},
         "config trian: unknown key in the top level; closest valid key: train"),
        ({"model": {"embed_dims": 8}},
         "config model.embed_dims: unknown key in section model; closest valid key: model.embed_dim"),
    ],
)
def test_unknown_key_is_one_line_with_the_closest_valid_key(tmp_path, config, line):
    proc = _dry_run(tmp_path, config)
    assert proc.returncode != 0
    errors = [text for text in proc.stdout.splitlines() if "error" in text.lower()]
    assert errors == [f"rest2visual: error: {line}"], proc.stdout[-3000:]
    assert len(proc.stdout.splitlines()) < 10  # not the schema


def test_validate_config_fills_the_schema_defaults():
    from rest2visual.config import ConfigError, load_schema, validate_config

    config = validate_config({"nsd": {"subjects": [1]}})
    schema = load_schema()
    assert config["nsd"]["subjects"] == [1]
    assert config["train"]["epochs"] == schema["properties"]["train"]["properties"]["epochs"]["default"]
    assert set(config) == set(schema["properties"])
    with pytest.raises(ConfigError, match=r"^config train\.epochs: 'many' is not of type 'integer'$"):
        validate_config({"train": {"epochs": "many"}})


def test_the_workflow_schema_is_the_package_schema():
    """One schema file: the workflow's path leads to the package data."""
    assert (REPO / "workflow/schemas/config.schema.yaml").resolve() == SCHEMA.resolve()
    assert SCHEMA.parent.name == "rest2visual"


def test_package_defaults_are_the_schema_defaults():
    """Every default the package keeps for a config key equals the schema's."""
    from rest2visual.config import defaults
    from rest2visual.model.network import MODEL_DEFAULTS
    from rest2visual.model.train import TRAIN_DEFAULTS

    assert MODEL_DEFAULTS == defaults("model")
    assert TRAIN_DEFAULTS == defaults("train")
    from rest2visual.evaluate.run import _parser

    args = _parser().parse_args(["--pack", "p", "--split", "s", "--shared", "h", "--model", "m",
                                 "--atlas", "a", "--out-dir", "o"])
    assert list(args.ridge_alphas) == defaults("evaluate")["ridge_alphas"]
    assert args.ssim_window == defaults("evaluate")["ssim_window"]


def _cli(cwd, *args):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "rest2visual"
    return subprocess.run([str(exe), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=300)


def test_config_docs_and_plan_work_from_any_folder(tmp_path):
    docs = _cli(tmp_path, "config-docs")
    assert docs.returncode == 0, docs.stderr
    assert "| `nsd.subjects` |" in docs.stdout
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump(toy_config()))
    plan = _cli(tmp_path, "plan", "--configfile", str(cfg))
    assert plan.returncode == 0, plan.stderr
    assert "| train_model |" in plan.stdout and "Peak disk" in plan.stdout
    assert "Not in the workflow yet" not in plan.stdout


def test_report_categories_are_numbered_in_order():
    """The report's categories: 1, 2, 3, ... without gaps or a number used twice."""
    import re

    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow/rules").glob("*.smk")))
    names = {}
    for number, name in re.findall(r'category="(\d+) ([^"]+)"', text):
        names.setdefault(int(number), set()).add(name)
    assert sorted(names) == list(range(1, len(names) + 1)), names
    assert all(len(v) == 1 for v in names.values()), names
