"""Train Rest2Visual on a triplet pack and a split file.

``rest2visual train --pack PACK.h5 --split SPLIT.csv --config CFG.yaml --out-dir D``
(or ``--params JSON`` with the ``model``/``train`` blocks). The same command
runs on CPU, on one GPU, and under ``torchrun --nproc_per_node N`` (DDP; each
process takes ``train.batch_size`` samples per step, so the global batch is
N × batch_size).

- Loss: MSE between predicted and measured betas over the brain-mask voxels
  (the prediction volume is gathered back to in-mask vectors first).
- AdamW; learning rate warmed up linearly for ``warmup_steps`` then cosine-decayed
  to 0, per step.
- Every epoch: validation loss and mean per-sample Pearson (over the mask) on the
  split's ``val`` rows; ``best.pt`` (by val Pearson) and ``last.pt``; ``train_log.csv``.
- Resume: an existing ``out-dir/last.pt`` is resumed exactly, mid-epoch too
  (each epoch's order depends only on seed and epoch, so the batches already
  done are skipped). On CPU with deterministic algorithms the resumed weights
  are bit-identical to an uninterrupted run.
- Last, ``model.pt``: the best weights with the config, mask grid and image size,
  which ``rest2visual predict`` and the evaluation load.
On CUDA: bf16 autocast, channels_last_3d, optional torch.compile.

Reruns: ``last.pt`` and ``best.pt`` hold the training; ``model.pt`` and
``train_log.csv`` are derived from them (the log rows live in every checkpoint),
so a workflow may delete those two and rerun at no cost:

- ``last.pt`` already at its final step (a finished run, or one killed after its
  last checkpoint): nothing is trained, ``model.pt`` and ``train_log.csv`` are
  written again from the checkpoints (bit-identical weights).
- ``last.pt`` of a run with other result-changing settings (:data:`RESULT_KEYS`
  of ``train``, any ``model`` key, the number of processes or train rows): a new
  training starts, with a message naming what changed; the old ``last.pt`` and
  ``best.pt`` are replaced only when the new run writes its own.
- The runtime keys (:data:`RUNTIME_KEYS`: ``device``, ``num_workers``,
  ``compile``, ``log_every``) never change the weights (on one device), may
  differ between a run and its resumption, and are passed apart (``--runtime``)
  so that the workflow does not rerun training when they change.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rest2visual import __version__
from rest2visual.atomic import atomic_path
from rest2visual.config import defaults as config_defaults
from rest2visual.model.checkpoint import (grid_entries, load_checkpoint, rng_state,
                                          save_checkpoint, save_model_file, set_rng_state,
                                          to_primitives)
from rest2visual.model.distributed import (DistContext, EpochSampler, all_reduce_sum, barrier,
                                           cleanup_distributed, setup_distributed)
from rest2visual.model.network import build_model, model_config, parameter_summary
from rest2visual.model.rerun import RUNTIME_KEYS, TRAJECTORY_KEYS

#: defaults of the config's ``train`` block (the workflow schema's values)
TRAIN_DEFAULTS = config_defaults("train")
#: train keys that change the trained weights (``gpus`` sets the global batch)
RESULT_KEYS = tuple(k for k in TRAIN_DEFAULTS if k not in RUNTIME_KEYS)
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_pearson", "samples_per_s", "lr")


def full_config(cfg: dict) -> dict:
    """The config with its ``model`` and ``train`` blocks completed from the defaults."""
    cfg = to_primitives(dict(cfg))
    cfg["model"] = model_config(cfg.get("model"))
    train = dict(TRAIN_DEFAULTS)
    train.update(cfg.get("train") or {})
    unknown = set(train) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown train config keys {sorted(unknown)}; "
                         f"known: {sorted(TRAIN_DEFAULTS)}")
    cfg["train"] = train
    return cfg


def seed_everything(seed: int, deterministic: bool = True, warn_only: bool = False) -> None:
    """Seed python, numpy and torch, and choose deterministic kernels.

    ``deterministic``: torch runs only operations with a deterministic
    implementation, and raises on one without (``warn_only=False``, every CPU
    run: bit-identical reruns) or warns naming it (``warn_only=True``, CUDA
    runs). On CUDA, cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` (set here before the
    first CUDA call unless the environment sets it) and cuDNN's autotuner is off
    and its deterministic algorithms chosen. Kernels torch documents as
    non-deterministic on CUDA include the backward passes of adaptive/average
    pooling and of ``interpolate`` (e.g. in a trained ResNet image encoder), and
    ``torch.compile``'s generated kernels are not covered; a CUDA run with such
    operations prints torch's warning naming them. Across GPU models, or CPU vs
    GPU, results differ by rounding.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def data_identity(pack_path, split_csv, embeddings_path=None, samples: int = 64) -> str:
    """sha256 (hex) that changes when the training data change, read in about a second.

    Covers the split file whole; the pack's index (``/trials``, ``/mask``,
    ``/image_nsd_ids``, the shape attributes and ``config_hash``) and ``samples``
    evenly spaced rows of ``/betas``, ``/rest_maps`` and ``/images``; the
    embedding cache's encoder attributes and sampled rows. An upstream change
    (another rest recipe, GLM or registration) changes every row, so a sample
    sees it; a re-packed pack of the same data keeps its identity. A checkpoint
    of other data is another training (see "Reruns" above).
    """
    import hashlib

    import h5py

    digest = hashlib.sha256(Path(split_csv).read_bytes())

    def add(ds, rows=None):
        data = ds[()] if rows is None else ds[rows]
        digest.update(repr((ds.name, ds.dtype.str, ds.shape)).encode())
        digest.update(np.ascontiguousarray(data).tobytes())

    def sample(ds):
        n = ds.shape[0]
        add(ds, np.unique(np.linspace(0, n - 1, min(n, samples)).astype(np.int64)) if n else None)

    with h5py.File(pack_path, "r") as h5:
        for key in ("config_hash", "n_trials", "n_voxels", "image_size"):
            digest.update(repr((key, h5.attrs.get(key))).encode())
        for name in sorted(h5["trials"]):
            add(h5["trials"][name])
        add(h5["mask"])
        add(h5["image_nsd_ids"])
        for name in ("betas", "rest_maps", "images"):
            sample(h5[name])
    if embeddings_path is not None:
        with h5py.File(embeddings_path, "r") as h5:
            for key in ("encoder", "weights_sha256", "feature_dim"):
                digest.update(repr((key, h5.attrs.get(key))).encode())
            add(h5["nsd_ids"])
            sample(h5["embeddings"])
    return digest.hexdigest()


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR factor per step: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def pearson_rows(pred: torch.Tensor, true: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample Pearson over voxels: (B, V), (B, V) → (B,)."""
    p = pred - pred.mean(dim=1, keepdim=True)
    t = true - true.mean(dim=1, keepdim=True)
    return (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + eps)


def forward_batch(model, scatter, batch: dict, device: torch.device,
                  bf16: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One loader batch through the model: (predicted, measured) in-mask betas (B, n_vox) fp32.

    Rest vectors become (padded) volumes on the device; on CUDA in channels_last_3d
    and (unless ``bf16=False``) bf16 autocast. Images (uint8) or cached features
    condition the decoder.
    """
    cuda = device.type == "cuda"
    bf16 = cuda if bf16 is None else bf16
    rest = scatter(batch["rest"].to(device, non_blocking=True).float())
    if cuda:
        rest = rest.contiguous(memory_format=torch.channels_last_3d)
    images = batch["image"].to(device, non_blocking=True) if "image" in batch else None
    features = batch["embedding"].to(device, non_blocking=True) if "embedding" in batch else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(rest, images=images, features=features)
    return scatter.gather(out.float()), batch["beta"].to(device, non_blocking=True).float()


class _Trainer:
    """State of one training run (one process); :func:`train` drives it."""

    def __init__(self, pack_path, split_csv, out_dir, cfg, embeddings_path, ctx: DistContext):
        from rest2visual.model.loader import (TripletDataset, VolumeScatter, make_loader,
                                              split_rows)

        # the rest-map recipe is the pack's (what its maps were made with), not the config's
        cfg = dict(cfg, rest=pack_rest_recipe(pack_path))
        self.ctx, self.cfg, self.out_dir = ctx, cfg, Path(out_dir)
        self.data_identity = data_identity(pack_path, split_csv, embeddings_path)
        tcfg = cfg["train"]
        self.cuda = ctx.device.type == "cuda"
        seed_everything(int(tcfg["seed"]), deterministic=True, warn_only=self.cuda)
        if embeddings_path is not None:
            if not cfg["model"]["freeze_image_encoder"]:
                raise ValueError(f"{embeddings_path}: cached embeddings need a frozen encoder "
                                 "(model.freeze_image_encoder: true); a trained encoder "
                                 "sees the images")
            check_embeddings(embeddings_path, cfg["model"])
        train_rows = split_rows(pack_path, split_csv, "train")
        val_rows = split_rows(pack_path, split_csv, "val")
        global_batch = tcfg["batch_size"] * ctx.world_size
        if len(train_rows) < global_batch:
            raise ValueError(f"{split_csv}: {len(train_rows)} train rows, fewer than one global "
                             f"batch ({global_batch} = batch_size × processes)")
        if len(val_rows) == 0:
            raise ValueError(f"{split_csv}: no val rows (the split column has no 'val')")
        train_set = TripletDataset(pack_path, train_rows, embeddings_path=embeddings_path)
        # each rank validates its own strided share (no padding: exact global means)
        val_set = TripletDataset(pack_path, val_rows[ctx.rank::ctx.world_size],
                                 embeddings_path=embeddings_path)
        self.mask, self.affine = train_set.grid.mask, train_set.grid.affine
        self.image_size = train_set.image_size
        self.sampler = EpochSampler(train_set, batch_size=tcfg["batch_size"], ctx=ctx,
                                    seed=int(tcfg["seed"]))
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * int(tcfg["epochs"])
        workers = int(tcfg["num_workers"])
        self.train_loader = make_loader(train_set, tcfg["batch_size"], shuffle=False,
                                        num_workers=workers, seed=int(tcfg["seed"]) + ctx.rank,
                                        sampler=self.sampler)
        self.val_loader = make_loader(val_set, tcfg["batch_size"], shuffle=False,
                                      num_workers=workers, seed=int(tcfg["seed"]) + ctx.rank)
        self.n_train = len(train_rows)
        self.model = build_model(cfg["model"])
        if self.model.freeze_image_encoder:
            self.model.fit_feature_standardization(training_image_features(self.model, train_set))
        self.model.to(ctx.device)
        # scatter straight into the network's padded box (its own padding is then a no-op)
        self.scatter = VolumeScatter(self.mask, pad_to=self.model.unet.multiple).to(ctx.device)
        if self.cuda:
            self.model.to_channels_last()
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(tcfg["weight_decay"])},
             {"params": no_decay, "weight_decay": 0.0}], lr=float(tcfg["lr"]))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(int(tcfg["warmup_steps"]), self.total_steps))
        self.step_model = self.model
        if ctx.distributed:
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if self.cuda else None)
        if self.cuda and tcfg["compile"]:
            self.step_model = torch.compile(self.step_model)
        self.step = 0
        self.best = {"val_pearson": -math.inf, "epoch": -1}
        self.history: list[dict] = []
        self.loss_sum, self.loss_count = 0.0, 0

    # -- one step / one pass ---------------------------------------------------
    def _forward(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_batch(model, self.scatter, batch, self.ctx.device)

    def train_epoch(self, epoch: int, max_steps: int | None, progress) -> tuple[int, float]:
        self.step_model.train()
        t0, done = time.perf_counter(), 0
        local = torch.zeros(2, dtype=torch.float64, device=self.ctx.device)
        for batch in self.train_loader:
            pred, beta = self._forward(self.step_model, batch)
            loss = F.mse_loss(pred, beta)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            done += 1
            local += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64,
                                                                        device=loss.device)])
            progress.update(1)
            if self.ctx.is_main and self.step % int(self.cfg["train"]["log_every"]) == 0:
                progress.set_postfix(loss=f"{loss.item():.4f}")
                if progress.disable:  # no bar (a log file): a line instead
                    print(f"epoch {epoch + 1} step {self.step}/{self.total_steps} loss "
                          f"{loss.item():.5f} lr {self.scheduler.get_last_lr()[0]:.3g}", flush=True)
            if max_steps is not None and self.step >= max_steps:
                break
        seconds = time.perf_counter() - t0
        # mean over ranks of per-rank batch losses = loss of the global batch
        total = all_reduce_sum(local, self.ctx) / self.ctx.world_size
        self.loss_sum += float(total[0])
        self.loss_count += int(round(float(total[1])))
        samples = done * self.cfg["train"]["batch_size"] * self.ctx.world_size
        return done, samples / max(seconds, 1e-9)

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """(val MSE over all in-mask voxels, mean per-sample Pearson) over all ranks."""
        self.model.eval()
        # sums over this rank's samples: squared error, voxels, Pearson, samples
        acc = torch.zeros(4, dtype=torch.float64, device=self.ctx.device)
        for batch in self.val_loader:
            pred, beta = self._forward(self.model, batch)
            acc[0] += ((pred - beta) ** 2).sum().double()
            acc[1] += beta.numel()
            acc[2] += pearson_rows(pred, beta).sum().double()
            acc[3] += len(beta)
        acc = all_reduce_sum(acc, self.ctx)
        return float(acc[0] / acc[1]), float(acc[2] / acc[3])

    # -- checkpoints -------------------------------------------------------------
    def payload(self, epoch_done: int) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": epoch_done, "step": self.step,
            "rng": rng_state(), "config": self.cfg, "version": __version__,
            "world_size": self.ctx.world_size, "steps_per_epoch": self.steps_per_epoch,
            "best": dict(self.best), "history": list(self.history),
            "epoch_loss": [self.loss_sum, self.loss_count], "data_identity": self.data_identity,
            **grid_entries(self.mask, self.affine, self.image_size),
        }

    def differences(self, state: dict) -> list[str]:
        """What makes checkpoint ``state`` another training than this run (empty: the same)."""
        old, new = state["config"], self.cfg
        changed = [f"model.{k} ({old['model'].get(k)!r} → {new['model'][k]!r})"
                   for k in new["model"] if old["model"].get(k) != new["model"][k]]
        changed += [f"train.{k} ({old['train'].get(k)!r} → {new['train'][k]!r})"
                    for k in TRAJECTORY_KEYS if old["train"].get(k) != new["train"][k]]
        if state["world_size"] != self.ctx.world_size:
            changed.append(f"processes ({state['world_size']} → {self.ctx.world_size})")
        if state["steps_per_epoch"] != self.steps_per_epoch:
            changed.append(f"steps per epoch ({state['steps_per_epoch']} → "
                           f"{self.steps_per_epoch}: the train rows differ)")
        elif state.get("data_identity") != self.data_identity:
            changed.append("the training data (pack, split or embeddings: "
                           f"identity {str(state.get('data_identity'))[:12]} → "
                           f"{self.data_identity[:12]})")
        return changed

    def resume(self, path: Path, state: dict | None = None) -> None:
        """Continue from checkpoint ``path`` (``state``: it, already loaded on the CPU)."""
        # on the CPU: RNG states must stay there; load_state_dict moves the rest to the device
        state = load_checkpoint(path, map_location="cpu") if state is None else state
        changed = self.differences(state)
        if changed:
            raise ValueError(f"{path}: cannot resume, the run differs from the checkpoint in "
                             f"{changed}; delete {path} to start over")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.best, self.history = state["step"], state["best"], state["history"]
        # the partial epoch's loss sum is already reduced over ranks (same on every rank)
        self.loss_sum, self.loss_count = state["epoch_loss"]

    def write_log(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: row[k] for k in LOG_COLUMNS} for row in self.history)
        with atomic_path(self.out_dir / "train_log.csv") as tmp:
            tmp.write_text(buf.getvalue())


def training_image_features(model, dataset, batch_size: int = 64) -> torch.Tensor:
    """(n_images, feature_dim) frozen-encoder features of the distinct images of
    ``dataset``'s rows (a :class:`TripletDataset`): from its embedding cache when it has
    one, else computed on CPU from the pack's images."""
    image_rows = np.unique(dataset.image_row[dataset.rows])
    if dataset.embeddings is not None:
        return torch.from_numpy(np.asarray(dataset.embeddings[image_rows], dtype=np.float32))
    import h5py

    out = []
    with h5py.File(dataset.pack.path, "r") as h5, torch.no_grad():
        for start in range(0, len(image_rows), batch_size):
            block = h5["images"][image_rows[start:start + batch_size]]
            out.append(model.image_features(torch.from_numpy(block).permute(0, 3, 1, 2).contiguous()))
    return torch.cat(out)


def pack_rest_recipe(pack_path) -> dict | None:
    """The rest-map recipe the pack's maps were made with (``preprocess.recipe``), or None
    when the pack records none; stored in ``model.pt`` for ``predict --rest-run``."""
    import h5py

    from rest2visual.preprocess.recipe import PACK_ATTR, recipe_from_attr

    with h5py.File(pack_path, "r") as h5:
        text = h5.attrs.get(PACK_ATTR, "")
    return recipe_from_attr(text, f"{pack_path} (attribute {PACK_ATTR})")


def check_embeddings(path, model_cfg: dict) -> None:
    """Refuse an embedding cache made with another encoder or other weights."""
    import h5py

    from rest2visual.model.image_encoders import weights_identity

    with h5py.File(path, "r") as h5:
        name, sha = h5.attrs.get("encoder"), h5.attrs.get("weights_sha256")
    want_sha = weights_identity(model_cfg["image_encoder"], model_cfg["encoder_weights"])
    if name != model_cfg["image_encoder"] or sha != want_sha:
        raise ValueError(f"{path}: embeddings of encoder {name!r} (weights sha256 {sha!r:.20}), "
                         f"but model.image_encoder is {model_cfg['image_encoder']!r} "
                         f"(weights sha256 {want_sha!r:.20}); rerun rest2visual embed-images")


def _tensorboard(out_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: the CSV log is the record
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def train(pack_path, split_csv, out_dir, cfg: dict, *, embeddings_path=None,
          max_steps: int | None = None) -> dict:
    """Train (or resume) a model; returns metrics.

    ``cfg``: a config dict with ``model`` and ``train`` blocks (missing keys take
    the defaults); the ``rest`` block stored with the model is the pack's rest-map
    recipe (:func:`pack_rest_recipe`), whatever ``cfg`` says. ``max_steps`` stops after that many global steps, writing
    ``last.pt`` (a resumable interruption; model.pt is not written then).
    Returns {"best_val_pearson", "best_epoch", "val_loss", "val_pearson", "step",
    "total_steps", "n_parameters", "history", "finished"}.
    """
    from tqdm.auto import tqdm

    cfg = full_config(cfg)
    out_dir = Path(out_dir)
    ctx = setup_distributed(cfg["train"]["device"])
    try:
        run = _Trainer(pack_path, split_csv, out_dir, cfg, embeddings_path, ctx)
        last = out_dir / "last.pt"
        state = load_checkpoint(last, map_location="cpu") if last.exists() else None
        changed = run.differences(state) if state is not None else []
        if changed:
            # another training: start over; last.pt/best.pt are replaced by this run's own
            if ctx.is_main:
                print(f"{last}: a training with other settings ({'; '.join(changed)}): "
                      f"starting a new training (its checkpoints will replace {last.name} "
                      "and best.pt)", flush=True)
        elif state is not None:
            run.resume(last, state)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        del state
        n_params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        if ctx.is_main and run.step >= run.total_steps:
            print(f"{last}: this training is already finished (step {run.step} of "
                  f"{run.total_steps}); writing model.pt and train_log.csv from its "
                  "checkpoints", flush=True)
        if ctx.is_main:
            print(parameter_summary(run.model), flush=True)
            print(f"{run.n_train} train samples, {run.steps_per_epoch} steps/epoch × "
                  f"{cfg['train']['epochs']} epochs on {ctx.world_size} × {ctx.device}"
                  + (f", resuming at step {run.step}" if run.step else ""), flush=True)
        board = _tensorboard(out_dir, ctx.is_main)
        progress = tqdm(total=run.total_steps, initial=run.step, unit="step",
                        disable=not (ctx.is_main and sys.stderr.isatty()))
        while run.step < run.total_steps and (max_steps is None or run.step < max_steps):
            epoch, skip = divmod(run.step, run.steps_per_epoch)
            run.sampler.set_epoch(epoch)
            run.sampler.skip_batches = skip
            _, rate = run.train_epoch(epoch, max_steps, progress)
            if run.step % run.steps_per_epoch:  # stopped mid-epoch by max_steps
                if ctx.is_main:
                    save_checkpoint(run.payload(epoch), last)
                break
            val_loss, val_r = run.validate()
            row = {"epoch": epoch + 1, "step": run.step,
                   "train_loss": run.loss_sum / max(run.loss_count, 1), "val_loss": val_loss,
                   "val_pearson": val_r, "samples_per_s": rate,
                   "lr": run.scheduler.get_last_lr()[0]}
            run.history.append(row)
            run.loss_sum, run.loss_count = 0.0, 0
            improved = val_r > run.best["val_pearson"]
            if improved:
                run.best = {"val_pearson": val_r, "val_loss": val_loss, "epoch": epoch + 1}
            if ctx.is_main:
                if improved:
                    save_checkpoint(run.payload(epoch + 1), out_dir / "best.pt")
                save_checkpoint(run.payload(epoch + 1), last)
                run.write_log()
                if board is not None:
                    for key in ("train_loss", "val_loss", "val_pearson", "lr"):
                        board.add_scalar(key, row[key], run.step)
                print(f"epoch {epoch + 1}: train loss {row['train_loss']:.5f}, val loss "
                      f"{val_loss:.5f}, val Pearson {val_r:.4f}, {rate:.1f} samples/s", flush=True)
        progress.close()
        if board is not None:
            board.close()
        finished = run.step >= run.total_steps
        if finished and ctx.is_main:
            run.write_log()
            write_final_model(out_dir, run)
        barrier(ctx)
        final = run.history[-1] if run.history else {}
        return {"best_val_pearson": run.best["val_pearson"], "best_epoch": run.best["epoch"],
                "val_loss": final.get("val_loss"), "val_pearson": final.get("val_pearson"),
                "step": run.step, "total_steps": run.total_steps, "n_parameters": n_params,
                "history": run.history, "finished": finished}
    finally:
        cleanup_distributed()


def write_final_model(out_dir: Path, run: _Trainer) -> Path:
    """model.pt: the best epoch's weights + config + grid, written last and atomically.

    The weights come from ``best.pt`` when it is this training's best epoch (same
    settings, same epoch), else from ``last.pt`` (e.g. no epoch improved on
    -inf because validation gave NaN). The config stored is the result config
    (runtime keys dropped), so the same training gives the same ``model.pt``.
    """
    best_path = out_dir / "best.pt"
    best = load_checkpoint(best_path) if best_path.exists() else None
    if (best is None or run.differences(best)
            or best.get("best", {}).get("epoch") != run.best.get("epoch")):
        best = load_checkpoint(out_dir / "last.pt")
    cfg = dict(run.cfg, train={k: v for k, v in run.cfg["train"].items()
                               if k not in RUNTIME_KEYS})
    return save_model_file(out_dir / "model.pt", best["model"], cfg, mask=run.mask,
                           affine=run.affine, image_size=run.image_size, metrics=run.best)


def load_runtime_arg(runtime: str | None) -> dict:
    """``--runtime`` JSON text: a dict of :data:`RUNTIME_KEYS` only (or {} when None)."""
    if runtime is None:
        return {}
    try:
        values = json.loads(runtime)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--runtime: not JSON text ({exc})") from exc
    if not isinstance(values, dict) or set(values) - set(RUNTIME_KEYS):
        raise ValueError(f"--runtime: expected a JSON object with keys among {list(RUNTIME_KEYS)}, "
                         f"found {values!r}")
    return values


def load_config_arg(config: str | None, params: str | None) -> dict:
    """The config from ``--config`` (YAML file) or ``--params`` (JSON text or file)."""
    if (config is None) == (params is None):
        raise ValueError("give exactly one of --config CFG.yaml or --params JSON")
    if config is not None:
        import yaml

        with open(config) as f:
            return yaml.safe_load(f) or {}
    is_text = params.lstrip().startswith("{")  # JSON text can be longer than a file name may be
    text = params if is_text else Path(params).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--params: neither a JSON file nor JSON text ({exc})") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rest2visual train", description=__doc__.split("\n")[0])
    parser.add_argument("--pack", required=True, help="triplet pack (HDF5)")
    parser.add_argument("--split", required=True, help="split CSV with a split column")
    parser.add_argument("--config", help="workflow config YAML (model and train blocks)")
    parser.add_argument("--params", help="JSON text or file with the model and train blocks")
    parser.add_argument("--runtime", help="JSON text of train keys that do not change the "
                        f"result ({', '.join(RUNTIME_KEYS)}), over those of the config")
    parser.add_argument("--out-dir", required=True, help="checkpoints, train_log.csv, model.pt")
    parser.add_argument("--embeddings", help="cached frozen-encoder embeddings (embed-images)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (resumable)")
    args = parser.parse_args(argv)
    cfg = load_config_arg(args.config, args.params)
    runtime = load_runtime_arg(args.runtime)
    if runtime:
        cfg = dict(cfg, train={**(cfg.get("train") or {}), **runtime})
    metrics = train(args.pack, args.split, args.out_dir, cfg, embeddings_path=args.embeddings,
                    max_steps=args.max_steps)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}))
    return 0
