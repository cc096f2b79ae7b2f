"""Benchmark: triplet-pack size, write throughput and loader random access at full 2 mm size.

Synthetic data on the real paper grid: the MNI152 brain mask at 2 mm (FSL
91×109×91, ~235k in-mask voxels), ``--sessions`` × ``--trials`` trials
(default 8 × 650 = 5,200), random betas (float32, % signal change scale),
random rest maps and ``--images`` random images at ``--image-size`` pixels.
Arrays are fed straight into :func:`rest2visual.dataset.pack.write_pack` (the
same streaming writer ``rest2visual pack`` uses, in blocks of ~64 MB of
float32 rows), so input-file decoding is not part of the numbers.

Printed, each against its named peer:

- size: the pack vs the same betas as one uncompressed float32 full-grid 4D
  NIfTI (.nii: 91·109·91·4 bytes × trials + 352-byte header). Target ≤ 15 %.
- write: pack MB/s (write_pack + fsync, no validation) vs the disk's sequential
  write of the same number of bytes (np.tofile of the float16 betas, ~300 MB a
  call, + fsync), in the same run. Target ≥ 50 %.
- compression: the first ``--compression-trials`` trials packed with none / lzf /
  gzip (level 4, h5py's default): size and write MB/s. Random betas are a
  worst case for compression; real betas are noisy float16 too.
- read: TripletDataset samples/s in shuffled order (batch 32) with 0, 1, 2
  workers vs reading the same number of samples' bytes of /betas sequentially
  (h5py, 256-row slices), as samples/s. Target ≥ 50 %.

Each comparison runs ``--repeats`` times, alternating with its peer, because
other jobs on a shared machine make single runs drift; every run and the
medians are printed. The page cache is dropped (``/proc/sys/vm/drop_caches``,
needs root) before each write and read measurement; if that fails the numbers
are warm-cache and the script says so. Run: ``python benchmarks/pack_io.py
[--dir /tmp/x]``. Disk use ≈ 2 × the pack size (~2.5 GB each at the
defaults); cleaned up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

NIFTI_HEADER = 352  # bytes before the data of a single-file .nii


def drop_caches() -> bool:
    """Flush dirty pages and drop the page cache; False if not permitted."""
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sequential_write(path: Path, n_bytes: int, data: np.ndarray) -> float:
    """Seconds to write ``n_bytes`` of ``data`` (repeated) with np.tofile, then fsync.

    ``data`` is the pack's own float16 betas, so that a storage layer that
    compresses or deduplicates sees the same kind of bytes in both writes.
    """
    buf = np.ascontiguousarray(data).view(np.uint8).ravel()
    t = time.perf_counter()
    with open(path, "wb") as f:
        left = n_bytes
        while left > 0:
            buf[:min(left, buf.size)].tofile(f)
            left -= buf.size
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t


def synthetic_inputs(grid, n_sessions: int, n_trials: int, n_images: int, image_size: int,
                     seed: int = 0):
    """Trial table, rest index, image ids, and the (reused) arrays to stream."""
    import pandas as pd

    from rest2visual.dataset.pack import TRIAL_COLUMNS

    rng = np.random.default_rng(seed)
    sessions = [(1 + i // 4, 21 + i % 4) for i in range(n_sessions)]
    t = pd.DataFrame([(sub, ses, trial, r) for r, (sub, ses) in enumerate(sessions)
                      for trial in range(1, n_trials + 1)],
                     columns=["subject", "session", "trial", "rest_row"])
    t["nsd_id"] = rng.integers(0, n_images, len(t))
    t["shared"], t["repeat"] = t["nsd_id"] < n_images // 10, 0
    ids = np.unique(t["nsd_id"])
    t["image_row"] = np.searchsorted(ids, t["nsd_id"])
    rest_index = pd.DataFrame(sessions, columns=["subject", "session"])
    betas = rng.standard_normal((n_trials, grid.n_voxels), dtype=np.float32) * 2.0
    images = rng.integers(0, 256, (256, image_size, image_size, 3), dtype=np.uint8)
    rest = rng.standard_normal((len(sessions), grid.n_voxels), dtype=np.float32)
    return t[list(TRIAL_COLUMNS)], rest_index, ids, betas, images, rest


def write(path, grid, inputs, image_size, compression=None, n_rows=None) -> float:
    """Seconds for write_pack (no validation) + fsync of the result (first n_rows trials)."""
    from rest2visual.dataset.pack import _BLOCK_BYTES, write_pack

    trials, rest_index, ids, betas, images, rest = inputs
    if n_rows is not None:  # the first trials of the first session only
        trials = trials[:min(n_rows, len(betas))]
        rest_index, rest = rest_index[:1], rest[:1]
        ids = np.unique(trials.nsd_id)
        trials = trials.assign(image_row=np.searchsorted(ids, trials.nsd_id))
    step = _BLOCK_BYTES // (4 * grid.n_voxels)

    def beta_blocks():
        left = len(trials)
        while left > 0:  # the same session's betas again for every session
            for a in range(0, min(left, len(betas)), step):
                rows = betas[a:min(a + step, left)]
                yield "synthetic", np.arange(a, a + len(rows)) + 1, rows
            left -= len(betas)

    def image_blocks():
        for a in range(0, len(ids), len(images)):
            yield a, images[:min(len(images), len(ids) - a)]

    t = time.perf_counter()
    write_pack(path, grid=grid, trials=trials, rest_index=rest_index, image_nsd_ids=ids,
               image_size=image_size, rest_vectors=iter(rest), image_blocks=image_blocks(),
               beta_blocks=beta_blocks(), compression=compression, validate=False)
    fsync(path)
    return time.perf_counter() - t


def sequential_read(path, n_bytes: int) -> float:
    """Seconds to read ≥ n_bytes of /betas in 256-row slices (h5py)."""
    import h5py

    t = time.perf_counter()
    with h5py.File(path, "r") as h5:
        ds, done, a = h5["betas"], 0, 0
        while done < n_bytes and a < ds.shape[0]:
            done += ds[a:a + 256].nbytes
            a += 256
    return time.perf_counter() - t


def random_read(path, n_samples: int, num_workers: int, seed: int) -> tuple[float, int]:
    """(seconds, samples) to load ≥ n_samples shuffled triplets, after the first batch."""
    from rest2visual.model.loader import TripletDataset, make_loader

    loader = make_loader(TripletDataset(path), 32, shuffle=True, num_workers=num_workers,
                         seed=seed, pin_memory=False)
    it = iter(loader)
    next(it)  # worker start-up is a once-per-run cost, not a per-sample one
    t, done = time.perf_counter(), 0
    for batch in it:
        done += len(batch["row"])
        if done >= n_samples:
            break
    seconds = time.perf_counter() - t
    del it, loader
    return seconds, done


def _runs(values) -> str:
    """'a, b (median m)' for a list of per-run rates."""
    runs = ", ".join(f"{v:.0f}" for v in values)
    return f"{runs} (median {np.median(values):.0f})" if len(values) > 1 else runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--trials", type=int, default=650)
    parser.add_argument("--images", type=int, default=3000, help="distinct NSD ids drawn from")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1500, help="random samples per read run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement")
    parser.add_argument("--compression-trials", type=int, default=150)
    args = parser.parse_args(argv)

    import torch  # noqa: F401  (to_float16 imports it on first use: a one-off, not throughput)

    from rest2visual.dataset.pack import to_float16
    from rest2visual.dataset.validate import validate_pack
    from rest2visual.maskvec import MaskedGrid
    from rest2visual.preprocess.template import mni_brain_mask

    scratch = Path(tempfile.mkdtemp(prefix="pack_io-", dir=args.dir))
    try:
        grid = MaskedGrid.from_img(mni_brain_mask(2))
        inputs = synthetic_inputs(grid, args.sessions, args.trials, args.images, args.image_size)
        n_trials = len(inputs[0])
        print(f"grid 2 mm {grid.shape}, {grid.n_voxels} in-mask voxels, {n_trials} trials, "
              f"{len(inputs[2])} images at {args.image_size} px")
        cold = drop_caches()
        print("page cache dropped before each measurement" if cold else
              "could not drop the page cache: all numbers are WARM-cache")

        # peers alternate (peer, ours, peer, ours) so that drifting load on a
        # shared machine hits both; each line prints every run and the medians
        pack, dd_path = scratch / "pack.h5", scratch / "dd.bin"
        half_betas = to_float16(inputs[3])
        dd_s, pack_s = [], []
        for _ in range(args.repeats):
            drop_caches()
            pack_s.append(write(pack, grid, inputs, args.image_size))
            size = pack.stat().st_size
            drop_caches()
            dd_s.append(sequential_write(dd_path, size, half_betas))
            dd_path.unlink()
        nifti = int(np.prod(grid.shape)) * 4 * n_trials + NIFTI_HEADER
        betas_bytes = n_trials * grid.n_voxels * 2
        print(f"\nsize: pack {size / 1e9:.3f} GB (betas {betas_bytes / 1e9:.3f} GB) vs float32 "
              f"full-grid .nii (uncompressed) {nifti / 1e9:.3f} GB = {100 * size / nifti:.1f} % "
              f"(target <= 15 %)")
        ours, peer = [size / s / 1e6 for s in pack_s], [size / s / 1e6 for s in dd_s]
        print(f"write: pack {_runs(ours)} MB/s vs sequential np.tofile+fsync {_runs(peer)} MB/s"
              f" = {100 * np.median(ours) / np.median(peer):.0f} % (target >= 50 %)")
        drop_caches()
        t = time.perf_counter()
        problems = validate_pack(pack)
        print(f"validate_pack: {time.perf_counter() - t:.1f} s (cold), {len(problems)} problems")

        print(f"\ncompression (first {args.compression_trials} trials; random betas are a "
              "worst case for compression):")
        for comp in (None, "lzf", "gzip"):
            part = scratch / f"part-{comp}.h5"
            drop_caches()
            s = write(part, grid, inputs, args.image_size, compression=comp,
                      n_rows=args.compression_trials)
            b = part.stat().st_size
            print(f"  {str(comp):>5}: {b / 1e6:7.1f} MB, {b / s / 1e6:6.0f} MB/s written")
            part.unlink()

        per_sample = grid.n_voxels * 2 + args.image_size**2 * 3
        print(f"\nread ({per_sample / 1e3:.0f} kB of beta + image per sample from disk; rest "
              "maps cached per worker):")
        for workers in (0, 1, 2):
            ours, peer = [], []
            for rep in range(args.repeats):
                drop_caches()
                s_seq = sequential_read(pack, args.samples * per_sample)
                drop_caches()
                s_rand, n = random_read(pack, args.samples, workers, seed=rep)
                ours.append(n / s_rand)
                peer.append(args.samples / s_seq)
            print(f"  workers={workers}: random {_runs(ours)} samples/s vs sequential "
                  f"{_runs(peer)} samples' bytes/s = {100 * np.median(ours) / np.median(peer):.0f}"
                  f" % (target >= 50 %)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
