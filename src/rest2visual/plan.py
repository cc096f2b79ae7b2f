"""``rest2visual plan --configfile config/nsd.yaml``: what a configuration will cost.

Before a cluster run: the jobs per rule (counted from the config, the way the rules
expand it; ``tests/test_plan.py`` checks the counts against ``snakemake -n``), the NSD
download size (:func:`rest2visual.nsd.keys.needed_keys` × NSD's approximate object
sizes), the expected CPU and GPU hours (:mod:`rest2visual.resources`: expected wall
time × threads, and GPU seconds × GPUs) and the peak disk footprint with ``temp()``
honoured: the 4D MNI rest runs live only until their session's z-map is written, so at
most the runs of the concurrently running jobs exist at once.

The config is loaded as the Snakefile loads it: ``config/config.yaml`` updated by each
``--configfile``, validated against the package's schema (:data:`rest2visual.config.SCHEMA`)
with defaults filled in, then :func:`rest2visual.config.check_config`. The workflow
folder is ``--workflow-dir``, else the current folder when it holds the Snakefile, else
the repository this package was installed from; without one, the schema's defaults are
the base config, so ``rest2visual plan`` works from any folder.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from rest2visual import protocols as protocol_names
from rest2visual import resources
from rest2visual.decode.names import RECONSTRUCTING, WHICH
from rest2visual.nsd import keys as nsdkeys
from rest2visual.nsd.check import workflow_keys

DEFAULT_CONFIG = "config/config.yaml"
#: concurrent SLURM jobs of profiles/slurm (its `jobs:`), for the temp() peak
DEFAULT_JOBS = 100
GB = 1e9
#: bytes per stored value of the simulated NSD's gzip'd int16 series (measured: 314 MB
#: for 421 M values at 1.8 mm, 40 MB for 50 M at 4 mm)
SIMULATED_BYTES_PER_VALUE = 0.8
#: registration outputs per MNI voxel: composite field + two warps + T1 (39 MB at 2 mm)
REGISTRATION_BYTES_PER_VOXEL = 45
#: gzip'd float32 z-map (0.9 MB at 2 mm) and its QC figure (0.1 MB)
ZMAP_BYTES_PER_VOXEL, QC_PNG_BYTES = 1.0, 150e3
#: one trained model's files: last.pt and best.pt with AdamW moments, model.pt weights
#: (7 float32 copies of 12.5 M parameters at widths 32–256; ∝ widths[0]²)
MODEL_BYTES = 7 * 4 * 12.5e6


def load_workflow_config(configfiles=(), workflow_dir: str | Path = ".") -> dict:
    """The workflow's config: defaults file ← each configfile, schema-validated, checked."""
    import yaml
    from snakemake.utils import update_config

    from rest2visual.config import check_config, validate_config

    base = Path(workflow_dir) / DEFAULT_CONFIG
    config = (yaml.safe_load(base.read_text()) or {}) if base.is_file() else {}
    for path in configfiles:
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    validate_config(config)
    check_config(config)
    return config


def default_workflow_dir() -> Path | None:
    """The current folder when it holds the Snakefile, else the repository this package
    was installed from (editable install), else None."""
    for folder in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (folder / "Snakefile").is_file() and (folder / DEFAULT_CONFIG).is_file():
            return folder
    return None


def workflow_rules(workflow_dir: str | Path = ".") -> set[str]:
    """Names of the rules defined in the Snakefile and the rule files it includes."""
    root = Path(workflow_dir)
    snakefile = (root / "Snakefile").read_text()
    included = re.findall(r"^include:\s*[\"']([^\"']+)[\"']", snakefile, flags=re.M)
    names = set()
    for text in [snakefile, *((root / f).read_text() for f in included)]:
        names.update(re.findall(r"^\s*rule\s+(\w+)\s*:", text, flags=re.M))
    return names - {"all"}


def protocols(config: dict) -> list[str]:
    """Split protocols, one trained model each (:func:`rest2visual.protocols.protocols`)."""
    return protocol_names.protocols(config["splits"]["unseen_subjects"])


def quality_recipes(config: dict) -> list[str]:
    """Rest-map recipes (hrf-units) of the quality report, the configured one first (as
    workflow/rules/rest.smk lists them)."""
    rest = config["rest"]
    return list(dict.fromkeys([f"{rest['hrf_model']}-{rest['units']}", *rest["quality_recipes"]]))


def job_counts(config: dict) -> dict[str, int]:
    """Jobs per rule the config expands to (rules that depend on the source or on a
    frozen image encoder included only when they run): one model and one evaluation per
    split protocol."""
    nsd = config["nsd"]
    n_subjects = len(nsd["subjects"])
    n_sessions = sum(len(nsdkeys.sessions_for(config, s)) for s in nsd["subjects"])
    counts = {}
    if nsd["source"] == "simulated":
        counts["simulate_nsd"] = 1
    elif nsd["source"] == "s3":
        counts["download_nsd_key"] = len(workflow_keys(config))
    counts.update({
        "mni_template": 1,
        "register_to_mni": n_subjects,
        "rest_to_mni": n_sessions * len(nsdkeys.REST_RUNS),
        "pcc_zmap": n_sessions,
        # the rest-map quality report: every other recipe's z-map of each session
        "pcc_zmap_recipe": n_sessions * (len(quality_recipes(config)) - 1),
        "rest_quality": 1,
        "evoked_betas": n_sessions,
        "ncsnr_to_mni": n_subjects,
        "pack_triplets": 1,
        "split_files": 1,
    })
    if config["registration"]["crosscheck"]:
        counts.update({"crosscheck_registration": n_subjects, "crosscheck_table": 1})
    if config["model"]["freeze_image_encoder"]:
        counts["embed_images"] = 1
    counts.update({
        "train_model": len(protocols(config)),
        "roi_atlas": 1,
        "evaluate_model": len(protocols(config)),
        "tables": 1,
        "figures": 1,
    })
    # the decoding bridge of the paper protocol (workflow/rules/decode.smk)
    counts["native_betas"] = n_subjects
    # an image decoder: measured and predicted reconstructions per subject, Table 2, figure
    if config["evaluate"]["decoder"] in RECONSTRUCTING:
        counts.update({"reconstruct": n_subjects * len(WHICH), "table2": 1,
                       "reconstruction_figure": 1})
    return counts


@dataclass(frozen=True)
class RulePlan:
    """One rule's line of the plan: jobs and the per-job request (the largest job's), the
    expected core-hours (wall × threads) and GPU-hours summed over its jobs."""

    rule: str
    jobs: int
    threads: int
    mem_mb: int
    runtime: int
    core_hours: float
    gpu_hours: float


def _rule_jobs(config: dict, rule: str, n_jobs: int) -> list[tuple[int | None, int]]:
    """(subject, jobs) pairs: per-subject rules split by subject, the rest as one."""
    nsd = config["nsd"]
    if rule in ("register_to_mni", "ncsnr_to_mni"):
        return [(s, 1) for s in nsd["subjects"]]
    if rule in ("rest_to_mni", "pcc_zmap", "evoked_betas"):
        per = len(nsdkeys.REST_RUNS) if rule == "rest_to_mni" else 1
        return [(s, per * len(nsdkeys.sessions_for(config, s))) for s in nsd["subjects"]]
    if rule == "train_model":
        # the unseen-subject models train without one subject each
        unseen = config["splits"]["unseen_subjects"]
        return [(None, n_jobs - len(unseen))] + [(s, 1) for s in unseen]
    return [(None, n_jobs)]


def rule_plans(config: dict) -> list[RulePlan]:
    """The plan's lines, one per rule of :func:`job_counts`."""
    plans = []
    for rule, n in job_counts(config).items():
        if rule not in resources.ESTIMATES:
            # downloads (on the submit host, network-bound) and rules not measured yet
            plans.append(RulePlan(rule, n, 0, 0, 0, 0.0, 0.0))
            continue
        reqs = [(resources.estimate(config, rule, s), k) for s, k in _rule_jobs(config, rule, n)]
        core_s = sum(k * r.cpu_s for r, k in reqs)
        gpu_s = sum(k * r.gpu_s * r.gpus for r, k in reqs)
        plans.append(RulePlan(rule, n, max(r.threads for r, _ in reqs),
                              max(r.mem_mb for r, _ in reqs), max(r.runtime for r, _ in reqs),
                              core_s / 3600, gpu_s / 3600))
    return plans


def download_bytes(config: dict) -> float:
    """Bytes downloaded from S3 (0 for a local mirror, read in place, or the simulation)."""
    if config["nsd"]["source"] != "s3":
        return 0.0
    return nsdkeys.estimated_bytes(workflow_keys(config))


def disk_footprint(config: dict, jobs: int = DEFAULT_JOBS) -> dict[str, float]:
    """Bytes on disk at the peak, by item; ``temp rest runs`` counts the 4D MNI runs alive
    at once: two per running session group job, at most ``jobs`` of them."""
    z = resources.sizes(config)
    g, v, t = z.mni_voxels, z.brain_voxels, z.volumes
    n_subjects = len(z.sessions)
    items = {"NSD download": download_bytes(config)}
    if config["nsd"]["source"] == "simulated":
        values = sum(z.native_voxels[s] * (2 * t + z.trials) * len(ses)
                     for s, ses in z.sessions.items())
        items["simulated NSD"] = SIMULATED_BYTES_PER_VALUE * values
    runs = z.n_sessions * len(nsdkeys.REST_RUNS)
    items.update({
        "registration": n_subjects * REGISTRATION_BYTES_PER_VOXEL * g,
        "temp rest runs (peak)": min(runs, len(nsdkeys.REST_RUNS) * jobs) * 4 * g * t,
        "rest z-maps": z.n_sessions * (ZMAP_BYTES_PER_VOXEL * g + QC_PNG_BYTES),
        "evoked betas": z.n_sessions * 4 * z.trials * v,
        "pack": (2 * z.n_trials_total * v + 4 * (z.n_sessions + n_subjects) * v
                 + z.n_images * 3 * config["dataset"]["image_size"] ** 2),
        "models": len(protocols(config)) * MODEL_BYTES
        * (config["model"]["widths"][0] / 32) ** 2,
    })
    return items


def _hours(h: float) -> str:
    if h >= 100:
        return f"{h:,.0f}"
    return f"{h:.3g}" if h >= 0.01 else ("0" if h == 0 else "<0.01")


def format_plan(config: dict, rules: set[str] | None = None, jobs: int = DEFAULT_JOBS) -> str:
    """The plan as text: the rule table, download size, compute and disk totals.

    Rules of :func:`job_counts` missing from ``rules`` (not in the workflow yet) are
    listed apart with their estimates and left out of the totals.
    """
    plans = rule_plans(config)
    present = [p for p in plans if rules is None or p.rule in rules]
    absent = [p for p in plans if p not in present]
    lines = [
        "| rule | jobs | threads | mem_mb | time limit (min) | core-h | GPU-h |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in present:
        if p.mem_mb:
            lines.append(f"| {p.rule} | {p.jobs} | {p.threads} | {p.mem_mb} | {p.runtime} | "
                         f"{_hours(p.core_hours)} | {_hours(p.gpu_hours)} |")
        else:
            what = "submit host" if p.rule == "download_nsd_key" else "not estimated"
            lines.append(f"| {p.rule} | {p.jobs} | | | | ({what}) | |")
    core, gpu = sum(p.core_hours for p in present), sum(p.gpu_hours for p in present)
    lines.append(f"| **total** | {sum(p.jobs for p in present)} | | | | {_hours(core)} | "
                 f"{_hours(gpu)} |")
    disk = disk_footprint(config, jobs)
    lines += ["", f"NSD download: {download_bytes(config) / GB:,.1f} GB "
              f"({config['nsd']['source']}; NSD's approximate 1.8 mm object sizes)",
              f"Compute: {_hours(core)} CPU core-hours, {_hours(gpu)} GPU-hours (expected, "
              "before the requests' margins; GPU rate assumed, see rest2visual.resources)",
              f"Peak disk: {sum(disk.values()) / GB:,.1f} GB with at most {jobs} "
              "concurrent jobs (--jobs)"]
    lines += [f"  {name:<24} {b / GB:>10,.2f} GB" for name, b in disk.items()]
    for p in absent:
        cost = (f"{_hours(p.core_hours)} core-h, {_hours(p.gpu_hours)} GPU-h" if p.mem_mb
                else "not estimated")
        lines.append(f"Not in the workflow yet, left out of the totals: {p.rule} "
                     f"(jobs: {p.jobs}; {cost})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``rest2visual plan [--configfile F ...]``: print jobs, download, compute and disk."""
    p = argparse.ArgumentParser(prog="rest2visual plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", nargs="+", default=[],
                   help="config files layered over config/config.yaml, as for snakemake")
    p.add_argument("--workflow-dir", default=None,
                   help="repository root holding config/ and workflow/ (default: the current "
                        "folder if it holds the Snakefile, else the package's repository)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help=f"concurrent jobs, for the temp() disk peak (default {DEFAULT_JOBS}, "
                        "profiles/slurm)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be ≥ 1")
    root = Path(args.workflow_dir) if args.workflow_dir else default_workflow_dir()
    if root is not None and not (root / "Snakefile").is_file():
        p.error(f"--workflow-dir {root}: no Snakefile there")
    config = load_workflow_config(args.configfile, root if root is not None else ".")
    print(format_plan(config, workflow_rules(root) if root is not None else None, jobs=args.jobs))
    from rest2visual.model.encoder_weights import encoder_weights_problem

    problem = encoder_weights_problem(config["model"])
    if problem:  # a run stops at start-up on it; planning does not need the weights
        print(f"Needed before a run: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
