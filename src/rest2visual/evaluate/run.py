"""``rest2visual evaluate``: Rest2Visual, baselines and ablations scored on a split's test rows.

``rest2visual evaluate --pack P.h5 --split S.csv --shared shared.csv --model model.pt
--atlas visual_dseg.nii.gz --out-dir results/evaluation/<protocol>``

Methods (each an (N test rows, V voxels) in-mask prediction, all scored by the
same code on the same test rows): Rest2Visual; Random (Gaussian noise);
Resting (the row's rest z-map); Group mean (mean training beta); Ridge
encoding (image features → voxels, fitted on the train rows; features = the
model's image embeddings when its encoder is frozen, else 16×16×3 pixels,
since a trained-from-scratch encoder is part of the model under test);
noise rest (the model with each rest map replaced by Gaussian noise of that
map's mean and SD); noise image (the model with uniform-noise pixels).

Regions: FB (the pack's brain mask) and VC (atlas labels 1..5 within it), plus
V1..V5 for per-ROI Pearson. SSIM is averaged over the whole volume for FB
(outside the mask both maps are 0) and over the region's voxels for VC.
Only test rows are scored; train rows fit the
group mean, and (at most ``--max-fit-rows`` of them) the ridge model and
the decoding probe; val rows are never read.
The one exception is the inter-subject analysis: it needs images that every
subject saw *in the test rows*; when fewer than ``--min-shared-images`` exist
(the unseen-subject protocol has one test subject), it uses the shared images
of all rows, predictions included, and says so in ``intersubject.csv``
(``rows`` column) — those predictions are then partly in-sample.

Outputs in ``--out-dir`` (atomic): scores.csv (long: method, region, metric,
sample, row, value), predictions.h5 (/rows and /methods/<key> float16),
snr_cnr.csv, intersubject.csv, decoding.csv, noise_ceiling.csv (empty
without /ncsnr in the pack), table1.csv/.md, table3.csv/.md, meta.json.
``rest2visual evaluate tables --scores .../<protocol>/scores.csv ... --out-dir
results/tables`` writes Tables 1 and 3 (the ``paper`` protocol) and Table 4
(Rest2Visual per protocol).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError, check_affine, load_nifti
from rest2visual.dataset.pack import Pack
from rest2visual.dataset.splits import split_rows
from rest2visual.evaluate import baselines, decoding, intersubject, metrics, noise_ceiling, stats, tables

#: method key (HDF5 name) → display name, in the paper's table order
METHODS = {"random": "Random", "resting": "Resting", "group_mean": "Group mean",
           "ridge": "Ridge encoding", "noise_image": "noise image", "noise_rest": "noise rest",
           "rest2visual": "Rest2Visual"}
MODEL = METHODS["rest2visual"]
MEASURED = "Measured"
#: rows read from the pack at once (bounded memory whatever the pack's size)
_ROWS_PER_READ = 256


def read_rows(ds, rows, cols=None, dtype=np.float32) -> np.ndarray:
    """``ds[rows][:, cols]`` for increasing ``rows`` of an h5py dataset, read in blocks."""
    rows = np.asarray(rows, dtype=np.int64)
    width = ds.shape[1] if cols is None else int(np.size(np.arange(ds.shape[1])[cols]))
    out = np.empty((len(rows), width), dtype=dtype)
    for start in range(0, len(rows), _ROWS_PER_READ):
        block = ds[rows[start:start + _ROWS_PER_READ].tolist()]
        out[start:start + len(block)] = block if cols is None else block[:, cols]
    return out


def images_of(pack: Pack, image_rows) -> np.ndarray:
    """(N, S, S, 3) uint8 pack images for ``image_rows`` (any order, repeats allowed)."""
    unique, inverse = np.unique(np.asarray(image_rows), return_inverse=True)
    return np.asarray(pack.h5["images"][unique.tolist()])[inverse]


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
        noise_images = rng.integers(0, 256, images.shape, dtype=np.uint8)
        yield "noise_image", self.predict(self.test, rest=rest, images=noise_images)
        noise_rest = (rng.standard_normal(rest.shape, dtype=np.float32) * rest.std(axis=1, keepdims=True)
                      + rest.mean(axis=1, keepdims=True))
        yield "noise_rest", self.predict(self.test, rest=noise_rest, images=images)
        yield "rest2visual", self.predict(self.test, rest=rest, images=images)

    def scores(self, method: str, pred: np.ndarray) -> pd.DataFrame:
        """Long table: Pearson, MAE, SSIM (per sample) and RSA on FB and VC; Pearson on V1..V5."""
        frames = []
        for region in ("FB", "VC"):
            sel = self.regions[region]
            part = metrics.region_scores(pred, self.measured, region=sel,
                                         labels={"method": method, "region": region})
            # FB: the mean over the whole (cropped) volume, as skimage on masked maps (the paper's
            # Random FB SSIM of 0.6 implies it); VC: over its voxels, else the zeros around
            # the small region, equal in both maps, pull every method towards 1
            ssim = metrics.ssim_rows(pred, self.measured, self.pack.grid, region=sel,
                                     over_region=region == "VC", win_size=self.ssim_window)
            frames += [part, pd.DataFrame({"method": method, "region": region, "metric": "ssim",
                                           "sample": np.arange(len(ssim)), "value": ssim})]
        for name in metrics.VISUAL_ROIS.values():
            sel = self.regions[name]
            if sel.sum() >= 2:  # an area can vanish on a coarse grid; Table 3 then shows "–"
                r = metrics.pearson_rows(pred[:, sel], self.measured[:, sel])
                frames.append(pd.DataFrame({"method": method, "region": name, "metric": "pearson",
                                            "sample": np.arange(len(r)), "value": r}))
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


def snr_cnr_table(values: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Mean, SD, SEM of SNR and CNR per source, and the paired two-sided t-test vs Rest2Visual.

    ``values``: source → {'snr': (N,), 'cnr': (N,)} over the same test rows;
    t > 0 when Rest2Visual's mean is the higher one.
    """
    records = []
    for source, by_metric in values.items():
        for metric, v in by_metric.items():
            ref = values[MODEL][metric]
            ok = np.isfinite(v) & np.isfinite(ref)
            t = p = np.nan
            if source != MODEL and ok.sum() >= 2 and np.ptp(v[ok] - ref[ok]) > 0:
                t, p = stats.ttest_two_sided(ref[ok], v[ok], paired=True)
            finite = v[np.isfinite(v)]
            records.append({"source": source, "metric": metric, "mean": finite.mean(), "std": finite.std(),
                            "sem": finite.std(ddof=1) / np.sqrt(finite.size) if finite.size > 1 else np.nan,
                            "n": finite.size, "t_vs_rest2visual": t, "p_vs_rest2visual": p})
    return pd.DataFrame.from_records(records)


def isc_rows(ev: Evaluation, shared_csv, min_images: int, max_images: int) -> tuple[np.ndarray, str]:
    """Rows for the inter-subject analysis and their source ('test', 'all-shared' or 'none').

    Shared test rows when at least ``min_images`` images were seen in them by
    every test subject (≥ 2 subjects), else all shared rows; at most
    ``max_images`` images (the lowest nsd ids; the paper used 125).
    """
    shared = split_rows(ev.trials, shared_csv, "shared")
    for rows, source in ((np.intersect1d(shared, ev.test), "test"), (shared, "all-shared")):
        t = ev.trials.loc[rows]
        if t["subject"].nunique() < 2:
            continue
        seen_by = t.groupby("nsd_id")["subject"].nunique()
        complete = seen_by.index[seen_by == t["subject"].nunique()][:max_images]
        if len(complete) >= min_images or (source == "all-shared" and len(complete) >= 1):
            return rows[t["nsd_id"].isin(complete).to_numpy()], source
    return np.zeros(0, np.int64), "none"


def mean_by_subject_image(x: np.ndarray, subjects, nsd_ids) -> dict[int, np.ndarray]:
    """Rows of ``x`` averaged per (subject, image): subject → (n_images, V), images in nsd_id order."""
    pairs, inverse = np.unique(np.stack([subjects, nsd_ids], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(pairs)))
    means = np.add.reduceat(x[order], starts, axis=0) / np.bincount(inverse)[:, None]
    return {int(s): means[pairs[:, 0] == s] for s in np.unique(pairs[:, 0])}


ISC_COLUMNS = ["region", "kind", "row_subject", "col_subject", "value", "diagonality", "n_images", "rows"]


def intersubject_table(ev: Evaluation, shared_csv, min_images: int = 5,
                       max_images: int = 125) -> pd.DataFrame:
    """ISC matrices (pred vs meas, pred vs pred, meas vs meas) on FB and VC, long format.

    Each subject's maps are averaged over the repeats of each image first.
    ``kind`` pred_vs_meas is M[a, b] = corr(prediction from a's rest map,
    b's measurement), the subject-specificity test; meas_vs_meas has a
    diagonal of 1 by construction.
    """
    rows, source = isc_rows(ev, shared_csv, min_images, max_images)
    if len(rows) == 0:
        return pd.DataFrame(columns=ISC_COLUMNS)
    t = ev.trials.loc[rows]
    maps = {"pred": ev.predict(rows), "meas": read_rows(ev.pack.h5["betas"], rows)}
    subjects, images = t["subject"].to_numpy(), t["nsd_id"].to_numpy()
    avg = {k: mean_by_subject_image(x, subjects, images) for k, x in maps.items()}
    frames = []
    for region in ("FB", "VC"):
        sel = ev.regions[region]
        for kind in ("pred_vs_meas", "pred_vs_pred", "meas_vs_meas"):
            a, b = kind.split("_vs_")
            m = intersubject.intersubject_matrix({s: v[:, sel] for s, v in avg[a].items()},
                                                 {s: v[:, sel] for s, v in avg[b].items()})
            long = m.stack().rename("value").reset_index()
            long.columns = ["row_subject", "col_subject", "value"]
            frames.append(long.assign(region=region, kind=kind,
                                      diagonality=intersubject.diagonality_index(m.to_numpy()),
                                      n_images=t["nsd_id"].nunique(), rows=source))
    return pd.concat(frames, ignore_index=True)[ISC_COLUMNS]


def decoding_table(ev: Evaluation, test_vc: dict[str, np.ndarray]) -> pd.DataFrame:
    """Decoding probe: ridge from measured VC betas (train rows) to image features; test identification."""
    vc = np.flatnonzero(ev.regions["VC"])
    train_vc = read_rows(ev.pack.h5["betas"], ev.fit_rows, cols=vc)
    return decoding.decoding_probe(
        train_vc, ev.features(ev.fit_rows), {MEASURED: ev.measured[:, vc], **test_vc}, ev.features(ev.test),
        image_ids=ev.trials.loc[ev.test, "nsd_id"].to_numpy(), alphas=ev.ridge_alphas,
        groups=ev.trials.loc[ev.fit_rows, "nsd_id"].to_numpy(), seed=ev.seed)


def write_csv(frame: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def write_protocol_tables(scores: pd.DataFrame, out_dir) -> None:
    """Table 1 (FB, VC), Table 3 (V1..V5 Pearson) and the paired comparisons (FB, VC
    Pearson) of one protocol's scores into ``out_dir``."""
    out_dir = Path(out_dir)
    tables.write_table1(scores[scores["region"].isin(["FB", "VC"])], out_dir / "table1.csv",
                        out_dir / "table1.md")
    roi = scores[scores["region"].isin(list(metrics.VISUAL_ROIS.values())) & (scores["metric"] == "pearson")]
    summary = tables.summarize(roi, ["method", "region"]).rename(columns={"region": "roi"})
    tables.write_table3(summary, out_dir / "table3.csv", out_dir / "table3.md")
    tables.write_comparisons(stats.paired_comparisons(scores, MODEL), out_dir / "comparisons.csv",
                             out_dir / "comparisons.md", reference=MODEL)


def evaluate(ev: Evaluation, out_dir, shared_csv, *, min_shared_images: int = 5,
             max_shared_images: int = 125) -> pd.DataFrame:
    """Predict, score and write every output of one protocol to ``out_dir``; returns the scores."""
    import h5py

    out_dir = Path(out_dir)
    vc = ev.regions["VC"]
    score_frames, nc_rows, test_vc = [], [], {}
    signal = {MEASURED: {"snr": stats.snr(ev.measured, vc), "cnr": stats.cnr(ev.measured, vc)}}
    with atomic_path(out_dir / "predictions.h5") as tmp, h5py.File(tmp, "w") as h5:
        ev.pack.grid.write_h5(h5)
        h5.create_dataset("rows", data=ev.test)
        group = h5.create_group("methods")
        for key, pred in ev.predictions():
            name = METHODS[key]
            print(f"evaluate: {name}", flush=True)
            ds = group.create_dataset(key, data=pred.astype(np.float16), chunks=(1, pred.shape[1]))
            ds.attrs["name"] = name
            score_frames.append(ev.scores(name, pred))
            signal[name] = {"snr": stats.snr(pred, vc), "cnr": stats.cnr(pred, vc)}
            nc_rows += ev.noise_normalized(name, pred)
            test_vc[name] = pred[:, vc]
        h5.attrs.update({"model": str(ev.model.path), "seed": ev.seed,
                         "note": "test rows' predictions per method (float16), pack rows in /rows"})
    scores = pd.concat(score_frames, ignore_index=True)
    write_csv(scores, out_dir / "scores.csv")
    write_protocol_tables(scores, out_dir)
    write_csv(snr_cnr_table({MEASURED: signal.pop(MEASURED), **signal}), out_dir / "snr_cnr.csv")
    write_csv(pd.DataFrame.from_records(nc_rows, columns=["method", "region", "subject", "median", "mean",
                                                         "std", "n"]), out_dir / "noise_ceiling.csv")
    write_csv(decoding_table(ev, test_vc), out_dir / "decoding.csv")
    isc = intersubject_table(ev, shared_csv, min_shared_images, max_shared_images)
    write_csv(isc, out_dir / "intersubject.csv")
    ev.meta.update({"n_test": len(ev.test), "n_train": len(ev.train), "n_fit": len(ev.fit_rows),
                    "n_voxels": int(len(ev.labels)), "n_voxels_vc": int(vc.sum()),
                    "intersubject_rows": isc["rows"].iloc[0] if len(isc) else "none",
                    "ssim_window": ev.ssim_window, "ridge_alphas": ev.ridge_alphas.tolist()})
    with atomic_path(out_dir / "meta.json") as tmp:
        tmp.write_text(json.dumps(ev.meta, indent=2, default=str) + "\n")
    return scores


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


def write_tables(score_paths, out_dir) -> None:
    """results/tables: Tables 1 and 3 from the ``paper`` protocol, Table 4 from every protocol.

    The protocol of each scores.csv is its folder's name (results/evaluation/<protocol>/).
    """
    by_protocol = {Path(p).parent.name: Path(p) for p in score_paths}
    if "paper" not in by_protocol:
        raise InputError(f"no scores of the 'paper' protocol among {sorted(map(str, score_paths))}")
    frames = []
    for protocol, path in by_protocol.items():
        scores = pd.read_csv(path)
        if protocol == "paper":
            write_protocol_tables(scores, out_dir)
        model = scores[(scores["method"] == MODEL) & scores["region"].isin(["FB", "VC"])]
        frames.append(model.assign(protocol=protocol)[["protocol", "region", "metric", "value"]])
    tables.write_table4(pd.concat(frames, ignore_index=True), Path(out_dir) / "table4.csv",
                        Path(out_dir) / "table4.md")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rest2visual evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--pack", required=True, help="triplet pack (HDF5)")
    p.add_argument("--split", required=True, help="split CSV of the protocol (test rows scored)")
    p.add_argument("--shared", required=True, help="shared.csv (images seen by every subject)")
    p.add_argument("--model", required=True, help="model.pt written by rest2visual train")
    p.add_argument("--atlas", required=True, help="visual ROI atlas (labels 1..5) on the pack's grid")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--protocol", default="", help="protocol name recorded in meta.json")
    p.add_argument("--ridge-alphas", type=float, nargs=3, default=(-2, 6, 17), metavar=("LO", "HI", "N"),
                   help="ridge penalties: numpy.logspace(LO, HI, N)")
    p.add_argument("--ssim-window", type=int, default=7, help="SSIM window side, voxels (odd)")
    p.add_argument("--min-shared-images", type=int, default=5,
                   help="shared test images needed for the inter-subject analysis on test rows")
    p.add_argument("--max-shared-images", type=int, default=125,
                   help="images at most in the inter-subject analysis (the paper: 125)")
    p.add_argument("--max-fit-rows", type=int, default=20000,
                   help="train rows at most that fit the ridge baseline and the decoding probe "
                        "(a seeded random subset; memory ≈ rows × voxels × 2 bytes)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline and noise ablations")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["tables"]:
            p = argparse.ArgumentParser(prog="rest2visual evaluate tables",
                                        description="Tables 1, 3 (paper protocol) and 4 (all protocols)")
            p.add_argument("--scores", nargs="+", required=True, help=".../<protocol>/scores.csv files")
            p.add_argument("--out-dir", required=True)
            args = p.parse_args(argv[1:])
            write_tables(args.scores, args.out_dir)
            return 0
        args = _parser().parse_args(argv)
        scores = evaluate(load_evaluation(args), args.out_dir, args.shared,
                          min_shared_images=args.min_shared_images,
                          max_shared_images=args.max_shared_images)
    except ValueError as exc:  # InputError included: a message, no traceback
        print(f"rest2visual evaluate: error: {exc}", file=sys.stderr)
        return 1
    model_r = scores[(scores["method"] == MODEL) & (scores["metric"] == "pearson")]
    print("Rest2Visual mean Pearson per region:")
    print(model_r.groupby("region", sort=False)["value"].mean().round(3).to_string())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
