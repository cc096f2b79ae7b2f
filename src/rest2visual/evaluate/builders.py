"""Table builders of one evaluation: SNR/CNR with paired t-tests, the inter-subject
correlation matrices and the decoding probe (long DataFrames; writers.py writes them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rest2visual.checks import InputError
from rest2visual.dataset.splits import split_rows
from rest2visual.evaluate import decoding, intersubject, stats
from rest2visual.evaluate.blocks import read_rows
from rest2visual.evaluate.evaluation import Evaluation
from rest2visual.evaluate.names import MEASURED, MODEL


def snr_cnr_table(values: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Mean, SD, SEM of SNR and CNR per source, and the paired two-sided t-test vs Rest2Visual.

    ``values``: source → {metric: (N,)} (``stats.signal_quality``) over the same test rows;
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


def held_out_isc_rows(ev: Evaluation, shared_csv, min_images: int, max_images: int) -> np.ndarray:
    """Test rows for the inter-subject analysis (Fig. 4): never a training or validation row.

    The shared test rows of the images that every test subject (≥ 2) saw in
    the test rows, at most ``max_images`` images (the lowest nsd ids; the paper
    used 125). Empty when fewer than ``min_images`` such images exist (e.g. the
    unseen-subject protocol, one test subject): Fig. 4 then says so rather than
    drawing in-sample numbers.
    """
    rows = np.intersect1d(split_rows(ev.trials, shared_csv, "shared"), ev.test)
    t = ev.trials.loc[rows]
    if t["subject"].nunique() < 2:
        return np.zeros(0, np.int64)
    seen_by = t.groupby("nsd_id")["subject"].nunique()
    complete = seen_by.index[seen_by == t["subject"].nunique()][:max_images]
    if len(complete) < max(1, min_images):
        return np.zeros(0, np.int64)
    return rows[t["nsd_id"].isin(complete).to_numpy()]


def mean_by_subject_image(x: np.ndarray, subjects, nsd_ids) -> dict[int, np.ndarray]:
    """Rows of ``x`` averaged per (subject, image): subject → (n_images, V), images in nsd_id order."""
    pairs, inverse = np.unique(np.stack([subjects, nsd_ids], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(pairs)))
    means = np.add.reduceat(x[order], starts, axis=0) / np.bincount(inverse)[:, None]
    return {int(s): means[pairs[:, 0] == s] for s in np.unique(pairs[:, 0])}


ISC_COLUMNS = ["region", "kind", "row_subject", "col_subject", "value", "diagonality", "n_images", "rows"]


def intersubject_table(ev: Evaluation, rows) -> pd.DataFrame:
    """ISC matrices (pred vs meas, pred vs pred, meas vs meas) on FB and VC, long format.

    ``rows``: the pack rows to use (:func:`held_out_isc_rows`), test rows only;
    none gives an empty table. Each subject's maps are averaged over the
    repeats of each image first. ``kind`` pred_vs_meas is M[a, b] =
    corr(prediction from a's rest map, b's measurement), the
    subject-specificity test; meas_vs_meas has a diagonal of 1 by construction.
    """
    rows = np.asarray(rows, dtype=np.int64)
    outside = np.setdiff1d(rows, ev.test)
    if len(outside):
        raise InputError(f"inter-subject analysis: {len(outside)} rows are not test rows "
                         f"(e.g. {outside[:3].tolist()}); it runs on held-out rows only")
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
                                      n_images=t["nsd_id"].nunique(), rows="test"))
    return pd.concat(frames, ignore_index=True)[ISC_COLUMNS]


def decoding_table(ev: Evaluation, test_vc: dict[str, np.ndarray]) -> pd.DataFrame:
    """Decoding probe: ridge from measured VC betas (train rows) to image features; test identification."""
    vc = np.flatnonzero(ev.regions["VC"])
    train_vc = read_rows(ev.pack.h5["betas"], ev.fit_rows, cols=vc)
    return decoding.decoding_probe(
        train_vc, ev.features(ev.fit_rows), {MEASURED: ev.measured[:, vc], **test_vc}, ev.features(ev.test),
        image_ids=ev.trials.loc[ev.test, "nsd_id"].to_numpy(), alphas=ev.ridge_alphas,
        groups=ev.trials.loc[ev.fit_rows, "nsd_id"].to_numpy(), seed=ev.seed)
