"""timm and Hugging Face transformers models: layouts, default layers, maps, the CLI.

Tiny configurations with random weights (no download); every map is checked against an
independent Grad-CAM with an explicit reshape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import lightning_cam as lc
from lightning_cam.cli import explain as explain_cli
from lightning_cam.engine.layers import default_layer
from lightning_cam.engine.layouts import recognise
from tests.optional import require
from tests.transformer_helpers import check_against_reference, nchw, nhwc, vit_tokens


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _timm(name: str, **kwargs) -> nn.Module:
    timm = require("timm", "pip install timm")
    return timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()


_TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


# ----------------------------------------------------------------------------- timm


@pytest.mark.parametrize(
    ("name", "kwargs", "prefix"),
    [
        ("vit_tiny_patch16_224", _TINY_VIT, 1),
        ("deit_tiny_distilled_patch16_224", _TINY_VIT, 2),  # class + distillation token
        ("vit_small_patch16_224", {**_TINY_VIT, "reg_tokens": 4}, 5),  # class + 4 registers
    ],
)
def test_timm_vit_family_default_layer_prefix_tokens_and_map(
    name: str, kwargs: dict, prefix: int
) -> None:
    model = _timm(name, **kwargs)
    family = recognise(model)
    assert family is not None and family.num_prefix_tokens == prefix
    x = torch.rand(2, 3, 32, 32)
    assert default_layer(model, x) == "blocks.1.norm1"
    check_against_reference(
        model, x, None, vit_tokens(prefix, 4, 4), 5, expected_layer="blocks.1.norm1"
    )
    check_against_reference(model, x, "blocks.0", vit_tokens(prefix, 4, 4), 5)


def test_timm_vit_same_maps_as_pytorch_grad_cam() -> None:
    """pytorch-grad-cam with its ViT reshape_transform gives the same maps. The only
    difference: it min-max normalises at the token grid and then resizes with cv2, where
    lightning-cam resizes first; normalising ours at the grid and resizing likewise agrees."""
    require("pytorch_grad_cam", "pip install grad-cam")
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _timm("vit_tiny_patch16_224", **_TINY_VIT)
    x = torch.rand(3, 3, 32, 32)
    ids = [1, 3, 4]

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:, :].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    with PGCGradCAM(model=model, target_layers=[model.blocks[-1].norm1],
                    reshape_transform=reshape) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in ids])
    model.zero_grad(set_to_none=True)
    ours = lc.explain(model, x, methods=("gradcam",), target=ids, upsample=False).cam()
    assert ours.shape == (3, 4, 4)
    for i in range(3):
        resized = cv2.resize(ours[i].numpy(), (32, 32))  # as pytorch-grad-cam resizes
        resized = (resized - resized.min()) / (1e-7 + resized.max() - resized.min())
        np.testing.assert_allclose(resized, theirs[i], atol=1e-4)
    assert float(ours.max()) == 1.0


def test_timm_swin_channels_last_stages() -> None:
    model = _timm(
        "swin_tiny_patch4_window7_224", img_size=64, embed_dim=16, depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1), window_size=2,
    )
    x = torch.rand(2, 3, 64, 64)
    assert default_layer(model, x) == "layers.3"
    check_against_reference(model, x, None, nhwc, 5, expected_layer="layers.3")
    check_against_reference(model, x, "layers.2", nhwc, 5)
    check_against_reference(model, x, "norm", nhwc, 5)
    # Window attention sees (B * windows, tokens, C): refused, not misread.
    with pytest.raises(ValueError, match=r"'layers.1.blocks.0.attn' outputs \(32, 4, 32\).*"
                       r"partitions"):
        lc.GradCAM(model, "layers.1.blocks.0.attn")(x)


def test_timm_convnext_and_efficientnet() -> None:
    x = torch.rand(2, 3, 64, 64)
    convnext = _timm("convnext_atto", conv_mlp=False)
    layer = default_layer(convnext, x)
    assert layer in ("stages", "stages.3")  # the same map: the last stage's output
    check_against_reference(convnext, x, None, nchw, 5, expected_layer=layer)
    # Without conv_mlp its blocks' MLP runs channels-last.
    check_against_reference(convnext, x, "stages.2.blocks.1.mlp.fc1", nhwc, 5)
    effnet = _timm("efficientnet_b0")
    layer = default_layer(effnet, x)
    assert layer in ("bn2", "conv_head")
    check_against_reference(effnet, x, None, nchw, 5, expected_layer=layer)


# ----------------------------------------------------------------------------- transformers


def _hf_vit(image_size: int = 32):
    transformers = require("transformers", "pip install transformers")
    config = transformers.ViTConfig(
        image_size=image_size, patch_size=8, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, num_labels=5,
    )
    return transformers.ViTForImageClassification(config).eval()


def test_hf_vit_logits_default_layer_and_map() -> None:
    model = _hf_vit()
    x = torch.rand(2, 3, 32, 32)
    layer = default_layer(model, x)
    assert layer.endswith("layers.1.layernorm_before") or layer.endswith(
        "layer.1.layernorm_before"
    )
    check_against_reference(model, x, None, vit_tokens(1, 4, 4), 5, expected_layer=layer)
    out = lc.explain(model, x, methods=("gradcam",), target=[0, 4])
    torch.testing.assert_close(out.logits, model(x).logits)  # read from .logits


def test_hf_swin_tokens_without_prefix_at_stage_grids() -> None:
    transformers = require("transformers", "pip install transformers")
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1], num_heads=[1, 1, 1],
        window_size=2, num_labels=5,
    )
    model = transformers.SwinForImageClassification(config).eval()
    x = torch.rand(2, 3, 32, 32)
    assert default_layer(model, x) == "swin.layernorm"
    check_against_reference(model, x, None, vit_tokens(0, 2, 2), 5,
                            expected_layer="swin.layernorm")
    # The first stage's patch merging outputs the next grid's tokens (4 x 4 = 16).
    check_against_reference(model, x, "swin.encoder.layers.0.downsample", vit_tokens(0, 4, 4), 5)


def test_hf_convnext() -> None:
    transformers = require("transformers", "pip install transformers")
    config = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=5
    )
    model = transformers.ConvNextForImageClassification(config).eval()
    x = torch.rand(2, 3, 64, 64)
    layer = "convnext.encoder.stages.3"
    assert default_layer(model, x) == layer
    check_against_reference(model, x, None, nchw, 5, expected_layer=layer)
    check_against_reference(model, x, "convnext.encoder.stages.2.layers.0.pwconv1", nhwc, 5)


def test_import_does_not_need_timm_or_transformers() -> None:
    code = (
        "import sys, lightning_cam, lightning_cam.engine.layouts, lightning_cam.zoo.hubs, "
        "lightning_cam.engine.explainer\n"
        "assert 'timm' not in sys.modules and 'transformers' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('timm', 'transformers'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# ----------------------------------------------------------------------------- CLI


def _image(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 80, (40, 56, 3), dtype=np.uint8)
    cv2.circle(img, (20, 20), 10, (250, 200, 40), -1)
    path = folder / "disc.png"
    cv2.imwrite(str(path), img)
    return path


def test_cli_timm_network_with_weight_path(tmp_path: Path, capsys) -> None:
    model = _timm("deit_tiny_distilled_patch16_224")
    weights = tmp_path / "deit.pth"
    torch.save({"state_dict": model.state_dict()}, weights)
    out = tmp_path / "out"
    code = explain_cli.main([
        "--quiet", "--image-path", str(_image(tmp_path)), "--output-dir", str(out),
        "--network", "timm:deit_tiny_distilled_patch16_224", "--weight-path", str(weights),
    ])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    [net] = summary["networks"]
    assert (net["network"], net["layer"], net["image_size"]) == (
        "timm-deit_tiny_distilled_patch16_224", "blocks.11.norm1", 224
    )
    [record] = summary["results"]
    assert record["class_id"] in range(5)
    assert (out / "disc-timm-deit_tiny_distilled_patch16_224-cam.jpg").is_file()


def test_cli_hf_folder(tmp_path: Path, capsys) -> None:
    model = _hf_vit()
    folder = tmp_path / "my-vit"
    model.save_pretrained(folder)
    out = tmp_path / "out"
    code = explain_cli.main([
        "--quiet", "--image-path", str(_image(tmp_path)), "--output-dir", str(out),
        "--network", f"hf:{folder}",
    ])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    [net] = summary["networks"]
    assert net["network"] == "hf-my-vit" and net["image_size"] == 32
    assert net["layer"].endswith("1.layernorm_before")
    assert (out / "disc-hf-my-vit-heatmap.jpg").is_file()


def test_cli_external_errors(tmp_path: Path, capsys) -> None:
    img = str(_image(tmp_path))
    weights = tmp_path / "tiny.pth"
    torch.save(_timm("vit_tiny_patch16_224", **_TINY_VIT).state_dict(), weights)
    code = explain_cli.main(["--quiet", "--image-path", img, "--network", "timm:no_such_net",
                             "--weight-path", str(weights)])
    assert code == 2 and "Unknown timm model 'no_such_net'" in capsys.readouterr().err
    code = explain_cli.main(["--quiet", "--image-path", img, "--network", f"hf:{tmp_path}"])
    assert code == 2 and "no config.json" in capsys.readouterr().err
    code = explain_cli.main(["--quiet", "--image-path", img, "--network",
                             "timm:vit_tiny_patch16_224", "--weight-path", str(weights)])
    err = capsys.readouterr().err
    assert code == 2 and "do not fit timm:vit_tiny_patch16_224" in err and "mismatch" in err


def test_cli_reshape_transform_matches_the_python_api(tmp_path: Path, capsys) -> None:
    transformers = require("transformers", "pip install transformers")
    config = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=5, image_size=64
    )
    torch.manual_seed(0)
    folder = tmp_path / "cnx"
    transformers.ConvNextForImageClassification(config).eval().save_pretrained(folder)
    img = _image(tmp_path)
    layer = "convnext.encoder.stages.2.layers.0.pwconv1"  # a Linear on (B, h, w, C)
    common = ["--quiet", "--image-path", str(img), "--network", f"hf:{folder}",
              "--layer-name", layer, "--image-size", "64"]

    def cli(out: Path, layout: str) -> dict:
        code = explain_cli.main([*common, "--output-dir", str(out), "--reshape-transform", layout])
        assert code == 0, capsys.readouterr().err
        return json.loads((out / "summary.json").read_text())

    summary = cli(tmp_path / "cli", "channels_last")
    [net] = summary["networks"]
    assert (net["layer"], net["reshape_transform"]) == (layer, "channels_last")
    [api] = lc.explain_classifier(f"hf:{folder}", [img], layer=layer, image_size=64,
                                  reshape_transform="channels_last",
                                  output_dir=tmp_path / "api")
    assert [r["class_id"] for r in summary["results"]] == [api.class_id]
    # The explicit layout through the engine, against an independent reshape.
    model = transformers.ConvNextForImageClassification.from_pretrained(folder).eval()
    check_against_reference(model, torch.rand(2, 3, 64, 64), layer, nhwc, 5)
    by_path = cli(tmp_path / "path", "lightning_cam.layouts.channels_last")
    # an old module path is recorded where the function lives now
    recorded = by_path["networks"][0]["reshape_transform"]
    assert recorded == "lightning_cam.engine.layouts.channels_last"
    for key in ("heatmap", "cam", "heatmap++", "cam_gb"):
        name = f"disc-hf-cnx-{key}.jpg"
        api_pixels = cv2.imread(str(tmp_path / "api" / name))
        assert np.array_equal(cv2.imread(str(tmp_path / "cli" / name)), api_pixels), key
        assert np.array_equal(cv2.imread(str(tmp_path / "path" / name)), api_pixels), key
    # Read as channels-first, the same layer is another (wrong) picture: the option is used.
    cli(tmp_path / "first", "channels_first")
    assert not np.array_equal(cv2.imread(str(tmp_path / "first" / "disc-hf-cnx-heatmap.jpg")),
                              cv2.imread(str(tmp_path / "api" / "disc-hf-cnx-heatmap.jpg")))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sideways", "--reshape-transform='sideways' is not a layout; expected one of auto, "
                     "tokens, channels_last, channels_first"),
        ("lightning_cam.layouts.no_such", "--reshape-transform='lightning_cam.layouts.no_such' "
                                          "does not import"),
        ("lightning_cam.layouts.LAYOUTS", "is a tuple, not a callable"),
    ],
)
def test_cli_bad_reshape_transform_exits_2(tmp_path: Path, capsys, value: str,
                                           message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        explain_cli.main(["--quiet", "--image-path", str(_image(tmp_path)),
                          "--reshape-transform", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --reshape-transform" in err and message in err, err


def test_cli_reshape_transform_that_does_not_fit_the_layer(tmp_path: Path, capsys) -> None:
    transformers = require("transformers", "pip install transformers")
    config = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=5, image_size=64
    )
    folder = tmp_path / "cnx"
    transformers.ConvNextForImageClassification(config).save_pretrained(folder)
    code = explain_cli.main([
        "--quiet", "--image-path", str(_image(tmp_path)), "--network", f"hf:{folder}",
        "--layer-name", "convnext.encoder.stages.3", "--reshape-transform", "tokens",
        "--output-dir", str(tmp_path / "out"),
    ])
    err = capsys.readouterr().err
    assert code == 2 and "convnext.encoder.stages.3" in err and "not tokens" in err, err
    assert not (tmp_path / "out").exists()
