"""PyTorch access to a triplet pack: dataset, loader and mask ↔ volume scatter.

A sample is one packed trial: the subject-session's rest z-map and the trial's
evoked beta as in-mask vectors (n_vox,), and the image (3, S, S) uint8 or its
cached embedding. Vectors leave the CPU small (float16 betas, ~0.5 MB a trial
at 2 mm) and become volumes on the accelerator with :class:`VolumeScatter`.

Each process opens the pack itself, on first use (h5py handles must not
cross ``fork``), so ``num_workers`` DataLoader workers read in parallel with
one handle each; within a worker a batch's rows are read by a few threads at
once (:class:`RowReader`), which is what random access needs to keep a disk
busy. Measured on the 2 mm grid: benchmarks/pack_io.py.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rest2visual.checks import InputError, require_file
from rest2visual.dataset.pack import Pack
from rest2visual.dataset.splits import split_rows
from rest2visual.maskvec import MaskedGrid

__all__ = ["TripletDataset", "VolumeScatter", "collate_triplets", "make_loader", "seed_worker",
           "split_rows"]


def _load_embeddings(path, image_nsd_ids: np.ndarray) -> np.ndarray:
    """(n_images, C) float32 embeddings in the pack's /images row order.

    The embeddings file is HDF5 with ``embeddings`` (n, C) float32 and
    ``nsd_ids`` (n,) 0-based 73k ids; it must cover every packed image.
    """
    import h5py

    path = require_file(path, "image embeddings file")
    with h5py.File(path, "r") as h5:
        if "embeddings" not in h5 or "nsd_ids" not in h5:
            raise InputError(f"{path}: expected datasets 'embeddings' (n, C) and 'nsd_ids' (n,)")
        emb, ids = h5["embeddings"][()], h5["nsd_ids"][()]
    if emb.ndim != 2 or emb.shape[0] != ids.shape[0]:
        raise InputError(f"{path}: 'embeddings' {emb.shape} does not match 'nsd_ids' {ids.shape}")
    order = np.argsort(ids, kind="stable")
    pos = np.clip(np.searchsorted(ids[order], image_nsd_ids), 0, len(ids) - 1)
    found = ids[order][pos] == image_nsd_ids
    if not found.all():
        raise InputError(f"{path}: no embedding for {int((~found).sum())} packed images, "
                         f"e.g. nsd_id {image_nsd_ids[~found][:5].tolist()}")
    return np.ascontiguousarray(emb[order][pos], dtype=np.float32)


def _pread_into(fd: int, buf: np.ndarray, offset: int) -> None:
    view, done = memoryview(buf), 0
    while done < len(view):  # a regular file may still return short reads
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise OSError(f"unexpected end of file reading {len(view)} bytes at {offset}")
        done += n


class RowReader:
    """Rows ``ds[row]`` of one pack dataset as numpy arrays, in the current process.

    The pack stores /betas, /rest_maps and /images uncompressed in one-row
    chunks, so a row is one contiguous run of bytes in the file: it is read
    with ``os.preadv`` at the chunk's file offset (asked of HDF5 once per row).
    That skips HDF5's per-read selection work and, unlike h5py calls (which one
    global lock serialises), lets :meth:`read_many` keep several reads in flight
    from a thread pool — what a disk or network file system needs to approach
    its throughput on random access. Other layouts (e.g. a compressed pack) are
    read through h5py.
    """

    def __init__(self, ds, fd: int):
        self.ds, self.fd, self.shape = ds, fd, tuple(ds.shape[1:])
        self.raw = (ds.chunks == (1, *self.shape) and ds.compression is None
                    and not ds.shuffle and not ds.fletcher32 and ds.scaleoffset is None)
        self.n_bytes = int(np.prod(self.shape)) * ds.dtype.itemsize
        self._offsets = np.full(ds.shape[0], -1, dtype=np.int64)

    def _offset(self, row: int) -> int:
        if self._offsets[row] < 0:
            info = self.ds.id.get_chunk_info_by_coord((row,) + (0,) * len(self.shape))
            self._offsets[row] = info.byte_offset
        return int(self._offsets[row])

    def _read_at(self, offset: int) -> np.ndarray:
        buf = np.empty(self.n_bytes, dtype=np.uint8)
        _pread_into(self.fd, buf, offset)
        return buf.view(self.ds.dtype).reshape(self.shape)

    def read(self, row: int) -> np.ndarray:
        return self._read_at(self._offset(int(row))) if self.raw else self.ds[int(row)]

    def read_many(self, rows, pool=None) -> list[np.ndarray]:
        """The rows in the given order; concurrently on ``pool`` (a ThreadPoolExecutor)."""
        if not self.raw or pool is None or len(rows) < 2:
            return [self.read(r) for r in rows]
        return list(pool.map(self._read_at, [self._offset(int(r)) for r in rows]))


class TripletDataset(Dataset):
    """(rest map, image, beta) triplets of the pack ``pack_path`` at ``rows`` of /trials.

    ``rows``: indices into /trials, e.g. ``split_rows(pack, "paper.csv", "train")``
    (default: every trial). A sample is a dict: ``rest`` (n_vox,) PCC z in
    ``rest_dtype``, ``beta`` float16 (n_vox,) % signal change, ``image`` uint8
    (3, S, S) — or ``embedding`` float32 (C,) when ``embeddings_path`` is given —
    and ``row``. Rest maps are few (one per session) and cached per process
    after first read. They are stored float32 but travel as float16 by default
    (relative rounding ≤ 2**-11 on z-scores): a 2 mm batch of 32 then carries
    15 MB instead of 30 MB of rest maps from a worker to the training process,
    which measured 1.5–2× more samples/s with workers on 2 busy cores.
    A DataLoader fetches a batch through :meth:`__getitems__`, whose betas and
    images are read ``read_threads`` at a time.
    """

    def __init__(self, pack_path, rows: np.ndarray | None = None, *, embeddings_path=None,
                 rest_dtype: torch.dtype = torch.float16, read_threads: int = 8):
        self.pack = Pack(pack_path)
        with self.pack:  # read the index, then close: workers open their own handles
            trials = self.pack.trials
            self.grid: MaskedGrid = self.pack.grid
            self.image_size = int(self.pack.attrs["image_size"])
            image_nsd_ids = self.pack.image_nsd_ids
        self.rest_row = trials["rest_row"].to_numpy()
        self.image_row = trials["image_row"].to_numpy()
        n = len(trials)
        self.rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n):
            raise InputError(f"{self.pack.path}: rows must lie in 0..{n - 1}")
        self.embeddings = (None if embeddings_path is None
                           else _load_embeddings(embeddings_path, image_nsd_ids))
        self.rest_dtype, self.read_threads = rest_dtype, int(read_threads)
        self._open = None  # (pid, fd, readers, pool) of the process that opened the pack

    def __getstate__(self):
        return {**self.__dict__, "_open": None}

    def _readers(self) -> tuple[dict, object]:
        """This process's readers and thread pool; (re)opened after a fork or unpickling."""
        if self._open is None or self._open[0] != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            h5, fd = self.pack.h5, os.open(self.pack.path, os.O_RDONLY)
            readers = {k: RowReader(h5[k], fd) for k in ("betas", "rest_maps", "images")}
            readers["rest_cache"] = {}
            pool = ThreadPoolExecutor(self.read_threads) if self.read_threads > 1 else None
            self._open = (os.getpid(), fd, readers, pool)
        return self._open[2], self._open[3]

    def close(self) -> None:
        """Close this process's file handles and thread pool (reopened on next use)."""
        if self._open is not None and self._open[0] == os.getpid():
            os.close(self._open[1])
            if self._open[3] is not None:
                self._open[3].shutdown(wait=False)
            self.pack.close()
        self._open = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: os/h5py may already be gone
            pass

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices) -> list[dict]:
        readers, pool = self._readers()
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        betas = readers["betas"].read_many(rows, pool)
        cache = readers["rest_cache"]
        for r in set(self.rest_row[rows].tolist()) - cache.keys():
            cache[r] = torch.from_numpy(readers["rest_maps"].read(r)).to(self.rest_dtype)
        image_rows = self.image_row[rows]
        if self.embeddings is None:
            images = readers["images"].read_many(image_rows, pool)
        samples = []
        for j, row in enumerate(rows.tolist()):
            sample = {"rest": cache[int(self.rest_row[row])],
                      "beta": torch.from_numpy(betas[j]), "row": row}
            if self.embeddings is not None:
                sample["embedding"] = torch.from_numpy(self.embeddings[image_rows[j]])
            else:
                sample["image"] = torch.from_numpy(
                    np.ascontiguousarray(images[j].transpose(2, 0, 1)))
            samples.append(sample)
        return samples

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    first, shape = tensors[0], (len(tensors), *tensors[0].shape)
    if torch.utils.data.get_worker_info() is None:
        out = torch.empty(shape, dtype=first.dtype)
    else:
        # in a worker, stack straight into shared memory, which the batch crosses
        # to the main process through (as default_collate does): saves one copy
        nbytes = len(tensors) * first.numel() * first.element_size()
        storage = first.untyped_storage()._new_shared(nbytes)
        out = torch.empty(0, dtype=first.dtype).set_(storage).view(shape)
    np.stack([t.numpy() for t in tensors], out=out.numpy())
    return out


def collate_triplets(samples: list[dict]) -> dict:
    """Stack samples into a batch: (B, ...) tensors per key, ``row`` an int64 (B,) tensor.

    numpy's single-threaded stack, not torch.stack: on a busy node torch's
    multi-threaded copy of a few 100 kB rows waits on its thread pool (measured
    0.02 s → 0.6 s per batch of 32 at 2 mm with 2 threads on 2 loaded cores).
    """
    batch = {"row": torch.tensor([s["row"] for s in samples], dtype=torch.int64)}
    for key in samples[0]:
        if key != "row":
            batch[key] = _stack([s[key] for s in samples])
    return batch


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from its torch seed (reproducible)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset, batch_size: int, *, shuffle: bool, num_workers: int, seed: int,
                sampler=None, pin_memory: bool | None = None, prefetch_factor: int = 4,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader with reproducible order and per-worker seeds.

    Workers persist across epochs (no re-fork, no re-open of the pack) and each
    keeps ``prefetch_factor`` batches in flight; memory is pinned when CUDA is
    available (unless ``pin_memory`` says otherwise). ``sampler`` (e.g. a
    DistributedSampler) replaces ``shuffle``.
    """
    if sampler is not None and shuffle:
        raise ValueError("give either shuffle=True or a sampler (the sampler sets the order)")
    kwargs = {}
    if num_workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": prefetch_factor}
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
        num_workers=num_workers, worker_init_fn=seed_worker, drop_last=drop_last,
        collate_fn=collate_triplets,
        generator=torch.Generator().manual_seed(int(seed)),
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory, **kwargs,
    )


class VolumeScatter(torch.nn.Module):
    """In-mask vectors (B, n_vox) ↔ volumes (B, 1, X', Y', Z') on the tensors' device.

    ``mask``: (X, Y, Z) bool array or a MaskedGrid. ``pad_to``: pad each axis up
    to a multiple of it (e.g. 2**levels for a U-Net with ``levels`` poolings),
    the grid centred in the padded box (``offset`` voxels before it). Scatter
    and gather are one index operation each, on whatever device the input is.
    """

    def __init__(self, mask, pad_to: int = 1):
        super().__init__()
        mask = mask.mask if isinstance(mask, MaskedGrid) else np.asarray(mask, dtype=bool)
        if mask.ndim != 3:
            raise ValueError(f"mask must be 3D (X, Y, Z), got shape {mask.shape}")
        if pad_to < 1:
            raise ValueError(f"pad_to must be ≥ 1, got {pad_to}")
        self.shape = tuple(mask.shape)
        self.padded_shape = tuple(-(-n // pad_to) * pad_to for n in self.shape)
        self.offset = tuple((p - n) // 2 for p, n in zip(self.padded_shape, self.shape))
        coords = np.nonzero(mask)  # C order: the order of MaskedGrid vectors
        flat = np.ravel_multi_index(tuple(c + o for c, o in zip(coords, self.offset)),
                                    self.padded_shape)
        self.n_voxels = int(flat.size)
        # derived from the mask, so not part of a checkpoint's state_dict
        self.register_buffer("index", torch.from_numpy(flat.astype(np.int64)), persistent=False)

    def _index(self, device) -> torch.Tensor:
        return self.index if self.index.device == device else self.index.to(device)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """(B, n_vox) → (B, 1, X', Y', Z'), zeros outside the mask, same dtype and device."""
        if vectors.ndim != 2 or vectors.shape[1] != self.n_voxels:
            raise ValueError(f"expected vectors (B, {self.n_voxels}), got {tuple(vectors.shape)}")
        out = vectors.new_zeros((vectors.shape[0], int(np.prod(self.padded_shape))))
        out.index_copy_(1, self._index(vectors.device), vectors)
        return out.view(vectors.shape[0], 1, *self.padded_shape)

    def gather(self, volumes: torch.Tensor) -> torch.Tensor:
        """(B, 1, X', Y', Z') → (B, n_vox): the in-mask voxels, padding dropped."""
        if tuple(volumes.shape[2:]) != self.padded_shape or volumes.shape[1] != 1:
            raise ValueError(f"expected volumes (B, 1, {self.padded_shape}), "
                             f"got {tuple(volumes.shape)}")
        return volumes.reshape(volumes.shape[0], -1).index_select(1, self._index(volumes.device))

    def mask_volume(self, device=None) -> torch.Tensor:
        """(1, 1, X', Y', Z') bool: the brain mask in the padded box (e.g. for a masked loss)."""
        flat = torch.zeros(int(np.prod(self.padded_shape)), dtype=torch.bool,
                           device=device or self.index.device)
        flat[self._index(flat.device)] = True
        return flat.view(1, 1, *self.padded_shape)
