"""Fig. 4: inter-subject correlation matrices, measured and predicted, side by side.

Input: the evaluation's ``intersubject.csv`` (region, kind, row_subject,
col_subject, value, diagonality, n_images, rows). Panels, for one region:

- measured: corr(measured_a, measured_b) (diagonal 1 by construction);
- predicted: corr(predicted_a, predicted_b), predictions from each subject's rest map;
- predicted vs measured: corr(predicted_a, measured_b), the subject-specificity
  test — a bright diagonal means each prediction matches its own subject best.

Each title gives the diagonality index (mean diag − mean off-diag over the
sum of their absolute values). Only held-out (test) rows are drawn: without
images seen by every test subject the figure says so instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rest2visual.checks import InputError

PANELS = {"meas_vs_meas": "measured", "pred_vs_pred": "predicted", "pred_vs_meas": "predicted vs measured"}
#: what Fig. 4 shows when the test rows hold no image seen by every test subject
NO_HELD_OUT = ("No inter-subject analysis on held-out data:\nthe test rows hold too few images seen by "
               "every test subject (see --min-shared-images).\nTraining rows are never used for this "
               "figure, so no in-sample numbers are drawn.")


def isc_matrix(table: pd.DataFrame, region: str, kind: str) -> tuple[pd.DataFrame, float]:
    """The (S, S) matrix of one region and kind from the long table, and its diagonality index."""
    part = table[(table["region"] == region) & (table["kind"] == kind)]
    if part.empty:
        raise InputError(f"intersubject table has no {kind} rows for region {region}")
    matrix = part.pivot(index="row_subject", columns="col_subject", values="value")
    return matrix, float(part["diagonality"].iloc[0])


def plot_intersubject(table: pd.DataFrame, region: str = "VC"):
    """Three heat maps (measured, predicted, predicted vs measured) of ``region``; returns the figure.

    A table without test rows (``rows`` ≠ 'test', or empty: no test image seen
    by every test subject) gives a figure that says so, never in-sample numbers.
    """
    import matplotlib.pyplot as plt

    if table.empty or not (table["rows"] == "test").all():
        fig, ax = plt.subplots(figsize=(14, 4.6))
        ax.axis("off")
        ax.text(0.5, 0.5, NO_HELD_OUT, ha="center", va="center", fontsize=11, wrap=True)
        return fig
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    for ax, (kind, name) in zip(axes, PANELS.items()):
        matrix, di = isc_matrix(table, region, kind)
        values = matrix.to_numpy()
        limit = np.nanmax(np.abs(values)) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        labels = [f"sub-{int(s):02d}" for s in matrix.index]
        ax.set_xticks(range(len(labels)), [f"sub-{int(s):02d}" for s in matrix.columns], rotation=45,
                      ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("measured subject" if kind != "pred_vs_pred" else "predicted subject")
        ax.set_ylabel("measured subject" if kind == "meas_vs_meas" else "predicted subject (rest map)")
        if len(values) <= 8:
            for (i, j), v in np.ndenumerate(values):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(v) > 0.6 * limit else "black")
        ax.set_title(f"{name}\ndiagonality index {di:.3f}", fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8, label="mean Pearson r over images")
    fig.suptitle(f"Inter-subject correlation in {region}: {int(table['n_images'].iloc[0])} held-out test "
                 "images seen by every test subject", fontsize=10)
    fig.tight_layout()
    return fig
