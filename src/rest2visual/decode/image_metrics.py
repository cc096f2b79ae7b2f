"""Table 2's image metrics, reconstruction vs seen image, as MindEye2 computes them.

Source: MedARC-AI/MindEyeV2, ``src/final_evaluations.ipynb`` (commit c184718), the
evaluation behind MindEye2's Table 1 (and MindEye1's; Rest2Visual's Table 2 reports the
same columns). Images are float RGB in [0, 1], shape (N, 3, H, W):

1. :func:`to_eval_size`: images and reconstructions resized to 256 × 256 (their
   ``imsize = 256``), bilinear;
2. **PixCorr** (:func:`pixcorr`): resized to 425 × 425 (bilinear), each pair's Pearson
   correlation over all 3 × 425 × 425 values (RGB, not grayscale), averaged over pairs;
3. **SSIM** (:func:`ssim_gray`): resized to 425 × 425 (bilinear), converted to grayscale
   with scikit-image's ``rgb2gray`` weights (0.2125 R + 0.7154 G + 0.0721 B), then 2D SSIM
   as ``structural_similarity(rec, im, gaussian_weights=True, sigma=1.5,
   use_sample_covariance=False, data_range=1.0)``: a Gaussian window (σ 1.5 px,
   truncated at 3.5 σ: 11 × 11), population (co)variances, K1 0.01, K2 0.03, the SSIM map
   averaged after cropping 5 px at each border (skimage's crop). Their call also passes
   ``multichannel=True``, which scikit-image 0.22 (their setup.sh pin) ignores: the SSIM
   is 2D on the grayscale image;
4. **two-way identification** (:func:`two_way_identification`; AlexNet(2), AlexNet(5),
   InceptionV3, CLIP): features of every reconstruction and image; for reconstruction j,
   the fraction of the other images i whose feature correlation with reconstruction j is
   below that of its own image, r(image_i, recon_j) < r(image_j, recon_j); averaged over j
   (chance 0.5);
5. **EffNet-B and SwAV** are *not* two-way identification in MindEye2 but the mean
   correlation distance 1 − r(features of image_i, of recon_i) (lower is better):
   :func:`correlation_distance`.

The network specs (layer, input size, normalisation) are :data:`NETWORK_METRICS`; their
weights are local files (``evaluate.metric_weights``), loaded by :func:`load_network`.

Resizing: MindEye2 ran torchvision 0.16, whose ``Resize`` on tensors interpolated
bilinearly without antialiasing; here shrinking is antialiased (torchvision's default
since 0.17), which matters only when a reconstruction or image is larger than 256 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rest2visual.checks import InputError
from rest2visual.evaluate.metrics import pearson_rows, ssim_index_map

#: MindEye2's sizes: every image first to EVAL_SIZE², PixCorr and SSIM at PIXEL_SIZE²
EVAL_SIZE, PIXEL_SIZE = 256, 425
#: scikit-image's rgb2gray weights (ITU-R 709 luma)
GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
#: SSIM as MindEye2 calls scikit-image: Gaussian σ, truncation (in σ), data range (K1, K2:
#: scikit-image's, in ``evaluate.metrics.ssim_index_map``)
SSIM_SIGMA, SSIM_TRUNCATE, SSIM_DATA_RANGE = 1.5, 3.5, 1.0
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def as_float_images(images_uint8) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB → (N, 3, H, W) float32 in [0, 1]."""
    images = np.asarray(images_uint8)
    if images.ndim != 4 or images.shape[3] != 3:
        raise InputError(f"images: expected (N, H, W, 3) RGB, found {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 3, H, W) float → (N, 3, size, size) float32, bilinear (antialiased when shrinking)."""
    import torch
    import torch.nn.functional as F

    images = np.asarray(images, dtype=np.float32)
    if images.shape[-2:] == (size, size):
        return images
    shrink = min(images.shape[-2:]) > size
    out = F.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear",
                        align_corners=False, antialias=shrink)
    return out.numpy()


def to_eval_size(images: np.ndarray) -> np.ndarray:
    """Step 1 of the module docstring: (N, 3, H, W) → (N, 3, 256, 256)."""
    return resize(images, EVAL_SIZE)


def pixcorr_rows(recons: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(N,) Pearson r of each reconstruction with its image over all values (any equal shape).

    NaN where either is constant."""
    recons, images = _pair(recons, images)
    n = len(images)
    return pearson_rows(recons.reshape(n, -1), images.reshape(n, -1))


def pixcorr(recons: np.ndarray, images: np.ndarray) -> float:
    """MindEye2's PixCorr of (N, 3, 256, 256) images: at 425², RGB, mean of per-pair r."""
    return float(np.nanmean(pixcorr_rows(resize(recons, PIXEL_SIZE), resize(images, PIXEL_SIZE))))


def to_gray(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) RGB in [0, 1] → (N, H, W) luma with scikit-image's rgb2gray weights."""
    return np.tensordot(GRAY_WEIGHTS, np.asarray(images, np.float64), axes=([0], [1]))


def ssim2d(a: np.ndarray, b: np.ndarray) -> float:
    """Mean 2D SSIM of two (H, W) grayscale images in [0, 1] (module docstring, step 3)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"ssim2d: expected two (H, W) images of one shape, found {a.shape}, {b.shape}")
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(a.shape) <= 2 * radius:
        raise InputError(f"ssim2d: images of {a.shape} px are smaller than the "
                         f"{2 * radius + 1}-px window")

    def smooth(x):
        return ndimage.gaussian_filter(x, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    # population covariances (use_sample_covariance=False in MindEye2's call)
    ssim = ssim_index_map(a, b, smooth, SSIM_DATA_RANGE)
    return float(ssim[radius:-radius, radius:-radius].mean())


def ssim_rows(recons: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(N,) 2D grayscale SSIM of each pair of (N, 3, H, W) RGB images (no resizing)."""
    recons, images = _pair(recons, images)
    gray_r, gray_i = to_gray(recons), to_gray(images)
    return np.array([ssim2d(r, i) for r, i in zip(gray_r, gray_i)])


def ssim_gray(recons: np.ndarray, images: np.ndarray) -> float:
    """MindEye2's SSIM of (N, 3, 256, 256) images: at 425², grayscale, mean over pairs."""
    return float(np.mean(ssim_rows(resize(recons, PIXEL_SIZE), resize(images, PIXEL_SIZE))))


def two_way_identification(recon_features, image_features) -> float:
    """MindEye2's two-way identification of (N, F) features (module docstring, step 4).

    r[i, j] = Pearson(image_i, recon_j); for each j the count of i with r[i, j] < r[j, j]
    (i = j never counts), divided by N − 1 and averaged. Needs N ≥ 2."""
    recon_features, image_features = _pair(recon_features, image_features)
    n = len(image_features)
    if n < 2:
        raise InputError(f"two-way identification: expected ≥ 2 reconstructions, found {n}")
    r = np.corrcoef(image_features.reshape(n, -1), recon_features.reshape(n, -1))[:n, n:]
    success = r < np.diag(r)[None, :]
    return float(success.sum(axis=0).mean() / (n - 1))


def correlation_distance(recon_features, image_features) -> float:
    """Mean over pairs of 1 − Pearson r(image_i, recon_i) of (N, F) features (lower = closer)."""
    recon_features, image_features = _pair(recon_features, image_features)
    n = len(image_features)
    return float(np.nanmean(1.0 - pearson_rows(recon_features.reshape(n, -1),
                                               image_features.reshape(n, -1))))


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape[0] != b.shape[0] or a.shape[0] == 0:
        raise InputError(f"image metrics: expected as many reconstructions as images (≥ 1), "
                         f"found {a.shape[0]} and {b.shape[0]}")
    return a, b


# --- network metrics ------------------------------------------------------------------

@dataclass(frozen=True)
class NetworkMetric:
    """One network column of Table 2 (final_evaluations.ipynb's settings).

    weights: the ``evaluate.metric_weights`` key; layer: the feature node (None: the
    network's output); size: the Resize before the network (shorter side, px); norm:
    (mean, std) per RGB channel; score: ``two_way`` (higher is better, chance 0.5) or
    ``distance`` (mean correlation distance, lower is better).
    """

    column: str
    weights: str
    layer: str | None
    size: int
    norm: tuple
    score: str

    @property
    def higher_is_better(self) -> bool:
        return self.score == "two_way"


NETWORK_METRICS = (
    NetworkMetric("AlexNet(2)", "alexnet", "features.4", 256, IMAGENET, "two_way"),
    NetworkMetric("AlexNet(5)", "alexnet", "features.11", 256, IMAGENET, "two_way"),
    NetworkMetric("InceptionV3", "inception_v3", "avgpool", 342, IMAGENET, "two_way"),
    NetworkMetric("CLIP", "clip", None, 224, CLIP_NORM, "two_way"),
    NetworkMetric("EffNet-B", "efficientnet_b1", "avgpool", 255, IMAGENET, "distance"),
    NetworkMetric("SwAV", "swav", "avgpool", 224, IMAGENET, "distance"),
)


def network_features(images: np.ndarray, extractor, metric: NetworkMetric,
                     batch: int = 32) -> np.ndarray:
    """(N, F) float64 features of (N, 3, 256, 256) images: resized, normalised, extracted.

    ``extractor``: a callable on a (B, 3, S, S) float tensor returning a tensor, or a dict
    of tensors keyed by ``metric.layer`` (torchvision's feature extractors)."""
    import torch

    mean, std = (np.asarray(v, np.float32)[None, :, None, None] for v in metric.norm)
    out = []
    for start in range(0, len(images), batch):
        x = (resize(images[start:start + batch], metric.size) - mean) / std
        with torch.no_grad():
            feats = extractor(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        if isinstance(feats, dict):
            feats = feats[metric.layer]
        out.append(feats.float().flatten(1).cpu().numpy().astype(np.float64))
    return np.concatenate(out)


def network_score(recons: np.ndarray, images: np.ndarray, extractor, metric: NetworkMetric) -> float:
    """One network column for (N, 3, 256, 256) reconstructions and images."""
    fr = network_features(recons, extractor, metric)
    fi = network_features(images, extractor, metric)
    score = two_way_identification if metric.score == "two_way" else correlation_distance
    return score(fr, fi)


def load_network(key: str, path: str):
    """The feature extractor of ``evaluate.metric_weights.<key>`` from a local file (eval mode).

    torchvision's architectures with ``create_feature_extractor`` (the nodes of
    :data:`NETWORK_METRICS`); CLIP ViT-L/14 through OpenAI's ``clip`` package, else
    ``open_clip``. Raises InputError when the needed package is missing."""
    import torch

    try:
        import torchvision.models as tvm
        from torchvision.models.feature_extraction import create_feature_extractor
    except ImportError:
        raise InputError(f"{path}: evaluate.metric_weights.{key} needs torchvision, found it "
                         "not installed") from None
    if key == "clip":
        try:
            import clip

            model, _ = clip.load(path, device="cpu")
        except ImportError:
            import open_clip

            model = open_clip.create_model("ViT-L-14", pretrained=path)
        model.eval().requires_grad_(False)
        return model.encode_image
    builders = {"alexnet": tvm.alexnet, "inception_v3": lambda: tvm.inception_v3(
        weights=None, aux_logits=True, init_weights=False), "efficientnet_b1": tvm.efficientnet_b1,
        "swav": tvm.resnet50}
    model = builders[key]() if key == "inception_v3" else builders[key](weights=None)
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # SwAV's released trunk has no ImageNet classifier (fc), which no metric reads
    if unexpected or [k for k in missing if not k.startswith("fc.")]:
        raise InputError(f"{path}: expected {key} weights, found missing keys {missing[:3]}, "
                         f"unexpected keys {unexpected[:3]}")
    nodes = sorted({m.layer for m in NETWORK_METRICS if m.weights == key})
    return create_feature_extractor(model.eval().requires_grad_(False), return_nodes=nodes)
