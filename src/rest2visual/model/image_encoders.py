"""Image encoders E_img: uint8 RGB images → feature vectors.

The paper does not name its image encoder, so it is a config choice
(``model.image_encoder``):

- ``gabor``: a fixed Gabor wavelet pyramid (the classic encoding model of early
  visual cortex, Kay et al. 2008, Nature 452:352) plus colour-opponent and
  luminance statistics, pooled on a spatial grid: no weights, nothing to
  download or learn, identical on every machine (the demo default, frozen);
- ``small_cnn``: a small CNN trained from scratch with the rest of the model
  (needs no download, but learns image features from the training images only);
- ``resnet18`` / ``resnet50``: torchvision ResNets without their classifier
  (512 / 2048 features), weights from a local state-dict file;
- ``open_clip:<arch>`` (e.g. ``open_clip:ViT-B-32``): an OpenCLIP image tower,
  weights from a local checkpoint file or an OpenCLIP pretrained tag resolved
  through the user's hub cache.

Every encoder takes uint8 images (B, 3, S, S) — the pack's images, any S — and
does its own scaling, resizing (to the tower's input size where it has one)
and normalisation, so the cached-embedding path and the end-to-end path see
identical inputs. torchvision and open_clip are imported only when asked for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: the Gabor pyramid's input size (pixels): its frequencies are cycles per pixel of this
GABOR_INPUT_SIZE = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KNOWN = ("gabor", "small_cnn", "resnet18", "resnet50", "open_clip:<arch>")
#: encoders with no learnt weights: the same features everywhere, so they can be frozen
#: (and their features cached) without a weights file
DETERMINISTIC = ("gabor",)


class ImageEncoder(nn.Module):
    """Scale uint8 → [0, 1], resize to ``input_size`` (if set), normalise, run ``backbone``.

    ``feature_dim``: size of the (B, feature_dim) output. Mean/std are
    non-persistent buffers, so a checkpoint holds only learnt weights.
    """

    def __init__(self, name: str, backbone: nn.Module, feature_dim: int, *,
                 mean: Sequence[float], std: Sequence[float], input_size: int | None = None):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected uint8 images (B, 3, S, S), "
                             f"got {images.dtype} {tuple(images.shape)}")
        x = images.float().div_(255.0)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size,) * 2:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bicubic",
                              align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        return self.backbone(x)


class SmallCNN(nn.Module):
    """Four stride-2 conv blocks (32→64→128→128 channels), global mean pool, linear head.

    Input (B, 3, S, S) normalised images, any S ≥ 16; output (B, feature_dim).
    """

    def __init__(self, feature_dim: int = 128, width: int = 32):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                       nn.GroupNorm(8, c_out), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class GaborPyramid(nn.Module):
    """Gabor energy at ``len(frequencies)`` scales × ``orientations`` orientations, plus
    colour-opponent and luminance statistics, each averaged over a ``grid``×``grid``
    partition of the image (rows top → bottom = upper → lower visual field).

    Input (B, 3, S, S) RGB in [0, 1] (the :class:`ImageEncoder` scales uint8 and resizes
    to ``input_size`` pixels first, so the filters' frequencies, in cycles per pixel of
    that size, mean the same cycles per image for any pack). Per grid cell:

    - energy: ``log1p(|L ∗ G_{f,θ}| / ENERGY_SCALE)`` averaged over the cell, where L is
      luminance (Rec. 601 weights), G the complex Gabor filter of
      :func:`skimage.filters.gabor_kernel` (bandwidth 1 octave) and |·| the quadrature-pair
      energy (the complex-cell model); log1p is the compressive static nonlinearity;
    - colour: mean and RMS of the opponent channels rg = R − G and yb = (R + G)/2 − B;
    - luminance: mean L.

    Output (B, feature_dim) float32, ``feature_dim = grid² · (n_scales · n_orientations + 5)``
    (272 with the defaults). The filters are non-persistent buffers: no parameters, and a
    checkpoint holds nothing of this encoder.
    """

    ENERGY_SCALE = 0.002

    def __init__(self, frequencies: Sequence[float] = (0.25, 0.125, 0.0625),
                 orientations: int = 4, grid: int = 4):
        super().__init__()
        from skimage.filters import gabor_kernel

        self.grid = int(grid)
        kernels = [gabor_kernel(f, theta=np.pi * k / orientations, bandwidth=1)
                   for f in frequencies for k in range(orientations)]
        size = max(max(k.shape) for k in kernels)
        bank = np.zeros((2 * len(kernels), 1, size, size), dtype=np.float32)
        for i, k in enumerate(kernels):
            r0, c0 = (size - k.shape[0]) // 2, (size - k.shape[1]) // 2
            bank[2 * i, 0, r0:r0 + k.shape[0], c0:c0 + k.shape[1]] = k.real
            bank[2 * i + 1, 0, r0:r0 + k.shape[0], c0:c0 + k.shape[1]] = k.imag
        self.register_buffer("bank", torch.from_numpy(bank), persistent=False)
        self.n_filters = len(kernels)
        self.feature_dim = self.grid ** 2 * (self.n_filters + 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        lum = 0.299 * r + 0.587 * g + 0.114 * b
        pad = self.bank.shape[-1] // 2
        # reflect padding: the image border is not an edge
        quad = F.conv2d(F.pad(lum - lum.mean(dim=(2, 3), keepdim=True), (pad,) * 4,
                              mode="reflect"), self.bank)
        energy = quad.unflatten(1, (self.n_filters, 2)).square().sum(2).sqrt()
        rg, yb = r - g, 0.5 * (r + g) - b
        maps = torch.cat([torch.log1p(energy / self.ENERGY_SCALE), rg, yb,
                          rg.square(), yb.square(), lum], dim=1)
        pooled = F.adaptive_avg_pool2d(maps, self.grid)  # (B, n_filters + 5, grid, grid)
        n = self.n_filters
        pooled = torch.cat([pooled[:, : n + 2], pooled[:, n + 2: n + 4].sqrt(),
                            pooled[:, n + 4:]], dim=1)
        return pooled.flatten(1)


def weights_sha256(path: str | Path | None) -> str:
    """sha256 hex digest of a weights file ('' for None: random initialisation)."""
    if path is None:
        return ""
    digest = hashlib.sha256()
    with open(require_weights(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(name: str, weights: str | Path | None) -> str:
    """What identifies an encoder's weights: a file's sha256, an OpenCLIP tag, or '' (random)."""
    if weights is None:
        return ""
    if str(name).startswith("open_clip:") and not Path(weights).is_file():
        return f"open_clip-pretrained:{weights}"
    return weights_sha256(weights)


def require_weights(path: str | Path, encoder: str | None = None) -> Path:
    """``path`` as a Path; FileNotFoundError naming the key (and, given ``encoder``, where its
    weights come from) when it is not a file."""
    path = Path(path)
    if not path.is_file():
        from rest2visual.model.encoder_weights import how_to_obtain

        hint = f"; {how_to_obtain(encoder)}" if encoder else ""
        raise FileNotFoundError(f"{path}: image encoder weights file not found "
                                f"(model.encoder_weights; null means random initialisation){hint}")
    return path


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, read with ``weights_only=True`` (no pickled code).

    Accepts a bare state dict or a training checkpoint holding ``state_dict``;
    strips a DistributedDataParallel ``module.`` prefix.
    """
    path = require_weights(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read image encoder weights as a state dict with "
                         f"weights_only=True ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (name → tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(module: nn.Module, state: dict, path, allowed_missing: str = "") -> None:
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys
               if not (allowed_missing and k.startswith(allowed_missing))]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit {type(module).__name__}: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {result.unexpected_keys[:5]}"
                         f"{'...' if len(result.unexpected_keys) > 5 else ''}")


def _resnet(name: str, weights) -> ImageEncoder:
    try:
        import torchvision
    except ImportError as exc:
        raise ImportError(f"image encoder {name!r} needs torchvision, which is not installed; "
                          "install the torchvision build that matches your torch, or use "
                          "model.image_encoder: small_cnn") from exc
    net = getattr(torchvision.models, name)(weights=None)
    if weights is not None:
        # a headless state dict (no fc.*) is fine: the classifier is dropped anyway
        _load_into(net, load_state_dict_file(weights), weights, allowed_missing="fc.")
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return ImageEncoder(name, net, feature_dim, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _open_clip(name: str, weights) -> ImageEncoder:
    arch = name.split(":", 1)[1]
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError(f"image encoder {name!r} needs open_clip "
                          "(pip install open_clip_torch)") from exc
    if arch not in open_clip.list_models():
        raise ValueError(f"image encoder {name!r}: unknown OpenCLIP architecture {arch!r}; "
                         f"known: {', '.join(open_clip.list_models()[:20])}, ...")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights is not None and not Path(weights).is_file() and str(weights) in tags:
        # a pretrained tag: open_clip resolves it through the hub cache (downloads if allowed)
        model = open_clip.create_model(arch, pretrained=str(weights))
    else:
        if weights is not None:
            require_weights(weights, name)
        model = open_clip.create_model(arch, pretrained=None)
        if weights is not None:
            state = load_state_dict_file(weights)
            if any(k.startswith("visual.") for k in state):
                state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
            _load_into(model.visual, state, weights)
    visual = model.visual
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return ImageEncoder(name, visual, visual.output_dim, mean=mean, std=std, input_size=size)


def build_image_encoder(name: str, weights: str | Path | None = None, *,
                        feature_dim: int = 128) -> ImageEncoder:
    """The image encoder called ``name`` (see module docstring), optionally with weights.

    ``feature_dim`` sets the output size of ``small_cnn`` only (pretrained
    towers have their own). Unknown names raise ValueError; a missing weights
    file raises FileNotFoundError naming the path.
    """
    name = str(name)
    if name == "gabor":
        if weights is not None:
            raise ValueError("image encoder 'gabor' has no weights: set model.encoder_weights "
                             f"to null (got {weights!r})")
        pyramid = GaborPyramid()
        # filters are defined on [0, 1] RGB: no mean/std normalisation
        return ImageEncoder(name, pyramid, pyramid.feature_dim, mean=(0.0,) * 3,
                            std=(1.0,) * 3, input_size=GABOR_INPUT_SIZE)
    if weights is not None and not (name.startswith("open_clip:")):
        require_weights(weights, name)
    if name == "small_cnn":
        encoder = ImageEncoder(name, SmallCNN(feature_dim), feature_dim,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD)
        if weights is not None:
            state = load_state_dict_file(weights)
            if not any(k.startswith("backbone.") for k in state):
                state = {f"backbone.{k}": v for k, v in state.items()}
            _load_into(encoder, state, weights)
        return encoder
    if name in ("resnet18", "resnet50"):
        return _resnet(name, weights)
    if name.startswith("open_clip:") and len(name) > len("open_clip:"):
        return _open_clip(name, weights)
    raise ValueError(f"unknown image encoder {name!r}; known: {', '.join(KNOWN)}")
