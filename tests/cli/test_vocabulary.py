"""One flag vocabulary across ``explain``, ``explain --data`` and ``detect``: each flag's old
spelling is an alias of the canonical one (same parsed arguments, same run); ``--layer-name`` and
``--method`` are repeatable and take several values; a flag of the other mode is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from lightning_cam.cli import detect as detect_cli
from lightning_cam.cli import explain as explain_cli
from lightning_cam.cli import main as cli_main
from lightning_cam.predict import folder
from lightning_cam.tools import viz


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _explain_args(*argv: str) -> dict:
    return vars(explain_cli.build_parser().parse_args(list(argv)))


def _detect_args(*argv: str) -> dict:
    return vars(detect_cli.build_parser().parse_args(list(argv)))


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("parse", [_explain_args, _detect_args])
def test_model_and_network_are_one_flag(parse) -> None:
    assert parse("--network", "resnet18") == parse("--model", "resnet18")
    assert parse("--network=resnet18")["model"] in ("resnet18", ["resnet18"])


@pytest.mark.parametrize("parse", [_explain_args, _detect_args])
def test_layer_name_is_repeatable_and_takes_several_values(parse) -> None:
    several = parse("--layer-name", "a", "b")
    assert several == parse("--layer-name", "a", "--layer-name", "b")
    assert several["layer_name"] == ["a", "b"]
    assert parse("--layer-name", "a")["layer_name"] == ["a"]


@pytest.mark.parametrize("parse", [_explain_args, _detect_args])
def test_method_and_methods_are_one_flag(parse) -> None:
    expected = parse("--method", "gradcam", "gradcam++")
    assert expected["method"] == ["gradcam", "gradcam++"]
    assert parse("--methods", "gradcam", "gradcam++") == expected
    assert parse("--method", "gradcam", "--methods", "grad-cam++") == expected  # an alias


def test_explain_data_spellings_parse_alike(tmp_path: Path) -> None:
    old = _explain_args("--data", str(tmp_path), "--output-dir", "o", "--network", "resnet18",
                        "--methods", "gradcam", "--layer-name", "layer3", "layer4")
    new = _explain_args("--data", str(tmp_path), "--output-dir", "o", "--model", "resnet18",
                        "--method", "gradcam", "--layer-name", "layer3",
                        "--layer-name", "layer4")
    assert old == new
    # explain --data is an argparse mode of the explain parser: the same parser
    assert vars(folder.build_parser().parse_args(
        ["--data", str(tmp_path), "--output-dir", "o", "--network", "resnet18",
         "--methods", "gradcam", "--layer-name", "layer3", "layer4"])) == new


def test_mode_defaults_are_filled_in(tmp_path: Path) -> None:
    images = explain_cli.build_parser().parse_args([])
    assert explain_cli.resolve_mode(images) == "images"
    assert (images.batch_size, images.output_dir, images.device) == (8, "results", "cpu")
    assert not hasattr(images, "shard_size")
    data = explain_cli.build_parser().parse_args(["--data", str(tmp_path)])
    assert explain_cli.resolve_mode(data) == "data"
    assert (data.batch_size, data.shard_size, data.metrics, data.guided_gradcam) == (
        16, 1024, None, False)
    assert not hasattr(data, "class_id")


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("argv, message", [
    (["--metrics", "average_drop"], "--metrics: only for explain --data"),
    (["--devices", "2", "--overlays", "3"], "--devices, --overlays: only for explain --data"),
    (["--guided-gradcam"], "--guided-gradcam: only for explain --data"),
    (["--layer-name", "layer3", "layer4"], "explain takes one --layer-name for images, got 2"),
])
def test_explain_refuses_flags_of_the_dataset_mode(argv, message, capsys) -> None:
    assert explain_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--class-id", "3"], "--class-id: not for explain --data"),
    (["--device", "cpu", "--image-path", "x.png"], "--image-path, --device: not for explain"),
    (["--reshape-transform", "tokens"], "--reshape-transform: not for explain --data"),
    (["--output-dir", "o", "--model", "resnet18", "vgg16"], "explain --data takes one --model"),
    (["--output-dir", "o", "--weight-path", "a.pth", "b.pth"],
     "explain --data takes one --weight-path"),
    ([], "explain --data needs --output-dir"),
])
def test_explain_data_refuses_flags_of_the_images_mode(argv, message, tmp_path, capsys) -> None:
    assert cli_main(["explain", "--data", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_dataset_entry_point_needs_data(capsys) -> None:
    assert folder.main(["--output-dir", "o"]) == 2
    assert "required: --data" in capsys.readouterr().err


# ----------------------------------------------------------------------------- same runs


def _summary(out_dir: Path) -> dict:
    summary = json.loads((out_dir / "summary.json").read_text())
    for key in ("created", "output_dir"):
        summary.pop(key, None)
    return summary


def _pictures(out_dir: Path) -> dict[str, np.ndarray]:
    return {p.name: viz.load_image(p) for p in sorted(out_dir.glob("*.jpg"))}


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 80, (60, 70, 3), dtype=np.uint8)
    picture[20:40, 15:35] = (250, 200, 40)
    path = tmp_path / "disc.png"
    viz.save_image(path, picture)
    return path


def test_explain_old_and_new_spellings_give_the_same_run(image, tmp_path, capsys) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    common = ["--image-path", str(image), "--weight-path", str(weights), "--image-size", "64",
              "--quiet"]
    old = ["--network", "resnet18", "--methods", "gradcam", "layercam", "--layer-name", "layer3"]
    new = ["--model", "resnet18", "--method", "gradcam", "--method", "layercam",
           "--layer-name", "layer3"]
    assert explain_cli.main([*common, *old, "--output-dir", str(tmp_path / "old")]) == 0
    assert explain_cli.main([*common, *new, "--output-dir", str(tmp_path / "new")]) == 0
    assert _summary(tmp_path / "old") == _summary(tmp_path / "new")
    assert _summary(tmp_path / "new")["methods"] == ["gradcam", "layercam"]
    old_pictures, new_pictures = _pictures(tmp_path / "old"), _pictures(tmp_path / "new")
    assert old_pictures.keys() == new_pictures.keys() and len(new_pictures) == 6
    for name, picture in old_pictures.items():
        np.testing.assert_array_equal(picture, new_pictures[name])


DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


def test_detect_old_and_new_spellings_give_the_same_run(image, tmp_path, capsys) -> None:
    torch.manual_seed(0)
    det = torchvision.models.get_model(DETECTOR, weights=None, weights_backbone=None,
                                       num_classes=3)
    weights = tmp_path / "det.pth"
    torch.save({"model": det.state_dict()}, weights)
    common = ["--image-path", str(image), "--weight-path", str(weights), "--min-size", "128",
              "--max-size", "160", "--score-threshold", "0", "--top-k", "1", "--quiet"]
    old = ["--model", DETECTOR, "--layer-name", "backbone.body.13",
           "--layer-name", "backbone.body.16", "--method", "gradcam"]
    new = ["--network", DETECTOR, "--layer-name", "backbone.body.13", "backbone.body.16",
           "--methods", "gradcam"]
    assert detect_cli.main([*common, *old, "--output-dir", str(tmp_path / "old")]) == 0
    assert detect_cli.main([*common, *new, "--output-dir", str(tmp_path / "new")]) == 0
    summary = _summary(tmp_path / "new")
    assert _summary(tmp_path / "old") == summary
    assert summary["layers"] == ["backbone.body.13", "backbone.body.16"]


def test_explain_data_with_the_new_spellings(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        viz.save_image(data / f"im{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=2).state_dict(), weights)
    out = tmp_path / "out"
    assert cli_main(["explain", "--data", str(data), "--output-dir", str(out), "--model",
                     "resnet18", "--weight-path", str(weights), "--image-size", "64",
                     "--method", "gradcam", "--layer-name", "layer3", "--layer-name", "layer4",
                     "--metrics", "average_drop", "--quiet"]) == 0
    df = pd.read_parquet(out / "manifest.parquet")
    assert len(df) == 3
    assert {"gradcam/model.layer3/average_drop", "gradcam/model.layer4/average_drop"} <= set(
        df.columns)


# ----------------------------------------------------------------------------- one definition


def test_default_methods_and_image_extensions_have_one_definition() -> None:
    from lightning_cam import methods
    from lightning_cam.detection import base
    from lightning_cam.predict import writer
    from lightning_cam.tools import classifier, image_io

    assert classifier.DEFAULT_METHODS is methods.DEFAULT_METHODS
    assert writer.DEFAULT_METHODS is methods.DEFAULT_METHODS
    assert base.DEFAULT_METHODS is methods.DEFAULT_DETECTION_METHODS
    assert folder.IMAGE_SUFFIXES is image_io.IMAGE_EXTENSIONS
    assert classifier.IMAGE_EXTENSIONS is image_io.IMAGE_EXTENSIONS
