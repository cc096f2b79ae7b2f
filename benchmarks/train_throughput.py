"""Training throughput of Rest2Visual at the paper's full 2 mm size.

Measures, for a paper-sized model (widths 32-64-128-256, embedding 512) on the
MNI152 2 mm brain mask (91×109×91, 235k voxels, padded to 96×112×96):

1. samples/s and peak memory of training steps on a synthetic in-memory batch
   (the model alone: the ceiling);
2. samples/s of the same steps fed by the real loader (TripletDataset +
   DataLoader) from a synthetic pack written to a temporary folder; the ratio
   loader / in-memory says whether the loader starves the model (≈ 1: it does not);
3. on CUDA: bf16 autocast vs fp32 speed-up, and the achieved TFLOP/s (FLOPs of
   one step counted with torch.utils.flop_counter.FlopCounterMode) as a
   fraction of the GPU's dense bf16 peak.

    python benchmarks/train_throughput.py                 # CPU: batch 1, 2 timed steps
    python benchmarks/train_throughput.py --device cuda   # GPU: batch 8, 20 steps

The step timed is the training step of ``rest2visual train``
(rest2visual.model.train.forward_batch + MSE + backward + AdamW).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: dense bf16 tensor-core peaks, FLOP/s (vendor data sheets, no sparsity)
BF16_PEAK = {"H100 SXM": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H200": 989e12,
             "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def gpu_peak(name: str) -> tuple[str, float | None]:
    """The data-sheet bf16 peak whose key matches ``torch.cuda.get_device_name()``."""
    if "H100" in name:
        key = "H100 PCIe" if "PCIe" in name else "H100 NVL" if "NVL" in name else "H100 SXM"
        return key, BF16_PEAK[key]
    for key, peak in BF16_PEAK.items():
        if key in name:
            return key, peak
    return "unknown", None


def synthetic_batch(n_vox: int, batch: int, image_size: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"rest": torch.randn(batch, n_vox, generator=g).to(device),
            "beta": torch.randn(batch, n_vox, generator=g).half().to(device),
            "image": torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8,
                                   generator=g).to(device)}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model, scatter, device, bf16: bool):
    from rest2visual.model.train import forward_batch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch):
        pred, beta = forward_batch(model, scatter, batch, device, bf16=bf16)
        loss = F.mse_loss(pred, beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def time_steps(step, batches, steps: int, warmup: int, device) -> float:
    """Mean seconds per step after ``warmup`` untimed steps; ``batches`` yields batches."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    sync(device)
    return (time.perf_counter() - t0) / steps


def count_flops(model_cfg: dict, padded_shape, batch: int, image_size: int) -> int:
    """FLOPs of one forward + backward pass, counted on the meta device (shapes only, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from rest2visual.model.network import build_model

    with torch.device("meta"):
        model = build_model(model_cfg)
        rest = torch.zeros(batch, 1, *padded_shape)
        images = torch.zeros(batch, 3, image_size, image_size, dtype=torch.uint8)
    counter = FlopCounterMode(display=False)
    with counter:
        model(rest, images=images).sum().backward()
    return counter.get_total_flops()


def repeat(batch):
    while True:
        yield batch


def write_pack(path: Path, grid, n_trials: int, image_size: int, n_rest: int = 8) -> None:
    """A synthetic pack with the real layout (PackWriter) at the grid's full size."""
    import h5py
    import pandas as pd

    from rest2visual.dataset.pack import PackWriter

    rng = np.random.default_rng(0)
    i = np.arange(n_trials)
    trials = pd.DataFrame({"subject": i % n_rest + 1, "session": 21, "trial": i // n_rest + 1,
                           "nsd_id": i, "shared": False, "repeat": 0, "image_row": i,
                           "rest_row": i % n_rest})
    with h5py.File(path, "w") as h5:
        w = PackWriter(h5, grid, trials, pd.DataFrame({"subject": np.arange(n_rest) + 1,
                                                       "session": 21}), i, image_size)
        for r in range(n_rest):
            w.write_rest(r, rng.standard_normal(grid.n_voxels, dtype=np.float32))
        for start in range(0, n_trials, 64):
            n = min(64, n_trials - start)
            w.write_images(start, rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8))
            w.write_betas(rng.standard_normal((n, grid.n_voxels), dtype=np.float32))
        w.finish(np.zeros((0, 3)))


def loader_batches(pack: Path, batch: int, workers: int):
    from rest2visual.model.loader import TripletDataset, make_loader

    dataset = TripletDataset(pack)
    loader = make_loader(dataset, batch, shuffle=True, num_workers=workers, seed=0, drop_last=True)
    while True:
        yield from loader


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (process peak)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, help="per step (default: 8 on CUDA, 1 on CPU)")
    p.add_argument("--steps", type=int, help="timed steps (default: 20 on CUDA, 3 on CPU)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--embed-dim", type=int, default=512)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--resolution", type=float, default=2.0, help="MNI grid, mm")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="loader workers (CUDA: also 0 workers is timed)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from rest2visual.model.loader import VolumeScatter
    from rest2visual.maskvec import MaskedGrid
    from rest2visual.model.distributed import resolve_device
    from rest2visual.model.network import build_model, count_parameters
    from rest2visual.preprocess.template import mni_brain_mask

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch_size or (8 if cuda else 1)
    # a full-size CPU step takes minutes on 2 cores: one step, no warm-up (negligible there)
    steps = args.steps or (20 if cuda else 1)
    warmup = 3 if cuda else 0
    grid = MaskedGrid.from_img(mni_brain_mask(args.resolution))
    torch.manual_seed(0)
    model_cfg = {"widths": args.widths, "groups": 8, "embed_dim": args.embed_dim}
    model = build_model(model_cfg).to(device)
    if cuda:
        model.to_channels_last()
    scatter = VolumeScatter(grid.mask, pad_to=model.unet.multiple).to(device)
    step_model = torch.compile(model) if args.compile and cuda else model
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"grid {grid.shape} → padded {scatter.padded_shape}, {grid.n_voxels:,} brain voxels; "
          f"model widths {args.widths}, embed {args.embed_dim}, {count_parameters(model):,} "
          f"parameters; batch {batch}, image {args.image_size}², {steps} timed steps")

    data = synthetic_batch(grid.n_voxels, batch, args.image_size, device)
    precisions = [True, False] if cuda else [False]
    results = {}
    flops = count_flops(model_cfg, scatter.padded_shape, batch, args.image_size)
    for bf16 in precisions:
        step = make_step(step_model, scatter, device, bf16)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_steps(step, repeat(data), steps, warmup, device)
        label = "bf16 autocast" if bf16 else "fp32"
        results[bf16] = seconds
        line = (f"in-memory batch, {label}: {batch / seconds:.3g} samples/s "
                f"({seconds * 1e3:.0f} ms/step), peak memory {peak_memory_gb(device):.1f} GiB, "
                f"{flops / batch / 1e9:.0f} GFLOP/sample (fwd+bwd), {flops / seconds / 1e12:.3g} TFLOP/s")
        if cuda and bf16:
            key, peak = gpu_peak(name)
            if peak:
                line += f" = {100 * flops / seconds / peak:.1f}% of the {key} bf16 peak ({peak / 1e12:.0f})"
        print(line)
    if cuda:
        print(f"bf16 speed-up over fp32: {results[False] / results[True]:.2f}×")

    mem_step = make_step(step_model, scatter, device, bf16=cuda)
    n_trials = max(8 * batch, (steps + warmup) * batch)
    with tempfile.TemporaryDirectory(prefix="r2v-bench-") as tmp:
        pack = Path(tmp) / "pack.h5"
        t0 = time.perf_counter()
        write_pack(pack, grid, n_trials, args.image_size)
        print(f"synthetic pack: {n_trials} trials, {pack.stat().st_size / 2**20:.0f} MiB "
              f"written in {time.perf_counter() - t0:.1f} s")
        ceiling = results[cuda]
        for workers in sorted({0, args.workers}) if cuda else [args.workers]:
            batches = loader_batches(pack, batch, workers)
            alone = time_steps(lambda b: b["beta"].to(device), batches, 4 * (steps + warmup), 2,
                               device)
            seconds = time_steps(mem_step, batches, steps, warmup, device)
            print(f"real loader ({workers} workers): alone {batch / alone:.1f} samples/s "
                  f"= {ceiling / alone:.0f}× what the model consumes; training from it "
                  f"{batch / seconds:.3g} samples/s = {ceiling / seconds:.2f} × in-memory")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
