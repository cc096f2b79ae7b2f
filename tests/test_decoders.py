"""Decoders and Table 2's metrics, fast: no workflow run (test_workflow_decoder.py has it).

- PixCorr and 2D SSIM equal independent implementations on the same arrays: numpy's
  ``corrcoef`` per pair, scikit-image's ``rgb2gray`` + ``structural_similarity`` with
  MindEye2's arguments;
- two-way identification equals MindEye2's loop, and works with a tiny random network;
- the decoder command's calling convention: values stay single arguments, nothing runs
  through a shell;
- ``rest2visual reconstruct`` on a hand-made bridge file, and its one-line errors;
- start-up: ``decoder: mindeye2`` with a missing checkpoint stops the workflow with one
  line naming the key.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_workflow, toy_config
from rest2visual.config import ConfigError, check_config, validate_config
from rest2visual.decode import command, decoders, image_metrics as im

RNG = np.random.default_rng(0)


def _pairs(n=4, size=48):
    """(n, 3, size, size) images in [0, 1] and noisy copies (reconstructions)."""
    images = RNG.random((n, 3, size, size)).astype(np.float32)
    recons = np.clip(images + 0.4 * RNG.standard_normal(images.shape), 0, 1).astype(np.float32)
    return recons, images


# --- PixCorr and SSIM against independent implementations ---------------------------

def test_pixcorr_equals_numpy_corrcoef_per_pair():
    recons, images = _pairs()
    expected = [np.corrcoef(r.ravel(), i.ravel())[0, 1] for r, i in zip(recons, images)]
    np.testing.assert_allclose(im.pixcorr_rows(recons, images), expected, rtol=1e-10)
    # the full metric: both at 425² (bilinear), then the mean of the same per-pair r
    r425, i425 = im.resize(recons, im.PIXEL_SIZE), im.resize(images, im.PIXEL_SIZE)
    assert r425.shape == (4, 3, 425, 425)
    expected = np.mean([np.corrcoef(r.ravel(), i.ravel())[0, 1] for r, i in zip(r425, i425)])
    assert im.pixcorr(recons, images) == pytest.approx(expected, rel=1e-10)


def test_ssim_equals_scikit_image_on_grayscale_with_mindeye2_arguments():
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    def reference(r, i):  # final_evaluations.ipynb's call, on (H, W, 3) images
        return structural_similarity(rgb2gray(r.transpose(1, 2, 0)), rgb2gray(i.transpose(1, 2, 0)),
                                     gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1.0)

    recons, images = _pairs()  # float32, which scikit-image keeps: agreement to ~1e-8
    np.testing.assert_allclose(im.ssim_rows(recons, images),
                               [reference(r, i) for r, i in zip(recons, images)], rtol=1e-6)
    r425, i425 = im.resize(recons, im.PIXEL_SIZE), im.resize(images, im.PIXEL_SIZE)
    expected = np.mean([reference(r, i) for r, i in zip(r425, i425)])
    assert im.ssim_gray(recons, images) == pytest.approx(expected, rel=1e-6)
    assert im.ssim2d(images[0, 0], images[0, 0]) == pytest.approx(1.0)


def test_eval_size_and_input_checks():
    images = (RNG.random((2, 425, 425, 3)) * 255).astype(np.uint8)
    at256 = im.to_eval_size(im.as_float_images(images))
    assert at256.shape == (2, 3, 256, 256) and 0 <= at256.min() and at256.max() <= 1
    with pytest.raises(ValueError, match="as many reconstructions as images"):
        im.pixcorr_rows(at256[:1], at256)


# --- two-way identification ----------------------------------------------------------

def _mindeye2_two_way(recon_features, image_features):
    """final_evaluations.ipynb's two_way_identification, on features."""
    n = len(image_features)
    r = np.corrcoef(image_features, recon_features)[:n, n:]
    congruents = np.diag(r)
    success = r < congruents
    return np.mean(np.sum(success, 0)) / (n - 1)


def test_two_way_identification_equals_mindeye2_and_its_bounds():
    images = RNG.standard_normal((12, 30))
    recons = images + 1.5 * RNG.standard_normal(images.shape)
    assert im.two_way_identification(recons, images) == pytest.approx(
        _mindeye2_two_way(recons, images))
    assert im.two_way_identification(images, images) == 1.0
    chance = [im.two_way_identification(RNG.standard_normal((40, 30)), images[:1].repeat(40, 0)
                                        + RNG.standard_normal((40, 30))) for _ in range(20)]
    assert abs(np.mean(chance) - 0.5) < 0.05
    assert im.correlation_distance(images, images) == pytest.approx(0.0, abs=1e-12)


def test_network_metrics_with_a_tiny_random_feature_extractor(torch_one_thread):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(4)).eval()
    two_way = im.NetworkMetric("tiny", "tiny", None, 64, im.IMAGENET, "two_way")
    distance = im.NetworkMetric("tiny", "tiny", None, 64, im.IMAGENET, "distance")
    images = im.to_eval_size(RNG.random((6, 3, 80, 80)).astype(np.float32))
    feats = im.network_features(images, net, two_way, batch=4)
    assert feats.shape == (6, 4 * 4 * 4)
    assert im.network_score(images, images, net, two_way) == 1.0
    assert im.network_score(images, images, net, distance) == pytest.approx(0.0, abs=1e-9)
    shuffled = images[::-1].copy()
    assert im.network_score(shuffled, images, net, two_way) < 1.0
    # a dict-returning extractor (torchvision's feature extractors) is read at the layer
    layered = im.NetworkMetric("tiny", "tiny", "x", 64, im.IMAGENET, "two_way")
    assert im.network_score(images, images, lambda x: {"x": net(x)}, layered) == 1.0


# --- the decoder command's calling convention ----------------------------------------

def test_command_values_stay_single_arguments_and_braces_survive():
    template = "dec --in={input} {which} -o {output} -c 'print({})'"
    nasty = "o u t; rm -rf ~ $(touch x) `id` 'q\""
    argv = command.command_argv(template, input="a b.h5", which="measured", output=nasty)
    assert argv == ["dec", "--in=a b.h5", "measured", "-o", nasty, "-c", "print({})"]


@pytest.mark.parametrize("template, message", [
    ("dec {input} {output}", "no {which}"),
    ("dec 'unclosed {input} {which} {output}", "expected a command line"),
    ("{input} {which} {output}", "expected a program"),
    ("", "empty"),
])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(ValueError, match=message):
        command.parse_template(template)


# --- rest2visual reconstruct ----------------------------------------------------------

def _bridge(path: Path, n=3, v=5) -> Path:
    with h5py.File(path, "w") as h5:
        for which in ("predicted", "measured"):
            h5.create_dataset(f"betas_{which}", data=RNG.standard_normal((n, v)).astype(np.float32))
        for column in decoders.TRIAL_COLUMNS:
            h5.create_dataset(f"trials/{column}", data=np.arange(n, dtype=np.int32) + 1)
        h5.attrs.update(subject=1, protocol="paper")
    return path


WRITER = ("import sys, h5py, numpy as np; from PIL import Image\n"
          "n = len(h5py.File(sys.argv[1])['betas_' + sys.argv[2]])\n"
          "for r in range(n - int(sys.argv[4])):\n"
          "    Image.fromarray(np.full((8, 6, 3), 10 * r, np.uint8)).save(f'{sys.argv[3]}/{r:05d}.png')\n"
          "sys.exit(int(sys.argv[5]))\n")


def _reconstruct(tmp_path, missing=0, status=0):
    bridge = _bridge(tmp_path / "bridge with space.h5")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{input}} {{which}} " \
               f"{{output}} {missing} {status}"
    out = tmp_path / "recon.h5"
    proc = subprocess.run([str(Path(sys.executable).parent / "rest2visual"), "reconstruct",
                           "--input", str(bridge), "--which", "predicted", "--decoder", "command",
                           "--command", template, "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    return proc, out


def test_reconstruct_collects_one_png_per_row(tmp_path):
    proc, out = _reconstruct(tmp_path)
    assert proc.returncode == 0, proc.stderr
    images, trials, attrs = decoders.read_reconstructions(out)
    assert images.shape == (3, 8, 6, 3) and images[2, 0, 0, 0] == 20
    assert np.array_equal(trials["nsd_id"], [1, 2, 3]) and attrs["which"] == "predicted"
    assert not list(tmp_path.glob(".recon.h5.pngs-*"))


@pytest.mark.parametrize("missing, status, expected", [
    (1, 0, "expected 3 PNGs from the decoder command"),
    (0, 3, "expected the decoder command to exit with status 0, found status 3"),
])
def test_reconstruct_errors_are_one_line(tmp_path, missing, status, expected):
    proc, out = _reconstruct(tmp_path, missing, status)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and line.startswith("rest2visual reconstruct: error: ")
    assert expected in line and not out.exists()


# --- configuration and start-up -------------------------------------------------------

def _config(**evaluate):
    return validate_config(toy_config(evaluate=evaluate))


@pytest.mark.parametrize("evaluate, named", [
    ({"decoder": "command"}, "config evaluate.decoder_command: required"),
    ({"decoder": "command", "decoder_command": "dec {input}"}, "config evaluate.decoder_command"),
    ({"decoder": "mindeye2"}, "config evaluate.mindeye2_checkpoint: required"),
    ({"decoder": "mindeye2", "mindeye2_checkpoint": "nowhere/subj{sub}/last.pth"},
     "config evaluate.mindeye2_checkpoint: nowhere/subj01/last.pth (subject 1) not found"),
    ({"metric_weights": {"alexnet": "no-such.pth"}}, "config evaluate.metric_weights.alexnet"),
])
def test_decoder_settings_are_checked(evaluate, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        check_config(_config(**evaluate))


def test_mindeye2_code_folder_is_checked(tmp_path):
    for s in (1, 2):
        (tmp_path / f"subj0{s}.pth").write_bytes(b"")
    config = _config(decoder="mindeye2", mindeye2_checkpoint=str(tmp_path / "subj{sub}.pth"),
                     mindeye2_code=str(tmp_path))
    with pytest.raises(ConfigError, match="evaluate.mindeye2_code: .* lacks models.py"):
        check_config(config)


def test_mindeye2_without_checkpoint_stops_the_workflow_at_start_up(tmp_path):
    config = toy_config(evaluate={"decoder": "mindeye2",
                                  "mindeye2_checkpoint": "weights/subj{sub}/last.pth"})
    proc = run_workflow(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    lines = [l for l in proc.stdout.splitlines() if l.startswith("rest2visual: error:")]
    assert lines == ["rest2visual: error: config evaluate.mindeye2_checkpoint: "
                     "weights/subj01/last.pth (subject 1) not found; MindEye2's weights come "
                     f"from {__import__('rest2visual.decode.mindeye2').decode.mindeye2.SOURCE}"]
    assert "MedARC-AI/MindEyeV2 on Hugging Face" in lines[0]
    assert not (tmp_path / "results").exists()


def test_plan_counts_the_decoder_jobs_as_snakemake_does(tmp_path):
    import re

    from rest2visual import plan

    template = "decode {input} {which} {output}"
    config = toy_config(evaluate={"decoder": "command", "decoder_command": template})
    proc = run_workflow(tmp_path, config, "-n", "--quiet", "rules")
    table = proc.stdout.split("Job stats:")[1]
    counts = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}
    expected = plan.job_counts(validate_config(toy_config(evaluate={
        "decoder": "command", "decoder_command": template})))
    for rule in ("native_betas", "reconstruct", "table2", "reconstruction_figure"):
        assert counts[rule] == expected[rule], rule
    assert counts["reconstruct"] == 2 * len(config["nsd"]["subjects"])


def test_decoder_settings_reach_the_commands_as_literal_arguments(tmp_path):
    """The decoder template and a metric weights path with ``$( )``, backticks, ``;`` and
    spaces arrive as one argument each (test_quoting's recorder runs the printed commands)."""
    from test_quoting import EVIL, _printed_commands, _run_recorded

    work = tmp_path / "work"
    work.mkdir()
    weights = f"alexnet-{EVIL}.pth"
    (work / weights).write_bytes(b"")
    template = f"decode {shlex.quote(EVIL)} {{input}} --which {{which}} {{output}}"
    config = toy_config(evaluate={"decoder": "command", "decoder_command": template,
                                  "metric_weights": {"alexnet": weights}})
    proc = run_workflow(work, config, "-n", "-p", "--forceall", "results/tables/table2.csv")
    commands = [c for c in _printed_commands(proc.stdout)
                if c.startswith(("rest2visual reconstruct", "rest2visual table2"))]
    assert len(commands) == 2 * len(config["nsd"]["subjects"]) + 1
    (work / "results/logs/decode").mkdir(parents=True)  # their logs' folder (redirections)
    argvs = _run_recorded(commands, work)
    assert not list(work.glob("PWNED*"))
    for argv in argvs:
        if argv[0] == "reconstruct":
            assert argv[argv.index("--command") + 1] == template
        else:
            assert argv[argv.index("--weights") + 1] == f"alexnet={weights}"
