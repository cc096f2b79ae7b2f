"""Training: learning a toy problem, exact resume, reruns, DDP (gloo, 2 processes), embedding cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

from rest2visual.model.embeddings import embed_images
from rest2visual.dataset.pack import PackWriter
from rest2visual.maskvec import MaskedGrid
from rest2visual.model import predict
from rest2visual.model.checkpoint import load_checkpoint
from rest2visual.model.image_encoders import SmallCNN, build_image_encoder
from rest2visual.model.train import load_config_arg, load_runtime_arg, train

TINY_MODEL = {"widths": [4, 8], "groups": 4, "embed_dim": 8}
SHAPE = (11, 13, 11)
IMAGE_SIZE = 16


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    yield


def write_toy_pack(path: Path, *, n_trials: int = 96, n_rest: int = 6, seed: int = 0) -> dict:
    """A pack where beta = rest map × g(image) + noise, g ∝ red − blue, |g| ∈ [0.3, 1].

    Neither input alone predicts beta. Trials cycle through every (rest map,
    sign of g) pair and each cycle goes whole to train or to val (every 4th), so
    both splits hold each pair equally often: the rest map itself scores ≈ 0.
    The rest maps come in ± pairs, so their mean is 0 and the best image-only
    prediction, g × mean rest map, is 0.
    """
    assert n_rest % 2 == 0, "rest maps come in ± pairs"
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    grid = MaskedGrid(sum(a ** 2 for a in axes) < 0.9, np.diag([4.0, 4.0, 4.0, 1.0]))
    rest = np.stack([gaussian_filter(rng.standard_normal(SHAPE), 1.0)[grid.mask]
                     for _ in range(n_rest // 2)])
    rest = (rest - rest.mean(1, keepdims=True)) / rest.std(1, keepdims=True)
    rest = np.concatenate([rest, -rest]).astype(np.float32)
    i = np.arange(n_trials)
    g = rng.uniform(0.3, 1, n_trials) * np.where((i % (2 * n_rest)) // n_rest, -1, 1)
    is_val = (i // (2 * n_rest)) % 4 == 0
    images = rng.integers(60, 196, (n_trials, IMAGE_SIZE, IMAGE_SIZE, 3))
    images[..., 0] = np.round(128 + 127 * g)[:, None, None]
    images[..., 2] = np.round(128 - 127 * g)[:, None, None]
    rest_row = i % n_rest
    trials = pd.DataFrame({
        "subject": rest_row + 1, "session": 21, "trial": np.arange(n_trials) // n_rest + 1,
        "nsd_id": np.arange(n_trials), "shared": False, "repeat": 0,
        "image_row": np.arange(n_trials), "rest_row": rest_row})
    betas = rest[rest_row] * g[:, None] + 0.1 * rng.standard_normal((n_trials, grid.n_voxels))
    with h5py.File(path, "w") as h5:
        writer = PackWriter(h5, grid, trials, pd.DataFrame({"subject": np.arange(n_rest) + 1,
                                                            "session": 21}),
                            np.arange(n_trials), IMAGE_SIZE)
        for i in range(n_rest):
            writer.write_rest(i, rest[i])
        writer.write_images(0, images.astype(np.uint8))
        writer.write_betas(betas)
        writer.finish(np.zeros((0, 3)))
    split = trials[["subject", "session", "trial", "nsd_id"]].copy()
    split["split"] = np.where(is_val, "val", "train")
    split_csv = path.with_suffix(".csv")
    split.to_csv(split_csv, index=False)
    return {"pack": path, "split": split_csv, "g": g, "rest": rest[rest_row],
            "betas": betas.astype(np.float16).astype(np.float32), "val": split["split"].to_numpy() == "val",
            "images": images.astype(np.uint8)}


def config(**train_cfg) -> dict:
    base = {"epochs": 2, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "device": "cpu",
            "num_workers": 0, "log_every": 1000, "seed": 0}
    return {"model": dict(TINY_MODEL), "train": {**base, **train_cfg}}


def mean_pearson(pred: np.ndarray, true: np.ndarray) -> float:
    p = pred - pred.mean(1, keepdims=True)
    t = true - true.mean(1, keepdims=True)
    return float(np.mean((p * t).sum(1) / np.sqrt((p ** 2).sum(1) * (t ** 2).sum(1))))


def read_log(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns="samples_per_s")


def test_model_learns_rest_by_image_interaction(tmp_path, capsys):
    toy = write_toy_pack(tmp_path / "pack.h5")
    cfg = config(epochs=6, batch_size=8, lr=4e-3)
    cfg["model"]["widths"] = [8, 16]
    cfg["model"]["embed_dim"] = 16
    metrics = train(toy["pack"], toy["split"], tmp_path / "run", cfg)
    assert "trainable parameters" in capsys.readouterr().out
    val = toy["val"]
    random_level = mean_pearson(np.random.default_rng(0).standard_normal(toy["betas"][val].shape),
                                toy["betas"][val])
    rest_only = abs(mean_pearson(toy["rest"][val], toy["betas"][val]))  # ± the rest map
    assert np.abs(toy["rest"][~val].mean(0)).max() < 1e-5  # image-only: g × 0
    levels = max(abs(random_level), rest_only)
    curve = [row["val_pearson"] for row in metrics["history"]]
    assert levels < 0.15, levels
    assert metrics["best_val_pearson"] > levels + 0.5 and curve[-1] > curve[0], curve
    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    assert list(log.columns) == ["epoch", "step", "train_loss", "val_loss", "val_pearson",
                                 "samples_per_s", "lr"] and len(log) == 6
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    # model.pt holds the best epoch; predict reproduces its validation Pearson
    model = predict.load_model(tmp_path / "run" / "model.pt")
    pred = predict.predict_vectors(model, toy["rest"][val], toy["images"][val])
    assert mean_pearson(pred, toy["betas"][val]) == pytest.approx(metrics["best_val_pearson"], abs=1e-4)


def test_resume_is_bit_identical(tmp_path):
    toy = write_toy_pack(tmp_path / "pack.h5", n_trials=32, n_rest=4)
    cfg = config()  # 24 train rows, batch 4: 6 steps per epoch, 12 steps
    straight = train(toy["pack"], toy["split"], tmp_path / "straight", cfg)
    assert straight["finished"] and straight["step"] == 12
    # stop mid-way through epoch 2 (step 8 of 12), as an interruption would
    part = train(toy["pack"], toy["split"], tmp_path / "resumed", cfg, max_steps=8)
    assert not part["finished"] and part["step"] == 8
    assert not (tmp_path / "resumed" / "model.pt").exists()
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 8
    resumed = train(toy["pack"], toy["split"], tmp_path / "resumed", cfg)
    assert resumed["finished"] and resumed["step"] == 12
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for name, tensor in a["model"].items():  # bit-identical: CPU, deterministic algorithms
        assert torch.equal(tensor, b["model"][name]), name
    for key, state in a["optimizer"]["state"].items():
        assert all(torch.equal(state[k], b["optimizer"]["state"][key][k]) for k in state)
    pd.testing.assert_frame_equal(read_log(tmp_path / "straight" / "train_log.csv"),
                                  read_log(tmp_path / "resumed" / "train_log.csv"))


def test_ddp_two_processes_match_one_with_double_batch(tmp_path):
    toy = write_toy_pack(tmp_path / "pack.h5", n_trials=48, n_rest=4)
    cfg = config(batch_size=4)  # 32 train rows: 4 steps per epoch of global batch 8
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "rest2visual.cli", "train", "--pack", str(toy["pack"]), "--split",
           str(toy["split"]), "--params", json.dumps(cfg), "--out-dir", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "on 2 × cpu" in proc.stdout
    single = train(toy["pack"], toy["split"], tmp_path / "single", config(batch_size=8))
    ddp_log = read_log(tmp_path / "ddp" / "train_log.csv")
    one_log = read_log(tmp_path / "single" / "train_log.csv")
    assert list(ddp_log["step"]) == list(one_log["step"]) == [4, 8]
    for col in ("train_loss", "val_loss"):
        np.testing.assert_allclose(ddp_log[col], one_log[col], rtol=1e-5, err_msg=col)
    np.testing.assert_allclose(ddp_log["val_pearson"], one_log["val_pearson"], atol=1e-6)
    # compare the trained functions, not raw parameters: a conv bias right before a GroupNorm
    # of one channel per group has zero gradient up to rounding, which Adam turns into steps
    val = toy["val"]
    preds = [predict.predict_vectors(predict.load_model(tmp_path / run / "model.pt"),
                                     toy["rest"][val], toy["images"][val]) for run in ("ddp", "single")]
    np.testing.assert_allclose(preds[0], preds[1], rtol=1e-4, atol=1e-4 * np.abs(preds[1]).max())
    assert single["finished"]


def test_frozen_encoder_with_embedding_cache(tmp_path):
    toy = write_toy_pack(tmp_path / "pack.h5", n_trials=24, n_rest=4)
    torch.manual_seed(5)
    weights = tmp_path / "cnn.pt"
    torch.save(SmallCNN(feature_dim=8).state_dict(), weights)
    emb = embed_images(toy["pack"], "small_cnn", tmp_path / "emb.h5", weights=weights, feature_dim=8)
    encoder = build_image_encoder("small_cnn", weights, feature_dim=8).eval()
    with h5py.File(emb) as h5, torch.no_grad():
        expected = encoder(torch.from_numpy(toy["images"]).permute(0, 3, 1, 2).contiguous()).numpy()
        np.testing.assert_allclose(h5["embeddings"][()], expected, rtol=1e-5, atol=1e-6)
        assert h5["nsd_ids"][()].tolist() == list(range(24)) and h5.attrs["encoder"] == "small_cnn"
        assert len(h5.attrs["weights_sha256"]) == 64
    cfg = config(epochs=1)
    cfg["model"].update(encoder_weights=str(weights), freeze_image_encoder=True)
    train(toy["pack"], toy["split"], tmp_path / "run", cfg, embeddings_path=emb)
    model = predict.load_model(tmp_path / "run" / "model.pt")
    for name, tensor in encoder.backbone.state_dict().items():  # frozen: unchanged by training
        assert torch.equal(model.net.image_encoder.backbone.state_dict()[name], tensor), name
    # features are standardized with the training images' statistics, kept in the checkpoint
    train_images = np.unique(pd.read_csv(toy["split"]).query("split == 'train'")["nsd_id"])
    np.testing.assert_allclose(model.net.feature_mean.numpy(), expected[train_images].mean(0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.net.feature_std.numpy(), expected[train_images].std(0, ddof=1),
                               rtol=1e-4, atol=1e-5)
    from_images = predict.predict_vectors(model, toy["rest"], toy["images"])
    with h5py.File(emb) as h5:
        from_cache = predict.predict_vectors(model, toy["rest"], features=h5["embeddings"][()])
    np.testing.assert_allclose(from_images, from_cache, rtol=1e-4, atol=1e-5)
    other = tmp_path / "other.pt"
    torch.save(SmallCNN(feature_dim=8).state_dict(), other)
    cfg["model"]["encoder_weights"] = str(other)
    with pytest.raises(ValueError, match="rerun rest2visual embed-images"):
        train(toy["pack"], toy["split"], tmp_path / "run2", cfg, embeddings_path=emb)


def test_config_arguments(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(config()))
    assert load_config_arg(None, str(tmp_path / "p.json"))["model"] == TINY_MODEL
    assert load_config_arg(None, json.dumps({"train": {"epochs": 3}})) == {"train": {"epochs": 3}}
    with pytest.raises(ValueError, match="exactly one"):
        load_config_arg(None, None)
    with pytest.raises(ValueError, match="neither a JSON file nor JSON text"):
        load_config_arg(None, "{not json")
    toy = write_toy_pack(tmp_path / "pack.h5", n_trials=8, n_rest=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train(toy["pack"], toy["split"], tmp_path / "run", config(batch_size=8))


def test_rerun_of_a_finished_training_rewrites_model_and_log(tmp_path, capsys):
    toy = write_toy_pack(tmp_path / "pack.h5", n_trials=32, n_rest=4)
    run = tmp_path / "run"
    first = train(toy["pack"], toy["split"], run, config())
    weights = torch.load(run / "model.pt", weights_only=True)["model"]
    log = (run / "train_log.csv").read_text()
    # what Snakemake does before a rerun: the declared outputs are deleted
    (run / "model.pt").unlink()
    (run / "train_log.csv").unlink()
    capsys.readouterr()
    # runtime keys differ: still the same training, nothing trained again
    again = train(toy["pack"], toy["split"], run, config(log_every=1, num_workers=1))
    assert "already finished (step 12 of 12)" in capsys.readouterr().out
    assert again["finished"] and again["history"] == first["history"]
    assert (run / "train_log.csv").read_text() == log
    rewritten = torch.load(run / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], rewritten[k]) for k in weights)
    # a result-changing key: a new training, said so, replacing the checkpoints
    longer = train(toy["pack"], toy["split"], run, config(epochs=3))
    out = capsys.readouterr().out
    assert "train.epochs (2 → 3)" in out and "starting a new training" in out
    assert longer["finished"] and longer["step"] == 18 and len(longer["history"]) == 3
    assert load_checkpoint(run / "last.pt")["config"]["train"]["epochs"] == 3
    assert len(pd.read_csv(run / "train_log.csv")) == 3
    assert torch.load(run / "model.pt", weights_only=True)["config"]["train"]["epochs"] == 3
    assert "device" not in load_checkpoint(run / "model.pt")["config"]["train"]  # runtime key
    # other data (e.g. an upstream stage rerun), same rows and settings: not "finished"
    other = write_toy_pack(tmp_path / "other.h5", n_trials=32, n_rest=4, seed=1)
    retrained = train(other["pack"], toy["split"], run, config(epochs=3))
    assert "the training data (pack, split or embeddings" in capsys.readouterr().out
    assert retrained["finished"] and retrained["history"] != longer["history"]


def test_runtime_argument():
    assert load_runtime_arg(None) == {}
    assert load_runtime_arg('{"num_workers": 2, "log_every": 5}') == {"num_workers": 2,
                                                                       "log_every": 5}
    with pytest.raises(ValueError, match="keys among"):
        load_runtime_arg('{"epochs": 3}')  # result-changing: belongs in --params


def _train_workflow(tmp_path: Path) -> tuple[Path, dict]:
    """A workflow folder with a toy pack and split in place: only embed/train rules run."""
    from conftest import toy_config

    work = tmp_path / "work"
    (work / "results/dataset").mkdir(parents=True)
    (work / "results/splits").mkdir(parents=True)
    toy = write_toy_pack(work / "results/dataset/rest2visual_space-MNI152_res-4_triplets.h5",
                         n_trials=32, n_rest=4)
    toy["split"].rename(work / "results/splits/paper.csv")
    cfg = toy_config(model=dict(TINY_MODEL),
                     train={"epochs": 2, "batch_size": 4, "warmup_steps": 2, "log_every": 1000})
    return work, cfg


TRAIN_ONLY = ("results/models/paper/model.pt", "--allowed-rules", "train_model", "embed_images")


def _check_model(work: Path) -> dict:
    model = work / "results/models/paper/model.pt"
    assert model.exists() and (work / "results/models/paper/train_log.csv").exists()
    return torch.load(model, weights_only=True)


@pytest.mark.workflow
def test_workflow_reruns_of_train_model_keep_a_model(tmp_path):
    """--forcerun twice, a runtime-key edit, an epochs edit: each exits 0 with model.pt."""
    from conftest import run_workflow

    work, cfg = _train_workflow(tmp_path)
    run_workflow(work, cfg, *TRAIN_ONLY)
    weights = _check_model(work)["model"]
    for _ in range(2):
        proc = run_workflow(work, cfg, *TRAIN_ONLY, "--forcerun", "train_model")
        assert "rule train_model:" in proc.stdout
        log = (work / "results/logs/models/train_paper.log").read_text()
        assert "already finished" in log
        again = _check_model(work)["model"]
        assert all(torch.equal(weights[k], again[k]) for k in weights)
    cfg["train"]["log_every"] = 1  # a runtime key: nothing to rerun
    proc = run_workflow(work, cfg, *TRAIN_ONLY)
    assert "Nothing to be done" in proc.stdout
    _check_model(work)
    cfg["train"]["epochs"] = 3  # result-changing: a new training, said so in the log
    proc = run_workflow(work, cfg, *TRAIN_ONLY)
    assert "rule train_model:" in proc.stdout
    log = (work / "results/logs/models/train_paper.log").read_text()
    assert "train.epochs (2 → 3)" in log and "starting a new training" in log
    assert _check_model(work)["config"]["train"]["epochs"] == 3


@pytest.mark.workflow
def test_workflow_rerun_after_kill_after_the_last_checkpoint(tmp_path):
    """Snakemake killed (-9) once the final last.pt is written, before model.pt: the rerun
    recognises the finished training, exits 0 and model.pt loads."""
    from conftest import REPO

    work, cfg = _train_workflow(tmp_path)
    cfg_file = work / "test-config.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg))
    bindir = Path(sys.executable).parent
    # `rest2visual` as the rule calls it: the real command, then, when `train` has written
    # its final checkpoint, the state a kill leaves (no model.pt, no log) and kill -9 of
    # Snakemake (its pid in a file) — deterministic, unlike racing a timer
    shim = tmp_path / "bin"
    shim.mkdir()
    pidfile = tmp_path / "snakemake.pid"
    (shim / "rest2visual").write_text(
        "#!/bin/sh\n"
        f'"{bindir}/rest2visual" "$@" || exit $?\n'
        'if [ "$1" = train ]; then\n'
        "  rm -f results/models/paper/model.pt results/models/paper/train_log.csv\n"
        f'  kill -9 "$(cat {pidfile})"\n'
        "fi\n")
    (shim / "rest2visual").chmod(0o755)
    cmd = [str(bindir / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", str(cfg_file), "--cores", "2", *TRAIN_ONLY]
    env = dict(os.environ, PATH=f"{shim}{os.pathsep}{bindir}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pidfile.write_text(str(proc.pid))
    assert proc.wait(timeout=600) == -signal.SIGKILL
    assert load_checkpoint(work / "results/models/paper/last.pt")["step"] == 12
    assert not (work / "results/models/paper/model.pt").exists()
    env["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    # a killed Snakemake leaves its lock: the user's first step, as Snakemake's message says
    subprocess.run([*cmd, "--unlock"], cwd=work, env=env, check=True, capture_output=True)
    rerun = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert "already finished" in (work / "results/logs/models/train_paper.log").read_text()
    _check_model(work)
