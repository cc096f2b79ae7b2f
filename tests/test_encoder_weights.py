"""The paper protocol's pretrained frozen encoder (config/nsd.yaml) and the start-up check of
``model.encoder_weights``: a run stops before any job on a missing weights file, with one
line naming the key, the file and how to obtain it; dry runs and ``rest2visual plan`` only
report it, so config/nsd.yaml is planned (tests/test_plan.py, tests/test_config.py) without
the weights."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, run_workflow, toy_config
from rest2visual import plan
from rest2visual.config import ConfigError
from rest2visual.model.encoder_weights import (OPEN_CLIP_FILE, OPEN_CLIP_SOURCES,
                                               check_encoder_weights, encoder_weights_problem,
                                               names_a_file)

NSD_YAML = REPO / "config" / "nsd.yaml"


def nsd_config() -> dict:
    return plan.load_workflow_config([NSD_YAML], REPO)


def test_nsd_yaml_uses_a_pretrained_frozen_encoder_that_validates():
    """Schema validation and check_config pass (no weights file needed); the model block
    builds a frozen model config; the encoder is an OpenCLIP tower from a local file."""
    from rest2visual.model.network import model_config

    model = nsd_config()["model"]
    assert model["image_encoder"] == "open_clip:ViT-B-32"
    assert model["freeze_image_encoder"] is True
    assert model["encoder_weights"].endswith(OPEN_CLIP_FILE)
    assert names_a_file(model["image_encoder"], model["encoder_weights"])
    cfg = model_config(model)  # a frozen encoder needs weights: it has them
    assert cfg["freeze_image_encoder"] and cfg["encoder_weights"] == model["encoder_weights"]
    # ViT-B/32's image tower gives 512 features; the conditioning embedding has the same size
    assert cfg["embed_dim"] == 512


def test_nsd_yaml_encoder_matches_the_openclip_tower():
    """Where open_clip is installed: the tower's output size and input size are nsd.yaml's
    embed_dim and image size, and the suggested tag is one OpenCLIP knows, on the hub repo
    OpenCLIP downloads it from."""
    open_clip = pytest.importorskip("open_clip")
    config = nsd_config()
    arch = config["model"]["image_encoder"].split(":", 1)[1]
    tag, repo = OPEN_CLIP_SOURCES[arch]
    assert tag in open_clip.list_pretrained_tags_by_model(arch)
    assert open_clip.get_pretrained_cfg(arch, tag)["hf_hub"].rstrip("/") == repo
    visual = open_clip.create_model(arch, pretrained=None).visual
    assert visual.output_dim == config["model"]["embed_dim"]
    size = visual.image_size
    assert (size[0] if isinstance(size, (tuple, list)) else size) == config["dataset"]["image_size"]


def test_missing_weights_problem_is_one_line_naming_key_file_and_source(tmp_path):
    model = {"image_encoder": "open_clip:ViT-B-32",
             "encoder_weights": str(tmp_path / "w" / OPEN_CLIP_FILE)}
    problem = encoder_weights_problem(model)
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"config model.encoder_weights: {tmp_path / 'w' / OPEN_CLIP_FILE} "
                              "not found")
    assert "laion2b_s34b_b79k" in problem and "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in problem
    assert ("https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/"
            f"{OPEN_CLIP_FILE}") in problem
    with pytest.raises(ConfigError, match=r"^config model\.encoder_weights: "):
        check_encoder_weights({"model": model})
    # a file that exists, no weights, a gabor pyramid, an OpenCLIP tag: nothing to report
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / OPEN_CLIP_FILE).write_bytes(b"")
    assert encoder_weights_problem(model) is None
    assert encoder_weights_problem({"image_encoder": "gabor", "encoder_weights": None}) is None
    assert encoder_weights_problem({"image_encoder": "open_clip:ViT-B-32",
                                    "encoder_weights": "laion2b_s34b_b79k"}) is None
    # other encoders name their source too
    assert "torchvision.models.resnet50" in encoder_weights_problem(
        {"image_encoder": "resnet50", "encoder_weights": "r50.pt"})


def test_a_run_stops_at_start_up_on_the_missing_weights(tmp_path):
    """config/nsd.yaml without its weights file: snakemake (not a dry run) stops while
    parsing, before any job, with one error line naming the key and the file."""
    cfg = yaml.safe_load(NSD_YAML.read_text())
    weights = cfg["model"]["encoder_weights"]
    proc = run_workflow(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stdout.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stdout[-3000:]
    assert errors[0].startswith(f"rest2visual: error: config model.encoder_weights: {weights} "
                                "not found"), errors[0]
    assert "laion2b_s34b_b79k" in errors[0] and "huggingface.co" in errors[0]
    assert "Job stats" not in proc.stdout and not (tmp_path / "results").exists()


def test_dry_run_and_plan_only_warn(tmp_path, capsys):
    model = {"image_encoder": "open_clip:ViT-B-32", "freeze_image_encoder": True,
             "encoder_weights": "weights/missing/open_clip_pytorch_model.bin"}
    config = toy_config(model=model)
    proc = run_workflow(tmp_path / "dry", config, "-n", "--quiet", "rules", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "rest2visual: warning: config model.encoder_weights:" in proc.stdout
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    assert plan.main(["--configfile", str(path), "--workflow-dir", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert "Needed before a run: config model.encoder_weights: weights/missing/" in out


def test_encoder_builder_names_the_source_of_missing_weights(tmp_path):
    from rest2visual.model.image_encoders import build_image_encoder

    with pytest.raises(FileNotFoundError, match="model.encoder_weights") as err:
        build_image_encoder("resnet18", tmp_path / "r18.pt")
    assert "torchvision.models.resnet18" in str(err.value)
