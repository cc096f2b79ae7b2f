"""Fig. 3: SNR and CNR in visual cortex per method, mean ± SEM, with significance stars.

Panels: SNR, CNR divided by the ROI variance (the paper's) and CNR divided by
the ROI SD (the usual definition); see :mod:`rest2visual.evaluate.stats`.
Input: the evaluation's ``snr_cnr.csv`` (source, metric, mean, sem, n,
t_vs_rest2visual, p_vs_rest2visual): each bar other than Rest2Visual's
carries the result of the paired two-sided t-test against Rest2Visual on the
same test trials: *** p < 0.001, ** p < 0.01, * p < 0.05, n.s. otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rest2visual.checks import InputError
from rest2visual.evaluate.names import MEASURED, MODEL
from rest2visual.evaluate.tables import METRIC_NAMES

COLUMNS = ("source", "metric", "mean", "sem", "p_vs_rest2visual")
#: the panels, left to right
PANEL_METRICS = ("snr", "cnr", "cnr_sd")


def stars(p: float) -> str:
    """Significance marker of a two-sided p-value ('' when there is no test)."""
    if not np.isfinite(p):
        return ""
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else "n.s."


def source_order(sources) -> list[str]:
    """Measured first, Rest2Visual second, the others in their table order."""
    sources = list(dict.fromkeys(sources))
    first = [s for s in (MEASURED, MODEL) if s in sources]
    return first + [s for s in sources if s not in first]


def plot_snr_cnr(table: pd.DataFrame):
    """Bar panels (SNR, CNR ÷ variance, CNR ÷ SD) of ``snr_cnr.csv``; returns the figure."""
    import matplotlib.pyplot as plt

    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"snr/cnr table lacks columns {missing}; has {list(table.columns)}")
    order = source_order(table["source"])
    colours = {MEASURED: "0.35", MODEL: "tab:red"}
    metrics = [m for m in PANEL_METRICS if m in set(table["metric"])]
    if not metrics:
        raise InputError(f"snr/cnr table has none of the metrics {PANEL_METRICS}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = table[table["metric"] == metric].set_index("source").reindex(order)
        x = np.arange(len(order))
        means, sems = part["mean"].to_numpy(float), np.nan_to_num(part["sem"].to_numpy(float))
        ax.bar(x, means, yerr=sems, capsize=3, color=[colours.get(s, "tab:blue") for s in order],
               edgecolor="black", linewidth=0.5)
        top = np.nanmax(np.abs(means) + sems) if len(means) else 1.0
        for xi, (mean, sem, p) in enumerate(zip(means, sems, part["p_vs_rest2visual"].to_numpy(float))):
            mark = stars(p)
            if mark:
                y = mean + np.sign(mean or 1) * (sem + 0.04 * top)
                ax.text(xi, y, mark, ha="center", va="bottom" if mean >= 0 else "top", fontsize=9)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, order, rotation=35, ha="right")
        ax.set_ylabel(f"{METRIC_NAMES[metric]} in visual cortex")
        ax.set_title(f"{METRIC_NAMES[metric]}\n(mean ± SEM over test trials)", fontsize=10)
        ax.margins(y=0.15)
    fig.suptitle("Signal quality in visual cortex; stars: paired two-sided t-test vs Rest2Visual",
                 fontsize=10)
    fig.tight_layout()
    return fig
