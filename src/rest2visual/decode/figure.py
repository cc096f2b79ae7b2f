"""``rest2visual reconstruction-figure``: the paper's Figures 2, 6b and 7 in one figure.

Rows are test trials (taken in turn from each subject), columns: the seen image, its
reconstruction from measured betas, its reconstruction from predicted betas.
"""

from __future__ import annotations

import argparse

from rest2visual.atomic import save_figure
from rest2visual.decode.names import WHICH
from rest2visual.decode.table2 import pair_by_subject, read_stimuli


def pick_trials(subjects: list[int], counts: dict[int, int], n: int) -> list[tuple[int, int]]:
    """Up to ``n`` (subject, row) pairs, round-robin over subjects, rows in order."""
    out, row = [], 0
    while len(out) < n and any(row < counts[s] for s in subjects):
        out += [(s, row) for s in subjects if row < counts[s]]
        row += 1
    return out[:n]


def draw(recon_paths, stimuli_path, out_path, n_trials: int = 8):
    """Draw the figure to ``out_path`` (PNG); returns the (subject, row) pairs shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slots = pair_by_subject(recon_paths)
    subjects = sorted(slots)
    picks = pick_trials(subjects, {s: len(slots[s][WHICH[0]][0]) for s in subjects}, n_trials)
    fig, axes = plt.subplots(max(len(picks), 1), 3, figsize=(6, 2 * max(len(picks), 1)),
                             squeeze=False)
    titles = ["seen image", "reconstruction from\nmeasured betas",
              "reconstruction from\npredicted betas"]
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=8)
    for r, (s, row) in enumerate(picks):
        trials = slots[s][WHICH[0]][1]
        seen = read_stimuli(stimuli_path, trials["nsd_id"][[row]])[0]
        panels = [seen, slots[s]["measured"][0][row], slots[s]["predicted"][0][row]]
        for ax, image in zip(axes[r], panels):
            ax.imshow(image)
        axes[r, 0].set_ylabel(f"sub-{s:02d} ses-{int(trials['session'][row])}\n"
                              f"trial {int(trials['trial'][row])}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if not picks:
        axes[0, 0].text(0.5, 0.5, "no test trials", ha="center", va="center")
    fig.tight_layout()
    save_figure(fig, out_path, dpi=100)
    return picks


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rest2visual reconstruction-figure",
        description="Seen images and their reconstructions from measured and predicted betas.")
    p.add_argument("--reconstructions", nargs="+", required=True,
                   help="reconstruct HDF5s: one measured and one predicted per subject")
    p.add_argument("--stimuli", required=True, help="nsd_stimuli.hdf5 (imgBrick)")
    p.add_argument("--n-trials", type=int, default=8, help="rows of the figure")
    p.add_argument("--out", required=True, help="output PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    """``rest2visual reconstruction-figure --reconstructions R… --stimuli S --out F.png``."""
    args = _parser().parse_args(argv)
    picks = draw(args.reconstructions, args.stimuli, args.out, args.n_trials)
    print(f"reconstruction-figure: {len(picks)} trials → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
