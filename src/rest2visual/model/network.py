"""The Rest2Visual network: a 3D encoder–decoder conditioned on an image embedding.

f(z, v) = D_cond(E_vol(z), E_img(v))  (paper Section 3.2):

- ``E_vol``: a 3D convolutional encoder on the rest z-map (1 channel, MNI grid),
  one residual block per level, halving the grid between levels; it keeps the
  features of every scale for the skip connections.
- ``E_img``: an image encoder (:mod:`rest2visual.model.image_encoders`) giving
  ``feature_dim`` features, projected here by a small MLP to the ``embed_dim``
  conditioning embedding ``e``. A frozen encoder's features are first
  standardized with the mean and SD of the training images' features
  (:meth:`Rest2Visual.fit_feature_standardization`, stored in the checkpoint):
  raw frozen features can share a large common offset and differ in scale by
  orders of magnitude, and the MLP then barely sees what tells images apart.
- ``D_cond``: upsampling with skip connections; every decoder block (the
  bottleneck included) normalises with :class:`AdaptiveGroupNorm`, so the image
  enters at every scale as a per-channel scale and shift.

Volumes are ``(B, 1, X, Y, Z)`` on the MNI grid (e.g. 91×109×91 at 2 mm); the
network pads them (zeros, at the high end of each axis) to a multiple of
``2**(levels-1)`` (the number of halvings) and crops the output back, so any
grid works. The output is the predicted beta map (% signal change) on the same grid.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rest2visual.config import defaults as config_defaults

#: defaults of the config's ``model`` block: the paper-sized values of the config
#: schema (rest2visual/config.schema.yaml, read here); the demo config sets smaller ones
MODEL_DEFAULTS = config_defaults("model")


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine parameters, then ``(1 + γ(e))·h + β(e)``.

    γ and β are one linear map of the embedding ``e`` (B, embed_dim) → (B, 2·C),
    initialised to zero so that at initialisation the block is a plain GroupNorm
    and the image has no effect; the first gradient step makes it count.
    """

    def __init__(self, channels: int, groups: int, embed_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.to_scale_shift = nn.Linear(embed_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.to_scale_shift(e).chunk(2, dim=1)
        shape = gamma.shape + (1,) * (h.ndim - 2)
        return self.norm(h) * (1 + gamma.view(shape)) + beta.view(shape)


class ResBlock3d(nn.Module):
    """Two 3×3×3 convolutions with group norm and SiLU, plus a residual path.

    With ``embed_dim`` the norms are :class:`AdaptiveGroupNorm` (decoder);
    without, affine GroupNorm (encoder).
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int, embed_dim: int | None = None):
        super().__init__()
        self.conditional = embed_dim is not None
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1)
        if self.conditional:
            self.norm1 = AdaptiveGroupNorm(out_ch, groups, embed_dim)
            self.norm2 = AdaptiveGroupNorm(out_ch, groups, embed_dim)
        else:
            self.norm1 = nn.GroupNorm(groups, out_ch)
            self.norm2 = nn.GroupNorm(groups, out_ch)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv3d(in_ch, out_ch, 1)

    def _norm(self, norm: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        return norm(h, e) if self.conditional else norm(h)

    def forward(self, x: torch.Tensor, e: torch.Tensor | None = None) -> torch.Tensor:
        h = F.silu(self._norm(self.norm1, self.conv1(x), e))
        h = self._norm(self.norm2, self.conv2(h), e)
        return F.silu(h + self.skip(x))


def check_widths(widths: Sequence[int], groups: int) -> list[int]:
    """Validate encoder widths (one per level) against the GroupNorm group count."""
    widths = [int(w) for w in widths]
    if not widths or any(w <= 0 for w in widths):
        raise ValueError(f"model.widths must be a non-empty list of positive ints, got {widths}")
    bad = [w for w in widths if w % int(groups)]
    if bad:
        raise ValueError(f"model.widths {widths}: {bad} not divisible by model.groups={groups} "
                         "(GroupNorm needs channels % groups == 0)")
    return widths


class ConditionalUNet3D(nn.Module):
    """E_vol + D_cond: rest volume (B,1,X,Y,Z) and embedding (B,embed_dim) → (B,1,X,Y,Z)."""

    def __init__(self, widths: Sequence[int], groups: int, embed_dim: int):
        super().__init__()
        widths = check_widths(widths, groups)
        self.widths = widths
        self.levels = len(widths)
        self.stem = nn.Conv3d(1, widths[0], 3, padding=1)
        self.enc = nn.ModuleList([ResBlock3d(widths[0], widths[0], groups)])
        self.down = nn.ModuleList()
        for i in range(1, self.levels):
            # learnt stride-2 downsampling keeps voxel correspondences exact (kernel = stride)
            self.down.append(nn.Conv3d(widths[i - 1], widths[i], 2, stride=2))
            self.enc.append(ResBlock3d(widths[i], widths[i], groups))
        self.bottleneck = ResBlock3d(widths[-1], widths[-1], groups, embed_dim)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(self.levels - 1)):
            self.up.append(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2))
            self.dec.append(ResBlock3d(2 * widths[i], widths[i], groups, embed_dim))
        self.head = nn.Conv3d(widths[0], 1, 1)

    @property
    def multiple(self) -> int:
        """Spatial sizes are padded to a multiple of this (2 ** number of halvings)."""
        return 2 ** (self.levels - 1)

    def padded_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        m = self.multiple
        return tuple(-(-int(s) // m) * m for s in shape)

    def forward(self, rest: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if rest.ndim != 5 or rest.shape[1] != 1:
            raise ValueError(f"expected rest volumes (B, 1, X, Y, Z), got {tuple(rest.shape)}")
        spatial = rest.shape[2:]
        padded = self.padded_shape(spatial)
        # F.pad takes (last-dim-low, last-dim-high, ...) pairs, last axis first
        pad = [p for s, t in zip(reversed(spatial), reversed(padded)) for p in (0, t - s)]
        h = F.pad(rest, pad) if any(pad) else rest
        h = self.enc[0](self.stem(h))
        skips = [h]
        for down, block in zip(self.down, self.enc[1:]):
            h = block(down(h))
            skips.append(h)
        h = self.bottleneck(h, e)
        for up, block, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            h = block(torch.cat([up(h), skip], dim=1), e)
        out = self.head(h)
        return out[..., : spatial[0], : spatial[1], : spatial[2]]


class Rest2Visual(nn.Module):
    """The whole model: rest volume + image (or cached image features) → beta volume.

    ``image_encoder`` maps uint8 images (B, 3, S, S) to (B, feature_dim)
    features; with a frozen encoder the training loop passes cached ``features``
    instead and the encoder only serves prediction from raw images.
    """

    def __init__(self, image_encoder: nn.Module, *, widths: Sequence[int], groups: int,
                 embed_dim: int, freeze_image_encoder: bool = False):
        super().__init__()
        self.image_encoder = image_encoder
        self.freeze_image_encoder = bool(freeze_image_encoder)
        if self.freeze_image_encoder:
            image_encoder.requires_grad_(False)
        feature_dim = int(image_encoder.feature_dim)
        self.image_proj = nn.Sequential(
            nn.Linear(feature_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim), nn.SiLU()
        )
        self.unet = ConditionalUNet3D(widths, groups, embed_dim)
        # identity until fit_feature_standardization; persistent: part of the checkpoint
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    def fit_feature_standardization(self, features: torch.Tensor) -> None:
        """Set the feature mean and SD from ``features`` (n_images, feature_dim) — the
        training images' frozen-encoder features, one row per distinct image. Features
        with SD < 1e-6 of the largest SD are only centred."""
        features = torch.as_tensor(features, dtype=torch.float64)
        if features.ndim != 2 or features.shape[1] != self.feature_mean.numel() or len(features) < 2:
            raise ValueError(f"expected (n ≥ 2, {self.feature_mean.numel()}) image features, "
                             f"got {tuple(features.shape)}")
        std = features.std(dim=0)
        std = torch.where(std > 1e-6 * std.max(), std, torch.ones_like(std))
        self.feature_mean.copy_(features.mean(dim=0).float())
        self.feature_std.copy_(std.float())

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_image_encoder:
            # a frozen encoder stays in eval mode (no norm statistics updates)
            self.image_encoder.eval()
        return self

    def to_channels_last(self) -> "Rest2Visual":
        """Channels-last weights (3D convs: channels_last_3d, 2D image convs: channels_last),
        the layout cuDNN's fastest (tensor-core) kernels use; returns self."""
        self.unet.to(memory_format=torch.channels_last_3d)
        self.image_encoder.to(memory_format=torch.channels_last)
        return self

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, S, S) → (B, feature_dim) float32 features."""
        if self.freeze_image_encoder:
            with torch.no_grad():
                return self.image_encoder(images).float()
        return self.image_encoder(images).float()

    def forward(self, rest: torch.Tensor, images: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> torch.Tensor:
        """rest (B,1,X,Y,Z) float; images uint8 (B,3,S,S) or features (B, feature_dim).

        Returns the predicted beta volume (B, 1, X, Y, Z).
        """
        if features is None:
            if images is None:
                raise ValueError("Rest2Visual.forward needs images or cached image features")
            features = self.image_features(images)
        e = self.image_proj((features.float() - self.feature_mean) / self.feature_std)
        return self.unet(rest, e)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_summary(model: Rest2Visual) -> str:
    """One line: trainable parameters per part (printed when training starts)."""
    parts = {"image encoder": model.image_encoder, "image projection": model.image_proj,
             "volume encoder–decoder": model.unet}
    total = count_parameters(model)
    frozen = {"image encoder": model.freeze_image_encoder}
    text = ", ".join(f"{name} {count_parameters(m, trainable_only=False):,}"
                     + (" (frozen)" if frozen.get(name) else "") for name, m in parts.items())
    return f"Rest2Visual: {total:,} trainable parameters ({text})"


def model_config(model_cfg: dict | None) -> dict:
    """The ``model`` config block with defaults filled in (a new dict of primitives)."""
    cfg = dict(MODEL_DEFAULTS)
    cfg.update(model_cfg or {})
    unknown = set(cfg) - set(MODEL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; "
                         f"known: {sorted(MODEL_DEFAULTS)}")
    cfg["widths"] = check_widths(cfg["widths"], cfg["groups"])
    cfg["groups"] = int(cfg["groups"])
    cfg["embed_dim"] = int(cfg["embed_dim"])
    cfg["freeze_image_encoder"] = bool(cfg["freeze_image_encoder"])
    from rest2visual.model.image_encoders import DETERMINISTIC

    if (cfg["freeze_image_encoder"] and cfg["encoder_weights"] is None
            and cfg["image_encoder"] not in DETERMINISTIC):
        # a frozen randomly initialised encoder could not be rebuilt identically for the
        # embedding cache and for prediction
        raise ValueError("model.freeze_image_encoder is true but model.encoder_weights is null: "
                         "a frozen encoder needs weights (a file, or an OpenCLIP pretrained tag)")
    return cfg


def build_model(model_cfg: dict | None, *, load_encoder_weights: bool = True) -> Rest2Visual:
    """Rest2Visual from the config's ``model`` block.

    ``load_encoder_weights=False`` builds the architecture only (used when a
    checkpoint's state dict, which holds the encoder weights, is loaded next).
    """
    from rest2visual.model.image_encoders import build_image_encoder

    cfg = model_config(model_cfg)
    encoder = build_image_encoder(
        cfg["image_encoder"],
        weights=cfg["encoder_weights"] if load_encoder_weights else None,
        feature_dim=cfg["embed_dim"],
    )
    return Rest2Visual(encoder, widths=cfg["widths"], groups=cfg["groups"],
                       embed_dim=cfg["embed_dim"], freeze_image_encoder=cfg["freeze_image_encoder"])
