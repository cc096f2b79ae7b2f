"""The Rest2Visual network, image encoders, checkpoints and prediction (toy sizes, CPU)."""

from __future__ import annotations

import random

import nibabel as nib
import numpy as np
import pytest
import torch

from rest2visual.checks import InputError
from rest2visual.maskvec import MaskedGrid
from rest2visual.model import predict
from rest2visual.model.checkpoint import (load_checkpoint, rng_state, save_checkpoint,
                                          save_model_file, set_rng_state)
from rest2visual.model.image_encoders import GaborPyramid, SmallCNN, build_image_encoder
from rest2visual.model.network import (ConditionalUNet3D, build_model, count_parameters,
                                       model_config, parameter_summary)

TOY_MODEL = {"widths": [4, 8, 16], "groups": 4, "embed_dim": 8}
GRID_SHAPE = (11, 13, 11)
AFFINE = np.array([[-4.0, 0, 0, 20], [0, 4, 0, -24], [0, 0, 4, -20], [0, 0, 0, 1]])
IMAGE_SIZE = 16


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    yield


def toy_mask(shape=GRID_SHAPE) -> np.ndarray:
    axes = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return sum(a ** 2 for a in axes) < 0.9


def toy_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, generator=g)


# -- network -------------------------------------------------------------------------------------

def test_odd_grid_is_padded_and_cropped_back():
    unet = ConditionalUNet3D([4, 8, 16], groups=4, embed_dim=8)
    assert unet.multiple == 4 and unet.padded_shape((23, 27, 23)) == (24, 28, 24)
    rest = torch.randn(2, 1, 23, 27, 23)
    out = unet(rest, torch.randn(2, 8))
    assert out.shape == rest.shape and torch.isfinite(out).all()
    # a grid already on the multiple passes through unpadded
    assert unet(torch.randn(1, 1, 8, 12, 4), torch.randn(1, 8)).shape == (1, 1, 8, 12, 4)
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y, Z\)"):
        unet(torch.randn(2, 23, 27, 23), torch.randn(2, 8))


def test_adaptive_group_norm_starts_as_identity_then_conditions():
    torch.manual_seed(0)
    model = build_model(TOY_MODEL)
    rest = torch.randn(2, 1, 12, 12, 12)
    img_a, img_b = toy_images(2, seed=1), toy_images(2, seed=2)
    with torch.no_grad():
        assert torch.equal(model(rest, images=img_a), model(rest, images=img_b))
    target = torch.randn(2, 1, 12, 12, 12)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.nn.functional.mse_loss(model(rest, images=img_a), target).backward()
    opt.step()
    with torch.no_grad():
        diff = (model(rest, images=img_a) - model(rest, images=img_b)).abs().max()
    assert diff > 1e-4


def test_channels_last_layout_keeps_the_function():
    torch.manual_seed(0)
    model = build_model(TOY_MODEL)
    rest, images = torch.randn(2, 1, 12, 12, 12), toy_images(2)
    with torch.no_grad():
        before = model(rest, images=images)
        model.to_channels_last()
        after = model(rest.contiguous(memory_format=torch.channels_last_3d), images=images)
    assert model.unet.stem.weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_feature_standardization():
    model = build_model({**TOY_MODEL, "image_encoder": "gabor", "freeze_image_encoder": True})
    features = torch.randn(50, model.image_encoder.feature_dim, dtype=torch.float64) * 3 + 7
    features[:, 0] = 2.5  # a constant feature is only centred
    model.fit_feature_standardization(features)
    assert torch.allclose(model.feature_mean, features.mean(0).float())
    assert model.feature_std[0] == 1 and torch.allclose(model.feature_std[1:],
                                                        features[:, 1:].std(0).float())
    assert {"feature_mean", "feature_std"} <= set(model.state_dict())
    with pytest.raises(ValueError, match="image features"):
        model.fit_feature_standardization(features[:, :5])


def test_parameter_count_and_summary():
    model = build_model(TOY_MODEL)
    n = count_parameters(model)
    assert n == sum(p.numel() for p in model.parameters()) > 0
    assert f"{n:,} trainable parameters" in parameter_summary(model)


def test_model_config_rejects_bad_values():
    with pytest.raises(ValueError, match="not divisible by model.groups"):
        model_config({"widths": [6, 8], "groups": 4})
    with pytest.raises(ValueError, match="unknown model config keys"):
        model_config({"width": [8]})
    with pytest.raises(ValueError, match="encoder_weights is null"):
        model_config({**TOY_MODEL, "freeze_image_encoder": True})
    # the Gabor pyramid has no weights: frozen without a file is fine, a file is an error
    assert model_config({**TOY_MODEL, "image_encoder": "gabor",
                         "freeze_image_encoder": True})["freeze_image_encoder"]
    with pytest.raises(ValueError, match="'gabor' has no weights"):
        build_image_encoder("gabor", "weights.pt")


# -- image encoders ------------------------------------------------------------------------------

def test_unknown_encoder_and_missing_weights_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown image encoder 'vgg16'"):
        build_image_encoder("vgg16")
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_image_encoder("small_cnn", missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_model({**TOY_MODEL, "encoder_weights": str(missing)})
    with pytest.raises(ValueError, match="expected uint8 images"):
        build_image_encoder("small_cnn", feature_dim=8)(torch.rand(1, 3, 16, 16))


def test_missing_optional_backends_are_named():
    pytest.importorskip("torch")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="torchvision"):
            build_image_encoder("resnet18")
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="open_clip"):
            build_image_encoder("open_clip:ViT-B-32")


def test_small_cnn_weights_load_with_weights_only(tmp_path):
    torch.manual_seed(3)
    cnn = SmallCNN(feature_dim=8)
    path = tmp_path / "cnn.pt"
    torch.save(cnn.state_dict(), path)
    encoder = build_image_encoder("small_cnn", path, feature_dim=8)
    for name, tensor in cnn.state_dict().items():
        assert torch.equal(encoder.backbone.state_dict()[name], tensor)
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="do not fit"):
        build_image_encoder("small_cnn", bad, feature_dim=8)


def grating_image(size: int, cycles: float, vertical_stripes: bool, quadrant=None) -> torch.Tensor:
    """uint8 (1, 3, size, size) grey image with a sinusoidal grating (everywhere, or only in
    ``quadrant`` = (row half, column half), 0 = top/left)."""
    t = torch.arange(size, dtype=torch.float32) * (2 * np.pi * cycles / size)
    wave = torch.sin(t)[None, :].expand(size, size) if vertical_stripes else \
        torch.sin(t)[:, None].expand(size, size)
    if quadrant is not None:
        window = torch.zeros(size, size)
        half = size // 2
        window[quadrant[0] * half:(quadrant[0] + 1) * half,
               quadrant[1] * half:(quadrant[1] + 1) * half] = 1
        wave = wave * window
    img = (127.5 + 100 * wave).round().clamp(0, 255).to(torch.uint8)
    return img.expand(3, size, size)[None].contiguous()


def test_gabor_pyramid_is_retinotopic_and_orientation_tuned():
    encoder = build_image_encoder("gabor")
    pyramid = encoder.backbone
    assert isinstance(pyramid, GaborPyramid) and encoder.feature_dim == 272
    assert count_parameters(encoder, trainable_only=False) == 0 and not encoder.state_dict()
    n, grid = pyramid.n_filters, pyramid.grid

    def energy(image):  # (scales·orientations, grid rows, grid cols)
        return encoder(image)[0].view(n + 5, grid, grid)[:n]

    # a grating in the upper-left quadrant drives the upper-left cells, not the others
    e = energy(grating_image(64, 8, True, quadrant=(0, 0))).sum(0)
    assert e[:2, :2].min() > 3 * e[2:, 2:].max()
    # skimage's theta = 0 filter varies along columns: it prefers vertical stripes
    vertical = energy(grating_image(64, 8, True)).view(3, 4, grid, grid).mean((0, 2, 3))
    horizontal = energy(grating_image(64, 8, False)).view(3, 4, grid, grid).mean((0, 2, 3))
    assert vertical.argmax() == 0 and horizontal.argmax() == 2
    # a uniform image has no energy; features are deterministic and any image size works
    flat = torch.full((1, 3, 40, 40), 90, dtype=torch.uint8)
    assert energy(flat).abs().max() < 1e-4
    images = toy_images(3)
    assert torch.equal(encoder(images), build_image_encoder("gabor")(images))


# -- checkpoints ---------------------------------------------------------------------------------

class NotATensor:
    """A pickled object: weights_only loading must refuse it."""


def test_checkpoint_round_trip_and_pickle_refusal(tmp_path):
    payload = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "config": {"a": [1, 2.5, None]}}
    path = save_checkpoint(payload, tmp_path / "ckpt.pt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"]) and loaded["config"] == payload["config"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    with pytest.raises(TypeError, match="NotATensor"):
        save_checkpoint({"bad": NotATensor()}, tmp_path / "never.pt")
    assert not (tmp_path / "never.pt").exists()
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "object": NotATensor()}, evil)
    with pytest.raises(InputError, match="refused to load.*pickled"):
        load_checkpoint(evil)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    save_checkpoint({"rng": rng_state()}, tmp_path / "rng.pt")
    first = (random.random(), np.random.standard_normal(3), torch.rand(3))
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    second = (random.random(), np.random.standard_normal(3), torch.rand(3))
    assert first[0] == second[0] and np.array_equal(first[1], second[1])
    assert torch.equal(first[2], second[2])


# -- prediction ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(TOY_MODEL)
    # random conditioning so that the image matters in the predictions
    for module in model.modules():
        if hasattr(module, "to_scale_shift"):
            torch.nn.init.normal_(module.to_scale_shift.weight, std=0.3)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    cfg = {"model": TOY_MODEL, "train": {"epochs": 1}}
    save_model_file(path, model.state_dict(), cfg, mask=toy_mask(), affine=AFFINE,
                    image_size=IMAGE_SIZE, metrics={"val_pearson": 0.5})
    return path


def write_rest_map(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


def write_png(path, seed):
    from PIL import Image

    rgb = np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def test_predict_cli_matches_predict_vectors(tmp_path, model_file):
    mask = toy_mask()
    rest = np.where(mask, np.random.default_rng(0).standard_normal(GRID_SHAPE), 0)
    rest_path = write_rest_map(tmp_path / "rest.nii.gz", rest)
    images = [write_png(tmp_path / f"img{i}.png", i) for i in range(2)]
    out = tmp_path / "pred.nii.gz"
    assert predict.main(["--model", str(model_file), "--rest", str(rest_path), "--image",
                         *map(str, images), "-o", str(out)]) == 0
    img = nib.load(out)
    assert img.shape == GRID_SHAPE + (2,) and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, AFFINE)
    data = img.get_fdata()
    assert np.all(data[~mask] == 0) and np.abs(data[mask]).max() > 0
    model = predict.load_model(model_file)
    pixels = np.stack([predict.load_image(p, IMAGE_SIZE) for p in images])
    vectors = predict.predict_vectors(model, rest[mask], pixels)
    np.testing.assert_allclose(MaskedGrid(mask, AFFINE).to_vectors(data), vectors, rtol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])  # the image changes the prediction

    out_dir = tmp_path / "batch"
    assert predict.main(["--model", str(model_file), "--rest", str(rest_path), "--images-dir",
                         str(tmp_path), "--out-dir", str(out_dir)]) == 0
    single = nib.load(out_dir / "img1_space-MNI152_desc-predicted_beta.nii.gz").get_fdata()
    np.testing.assert_allclose(single, data[..., 1], rtol=1e-6)


def test_predict_refuses_other_grid_unless_resampled(tmp_path, model_file):
    mask = toy_mask()
    rest = np.where(mask, np.random.default_rng(1).standard_normal(GRID_SHAPE), 0)
    image = write_png(tmp_path / "img.png", 0)
    # the same map on a grid one voxel larger in x (same world positions): resampling is exact
    wider = np.zeros((GRID_SHAPE[0] + 1,) + GRID_SHAPE[1:])
    wider[:-1] = rest
    wrong = write_rest_map(tmp_path / "wide.nii.gz", wider)
    args = ["--model", str(model_file), "--rest", str(wrong), "--image", str(image)]
    with pytest.raises(InputError, match=r"wide.nii.gz.*grid differs.*expected shape \(11, 13, 11\)"
                                         r"(.|\n)*found shape \(12, 13, 11\)(.|\n)*--resample"):
        predict.main(args + ["-o", str(tmp_path / "x.nii.gz")])
    assert not (tmp_path / "x.nii.gz").exists()
    moved = AFFINE.copy()
    moved[0, 3] += 2.0  # half a voxel off the model's grid
    shifted = write_rest_map(tmp_path / "shifted.nii.gz", rest, moved)
    with pytest.raises(InputError, match="shifted.nii.gz"):
        predict.main(["--model", str(model_file), "--rest", str(shifted), "--image", str(image),
                      "-o", str(tmp_path / "y.nii.gz")])
    assert predict.main(args + ["--resample", "-o", str(tmp_path / "r.nii.gz")]) == 0
    ref = tmp_path / "ref.nii.gz"
    predict.main(["--model", str(model_file), "--rest", str(write_rest_map(tmp_path / "ok.nii.gz", rest)),
                  "--image", str(image), "-o", str(ref)])
    np.testing.assert_allclose(nib.load(tmp_path / "r.nii.gz").get_fdata(), nib.load(ref).get_fdata(),
                               atol=1e-5)


def test_predict_input_errors(tmp_path, model_file):
    model = predict.load_model(model_file)
    with pytest.raises(ValueError, match="expected uint8 images"):
        predict.predict_vectors(model, np.zeros(model.grid.n_voxels), np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="expected rest vectors"):
        predict.predict_vectors(model, np.zeros((2, 5)),
                                np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"no image")
    with pytest.raises(InputError, match="broken.png"):
        predict.load_image(tmp_path / "broken.png", IMAGE_SIZE)
    not_model = save_checkpoint({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a Rest2Visual model file"):
        predict.load_model(not_model)


def test_predict_from_rest_runs_uses_the_model_rest_settings(tmp_path):
    from rest2visual.preprocess.rest_map import pcc_seed_zmap

    mask = toy_mask()
    from rest2visual.preprocess.recipe import make_recipe

    rest_cfg = make_recipe(hrf_model="glover", units="raw", bandpass_hz=(0.01, 0.2), filter_order=2,
                           combine_runs="mean", seed_center_mm=(0, 0, 0), seed_radius_mm=6.0,
                           seed_mask=None, confounds=False, tr_s=1.0)
    torch.manual_seed(0)
    model = build_model(TOY_MODEL)
    path = save_model_file(tmp_path / "model.pt", model.state_dict(),
                           {"model": TOY_MODEL, "rest": rest_cfg}, mask=toy_mask(), affine=AFFINE,
                           image_size=IMAGE_SIZE)
    rng = np.random.default_rng(0)
    runs = []
    for r in range(2):
        data = rng.standard_normal(GRID_SHAPE + (100,)).astype(np.float32) * mask[..., None]
        img = nib.Nifti1Image(data, AFFINE)
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = 1.0
        runs.append(tmp_path / f"run{r}.nii.gz")
        nib.save(img, runs[-1])
    image = write_png(tmp_path / "img.png", 0)
    out = tmp_path / "from_runs.nii.gz"
    assert predict.main(["--model", str(path), "--rest-run", *map(str, runs), "--image", str(image),
                         "-o", str(out)]) == 0
    zmap = pcc_seed_zmap(runs, nib.Nifti1Image(mask.astype(np.uint8), AFFINE),
                         seed_center_mm=(0, 0, 0), seed_radius_mm=6.0, bandpass_hz=(0.01, 0.2))
    ref = tmp_path / "from_map.nii.gz"
    predict.main(["--model", str(path), "--rest", str(write_rest_map(tmp_path / "z.nii.gz", zmap.get_fdata())),
                  "--image", str(image), "-o", str(ref)])
    np.testing.assert_allclose(nib.load(out).get_fdata(), nib.load(ref).get_fdata(), atol=1e-5)


def test_noise_ablation_inputs(model_file):
    model = predict.load_model(model_file)
    rest = np.random.default_rng(0).standard_normal((3, model.grid.n_voxels)).astype(np.float32)
    images = np.random.default_rng(1).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    noise_rest, same_images = predict.ablation_inputs(rest, images, ablation="noise_rest", seed=0)
    assert noise_rest.shape == rest.shape and np.array_equal(same_images, images)
    assert abs(np.corrcoef(noise_rest[0], rest[0])[0, 1]) < 0.1
    same_rest, noise_images = predict.ablation_inputs(rest, images, ablation="noise_image", seed=0)
    assert np.array_equal(same_rest, rest) and noise_images.dtype == np.uint8
    assert not np.array_equal(noise_images, images)
    a = predict.predict_vectors(model, *predict.ablation_inputs(rest, images, ablation="noise_image", seed=4))
    b = predict.predict_vectors(model, *predict.ablation_inputs(rest, images, ablation="noise_image", seed=4))
    np.testing.assert_array_equal(a, b)  # seeded
    with pytest.raises(ValueError, match="unknown ablation"):
        predict.ablation_inputs(rest, images, ablation="shuffle")


def test_checkpoint_bytes_depend_only_on_the_payload(tmp_path):
    """Two saves of one payload under different names give the same bytes (reproducible
    model.pt): torch names the zip's root folder after a path, here never the temp name."""
    from rest2visual.model.checkpoint import save_checkpoint

    payload = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "config": {"seed": 0}}
    a = save_checkpoint(payload, tmp_path / "a" / "model.pt")
    b = save_checkpoint(payload, tmp_path / "b" / "last.pt")
    assert a.read_bytes() == b.read_bytes()
