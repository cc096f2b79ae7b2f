"""Predict evoked beta maps (MNI) from a rest map and images with a trained model.

``rest2visual predict --model model.pt --rest ZMAP.nii.gz --image A.png [B.png ...] -o OUT.nii.gz``
writes one volume per image (a 4D NIfTI for several). ``--images-dir DIR
--out-dir OUT`` writes one NIfTI per image of DIR. ``--rest-run RUN01 RUN14``
(4D rest runs already on the model's MNI grid) computes the PCC z-map first,
with the rest-map recipe its training pack was made with (stored in model.pt, see
``preprocess.recipe``).

The rest map must lie on the model's grid (shape and affine in model.pt);
``--resample`` resamples it (nilearn, continuous interpolation) instead of
refusing. Images (PNG/JPEG, RGB) are centre-cropped to a square and resized
like the pack's (Pillow bicubic, antialiased) to the model's image size.
Outputs: float32 predicted beta (% signal change) on the MNI grid, zeros
outside the brain mask, written atomically. :func:`predict_vectors` is the
single prediction path, shared with the evaluation.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rest2visual.atomic import save_nifti
from rest2visual.checks import InputError, load_nifti
from rest2visual.maskvec import MaskedGrid
from rest2visual.model.checkpoint import load_checkpoint
from rest2visual.model.network import Rest2Visual, build_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class LoadedModel:
    """A trained network with what prediction needs: its MNI ``grid`` and ``image_size``."""

    net: Rest2Visual
    grid: MaskedGrid
    image_size: int
    config: dict
    device: torch.device
    path: Path


def load_model(path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load ``model.pt`` (weights_only=True) onto ``device``, in eval mode."""
    ckpt = load_checkpoint(path)
    missing = [k for k in ("model", "config", "grid", "image_size") if k not in ckpt]
    if missing:
        raise InputError(f"{path}: not a Rest2Visual model file (missing {missing}); "
                         "use the model.pt written by rest2visual train")
    device = torch.device(device)
    net = build_model(ckpt["config"]["model"], load_encoder_weights=False)
    net.load_state_dict(ckpt["model"])
    net.to(device).eval()
    grid = MaskedGrid(ckpt["grid"]["mask"].numpy() > 0, ckpt["grid"]["affine"].numpy())
    return LoadedModel(net, grid, int(ckpt["image_size"]), ckpt["config"], device, Path(path))


@torch.no_grad()
def predict_vectors(model: LoadedModel, rest_vecs, images=None, *, features=None,
                    batch_size: int = 8) -> np.ndarray:
    """Predicted betas (N, n_vox) float32, in-mask vectors on the model's grid.

    rest_vecs : (N, n_vox) or (n_vox,) (one map for every image) rest z-maps, in-mask.
    images : (N, S, S, 3) uint8 RGB (the pack's layout) — or ``features``
        (N, feature_dim) cached image-encoder features instead.
    Runs in bf16 autocast on CUDA like training.
    """
    from rest2visual.model.loader import VolumeScatter

    if (images is None) == (features is None):
        raise ValueError("give images or features (not both)")
    cond = np.asarray(images if features is None else features)
    if features is None and (cond.ndim != 4 or cond.shape[1:] != (model.image_size,) * 2 + (3,)
                             or cond.dtype != np.uint8):
        raise ValueError(f"expected uint8 images (N, {model.image_size}, {model.image_size}, 3), "
                         f"got {cond.dtype} {cond.shape}")
    rest_vecs = np.asarray(rest_vecs, dtype=np.float32)
    if rest_vecs.ndim == 1:
        rest_vecs = np.broadcast_to(rest_vecs, (len(cond), rest_vecs.size))
    if rest_vecs.shape != (len(cond), model.grid.n_voxels):
        raise ValueError(f"expected rest vectors ({len(cond)}, {model.grid.n_voxels}), "
                         f"got {rest_vecs.shape}")
    scatter = VolumeScatter(model.grid.mask, pad_to=model.net.unet.multiple).to(model.device)
    cuda = model.device.type == "cuda"
    out = np.empty(rest_vecs.shape, dtype=np.float32)
    for start in range(0, len(cond), batch_size):
        stop = start + batch_size
        rest = scatter(torch.tensor(rest_vecs[start:stop], device=model.device))
        block = torch.from_numpy(np.ascontiguousarray(cond[start:stop])).to(model.device)
        kwargs = ({"images": block.permute(0, 3, 1, 2).contiguous()} if features is None
                  else {"features": block.float()})
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=cuda):
            pred = model.net(rest, **kwargs)
        out[start:stop] = scatter.gather(pred.float()).cpu().numpy()
    return out


ABLATIONS = ("noise_rest", "noise_image")


def ablation_inputs(rest_vecs, images, *, ablation: str, seed: int = 0):
    """The paper's noise ablations: (rest_vecs, images) with one input replaced by noise.

    ``noise_rest``: each rest map becomes Gaussian noise with the z-map's
    statistics (mean 0, sd 1 over the mask); ``noise_image``: each image becomes
    uniform random uint8 pixels. Shapes as in :func:`predict_vectors`.
    """
    rng = np.random.default_rng(seed)
    rest_vecs, images = np.asarray(rest_vecs, dtype=np.float32), np.asarray(images)
    if ablation == "noise_rest":
        return rng.standard_normal((len(images), rest_vecs.shape[-1]), dtype=np.float32), images
    if ablation == "noise_image":
        return rest_vecs, rng.integers(0, 256, images.shape, dtype=np.uint8)
    raise ValueError(f"unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}")


def load_image(path, image_size: int) -> np.ndarray:
    """An image file → (image_size, image_size, 3) uint8 RGB, centre-cropped and resized."""
    from PIL import Image, UnidentifiedImageError

    from rest2visual.dataset.images import resize_image

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: cannot read an image ({exc})") from exc
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize_image(rgb[top:top + side, left:left + side], image_size)


def rest_vector(model: LoadedModel, rest_path, *, resample: bool = False) -> np.ndarray:
    """The rest z-map NIfTI as an in-mask vector on the model's grid (resampled if asked)."""
    img = load_nifti(rest_path, ndim=3, what="rest z-map")
    same_shape = tuple(img.shape) == model.grid.shape
    same_affine = np.allclose(img.affine, model.grid.affine, atol=1e-3)
    if not (same_shape and same_affine):
        if not resample:
            raise InputError(
                f"{rest_path}: the rest map's grid differs from the model's. expected shape "
                f"{model.grid.shape} with affine\n{np.array2string(model.grid.affine, precision=3)}"
                f"\nfound shape {tuple(img.shape)} with affine\n"
                f"{np.array2string(img.affine, precision=3)}\n(pass --resample to resample it)")
        import nibabel as nib
        from nilearn.image import resample_to_img

        target = nib.Nifti1Image(model.grid.mask.astype(np.uint8), model.grid.affine)
        img = resample_to_img(img, target, interpolation="continuous", force_resample=True,
                              copy_header=True)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    return model.grid.to_vectors(data).astype(np.float32)


def rest_vector_from_runs(model: LoadedModel, run_paths, confound_paths=None) -> np.ndarray:
    """PCC z-map of 4D rest runs (on the model's MNI grid) with the model's rest settings."""
    import nibabel as nib

    try:
        from rest2visual.preprocess import rest_map
    except ImportError as exc:
        raise ImportError("--rest-run needs rest2visual.preprocess.rest_map") from exc
    from rest2visual.preprocess.recipe import recipe_from_attr

    rest = recipe_from_attr(model.config.get("rest"), f"{model.path} (config rest)")
    if rest is None:
        raise InputError(f"{model.path}: expected the rest-map recipe its training pack was made "
                         "with, found none (the pack's z-maps had no recipe sidecars); compute "
                         "the z-map with `rest2visual rest-map` and pass --rest")
    mask_img = nib.Nifti1Image(model.grid.mask.astype(np.uint8), model.grid.affine)
    confounds = None
    if rest["confounds"] == "motion":
        if not confound_paths or len(confound_paths) != len(run_paths):
            raise InputError(f"{model.path}: the model's rest maps regressed out motion "
                             "(confounds: motion): give --confounds, one motion TSV per --rest-run")
        confounds = [rest_map.load_confounds(c, load_nifti(r, ndim=4, finite=False).shape[3])
                     for c, r in zip(confound_paths, run_paths)]
    seed_mask = (load_nifti(rest["seed_mask"], ndim=3, what="seed mask")
                 if rest["seed_mask"] else None)
    print(f"rest map: the model's recipe {rest_map.recipe_name(rest['hrf_model'], rest['units'])}"
          f" ({rest['bandpass_hz'][0]}–{rest['bandpass_hz'][1]} Hz, combine "
          f"{rest['combine_runs']}, confounds {rest['confounds']}, fallback TR {rest['tr_s']} s)",
          file=sys.stderr)
    zmap = rest_map.pcc_seed_zmap(
        list(run_paths), mask_img, seed_center_mm=rest["seed_center_mm"],
        seed_radius_mm=rest["seed_radius_mm"], seed_mask_img=seed_mask,
        bandpass_hz=tuple(rest["bandpass_hz"]), filter_order=rest["filter_order"],
        hrf_model=rest["hrf_model"], combine_runs=rest["combine_runs"], confounds=confounds,
        tr_s=rest["tr_s"], units=rest["units"])
    return model.grid.to_vectors(np.asarray(zmap.dataobj, dtype=np.float32))


def image_files(folder) -> list[Path]:
    """PNG/JPEG files of ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: images folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rest2visual predict", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model.pt written by rest2visual train")
    rest = p.add_mutually_exclusive_group(required=True)
    rest.add_argument("--rest", help="rest PCC z-map NIfTI (3D, MNI)")
    rest.add_argument("--rest-run", nargs="+", help="4D rest runs on the model's MNI grid")
    p.add_argument("--confounds", nargs="+",
                   help="motion TSV per --rest-run (when the model's rest.confounds is motion)")
    p.add_argument("--resample", action="store_true", help="resample a rest map on another grid")
    imgs = p.add_mutually_exclusive_group(required=True)
    imgs.add_argument("--image", nargs="+", help="image files (PNG/JPEG)")
    imgs.add_argument("--images-dir", help="folder of images (batch mode, with --out-dir)")
    p.add_argument("-o", "--out", help="output NIfTI (one volume per --image)")
    p.add_argument("--out-dir", help="output folder (batch mode)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--batch-size", type=int, default=8)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.image and not args.out:
        raise SystemExit("rest2visual predict: --image needs -o OUT.nii.gz")
    if args.images_dir and not args.out_dir:
        raise SystemExit("rest2visual predict: --images-dir needs --out-dir")
    model = load_model(args.model, args.device)
    if args.rest:
        rest = rest_vector(model, args.rest, resample=args.resample)
    else:
        rest = rest_vector_from_runs(model, args.rest_run, args.confounds)
    files = [Path(f) for f in args.image] if args.image else image_files(args.images_dir)
    images = np.stack([load_image(f, model.image_size) for f in files])
    pred = predict_vectors(model, rest, images, batch_size=args.batch_size)
    if args.out:
        save_nifti(model.grid.to_nifti(pred[0] if len(pred) == 1 else pred), args.out)
        print(f"wrote {args.out} ({len(pred)} volume{'s' * (len(pred) > 1)})")
    else:
        out_dir = Path(args.out_dir)
        for f, vec in zip(files, pred):
            name = f"{f.stem}_space-MNI152_desc-predicted_beta.nii.gz"
            save_nifti(model.grid.to_nifti(vec), out_dir / name)
        print(f"wrote {len(files)} predictions to {out_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
