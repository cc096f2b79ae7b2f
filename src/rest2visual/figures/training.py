"""Training curves from ``train_log.csv``: train/val loss and val Pearson per epoch.

Columns used: epoch, train_loss, val_loss (MSE over brain-mask voxels, % signal
change²) and val_pearson (mean per-sample Pearson over the mask). The epoch
with the best val Pearson — the weights kept in model.pt — is marked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rest2visual.checks import InputError

COLUMNS = ("epoch", "train_loss", "val_loss", "val_pearson")


def plot_training_curves(log: pd.DataFrame, title: str = "Rest2Visual training"):
    """Two panels (losses; val Pearson) from a training log; returns the figure."""
    import matplotlib.pyplot as plt

    missing = [c for c in COLUMNS if c not in log.columns]
    if missing or log.empty:
        raise InputError(f"training log lacks columns {missing} or rows; has {list(log.columns)} "
                         f"and {len(log)} rows (expected train_log.csv of rest2visual train)")
    epoch = log["epoch"].to_numpy()
    best = int(np.nanargmax(log["val_pearson"].to_numpy()))
    fig, (loss_ax, r_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_ax.plot(epoch, log["train_loss"], "o-", label="train")
    loss_ax.plot(epoch, log["val_loss"], "s-", label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("MSE over the brain mask")
    loss_ax.set_title("loss")
    loss_ax.legend(frameon=False)
    r_ax.plot(epoch, log["val_pearson"], "o-", color="tab:red")
    r_ax.axvline(epoch[best], color="0.5", linestyle="--", linewidth=0.8)
    r_ax.annotate(f"best: epoch {epoch[best]}, r = {log['val_pearson'].iloc[best]:.3f}",
                  (epoch[best], log["val_pearson"].iloc[best]), textcoords="offset points", xytext=(-10, -18),
                  ha="right" if best > len(epoch) / 2 else "left", fontsize=8)
    r_ax.set_xlabel("epoch")
    r_ax.set_ylabel("mean Pearson r (validation)")
    r_ax.set_title("validation accuracy")
    for ax in (loss_ax, r_ax):
        ax.grid(alpha=0.3)
        if len(epoch) <= 20:
            ax.set_xticks(epoch)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
