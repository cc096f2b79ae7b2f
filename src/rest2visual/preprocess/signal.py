"""Temporal processing of a seed time series: Butterworth band-pass and HRF convolution.

Both act on time series sampled every ``tr_s`` seconds (the run's repetition
time). The band-pass is applied forward and backward (zero phase, so the seed
is not shifted in time; the effective gain is |H(f)|², the order doubles). The
HRF convolution is causal: the full convolution truncated to the first T
samples, as an event-related regressor would be.
"""

from __future__ import annotations

import numpy as np

from rest2visual.checks import InputError

#: canonical HRF models understood by :func:`hrf_kernel` (nilearn's names)
CANONICAL_HRFS = ("glover", "spm")
#: what :func:`hrf_convolve` accepts: a canonical HRF (the paper's recipe) or ``none``
#: (zero lag: the seed series is already a haemodynamic signal; the field's standard
#: seed-based connectivity)
HRF_MODELS = (*CANONICAL_HRFS, "none")


def butterworth_sos(tr_s: float, low_hz: float, high_hz: float, order: int = 2) -> np.ndarray:
    """Second-order sections of a Butterworth band-pass ``low_hz``–``high_hz`` (Hz) at 1/``tr_s`` Hz.

    Raises ValueError unless 0 < low_hz < high_hz < Nyquist (1 / (2·tr_s)) and order ≥ 1.
    """
    from scipy import signal as sp_signal

    if not tr_s > 0:
        raise ValueError(f"repetition time must be > 0 s, got {tr_s}")
    nyquist = 0.5 / tr_s
    if not 0 < low_hz < high_hz < nyquist:
        raise ValueError(
            f"band-pass cutoffs must satisfy 0 < low < high < Nyquist ({nyquist:.4g} Hz at "
            f"TR {tr_s:.4g} s), got low={low_hz} Hz, high={high_hz} Hz"
        )
    if int(order) != order or order < 1:
        raise ValueError(f"filter order must be a positive integer, got {order}")
    return sp_signal.butter(int(order), [low_hz, high_hz], btype="band", fs=1.0 / tr_s,
                            output="sos")


def min_timepoints(sos: np.ndarray) -> int:
    """Fewest samples ``scipy.signal.sosfiltfilt`` accepts with its default padding for ``sos``.

    scipy pads each end by 3 × the number of taps and needs strictly more samples
    than that (same rule as in ``sosfiltfilt``).
    """
    ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return 3 * ntaps + 1


def bandpass(x: np.ndarray, tr_s: float, low_hz: float, high_hz: float,
             order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass of ``x`` along its last axis (time).

    Parameters
    ----------
    x : (..., T) time series sampled every ``tr_s`` seconds.
    tr_s : repetition time, s.
    low_hz, high_hz : pass band, Hz.
    order : Butterworth order of the single pass (``scipy.signal.butter``); applied
        forward and backward with ``sosfiltfilt`` (odd padding).

    Returns
    -------
    (..., T) float64 filtered series.

    Raises InputError when T is too short for the filter's edge padding.
    """
    from scipy import signal as sp_signal

    x = np.asarray(x, dtype=np.float64)
    sos = butterworth_sos(tr_s, low_hz, high_hz, order)
    needed = min_timepoints(sos)
    if x.shape[-1] < needed:
        raise InputError(
            f"{x.shape[-1]} time points are too few for an order-{order} Butterworth band-pass "
            f"applied forward-backward: sosfiltfilt needs at least {needed}"
        )
    return sp_signal.sosfiltfilt(sos, x, axis=-1)


def hrf_kernel(tr_s: float, model: str = "glover") -> np.ndarray:
    """Canonical HRF sampled every ``tr_s`` s over 32 s (nilearn's ``glover_hrf``/``spm_hrf``).

    Returns a (K,) float64 kernel, sum 1 (nilearn's normalisation), K = ceil(32 / tr_s).
    """
    from nilearn.glm.first_level import glover_hrf, spm_hrf

    kernels = {"glover": glover_hrf, "spm": spm_hrf}
    if model not in kernels:
        raise ValueError(f"unknown HRF model {model!r}; expected one of {CANONICAL_HRFS}")
    if not tr_s > 0:
        raise ValueError(f"repetition time must be > 0 s, got {tr_s}")
    return np.asarray(kernels[model](tr_s, oversampling=1), dtype=np.float64)


def hrf_convolve(x: np.ndarray, tr_s: float, model: str = "glover") -> np.ndarray:
    """Causal convolution of a (T,) series with the canonical HRF; returns (T,) float64.

    The full convolution is truncated to its first T samples, so sample t only
    depends on samples ≤ t (the haemodynamic response lags the neural signal).
    ``model="none"`` returns the series unchanged (zero-lag seed regression).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1D time series, got shape {x.shape}")
    if model == "none":
        return x.copy()
    return np.convolve(x, hrf_kernel(tr_s, model))[: x.shape[0]]
