"""Visual ROIs, the subject gain topography and evoked single-trial betas (in MNI).

The ROI atlas (labels 1..5 = V1..V5) is a set of bilateral balls at plausible
occipital MNI coordinates, kept inside the MNI brain mask. A trial's beta (percent
signal change) at MNI point x is

    β(x) = g_s(x) · Σ_f (P ∗ W_f)(x) φ_f(image) + σ(x) · ξ_trial(x)

- φ: the image's features (``stimuli.FEATURES``, z-scored over the image set) plus an
  intercept (every image evokes a positive response in visual cortex);
- W_f: response weights. Quadrant contrast energy drives V1–V3 retinotopically: the
  contralateral hemisphere (left visual field → right hemisphere, MNI x > 0), upper
  field → ventral bank (below the calcarine, z < ~4 mm), lower field → dorsal bank;
  central energy drives the occipital pole (fovea); colourfulness drives V4, edge
  density V5 (and V3), luminance V1;
- P: the point-spread function of the measurement, a Gaussian of FWHM
  ``PSF_FWHM_VOXELS`` native voxels (:func:`psf_fwhm_mm`): a voxel of the native grid
  cannot resolve detail finer than itself, and fMRI maps are ~2 voxels smooth (EPI
  point spread, interpolation in preprocessing);
- g_s = max(1 + GAIN_STRENGTH · h_s, 0.1): the subject's gain topography, h_s a smooth
  random field (FWHM 14 mm) of unit variance in visual cortex, drawn per subject;
- ξ: unit-variance trial noise, 70 % broad (FWHM 12 mm: physiological, vascular) +
  30 % fine (voxel noise seen through P: FWHM of P), scaled by σ(x): 1 %
  in the brain and up to ``outside_margin_mm`` beyond it, rising to 6 % further out
  (the skull and scalp voxels NSD's liberal mask keeps around the brain).

Every MNI field is thus smooth at the native voxel scale, so the MNI truth (the
lattice values, ``truth.true_mni_betas``) is what a pipeline can recover from the
native betas up to registration error; fields with voxel-scale detail on the MNI
lattice would be lost to the two interpolations (MNI → native → MNI) whatever the
pipeline did.

**How the rest scan reveals g_s.** The same field h_s is part of the subject's
PCC-driven default-mode map: in visual cortex its loading is ``−DMN_COUPLING · h_s``
(times the soft visual-cortex region; ``networks.network_maps``), i.e. where a
subject's visual cortex is more anticorrelated with the DMN at rest, it responds more
strongly to images. A PCC seed GLM therefore recovers −h_s in visual cortex, and the
rest map carries information about that subject's response amplitudes that no image
feature does.

All fields are volumes on the truth lattice (``fields``); :func:`iter_trial_betas`
yields each trial's lattice volume (the MNI truth) which the writer samples at the
native voxels' true MNI positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import ndimage

from rest2visual.nsd.simulate import fields
from rest2visual.nsd.simulate.stimuli import FEATURES
from rest2visual.preprocess.template import Grid

ROI_NAMES = ("V1", "V2", "V3", "V4", "V5")
#: label → list of (MNI centre mm, radius mm); each centre mirrored to both hemispheres
ROI_BALLS = {
    1: [((8, -94, 4), 11.0)],
    2: [((12, -90, 18), 8.0), ((12, -86, -9), 8.0)],
    3: [((22, -88, 24), 8.0), ((22, -82, -13), 8.0)],
    4: [((30, -74, -14), 9.0)],
    5: [((44, -70, 4), 9.0)],
}
GAIN_STRENGTH = 0.45
#: FWHM of the measurement's point-spread function, in native voxels
PSF_FWHM_VOXELS = 2.0
GAIN_FWHM_MM = 14.0
#: percent signal change per standardized feature unit (intercept: per image)
WEIGHTS = {"intercept": 1.2, "intercept_brain": 0.15, "quadrant": 0.7, "centre": 0.5,
           "colour": 0.9, "edges": 0.8, "edges_v3": 0.3, "luminance": 0.3}
NOISE = {"brain_pct": 1.0, "outside_pct": 6.0, "outside_margin_mm": 4.0,
         "broad_fwhm_mm": 12.0, "broad_fraction": 0.7}
CALCARINE_Z_MM = 4.0
FOVEA_Y_MM = -96.0
PSC_SCALE = 300  # NSD: int16 = percent signal change × 300


def psf_fwhm_mm(voxel_mm: float) -> float:
    """FWHM (mm) of the point-spread function of native voxels ``voxel_mm`` wide."""
    return float(PSF_FWHM_VOXELS * voxel_mm)


def roi_atlas(grid: Grid, brain: np.ndarray) -> np.ndarray:
    """V1..V5 labels (int16 (X, Y, Z), 0 background) on ``grid``, inside ``brain``.

    A voxel takes the label of the ball it is deepest in (distance / radius).
    """
    xyz = fields.grid_mm(grid)
    best = np.full(grid.shape, np.inf)
    labels = np.zeros(grid.shape, np.int16)
    for label, balls in ROI_BALLS.items():
        for (cx, cy, cz), radius in balls:
            for hemi in (1, -1):
                d = np.linalg.norm(xyz - np.array([hemi * cx, cy, cz]), axis=-1) / radius
                closer = (d < 1.0) & (d < best) & brain
                labels[closer] = label
                best[closer] = d[closer]
    return labels


def gain_field(grid: Grid, visual: np.ndarray, subject: int, seed: int) -> np.ndarray:
    """h_s: the subject's smooth random topography, unit std within ``visual`` (float32)."""
    rng = fields.stream(seed, "responses.gain", subject)
    h = fields.smooth_noise(rng, grid.shape, GAIN_FWHM_MM, grid.voxel_mm)
    inside = visual > 0.5
    return ((h - h[inside].mean()) / h[inside].std()).astype(np.float32)


def gain_map(h: np.ndarray) -> np.ndarray:
    """g_s = max(1 + GAIN_STRENGTH · h_s, 0.1), float32."""
    return np.maximum(1.0 + GAIN_STRENGTH * h, 0.1).astype(np.float32)


@dataclass
class ResponseModel:
    """Everything that turns (image features, trial noise) into MNI beta volumes.

    ``weights``: (1 + len(FEATURES), X, Y, Z) float32, P ∗ W, intercept first; ``gain``:
    g_s (X, Y, Z); ``noise_sd``: σ(x) in % (X, Y, Z); ``grid``: the truth lattice;
    ``psf_fwhm_mm``: FWHM of P (mm), the scale of the fine trial noise.
    """

    grid: Grid
    weights: np.ndarray
    gain: np.ndarray
    noise_sd: np.ndarray
    psf_fwhm_mm: float

    def signal(self, phi: np.ndarray) -> np.ndarray:
        """Noise-free beta volume (%) for standardized features ``phi`` (len(FEATURES),)."""
        total = self.weights[0].copy()
        for w, f in zip(self.weights[1:], np.asarray(phi, dtype=np.float32)):
            total += f * w
        return self.gain * total

    def signal_sd(self, feature_cov: np.ndarray) -> np.ndarray:
        """Std over images of the noise-free response (X, Y, Z), given the features' covariance."""
        w = self.weights[1:].reshape(len(FEATURES), -1)
        var = np.einsum("fv,fg,gv->v", w, feature_cov, w)
        return (self.gain.reshape(-1) * np.sqrt(np.maximum(var, 0))).reshape(self.grid.shape)


def response_weights(grid: Grid, atlas: np.ndarray, brain_soft: np.ndarray,
                     psf_fwhm: float) -> np.ndarray:
    """P ∗ W: (1 + len(FEATURES), X, Y, Z) float32 response weights (module docstring),
    blurred by the point-spread function of FWHM ``psf_fwhm`` mm."""
    vox = grid.voxel_mm
    roi = {label: fields.soft_mask(atlas == label, 4.0, vox) for label in range(1, 6)}
    early = np.clip(roi[1] + roi[2] + roi[3], 0, 1)
    visual = np.clip(sum(roi.values()), 0, 1)
    xyz = fields.grid_mm(grid)
    right = fields.sigmoid(xyz[..., 0] / 2.0)  # right hemisphere ← left visual field
    dorsal = fields.sigmoid((xyz[..., 2] - CALCARINE_Z_MM) / 3.0)  # dorsal ← lower field
    fovea = fields.sigmoid((FOVEA_Y_MM - xyz[..., 1]) / 3.0)
    q = WEIGHTS["quadrant"]
    per_feature = {
        "energy_upper_left": q * early * right * (1 - dorsal),
        "energy_upper_right": q * early * (1 - right) * (1 - dorsal),
        "energy_lower_left": q * early * right * dorsal,
        "energy_lower_right": q * early * (1 - right) * dorsal,
        "energy_centre": WEIGHTS["centre"] * early * fovea,
        "colourfulness": WEIGHTS["colour"] * roi[4],
        "edge_density": WEIGHTS["edges"] * roi[5] + WEIGHTS["edges_v3"] * roi[3],
        "luminance": WEIGHTS["luminance"] * roi[1],
    }
    intercept = WEIGHTS["intercept"] * visual + WEIGHTS["intercept_brain"] * brain_soft
    weights = np.stack([intercept, *(per_feature[f] for f in FEATURES)]).astype(np.float32)
    sigma = fields.sigma_voxels(psf_fwhm, vox)
    return ndimage.gaussian_filter(weights, (0, sigma, sigma, sigma), mode="constant")


def visual_support(grid: Grid, atlas: np.ndarray) -> np.ndarray:
    """Soft visual-cortex region (0..1, float32): the ROI atlas blurred by 8 mm FWHM."""
    return fields.soft_mask(atlas > 0, 8.0, grid.voxel_mm)


def noise_sd_map(grid: Grid, brain: np.ndarray) -> np.ndarray:
    """σ(x) (%, float32 (X, Y, Z)): ``brain_pct`` in the brain and ``outside_margin_mm``
    beyond it, rising (4 mm FWHM edge) to ``outside_pct`` further out."""
    steps = int(round(NOISE["outside_margin_mm"] / grid.voxel_mm))
    near = ndimage.binary_dilation(brain, iterations=steps) if steps else brain
    near_soft = fields.soft_mask(near, 4.0, grid.voxel_mm)
    return (NOISE["brain_pct"] * near_soft
            + NOISE["outside_pct"] * (1 - near_soft)).astype(np.float32)


def build_response_model(grid: Grid, atlas: np.ndarray, brain: np.ndarray,
                         gain: np.ndarray, voxel_mm: float) -> ResponseModel:
    """The subject's response model from the truth lattice's atlas, brain mask and g_s,
    for native voxels ``voxel_mm`` wide (they set the point-spread function)."""
    brain_soft = fields.soft_mask(brain, 4.0, grid.voxel_mm)
    psf = psf_fwhm_mm(voxel_mm)
    return ResponseModel(grid, response_weights(grid, atlas, brain_soft, psf), gain,
                         noise_sd_map(grid, brain), psf)


def iter_trial_betas(model: ResponseModel, phi: np.ndarray, subject: int, session: int,
                     seed: int) -> Iterator[np.ndarray]:
    """Yield each trial's MNI beta volume (%, float32 (X, Y, Z)) in trial order.

    ``phi``: (trials, len(FEATURES)) standardized features of the images shown. The
    trial noise comes from one stream per (subject, session), drawn trial by trial, so
    the same volumes come back whenever they are regenerated.
    """
    rng = fields.stream(seed, "responses.trial_noise", subject, session)
    a = np.float32(np.sqrt(NOISE["broad_fraction"]))
    b = np.float32(np.sqrt(1 - NOISE["broad_fraction"]))
    for row in np.asarray(phi):
        broad = fields.smooth_noise(rng, model.grid.shape, NOISE["broad_fwhm_mm"],
                                    model.grid.voxel_mm)
        fine = fields.smooth_noise(rng, model.grid.shape, model.psf_fwhm_mm,
                                   model.grid.voxel_mm)
        yield model.signal(row) + model.noise_sd * (a * broad + b * fine)


def to_int16_psc(beta_pct: np.ndarray) -> np.ndarray:
    """NSD's storage: percent signal change × 300, rounded, int16 (saturating)."""
    return np.clip(np.rint(beta_pct * PSC_SCALE), -32768, 32767).astype(np.int16)
