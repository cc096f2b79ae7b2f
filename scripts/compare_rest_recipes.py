"""Compare rest-map recipes on the simulated NSD under both DMN couplings (README table).

For each coupling of the simulated default-mode network (``simulate.dmn_coupling``:
zero_lag, the physiology; hrf_driven, the paper's assumption) the demo workflow runs
once per configured recipe (``rest.hrf_model`` × ``rest.units``) in one folder per
coupling (so the simulation, registration and evoked stages run once; Snakemake
reruns the rest maps, pack, training and evaluation for each recipe), up to the paper
protocol's evaluation and the rest-map quality report, whose files are kept per
recipe in ``<work>/<coupling>/recipe-<recipe>/``. It
prints one Markdown table: per coupling and recipe, the rest maps' r with the true
DMN, test–retest r, identification accuracy (from ``results/rest/quality.csv``), and
the downstream Table 1 (Rest2Visual's full-brain and visual-cortex Pearson, mean over
test trials) with Rest2Visual's paired margin over the noise-rest ablation (FB, VC).

Usage (from the repository root, in the project's environment; ~15 min per coupling
and recipe on 2 cores)::

    python scripts/compare_rest_recipes.py --work recipes-comparison \
        [--couplings zero_lag hrf_driven] [--recipes glover-raw none-psc] [--cores 2]

Each run is an ordinary Snakemake run of the repository's workflow on
``config/config.yaml`` with three keys overridden, so any stage can be inspected or
rerun in ``<work>/<coupling>/``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rest2visual.evaluate.names import ABLATIONS, EVALUATION_FILES, MODEL  # noqa: E402
from rest2visual.protocols import PAPER  # noqa: E402

EVALUATION = f"results/evaluation/{PAPER}"
QUALITY = "results/rest/quality.csv"


def run(work: Path, coupling: str, recipe: str, cores: int) -> Path:
    """Run the workflow for one (coupling, recipe); returns the folder its outputs were
    copied to."""
    hrf, units = recipe.split("-")
    folder = work / coupling
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {"simulate": {"dmn_coupling": coupling},
                 "rest": {"hrf_model": hrf, "units": units}}
    (folder / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    targets = [f"{EVALUATION}/{EVALUATION_FILES[k]}" for k in ("scores", "comparisons")]
    cmd = [snakemake, "-s", str(REPO / "Snakefile"), "--directory", str(folder),
           "--configfile", str(folder / "overrides.yaml"),
           "--cores", str(cores), "--rerun-incomplete", QUALITY, *targets]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=folder)
    kept = folder / f"recipe-{recipe}"
    for target in (QUALITY, *targets):
        (kept / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / target, kept / target)
    return kept


def summarize(folder: Path, coupling: str, recipe: str) -> dict:
    """One table row: the quality report's means for ``recipe`` and the downstream Table 1."""
    quality = pd.read_csv(folder / QUALITY)
    q = quality[quality["recipe"] == recipe].mean(numeric_only=True)
    scores = pd.read_csv(folder / EVALUATION / EVALUATION_FILES["scores"])
    pearson = scores[(scores["metric"] == "pearson") & (scores["method"] == MODEL)]
    means = pearson.groupby("region")["value"].mean()
    comparisons = pd.read_csv(folder / EVALUATION / EVALUATION_FILES["comparisons"])
    noise_rest = comparisons[comparisons["method"] == ABLATIONS["noise_rest"]].set_index("region")
    row = {"coupling": coupling, "recipe": recipe, "r_truth": q["r_truth"],
           "test_retest_r": q["test_retest_r"], "identification": q["identification"]}
    for region in means.index:
        row[f"pearson_{region}"] = means[region]
        if region in noise_rest.index:
            row[f"margin_noise_rest_{region}"] = noise_rest.loc[region, "mean_difference"]
            row[f"p_noise_rest_{region}"] = noise_rest.loc[region, "p"]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder of the runs")
    p.add_argument("--couplings", nargs="+", default=["zero_lag", "hrf_driven"])
    p.add_argument("--recipes", nargs="+", default=["glover-raw", "none-psc"])
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    rows = []
    for coupling in args.couplings:
        for recipe in args.recipes:
            folder = run(args.work.resolve(), coupling, recipe, args.cores)
            rows.append(summarize(folder, coupling, recipe))
            table = pd.DataFrame(rows)
            table.to_csv(args.work / "comparison.csv", index=False)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
