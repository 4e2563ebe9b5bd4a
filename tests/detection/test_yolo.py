"""YOLO (ultralytics) per detection: maps equal a brute-force Grad-CAM of each detection's own
score, the detections equal ultralytics' own NMS, boxes in the image's coordinates, hygiene,
refusals. Random-init models from ultralytics' configs at 64-128 px (no downloads)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from lightning_cam.methods import normalize_maps, upsample
from tests.optional import require

os.environ.setdefault("YOLO_OFFLINE", "1")
require("ultralytics", "pip install 'lightning-cam[integrations]' (ultralytics>=8.1)")

from lightning_cam.detection.yolo import (  # noqa: E402
    YOLO_NECK,
    YOLOExplainer,
    check_yolo_model,
    find_yolo_model,
    load_yolo,
)
from lightning_cam.detection.yolo_ops import letterbox  # noqa: E402
from lightning_cam.engine.layers import get_layer  # noqa: E402

IMGSZ = 96


def _model(cfg: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = load_yolo(cfg, num_classes=3)
    # random heads give every anchor the same tiny score: spread the class logits a little
    with torch.no_grad():
        for seq in model.model[-1].cv3:
            seq[-1].bias.normal_(0.0, 1.0)
    return model


@pytest.fixture(scope="module", params=["yolov8n.yaml", "yolo11n.yaml"])
def model(request):
    return _model(request.param)


@pytest.fixture(scope="module")
def v8():
    return _model("yolov8n.yaml")


def _image(h: int = 60, w: int = 100, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def _ultralytics_detections(model, x, conf, iou, max_det):
    """Anchor, class, score and box of each detection, by ultralytics' own NMS."""
    from ultralytics.utils.nms import non_max_suppression

    with torch.no_grad():
        y = model(x)[0]
    out, idx = non_max_suppression(y, conf, iou, max_det=max_det, return_idxs=True)
    return idx[0].flatten().long(), out[0][:, 5].long(), out[0][:, 4], out[0][:, :4]


def _to_image(canvas, box):
    top, left = box.pad
    crop = canvas[:, top : top + box.resized[0], left : left + box.resized[1]]
    return normalize_maps(upsample(crop, box.size).clamp_min(0))


def _gradcam(a, g):
    return F.relu((g.mean((2, 3), keepdim=True) * a).sum(1))


def _brute_force_layer(model, x, anchor, cls, layer, box):
    """Grad-CAM of a named layer for the single score y[4 + cls, anchor] of the model's own
    output (the whole graph), its own backward, by hand."""
    acts: dict[str, torch.Tensor] = {}
    hook = get_layer(model, layer).register_forward_hook(
        lambda _m, _i, o: acts.__setitem__("a", o))
    try:
        with torch.enable_grad():
            score = model(x)[0][0, 4 + cls, anchor]
            (g,) = torch.autograd.grad(score, [acts["a"]])
    finally:
        hook.remove()
    return _to_image(upsample(_gradcam(acts["a"].detach(), g), box.canvas), box), score.detach()


def _brute_force_neck(model, x, anchor, cls, box):
    """Grad-CAM of the head's three inputs for the single score sigmoid(cv3[l](x_l)[cls, i, j])
    (the class branch on the whole map), its own backward; the levels' maps summed at the
    finest level's resolution, as the engine sums the calls of one layer."""
    with torch.no_grad():
        feats = [f.detach().requires_grad_(True) for f in model(x)[1]["feats"]]
    sizes = [f.shape[-2] * f.shape[-1] for f in feats]
    level = next(lv for lv in range(3) if anchor < sum(sizes[: lv + 1]))
    pos = anchor - sum(sizes[:level])
    i, j = divmod(pos, feats[level].shape[-1])
    with torch.enable_grad():
        score = torch.sigmoid(model.model[-1].cv3[level](feats[level])[0, cls, i, j])
        grads = torch.autograd.grad(score, feats, allow_unused=True)
    size = tuple(feats[0].shape[-2:])
    total = 0
    for f, g in zip(feats, grads, strict=True):
        cam = _gradcam(f.detach(), g) if g is not None else f.new_zeros((1, *f.shape[-2:]))
        total = total + upsample(cam, size)
    return _to_image(upsample(total, box.canvas), box), score.detach(), level


def test_each_map_is_the_brute_force_gradcam_of_its_own_score(model):
    image = _image()
    explainer = YOLOExplainer(model, layer=[YOLO_NECK, "model.18"], methods="gradcam",
                              score_threshold=0.05, top_k=4, imgsz=IMGSZ)
    result = explainer(image)
    assert len(result) >= 2
    x, box = letterbox(image, IMGSZ, 32)
    anchors, labels, scores, _ = _ultralytics_detections(model, x[None], 0.05, 0.7, 4)
    assert torch.equal(result.labels, labels)
    model.eval()
    levels = set()
    for k in range(len(result)):
        a, c = int(anchors[k]), int(labels[k])
        expected, score, level = _brute_force_neck(model, x[None], a, c, box)
        levels.add(level)
        torch.testing.assert_close(result.map("gradcam", YOLO_NECK)[k], expected[0],
                                   atol=1e-5, rtol=0)
        # the score explained is the one reported, and ultralytics' own
        assert float(score) == pytest.approx(float(result.scores[k]), abs=1e-6)
        assert float(scores[k]) == pytest.approx(float(result.scores[k]), abs=1e-7)
        expected, score = _brute_force_layer(model, x[None], a, c, "model.18", box)
        torch.testing.assert_close(result.map("gradcam", "model.18")[k], expected[0],
                                   atol=1e-5, rtol=0)
        assert float(score) == pytest.approx(float(result.scores[k]), abs=1e-7)


def test_window_scores_equal_the_whole_map_at_every_border():
    from lightning_cam.detection.yolo_head import head_scores, local_radius

    torch.manual_seed(0)
    model = _model("yolo11n.yaml")
    head = model.model[-1]
    feats = [torch.randn(1, c, h, w, requires_grad=True) for c, (h, w) in
             zip((64, 128, 256), ((6, 5), (3, 3), (2, 2)), strict=True)]
    branches = list(head.cv3)
    radii = [local_radius(b) for b in branches]
    assert radii == [2, 2, 2]  # DWConv 3x3, 1x1, DWConv 3x3, 1x1, 1x1
    anchors = torch.arange(30 + 9 + 4)  # every position of every level
    labels = anchors % 3
    model.eval()
    fast = head_scores(branches, radii, feats, anchors, labels)
    slow = head_scores(branches, [None] * 3, feats, anchors, labels)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    g_fast = torch.autograd.grad(fast[[0, 7, 33, 42]].sum(), feats)
    g_slow = torch.autograd.grad(slow[[0, 7, 33, 42]].sum(), feats)
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_detections_and_boxes_are_ultralytics_own_in_image_coordinates(v8):
    from ultralytics.utils.ops import scale_boxes

    image = _image(70, 123, seed=4)  # not square, not a multiple of the stride
    result = YOLOExplainer(v8, methods="gradcam", score_threshold=0.02, top_k=6,
                           imgsz=IMGSZ)(image)
    x, box = letterbox(image, IMGSZ, 32)
    assert box.canvas == (64, 96) and box.pad == (4, 0)  # rectangular letterbox, centered
    _check_same_letterbox_as_ultralytics(box)
    _, labels, scores, boxes = _ultralytics_detections(v8, x[None], 0.02, 0.7, 6)
    expected = scale_boxes(box.canvas, boxes.clone(), box.size)
    assert len(result) == len(labels) > 0
    torch.testing.assert_close(result.boxes, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.scores, scores, atol=1e-7, rtol=0)
    assert result.map().shape == (len(result), 70, 123)
    assert result.label_names()[0] == v8.names[int(labels[0])]


def test_nms_on_the_best_candidates_keeps_what_the_whole_nms_and_ultralytics_keep():
    # a random head with equal biases: many anchors share one score, the hard case for NMS
    # on the best candidates only (never cut between equal scores; ties in anchor order)
    from lightning_cam.detection.yolo_ops import nms_with_anchors

    torch.manual_seed(0)
    model = load_yolo("yolov8n.yaml", num_classes=3).eval()
    x, _ = letterbox(_image(96, 128, seed=2), 128, 32)
    with torch.no_grad():
        y = model(x[None])[0]
    assert torch.unique(y[0, 4:].max(0).values).numel() < y.shape[-1] // 2  # ties
    for max_det in (1, 3, 10, 40):
        whole = nms_with_anchors(y[0], 0.0, 0.7)
        best = nms_with_anchors(y[0], 0.0, 0.7, max_det)
        assert torch.equal(best.anchors[:max_det], whole.anchors[:max_det])
        assert torch.equal(best.boxes[:max_det], whole.boxes[:max_det])
        anchors, labels, scores, _ = _ultralytics_detections(model, x[None], 0.0, 0.7, max_det)
        assert torch.equal(best.anchors[:max_det], anchors)
        assert torch.equal(best.labels[:max_det].long(), labels)
    g = torch.Generator().manual_seed(3)
    pred = torch.cat([torch.rand(2, 500, generator=g) * 50, torch.rand(2, 500, generator=g) * 20,
                      (torch.rand(3, 500, generator=g) * 4).round() / 4])  # 5 scores only
    for max_det in (1, 7, 30):
        whole, best = nms_with_anchors(pred, 0.2, 0.5), nms_with_anchors(pred, 0.2, 0.5, max_det)
        assert torch.equal(best.anchors[:max_det], whole.anchors[:max_det])


def _check_same_letterbox_as_ultralytics(box):
    import numpy as np
    from ultralytics.data.augment import LetterBox

    white = np.full((*box.size, 3), 255, np.uint8)
    out = LetterBox(new_shape=(IMGSZ, IMGSZ), auto=True, stride=32)(image=white)
    assert out.shape[:2] == box.canvas
    rows, cols = np.nonzero(out[..., 0] == 255)
    top, left = box.pad
    assert (rows.min(), cols.min()) == (top, left)
    assert (rows.max() + 1 - top, cols.max() + 1 - left) == box.resized


def test_letterbox_round_trip_maps_to_the_image():
    # a map that is 1 inside the resized image on the canvas and 0 on the padding comes back
    # as a map of ones on the image
    _, box = letterbox(torch.rand(3, 40, 96), 96, 32)
    canvas = torch.zeros(1, *box.canvas)
    top, left = box.pad
    canvas[:, top : top + box.resized[0], left : left + box.resized[1]] = 2.0
    canvas[:, top + 5, left + 7] = 3.0
    out = box.maps_to_original(canvas)
    assert out.shape == (1, 40, 96)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert int(out.argmax()) == 5 * 96 + 7


def test_harmless_on_success_and_on_error(v8, monkeypatch):
    from lightning_cam.detection import yolo

    v8.train()
    for p in v8.parameters():
        p.grad = None
    explainer = YOLOExplainer(v8, methods=("gradcam", "eigencam"), score_threshold=0.0,
                              top_k=3, imgsz=64)
    explainer(_image(50, 64))

    def boom(*_a, **_k):
        raise RuntimeError("injected")

    monkeypatch.setattr(yolo, "nms_with_anchors", boom)
    with pytest.raises(RuntimeError, match="injected"):
        explainer(_image(50, 64))
    assert all(m.training for m in v8.modules())
    assert all(p.grad is None for p in v8.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in v8.modules())
    v8.eval()


def test_no_detection_gives_empty_maps(v8):
    result = YOLOExplainer(v8, methods="gradcam", score_threshold=1.0, imgsz=64)(_image())
    assert len(result) == 0 and result.map().shape == (0, 60, 100)


def test_fused_model_is_supported_and_agrees(tmp_path):
    import copy

    model = _model("yolov8n.yaml")
    fused = copy.deepcopy(model).fuse(verbose=False)
    image = _image()
    kw = dict(methods="gradcam", score_threshold=0.05, top_k=3, imgsz=IMGSZ)
    a, b = YOLOExplainer(model, **kw)(image), YOLOExplainer(fused, **kw)(image)
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.map(), b.map(), atol=1e-3, rtol=0)


def test_checkpoint_round_trip_and_wrappers(v8, tmp_path):
    import copy

    path = tmp_path / "tiny.pt"
    torch.save({"model": copy.deepcopy(v8).half(), "train_args": {"imgsz": 64}}, path)
    loaded = load_yolo(path)
    explainer = YOLOExplainer(loaded, methods="gradcam", score_threshold=0.05, top_k=2)
    assert explainer.imgsz == 64  # the checkpoint's training size
    ref = YOLOExplainer(v8, methods="gradcam", score_threshold=0.05, top_k=2, imgsz=64)
    r1, r2 = explainer(_image()), ref(_image())
    assert torch.equal(r1.labels, r2.labels)
    torch.testing.assert_close(r1.scores, r2.scores, atol=2e-3, rtol=0)  # weights saved fp16
    wrapper = torch.nn.Module()
    wrapper.model = v8
    assert find_yolo_model(wrapper) is v8


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_refusals_say_what_to_pass(v8, tmp_path):
    with pytest.raises(ValueError, match="exported model.*pass the .pt"):
        load_yolo("best.onnx")
    with pytest.raises(ValueError, match="exported"):
        load_yolo("best.torchscript")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_yolo(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="TorchScript"):
        check_yolo_model(torch.jit.script(torch.nn.Conv2d(3, 3, 1)))
    with pytest.raises(TypeError, match="DetectionModel"):
        YOLOExplainer(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="Segment head"):
        load_yolo("yolov8n-seg.yaml", num_classes=2)
    with pytest.raises(ValueError, match="Unknown|not found|no module|model.99"):
        YOLOExplainer(v8, layer="model.99")


def test_end_to_end_heads_refused_one_to_many_explained():
    model = _model("yolo26n.yaml")
    model.end2end = True
    with pytest.raises(ValueError, match="NMS-free.*end2end = False"):
        YOLOExplainer(model, imgsz=64)
    model.end2end = False
    result = YOLOExplainer(model, methods="gradcam", score_threshold=0.05, top_k=2,
                           imgsz=64)(_image())
    assert len(result) == 2 and result.map().shape == (2, 60, 100)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> str:
    from lightning_cam.data.detection import ShapesDetectionDataset
    from lightning_cam.tools import viz

    image, _ = ShapesDetectionDataset(1, image_size=96, seed=3)[0]
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    viz.save_image(path, viz.to_uint8_image(image)[:, :80])  # 96 x 80, not square
    return str(path)


def test_cli_explains_a_checkpoint_as_the_python_api(v8, tmp_path, capsys, image_file):
    import copy
    import json

    from lightning_cam.cli.detect import main
    from lightning_cam.tools.image_io import collect_images

    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": copy.deepcopy(v8), "train_args": {"imgsz": 64}}, ckpt)
    out = tmp_path / "out"
    code = main(["--image-path", image_file, "--model", f"yolo:{ckpt}", "--score-threshold",
                 "0.05", "--top-k", "2", "--method", "gradcam", "--output-dir", str(out),
                 "--quiet"])
    _, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ultralytics" and summary["layers"] == [YOLO_NECK]
    dets = summary["images"][0]["detections"]
    image = collect_images([image_file])[0].load()
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
    ref = YOLOExplainer(v8, methods="gradcam", score_threshold=0.05, top_k=2, imgsz=64)(tensor)
    assert [d["box"] for d in dets] == [d["box"] for d in ref.to_dict()["detections"]]
    assert (out / dets[0]["files"]["gradcam"][YOLO_NECK]).is_file()


def test_cli_yaml_config_and_one_line_refusals(tmp_path, capsys, image_file):
    from lightning_cam.cli.detect import main

    code = main(["--image-path", image_file, "--model", "yolo:yolo11n.yaml", "--max-size", "64",
                 "--score-threshold", "0", "--top-k", "1", "--method", "gradcam",
                 "--output-dir", str(tmp_path / "a"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    for argv, message in (
        (["--model", "yolo:best.onnx"], "exported model"),
        (["--model", "yolo:yolov8n.yaml", "--roi"], "--roi is not for"),
        (["--model", "yolo:"], "needs a file"),
    ):
        code = main(["--image-path", image_file, "--output-dir", str(tmp_path / "b"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_ultralytics_batches_round_trip_to_targets():
    from lightning_cam.detection.yolo import split_yolo_batch, yolo_targets

    targets = [{"boxes": torch.tensor([[4.0, 8.0, 20.0, 30.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[0.0, 0.0, 64.0, 48.0], [10.0, 12.0, 14.0, 16.0]]),
                "labels": torch.tensor([1, 3])}]
    batch = {"img": torch.full((2, 3, 48, 64), 255, dtype=torch.uint8),
             **yolo_targets(targets, (48, 64))}
    images, back = split_yolo_batch(batch)
    assert len(images) == 2 and images[0].dtype == torch.float32 and float(images[0].max()) == 1
    for t, b in zip(targets, back, strict=True):
        torch.testing.assert_close(b["boxes"], t["boxes"])
        assert torch.equal(b["labels"], t["labels"])
    assert split_yolo_batch([torch.rand(3, 8, 8)]) is None


def _shapes_module():
    from lightning_cam.detection.yolo_module import ShapesYOLO

    torch.manual_seed(0)
    module = ShapesYOLO(width=0.125)
    with torch.no_grad():
        for seq in module.model.model[-1].cv3:
            seq[-1].bias.normal_(0.0, 1.0)
    return module


def test_callback_logs_yolo_detection_maps_with_a_real_trainer(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    from lightning_cam import GradCAMCallback
    from lightning_cam.data.detection import ShapesDetectionDataset, collate_detection
    from tests.callbacks.helpers import image_events

    module = _shapes_module()
    data = DataLoader(ShapesDetectionDataset(2, image_size=64, seed=5), batch_size=2,
                      collate_fn=collate_detection)
    logger = TensorBoardLogger(str(tmp_path), name="yolo")
    callback = GradCAMCallback(num_samples=2, detection_top_k=2, detection_score_threshold=0.0)
    trainer = pl.Trainer(accelerator="cpu", logger=logger, callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False)
    module.train()
    trainer.validate(module, dataloaders=data)
    assert "gradcam/model.neck/detections" in image_events(logger.log_dir)
    assert all(p.grad is None for p in module.parameters())
    assert not any(m._forward_hooks for m in module.modules())


def test_callback_refuses_an_end_to_end_yolo_at_setup():
    import pytorch_lightning as pl

    from lightning_cam import GradCAMCallback
    from lightning_cam._compat import MisconfigurationException

    class Wrapper(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = _model("yolo26n.yaml")
            self.model.end2end = True

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(MisconfigurationException, match="NMS-free"):
        GradCAMCallback().setup(trainer, Wrapper(), stage="validate")


def test_an_anchor_cache_made_under_inference_mode_is_rebuilt_and_restored(v8):
    image = _image()
    x, _ = letterbox(image, IMGSZ, 32)
    v8.eval()
    with torch.inference_mode():
        v8(x[None])  # as ultralytics' predictor: the head caches inference-mode anchors
    head = v8.model[-1]
    cached = head.anchors
    result = YOLOExplainer(v8, methods="gradcam", score_threshold=0.05, top_k=2,
                           imgsz=IMGSZ)(image)
    assert len(result) == 2 and head.anchors is cached


def test_importing_lightning_cam_never_imports_ultralytics():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, lightning_cam, lightning_cam.detection, lightning_cam.cli.detect, "
            "lightning_cam.callbacks; print('ultralytics' in sys.modules)")
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": repo})
    assert out.stdout.strip() == "False"
