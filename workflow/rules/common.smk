# Shared helpers of the rules: the selected subjects/sessions, where each NSD key
# lives for the configured source, and the names of every output (one helper).

import json
import re
from pathlib import Path

from rest2visual import resources as R
from rest2visual.config import ConfigError, check_config, config_hash
from rest2visual.model.encoder_weights import encoder_weights_problem
from rest2visual.nsd import keys as nsdkeys
from rest2visual.paths import bids_path
from rest2visual.plan import quality_recipes
from rest2visual import protocols as protocol_names
from rest2visual.evaluate import names as evaluation_names
from rest2visual.decode import mindeye2
from rest2visual.decode import names as decode_names


try:
    check_config(config)
except ConfigError as exc:  # one line naming the key, no traceback of the rule file
    raise SystemExit(f"rest2visual: error: {exc}") from None

# model.encoder_weights: a missing file stops a run here, before any job; a dry run (-n)
# only warns, so a configuration can be planned before its weights are downloaded, and
# cluster jobs (which re-read this file) skip the check
if workflow.is_main_process:
    _weights_problem = encoder_weights_problem(config["model"])
    if _weights_problem and getattr(workflow.output_settings, "dryrun", False):
        logger.warning(f"rest2visual: warning: {_weights_problem} (needed before a real run)")
    elif _weights_problem:
        raise SystemExit(f"rest2visual: error: {_weights_problem}")

NSD = config["nsd"]
RES = f"{config['mni']['resolution_mm']:g}"
SUBJECTS = [f"{s:02d}" for s in NSD["subjects"]]
SPACE, BETAS = NSD["space"], NSD["beta_version"]
# the space's TR (s), used when a header's time unit is unknown (NSD's are), and its key
TR_S, TR_KEY = nsdkeys.configured_tr(NSD)


wildcard_constraints:
    protocol=r"[a-z0-9_-]+",
    sub=r"\d\d",
    ses=r"\d\d",
    run=r"\d\d",


def sessions(sub):
    """Rest sessions of subject ``sub`` ("01") as two-digit strings."""
    return [f"{t:02d}" for t in nsdkeys.sessions_for(config, int(sub))]


def subject_sessions():
    """Every selected (subject, session) pair."""
    return [(s, t) for s in SUBJECTS for t in sessions(s)]


def nsd_path(key):
    """Local path of an NSD key for the configured source (simulated, s3 download, local mirror)."""
    if NSD["source"] == "simulated":
        return f"{config['simulate']['root']}/nsd/{key}"
    if NSD["source"] == "s3":
        return f"{NSD['download_dir']}/{key}"
    return f"{NSD['local_root']}/{key}"


def out(stage, suffix, ext, **entities):
    """Path of a workflow output under results/ (BIDS-like names, see rest2visual.paths)."""
    return bids_path("results", stage, suffix, ext, **entities)


def log(stage, name):
    return f"results/logs/{stage}/{name}.log"


def bench(stage, name):
    return f"results/benchmarks/{stage}/{name}.tsv"


# --- names of the stages' outputs --------------------------------------------

TEMPLATE = out("templates", "T1w", "nii.gz", space="MNI152", res=RES)
BRAIN_MASK = out("templates", "mask", "nii.gz", space="MNI152", res=RES, desc="brain")
XFM_ENTITIES = {"from": "func", "to": "MNI152", "res": RES}


def composite_xfm(sub):
    """The subject's composed func → MNI transform (a displacement field on the MNI grid)."""
    return out("registration", "xfm", "nii.gz", sub=sub, desc="composite", **XFM_ENTITIES)


def registration_files(sub):
    """The registration outputs (method ants) besides the composite: the affine, the warp,
    its inverse and the composite's JSON sidecar (named once, for the rules that read them)."""
    return {
        "sidecar": out("registration", "xfm", "json", sub=sub, desc="composite", **XFM_ENTITIES),
        "affine": out("registration", "xfm", "mat", sub=sub, desc="affine", **XFM_ENTITIES),
        "warp": out("registration", "xfm", "nii.gz", sub=sub, desc="warp", **XFM_ENTITIES),
        "inverse_warp": out("registration", "xfm", "nii.gz", sub=sub, desc="warp",
                            **{"from": "MNI152", "to": "func", "res": RES}),
    }


def mni_transform(sub):
    """The transform that brings subject ``sub``'s native data to MNI (registration.method)."""
    if config["registration"]["method"] == "nsd":
        return nsd_path(nsdkeys.func_to_mni_key(int(sub), SPACE))
    return composite_xfm(sub)


def transform_args(wc, input):
    """warp-to-mni options for the configured registration method."""
    if config["registration"]["method"] == "nsd":
        return ["--nsd-coords", input.transform, "--resolution", RES]
    return ["--composite", input.transform]


def encoder_weights_input():
    """model.encoder_weights as a rule input (editing the file reruns the rule), unless
    it is no file but an OpenCLIP pretrained tag; [] when null."""
    weights, encoder = config["model"]["encoder_weights"], config["model"]["image_encoder"]
    if not weights or (encoder.startswith("open_clip:") and not Path(weights).is_file()):
        return []
    return [weights]


def seed_mask_input():
    """rest.seed_mask as a rule input ([] when the seed is the configured sphere)."""
    return [config["rest"]["seed_mask"]] if config["rest"]["seed_mask"] else []


def seed_args():
    """rest-map's seed options: the seed mask file, else the sphere (as a list, for :q)."""
    rest = config["rest"]
    if rest["seed_mask"]:
        return ["--seed-mask", rest["seed_mask"]]
    return ["--seed-center", *map(str, rest["seed_center_mm"]), "--seed-radius", str(rest["seed_radius_mm"])]


def crosscheck_csv(sub):
    """One subject's row of the ANTs-vs-NSD registration cross-check."""
    return out("registration", "crosscheck", "csv", sub=sub, desc="antsVsNsd")


QUALITY_RECIPES = quality_recipes(config)  # rest2visual.plan: one list for the rules and the plan
REST_RECIPE = QUALITY_RECIPES[0]


def recipe_zmap(sub, ses, recipe):
    """A session's z-map with ``recipe`` (hrf-units): the configured one is pcc_zmap's."""
    if recipe == REST_RECIPE:
        return out("rest", "zmap", "nii.gz", sub=sub, ses=ses, space="MNI152", res=RES, desc="pcc")
    hrf, units = recipe.split("-")
    return out("rest", "zmap", "nii.gz", sub=sub, ses=ses, space="MNI152", res=RES,
               desc=f"pcc{hrf.capitalize()}{units.capitalize()}")


def rest_run_key(wc):
    return nsd_path(nsdkeys.rest_key(int(wc.sub), int(wc.ses), int(wc.run), SPACE))


def rest_confounds(wc):
    if config["rest"]["confounds"] != "motion":
        return []
    return [nsd_path(nsdkeys.motion_key(int(wc.sub), int(wc.ses), r, SPACE)) for r in nsdkeys.REST_RUNS]


def evoked_betas_h5(sub, ses):
    return out("evoked", "betas", "h5", sub=sub, ses=ses, space="MNI152", res=RES)


PACK = f"results/dataset/rest2visual_space-MNI152_res-{RES}_triplets.h5"
SPLITS = "results/splits"
PROTOCOLS = protocol_names.protocols(config["splits"]["unseen_subjects"])


MODEL_CFG, TRAIN_CFG = config["model"], config["train"]
FROZEN = MODEL_CFG["freeze_image_encoder"]
EMBEDDINGS = f"results/dataset/embeddings_{MODEL_CFG['image_encoder'].replace(':', '-')}.h5"


def model_file(protocol):
    return f"results/models/{protocol}/model.pt"


def train_launcher(wc, threads):
    """`rest2visual train`, under torchrun with DistributedDataParallel when gpus > 1."""
    if TRAIN_CFG["gpus"] > 1:
        return f"torchrun --standalone --nproc_per_node {TRAIN_CFG['gpus']} -m rest2visual.cli"
    return "rest2visual"


def native_betas_h5(protocol, sub):
    """One subject's test trials of ``protocol`` in native nsdgeneral voxels (HDF5)."""
    return out(f"decode/{protocol}", "betas", "h5", sub=sub, space=SPACE, desc="nsdgeneral")


def reconstructions_h5(protocol, sub, which):
    """One subject's reconstructions of ``protocol``'s test images from ``which`` betas (HDF5)."""
    return out(f"decode/{protocol}", "recon", "h5", sub=sub, desc=which)


def decoder_inputs(wc):
    """The image decoder's own files (MindEye2's checkpoint of the subject), as rule inputs."""
    ev = config["evaluate"]
    if ev["decoder"] == "mindeye2":
        return [str(mindeye2.checkpoint_path(ev["mindeye2_checkpoint"], int(wc.sub)))]
    return []


def decoder_args(wc, input):
    """reconstruct's decoder options (a list, for :q): evaluate.decoder's settings."""
    ev = config["evaluate"]
    if ev["decoder"] == "mindeye2":
        return ["--decoder", "mindeye2", "--checkpoint", input.decoder[0],
                "--code", ev["mindeye2_code"]]
    return ["--decoder", "command", "--command", ev["decoder_command"]]


# method nsd: NSD's MNI → func map; method ants: the registration's affine and inverse warp
if config["registration"]["method"] == "nsd":
    NATIVE_TRANSFORM = {
        "mni_to_func": lambda wc: nsd_path(nsdkeys.mni_to_func_key(int(wc.sub), SPACE))
    }
else:
    NATIVE_TRANSFORM = {k: v for k, v in registration_files("{sub}").items() if k != "warp"}


def native_transform_args(wc, input):
    """to-native's transform options for the configured registration method (a list, for :q)."""
    if config["registration"]["method"] == "nsd":
        return ["--nsd-mni-to-func", input.mni_to_func]
    return ["--affine", input.affine, "--inverse-warp", input.inverse_warp,
            "--sidecar", input.sidecar]


#: final targets of each stage; every rule file adds its own, `rule all` asks for them
TARGETS = []
