"""TripletDataset, make_loader and VolumeScatter on a small synthetic pack."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from rest2visual.checks import InputError
from rest2visual.model.loader import (TripletDataset, VolumeScatter, make_loader,
                                        split_rows)
from rest2visual.dataset.pack import TRIAL_COLUMNS, Pack, write_pack
from rest2visual.dataset.splits import make_splits, write_splits
from rest2visual.maskvec import MaskedGrid


def synthetic_trials(subjects=(1, 2, 3), sessions=(21, 22), tps=12, n_images=30, seed=0):
    """A trial table in pack order: (subject, session, trial) with images and repeats."""
    rng = np.random.default_rng(seed)
    rows = []
    for rest_row, (sub, ses) in enumerate((s, t) for s in subjects for t in sessions):
        for trial in range(1, tps + 1):
            rows.append((sub, ses, trial, int(rng.integers(n_images)), rest_row))
    t = pd.DataFrame(rows, columns=["subject", "session", "trial", "nsd_id", "rest_row"])
    t["shared"] = t["nsd_id"] < 8
    t["repeat"] = t.groupby(["subject", "nsd_id"]).cumcount().clip(upper=2)
    ids = np.unique(t["nsd_id"])
    t["image_row"] = np.searchsorted(ids, t["nsd_id"])
    rest_index = t[["subject", "session"]].drop_duplicates().reset_index(drop=True)
    return t[list(TRIAL_COLUMNS)], rest_index, ids


def write_synthetic_pack(path, *, shape=(10, 12, 10), image_size=8, seed=0, compression=None,
                         **table) -> dict:
    """A valid pack with random values, written through write_pack; returns its arrays."""
    rng = np.random.default_rng(seed)
    trials, rest_index, ids = synthetic_trials(seed=seed, **table)
    mask = np.zeros(shape, bool)
    mask[2:-2, 1:-3, 3:-1] = True
    mask[4, 5, 5] = False
    grid = MaskedGrid(mask, np.diag([-4.0, 4.0, 4.0, 1.0]))
    rest = rng.normal(size=(len(rest_index), grid.n_voxels)).astype(np.float32)
    betas = rng.normal(size=(len(trials), grid.n_voxels)).astype(np.float32)
    images = rng.integers(0, 256, (len(ids), image_size, image_size, 3), dtype=np.uint8)
    write_pack(path, grid=grid, trials=trials, rest_index=rest_index, image_nsd_ids=ids,
               image_size=image_size, rest_vectors=iter(rest), image_blocks=[(0, images)],
               beta_blocks=[("synthetic", trials.trial[:10], betas[:10]),
                            ("synthetic", trials.trial[10:], betas[10:])],
               compression=compression)
    return {"grid": grid, "trials": trials, "rest": rest, "betas": betas.astype(np.float16),
            "images": images, "ids": ids}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    path = tmp_path_factory.mktemp("pack") / "pack.h5"
    return path, write_synthetic_pack(path)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_shapes_dtypes_and_values(pack, num_workers):
    path, ref = pack
    rows = np.arange(3, 40, 2)
    ds = TripletDataset(path, rows)
    assert len(ds) == len(rows)
    ds[0]  # opens the file in this process first: workers must not reuse the handle
    n_vox, s = ref["grid"].n_voxels, 8
    loader = make_loader(ds, batch_size=5, shuffle=True, num_workers=num_workers, seed=3)
    seen = []
    for batch in loader:
        b = len(batch["row"])
        assert batch["rest"].shape == (b, n_vox) and batch["rest"].dtype == torch.float16
        assert batch["beta"].shape == (b, n_vox) and batch["beta"].dtype == torch.float16
        assert batch["image"].shape == (b, 3, s, s) and batch["image"].dtype == torch.uint8
        for j, row in enumerate(batch["row"].tolist()):
            t = ref["trials"].iloc[row]
            assert np.array_equal(batch["beta"][j].numpy(), ref["betas"][row])
            rest = ref["rest"][t.rest_row].astype(np.float16)
            assert np.array_equal(batch["rest"][j].numpy(), rest)
            assert np.array_equal(batch["image"][j].numpy().transpose(1, 2, 0),
                                  ref["images"][t.image_row])
        seen += batch["row"].tolist()
    assert sorted(seen) == rows.tolist()
    # the order depends on the seed only, not on the number of workers
    again = [r for b in make_loader(ds, 5, shuffle=True, num_workers=0, seed=3) for r in b["row"]]
    other = [r for b in make_loader(ds, 5, shuffle=True, num_workers=0, seed=4) for r in b["row"]]
    assert [int(r) for r in again] == seen and [int(r) for r in other] != seen


def test_dataset_pickles_without_its_handle(pack):
    path, ref = pack
    ds = TripletDataset(path, rest_dtype=torch.float32)
    first = ds[0]
    assert np.array_equal(first["rest"].numpy(), ref["rest"][ref["trials"].rest_row.iloc[0]])
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.pack._h5 is None and clone._open is None
    assert torch.equal(clone[0]["beta"], first["beta"])
    with pytest.raises(InputError, match="rows must lie"):
        TripletDataset(path, np.array([len(ref["trials"])]))


def test_compressed_pack_reads_the_same(pack, tmp_path):
    """The raw-chunk fast path and h5py's reader (used for a compressed pack) agree."""
    path, ref = pack
    lzf = tmp_path / "lzf.h5"
    write_synthetic_pack(lzf, compression="lzf")
    with Pack(lzf) as p:
        assert p.h5["betas"].compression == "lzf"
    fast, slow = TripletDataset(path), TripletDataset(lzf)
    for i in (0, 5, len(fast) - 1):
        a, b = fast[i], slow[i]
        assert all(torch.equal(a[k], b[k]) for k in ("rest", "beta", "image"))


def test_rows_from_a_split_file(pack, tmp_path):
    path, ref = pack
    with Pack(path) as p:
        splits = make_splits(p.trials, seed=0, n_test=6, val_fraction=0.2)
    paper = write_splits(splits, tmp_path)[0]
    train = split_rows(path, paper, "train")
    expected = np.flatnonzero(splits["paper"]["split"].to_numpy() == "train")
    assert np.array_equal(train, expected)
    assert len(TripletDataset(path, train)) == len(expected)


def test_embeddings_replace_images(pack, tmp_path):
    path, ref = pack
    rng = np.random.default_rng(1)
    ids = np.concatenate([ref["ids"], [500, 501]])[::-1]  # another order, extra images
    emb = rng.normal(size=(len(ids), 7)).astype(np.float32)
    emb_path = tmp_path / "emb.h5"
    with h5py.File(emb_path, "w") as h5:
        h5["embeddings"], h5["nsd_ids"] = emb, ids
    ds = TripletDataset(path, embeddings_path=emb_path)
    for i in (0, 17):
        sample = ds[i]
        assert "image" not in sample and sample["embedding"].dtype == torch.float32
        want = emb[ids == ref["trials"].nsd_id.iloc[i]][0]
        assert np.array_equal(sample["embedding"].numpy(), want)
    with h5py.File(emb_path, "w") as h5:
        h5["embeddings"], h5["nsd_ids"] = emb[:-2], ids[:-2]  # drops two packed ids
    with pytest.raises(InputError, match="no embedding for"):
        TripletDataset(path, embeddings_path=emb_path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_volume_scatter_round_trip(pack, dtype):
    path, ref = pack
    grid = ref["grid"]
    scatter = VolumeScatter(grid, pad_to=8)
    assert scatter.padded_shape == (16, 16, 16)
    vectors = torch.from_numpy(ref["betas"][:4]).to(dtype)
    volumes = scatter(vectors)
    assert volumes.shape == (4, 1, 16, 16, 16) and volumes.dtype == dtype
    assert torch.equal(scatter.gather(volumes), vectors)
    # the grid sits at `offset` inside the padded box, zeros elsewhere
    ox, oy, oz = scatter.offset
    x, y, z = grid.shape
    inner = volumes[0, 0, ox:ox + x, oy:oy + y, oz:oz + z].float().numpy()
    assert np.array_equal(inner, grid.to_volume(vectors[0].float().numpy()))
    outside = volumes[0, 0].clone()
    outside[ox:ox + x, oy:oy + y, oz:oz + z] = 0
    assert not outside.any()
    assert int(scatter.mask_volume().sum()) == grid.n_voxels
    assert "index" not in scatter.state_dict()
    with pytest.raises(ValueError, match="expected vectors"):
        scatter(vectors[:, :-1])
    with pytest.raises(ValueError, match="expected volumes"):
        scatter.gather(volumes[..., :-1])
    plain = VolumeScatter(grid.mask)
    assert plain.padded_shape == grid.shape and plain.offset == (0, 0, 0)
