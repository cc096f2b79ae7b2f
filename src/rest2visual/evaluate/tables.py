"""The paper's tables as CSV (tidy numbers, for machines) and Markdown (paper layout, for people).

Inputs are long score tables: one row per (labels…, metric, sample) with a
``value`` column, as :func:`rest2visual.evaluate.metrics.region_scores`
returns (concatenated over methods and regions). :func:`summarize` reduces
them to mean, std (ddof=0 over samples) and n per group; the CSV holds that
tidy summary and the Markdown pivots it into the paper's layout:

- Table 1: method × {Pearson, RSA, MAE, SSIM} for each region (full brain, visual cortex);
- Table 3: (method, metric) × ROI (V1–V5) for Pearson, RSA and SSIM, from
  :func:`~rest2visual.evaluate.metrics.per_roi`;
- Table 4: generalisation protocol × metrics;
- comparisons: Rest2Visual minus each other method, per region, with a paired t-test
  (:func:`~rest2visual.evaluate.stats.paired_comparisons`; not in the paper).

Cells read "mean ± std"; a set-level score such as RSA (one value) has no ±.
Both files are written atomically.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError
from rest2visual.evaluate.metrics import SSIM_CONVENTION

#: display names and the paper's column order of the metrics
METRIC_NAMES = {"pearson": "Pearson", "rsa": "RSA", "mae": "MAE", "ssim": "SSIM", "snr": "SNR",
                "cnr": "CNR (÷ ROI variance)", "cnr_sd": "CNR (÷ ROI SD)",
                "top1": "top-1", "two_way": "2-way"}
_METRIC_ORDER = list(METRIC_NAMES)
#: the metrics of the paper's Table 3, per visual area
TABLE3_METRICS = ("pearson", "rsa", "ssim")


def summarize(scores: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean, std (ddof=0) and n of the finite ``value``s per (``by``…, metric), in order of appearance."""
    missing = [c for c in (*by, "metric", "value") if c not in scores.columns]
    if missing:
        raise InputError(f"summarize: score table lacks columns {missing}; has {list(scores.columns)}")
    finite = scores[np.isfinite(scores["value"].astype(float))]
    grouped = finite.groupby([*by, "metric"], sort=False)["value"]
    out = grouped.agg(mean="mean", std=lambda v: float(np.std(v)), n="count").reset_index()
    return out


def _format(mean: float, std: float, n: int, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    if n <= 1 or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _order(values: pd.Series, level: str) -> dict:
    """Rank of each distinct value: the paper's order for metrics, first appearance otherwise."""
    seen = list(pd.unique(values))
    if level == "metric":
        seen.sort(key=lambda m: _METRIC_ORDER.index(m) if m in _METRIC_ORDER else len(_METRIC_ORDER))
    return {v: i for i, v in enumerate(seen)}


def _names(key: tuple, levels: Sequence[str]) -> list[str]:
    return [METRIC_NAMES.get(v, str(v)) if lvl == "metric" else str(v) for lvl, v in zip(levels, key)]


def _header(key: tuple, levels: Sequence[str]) -> str:
    names = _names(key, levels)
    if "metric" in levels and len(levels) > 1:
        metric = names.pop(list(levels).index("metric"))
        return f"{metric} ({', '.join(names)})"
    return ", ".join(names)


def pivot_mean_std(summary: pd.DataFrame, rows: Sequence[str], columns: Sequence[str],
                   digits: int = 3) -> pd.DataFrame:
    """Pivot a summary into "mean ± std" strings: index ``rows``, one column per ``columns`` key."""
    missing = [c for c in (*rows, *columns, "mean", "std", "n") if c not in summary.columns]
    if missing:
        raise InputError(f"pivot: summary lacks columns {missing}; has {list(summary.columns)}")
    if summary.duplicated([*rows, *columns]).any():
        raise InputError(f"pivot: several summary rows per ({', '.join([*rows, *columns])}); "
                         "add the missing label to rows or columns")
    row_rank = {lvl: _order(summary[lvl], lvl) for lvl in rows}
    col_rank = {lvl: _order(summary[lvl], lvl) for lvl in columns}
    row_keys = sorted({tuple(r) for r in summary[list(rows)].itertuples(index=False)},
                      key=lambda k: [row_rank[lvl][v] for lvl, v in zip(rows, k)])
    col_keys = sorted({tuple(r) for r in summary[list(columns)].itertuples(index=False)},
                      key=lambda k: [col_rank[lvl][v] for lvl, v in zip(columns, k)])
    cells = {(tuple(r[:len(rows)]), tuple(r[len(rows):len(rows) + len(columns)])): r[-3:]
             for r in summary[[*rows, *columns, "mean", "std", "n"]].itertuples(index=False)}
    table = pd.DataFrame(
        [[_format(*cells[(rk, ck)], digits) if (rk, ck) in cells else "" for ck in col_keys]
         for rk in row_keys],
        index=pd.Index([", ".join(_names(k, rows)) for k in row_keys], name=", ".join(rows)),
        columns=[_header(ck, columns) for ck in col_keys],
    )
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``table`` (index as the first column), aligned."""
    header = [str(table.index.name or "")] + [str(c) for c in table.columns]
    body = [[str(i)] + [str(v) for v in row] for i, row in zip(table.index, table.itertuples(index=False))]
    cells = [[c.replace("|", "\\|") for c in row] for row in [header, *body]]
    widths = [max(3, *(len(row[j]) for row in cells)) for j in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    rule = "|" + "|".join([":" + "-" * (widths[0] + 1)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return "\n".join([lines[0], rule, *lines[1:]]) + "\n"


def write_table(summary: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike, *,
                rows: Sequence[str], columns: Sequence[str], title: str = "", digits: int = 3) -> None:
    """Write the tidy ``summary`` to ``csv_path`` and its rows × columns pivot to ``md_path``, atomically."""
    text = markdown_table(pivot_mean_std(summary, rows, columns, digits))
    with atomic_path(csv_path) as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text((f"{title}\n\n" if title else "") + text, encoding="utf-8")


def write_table1(scores: pd.DataFrame, csv_path, md_path, digits: int = 3) -> pd.DataFrame:
    """Table 1 from scores with columns method, region, metric, value; returns the summary."""
    summary = summarize(scores, ["method", "region"])
    write_table(summary, csv_path, md_path, rows=["method"], columns=["region", "metric"], digits=digits,
                title="Table 1. Prediction accuracy per method "
                      "(mean ± std over test samples; RSA: one value per set). "
                      f"SSIM: {SSIM_CONVENTION}.")
    return summary


def write_table3(roi_summary: pd.DataFrame, csv_path, md_path, digits: int = 3) -> pd.DataFrame:
    """Table 3 from per-ROI summaries (columns method, roi, metric, mean, std, n; the summary of
    :func:`~rest2visual.evaluate.metrics.per_roi` scores); returns it.

    Markdown: one row per (method, metric), one column per ROI.
    """
    write_table(roi_summary, csv_path, md_path, rows=["method", "metric"], columns=["roi"], digits=digits,
                title="Table 3. Pearson, RSA and SSIM per visual area, each map z-scored within the "
                      "area (mean ± std over test samples; RSA: one value per set). "
                      f"SSIM: {SSIM_CONVENTION}.")
    return roi_summary


def write_table4(scores: pd.DataFrame, csv_path, md_path, digits: int = 3) -> pd.DataFrame:
    """Table 4 from scores with columns protocol, [region,] metric, value; returns the summary."""
    by = ["protocol", "region"] if "region" in scores.columns else ["protocol"]
    summary = summarize(scores, by)
    write_table(summary, csv_path, md_path, rows=["protocol"], columns=[*by[1:], "metric"], digits=digits,
                title="Table 4. Generalisation: accuracy per evaluation protocol "
                      "(mean ± std over test samples).")
    return summary


def write_comparisons(comparisons: pd.DataFrame, csv_path, md_path, *, reference: str,
                      digits: int = 3) -> pd.DataFrame:
    """The paired comparisons (``stats.paired_comparisons`` output) as CSV and Markdown."""
    metric = METRIC_NAMES.get(str(comparisons["metric"].iloc[0]), "score") if len(comparisons) else "score"
    table = pd.DataFrame({
        "region": comparisons["region"], "method": comparisons["method"],
        f"Δ {metric} ({reference} − method)": [
            _format(m, s, n, digits) for m, s, n in zip(comparisons["mean_difference"],
                                                         comparisons["std_difference"],
                                                         comparisons["n"])],
        "t": comparisons["t"].map(lambda v: f"{v:.2f}"),
        "p (paired, two-sided)": comparisons["p"].map(lambda v: f"{v:.2g}"),
        "n": comparisons["n"]}).set_index(["region", "method"])
    with atomic_path(csv_path) as tmp:
        comparisons.to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"Paired comparisons: {reference} against every other method on the same "
                       "test samples (mean ± std of the per-sample difference; paired two-sided "
                       "t-test).\n\n" + markdown_table(table), encoding="utf-8")
    return comparisons
