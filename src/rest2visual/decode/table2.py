"""``rest2visual table2``: the paper's Table 2, image metrics of reconstructions from
predicted vs from measured betas.

For each subject, the reconstructions of ``rest2visual reconstruct`` from measured and from
predicted betas (the same test trials) are compared with the seen images (NSD's
``imgBrick`` at the trials' 73k ids) by MindEye2's metrics
(:mod:`rest2visual.decode.image_metrics`): PixCorr and SSIM always; AlexNet(2), AlexNet(5),
InceptionV3, CLIP (two-way identification), EffNet-B and SwAV (correlation distance) when
their local weight files are given (``--weights key=path``, from
``evaluate.metric_weights``), otherwise listed as skipped with the reason. Metrics are
computed within each subject (two-way identification among that subject's test trials, as
MindEye2 evaluates one subject at a time), then averaged over subjects.

Outputs: a long CSV (protocol, subject — ``mean`` for the average over subjects —, source
measured | predicted, metric, value, higher_is_better, n_trials, note) and a Markdown table
(rows: reconstructions from measured, from predicted betas; columns: the metrics).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError, require_file
from rest2visual.decode import image_metrics as im
from rest2visual.decode.decoders import read_reconstructions
from rest2visual.decode.names import WHICH

SOURCES = {"measured": "from measured betas", "predicted": "from predicted betas (Rest2Visual)"}
COLUMNS = ["PixCorr", "SSIM", *(m.column for m in im.NETWORK_METRICS)]
WEIGHT_KEYS = tuple(dict.fromkeys(m.weights for m in im.NETWORK_METRICS))


def read_stimuli(stimuli_path, nsd_ids) -> np.ndarray:
    """(N, H, W, 3) uint8 images of ``nsd_ids`` (0-based 73k ids, any order, repeats allowed)."""
    import h5py

    from rest2visual.dataset.images import check_imgbrick

    nsd_ids = np.asarray(nsd_ids, dtype=np.int64)
    path = require_file(stimuli_path, "NSD stimuli file (nsd_stimuli.hdf5)")
    unique, inverse = np.unique(nsd_ids, return_inverse=True)
    with h5py.File(path, "r") as h5:
        brick = check_imgbrick(h5, path)
        if unique.size and (unique[0] < 0 or unique[-1] >= brick.shape[0]):
            raise InputError(f"{path}: expected images {unique[0]}..{unique[-1]} in imgBrick, "
                             f"found {brick.shape[0]} images")
        images = np.stack([brick[int(i)] for i in unique]) if unique.size else None
    return images[inverse] if images is not None else np.zeros((0, 1, 1, 3), np.uint8)


def pair_by_subject(paths) -> dict[int, dict[str, tuple]]:
    """{subject: {which: (images, trials, attrs)}} of reconstruction files, checked: one
    measured and one predicted file per subject, over the same trials."""
    out: dict[int, dict[str, tuple]] = {}
    for path in paths:
        images, trials, attrs = read_reconstructions(path)
        which = str(attrs.get("which", ""))
        subjects = np.unique(trials["subject"])
        if which not in WHICH or len(subjects) != 1:
            raise InputError(f"{path}: expected one subject's reconstructions from predicted or "
                             f"measured betas, found which {which!r}, subjects {subjects.tolist()}")
        slot = out.setdefault(int(subjects[0]), {})
        if which in slot:
            raise InputError(f"{path}: expected one {which} file for subject {subjects[0]}, "
                             f"found a second one")
        slot[which] = (images, trials, attrs)
    for subject, slot in out.items():
        if set(slot) != set(WHICH):
            raise InputError(f"subject {subject}: expected reconstructions from "
                             f"{' and '.join(WHICH)} betas, found {sorted(slot)} only")
        a, b = (slot[w][1] for w in WHICH)
        if any(not np.array_equal(a[c], b[c]) for c in a):
            raise InputError(f"subject {subject}: expected the measured and predicted "
                             "reconstructions of the same trials, found different trial lists")
    return out


def subject_rows(recons: dict, seen: np.ndarray, networks: dict) -> list[dict]:
    """Metric rows of one subject: ``recons`` {which: (N, H, W, 3) uint8}, ``seen`` the
    images (N, H', W', 3) uint8; ``networks`` {weights key: extractor or skip reason}."""
    images = im.to_eval_size(im.as_float_images(seen))
    rows = []
    for which in WHICH:
        rec = im.to_eval_size(im.as_float_images(recons[which]))
        values = {"PixCorr": (im.pixcorr(rec, images), True, ""),
                  "SSIM": (im.ssim_gray(rec, images), True, "")}
        for metric in im.NETWORK_METRICS:
            net = networks.get(metric.weights)
            if isinstance(net, str) or net is None:
                values[metric.column] = (np.nan, metric.higher_is_better, net or "skipped")
            elif len(rec) < 2 and metric.score == "two_way":
                values[metric.column] = (np.nan, True, "skipped: fewer than 2 trials")
            else:
                values[metric.column] = (im.network_score(rec, images, net, metric),
                                         metric.higher_is_better, "")
        rows += [{"source": which, "metric": k, "value": v, "higher_is_better": hib,
                  "n_trials": len(rec), "note": note} for k, (v, hib, note) in values.items()]
    return rows


def networks_from(weights: dict[str, str]) -> dict:
    """{weights key: loaded extractor, or the reason it is skipped}."""
    out = {}
    for key in WEIGHT_KEYS:
        if weights.get(key):
            out[key] = im.load_network(key, weights[key])
        else:
            out[key] = f"skipped: no evaluate.metric_weights.{key} (a local weights file)"
    return out


def table2(recon_paths, stimuli_path, weights: dict[str, str], protocol: str):
    """The long Table 2 (pandas DataFrame), per subject and the mean over subjects."""
    import pandas as pd

    networks = networks_from(weights)
    rows = []
    for subject, slot in sorted(pair_by_subject(recon_paths).items()):
        trials = slot[WHICH[0]][1]
        seen = read_stimuli(stimuli_path, trials["nsd_id"])
        recons = {w: slot[w][0] for w in WHICH}
        rows += [{"protocol": protocol, "subject": f"{subject:02d}", **r}
                 for r in subject_rows(recons, seen, networks)]
    table = pd.DataFrame(rows)
    mean = (table.groupby(["source", "metric"], sort=False)
            .agg(value=("value", "mean"), higher_is_better=("higher_is_better", "first"),
                 n_trials=("n_trials", "sum"), note=("note", "first")).reset_index())
    mean.insert(0, "subject", "mean")
    mean.insert(0, "protocol", protocol)
    return pd.concat([table, mean], ignore_index=True)


def markdown(table) -> str:
    """Table 2 as Markdown: mean over subjects, skipped metrics and conventions below."""
    mean = table[table["subject"] == "mean"]
    arrows = {m: ("↑" if g else "↓") for m, g in zip(mean["metric"], mean["higher_is_better"])}
    lines = ["| reconstructions | " + " | ".join(f"{c} {arrows[c]}" for c in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for which in WHICH:
        part = mean[mean["source"] == which].set_index("metric")["value"]
        cells = ["—" if np.isnan(part[c]) else f"{part[c]:.3f}" for c in COLUMNS]
        lines.append(f"| {SOURCES[which]} | " + " | ".join(cells) + " |")
    subjects = sorted(set(table["subject"]) - {"mean"})
    n = int(mean["n_trials"].iloc[0])
    notes = mean[mean["note"] != ""].drop_duplicates("metric")
    lines += ["", f"Mean over subjects {', '.join(subjects)} ({n} test trials); metrics within "
              "each subject as MindEye2's evaluation computes them (images and reconstructions "
              "at 256², PixCorr over RGB and SSIM on grayscale at 425²; two-way identification "
              "chance 0.5; EffNet-B and SwAV: mean correlation distance)."]
    lines += [f"{r.metric}: {r.note}." for r in notes.itertuples()]
    return "\n".join(lines) + "\n"


def _weights_arg(text: str) -> tuple[str, str]:
    key, sep, path = text.partition("=")
    if not sep or key not in WEIGHT_KEYS:
        raise argparse.ArgumentTypeError(f"expected KEY=PATH with KEY in {', '.join(WEIGHT_KEYS)}, "
                                         f"found {text!r}")
    return key, path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rest2visual table2",
        description="Table 2: MindEye2's image metrics of reconstructions from predicted vs from "
                    "measured betas.")
    p.add_argument("--reconstructions", nargs="+", required=True,
                   help="reconstruct HDF5s: one measured and one predicted per subject")
    p.add_argument("--stimuli", required=True, help="nsd_stimuli.hdf5 (imgBrick)")
    p.add_argument("--weights", nargs="*", type=_weights_arg, default=[],
                   help="network weights, KEY=PATH (evaluate.metric_weights)")
    p.add_argument("--protocol", default="", help="the evaluation protocol (recorded)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """``rest2visual table2 --reconstructions R… --stimuli S --out-csv T.csv --out-md T.md``."""
    args = _parser().parse_args(argv)
    table = table2(args.reconstructions, args.stimuli, dict(args.weights), args.protocol)
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(args.out_md) as tmp:
        Path(tmp).write_text(markdown(table))
    print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
