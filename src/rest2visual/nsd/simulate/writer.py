"""Write a simulated NSD: NSD's keys under ``root/nsd``, the ground truth under ``root/truth``.

Everything is written into a hidden temporary sibling of ``root`` which is renamed to
``root`` only when complete, so a finished ``root`` is always whole (and
``truth/params.json``, written last, says so). Memory is bounded by one session at a
time: trial betas are generated trial by trial, rest runs voxel chunk by chunk.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rest2visual.atomic import atomic_path, save_nifti, temporary_sibling
from rest2visual.nsd import keys
from rest2visual.nsd.simulate import anatomy, design, fields, networks, responses, stimuli, truth
from rest2visual.preprocess.template import Grid, mni_brain_mask, mni_grid

FORMAT = "rest2visual simulated NSD"
# 2: PCC-driven DMN (pcc map and course), PSF-smooth betas; 3: NSD-exact files (design in
# NSD's layout with stride 750, NaN ncsnr outside the mask, NSD's 1 mm transforms and header,
# xyzt_units = 0 with pixdim[4] = 4/3); 4: the DMN's coupling is a parameter (zero_lag by
# default), dmn_map.nii.gz the true seed map under it; 5: NSD's MNI → func map
# (transforms/MNI-to-func1pt8.nii.gz, the inverse of func1pt8-to-MNI, for the decoding bridge)
FORMAT_VERSION = 5


@dataclass(frozen=True)
class SimulatedNSD:
    """A written simulated NSD: ``nsd_root`` holds NSD's keys, ``truth_root`` the truth."""

    root: Path
    nsd_root: Path
    truth_root: Path
    params: dict


#: pixdim[4] of NSD's 1.8 mm time series: 4/3, though the true TR is 1.33317 s (NSD.md)
NSD_PIXDIM4_FUNC1PT8MM = 4.0 / 3.0


def _nifti(data: np.ndarray, affine: np.ndarray, *, mni: bool = False,
           pixdim4: float | None = None):
    """A NIfTI image as NSD writes it, or (``mni``) a truth file on the MNI grid.

    NSD's files come from a MATLAB toolbox that leaves ``xyzt_units`` = 0 (unknown),
    so readers cannot trust pixdim[4] as a TR; ``pixdim4`` is stored as NSD stores it.
    """
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    code = "mni" if mni else "scanner"
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    if pixdim4 is not None:
        img.header.set_zooms(img.header.get_zooms()[:3] + (float(pixdim4),))
    if mni:
        img.header.set_xyzt_units("mm")
    else:
        img.header["xyzt_units"] = 0
    return img


def _save_tsv(table: pd.DataFrame, path: Path, **kwargs) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, **kwargs)


def _check_args(subjects, sessions, trials_per_session, voxel_mm, volumes, n_images, n_shared,
                mni_resolution_mm, tr_s, dmn_coupling) -> None:
    if dmn_coupling not in networks.COUPLINGS:
        raise ValueError(f"dmn_coupling must be one of {', '.join(networks.COUPLINGS)}, "
                         f"got {dmn_coupling!r}")
    bad = [s for s in subjects if s not in keys.SUBJECTS]
    if not subjects or bad or len(set(subjects)) != len(subjects):
        raise ValueError(f"subjects must be distinct NSD subjects 1..8, got {list(subjects)}")
    if (not sessions or len(set(sessions)) != len(sessions)
            or any(not 1 <= s <= design.DESIGN_SESSIONS for s in sessions)):
        raise ValueError(f"sessions must be distinct session numbers 1..{design.DESIGN_SESSIONS}, "
                         f"got {list(sessions)}")
    checks = {"trials_per_session": (trials_per_session, 1), "volumes": (volumes, 16),
              "n_images": (n_images, 2), "n_shared": (n_shared, 1)}
    for name, (value, low) in checks.items():
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    if trials_per_session > keys.TRIALS_PER_SESSION:
        raise ValueError(f"trials_per_session must be at most NSD's {keys.TRIALS_PER_SESSION} "
                         f"(a simulated session is the first trials of an NSD session), "
                         f"got {trials_per_session}")
    if n_shared >= n_images:
        raise ValueError(f"n_shared ({n_shared}) must be smaller than n_images ({n_images})")
    for name, value in {"voxel_mm": voxel_mm, "mni_resolution_mm": mni_resolution_mm,
                        "tr_s": tr_s}.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def _check_target(root: Path) -> None:
    """``root`` may be absent or hold only empty folders (Snakemake pre-creates output dirs)."""
    if root.exists():
        files = [p for p in root.rglob("*") if not p.is_dir()] if root.is_dir() else [root]
        if files:
            raise FileExistsError(f"{root}: already exists and holds {len(files)} file(s) "
                                  f"(e.g. {files[0]}); remove it to simulate anew")


def simulate_nsd(root, *, subjects=(1, 2), sessions=(21, 22), trials_per_session=40,
                 voxel_mm=4.0, volumes=100, n_images=200, n_shared=40, mni_resolution_mm=4.0,
                 tr_s=1.33318, dmn_coupling="zero_lag", seed=0) -> SimulatedNSD:
    """Write a simulated NSD at ``root`` (see the package docstring) and return where.

    ``root/nsd`` holds NSD's keys (``rest2visual.nsd.keys``) for ``subjects`` ×
    ``sessions``; ``root/truth`` the ground truth (``truth``). ``voxel_mm``: native voxel
    size (NSD 1.8); ``volumes``: rest volumes per run; ``tr_s``: TR in s;
    ``mni_resolution_mm``: the truth grid; ``dmn_coupling``: how the default-mode
    network's nodes share their course (``networks.COUPLINGS``). NSD's func → MNI
    coordinate maps are on NSD's own grid (FSL MNI152 1 mm, 182×218×182) whatever the
    truth grid; its MNI → func maps are on each subject's native grid, their values
    coordinates in that 1 mm array.
    Deterministic in ``seed``.
    """
    subjects, sessions = [int(s) for s in subjects], [int(s) for s in sessions]
    _check_args(subjects, sessions, trials_per_session, voxel_mm, volumes, n_images, n_shared,
                mni_resolution_mm, tr_s, dmn_coupling)
    root = Path(root)
    _check_target(root)
    params = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "seed": int(seed),
        "subjects": subjects, "sessions": sessions,
        "trials_per_session": int(trials_per_session), "voxel_mm": float(voxel_mm),
        "volumes": int(volumes), "n_images": int(n_images), "n_shared": int(n_shared),
        "mni_resolution_mm": float(mni_resolution_mm), "tr_s": float(tr_s),
        "dmn_coupling": str(dmn_coupling),
    }
    tmp = temporary_sibling(root)
    tmp.mkdir(parents=True)
    try:
        _write_all(tmp, params)
        if root.exists():
            _check_target(root)
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return SimulatedNSD(root, root / "nsd", root / "truth", params)


def _write_all(out: Path, params: dict) -> None:
    nsd, truth_root = out / "nsd", out / "truth"
    seed = params["seed"]
    features = stimuli.write_stimuli(nsd / keys.STIMULI, params["n_images"], seed)
    stimuli.write_features(features, truth_root / truth.FEATURES_CSV)
    # generate from the stored (round-tripped) features: the truth readers see the same
    phi = stimuli.standardized_features(stimuli.read_features(truth_root / truth.FEATURES_CSV))
    exp = design.make_design(params["n_images"], params["n_shared"],
                             params["trials_per_session"], seed)
    design.write_expdesign(exp, nsd / keys.EXPDESIGN)
    design.write_stim_info(design.stim_info_table(exp, params["n_images"], seed),
                           nsd / keys.STIM_INFO)
    grid = mni_grid(params["mni_resolution_mm"])
    brain = np.asarray(mni_brain_mask(params["mni_resolution_mm"]).dataobj) > 0
    save_nifti(_nifti(brain.astype(np.uint8), grid.affine, mni=True), truth_root / truth.BRAIN_MASK)
    atlas = responses.roi_atlas(grid, brain)
    save_nifti(_nifti(atlas, grid.affine, mni=True), truth_root / truth.ROI_ATLAS)
    _save_tsv(pd.DataFrame({"index": range(1, 6), "name": responses.ROI_NAMES}),
              truth_root / truth.ROI_LABELS)
    lattice = _Lattice(grid, brain, atlas, responses.visual_support(grid, atlas),
                       fields.soft_mask(brain, 4.0, grid.voxel_mm))
    per_subject = {str(s): _write_subject(nsd, truth_root, s, params, lattice, exp, phi)
                   for s in params["subjects"]}
    params.update({
        "truth_grid": {"shape": list(grid.shape), "affine": grid.affine.tolist()},
        "coordmap_grid": {"shape": list(anatomy.FSL_1MM.shape),
                          "affine": anatomy.FSL_1MM.affine.tolist(),
                          "header_affine": anatomy.NSD_MNI_HEADER_AFFINE.tolist()},
        "design": {"sessions": design.DESIGN_SESSIONS, "list_length": int(exp.subjectim.shape[1]),
                   "compact_list_length": exp.compact_list_length,
                   "showings_per_image": exp.showings_per_image,
                   "disjoint_subject_images": exp.disjoint_subject_images},
        "features": list(stimuli.FEATURES),
        "networks": {"names": list(networks.MAP_NAMES), "amplitude_pct": networks.AMPLITUDE_PCT,
                     "dmn_visual_coupling": networks.DMN_COUPLING,
                     "band_hz": list(networks.BAND_HZ),
                     "spectral_exponent": networks.SPECTRAL_EXPONENT,
                     "coupling": params["dmn_coupling"],
                     "node_noise_var": networks.NODE_NOISE_VAR,
                     "driven_by_pcc": ({"map": "dmn", "hrf_model": networks.HRF_MODEL}
                                       if params["dmn_coupling"] == "hrf_driven" else None),
                     "white_noise_pct": networks.white_noise_pct(params["voxel_mm"]),
                     "drift_pct": networks.DRIFT_PCT, "motion": networks.MOTION},
        "responses": {"roi_names": list(responses.ROI_NAMES),
                      "roi_balls": {str(k): v for k, v in responses.ROI_BALLS.items()},
                      "weights": responses.WEIGHTS, "noise": responses.NOISE,
                      "psf_fwhm_mm": responses.psf_fwhm_mm(params["voxel_mm"]),
                      "gain_strength": responses.GAIN_STRENGTH,
                      "gain_fwhm_mm": responses.GAIN_FWHM_MM, "psc_scale": responses.PSC_SCALE},
        "per_subject": per_subject,
        "complete": True,
    })
    with atomic_path(truth_root / truth.PARAMS) as tmp:
        tmp.write_text(json.dumps(params, indent=1))


@dataclass(frozen=True)
class _Lattice:
    """The truth grid and the MNI fields shared by all subjects."""

    grid: Grid
    brain: np.ndarray
    atlas: np.ndarray
    visual: np.ndarray
    brain_soft: np.ndarray


def _nsdgeneral(lattice: _Lattice, positions_mm: np.ndarray,
                brain_native: np.ndarray) -> np.ndarray:
    """NSD's nsdgeneral ROI in native space: −1 outside the brain, 1 within ~12 mm of V1–V5."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(lattice.atlas == 0) * lattice.grid.voxel_mm
    region = fields.sample((dist <= 12.0).astype(np.float32), lattice.grid.affine,
                           positions_mm.reshape(-1, 3), order=0, mode="constant")
    out = np.where(brain_native, 0, -1).astype(np.int16)
    out[brain_native & (region.reshape(brain_native.shape) > 0.5)] = 1
    return out


def _write_subject(nsd: Path, truth_root: Path, subject: int, params: dict, lattice: _Lattice,
                   exp: design.SimulatedDesign, phi: np.ndarray) -> dict:
    seed, grid, vox = params["seed"], lattice.grid, params["voxel_mm"]
    space = anatomy.make_subject_space(subject, vox, seed)
    header = space.header_affine
    sub_truth = truth.subject_dir(truth_root, subject)
    voxel_mni = space.voxel_mni_mm()
    t1 = anatomy.native_anatomy(space, voxel_mni, seed)
    save_nifti(_nifti(t1, header), nsd / keys.anatomy_key(subject))
    brain = anatomy.native_brain(space, voxel_mni)
    liberal = anatomy.liberal_brainmask(brain, vox)
    save_nifti(_nifti(liberal.astype(np.int16), header), nsd / keys.brainmask_key(subject))
    save_nifti(_nifti(_nsdgeneral(lattice, voxel_mni, brain), header),
               nsd / keys.nsdgeneral_key(subject))
    coords = space.mni_to_native(fields.grid_mm(grid).reshape(-1, 3)).reshape(*grid.shape, 3)
    save_nifti(_nifti(coords.astype(np.float32), grid.affine, mni=True),
               sub_truth / "mni_to_native_coords.nii.gz")
    # NSD's transform: FSL's 1 mm grid in the array, NSD's centred header (nsdcode ignores it)
    save_nifti(_nifti(anatomy.func_to_mni_coordmap(space, anatomy.FSL_1MM),
                      anatomy.NSD_MNI_HEADER_AFFINE),
               nsd / keys.func_to_mni_key(subject))
    # ... and its inverse, on the native grid with the native header (as NSD's func files)
    save_nifti(_nifti(anatomy.mni_to_func_coordmap(voxel_mni, anatomy.FSL_1MM), header),
               nsd / keys.mni_to_func_key(subject))
    save_nifti(_nifti(voxel_mni.astype(np.float32), header), sub_truth / "native_to_mni_mm.nii.gz")

    h = responses.gain_field(grid, lattice.visual, subject, seed)
    gain = responses.gain_map(h)
    save_nifti(_nifti(gain, grid.affine, mni=True), sub_truth / "gain_map.nii.gz")
    blobs = networks.subject_blobs(subject, seed)
    maps = networks.network_maps(grid, blobs, lattice.brain_soft, h, lattice.visual)
    save_nifti(_nifti(networks.true_seed_map(maps, params["dmn_coupling"]), grid.affine, mni=True),
               sub_truth / "dmn_map.nii.gz")
    save_nifti(_nifti(np.stack(list(maps.values()), axis=-1), grid.affine, mni=True),
               sub_truth / "networks.nii.gz")

    positions = voxel_mni[liberal]
    at_voxels = fields.Sampler(grid, positions)
    model = responses.build_response_model(grid, lattice.atlas, lattice.brain, gain, vox)
    # NSD writes NaN for invalid voxels (nsddatapaper export_noiseceiling.m): outside the mask
    ncsnr = np.full(space.shape, np.nan, np.float32)
    ncsnr[liberal] = (at_voxels(model.signal_sd(np.cov(phi.T, bias=True)))
                      / at_voxels(model.noise_sd))
    save_nifti(_nifti(ncsnr, header), nsd / keys.ncsnr_key(subject))

    rest = _rest_setup(space, maps, t1, brain, liberal, at_voxels, seed)
    for session in params["sessions"]:
        record = exp.session_record(subject, session)
        _save_tsv(record, truth.session_file(truth_root, subject, session, "trials.tsv"))
        _write_betas(nsd, subject, session, space, liberal, at_voxels, model,
                     phi[record["nsd_id"].to_numpy()], seed)
        for run in keys.REST_RUNS:
            _write_rest_run(nsd, truth_root, subject, session, run, space, liberal, rest, params)
    return {**space.to_json(), "networks": blobs}


def _write_betas(nsd, subject, session, space, liberal, at_voxels, model, phi, seed) -> None:
    # Fortran order: NIfTI's on-disk order, so saving needs no transposed copy
    betas = np.zeros((*space.shape, len(phi)), np.int16, order="F")
    for t, volume in enumerate(responses.iter_trial_betas(model, phi, subject, session, seed)):
        betas[..., t][liberal] = responses.to_int16_psc(at_voxels(volume))
    save_nifti(_nifti(betas, space.header_affine, pixdim4=1.0),
               nsd / keys.betas_key(subject, session))


def _rest_setup(space, maps, t1, brain, liberal, at_voxels, seed) -> networks.RestSetup:
    baseline = networks.epi_baseline(t1, brain, space.voxel_mm)
    gradient = np.stack(np.gradient(baseline, space.voxel_mm), axis=-1)[liberal]
    position = np.argwhere(liberal) @ space.header_affine[:3, :3].T + space.header_affine[:3, 3]
    rng = fields.stream(seed, "networks.drift_loading", space.subject)
    drift = 1.0 + 0.3 * rng.standard_normal() + 0.3 * np.tanh(position @ rng.normal(0, 0.02, 3))
    return networks.RestSetup.build({name: at_voxels(m) for name, m in maps.items()},
                                    baseline[liberal], gradient, position, drift,
                                    networks.white_noise_pct(space.voxel_mm))


def _write_rest_run(nsd, truth_root, subject, session, run, space, liberal, rest, params) -> None:
    rng = fields.stream(params["seed"], "networks.rest_run", subject, session, run)
    data, courses, motion = networks.rest_run(rest, params["volumes"], params["tr_s"], rng,
                                              coupling=params["dmn_coupling"])
    series = np.zeros((*space.shape, params["volumes"]), np.int16, order="F")
    series[liberal] = data
    # generated at the true TR (params["tr_s"]); the header says what NSD's says
    save_nifti(_nifti(series, space.header_affine, pixdim4=NSD_PIXDIM4_FUNC1PT8MM),
               nsd / keys.rest_key(subject, session, run))
    # NSD's motion files: 6 tab-separated columns, no header (3 translations mm, 3 rotations rad)
    _save_tsv(pd.DataFrame(motion), nsd / keys.motion_key(subject, session, run),
              header=False, float_format="%.6f")
    _save_tsv(pd.DataFrame(courses.T, columns=rest.names),
              truth.session_file(truth_root, subject, session, f"run-{run:02d}_timecourses.tsv"),
              float_format="%.9g")
