"""Per-rule resource requests (threads, mem_mb, runtime) as functions of the config.

Each estimate scales a measured cost with the array sizes of the configured run:
``G`` MNI grid voxels (2 mm: 91×109×91 = 902,629; 4 mm: 116,380), ``V`` MNI brain-mask
voxels (≈ 0.26 G), ``N`` a subject's native functional voxels (NSD 1.8 mm: 0.6–0.8 M;
the simulated NSD keeps NSD's field of view at ``simulate.voxel_mm``), ``T`` volumes per
rest run (NSD ≈ 226, simulated ``simulate.volumes``), ``K`` trials per session.

Measured (``/usr/bin/time -v``, CPU = user + system seconds, peak RSS; one stage CLI at
a time on a shared 2-core x86 VM; wall times were 2–4× CPU under load, so CPU time is
the basis) at two sizes of the simulated NSD — toy: MNI 4 mm, native 4 mm, T 80, K 30;
paper-like: MNI 2 mm, native 1.8 mm (NSD's subj01 grid), T 226, K 150:

=====================  ========================  ============================
stage (CLI)            toy                       paper-like
=====================  ========================  ============================
simulate-nsd           9.0 s, 519 MiB (1 × 1)    54.5 s, 1024 MiB (1 × 1)
template               —                         4.9 s, 334 MiB
register, SyN          8.3 s, 345 MiB [40 20 0]  80.3 s, 646 MiB [100 70 40]
warp-to-mni, one run   0.9 s, 136 MiB            9.7 s, 1078 MiB
rest-map, two runs     8.4 s, 264 MiB            8.8 s, 1281 MiB
evoked                 1.2 s, 121 MiB            12.9 s, 832 MiB
warp-to-mni, ncsnr     0.9 s, 88 MiB             1.8 s, 205 MiB
pack                   6.1 s, 321 MiB            14.7 s, 530 MiB
=====================  ========================  ============================

(pack: 30 trials and 29 images / 150 trials and 136 images at 224 px; simulate-nsd
with 2 subjects × 2 sessions at toy size: 14.9 s.) Each formula below is fitted to
these points and ``tests/test_plan.py`` checks it against them; where a formula has as
many constants as points (registration, pack), the fit is exact and the points do not
validate it. Anything at NSD's full size (K = 750, 96 sessions, 72,000 trials, tens of
thousands of images) is an extrapolation along the stated basis. Training was not measured on a
GPU: its estimate is the network's counted FLOPs (torch's FlopCounterMode: 1.655 TFLOP
per 2 mm sample forward + backward, 0.208 at 4 mm, widths 32–256) over an ASSUMED
sustained GPU rate (:data:`GPU_TFLOPS`); on CPU over the measured 40 GFLOP/s per core.

Requests add margins to the estimates: memory × :data:`MEM_SAFETY`, runtime ×
:data:`RUNTIME_SAFETY` (slower nodes, shared file systems), with floors; a retried
job (``attempt`` > 1, e.g. after an out-of-memory kill) asks for +50 % memory per
retry and ``attempt`` × the time. Units: mem_mb in MiB (what ``sbatch --mem`` reads),
runtime in minutes, CPU/GPU time in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from rest2visual.nsd import keys as nsdkeys
from rest2visual.protocols import held_out_subject

MIB = 2**20
#: memory request = estimate × this, runtime request = estimate × RUNTIME_SAFETY
MEM_SAFETY = 1.5
RUNTIME_SAFETY = 3.0
MIN_MEM_MB = 1000
MIN_RUNTIME_MIN = 10
#: V / G of the MNI152 brain mask on the FSL grid (measured: 235,375 / 902,629 at 2 mm,
#: 29,398 / 116,380 at 4 mm)
BRAIN_FRACTION = 0.261
#: NSD rest runs' volumes (NSD.md: ~226, unconfirmed) when the source is real NSD
NSD_REST_VOLUMES = 226
NSD_IMAGES = 73000
#: voxel size (mm) of NSD's functional spaces
SPACE_VOXEL_MM = {"func1pt8mm": 1.8, "func1mm": 1.0}
#: network FLOPs per MNI voxel per sample (forward + backward) at widths starting at 32
TRAIN_FLOP_PER_VOXEL = 1.834e6
#: ASSUMED sustained training throughput of one GPU (bf16 3D convolutions with group
#: norms reach a fraction of an H100's ~990 dense TFLOP/s); not measured here
GPU_TFLOPS = 100.0
#: measured: one training step on one CPU core (torch 2.13, 4 mm, batch 2)
CPU_GFLOPS_PER_THREAD = 40.0


@dataclass(frozen=True)
class Request:
    """What one job of a rule asks the scheduler for, and what it is expected to use.

    threads: CPUs; mem_mb: MiB; runtime: minutes (the SLURM time limit); gpus: GPUs;
    cpu_s / gpu_s / peak_mib: the expected CPU (all threads) and GPU seconds and peak
    resident memory (MiB), without margins.
    """

    threads: int
    mem_mb: int
    runtime: int
    cpu_s: float
    peak_mib: float
    gpus: int = 0
    gpu_s: float = 0.0

    def retry(self, attempt: int) -> "Request":
        """The request of Snakemake's ``attempt`` (1 = first): +50 % memory, ×attempt time."""
        n = max(int(attempt), 1)
        return replace(self, mem_mb=_round_up(self.mem_mb * (1 + 0.5 * (n - 1)), 100),
                       runtime=self.runtime * n)


@dataclass(frozen=True)
class Sizes:
    """The array sizes a configured run scales with (see the module docstring)."""

    mni_voxels: int
    brain_voxels: int
    native_voxels: dict[int, int]
    volumes: int
    trials: int
    sessions: dict[int, list[int]]
    n_images: int

    @property
    def n_sessions(self) -> int:
        return sum(len(s) for s in self.sessions.values())

    @property
    def n_trials_total(self) -> int:
        return self.n_sessions * self.trials


def sizes(config: dict) -> Sizes:
    """Sizes of a validated config (defaults filled, as the Snakefile has it)."""
    from rest2visual.nsd.simulate.anatomy import native_shape
    from rest2visual.preprocess.template import mni_grid

    nsd = config["nsd"]
    simulated = nsd["source"] == "simulated"
    voxel_mm = config["simulate"]["voxel_mm"] if simulated else SPACE_VOXEL_MM[nsd["space"]]
    grid = mni_grid(config["mni"]["resolution_mm"])
    g = math.prod(grid.shape)
    subjects = list(nsd["subjects"])
    sessions = {s: nsdkeys.sessions_for(config, s) for s in subjects}
    n_trials = sum(len(t) for t in sessions.values()) * nsd["trials_per_session"]
    available = config["simulate"]["images"] if simulated else NSD_IMAGES
    return Sizes(
        mni_voxels=g,
        brain_voxels=round(BRAIN_FRACTION * g),
        native_voxels={s: math.prod(native_shape(s, voxel_mm)) for s in subjects},
        volumes=config["simulate"]["volumes"] if simulated else NSD_REST_VOLUMES,
        trials=nsd["trials_per_session"],
        sessions=sessions,
        # an upper bound: every trial a new image (NSD repeats images up to 3 times)
        n_images=min(n_trials, available),
    )


def _round_up(x: float, step: int) -> int:
    return int(math.ceil(x / step) * step)


def _request(cpu_s: float, mem_bytes: float, threads: int = 1, gpus: int = 0,
             gpu_s: float = 0.0) -> Request:
    """Margins and floors on an estimate; wall time = cpu_s / threads (or gpu_s)."""
    wall_s = gpu_s if gpus else cpu_s / threads
    return Request(threads=threads,
                   mem_mb=_round_up(max(MIN_MEM_MB, MEM_SAFETY * mem_bytes / MIB), 100),
                   runtime=max(MIN_RUNTIME_MIN, math.ceil(RUNTIME_SAFETY * wall_s / 60)),
                   cpu_s=float(cpu_s), peak_mib=mem_bytes / MIB, gpus=gpus,
                   gpu_s=float(gpu_s))


# --- one function per rule: (config, subject) → Request -------------------------------

def simulate_nsd(config: dict, subject: int | None = None) -> Request:
    """Basis: 7 s fixed + 0.12 µs per native voxel × (2 runs × T + K) per subject-session;
    memory 560 MiB (with NSD's 1 mm func → MNI coordinate map) + one float32 native series
    of max(T, K) volumes."""
    z = sizes(config)
    work = sum(z.native_voxels[s] * (2 * z.volumes + z.trials) * len(z.sessions[s])
               for s in z.sessions)
    big = max(z.native_voxels.values()) * max(z.volumes, z.trials)
    return _request(7.0 + 1.2e-7 * work, 560 * MIB + 4 * big)


def mni_template(config: dict, subject: int | None = None) -> Request:
    """Basis: measured 4.9 s and 334 MiB at 2 mm (nilearn's template resampled once)."""
    return _request(5.0, 400 * MIB)


def register_to_mni(config: dict, subject: int | None = None) -> Request:
    """Basis: 2 s + 52 µs per MNI voxel (ANTs' affine stage) + 0.69 µs per voxel-iteration
    of SyN, whose level i of L runs at shrink 2^(L-1-i) (G / 8^(L-1-i) voxels); memory
    300 MiB + 380 B per MNI voxel. Threads: ``registration.threads`` ITK threads (1 by
    default, for bitwise-reproducible registrations; wall time = CPU time / threads)."""
    g = sizes(config).mni_voxels
    its = config["registration"]["iterations"]
    levels = len(its)
    syn = sum(n * g / 8 ** (levels - 1 - i) for i, n in enumerate(its))
    return _request(2.0 + 5.2e-5 * g + 6.9e-7 * syn, 300 * MIB + 380 * g,
                    threads=int(config["registration"].get("threads", 1)))


def rest_to_mni(config: dict, subject: int | None = None) -> Request:
    """Basis: 0.5 s + 45 ns per MNI voxel-volume (one sparse product per volume);
    memory 120 MiB + the float32 MNI series (4·G·T) + the interpolation matrix and
    field (120 B per MNI voxel) + read chunks (128 B per native voxel)."""
    z = sizes(config)
    n = _native(z, subject)
    return _request(0.5 + 4.5e-8 * z.mni_voxels * z.volumes,
                    120 * MIB + (4 * z.volumes + 120) * z.mni_voxels + 128 * n)


def pcc_zmap(config: dict, subject: int | None = None) -> Request:
    """Basis: 7.5 s fixed (nilearn, the QC figure) + 3.2 ns per MNI voxel-volume; memory
    250 MiB + one float32 MNI run (4·G·T) + both runs' in-mask series (4·V·2T)."""
    z = sizes(config)
    t = z.volumes
    return _request(7.5 + 3.2e-9 * z.mni_voxels * 2 * t,
                    250 * MIB + 4 * z.mni_voxels * t + 4 * z.brain_voxels * 2 * t)


def evoked_betas(config: dict, subject: int | None = None) -> Request:
    """Basis: 1 s + 50 ns × K × (G + N) (read, scale, resample each trial); memory 120 MiB
    + 50 native trials in flight (20 B per native voxel each) + 120 B per MNI voxel."""
    z = sizes(config)
    n = _native(z, subject)
    return _request(1.0 + 5e-8 * z.trials * (z.mni_voxels + n),
                    120 * MIB + 20 * 50 * n + 120 * z.mni_voxels)


def ncsnr_to_mni(config: dict, subject: int | None = None) -> Request:
    """Basis: one 3D warp: 0.8 s + 1 µs per MNI voxel (reading the field, building the
    interpolation matrix); memory as :func:`rest_to_mni` without the series."""
    z = sizes(config)
    return _request(0.8 + 1e-6 * z.mni_voxels,
                    100 * MIB + 120 * z.mni_voxels + 20 * _native(z, subject))


def pack_triplets(config: dict, subject: int | None = None) -> Request:
    """Basis: 4.5 s + 60 ms per packed image (decode 425² and resize) + 10 ns per beta value
    (float32 → float16); images are the upper bound of :func:`sizes`; memory 320 MiB + 1 kB
    per brain voxel (blocks of rows)."""
    z = sizes(config)
    return _request(4.5 + 0.06 * z.n_images + 1e-8 * z.n_trials_total * z.brain_voxels,
                    320 * MIB + 1000 * z.brain_voxels)


def split_files(config: dict, subject: int | None = None) -> Request:
    """Not measured (a table of trials): an allowance of 10 s + 0.1 ms and 200 B per trial."""
    z = sizes(config)
    return _request(10.0 + 1e-4 * z.n_trials_total, 300 * MIB + 200 * z.n_trials_total)


def train_samples_per_epoch(config: dict, subject: int | None = None) -> int:
    """Training rows of one model: the pairs not held out for testing, less validation.

    ``subject`` set: that subject's trials are held out (unseen-subject protocol).
    """
    z = sizes(config)
    total = z.n_trials_total
    held = len(z.sessions[subject]) * z.trials if subject else min(config["splits"]["n_test"],
                                                                    total // 2)
    return max(int((total - held) * (1 - config["splits"]["val_fraction"])), 1)


def train_model(config: dict, subject: int | None = None) -> Request:
    """Basis: counted FLOPs (1.83 MFLOP per MNI voxel per sample forward + backward at
    widths from 32, × (widths[0] / 32)²; counted 12.0 GFLOP against 13.3 predicted for
    widths 8–32 at 4 mm) × samples per epoch × epochs, over
    ``train.gpus`` × :data:`GPU_TFLOPS` (ASSUMED) or, on CPU, the measured
    :data:`CPU_GFLOPS_PER_THREAD` per thread. Threads: DataLoader workers + 1, at least
    2; host memory an allowance of 4 GiB + 1 GiB per worker (not measured). A GPU job
    holds its CPUs for its whole run, so its CPU time is threads × GPU time."""
    z = sizes(config)
    t = config["train"]
    width = config["model"]["widths"][0]
    flops = (TRAIN_FLOP_PER_VOXEL * (width / 32) ** 2 * z.mni_voxels
             * train_samples_per_epoch(config, subject) * t["epochs"])
    threads = max(t["num_workers"] + 1, 2)
    mem = 4 * 2**30 + t["num_workers"] * 2**30
    if t["device"] == "cpu" or t["gpus"] == 0:
        return _request(flops / (CPU_GFLOPS_PER_THREAD * 1e9), mem, threads=threads)
    gpus = t["gpus"]
    gpu_s = flops / (gpus * GPU_TFLOPS * 1e12)
    return _request(threads * gpu_s, mem, threads=threads, gpus=gpus, gpu_s=gpu_s)


#: rule name → estimate. Not estimated (no measurement yet; their rules keep their own
#: resources): embed_images, roi_atlas, evaluate_model, tables, figures
ESTIMATES = {
    "simulate_nsd": simulate_nsd, "mni_template": mni_template,
    "register_to_mni": register_to_mni, "rest_to_mni": rest_to_mni, "pcc_zmap": pcc_zmap,
    "evoked_betas": evoked_betas, "ncsnr_to_mni": ncsnr_to_mni,
    "pack_triplets": pack_triplets, "split_files": split_files, "train_model": train_model,
}


def _native(z: Sizes, subject: int | None) -> int:
    """Native voxels of ``subject``, or of the largest selected subject."""
    return z.native_voxels[subject] if subject else max(z.native_voxels.values())


def estimate(config: dict, rule: str, subject: int | None = None) -> Request:
    """The :class:`Request` of one job of ``rule`` (for ``subject`` where it matters)."""
    if rule not in ESTIMATES:
        raise KeyError(f"no resource estimate for rule {rule!r}; known: {sorted(ESTIMATES)}")
    return ESTIMATES[rule](config, subject)


# --- Snakemake glue: `threads: rule_threads(...)`, `resources: **rule_resources(...)` --

def rule_threads(config: dict, rule: str) -> int:
    """The ``threads:`` of ``rule``."""
    return estimate(config, rule).threads


def wildcard_subject(wildcards) -> int | None:
    """The subject a job is about: its ``sub`` wildcard, or the held-out subject of an
    ``unseen-subject_sub-NN`` protocol; None for jobs about all subjects."""
    sub = getattr(wildcards, "sub", None)
    if sub is None:
        return held_out_subject(str(getattr(wildcards, "protocol", "")))
    return int(sub)


def rule_resources(config: dict, rule: str) -> dict:
    """The ``resources:`` of ``rule``: mem_mb and runtime as functions of (wildcards,
    attempt), per subject (:func:`wildcard_subject`), grown on retries; ``gpu`` for GPU
    jobs."""

    def request(wildcards, attempt) -> Request:
        return estimate(config, rule, wildcard_subject(wildcards)).retry(attempt)

    def mem_mb(wildcards, attempt):
        return request(wildcards, attempt).mem_mb

    def runtime(wildcards, attempt):
        return request(wildcards, attempt).runtime

    out = {"mem_mb": mem_mb, "runtime": runtime}
    if estimate(config, rule).gpus:
        out["gpu"] = estimate(config, rule).gpus
    return out
