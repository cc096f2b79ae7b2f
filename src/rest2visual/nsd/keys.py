"""The Natural Scenes Dataset's object keys, subjects, sessions and grids.

All key patterns are relative to the bucket root (``s3://natural-scenes-dataset/``)
and identical in a local mirror, in ``resources/nsd/`` after download, and in the
simulated NSD. Subjects are integers 1..8 (``subj01``..``subj08``), sessions are
NSD's 1-based session numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

BUCKET = "natural-scenes-dataset"

SUBJECTS = tuple(range(1, 9))
#: number of NSD (core experiment) sessions per subject
N_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
#: sessions with resting-state runs (run01 and run14): 21–30, plus 31–38 for subj01/05
REST_SESSIONS = {
    s: tuple(range(21, 39)) if s in (1, 5) else tuple(range(21, 31)) for s in SUBJECTS
}
REST_RUNS = (1, 14)
TRIALS_PER_SESSION = 750
#: 1.8 mm functional grids (X, Y, Z) per subject
FUNC1PT8MM_SHAPES = {
    1: (81, 104, 83), 2: (82, 106, 84), 3: (81, 106, 82), 4: (85, 99, 80),
    5: (79, 97, 78), 6: (85, 113, 83), 7: (78, 95, 81), 8: (80, 103, 78),
}
BETA_VERSIONS = ("betas_fithrf_GLMdenoise_RR", "betas_fithrf", "betas_assumehrf")
SPACES = ("func1pt8mm", "func1mm")
# func1mm grids differ per subject (subj01 145×186×148 in published loaders); NSD's own
# code does not list them, so a func1mm grid is taken from the subject's anatomy file
# (``T1_to_func1mm``) at run time instead of from a table here.

#: beta versions NSD publishes per space (``betas_assumehrf`` only at 1.8 mm)
SPACE_BETA_VERSIONS = {"func1pt8mm": BETA_VERSIONS,
                       "func1mm": ("betas_fithrf_GLMdenoise_RR", "betas_fithrf")}
#: name of the space in NSD's transform files (``transforms/<name>-to-MNI.nii.gz``)
TRANSFORM_SPACE = {"func1pt8mm": "func1pt8", "func1mm": "func1pt0"}
#: the config key (under ``nsd``) holding each space's TR in s, used when a header's time
#: unit is unknown (NSD's are: xyzt_units = 0): func1pt8mm 0.999878 × 4/3, func1mm 1.0
TR_CONFIG_KEYS = {"func1pt8mm": "tr_s", "func1mm": "tr_s_func1mm"}

# --- key patterns -----------------------------------------------------------
EXPDESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIM_INFO = "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
TEMPLATE = "nsddata/templates/MNI152_T1_1mm.nii.gz"


def subj(subject: int) -> str:
    """NSD's subject label: 1 → ``subj01``."""
    if subject not in SUBJECTS:
        raise ValueError(f"subject {subject!r} is not an NSD subject (1..8)")
    return f"subj{subject:02d}"


def betas_key(subject: int, session: int, space: str = "func1pt8mm",
              version: str = "betas_fithrf_GLMdenoise_RR", ext: str = "nii.gz") -> str:
    """Trial betas of one session: int16, % signal change × 300, X×Y×Z×750."""
    return (f"nsddata_betas/ppdata/{subj(subject)}/{space}/{version}/"
            f"betas_session{session:02d}.{ext}")


def ncsnr_key(subject: int, space: str = "func1pt8mm",
              version: str = "betas_fithrf_GLMdenoise_RR") -> str:
    """Noise-ceiling SNR map (float32, X×Y×Z)."""
    return f"nsddata_betas/ppdata/{subj(subject)}/{space}/{version}/ncsnr.nii.gz"


def rest_key(subject: int, session: int, run: int, space: str = "func1pt8mm") -> str:
    """Resting-state time series of one run (int16, X×Y×Z×T). The header's time unit is
    unknown (xyzt_units = 0; pixdim[4] = 4/3 at 1.8 mm): the TR comes from the config."""
    return (f"nsddata_timeseries/ppdata/{subj(subject)}/{space}/timeseries/"
            f"timeseries_session{session:02d}_run{run:02d}.nii.gz")


def motion_key(subject: int, session: int, run: int, space: str = "func1pt8mm") -> str:
    """Motion parameters of one run: TSV, 6 columns (3 translations mm, 3 rotations rad)."""
    return (f"nsddata_timeseries/ppdata/{subj(subject)}/{space}/motion/"
            f"motion_session{session:02d}_run{run:02d}.tsv")


def brainmask_key(subject: int, space: str = "func1pt8mm") -> str:
    """NSD's liberal brain mask in functional space."""
    return f"nsddata/ppdata/{subj(subject)}/{space}/brainmask.nii.gz"


def anatomy_key(subject: int, space: str = "func1pt8mm") -> str:
    """T1 anatomy resampled into functional space (the registration's moving image):
    ``T1_to_func1pt8mm.nii.gz`` or ``T1_to_func1mm.nii.gz``."""
    _check_space(space)
    return f"nsddata/ppdata/{subj(subject)}/{space}/T1_to_{space}.nii.gz"


def nsdgeneral_key(subject: int, space: str = "func1pt8mm") -> str:
    """nsdgeneral ROI (−1 non-cortex, 0 cortex outside, 1 inside)."""
    return f"nsddata/ppdata/{subj(subject)}/{space}/roi/nsdgeneral.nii.gz"


def func_to_mni_key(subject: int, space: str = "func1pt8mm") -> str:
    """NSD's own coordinate map func → MNI: ``func1pt8-to-MNI`` or ``func1pt0-to-MNI``
    (182×218×182×3 on the FSL 1 mm grid, 1-based source coords, 9999 invalid)."""
    _check_space(space)
    return (f"nsddata/ppdata/{subj(subject)}/transforms/"
            f"{TRANSFORM_SPACE[space]}-to-MNI.nii.gz")


def mni_to_func_key(subject: int, space: str = "func1pt8mm") -> str:
    """NSD's coordinate map MNI → func: ``MNI-to-func1pt8`` or ``MNI-to-func1pt0``
    (X×Y×Z×3 on the subject's functional grid; 1-based coordinates in the FSL MNI152
    1 mm array, 9999 invalid), the inverse of :func:`func_to_mni_key`."""
    _check_space(space)
    return (f"nsddata/ppdata/{subj(subject)}/transforms/"
            f"MNI-to-{TRANSFORM_SPACE[space]}.nii.gz")


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"space {space!r} is not an NSD functional space {SPACES}")


def configured_tr(nsd: dict) -> tuple[float, str]:
    """(TR in s, config key) for ``nsd.space``: ``nsd.tr_s`` (func1pt8mm) or
    ``nsd.tr_s_func1mm`` (func1mm), the TR used when a header's time unit is unknown."""
    key = TR_CONFIG_KEYS[nsd["space"]]
    return float(nsd[key]), f"nsd.{key}"


# --- what a configuration needs ----------------------------------------------

#: approximate object sizes in bytes at 1.8 mm (from NSD's published sizes), used
#: only to print the download estimate of a dry run
APPROX_BYTES = {
    "betas": 1.0e9, "rest": 0.3e9, "motion": 3.0e4, "ncsnr": 1.0e6, "brainmask": 2.0e5,
    "anatomy": 1.5e6, "func_to_mni": 1.6e8, "mni_to_func": 3.0e6, "nsdgeneral": 1.0e5,
    "expdesign": 2.5e6, "stim_info": 1.5e7, "stimuli": 39.5e9,
}


@dataclass(frozen=True)
class NeededKey:
    """One bucket key and why the workflow needs it (for error messages)."""

    key: str
    kind: str
    needed_by: str


def sessions_for(config: dict, subject: int) -> list[int]:
    """Rest sessions of ``subject`` selected by the config (``nsd.sessions``).

    ``nsd.sessions`` is ``"rest"`` (all of the subject's rest sessions) or a
    list of session numbers used for every subject.
    """
    chosen = config["nsd"]["sessions"]
    if chosen == "rest":
        return list(REST_SESSIONS[subject])
    bad = [s for s in chosen if s not in REST_SESSIONS[subject]]
    if bad:
        raise ValueError(
            f"config nsd.sessions: sessions {bad} of {subj(subject)} have no resting-state "
            f"runs (rest sessions are {REST_SESSIONS[subject][0]}–{REST_SESSIONS[subject][-1]})"
        )
    return list(chosen)


def needed_keys(config: dict) -> list[NeededKey]:
    """Every bucket key the configured workflow reads, each with who needs it."""
    nsd = config["nsd"]
    space, version = nsd["space"], nsd["beta_version"]
    keys = [
        NeededKey(EXPDESIGN, "expdesign", "the trial → image mapping (all subjects)"),
        NeededKey(STIMULI, "stimuli", "the images shown (all subjects)"),
    ]
    for s in nsd["subjects"]:
        who = subj(s)
        keys += [
            NeededKey(anatomy_key(s, space), "anatomy", f"{who} registration to MNI"),
            NeededKey(brainmask_key(s, space), "brainmask", f"{who} registration to MNI"),
            NeededKey(ncsnr_key(s, space, version), "ncsnr", f"{who} noise ceiling"),
            NeededKey(nsdgeneral_key(s, space), "nsdgeneral",
                      f"{who} decoding bridge (native nsdgeneral voxels)"),
        ]
        if config.get("registration", {}).get("method") == "nsd":
            keys.append(NeededKey(func_to_mni_key(s, space), "func_to_mni",
                                  f"{who} registration (method: nsd)"))
        for t in sessions_for(config, s):
            keys.append(NeededKey(betas_key(s, t, space, version), "betas",
                                  f"{who} session {t} evoked betas"))
            for r in REST_RUNS:
                keys.append(NeededKey(rest_key(s, t, r, space), "rest",
                                      f"{who} session {t} rest run{r:02d}"))
                if config.get("rest", {}).get("confounds") == "motion":
                    keys.append(NeededKey(motion_key(s, t, r, space), "motion",
                                          f"{who} session {t} rest run{r:02d} confounds"))
    return keys


def estimated_bytes(keys: list[NeededKey]) -> float:
    """Rough total download size of ``keys`` in bytes (1.8 mm NSD sizes)."""
    return float(sum(APPROX_BYTES[k.kind] for k in keys))
