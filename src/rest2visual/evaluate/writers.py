"""Writers: every output of one protocol's evaluation (``evaluate``), the per-protocol
tables and the tables over protocols (``write_tables``), atomically, under the names of
:mod:`rest2visual.evaluate.names`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError
from rest2visual.evaluate import metrics, stats, tables
from rest2visual.evaluate.builders import (decoding_table, held_out_isc_rows, intersubject_table,
                                           snr_cnr_table)
from rest2visual.evaluate.evaluation import Evaluation
from rest2visual.evaluate.names import (EVALUATION_FILES, MEASURED, METHODS, MODEL,
                                        PROTOCOL_TABLES, TABLES)


def write_csv(frame: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def write_protocol_tables(scores: pd.DataFrame, out_dir) -> None:
    """Table 1 (FB, VC), Table 3 (V1..V5: Pearson, RSA, SSIM) and the paired comparisons
    (FB, VC Pearson) of one protocol's scores into ``out_dir``."""
    out_dir = Path(out_dir)
    files = {t: (out_dir / csv, out_dir / md) for t, (csv, md) in PROTOCOL_TABLES.items()}
    tables.write_table1(scores[scores["region"].isin(["FB", "VC"])], *files["table1"])
    roi = scores[scores["region"].isin(list(metrics.VISUAL_ROIS.values()))
                 & scores["metric"].isin(tables.TABLE3_METRICS)]
    summary = tables.summarize(roi, ["method", "region"]).rename(columns={"region": "roi"})
    tables.write_table3(summary, *files["table3"])
    tables.write_comparisons(stats.paired_comparisons(scores, MODEL), *files["comparisons"],
                             reference=MODEL)


def evaluate(ev: Evaluation, out_dir, shared_csv, *, min_shared_images: int = 5,
             max_shared_images: int = 125) -> pd.DataFrame:
    """Predict, score and write every output of one protocol to ``out_dir``; returns the scores."""
    import h5py

    out_dir = Path(out_dir)
    vc = ev.regions["VC"]
    score_frames, nc_rows, test_vc = [], [], {}
    signal = {MEASURED: stats.signal_quality(ev.measured, vc)}
    names = {key: out_dir / name for key, name in EVALUATION_FILES.items()}
    with atomic_path(names["predictions"]) as tmp, h5py.File(tmp, "w") as h5:
        ev.pack.grid.write_h5(h5)
        h5.create_dataset("rows", data=ev.test)
        group = h5.create_group("methods")
        for key, pred in ev.predictions():
            name = METHODS[key]
            print(f"evaluate: {name}", flush=True)
            ds = group.create_dataset(key, data=pred.astype(np.float16), chunks=(1, pred.shape[1]))
            ds.attrs["name"] = name
            score_frames.append(ev.scores(name, pred))
            signal[name] = stats.signal_quality(pred, vc)
            nc_rows += ev.noise_normalized(name, pred)
            test_vc[name] = pred[:, vc]
        h5.attrs.update({"model": str(ev.model.path), "seed": ev.seed,
                         "note": "test rows' predictions per method (float16), pack rows in /rows"})
    scores = pd.concat(score_frames, ignore_index=True)
    write_csv(scores, names["scores"])
    write_protocol_tables(scores, out_dir)
    write_csv(snr_cnr_table({MEASURED: signal.pop(MEASURED), **signal}), names["snr_cnr"])
    write_csv(pd.DataFrame.from_records(nc_rows, columns=["method", "region", "subject", "median", "mean",
                                                         "std", "n"]), names["noise_ceiling"])
    write_csv(decoding_table(ev, test_vc), names["decoding"])
    isc_rows = held_out_isc_rows(ev, shared_csv, min_shared_images, max_shared_images)
    isc = intersubject_table(ev, isc_rows)
    write_csv(isc, names["intersubject"])
    ev.meta.update({"n_test": len(ev.test), "n_train": len(ev.train), "n_fit": len(ev.fit_rows),
                    "n_voxels": int(len(ev.labels)), "n_voxels_vc": int(vc.sum()),
                    # the pack rows behind Fig. 4: test rows only, or none
                    "intersubject_rows": isc_rows.tolist(),
                    "ssim_window": ev.ssim_window, "ridge_alphas": ev.ridge_alphas.tolist()})
    with atomic_path(names["meta"]) as tmp:
        tmp.write_text(json.dumps(ev.meta, indent=2, default=str) + "\n")
    return scores


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
    tables.write_table4(pd.concat(frames, ignore_index=True),
                        *(Path(out_dir) / name for name in TABLES["table4"]))
