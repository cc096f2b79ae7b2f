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
map's mean and SD, ``baselines.noise_maps``); noise image (the model with each
image replaced by Gaussian pixels, N(mean, SD) of the test images per RGB
channel, rounded and clipped to 0–255, ``baselines.noise_images``).

Regions: FB (the pack's brain mask), VC (atlas labels 1..5 within it) and each
of V1..V5; every region gets Pearson, MAE, SSIM and RSA from the same code,
with one SSIM convention (``metrics.SSIM_CONVENTION``: the SSIM map of the
region's maps, zero elsewhere, averaged over the region's voxels).
SNR and CNR in VC: CNR divided by the ROI variance (the paper's, ``cnr``) and
by the ROI SD (``cnr_sd``).
Only test rows are scored; train rows fit the
group mean, and (at most ``--max-fit-rows`` of them) the ridge model and
the decoding probe; val rows are never read.
The inter-subject analysis (Fig. 4) uses the test rows of images that every
test subject saw; with fewer than ``--min-shared-images`` such images (e.g. the
unseen-subject protocol has one test subject) it is left empty, never filled
from training rows; ``meta.json`` lists the rows it used (``intersubject_rows``).

Outputs in ``--out-dir`` (atomic): scores.csv (long: method, region, metric,
sample, row, value), predictions.h5 (/rows and /methods/<key> float16),
snr_cnr.csv, intersubject.csv, decoding.csv, noise_ceiling.csv (empty
without /ncsnr in the pack), table1.csv/.md, table3.csv/.md, comparisons.csv/.md,
meta.json (the names: :data:`rest2visual.evaluate.names.EVALUATION_FILES`).
``rest2visual evaluate tables --scores .../<protocol>/scores.csv ... --out-dir
results/tables`` writes Tables 1 and 3 (the ``paper`` protocol) and Table 4
(Rest2Visual per protocol).

The code, by job: :mod:`~rest2visual.evaluate.blocks` (block reader),
:mod:`~rest2visual.evaluate.evaluation` (predictions and scores),
:mod:`~rest2visual.evaluate.builders` (table builders), :mod:`~rest2visual.evaluate.writers`
(outputs); this module holds the two command-line interfaces.
"""

from __future__ import annotations

import argparse
import sys

from rest2visual.dataset.splits import split_rows  # noqa: F401 (re-exported)
from rest2visual.evaluate.blocks import images_of, read_rows  # noqa: F401 (re-exported)
from rest2visual.evaluate.builders import (ISC_COLUMNS, decoding_table,  # noqa: F401 (re-exported)
                                           held_out_isc_rows, intersubject_table,
                                           mean_by_subject_image, snr_cnr_table)
from rest2visual.evaluate.evaluation import Evaluation, atlas_labels, load_evaluation  # noqa: F401
from rest2visual.evaluate.names import MEASURED, METHODS, MODEL  # noqa: F401 (re-exported)
from rest2visual.evaluate.writers import (evaluate, write_csv,  # noqa: F401 (re-exported)
                                          write_protocol_tables, write_tables)


def _parser() -> argparse.ArgumentParser:
    from rest2visual.config import defaults

    schema = defaults("evaluate")  # the config's defaults, from its schema
    p = argparse.ArgumentParser(prog="rest2visual evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--pack", required=True, help="triplet pack (HDF5)")
    p.add_argument("--split", required=True, help="split CSV of the protocol (test rows scored)")
    p.add_argument("--shared", required=True, help="shared.csv (images seen by every subject)")
    p.add_argument("--model", required=True, help="model.pt written by rest2visual train")
    p.add_argument("--atlas", required=True, help="visual ROI atlas (labels 1..5) on the pack's grid")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--protocol", default="", help="protocol name recorded in meta.json")
    p.add_argument("--ridge-alphas", type=float, nargs=3, default=tuple(schema["ridge_alphas"]),
                   metavar=("LO", "HI", "N"),
                   help="ridge penalties: numpy.logspace(LO, HI, N)")
    p.add_argument("--ssim-window", type=int, default=schema["ssim_window"],
                   help="SSIM window side, voxels (odd)")
    p.add_argument("--min-shared-images", type=int, default=5,
                   help="images seen by every test subject, in the test rows, needed for the "
                        "inter-subject analysis (fewer: none; training rows are never used)")
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
