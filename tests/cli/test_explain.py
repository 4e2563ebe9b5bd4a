"""End-to-end tests of ``lightning-cam explain`` and the Python API behind it.

Every network runs with weights saved here from a ``weights=None`` model (nothing downloads);
images are small and networks run at small input sizes (80 px; Inception v3 needs >= 75).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

from lightning_cam.cli import explain as explain_cli
from lightning_cam.tools.classifier import (
    OUTPUT_KEYS,
    ClassifierExplainer,
    ClassifierExplanation,
    ImageFailure,
    collect_images,
    explain_classifier,
)
from lightning_cam.zoo.classifiers import SEED_NETWORKS
from tests.registry import register_test_method

SIZE = "80"
# Original image sizes (H, W): not square, not the input size, so alignment is tested.
SHAPES = {"cat": (60, 90), "dog": (72, 50)}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on 2 shared cores, two OpenMP threads are far slower when another
    process is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = {}
    for stem, (h, w) in SHAPES.items():
        # A bright disc on a noisy background: some structure for the gradients.
        img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        cv2.circle(img, (w // 3, h // 2), min(h, w) // 4, (250, 200, 40), -1)
        ext = ".png" if stem == "cat" else ".jpg"
        paths[stem] = folder / f"{stem}{ext}"
        cv2.imwrite(str(paths[stem]), img[..., ::-1])
    return paths


_ARCH = {"shufflenet_v2": "shufflenet_v2_x1_0"}


def save_weights(folder: Path, network: str, **kwargs) -> str:
    arch = _ARCH.get(network, network)
    if arch in ("inception_v3", "googlenet"):
        kwargs.setdefault("init_weights", False)
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    path = folder / f"{network}.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = explain_cli.main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def check_outputs(out_dir: Path, stem: str, network: str, shape: tuple[int, int]) -> None:
    for key in OUTPUT_KEYS:
        path = out_dir / f"{stem}-{network}-{key}.jpg"
        assert path.is_file(), path
        picture = cv2.imread(str(path))
        assert picture is not None, path
        assert picture.shape == (*shape, 3), (path, picture.shape)


def no_temp_files(out_dir: Path) -> bool:
    return not [p for p in out_dir.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("network", SEED_NETWORKS)
def test_each_seed_network_end_to_end(network: str, images, tmp_path, capsys) -> None:
    weights = save_weights(tmp_path, network)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["--image-path", str(images["cat"].parent), "--network", network,
         "--weight-path", weights, "--image-size", SIZE, "--output-dir", str(out_dir),
         "--batch-size", "2"],
        capsys,
    )
    assert code == 0, err
    for stem, shape in SHAPES.items():
        check_outputs(out_dir, stem, network, shape)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [r["network"] for r in summary["results"]] == [network, network]
    assert not (out_dir / "comparison.md").exists()  # one network: no comparison
    assert no_temp_files(out_dir)


def test_several_networks_comparison_sheet_and_summary(images, tmp_path, capsys) -> None:
    nets = ["mobilenet_v2", "shufflenet_v2"]
    weights = [save_weights(tmp_path, n) for n in nets]
    out_dir = tmp_path / "out"
    class_names = tmp_path / "classes.txt"
    class_names.write_text("".join(f"class {i}\n" for i in range(1000)))
    code, stdout, err = run_cli(
        ["--image-path", str(images["cat"]), str(images["dog"]),
         "--network", ",".join(nets), "--weight-path", *weights, "--image-size", SIZE,
         "--output-dir", str(out_dir), "--class-id", "7", "--class-names", str(class_names)],
        capsys,
    )
    assert code == 0, err
    for stem, shape in SHAPES.items():
        for net in nets:
            check_outputs(out_dir, stem, net, shape)
        sheet = cv2.imread(str(out_dir / f"{stem}-comparison.jpg"))
        assert sheet is not None
        # rows = networks, columns = the six pictures, plus label column and header row.
        assert sheet.shape[0] > 2 * shape[0] and sheet.shape[1] > 6 * shape[1]
        assert sheet.shape[0] < 3 * shape[0] + 60 and sheet.shape[1] < 7 * shape[1] + 140

    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["failures"] == []
    assert [n["network"] for n in summary["networks"]] == nets
    assert [n["layer"] for n in summary["networks"]] == ["features", "conv5"]
    assert summary["comparison_sheets"] == {
        "cat": "cat-comparison.jpg", "dog": "dog-comparison.jpg"
    }
    records = summary["results"]
    assert len(records) == 4
    first = records[0]
    assert first["image"] == str(images["cat"]) and first["network"] == "mobilenet_v2"
    assert first["layer"] == "features"
    assert first["class_id"] == 7 and first["class_name"] == "class 7"
    assert isinstance(first["score"], float) and 0.0 <= first["probability"] <= 1.0
    assert first["size"] == list(SHAPES["cat"])
    assert first["files"] == {k: f"cat-mobilenet_v2-{k}.jpg" for k in OUTPUT_KEYS}
    assert first["weights"] == weights[0]

    markdown = (out_dir / "comparison.md").read_text()
    assert "| network | heatmap | cam | heatmap++ | cam++ | gb | cam_gb |" in markdown
    assert "| shufflenet_v2 | ![heatmap](dog-shufflenet_v2-heatmap.jpg) |" in markdown
    assert "![cat comparison](cat-comparison.jpg)" in markdown
    assert "4 explanation(s)" not in stdout  # --quiet
    assert no_temp_files(out_dir)


def test_default_image_is_the_sample_photo(tmp_path, capsys) -> None:
    weights = save_weights(tmp_path, "mobilenet_v2")
    out_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["--network", "mobilenet_v2", "--weight-path", weights, "--image-size", "64",
         "--output-dir", str(out_dir)],
        capsys,
    )
    assert code == 0, err
    check_outputs(out_dir, "chelsea", "mobilenet_v2", (300, 451))
    record = json.loads((out_dir / "summary.json").read_text())["results"][0]
    assert record["image"] == "chelsea"
    assert record["class_name"] is not None  # 1000-class torchvision head: ImageNet names


def test_lightning_cam_checkpoint_without_network(images, tmp_path, capsys) -> None:
    from lightning_cam.models import ShapesClassifier

    model = ShapesClassifier(class_names=["circle", "square", "triangle", "star"])
    ckpt = tmp_path / "shapes.ckpt"
    torch.save({"pytorch-lightning_version": "2.6.0", "state_dict": model.state_dict(),
                "hyper_parameters": dict(model.hparams)}, ckpt)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["--image-path", str(images["dog"]), "--weight-path", str(ckpt),
         "--output-dir", str(out_dir)],
        capsys,
    )
    assert code == 0, err
    check_outputs(out_dir, "dog", "simple", SHAPES["dog"])
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["networks"][0]["image_size"] == 64
    assert summary["networks"][0]["layer"] == "backbone"
    assert summary["results"][0]["class_name"] in ["circle", "square", "triangle", "star"]
    # Naming the checkpoint's backbone works; naming another network is a clear error.
    code, _, err = run_cli(["--image-path", str(images["dog"]), "--weight-path", str(ckpt),
                            "--network", "simple", "--output-dir", str(out_dir)], capsys)
    assert code == 0, err
    err = bad(["--image-path", str(images["dog"]), "--weight-path", str(ckpt),
               "--network", "resnet18"], capsys, tmp_path)
    assert "backbone 'simple', but network 'resnet18' was requested" in err


def test_a_failed_image_does_not_stop_the_others(images, tmp_path, capsys) -> None:
    weights = save_weights(tmp_path, "shufflenet_v2")
    broken = images["cat"].parent / "broken.png"
    broken.write_text("not an image")
    out_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["--image-path", str(images["cat"]), str(broken), str(images["dog"]),
         "--network", "shufflenet_v2", "--weight-path", weights, "--image-size", "64",
         "--output-dir", str(out_dir), "--batch-size", "3"],
        capsys,
    )
    assert code == 1
    assert f"failed on {broken}: " in err and "not a readable image" in err
    assert f"1 image(s) failed: {broken}" in err
    assert "Traceback" not in err
    for stem, shape in SHAPES.items():
        check_outputs(out_dir, stem, "shufflenet_v2", shape)
    assert not list(out_dir.glob("broken-*"))
    summary = json.loads((out_dir / "summary.json").read_text())
    assert len(summary["results"]) == 2
    assert summary["failures"][0]["image"] == str(broken)


def test_progress_bar_and_report(images, tmp_path, capsys) -> None:
    weights = save_weights(tmp_path, "mobilenet_v2")
    code = explain_cli.main(
        ["--image-path", str(images["cat"]), "--network", "mobilenet_v2",
         "--weight-path", weights, "--image-size", "64", "--output-dir", str(tmp_path / "o")]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert "mobilenet_v2" in err and "1/1" in err  # tqdm (or the plain counter) on stderr
    assert "1 explanation(s)" in out


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def resnet18_weights(tmp_path) -> str:
    return save_weights(tmp_path, "resnet18")


def bad(args: list[str], capsys, tmp_path, code: int = 2) -> str:
    out_dir = tmp_path / "bad_out"
    size = [] if "--image-size" in args else ["--image-size", "64"]
    got, _, err = run_cli([*args, "--output-dir", str(out_dir), *size], capsys)
    assert got == code, err
    assert err.startswith("lightning-cam explain: ")
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1  # one line
        assert not out_dir.exists() or not list(out_dir.iterdir())  # nothing written
    return err


def test_unknown_network(images, capsys, tmp_path) -> None:
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet5"], capsys, tmp_path)
    assert "Unknown network 'resnet5'. Did you mean: resnet50" in err
    assert "vgg16, vgg19, resnet50, resnet101, densenet121, inception_v3" in err


def test_missing_weight_file(images, capsys, tmp_path) -> None:
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18",
               "--weight-path", str(tmp_path / "nope.pth")], capsys, tmp_path)
    assert f"Weight file not found: '{tmp_path / 'nope.pth'}'" in err


def test_unreadable_weight_file(images, capsys, tmp_path) -> None:
    text = tmp_path / "weights.pth"
    text.write_text("hello")
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18",
               "--weight-path", str(text)], capsys, tmp_path)
    assert "Cannot read weight file" in err and "not a PyTorch file" in err


def test_state_dict_that_does_not_fit(images, resnet18_weights, capsys, tmp_path) -> None:
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet34",
               "--weight-path", resnet18_weights], capsys, tmp_path)
    assert "do not fit resnet34" in err
    assert "missing key(s): layer1.2.conv1.weight" in err


def test_non_image_file(capsys, resnet18_weights, tmp_path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("hello")
    err = bad(["--image-path", str(notes), "--network", "resnet18",
               "--weight-path", resnet18_weights], capsys, tmp_path, code=1)
    assert f"{notes!s}" in err and "not a readable image" in err


def test_missing_image(capsys, resnet18_weights, tmp_path) -> None:
    err = bad(["--image-path", str(tmp_path / "nope.jpg"), "--network", "resnet18",
               "--weight-path", resnet18_weights], capsys, tmp_path)
    assert "Image not found" in err and "nope.jpg" in err
    err = bad(["--image-path", str(tmp_path / "*.png"), "--network", "resnet18",
               "--weight-path", resnet18_weights], capsys, tmp_path)
    assert "No image files match" in err


def test_class_id_out_of_range(images, resnet18_weights, capsys, tmp_path) -> None:
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18",
               "--weight-path", resnet18_weights, "--class-id", "1000"], capsys, tmp_path)
    assert "class id 1000 is out of range" in err and "0..999" in err
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18",
               "--weight-path", resnet18_weights, "--class-id", "-1"], capsys, tmp_path)
    assert "--class-id must be >= 0" in err


def test_unknown_layer(images, resnet18_weights, capsys, tmp_path) -> None:
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18",
               "--weight-path", resnet18_weights, "--layer-name", "layer9"], capsys, tmp_path)
    assert "Unknown layer 'layer9'" in err and "layer4" in err


def test_layer_without_spatial_output(images, resnet18_weights, capsys, tmp_path) -> None:
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18",
               "--weight-path", resnet18_weights, "--layer-name", "fc"], capsys, tmp_path)
    assert "resnet18: Layer 'fc' outputs shape" in err


def test_input_size_the_network_cannot_take(images, tmp_path, capsys) -> None:
    """Every network is checked before anything is written: mobilenet_v2 would manage 40 px,
    but inception_v3 cannot, so nothing at all is written."""
    weights = [save_weights(tmp_path, n) for n in ("mobilenet_v2", "inception_v3")]
    err = bad(["--image-path", str(images["cat"]), "--network", "mobilenet_v2,inception_v3",
               "--weight-path", *weights, "--image-size", "40"], capsys, tmp_path)
    assert "error: inception_v3: " in err and "input size 40x40" in err


def test_offline_without_cached_default_weights(images, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    err = bad(["--image-path", str(images["cat"])], capsys, tmp_path)  # default: resnet50
    assert "pretrained weights for resnet50" in err
    assert "not in the local torch cache" in err and "could not be downloaded" in err
    assert "--weight-path FILE" in err


def test_weight_count_and_class_names_mismatch(images, resnet18_weights, capsys,
                                               tmp_path) -> None:
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18,vgg16",
               "--weight-path", resnet18_weights], capsys, tmp_path)
    assert "1 weight file(s) for 2 network(s)" in err
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18",
               "--weight-path", resnet18_weights, "--class-names", str(names)], capsys, tmp_path)
    assert "2 class names given but resnet18 has 1000 classes" in err
    err = bad(["--image-path", str(images["cat"]), "--network", "resnet18",
               "--weight-path", resnet18_weights, "--class-names", str(tmp_path / "no.txt")],
              capsys, tmp_path)
    assert "class names file not found" in err


def test_console_entry_point_reports_without_traceback(tmp_path) -> None:
    """The real ``lightning-cam explain`` path (cli.main dispatch) in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_cam", "explain", "--network", "nonet",
         "--output-dir", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("lightning-cam explain: error: Unknown network 'nonet'")
    assert "Traceback" not in proc.stderr


def test_method_option_reads_the_registry(images, tmp_path, capsys, monkeypatch) -> None:
    """A method registered in METHODS (here for the test only) is a --method choice with no
    edit of the tool: its own file names, summary entries, sheet and markdown columns."""
    method = register_test_method(monkeypatch)
    nets = ["mobilenet_v2", "resnet18"]
    weights = [save_weights(tmp_path, n) for n in nets]
    out_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["--image-path", str(images["cat"]), "--network", ",".join(nets), "--weight-path",
         *weights, "--image-size", "64", "--output-dir", str(out_dir),
         "--method", method, "grad-cam", "gradcam"],  # an alias and a duplicate
        capsys,
    )
    assert code == 0, err
    keys = [f"{method}-heatmap", f"{method}-cam", "heatmap", "cam", "gb", "cam_gb"]
    for net in nets:
        assert sorted(p.name for p in out_dir.glob(f"cat-{net}-*")) == sorted(
            f"cat-{net}-{k}.jpg" for k in keys)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["methods"] == [method, "gradcam"]
    record = summary["results"][1]
    assert record["network"] == "resnet18"
    assert record["methods"] == {
        method: {"heatmap": f"cat-resnet18-{method}-heatmap.jpg",
                 "cam": f"cat-resnet18-{method}-cam.jpg"},
        "gradcam": {"heatmap": "cat-resnet18-heatmap.jpg", "cam": "cat-resnet18-cam.jpg"},
    }
    markdown = (out_dir / "comparison.md").read_text()
    assert "| network | " + " | ".join(keys) + " |" in markdown
    sheet = cv2.imread(str(out_dir / "cat-comparison.jpg"))
    h, w = SHAPES["cat"]
    assert 6 * w < sheet.shape[1] < 7 * w + 140 and 2 * h < sheet.shape[0] < 3 * h + 60
    assert no_temp_files(out_dir)


def test_unknown_method_is_refused_with_the_registry(images, capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as info:
        explain_cli.main(["--image-path", str(images["cat"]), "--method", "gradcan",
                          "--output-dir", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--method" in err and "'gradcan'" in err and "gradcam++" in err
    assert not (tmp_path / "out").exists()


def test_an_image_whose_picture_cannot_be_written_leaves_none(images, tmp_path, capsys,
                                                              monkeypatch) -> None:
    """All of an image's pictures or none: a failed write removes the ones written before."""
    import os

    weights = save_weights(tmp_path, "mobilenet_v2")
    replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("dog-mobilenet_v2-cam++.jpg"):
            raise OSError(28, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["--image-path", str(images["cat"]), str(images["dog"]), "--network", "mobilenet_v2",
         "--weight-path", weights, "--image-size", "64", "--output-dir", str(out_dir)],
        capsys,
    )
    assert code == 1
    assert "dog" in err and "No space left on device" in err and "cam++.jpg" in err
    check_outputs(out_dir, "cat", "mobilenet_v2", SHAPES["cat"])
    assert not list(out_dir.glob("dog-*"))
    assert no_temp_files(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [r["name"] for r in summary["results"]] == ["cat"]
    assert summary["failures"][0]["image"] == str(images["dog"])


# ----------------------------------------------------------------------------- Python API


def test_registry_method_maps_match_an_independent_computation(monkeypatch) -> None:
    """``maps[method]`` of a registered method: ReLU(sum_k A^k) of ``layer4``, normalised at the
    layer's resolution and brought to the image's size, computed here with a plain hook."""
    method = register_test_method(monkeypatch)
    net = torchvision.models.resnet18(weights=None).eval()
    img = np.random.default_rng(2).integers(0, 255, (45, 70, 3), dtype=np.uint8)
    [r] = explain_classifier(net, [img], image_size=64, methods=[method, "gradcam"])
    assert r.methods == [method, "gradcam"]
    seen = {}
    handle = net.layer4.register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    with torch.no_grad():
        net(ClassifierExplainer(net, image_size=64).preprocess(img)[None])
    handle.remove()
    cam = torch.relu(seen["a"].sum(1))
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    expected = torch.nn.functional.interpolate(cam[None], size=(45, 70), mode="bilinear",
                                               align_corners=False)[0, 0]
    np.testing.assert_allclose(r.maps[method], expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(r.map("grad-cam"), r.gradcam)
    assert not hasattr(r, "gradcam_pp")
    with pytest.raises(ValueError, match=r"'gradcam\+\+' was not computed.*methods="):
        r.map("gradcam++")
    with pytest.raises(ValueError, match="Unknown method"):
        explain_classifier(net, [img], image_size=64, methods=["nope"])




def test_explain_classifier_maps_at_original_size(tmp_path) -> None:
    net = torchvision.models.resnet18(weights=None)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (45, 70, 3), dtype=np.uint8)
    results = explain_classifier(
        net, {"noise": img, "gray": img[..., 0]}, image_size=64, output_dir=tmp_path,
        network="r18", class_names=[f"c{i}" for i in range(1000)], batch_size=2,
    )
    assert all(isinstance(r, ClassifierExplanation) for r in results)
    r = results[0]
    assert r.image == "noise" and r.source is None and r.layer == "layer4"
    assert r.gradcam.shape == r.gradcam_pp.shape == (45, 70)
    assert r.guided_backprop.shape == r.guided_gradcam.shape == (45, 70, 3)
    assert r.gradcam.dtype == np.float32 and 0 <= r.gradcam.min() and r.gradcam.max() <= 1
    assert r.class_name == f"c{r.class_id}"
    np.testing.assert_allclose(r.guided_gradcam, r.guided_backprop * r.gradcam[..., None],
                               rtol=1e-6)
    with torch.no_grad():
        x = ClassifierExplainer(net, image_size=64).preprocess(img)[None]
        logits = net.eval()(x)[0]
    assert r.class_id == int(logits.argmax())
    assert r.score == pytest.approx(float(logits.max()), rel=1e-4, abs=1e-4)
    assert r.files["cam"] == "noise-r18-cam.jpg" and (tmp_path / r.files["cam"]).is_file()
    pictures = r.pictures()
    assert list(pictures) == list(OUTPUT_KEYS)
    assert all(p.shape == (45, 70, 3) and p.dtype == np.uint8 for p in pictures.values())
    assert results[1].original.shape == (45, 70, 3)  # grey input -> RGB


def test_maps_align_with_the_original_image() -> None:
    """A model whose Grad-CAM is its input's red channel: the map must land on the red disc of
    a non-square image, in the image's own coordinates (resize there and back)."""
    conv = torch.nn.Conv2d(3, 1, 1, bias=False)
    head = torch.nn.Linear(1, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        head.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        head.bias.zero_()
    # The ReLU changes nothing here (the red channel is >= 0); without any gate the tool's
    # guided backprop would be refused (it would be the plain gradient).
    model = torch.nn.Sequential(
        conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head
    )
    image = np.zeros((90, 160, 3), np.uint8)
    cv2.circle(image, (120, 30), 15, (255, 0, 0), -1)  # red disc, top right
    disc = image[..., 0] > 0
    [r] = explain_classifier(model, [image], layer="0", class_id=0, image_size=64,
                             mean=(0, 0, 0), std=(1, 1, 1))
    hot = r.gradcam > 0.5
    iou = (hot & disc).sum() / (hot | disc).sum()
    assert iou > 0.8, iou
    y, x = np.unravel_index(np.argmax(r.gradcam), r.gradcam.shape)
    assert disc[y, x]


def test_model_object_is_borrowed(tmp_path) -> None:
    net = torchvision.models.mobilenet_v2(weights=None).train()
    results = explain_classifier(net, [np.zeros((30, 40, 3), np.uint8)], image_size=64,
                                 class_id=3)
    assert results[0].class_id == 3 and results[0].image == "image0"
    assert net.training and all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="class id 5000 is out of range"):
        explain_classifier(net, [np.zeros((30, 40, 3), np.uint8)], image_size=64, class_id=5000)
    with pytest.raises(ValueError, match="weight_path is for a network given by name"):
        ClassifierExplainer(net, weight_path="x.pth")


def test_report_mode_yields_failures_in_order(images, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG nonsense")
    explainer = ClassifierExplainer(torchvision.models.resnet18(weights=None), image_size=64,
                                    network="r18")
    results = explainer.explain([images["cat"], broken, images["dog"]], errors="report")
    assert [type(r) for r in results] == [ClassifierExplanation, ImageFailure,
                                          ClassifierExplanation]
    assert results[1].source == str(broken) and "not a readable image" in results[1].error
    with pytest.raises(ValueError, match="not a readable image"):
        explainer.explain([broken])


def test_collect_images_folders_globs_and_unique_names(tmp_path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "x.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    sources = collect_images([tmp_path / "a", str(tmp_path / "b" / "*")])
    assert [s.name for s in sources] == ["x", "x_2"]
    assert [s.path for s in sources] == [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]
    with pytest.raises(FileNotFoundError, match="No image files"):
        collect_images(tmp_path)
