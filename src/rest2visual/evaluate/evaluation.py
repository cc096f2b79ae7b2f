"""One protocol's evaluation: the pack, the model, the test/train rows and regions, every
method's predictions and their scores (see :mod:`rest2visual.evaluate.run` for the methods
and the rules of what is scored)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from rest2visual.checks import InputError, check_affine, load_nifti
from rest2visual.dataset.pack import Pack
from rest2visual.dataset.splits import split_rows
from rest2visual.evaluate import baselines, metrics, noise_ceiling
from rest2visual.evaluate.blocks import _ROWS_PER_READ, images_of, read_rows


@dataclass
class Evaluation:
    """One protocol's evaluation: pack, model, rows and regions; predictions computed on demand."""

    pack: Pack
    model: object  # rest2visual.model.predict.LoadedModel
    test: np.ndarray
    train: np.ndarray
    labels: np.ndarray  # (V,) atlas label of each pack voxel, 0 outside V1..V5
    ridge_alphas: np.ndarray
    ssim_window: int = 7
    seed: int = 0
    batch_size: int = 8
    max_fit_rows: int | None = None
    meta: dict = field(default_factory=dict)

    @cached_property
    def trials(self) -> pd.DataFrame:
        return self.pack.trials

    @cached_property
    def measured(self) -> np.ndarray:
        """(N test, V) float32 measured betas of the test rows — the only betas scored."""
        return read_rows(self.pack.h5["betas"], self.test)

    @cached_property
    def regions(self) -> dict[str, np.ndarray]:
        """Evaluation regions as boolean (V,) selections: FB, VC, then V1..V5."""
        out = {"FB": np.ones(len(self.labels), bool), "VC": self.labels > 0}
        out.update({name: self.labels == label for label, name in metrics.VISUAL_ROIS.items()})
        return out

    def predict(self, rows, rest=None, images=None) -> np.ndarray:
        """The model's (N, V) predictions for pack ``rows`` (their rest maps and images unless given)."""
        from rest2visual.model.predict import predict_vectors

        trials = self.trials.loc[rows]
        if rest is None:
            rest = baselines.resting_baseline(self.pack.h5["rest_maps"], trials["rest_row"].to_numpy())
        if images is None:
            images = images_of(self.pack, trials["image_row"].to_numpy())
        return predict_vectors(self.model, rest, images, batch_size=self.batch_size)

    @cached_property
    def image_features(self) -> np.ndarray:
        """(n_images, p) features of every pack image for the ridge baseline and the decoding probe."""
        import torch

        images = self.pack.h5["images"]
        net = self.model.net
        frozen = net.freeze_image_encoder
        self.meta["image_features"] = ("the model's frozen image embeddings" if frozen
                                       else "pixels (16×16×3, baselines.pixel_features)")
        blocks = []
        for start in range(0, len(images), _ROWS_PER_READ):
            block = images[start:start + _ROWS_PER_READ]
            if not frozen:
                blocks.append(baselines.pixel_features(block))
                continue
            with torch.no_grad():
                x = torch.from_numpy(block).to(self.model.device).permute(0, 3, 1, 2).contiguous()
                blocks.append(net.image_features(x).float().cpu().numpy())
        return np.concatenate(blocks)

    @cached_property
    def fit_rows(self) -> np.ndarray:
        """Train rows that fit the ridge model and the decoder: all, or a seeded random subset of
        ``max_fit_rows`` (their betas are held in memory: rows × voxels × 2 bytes)."""
        if self.max_fit_rows is None or len(self.train) <= self.max_fit_rows:
            return self.train
        rng = np.random.default_rng([self.seed, 2])
        return np.sort(rng.choice(self.train, self.max_fit_rows, replace=False))

    def features(self, rows) -> np.ndarray:
        return self.image_features[self.trials.loc[rows, "image_row"].to_numpy()]

    def predictions(self):
        """Yield (method key, (N test, V) float32 prediction) for every method of METHODS."""
        test = self.trials.loc[self.test]
        n, v = self.measured.shape
        rng = np.random.default_rng([self.seed, 1])
        rest = baselines.resting_baseline(self.pack.h5["rest_maps"], test["rest_row"].to_numpy())
        yield "random", baselines.random_baseline(n, v, seed=self.seed)
        yield "resting", rest
        yield "group_mean", np.asarray(baselines.group_mean_baseline(self.pack.h5["betas"], n, self.train))
        train_betas = read_rows(self.pack.h5["betas"], self.fit_rows, dtype=np.float16)
        ridge, fit = baselines.ridge_encoding_baseline(
            self.features(self.fit_rows), train_betas, self.features(self.test), alphas=self.ridge_alphas,
            groups=self.trials.loc[self.fit_rows, "nsd_id"].to_numpy(), seed=self.seed)
        del train_betas
        self.meta["ridge_alpha_at_grid_edges"] = fit.edge_fraction
        yield "ridge", ridge
        images = images_of(self.pack, test["image_row"].to_numpy())
        yield "noise_image", self.predict(self.test, rest=rest, images=baselines.noise_images(images, rng))
        yield "noise_rest", self.predict(self.test, rest=baselines.noise_maps(rest, rng), images=images)
        yield "rest2visual", self.predict(self.test, rest=rest, images=images)

    def scores(self, method: str, pred: np.ndarray) -> pd.DataFrame:
        """Long table: Pearson, MAE, SSIM (per sample) and RSA (per set) on FB, VC and V1..V5.

        Every region by the same code and the same SSIM convention
        (:data:`~rest2visual.evaluate.metrics.SSIM_CONVENTION`); a visual area with
        fewer than 2 voxels on a coarse grid is left out (Table 3 then shows "–").
        """
        grid, win = self.pack.grid, self.ssim_window
        frames = [metrics.region_scores(pred, self.measured, grid=grid, region=self.regions[region],
                                        win_size=win, labels={"method": method, "region": region})
                  for region in ("FB", "VC")]
        frames.append(metrics.per_roi(pred, self.measured, self.labels, grid=grid, win_size=win,
                                      labels_columns={"method": method}))
        out = pd.concat(frames, ignore_index=True)
        out.insert(4, "row", np.where(out["sample"] >= 0, self.test[out["sample"].clip(0)], -1))
        return out

    def noise_normalized(self, method: str, pred: np.ndarray) -> list[dict]:
        """Per subject and region: noise-normalized voxelwise accuracy (needs /ncsnr in the pack)."""
        out = []
        subjects = self.trials.loc[self.test, "subject"].to_numpy()
        for subject in np.unique(subjects):
            ncsnr = self.pack.ncsnr(int(subject))
            mine = subjects == subject
            if ncsnr is None or mine.sum() < 3:
                continue
            for region in ("FB", "VC"):
                sel = self.regions[region]
                r = metrics.pearson_voxels(pred[mine][:, sel], self.measured[mine][:, sel])
                ok = np.isfinite(r)  # a method constant across trials has no voxelwise r
                nc = noise_ceiling.noise_ceiling(ncsnr[sel][ok])
                values = noise_ceiling.noise_normalized_accuracy(r[ok], nc) if ok.any() else []
                out.append({"method": method, "region": region, "subject": int(subject),
                            **noise_ceiling.summarize_noise_normalized(values)})
        return out


def atlas_labels(atlas_path, pack: Pack) -> np.ndarray:
    """(V,) ROI label of each pack voxel from the atlas NIfTI, which must share the pack's grid."""
    grid = pack.grid
    img = load_nifti(atlas_path, ndim=3, shape=grid.shape, affine=grid.affine, what="visual ROI atlas")
    labels = grid.to_vectors(np.rint(np.asarray(img.dataobj)).astype(np.int16))
    labels[(labels < 0) | (labels > max(metrics.VISUAL_ROIS))] = 0
    if (labels > 0).sum() < 2:
        raise InputError(f"{atlas_path}: fewer than 2 voxels labelled 1..5 inside the pack's brain mask")
    return labels


def load_evaluation(args) -> Evaluation:
    from rest2visual.model.distributed import resolve_device
    from rest2visual.model.predict import load_model

    pack = Pack(args.pack)
    model = load_model(args.model, resolve_device(args.device))
    if model.grid.shape != pack.grid.shape or not np.array_equal(model.grid.mask, pack.grid.mask):
        raise InputError(f"{args.model}: the model's brain mask {model.grid.shape} differs from the "
                         f"pack's {pack.grid.shape} ({args.pack}); evaluate a model trained on this pack")
    check_affine(model.grid.affine, pack.grid.affine, args.model)
    lo, hi, n = args.ridge_alphas
    test, train = split_rows(pack, args.split, "test"), split_rows(pack, args.split, "train")
    return Evaluation(pack, model, test, train,
                      atlas_labels(args.atlas, pack), np.logspace(lo, hi, int(n)), args.ssim_window,
                      args.seed, args.batch_size, args.max_fit_rows,
                      meta={"protocol": args.protocol, "split": str(args.split)})
