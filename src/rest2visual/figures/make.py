"""``rest2visual figures``: the paper's figures from one protocol's evaluation outputs.

``rest2visual figures --pack P.h5 --evaluation-dir results/evaluation/paper
--atlas visual_dseg.nii.gz --template T1w.nii.gz --train-log train_log.csv
--out-dir results/figures`` writes (PNG, atomically):

- fig1_predicted-vs-measured.png: orthogonal views of measured and predicted
  maps for ``--n-stimuli`` test stimuli, picked at fixed ranks (10th, 35th,
  60th, 85th percentile from the best) of Rest2Visual's visual-cortex
  Pearson, so the panel shows typical cases, not the best ones;
- fig3_snr-cnr.png, fig4_intersubject.png, fig5_roi-atlas.png;
- fig6_ablation-maps.png: the test stimulus of median accuracy under the full
  model, noise rest, noise image, and its measurement;
- training-curves.png.

Slices cut through the visual cortex's centroid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from rest2visual.atomic import save_figure
from rest2visual.checks import InputError, load_nifti, require_file

from rest2visual.evaluate.names import ABLATIONS, EVALUATION_FILES, FIGURES, MODEL
#: rank positions (0 = best) of the stimuli shown in Fig. 1
FIG1_RANKS = (0.10, 0.35, 0.60, 0.85)
DPI = 110


def ranked_rows(scores: pd.DataFrame, trials: pd.DataFrame, positions) -> list[int]:
    """Pack rows of distinct test images at rank ``positions`` (0 best … 1 worst) of VC Pearson."""
    r = scores[(scores["method"] == MODEL) & (scores["region"] == "VC")
               & (scores["metric"] == "pearson")]
    if r.empty:
        raise InputError(f"scores.csv has no {MODEL} VC Pearson rows (not an evaluation's scores.csv?)")
    r = r.assign(nsd_id=trials.loc[r["row"], "nsd_id"].to_numpy()).sort_values("value", ascending=False)
    r = r.drop_duplicates("nsd_id")
    picks = [int(r["row"].iloc[int(round(p * (len(r) - 1)))]) for p in positions]
    return list(dict.fromkeys(picks))


class Inputs:
    """What the figures read: the pack (measured betas, images), predictions, atlas and template."""

    def __init__(self, pack_path, evaluation_dir, atlas_path, template_path):
        import h5py

        from rest2visual.dataset.pack import Pack

        self.pack = Pack(pack_path)
        self.grid = self.pack.grid
        self.dir = Path(evaluation_dir)
        self.scores = pd.read_csv(require_file(self.dir / EVALUATION_FILES["scores"], "evaluation scores"))
        self.atlas = load_nifti(atlas_path, ndim=3, shape=self.grid.shape, affine=self.grid.affine,
                                what="visual ROI atlas")
        self.template = load_nifti(template_path, ndim=3, shape=self.grid.shape, affine=self.grid.affine,
                                   what="MNI template")
        with h5py.File(require_file(self.dir / EVALUATION_FILES["predictions"], "evaluation predictions"),
                       "r") as h5:
            self.rows = h5["rows"][()]
            self.predictions = {key: h5["methods"][key][()] for key in ABLATIONS if key in h5["methods"]}

    def cut_and_background(self):
        from rest2visual.figures.maps import mask_centroid, to_ras

        vc = to_ras(np.asarray(self.atlas.dataobj) > 0, self.grid.affine)
        background = to_ras(np.asarray(self.template.dataobj, dtype=np.float32), self.grid.affine)
        return mask_centroid(vc), background

    def row_data(self, row: int) -> dict:
        trial = self.pack.trials.loc[row]
        i = int(np.flatnonzero(self.rows == row)[0])
        label = f"sub-{trial['subject']:02d} ses-{trial['session']:02d}\nimage {trial['nsd_id']}"
        return {"image": self.pack.h5["images"][int(trial["image_row"])],
                "measured": self.pack.h5["betas"][row].astype(np.float32),
                "predictions": {name: self.predictions[key][i].astype(np.float32)
                                for key, name in ABLATIONS.items()}, "label": label}


def accuracy(scores: pd.DataFrame, row: int) -> float:
    hit = scores[(scores["method"] == MODEL) & (scores["region"] == "VC")
                 & (scores["metric"] == "pearson") & (scores["row"] == row)]
    return float(hit["value"].iloc[0])


def make_figures(inputs: Inputs, train_log, out_dir, n_stimuli: int = 4, region: str = "VC") -> dict:
    """Draw every figure into ``out_dir``; returns {figure key: path}."""
    from rest2visual.figures import atlas, intersubject, maps, snr, training

    out_dir = Path(out_dir)
    cut, background = inputs.cut_and_background()
    trials = inputs.pack.trials
    positions = FIG1_RANKS if n_stimuli == len(FIG1_RANKS) else np.linspace(0.1, 0.85, n_stimuli)
    stimuli = []
    for row in ranked_rows(inputs.scores, trials, positions):
        data = inputs.row_data(row)
        stimuli.append({"image": data["image"], "measured": data["measured"],
                        "predicted": data["predictions"][MODEL],
                        "label": f"{data['label']}\nVC r = {accuracy(inputs.scores, row):.2f}"})
    figures = {"fig1": maps.plot_predicted_vs_measured(inputs.grid, background, cut, stimuli)}
    figures["fig3"] = snr.plot_snr_cnr(pd.read_csv(require_file(inputs.dir / EVALUATION_FILES["snr_cnr"],
                                                                "SNR/CNR table")))
    isc = pd.read_csv(require_file(inputs.dir / EVALUATION_FILES["intersubject"], "inter-subject table"))
    figures["fig4"] = intersubject.plot_intersubject(isc, region)
    figures["fig5"] = atlas.plot_roi_atlas(inputs.atlas, inputs.template)
    median_row = ranked_rows(inputs.scores, trials, [0.5])[0]
    data = inputs.row_data(median_row)
    label = f"{data['label']}\nVC r = {accuracy(inputs.scores, median_row):.2f}"
    figures["fig6"] = maps.plot_ablation_maps(inputs.grid, background, cut, data["image"],
                                              {**data["predictions"], "measured": data["measured"]}, label)
    log = pd.read_csv(require_file(train_log, "training log"))
    figures["training"] = training.plot_training_curves(log)
    return {key: save_figure(fig, out_dir / FIGURES[key], dpi=DPI) for key, fig in figures.items()}


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    p = argparse.ArgumentParser(prog="rest2visual figures", description=__doc__.split("\n")[0])
    p.add_argument("--pack", required=True, help="triplet pack (measured betas and images)")
    p.add_argument("--evaluation-dir", required=True, help="rest2visual evaluate's --out-dir of one protocol")
    p.add_argument("--atlas", required=True, help="visual ROI atlas on the pack's grid")
    p.add_argument("--template", required=True, help="MNI template on the pack's grid (background)")
    p.add_argument("--train-log", required=True, help="train_log.csv of the evaluated model")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--n-stimuli", type=int, default=4, help="test stimuli in Fig. 1")
    p.add_argument("--region", default="VC", choices=("VC", "FB"), help="region of the ISC matrices")
    args = p.parse_args(argv)
    try:
        inputs = Inputs(args.pack, args.evaluation_dir, args.atlas, args.template)
        paths = make_figures(inputs, args.train_log, args.out_dir, args.n_stimuli, args.region)
    except InputError as exc:
        print(f"rest2visual figures: error: {exc}", file=sys.stderr)
        return 1
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
