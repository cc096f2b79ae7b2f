"""The ``mindeye2`` decoder: a user-provided MindEye2 (Scotti et al. 2024) on the bridge's betas.

MindEye2's weights and code cannot be fetched by this workflow: the user downloads them
as MedARC-AI/MindEyeV2's README says (a clone of github.com/MedARC-AI/MindEyeV2 with
the Hugging Face dataset huggingface.co/datasets/pscotti/mindeyev2 in its ``src/``), and
names two things in the config:

- ``evaluate.mindeye2_code``: that ``src/`` folder (:data:`CODE_FILES` must be there);
- ``evaluate.mindeye2_checkpoint``: each subject's fine-tuned model, ``{sub}`` standing
  for the two-digit subject, e.g. ``…/train_logs/final_subj{sub}_pretrained_40sess_24bs/last.pth``.

:func:`config_problem` checks both at workflow start-up (one line naming the key and where
the weights come from). :func:`reconstruct` follows MindEyeV2's ``src/recon_inference.ipynb``
(commit c184718): ridge (n_voxels → 4096) → ``BrainNetwork`` backbone → OpenCLIP-bigG
diffusion prior (20 timesteps) → SDXL unCLIP (38 steps, ``utils.unclip_recon``), one
768 × 768 reconstruction per bridge row. Differences: each *trial* is decoded alone (MindEye2
averages the backbone outputs of an image's three repetitions; the bridge's rows are single
trials, and predicted betas exist per trial), and neither the GIT captions nor the blurry
low-level image are used ("recons", not "enhanced recons"). Its input is the bridge's
``/betas_<which>``: nsdgeneral voxels in MedARC's order, z-scored per session (MindEye2's
released betas were z-scored with training-set statistics; see native_betas).

Not exercised by the tests (they have no weights and no GPU); the start-up checks are.
Run it once on a subject you know before trusting Table 2 from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: where the weights come from, for error messages and docs
SOURCE = ("MedARC-AI/MindEyeV2 on Hugging Face (huggingface.co/datasets/pscotti/mindeyev2: "
          "train_logs/final_subjNN_pretrained_40sess_24bs/last.pth and the files of src/, "
          "set up as github.com/MedARC-AI/MindEyeV2's README says); not downloadable here")
#: files of ``evaluate.mindeye2_code`` that the decoder reads
UNCLIP_CKPT = "unclip6_epoch0_step110000.ckpt"
CODE_FILES = ("models.py", "utils.py", "generative_models/configs/unclip6.yaml", UNCLIP_CKPT)
#: MindEye2's sizes (recon_inference.ipynb): ridge width, OpenCLIP-bigG tokens × width
HIDDEN_DIM, CLIP_SEQ, CLIP_DIM = 4096, 256, 1664


def checkpoint_path(template: str, subject: int) -> Path:
    """``evaluate.mindeye2_checkpoint`` for one subject (``{sub}`` → ``01``)."""
    return Path(str(template).replace("{sub}", f"{int(subject):02d}"))


def config_problem(checkpoint: str | None, code: str | None, subjects) -> str | None:
    """The first problem of the mindeye2 settings as one config error line, or None."""
    where = f"MindEye2's weights come from {SOURCE}"
    if not checkpoint:
        return ("config evaluate.mindeye2_checkpoint: required when evaluate.decoder is "
                f"mindeye2; {where}")
    for s in subjects:
        path = checkpoint_path(checkpoint, s)
        if not path.is_file():
            return (f"config evaluate.mindeye2_checkpoint: {path} (subject {s}) not found; "
                    f"{where}")
    if not code:
        return f"config evaluate.mindeye2_code: required when evaluate.decoder is mindeye2; {where}"
    missing = [f for f in CODE_FILES if not (Path(code) / f).is_file()]
    if missing:
        return (f"config evaluate.mindeye2_code: {code} lacks {', '.join(missing)}; expected "
                f"MindEyeV2's src/ folder with its Hugging Face files; {where}")
    return None


def reconstruct(betas: np.ndarray, checkpoint: str | Path, code: str | Path, out_dir: Path,
                *, seed: int = 42) -> None:
    """Write one 768 × 768 RGB PNG per row of ``betas`` (n_trials, n_voxels) into ``out_dir``.

    ``betas``: z-scored nsdgeneral betas (the bridge's ``/betas_<which>``); n_voxels must be
    the checkpoint's ridge input size. Needs MindEye2's environment (torch with CUDA,
    diffusers, omegaconf, open_clip and Stability-AI's ``sgm`` from ``code``).
    """
    import torch
    from PIL import Image

    from rest2visual.checks import InputError
    from rest2visual.decode.command import png_name

    code = Path(code).resolve()
    sys.path[:0] = [str(code), str(code / "generative_models")]
    import utils  # MindEye2's src/utils.py
    from models import BrainDiffusionPrior, BrainNetwork, PriorNetwork  # MindEye2's src/models.py
    from omegaconf import OmegaConf
    from sgm.models.diffusion import DiffusionEngine

    utils.seed_everything(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model_state_dict"]
    n_voxels = state["ridge.linears.0.weight"].shape[1]
    if betas.shape[1] != n_voxels:
        raise InputError(f"{checkpoint}: expected betas of {n_voxels} nsdgeneral voxels (the "
                         f"checkpoint's subject), found {betas.shape[1]}")

    class Ridge(torch.nn.Module):  # recon_inference.ipynb's RidgeRegression, one subject
        def __init__(self):
            super().__init__()
            self.linears = torch.nn.ModuleList([torch.nn.Linear(n_voxels, HIDDEN_DIM)])

        def forward(self, x):
            return self.linears[0](x[:, 0]).unsqueeze(1)

    model = torch.nn.Module()
    model.ridge = Ridge()
    model.backbone = BrainNetwork(h=HIDDEN_DIM, in_dim=HIDDEN_DIM, seq_len=1, clip_size=CLIP_DIM,
                                  out_dim=CLIP_DIM * CLIP_SEQ)
    prior = PriorNetwork(dim=CLIP_DIM, depth=6, dim_head=52, heads=CLIP_DIM // 52, causal=False,
                         num_tokens=CLIP_SEQ, learned_query_mode="pos_emb")
    model.diffusion_prior = BrainDiffusionPrior(net=prior, image_embed_dim=CLIP_DIM,
                                                condition_on_text_encodings=False, timesteps=100,
                                                cond_drop_prob=0.2, image_embed_scale=None)
    model.load_state_dict(state, strict=True)
    model.to(device).eval().requires_grad_(False)

    params = OmegaConf.to_container(OmegaConf.load(code / CODE_FILES[2]), resolve=True)
    params = params["model"]["params"]
    params["first_stage_config"]["target"] = "sgm.models.autoencoder.AutoencoderKL"
    params["sampler_config"]["params"]["num_steps"] = 38
    engine = DiffusionEngine(**{k: params[k] for k in (
        "network_config", "denoiser_config", "first_stage_config", "conditioner_config",
        "sampler_config", "scale_factor", "disable_first_stage_autocast")})
    engine.load_state_dict(torch.load(code / UNCLIP_CKPT, map_location="cpu",
                                      weights_only=False)["state_dict"])
    engine.eval().requires_grad_(False).to(device)
    batch = {"jpg": torch.randn(1, 3, 1, 1, device=device),
             "original_size_as_tuple": torch.ones(1, 2, device=device) * 768,
             "crop_coords_top_left": torch.zeros(1, 2, device=device)}
    vector_suffix = engine.conditioner(batch)["vector"].to(device)

    with torch.no_grad(), torch.autocast(device, dtype=torch.float16):
        for row, voxels in enumerate(np.asarray(betas, np.float32)):
            voxel = torch.from_numpy(voxels)[None, None].to(device)  # (1, 1, V)
            backbone, _, _ = model.backbone(model.ridge(voxel))[:3]
            prior_out = model.diffusion_prior.p_sample_loop(
                backbone.shape, text_cond=dict(text_embed=backbone), cond_scale=1.0,
                timesteps=20)
            sample = utils.unclip_recon(prior_out[[0]], engine, vector_suffix, num_samples=1)[0]
            rgb = (sample.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
            Image.fromarray(rgb.astype(np.uint8)).save(Path(out_dir) / png_name(row))
