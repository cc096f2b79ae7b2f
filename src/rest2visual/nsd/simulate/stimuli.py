"""Procedural stimulus images (NSD's ``imgBrick``) and the features that drive responses.

Each image is a 425×425 RGB scene: a two-colour background (sky/ground with a
horizon, sometimes a grating texture) and 1–8 coloured shapes (disks, ellipses,
rectangles, triangles, striped bars). Where the shapes cluster, how saturated the
palette is and how much texture there is vary from image to image, so the features
below vary independently enough to be identifiable. Image ``i`` depends only on
``(seed, i)``.

Features (computed from the pixels, image rows top → bottom = upper → lower visual
field, columns left → right = left → right visual field):

- ``energy_upper_left`` … ``energy_lower_right``: RMS luminance gradient (contrast
  energy) in each visual-field quadrant; ``energy_centre``: within the central disk
  (radius 20 % of the image);
- ``colourfulness``: Hasler & Süsstrunk's (2003) opponent-colour statistic;
- ``edge_density``: fraction of pixels on a luminance edge;
- ``luminance``: mean luminance (0–1).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import draw

from rest2visual.atomic import atomic_path
from rest2visual.nsd.simulate.fields import stream

IMAGE_SIZE = 425
FEATURES = ("energy_upper_left", "energy_upper_right", "energy_lower_left",
            "energy_lower_right", "energy_centre", "colourfulness", "edge_density", "luminance")
_FOCI = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75), (0.5, 0.5))


def _colour(rng: np.random.Generator, saturation: float) -> np.ndarray:
    grey = rng.uniform(20, 235)
    hue = rng.uniform(0, 255, 3)
    return np.clip(grey + saturation * (hue - hue.mean()) * 1.6, 0, 255)


def render_image(seed: int, nsd_id: int) -> np.ndarray:
    """Image ``nsd_id`` (0-based) of the simulated set: (425, 425, 3) uint8."""
    rng = stream(seed, "stimuli.image", nsd_id)
    s = IMAGE_SIZE
    saturation = rng.uniform(0.0, 1.0) ** 0.7
    rows = np.arange(s, dtype=np.float32)[:, None]
    horizon = rng.uniform(0.3, 0.7) * s
    sky, ground = _colour(rng, saturation), _colour(rng, saturation)
    blend = np.clip((rows - horizon) / rng.uniform(2, 60) + 0.5, 0, 1)  # (s, 1)
    background = (sky * (1 - blend) + ground * blend).astype(np.float32)  # (s, 3)
    if rng.random() < 0.4:  # texture above or below the horizon: upper ≠ lower field energy
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        cols = np.arange(s, dtype=np.float32)[None, :]
        phase = (np.cos(angle) * cols + np.sin(angle) * rows) * np.float32(2 * np.pi / period)
        half = blend if rng.random() < 0.5 else 1 - blend
        texture = np.float32(rng.uniform(10, 50)) * np.sin(phase) * half
        img = np.clip(np.rint(background[:, None, :] + texture[..., None]), 0, 255).astype(np.uint8)
    else:
        img = np.broadcast_to(np.rint(background).astype(np.uint8)[:, None, :], (s, s, 3)).copy()
    focus = np.asarray(_FOCI[rng.integers(len(_FOCI))]) * s
    spread = rng.uniform(0.12, 0.5) * s
    for _ in range(int(rng.integers(1, 9))):
        r0, c0 = np.clip(focus + rng.normal(0, spread, 2), 0, s - 1)
        size = rng.uniform(12, 110)
        kind = rng.integers(5)
        if kind == 0:
            rr, cc = draw.disk((r0, c0), size, shape=(s, s))
        elif kind == 1:
            rr, cc = draw.ellipse(r0, c0, size, size * rng.uniform(0.3, 1), shape=(s, s),
                                  rotation=rng.uniform(0, np.pi))
        elif kind in (2, 3):
            rr, cc = draw.rectangle((r0 - size / 2, c0 - size / 2),
                                    extent=(size, size * rng.uniform(0.4, 2.5)), shape=(s, s))
        else:
            ang = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2])
            rr, cc = draw.polygon(r0 + size * np.sin(ang), c0 + size * np.cos(ang), shape=(s, s))
        colour = np.rint(_colour(rng, saturation)).astype(np.uint8)
        if kind == 3:  # striped bar: many edges in a small region
            stripes = ((rr + cc) // int(rng.integers(3, 9))) % 2 == 0
            img[rr[stripes], cc[stripes]] = colour
            img[rr[~stripes], cc[~stripes]] = 255 - colour
        else:
            img[rr, cc] = colour
    return img


def image_features(img: np.ndarray) -> dict[str, float]:
    """The response-driving features of one (425, 425, 3) uint8 image (see module docstring)."""
    # 2×2 block means: the same statistics at a quarter of the cost
    rgb = img[:424, :424].astype(np.float32)
    rgb = 0.25 * (rgb[0::2, 0::2] + rgb[1::2, 0::2] + rgb[0::2, 1::2] + rgb[1::2, 1::2])
    lum = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255.0
    grad = np.hypot(ndimage.sobel(lum, 0), ndimage.sobel(lum, 1)) / 8.0
    energy = grad**2
    h = lum.shape[0] // 2
    rr, cc = np.ogrid[:lum.shape[0], :lum.shape[1]]
    centre = (rr - h + 0.5) ** 2 + (cc - h + 0.5) ** 2 <= (0.2 * lum.shape[0]) ** 2
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return {
        "energy_upper_left": float(np.sqrt(energy[:h, :h].mean())),
        "energy_upper_right": float(np.sqrt(energy[:h, h:].mean())),
        "energy_lower_left": float(np.sqrt(energy[h:, :h].mean())),
        "energy_lower_right": float(np.sqrt(energy[h:, h:].mean())),
        "energy_centre": float(np.sqrt(energy[centre].mean())),
        "colourfulness": float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())),
        "edge_density": float((grad > 0.02).mean()),
        "luminance": float(lum.mean()),
    }


def write_stimuli(path: str | os.PathLike, n_images: int, seed: int) -> pd.DataFrame:
    """Write ``nsd_stimuli.hdf5`` (``imgBrick`` (n, 425, 425, 3) uint8, one chunk per image).

    Returns the features table: one row per image, ``nsd_id`` (0-based) + FEATURES.
    gzip level 1 keeps the flat-coloured scenes small; h5py reads it transparently.
    """
    import h5py

    rows = []
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            brick = f.create_dataset("imgBrick", (n_images, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8,
                                     chunks=(1, IMAGE_SIZE, IMAGE_SIZE, 3), compression="gzip",
                                     compression_opts=1)
            for i in range(n_images):
                img = render_image(seed, i)
                brick[i] = img
                rows.append({"nsd_id": i, **image_features(img)})
    return pd.DataFrame(rows, columns=["nsd_id", *FEATURES])


def write_features(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Save the features table as CSV with round-trip exact floats."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.17g")


def read_features(path: str | os.PathLike) -> pd.DataFrame:
    """Read a features table written by :func:`write_features` (rows sorted by nsd_id)."""
    table = pd.read_csv(path)
    missing = [c for c in ("nsd_id", *FEATURES) if c not in table.columns]
    if missing:
        from rest2visual.checks import InputError

        raise InputError(f"{path}: image features table lacks columns {missing}")
    return table.sort_values("nsd_id").reset_index(drop=True)


def standardized_features(table: pd.DataFrame) -> np.ndarray:
    """Features z-scored over the image set: (n_images, len(FEATURES)) float64."""
    x = table[list(FEATURES)].to_numpy(dtype=np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
