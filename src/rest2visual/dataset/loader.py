"""PyTorch access to a triplet pack: dataset, loader and mask ↔ volume scatter.

A sample is one packed trial: the subject-session's rest z-map and the trial's
evoked beta as in-mask vectors (n_vox,), and the image (3, S, S) uint8 or its
cached embedding. Vectors leave the CPU small (float16 betas, ~0.5 MB a trial
at 2 mm) and become volumes on the accelerator with :class:`VolumeScatter`.

Each process opens the HDF5 file itself, on first use (h5py handles must not
cross ``fork``), so ``num_workers`` DataLoader workers read in parallel with
one handle each.
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

__all__ = ["TripletDataset", "VolumeScatter", "make_loader", "seed_worker", "split_rows"]


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


class TripletDataset(Dataset):
    """(rest map, image, beta) triplets of the pack ``pack_path`` at ``rows`` of /trials.

    ``rows``: indices into /trials, e.g. ``split_rows(pack, "paper.csv", "train")``
    (default: every trial). A sample is a dict: ``rest`` float32 (n_vox,) PCC z,
    ``beta`` float16 (n_vox,) % signal change, ``image`` uint8 (3, S, S) — or
    ``embedding`` float32 (C,) when ``embeddings_path`` is given — and ``row``.
    Rest maps are few (one per session) and cached per process after first read.
    """

    def __init__(self, pack_path, rows: np.ndarray | None = None, *, embeddings_path=None):
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
        self._rest_cache: dict[int, torch.Tensor] = {}

    def __getstate__(self):
        return {**self.__dict__, "_rest_cache": {}}

    def __len__(self) -> int:
        return len(self.rows)

    def _rest(self, rest_row: int) -> torch.Tensor:
        if rest_row not in self._rest_cache:
            self._rest_cache[rest_row] = torch.from_numpy(self.pack.h5["rest_maps"][rest_row])
        return self._rest_cache[rest_row]

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        h5 = self.pack.h5
        sample = {"rest": self._rest(int(self.rest_row[row])),
                  "beta": torch.from_numpy(h5["betas"][row]), "row": row}
        image_row = int(self.image_row[row])
        if self.embeddings is not None:
            sample["embedding"] = torch.from_numpy(self.embeddings[image_row])
        else:
            sample["image"] = torch.from_numpy(
                np.ascontiguousarray(h5["images"][image_row].transpose(2, 0, 1)))
        return sample


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
