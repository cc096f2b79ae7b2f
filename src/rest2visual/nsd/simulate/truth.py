"""Ground truth of a simulated NSD (``<root>/truth``): where it lies and how to read it.

Layout::

    truth/params.json                  every generative parameter (written last: marks completion)
    truth/image_features.csv           per image: nsd_id + stimuli.FEATURES (raw values)
    truth/mni_brain_mask.nii.gz        the MNI brain mask of the truth grid
    truth/roi_atlas.nii.gz, roi_labels.tsv   V1..V5 (int16 labels 1..5) on the truth grid
    truth/sub-XX/mni_to_native_coords.nii.gz  (X, Y, Z, 3) 0-based native voxel coords per MNI voxel
    truth/sub-XX/native_to_mni_mm.nii.gz      (x, y, z, 3) true MNI mm per native voxel
    truth/sub-XX/dmn_map.nii.gz, networks.nii.gz, gain_map.nii.gz   (truth grid)
    truth/sub-XX/ses-NN_trials.tsv            what each trial showed (generator's record)
    truth/sub-XX/ses-NN_run-RR_timecourses.tsv   time courses of a rest run (pcc, dmn, ...)

``networks.nii.gz`` holds the maps ``pcc`` (the PCC node, the seed's source), ``dmn``
(the rest of the default-mode network), ``visual``,
``sensorimotor``, ``frontoparietal`` (``params["networks"]["names"]``); ``dmn_map`` is
the true seed map under ``params["dmn_coupling"]`` (``networks.true_seed_map``).

The truth grid is FSL's MNI152 grid at ``mni_resolution_mm`` (``mni_grid``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from rest2visual.checks import InputError, require_file

PARAMS = "params.json"
FEATURES_CSV = "image_features.csv"
BRAIN_MASK = "mni_brain_mask.nii.gz"
ROI_ATLAS = "roi_atlas.nii.gz"
ROI_LABELS = "roi_labels.tsv"


def subject_dir(truth_root: str | os.PathLike, subject: int) -> Path:
    return Path(truth_root) / f"sub-{subject:02d}"


def session_file(truth_root, subject: int, session: int, suffix: str) -> Path:
    """``truth/sub-XX/ses-NN_<suffix>``."""
    return subject_dir(truth_root, subject) / f"ses-{session:02d}_{suffix}"


def _load(path: Path, what: str):
    import nibabel as nib

    return nib.load(str(require_file(path, what)))


def load_params(truth_root: str | os.PathLike) -> dict:
    """All generative parameters of the simulation (params.json)."""
    path = require_file(Path(truth_root) / PARAMS, "simulated NSD parameters (params.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def mni_to_native_coords(truth_root, subject: int) -> np.ndarray:
    """(X, Y, Z, 3) float32 on the truth MNI grid: the 0-based native voxel (i, j, k) each
    MNI voxel truly comes from (may lie outside the native grid)."""
    img = _load(subject_dir(truth_root, subject) / "mni_to_native_coords.nii.gz",
                "true MNI → native coordinates")
    return np.asarray(img.dataobj, dtype=np.float32)


def native_to_mni_mm(truth_root, subject: int) -> np.ndarray:
    """(x, y, z, 3) float32 on the native grid: each native voxel's true MNI mm."""
    img = _load(subject_dir(truth_root, subject) / "native_to_mni_mm.nii.gz",
                "true native → MNI mm")
    return np.asarray(img.dataobj, dtype=np.float32)


def dmn_map(truth_root, subject: int):
    """The subject's true PCC connectivity map on the truth grid (``networks.true_seed_map``
    under the simulation's ``dmn_coupling``): the loading of every voxel on the DMN's
    shared course. zero_lag: the whole DMN (PCC node + mPFC, angular gyri, and
    −coupling · h_s in visual cortex); hrf_driven: the part driven by h ∗ p, what the
    paper's PCC seed GLM recovers up to scale and noise (the PCC node,
    ``network_maps(...)["pcc"]``, enters with a run-dependent weight). Compare within the
    brain mask (it is zero outside)."""
    return _load(subject_dir(truth_root, subject) / "dmn_map.nii.gz", "true DMN map")


def network_maps(truth_root, subject: int) -> dict[str, np.ndarray]:
    """Every network's true map on the truth grid: name → float32 (X, Y, Z)."""
    img = _load(subject_dir(truth_root, subject) / "networks.nii.gz", "true network maps")
    names = load_params(truth_root)["networks"]["names"]
    data = np.asarray(img.dataobj, dtype=np.float32)
    return {name: data[..., i] for i, name in enumerate(names)}


def gain_map(truth_root, subject: int):
    """g_s: the subject's gain topography of evoked responses (MNI grid, float32)."""
    return _load(subject_dir(truth_root, subject) / "gain_map.nii.gz", "true gain map")


def roi_atlas(truth_root):
    """The simulated visual ROI atlas: int16 labels, 0 background, 1..5 = V1..V5 (MNI grid)."""
    return _load(Path(truth_root) / ROI_ATLAS, "simulated ROI atlas")


def mni_brain_mask(truth_root):
    """The MNI brain mask the simulation used on its truth grid (uint8 0/1)."""
    return _load(Path(truth_root) / BRAIN_MASK, "truth MNI brain mask")


def image_features(truth_root) -> pd.DataFrame:
    """Per image (nsd_id, 0-based): the raw features that drove the responses."""
    from rest2visual.nsd.simulate.stimuli import read_features

    return read_features(require_file(Path(truth_root) / FEATURES_CSV, "image features"))


def trial_record(truth_root, subject: int, session: int) -> pd.DataFrame:
    """What the generator showed in (subject, session).

    Columns: trial, nsd_id, list_index, shared, repeat."""
    path = require_file(session_file(truth_root, subject, session, "trials.tsv"), "trial record")
    return pd.read_csv(path, sep="\t")


def timecourses(truth_root, subject: int, session: int, run: int) -> pd.DataFrame:
    """The time courses (unit variance, one column per map of ``network_maps``) of a rest
    run: ``pcc`` is p, ``dmn`` is h ∗ p, the other networks independent."""
    name = f"run-{run:02d}_timecourses.tsv"
    path = require_file(session_file(truth_root, subject, session, name), "rest time courses")
    return pd.read_csv(path, sep="\t")


def truth_grid(params: dict):
    """The truth lattice (``Grid``) recorded in params."""
    from rest2visual.preprocess.template import Grid

    g = params["truth_grid"]
    return Grid(shape=tuple(g["shape"]), affine=np.asarray(g["affine"], dtype=float))


def response_model(truth_root, subject: int):
    """The subject's ``responses.ResponseModel``, rebuilt from the stored truth."""
    from rest2visual.nsd.simulate.responses import build_response_model

    params = load_params(truth_root)
    grid = truth_grid(params)
    brain = np.asarray(mni_brain_mask(truth_root).dataobj) > 0
    atlas = np.asarray(roi_atlas(truth_root).dataobj, dtype=np.int16)
    gain = np.asarray(gain_map(truth_root, subject).dataobj, dtype=np.float32)
    return build_response_model(grid, atlas, brain, gain, params["voxel_mm"])


def true_mni_betas(truth_root, subject: int, session: int) -> np.ndarray:
    """(X, Y, Z, trials) float32 on the truth grid: the trial betas in % signal change
    exactly as generated in MNI space, trial noise included, before they were sampled
    into native space and quantised (regenerated from the seed and the stored truth).

    Every part is smooth at the native voxel scale (``responses``: the point-spread
    function), so this is what resampling the native betas to MNI can recover, up to
    registration error; compare within the brain mask."""
    from rest2visual.nsd.simulate.responses import iter_trial_betas
    from rest2visual.nsd.simulate.stimuli import standardized_features

    params = load_params(truth_root)
    if subject not in params["subjects"] or session not in params["sessions"]:
        raise InputError(f"{Path(truth_root) / PARAMS}: subject {subject} session {session} "
                         f"was not simulated (subjects {params['subjects']}, "
                         f"sessions {params['sessions']})")
    model = response_model(truth_root, subject)
    phi = standardized_features(image_features(truth_root))
    shown = trial_record(truth_root, subject, session)["nsd_id"].to_numpy()
    out = np.empty((*model.grid.shape, len(shown)), np.float32)
    for t, volume in enumerate(iter_trial_betas(model, phi[shown], subject, session,
                                                params["seed"])):
        out[..., t] = volume
    return out
