"""``lightning-cam detect``: files written and decodable, summary, bad input in one line."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from lightning_cam.cli import main as cli_main
from lightning_cam.cli.detect import main
from lightning_cam.data.detection import ShapesDetectionDataset
from lightning_cam.detection import zoo
from lightning_cam.tools import viz
from tests.registry import register_test_method

MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
SMALL = ["--min-size", "128", "--max-size", "160"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    det = torchvision.models.get_model(MODEL, weights=None, weights_backbone=None, num_classes=5)
    path = tmp_path_factory.mktemp("w") / "det.pth"
    torch.save({"model": det.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(2):
        image, _ = ShapesDetectionDataset(2, image_size=128, seed=3)[i]
        path = folder / f"shapes{i}.png"
        viz.save_image(path, viz.to_uint8_image(image)[:, : 100 + 20 * i])  # two sizes
        paths.append(str(path))
    return paths


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_boxes_heatmaps_sheet_and_summary(tmp_path, capsys, weights, images):
    names = tmp_path / "names.txt"
    names.write_text("circle\nsquare\ntriangle\nstar\n")  # no background line: prepended
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, [
        "--image-path", images[0], "--model", MODEL, "--weight-path", weights,
        "--layer-name", "backbone.body.13", "--layer-name", "backbone.body.16", "--roi",
        "--score-threshold", "0", "--top-k", "2", "--class-names", str(names),
        "--method", "gradcam", "gradcam++", "--output-dir", str(out_dir), *SMALL,
    ])
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["model"] == MODEL and summary["weights"] == weights
    assert summary["layers"] == ["backbone.body.13", "backbone.body.16", "roi_heads.box_roi_pool"]
    (record,) = summary["images"]
    assert record["image_size"] == [128, 100]
    dets = record["detections"]
    assert len(dets) == 2
    assert all(d["class_name"] in ("circle", "square", "triangle", "star") for d in dets)
    written = set()
    for d in dets:
        for layer in summary["layers"]:
            for method, suffix in (("gradcam", "heatmap"), ("gradcam++", "heatmap++")):
                name = d["files"][method][layer]  # keyed by method, as the maps are
                assert name == f"shapes0-{MODEL}-{layer}-{d['index']}-{suffix}.jpg"
                written.add(name)
    written |= {record["files"]["predict_box"], record["files"]["sheet"]}
    assert record["files"]["predict_box"] == f"shapes0-{MODEL}-predict_box.jpg"
    assert {p.name for p in out_dir.iterdir()} == written | {"summary.json"}
    for name in written:
        picture = viz.load_image(out_dir / name)
        if "sheet" not in name:
            assert picture.shape == (128, 100, 3)
    assert "2 detection(s)" in out


def test_method_option_reads_the_registry(tmp_path, capsys, weights, images, monkeypatch):
    """A method registered in METHODS for the test is a --method choice: its heatmaps, its
    column in the sheet and its entries in the summary, with no edit of the tool."""
    method = register_test_method(monkeypatch)
    out_dir = tmp_path / "out"
    code, _, err = _run(capsys, [
        "--image-path", images[0], "--model", MODEL, "--weight-path", weights,
        "--layer-name", "backbone.body.13", "--score-threshold", "0", "--top-k", "2",
        "--method", method, "grad-cam", "--output-dir", str(out_dir), "--quiet", *SMALL,
    ])
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["methods"] == [method, "gradcam"]
    (record,) = summary["images"]
    written = {record["files"]["predict_box"], record["files"]["sheet"]}
    for d in record["detections"]:
        assert d["files"] == {
            method: {"backbone.body.13":
                     f"shapes0-{MODEL}-backbone.body.13-{d['index']}-{method}-heatmap.jpg"},
            "gradcam": {"backbone.body.13":
                        f"shapes0-{MODEL}-backbone.body.13-{d['index']}-heatmap.jpg"},
        }
        written |= {f for by_layer in d["files"].values() for f in by_layer.values()}
    assert {p.name for p in out_dir.iterdir()} == written | {"summary.json"}
    sheet = viz.load_image(out_dir / record["files"]["sheet"])
    one = viz.load_image(out_dir / record["files"]["predict_box"])
    assert sheet.shape[1] > 3 * 256 * one.shape[1] / max(one.shape[:2])  # 3 columns

    with pytest.raises(SystemExit) as info:
        main(["--image-path", images[0], "--method", "gradcan", "--output-dir", str(tmp_path)])
    assert info.value.code == 2
    assert "'gradcan'" in capsys.readouterr().err


def test_an_image_whose_file_cannot_be_written_leaves_none(tmp_path, capsys, weights, images,
                                                           monkeypatch):
    import os

    replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("-sheet.jpg") and "shapes1" in str(dst):
            raise OSError(28, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    out_dir = tmp_path / "out"
    code, _, err = _run(capsys, [
        "--image-path", *images, "--model", MODEL, "--weight-path", weights,
        "--score-threshold", "0", "--top-k", "2", "--output-dir", str(out_dir), *SMALL,
    ])
    assert code == 1
    assert "shapes1" in err and "No space left on device" in err
    names = {p.name for p in out_dir.iterdir()}
    assert not [n for n in names if n.startswith("shapes1") or n.startswith(".")]
    assert f"shapes0-{MODEL}-sheet.jpg" in names
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [r["stem"] for r in summary["images"]] == ["shapes0"]
    assert summary["failures"][0]["image"].endswith("shapes1.png")


def test_no_detection_is_a_message(tmp_path, capsys, weights, images):
    code, out, err = _run(capsys, [
        "--image-path", *images, "--model", MODEL, "--weight-path", weights,
        "--score-threshold", "1", "--output-dir", str(tmp_path), *SMALL,
    ])
    assert code == 0
    assert "no detection above the threshold 1" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [len(r["detections"]) for r in summary["images"]] == [0, 0]
    assert all("no detection" in r["message"] for r in summary["images"])


def test_dispatcher_routes_detect(tmp_path, capsys, weights, images):
    code = cli_main(["detect", "--image-path", images[1], "--model", MODEL, "--weight-path",
                     weights, "--score-threshold", "0", "--top-k", "1", "--quiet",
                     "--output-dir", str(tmp_path), *SMALL])
    assert code == 0
    # the detection default: EigenGrad-CAM (benchmarks/detection_quality.md)
    assert (tmp_path / f"shapes1-{MODEL}-backbone.body.16-0-eigengradcam-heatmap.jpg").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["methods"] == ["eigengradcam"]


def test_bad_image_among_good_ones_exits_1(tmp_path, capsys, weights, images):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    code, _, err = _run(capsys, [
        "--image-path", images[0], str(bad), "--model", MODEL, "--weight-path", weights,
        "--score-threshold", "0", "--top-k", "1", "--output-dir", str(tmp_path / "o"), *SMALL,
    ])
    assert code == 1
    assert "broken.jpg" in err and "not a readable image" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert len(summary["images"]) == 1 and summary["failures"][0]["image"].endswith("broken.jpg")


@pytest.fixture()
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(zoo, "load_pretrained", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "fasterrcnn_resnet51_fpn"], "Did you mean 'fasterrcnn_resnet50_fpn'"),
        (["--model", MODEL, "--image-path", "missing.png"], "Image not found"),
        (["--model", MODEL], "not in the local torch cache"),
        (["--model", MODEL, "--layer-name", "backbone.body.99"], "Unknown layer"),
        (["--model", "retinanet_resnet50_fpn", "--roi"], "two-stage"),
        (["--model", "retinanet_resnet50_fpn"], "do not fit retinanet_resnet50_fpn"),
        (["--model", MODEL, "--score-threshold", "2"], "--score-threshold"),
        (["--model", MODEL, "--top-k", "0"], "--top-k"),
        (["--model", MODEL, "--class-names", "nope.txt"], "class names file not found"),
        (["--model", MODEL, "--device", "cuda:77"], "cuda:77"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, offline, weights, images, argv, message):
    base = ["--output-dir", str(tmp_path), *SMALL]
    if "--image-path" not in argv:
        base += ["--image-path", images[0]]
    if message != "not in the local torch cache":
        base += ["--weight-path", weights]
    code, _, err = _run(capsys, [*argv, *base])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightning-cam detect: error:"), err
    assert message in lines[0]
    assert "--weight-path" in lines[0] or message != "not in the local torch cache"


def test_default_weights_when_available(tmp_path, capsys, monkeypatch, images):
    """DEFAULT weights go through the (replaceable) loader; COCO names come from the meta."""
    calls = []

    def fake_loader(name, weights, **kwargs):
        calls.append((name, str(weights), kwargs))
        torch.manual_seed(0)
        return torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                            num_classes=91, **kwargs)

    monkeypatch.setattr(zoo, "load_pretrained", fake_loader)
    code, _, err = _run(capsys, [
        "--image-path", images[0], "--model", MODEL, "--score-threshold", "0", "--top-k", "1",
        "--output-dir", str(tmp_path), *SMALL,
    ])
    assert code == 0, err
    assert calls == [(MODEL, "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1",
                      {"min_size": 128, "max_size": 160})]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["weights"].startswith("torchvision:")
    coco = zoo.coco_categories(MODEL)
    assert summary["images"][0]["detections"][0]["class_name"] in coco
