"""Cache frozen image-encoder features of every packed image, once.

``rest2visual embed-images --pack PACK.h5 --encoder NAME [--weights W] --out EMB.h5``

With ``model.freeze_image_encoder: true`` the image tower never changes, so
running it on every training step (ResNet-50 or a CLIP ViT on 224² images,
many epochs) would only repeat the same numbers; each packed image is
embedded once here instead and the loader serves the vectors. Output (HDF5,
written to a temporary sibling and renamed):

- ``/embeddings`` (n_images, C) float32 features, in the pack's ``/images`` order;
- ``/nsd_ids`` (n_images,) int32 0-based NSD 73k ids (how the loader matches rows);
- attrs: ``encoder`` (name), ``weights_sha256`` (sha256 of the weights file,
  or the OpenCLIP pretrained tag), ``feature_dim``, ``pack``, ``rest2visual_version``.

Torch is imported inside the functions (a CLI that starts fast).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError, require_file


def embed_images(pack_path, encoder: str, out_path, *, weights=None, feature_dim: int = 128,
                 batch_size: int = 64, device: str = "auto") -> Path:
    """Embed every image of the pack with the frozen encoder ``encoder``; return ``out_path``.

    ``feature_dim`` is the output size of ``small_cnn`` (must equal the model's
    ``embed_dim``); pretrained towers have their own.
    """
    import h5py
    import torch

    from rest2visual import __version__
    from rest2visual.model.distributed import resolve_device
    from rest2visual.model.image_encoders import build_image_encoder, weights_identity

    pack_path = require_file(pack_path, "triplet pack")
    dev = resolve_device(device)
    net = build_image_encoder(encoder, weights, feature_dim=feature_dim).to(dev).eval()
    with h5py.File(pack_path, "r") as pack:
        if "images" not in pack or "image_nsd_ids" not in pack:
            raise InputError(f"{pack_path}: expected '/images' and '/image_nsd_ids' "
                             "(a triplet pack)")
        images, nsd_ids = pack["images"], pack["image_nsd_ids"][()]
        features = np.empty((len(images), net.feature_dim), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                block = torch.from_numpy(images[start:start + batch_size]).to(dev)
                features[start:start + len(block)] = (
                    net(block.permute(0, 3, 1, 2).contiguous()).float().cpu().numpy())
    if not np.isfinite(features).all():
        raise RuntimeError(f"encoder {encoder!r} produced non-finite features for {pack_path}")
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("embeddings", data=features)
        h5.create_dataset("nsd_ids", data=np.asarray(nsd_ids, dtype=np.int32))
        h5.attrs.update({"encoder": encoder, "weights_sha256": weights_identity(encoder, weights),
                         "feature_dim": int(net.feature_dim), "pack": str(pack_path),
                         "rest2visual_version": __version__})
    return Path(out_path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rest2visual embed-images", description=__doc__.split("\n")[0])
    p.add_argument("--pack", required=True, help="triplet pack (HDF5)")
    p.add_argument("--encoder", required=True,
                   help="small_cnn, resnet18, resnet50 or open_clip:<arch>")
    p.add_argument("--weights", help="encoder weights file (or OpenCLIP pretrained tag)")
    from rest2visual.config import defaults

    p.add_argument("--feature-dim", type=int, default=defaults("model")["embed_dim"],
                   help="small_cnn output size (= model.embed_dim; default: the schema's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", required=True, help="output HDF5")
    args = p.parse_args(argv)
    out = embed_images(args.pack, args.encoder, args.out, weights=args.weights,
                       feature_dim=args.feature_dim, batch_size=args.batch_size, device=args.device)
    print(f"wrote {out}")
    return 0
