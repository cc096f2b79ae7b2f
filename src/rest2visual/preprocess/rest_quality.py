"""How good are the rest maps? Reliability and individuality of PCC z-maps, no truth needed.

The rest map is the model's only subject-specific input: it is useful only if it is
reproducible within a subject and differs between subjects. For each recipe
(``<hrf>-<units>``, see :mod:`rest2visual.preprocess.rest_map`) and each subject,
over the in-mask voxels of the MNI brain mask:

- **test–retest**: mean Pearson r between the subject's session maps, over all
  pairs of its sessions;
- **between-subject**: mean r between each of its session maps and every session
  map of the other subjects;
- **identification** (connectome fingerprinting, Finn et al. 2015): for each of its
  sessions, correlate the map with every subject's mean map (its own subject's mean
  leaves that session out) and predict the subject with the highest r; the
  fraction predicted right (chance 1 / n_subjects; needs ≥ 2 sessions a subject);
- **r with truth** (simulated NSD only): mean r between the session maps and the
  subject's true network map.

Writes one CSV row per (recipe, subject), a Markdown table of the means over
subjects per recipe, and a figure.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from rest2visual.checks import InputError, load_nifti

COLUMNS = ("recipe", "subject", "n_sessions", "test_retest_r", "between_subject_r",
           "identification", "r_truth")


def correlation_matrix(maps: np.ndarray) -> np.ndarray:
    """(N, V) maps → (N, N) Pearson correlation matrix (float64)."""
    x = np.asarray(maps, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1)
    if np.any(norm == 0):
        raise InputError(f"{int(np.sum(norm == 0))} rest map(s) are constant in the mask")
    x /= norm[:, None]
    return x @ x.T


def reliability(maps: np.ndarray, subjects) -> pd.DataFrame:
    """Test–retest, between-subject r and identification accuracy per subject.

    Parameters
    ----------
    maps : (N, V) session maps (in-mask voxel values).
    subjects : (N,) subject label of each map.

    Returns
    -------
    DataFrame with one row per subject (sorted): subject, n_sessions, test_retest_r,
    between_subject_r, identification (NaN where a subject has one session).
    """
    subjects = np.asarray(subjects)
    corr = correlation_matrix(maps)
    x = np.asarray(maps, dtype=np.float64)
    labels = np.unique(subjects)
    sums = {s: x[subjects == s].sum(axis=0) for s in labels}
    counts = {s: int(np.sum(subjects == s)) for s in labels}
    correct = defaultdict(list)
    for i, s in enumerate(subjects):
        if counts[s] < 2:
            continue
        scores = []
        for t in labels:
            template = (sums[t] - x[i]) / (counts[t] - 1) if t == s else sums[t] / counts[t]
            scores.append(np.corrcoef(x[i], template)[0, 1])
        correct[s].append(labels[int(np.argmax(scores))] == s)
    rows = []
    for s in labels:
        own = np.flatnonzero(subjects == s)
        other = np.flatnonzero(subjects != s)
        pairs = corr[np.ix_(own, own)][np.triu_indices(own.size, k=1)]
        rows.append({
            "subject": s, "n_sessions": own.size,
            "test_retest_r": float(pairs.mean()) if pairs.size else np.nan,
            "between_subject_r": float(corr[np.ix_(own, other)].mean()) if other.size else np.nan,
            "identification": float(np.mean(correct[s])) if correct[s] else np.nan,
        })
    return pd.DataFrame(rows)


def truth_correlation(maps: np.ndarray, subjects, truth: dict) -> pd.Series:
    """Mean r of each subject's session maps with its true map (``truth``: subject → (V,))."""
    subjects = np.asarray(subjects)
    out = {}
    for s in np.unique(subjects):
        rs = [np.corrcoef(m, truth[s])[0, 1] for m in np.asarray(maps)[subjects == s]]
        out[s] = float(np.mean(rs))
    return pd.Series(out, name="r_truth")


def quality_table(maps_by_recipe: dict, subjects, truth: dict | None = None) -> pd.DataFrame:
    """One row per (recipe, subject) with every metric (``COLUMNS``)."""
    tables = []
    for recipe, maps in maps_by_recipe.items():
        table = reliability(maps, subjects)
        table["r_truth"] = (table["subject"].map(truth_correlation(maps, subjects, truth))
                            if truth is not None else np.nan)
        table.insert(0, "recipe", recipe)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)[list(COLUMNS)]


def summary_markdown(table: pd.DataFrame, configured: str) -> str:
    """Markdown table: per recipe the means over subjects (the configured recipe marked)."""
    metrics = [c for c in COLUMNS[3:] if table[c].notna().any()]
    means = table.groupby("recipe", sort=False)[metrics].mean()
    lines = ["| recipe | " + " | ".join(metrics) + " |",
             "|---|" + "---:|" * len(metrics)]
    for recipe, row in means.iterrows():
        name = f"**{recipe}** (configured)" if recipe == configured else recipe
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in metrics) + " |")
    n_sub = table["subject"].nunique()
    lines += ["", f"Means over {n_sub} subjects; identification chance level {1 / n_sub:.2f}."]
    return "\n".join(lines) + "\n"


def plot_quality(table: pd.DataFrame, corr: np.ndarray, subjects, configured: str):
    """Bars of each metric per recipe, and the session × session r matrix of ``configured``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in COLUMNS[3:] if table[c].notna().any()]
    means = table.groupby("recipe", sort=False)[metrics].mean()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    width = 0.8 / len(means)
    for k, (recipe, row) in enumerate(means.iterrows()):
        ax.bar(np.arange(len(metrics)) + k * width, row.values, width,
               label=recipe + (" (configured)" if recipe == configured else ""))
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics, rotation=15)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("mean over subjects")
    ax.legend(fontsize=8)
    ax.set_title("rest-map quality per recipe")
    im = ax2.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    edges = np.flatnonzero(np.diff(np.asarray(subjects).astype(int))) + 0.5
    for e in edges:
        ax2.axhline(e, color="k", lw=0.5)
        ax2.axvline(e, color="k", lw=0.5)
    labels = [f"sub-{int(s):02d}" for s in subjects]
    ax2.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax2.set_yticks(range(len(labels)), labels, fontsize=7)
    ax2.set_title(f"session maps r ({configured}), by subject")
    fig.colorbar(im, ax=ax2, shrink=0.8)
    fig.tight_layout()
    return fig


def _parse_map_arg(text: str):
    """``RECIPE:SUBJECT:PATH`` → (recipe, subject, path)."""
    recipe, subject, path = text.split(":", 2)
    return recipe, int(subject), path


def main(argv: list[str] | None = None) -> int:
    from rest2visual.atomic import atomic_path, save_figure

    p = argparse.ArgumentParser(prog="rest2visual rest-quality", description=__doc__.split("\n")[0])
    p.add_argument("--maps", nargs="+", required=True, metavar="RECIPE:SUBJECT:ZMAP",
                   help="session z-maps (MNI), each labelled with its recipe and subject")
    p.add_argument("--mask", required=True, help="MNI brain mask (the maps' grid)")
    p.add_argument("--configured", required=True, help="the workflow's configured recipe")
    p.add_argument("--truth", help="simulated NSD truth folder (adds r with the true map)")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--figure", required=True)
    args = p.parse_args(argv)
    try:
        mask_img = load_nifti(args.mask, ndim=3, what="MNI brain mask")
        grid = {"shape": mask_img.shape, "affine": mask_img.affine}
        brain = np.asarray(mask_img.dataobj) > 0
        entries = [_parse_map_arg(m) for m in args.maps]
        order = sorted(range(len(entries)), key=lambda i: (entries[i][1], entries[i][2]))
        maps_by_recipe = defaultdict(list)
        subjects_by_recipe = defaultdict(list)
        for i in order:
            recipe, subject, path = entries[i]
            img = load_nifti(path, ndim=3, what=f"rest z-map ({recipe})", **grid)
            maps_by_recipe[recipe].append(np.asarray(img.dataobj, dtype=np.float32)[brain])
            subjects_by_recipe[recipe].append(subject)
        subjects = subjects_by_recipe[args.configured]
        if any(s != subjects for s in subjects_by_recipe.values()):
            raise InputError("every recipe needs the same sessions")
        truth_maps = None
        if args.truth:
            from rest2visual.nsd.simulate import truth

            truth_maps = {}
            for s in sorted(set(subjects)):
                img = truth.dmn_map(args.truth, s)
                truth_maps[s] = np.asarray(img.dataobj, dtype=np.float32)[brain]
        maps_by_recipe = {r: np.stack(m) for r, m in maps_by_recipe.items()}
        table = quality_table(maps_by_recipe, subjects, truth_maps)
        with atomic_path(args.csv) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        with atomic_path(args.md) as tmp:
            Path(tmp).write_text(summary_markdown(table, args.configured))
        fig = plot_quality(table, correlation_matrix(maps_by_recipe[args.configured]), subjects,
                           args.configured)
        save_figure(fig, args.figure, dpi=110)
    except (InputError, ValueError) as exc:
        print(f"rest2visual rest-quality: error: {exc}", file=sys.stderr)
        return 1
    print(summary_markdown(table, args.configured))
    return 0
