"""Resting-state networks, their time courses and the native rest runs.

Four networks are defined in MNI space as sums of Gaussian blobs at anatomical
coordinates (``NETWORKS``): the default-mode network (PCC, mPFC, angular gyri),
visual, sensorimotor and fronto-parietal. Each subject gets its own topography: every
blob's centre is shifted (N(0, 3 mm) per axis), its amplitude and width scaled.

Two couplings of the default-mode network are simulated (``COUPLINGS``):

**zero_lag** (the default; the physiology): every node of the DMN — the PCC node
(``"pcc"`` map) and the rest of the network (``"dmn"`` map) — carries one shared course
c(t) plus its own node fluctuation: c_pcc = √(1−ν)·c + √ν·n₁, c_dmn = √(1−ν)·c + √ν·n₂
(ν = ``NODE_NOISE_VAR``; all 1/f). Nodes of a resting-state network co-fluctuate at
zero lag in BOLD data (the seed is itself a haemodynamic signal; Biswal et al. 1995,
Fox et al. 2005); the true seed map is then ``pcc`` + ``dmn`` (``truth.dmn_map``).

**hrf_driven** (the paper's implicit assumption, kept to test it; the generative form
of the paper's seed GLM): the DMN's
first blob, the PCC node (``"pcc"`` map), carries the PCC's own BOLD course p(t); the
rest of the network (``"dmn"`` map: mPFC, angular gyri, and ``−DMN_COUPLING · h_s`` in
visual cortex, the subject's gain topography of evoked responses, see ``responses``)
carries d(t) = (h ∗ p)(t), p convolved with the canonical (Glover) HRF h at the TR,
normalised to unit variance. The paper's rest map regresses every voxel on h ∗
bandpass(seed): under this model that regressor is, up to the band-pass and noise,
exactly d(t), so the PCC z-map estimates the ``"dmn"`` map (``truth.dmn_map``) up to
scale. The PCC node itself enters the map with a weight that depends on the run,
∝ corr(p, h ∗ bandpass(p)) (the HRF lags p by ~5 s): it is the seed, not part of what
the seed map recovers.
Under zero-lag coupling the paper's recipe regresses on h ∗ bandpass(c), and corr(c,
h ∗ bandpass(c)) averages ≈ −0.1 for 0.01–0.1 Hz signals and ≈ 0.2 ± 0.2 for 1/f ones
over 80–226 volumes: the map's sign and size vary per run. That is a property of the
method on realistic data, which the rest-map quality report measures.

A rest run of T volumes (TR in s) at native voxel v with true MNI position x_v is

    S(v, t) = B(v) · (1 + 0.01 · [Σ_n A_n m_n(x_v) c_n(t) + drift(v, t) + σ_w ε(v, t)])
              − ∇B(v) · Δ(v, t)

with B the EPI baseline (~1000, tissue dependent), m_n the maps (``pcc``, ``dmn``,
visual, sensorimotor, fronto-parietal; the PCC node and the driven DMN share the DMN
amplitude), c_n unit-variance courses: p and d as above, the other networks
independent, all with a 1/f^α power spectrum (α = ``SPECTRAL_EXPONENT``, resting BOLD's
scale-free spectrum) within ``BAND_HZ``; a slow polynomial drift; white noise ε of
σ_w = :func:`white_noise_pct` (it falls with voxel volume); and Δ the displacement of
voxel v by the head motion of the run (a small rigid random walk, written to the
motion TSV), so motion confounds are real.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rest2visual.nsd.simulate import fields
from rest2visual.preprocess.template import Grid

#: the native voxel size (mm) at which ``WHITE_NOISE_PCT_NSD`` holds (NSD's 1.8 mm)
NSD_VOXEL_MM = 1.8

#: name → list of (MNI centre mm, sigma mm, weight); x-mirrored pairs written out
NETWORKS = {
    "dmn": [((0, -52, 26), 9.0, 1.0), ((0, 52, -6), 10.0, 0.8),
            ((-46, -68, 32), 8.0, 0.7), ((46, -68, 32), 8.0, 0.7)],
    "visual": [((-10, -90, 2), 10.0, 1.0), ((10, -90, 2), 10.0, 1.0),
               ((-28, -78, -8), 10.0, 0.7), ((28, -78, -8), 10.0, 0.7)],
    "sensorimotor": [((-38, -24, 56), 10.0, 1.0), ((38, -24, 56), 10.0, 1.0),
                     ((0, -12, 60), 8.0, 0.7)],
    "frontoparietal": [((-44, 34, 26), 10.0, 1.0), ((44, 34, 26), 10.0, 1.0),
                       ((-40, -52, 44), 9.0, 0.9), ((40, -52, 44), 9.0, 0.9)],
}
#: the map and course carried by the DMN's first blob (the PCC node, the seed's source)
PCC = "pcc"
#: % signal change of each map's fluctuation at its peak (the PCC node is the DMN's)
AMPLITUDE_PCT = {PCC: 2.0, "dmn": 2.0, "visual": 1.2, "sensorimotor": 1.5,
                 "frontoparietal": 1.2}
#: names of the maps and courses, in the order of ``networks.nii.gz`` and the TSVs
MAP_NAMES = (PCC, *NETWORKS)
DMN_COUPLING = 0.3
#: how the DMN's nodes share their course (module docstring)
COUPLINGS = ("zero_lag", "hrf_driven")
#: ν: variance fraction of a DMN node's course that is its own (zero_lag coupling)
NODE_NOISE_VAR = 0.3
BLOB_SHIFT_MM = 3.0
BAND_HZ = (0.01, 0.1)
#: α of the 1/f^α power spectrum of every course within BAND_HZ
SPECTRAL_EXPONENT = 1.0
#: canonical HRF that turns the PCC course p into the driven DMN course h ∗ p
HRF_MODEL = "glover"
#: white noise (%) of a NSD_VOXEL_MM voxel; see :func:`white_noise_pct`
WHITE_NOISE_PCT_NSD = 1.8
DRIFT_PCT = 0.5
MOTION = {"translation_step_mm": 0.02, "rotation_step_rad": 0.0003}


def subject_blobs(subject: int, seed: int) -> dict[str, list[dict]]:
    """Each network's blobs with the subject's shifts and scalings (JSON-able)."""
    rng = fields.stream(seed, "networks.topography", subject)
    out = {}
    for name, blobs in NETWORKS.items():
        out[name] = [{"centre_mm": np.add(c, rng.normal(0, BLOB_SHIFT_MM, 3)).tolist(),
                      "sigma_mm": float(s * rng.uniform(0.9, 1.1)),
                      "weight": float(w * rng.uniform(0.8, 1.2))} for c, s, w in blobs]
    return out


def white_noise_pct(voxel_mm: float) -> float:
    """White noise σ_w (% of baseline) of a native voxel ``voxel_mm`` wide.

    ``WHITE_NOISE_PCT_NSD`` at NSD's 1.8 mm, scaled as (1.8 / voxel_mm)^{3/2}: a larger
    voxel averages (voxel_mm / 1.8)³ independent 1.8 mm ones (4 mm: 0.53 %).
    """
    return float(WHITE_NOISE_PCT_NSD * (NSD_VOXEL_MM / voxel_mm) ** 1.5)


def network_maps(grid: Grid, blobs: dict[str, list[dict]], brain_soft: np.ndarray,
                 h: np.ndarray, visual: np.ndarray) -> dict[str, np.ndarray]:
    """Every map of ``MAP_NAMES`` on ``grid`` (float32 (X, Y, Z), peak ~1, brain only).

    ``pcc``: the DMN's first blob (the PCC node); ``dmn``: the DMN's other blobs and
    ``−DMN_COUPLING · h · visual`` (the gain coupling), the part the PCC drives.
    """
    xyz = fields.grid_mm(grid)
    blob = lambda p: p["weight"] * fields.gaussian_blob(xyz, p["centre_mm"], p["sigma_mm"])
    maps = {PCC: blob(blobs["dmn"][0])}
    for name, parts in blobs.items():
        m = sum(blob(p) for p in (parts[1:] if name == "dmn" else parts))
        if name == "dmn":
            m = m - DMN_COUPLING * h * visual
        maps[name] = m
    return {name: (maps[name] * brain_soft).astype(np.float32) for name in MAP_NAMES}


def bandlimited(rng: np.random.Generator, n: int, tr_s: float,
                band_hz: tuple[float, float] = BAND_HZ,
                exponent: float = SPECTRAL_EXPONENT) -> np.ndarray:
    """Unit-variance noise (n,) float64 with a 1/f^``exponent`` power spectrum in ``band_hz``."""
    pad = 2 * n  # zero-padding against circular wrap-around of the filter
    spectrum = np.fft.rfft(rng.standard_normal(pad))
    freq = np.fft.rfftfreq(pad, tr_s)
    lo, hi = band_hz
    # raised-cosine band edges a fifth of an octave wide: no ringing
    edge = lambda f, f0: np.clip((np.log2(np.maximum(f, 1e-9) / f0) / 0.2 + 1) / 2, 0, 1)
    gain = np.sin(np.pi / 2 * edge(freq, lo)) * np.sin(np.pi / 2 * (1 - edge(freq, hi)))
    # amplitude f^(−α/2); the lower edge is zero below lo · 2^−0.2, so no pole at 0 Hz
    gain = gain * np.maximum(freq, lo * 2**-0.2) ** (-exponent / 2)
    x = np.fft.irfft(spectrum * gain, pad)[:n]
    return (x - x.mean()) / x.std()


def pcc_driven(rng: np.random.Generator, n: int, tr_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The PCC course p and the driven DMN course d = h ∗ p: two (n,) unit-variance series.

    p starts one HRF length before the run, so d(0) already has its full history.
    """
    from rest2visual.preprocess.signal import hrf_kernel

    kernel = hrf_kernel(tr_s, HRF_MODEL)
    history = len(kernel)
    p = bandlimited(rng, n + history, tr_s)
    d = np.convolve(p, kernel)[history:history + n]
    p = p[history:]
    return (p - p.mean()) / p.std(), (d - d.mean()) / d.std()


def zero_lag(rng: np.random.Generator, n: int, tr_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The PCC node's and the rest of the DMN's courses, sharing one zero-lag course c:
    √(1−ν)·c + √ν·n_node each (ν = ``NODE_NOISE_VAR``); two (n,) unit-variance series."""
    shared = bandlimited(rng, n, tr_s)
    nodes = [np.sqrt(1 - NODE_NOISE_VAR) * shared + np.sqrt(NODE_NOISE_VAR)
             * bandlimited(rng, n, tr_s) for _ in range(2)]
    return tuple((x - x.mean()) / x.std() for x in nodes)


def network_courses(rng: np.random.Generator, names, n: int, tr_s: float,
                    coupling: str = "zero_lag") -> np.ndarray:
    """(len(names), n) unit-variance courses: the DMN's ``pcc`` and ``dmn`` courses by
    ``coupling`` (zero-lag shared course, or p and h ∗ p), the other networks independent
    (all 1/f^α in ``BAND_HZ``)."""
    if coupling not in COUPLINGS:
        raise ValueError(f"DMN coupling must be one of {COUPLINGS}, got {coupling!r}")
    dmn = zero_lag if coupling == "zero_lag" else pcc_driven
    courses = dict(zip((PCC, "dmn"), dmn(rng, n, tr_s)))
    for name in names:
        if name not in courses:
            courses[name] = bandlimited(rng, n, tr_s)
    return np.stack([courses[name] for name in names])


def motion_parameters(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 6) head motion: 3 translations (mm), 3 rotations (rad), relative to volume 0."""
    steps = rng.standard_normal((n, 6)) * np.repeat(
        [MOTION["translation_step_mm"], MOTION["rotation_step_rad"]], 3)
    walk = np.cumsum(steps, axis=0)
    return walk - walk[0]


@dataclass
class RestSetup:
    """The subject's time-invariant rest quantities at its N in-mask native voxels.

    The model of the module docstring, linear in its time courses, as one product:
    S = B + ``loadings`` @ regressors(t) + 0.01 · B · σ_w · ε, the regressors being
    [A_n c_n(t) per map, drift(t), translation(t) (3, mm), rotation(t) (3, rad)].
    ``loadings`` (N, maps + 7): 0.01·B·m_n, 0.01·B·drift loading, −∇B, −(p × ∇B)
    with p the native header mm (a rotation ω changes the signal by −ω·(p × ∇B)).
    ``white_pct``: σ_w (%).
    """

    names: tuple[str, ...]
    baseline: np.ndarray
    loadings: np.ndarray
    white_pct: float

    @classmethod
    def build(cls, maps: dict[str, np.ndarray], baseline: np.ndarray, gradient: np.ndarray,
              position_mm: np.ndarray, drift_loading: np.ndarray,
              white_pct: float) -> "RestSetup":
        """From map loadings (name → (N,)), B (N,), ∇B (N, 3) per mm, p (N, 3), (N,), σ_w %."""
        pct = 0.01 * baseline[:, None]
        loadings = np.concatenate([pct * np.stack(list(maps.values()), axis=1),
                                   pct * drift_loading[:, None], -gradient,
                                   -np.cross(position_mm, gradient)], axis=1)
        return cls(tuple(maps), baseline.astype(np.float32), loadings.astype(np.float32),
                   float(white_pct))


def epi_baseline(anatomy: np.ndarray, brain: np.ndarray, voxel_mm: float) -> np.ndarray:
    """EPI mean image B (float32, native): ~1000 in brain (T2*-like contrast), ~400 around it."""
    t1 = anatomy.astype(np.float32) / 1000.0
    brain_soft = fields.soft_mask(brain, 2 * voxel_mm, voxel_mm)
    return (400.0 + brain_soft * 800.0 * (1.1 - 0.45 * t1)).astype(np.float32)


def true_seed_map(maps: dict[str, np.ndarray], coupling: str) -> np.ndarray:
    """What a PCC seed map should recover: the loadings on the DMN's shared course.

    zero_lag: the whole DMN, ``pcc`` + ``dmn``; hrf_driven: ``dmn`` (the part driven
    by h ∗ p; the PCC node enters with a run-dependent weight)."""
    if coupling not in COUPLINGS:
        raise ValueError(f"DMN coupling must be one of {COUPLINGS}, got {coupling!r}")
    return maps["dmn"] + maps[PCC] if coupling == "zero_lag" else maps["dmn"]


def rest_run(setup: RestSetup, volumes: int, tr_s: float, rng: np.random.Generator,
             chunk: int = 65536, coupling: str = "zero_lag"
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate one rest run at the in-mask voxels (``coupling``: see ``COUPLINGS``).

    Returns (data int16 (N, T), time courses (maps, T) float64, motion (T, 6)).
    """
    courses = network_courses(rng, setup.names, volumes, tr_s, coupling)
    amps = np.array([AMPLITUDE_PCT[n] for n in setup.names])[:, None]
    motion = motion_parameters(rng, volumes)
    t = np.linspace(-1, 1, volumes)
    drift = (rng.normal(0, 1) * t + rng.normal(0, 0.5) * (1.5 * t**2 - 0.5)) * DRIFT_PCT
    regressors = np.concatenate([amps * courses, drift[None], motion.T]).astype(np.float32)
    n_vox = setup.baseline.size
    out = np.empty((n_vox, volumes), np.int16)
    for s in range(0, n_vox, chunk):
        sl = slice(s, min(s + chunk, n_vox))
        base = setup.baseline[sl, None]
        noise = rng.standard_normal((sl.stop - sl.start, volumes), dtype=np.float32)
        white = np.float32(0.01 * setup.white_pct) * base * noise
        signal = base + setup.loadings[sl] @ regressors + white
        out[sl] = np.clip(np.rint(signal), 0, 32767).astype(np.int16)
    return out, courses, motion
