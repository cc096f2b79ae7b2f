"""Where an image encoder's weights come from, and the start-up check of ``model.encoder_weights``.

Pure Python (no torch): the Snakefile imports it on the submit host, where the model
environment is not installed. A run of the workflow stops before its first job when
``model.encoder_weights`` names a file that does not exist (one line naming the key, the
file and how to obtain it); ``snakemake -n`` and ``rest2visual plan`` only report it, so a
configuration can be planned before its weights are downloaded.

``model.encoder_weights`` of an ``open_clip:<arch>`` encoder is either a local file (the
paper protocol's choice: nothing is fetched at run time, the file's sha256 goes into the
embedding cache's provenance) or an OpenCLIP pretrained tag, resolved by open_clip through
the user's Hugging Face hub cache. A value with a folder separator or a weight-file ending
(:data:`WEIGHT_FILE_SUFFIXES`) is a file; anything else is a tag.
"""

from __future__ import annotations

from pathlib import Path

from rest2visual.config import ConfigError

#: the file OpenCLIP downloads for a pretrained tag from its Hugging Face hub repo
#: (open_clip.constants.HF_WEIGHTS_NAME): a plain state dict, read with weights_only=True
OPEN_CLIP_FILE = "open_clip_pytorch_model.bin"
#: OpenCLIP architecture → (pretrained tag, Hugging Face hub repo of that tag), as listed
#: by open_clip.get_pretrained_cfg(arch, tag)["hf_hub"]; the LAION-2B weights of each
OPEN_CLIP_SOURCES = {
    "ViT-B-32": ("laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    "ViT-B-16": ("laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
    "ViT-L-14": ("laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"),
    "ViT-H-14": ("laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    "ViT-bigG-14": ("laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"),
}
#: endings that make a model.encoder_weights value a file, never an OpenCLIP tag
WEIGHT_FILE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".safetensors")


def names_a_file(encoder: str, weights) -> bool:
    """Whether ``weights`` (model.encoder_weights) names a file rather than an OpenCLIP tag."""
    if weights is None:
        return False
    text = str(weights)
    if not str(encoder).startswith("open_clip:"):
        return True
    return (Path(text).is_file() or "/" in text or "\\" in text
            or text.endswith(WEIGHT_FILE_SUFFIXES))


def how_to_obtain(encoder: str) -> str:
    """Where the weights file of image encoder ``encoder`` comes from (one clause)."""
    encoder = str(encoder)
    if encoder.startswith("open_clip:"):
        arch = encoder.split(":", 1)[1]
        if arch in OPEN_CLIP_SOURCES:
            tag, repo = OPEN_CLIP_SOURCES[arch]
            return (f"download OpenCLIP's pretrained tag {tag} of {arch}: the file "
                    f"{OPEN_CLIP_FILE} of the Hugging Face hub repo {repo} "
                    f"(https://huggingface.co/{repo}/resolve/main/{OPEN_CLIP_FILE}) to that path")
        return (f"save an OpenCLIP checkpoint of {arch} there (the {OPEN_CLIP_FILE} of the "
                f"hub repo open_clip.get_pretrained_cfg('{arch}', tag)['hf_hub'] names, for a "
                f"tag of open_clip.list_pretrained_tags_by_model('{arch}'))")
    if encoder in ("resnet18", "resnet50"):
        return (f"save torchvision's ImageNet weights there: torch.save(torchvision.models."
                f"{encoder}(weights='DEFAULT').state_dict(), path)")
    return "save the encoder's state dict there: torch.save(encoder.state_dict(), path)"


def encoder_weights_problem(model_cfg: dict) -> str | None:
    """The one-line problem with ``model.encoder_weights`` (a file that is missing), or None."""
    encoder, weights = model_cfg.get("image_encoder", ""), model_cfg.get("encoder_weights")
    if not weights or not names_a_file(encoder, weights) or Path(weights).is_file():
        return None
    return (f"config model.encoder_weights: {weights} not found (the weights of "
            f"model.image_encoder {encoder}); {how_to_obtain(encoder)}")


def check_encoder_weights(config: dict) -> None:
    """Raise ConfigError (one line: key, file, how to obtain it) if the weights file is missing."""
    problem = encoder_weights_problem(config["model"])
    if problem:
        raise ConfigError(problem)
