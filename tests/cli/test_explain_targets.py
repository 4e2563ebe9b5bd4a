"""``lightning-cam explain --target SPEC`` (and its alias ``--class-id N``): binary and
regression heads saved as weight files, explained from the shell and from Python, the maps
equal to the engine's for the same target; refusals in one line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

import lightning_cam as lc
from lightning_cam.cli import explain as explain_cli
from lightning_cam.engine.targets import BinaryTarget
from lightning_cam.tools.classifier import ClassifierExplainer

SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _weights(folder: Path, k: int) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=k).eval()
    path = folder / f"resnet18_{k}.pth"
    torch.save(model.state_dict(), path)
    return str(path), model


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = np.random.default_rng(0).integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
    cv2.circle(img, (20, 30), 12, (250, 200, 40), -1)
    path = tmp_path / "disc.png"
    cv2.imwrite(str(path), img[..., ::-1])
    return path


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = explain_cli.main(["--quiet", "--image-size", str(SIZE), *args])
    return code, capsys.readouterr().err


def _input(weights: str, image: Path) -> torch.Tensor:
    explainer = ClassifierExplainer("resnet18", weight_path=weights, image_size=SIZE)
    rgb = cv2.imread(str(image))[..., ::-1].copy()
    return explainer.preprocess(rgb)[None]


@pytest.mark.parametrize("spec", ["binary", "binary:negative"])
def test_binary_target_from_the_shell(tmp_path: Path, image: Path, capsys, spec: str) -> None:
    weights, model = _weights(tmp_path, 1)
    out = tmp_path / "out"
    code, err = _cli(["--image-path", str(image), "--network", "resnet18", "--weight-path",
                      weights, "--target", spec, "--output-dir", str(out)], capsys)
    assert code == 0, err
    (record,) = json.loads((out / "summary.json").read_text())["results"]
    x = _input(weights, image)
    z = float(model(x)[0, 0])
    assert record["target"] == spec and "class_name" not in record
    assert record["score"] == pytest.approx(-z if spec != "binary" else z, rel=1e-4)
    assert record["value"] == pytest.approx(float(torch.sigmoid(torch.tensor(z))), rel=1e-4)
    assert (out / "disc-resnet18-cam.jpg").is_file()  # the default's file names
    # the maps: the engine's for BinaryTarget (image at the input size: no resize)
    [got] = ClassifierExplainer(
        "resnet18", weight_path=weights, image_size=SIZE, target=spec
    ).explain([image])
    want = lc.GradCAM(model, "layer4")(x, target=BinaryTarget(spec != "binary"))[0]
    np.testing.assert_allclose(got.gradcam, want.numpy(), atol=1e-5)


def test_regression_decrease_is_the_map_of_the_negated_output(tmp_path: Path, image: Path,
                                                              capsys) -> None:
    weights, model = _weights(tmp_path, 2)
    out = tmp_path / "out"
    code, err = _cli(["--image-path", str(image), "--network", "resnet18", "--weight-path",
                      weights, "--target", "regression:1:decrease", "--output-dir", str(out)],
                     capsys)
    assert code == 0, err
    (record,) = json.loads((out / "summary.json").read_text())["results"]
    x = _input(weights, image)
    y = model(x).detach()[0]
    assert record["target"] == "regression:1:decrease"
    assert record["score"] == pytest.approx(-float(y[1]), rel=1e-4)
    assert record["value"] == pytest.approx(float(y[1]), rel=1e-4)
    [got] = ClassifierExplainer("resnet18", weight_path=weights, image_size=SIZE,
                                target="regression:1:decrease").explain([image])

    def negated(output: torch.Tensor) -> torch.Tensor:
        return -output[:, 1]

    want = lc.GradCAM(model, "layer4")(x, target=negated)[0]
    np.testing.assert_allclose(got.gradcam, want.numpy(), atol=1e-5)


def test_class_id_is_an_alias_of_target(tmp_path: Path, image: Path, capsys) -> None:
    weights, _ = _weights(tmp_path, 3)
    base = ["--image-path", str(image), "--network", "resnet18", "--weight-path", weights]
    records = []
    for i, flags in enumerate((["--class-id", "2"], ["--target", "2"],
                               ["--class-id", "2", "--target", "2"])):
        out = tmp_path / f"o{i}"
        code, err = _cli([*base, *flags, "--output-dir", str(out)], capsys)
        assert code == 0, err
        (record,) = json.loads((out / "summary.json").read_text())["results"]
        records.append((record["class_id"], record["score"]))
    assert records[0] == records[1] == records[2] and records[0][0] == 2


@pytest.mark.parametrize(
    ("k", "flags", "message"),
    [
        (1, ["--target", "0"], "class id, but the output is a single-logit binary head (B, 1): "
                               "use target='binary'"),
        (3, ["--target", "binary"], "single-logit head (B, 1), but the output has 3 values"),
        (2, ["--target", "regression:2"], "index 2 is out of range for an output of 2"),
        (3, ["--class-id", "1", "--target", "2"], "--class-id 1 and --target 2 disagree"),
        (3, ["--target", "labels"], "lightning_cam.explain_multilabel, or "
                                    "CAMCallback(target='labels')"),
        (3, ["--target", "label"], "needs labels, which image files do not carry"),
        (3, ["--target", "regression:1:down"], "direction among output, increase, decrease"),
        (3, ["--target", "nope"], "is not a target spec"),
        (3, ["--class-id", "-1"], "--class-id must be >= 0, got -1"),
    ],
)
def test_refusals(tmp_path: Path, image: Path, capsys, k: int, flags: list[str],
                  message: str) -> None:
    weights, _ = _weights(tmp_path, k)
    code, err = _cli(["--image-path", str(image), "--network", "resnet18", "--weight-path",
                      weights, *flags, "--output-dir", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "o" / "disc-resnet18-cam.jpg").exists()


def test_data_mode_binary_target(tmp_path: Path, image: Path, capsys) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    weights, model = _weights(tmp_path, 1)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"im{i}.png").write_bytes(image.read_bytes())
    out = tmp_path / "out"
    code = explain_cli.main(["--quiet", "--data", str(data), "--output-dir", str(out),
                             "--network", "resnet18", "--weight-path", weights,
                             "--image-size", str(SIZE), "--target", "binary"])
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(out / "manifest.parquet")
    z = float(model(_input(weights, image))[0, 0])
    assert df["target"].tolist() == ["binary"] * 3
    np.testing.assert_allclose(df["score"], z, rtol=1e-4)
    np.testing.assert_allclose(df["target_value"], 1 / (1 + np.exp(-z)), rtol=1e-4)
    # the model metrics score a class: refused for binary targets
    code = explain_cli.main(["--quiet", "--data", str(data), "--output-dir", str(tmp_path / "m"),
                             "--network", "resnet18", "--weight-path", weights,
                             "--target", "binary", "--metrics", "average_drop"])
    assert code == 2 and "do not read a class's score" in capsys.readouterr().err
