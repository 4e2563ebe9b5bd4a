"""DetectionExplainer on random-weight torchvision detectors and on a constructed detector."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from lightning_cam.detection import (
    ROI_LAYER,
    DetectionExplainer,
    default_detection_layer,
    detection_pointing_game,
    explain_detection_batch,
    find_detector,
    render_detection,
)
from lightning_cam.detection.adapter import DetectionResult
from lightning_cam.methods import combine, gradcam_weights, normalize_maps

IMAGE = (3, 100, 150)  # not square, not a multiple of 32: resize and padding both matter


def _seeded(fn, **kwargs):
    torch.manual_seed(0)
    return fn(weights=None, weights_backbone=None, **kwargs).eval()


@pytest.fixture(scope="module")
def frcnn() -> nn.Module:
    return _seeded(
        torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn,
        num_classes=4, min_size=128, max_size=160, box_score_thresh=0.0,
        box_detections_per_img=6,
    )


@pytest.fixture(scope="module")
def retina() -> nn.Module:
    return _seeded(
        torchvision.models.detection.retinanet_resnet50_fpn,
        num_classes=3, min_size=128, max_size=160, score_thresh=0.0, detections_per_img=6,
    )


@pytest.fixture(scope="module")
def fcos() -> nn.Module:
    return _seeded(
        torchvision.models.detection.fcos_resnet50_fpn,
        num_classes=3, min_size=128, max_size=160, score_thresh=0.0, detections_per_img=6,
    )


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(IMAGE, generator=g)


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("frcnn", None),
        ("retina", "head.classification_head.conv.0"),
        ("fcos", ["backbone.body.layer3", "head.classification_head.conv.1"]),
    ],
)
def test_maps_one_per_detection_aligned_with_original_image(request, name, layer, image):
    detector = request.getfixturevalue(name)
    explainer = DetectionExplainer(detector, layer=layer, score_threshold=0.0, top_k=4)
    result = explainer(image)
    k = len(result)
    assert 1 <= k <= 4
    assert result.boxes.shape == (k, 4) and result.labels.shape == (k,)
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    assert not result.scores.requires_grad
    layers = [layer] if isinstance(layer, str) else layer or [default_detection_layer(detector)]
    assert result.layers == layers
    for method in ("gradcam", "gradcam++"):
        for name_ in layers:
            maps = result.map(method, name_)
            assert maps.shape == (k, IMAGE[1], IMAGE[2])
            assert torch.isfinite(maps).all()
            assert maps.min() >= 0 and maps.max() <= 1
    # boxes are in the original image's coordinates
    assert result.boxes[:, 2].max() <= IMAGE[2] + 1e-3 and result.boxes[:, 3].max() <= IMAGE[1]


def test_default_layers(frcnn, retina):
    assert default_detection_layer(frcnn) == "backbone.body.16"
    assert default_detection_layer(retina) == "backbone.body.layer4"


def test_detections_in_different_places_give_different_maps(frcnn, image):
    result = DetectionExplainer(frcnn, score_threshold=0.0, top_k=6)(image)
    maps = result.map("gradcam")
    far = [(i, j) for i in range(len(result)) for j in range(i)
           if torchvision.ops.box_iou(result.boxes[i : i + 1], result.boxes[j : j + 1]) < 0.3]
    assert far, "the seeded case has detections in different places"
    for i, j in far:
        assert not torch.allclose(maps[i], maps[j], atol=1e-3)


# ------------------------------------------------------------------ a detector we understand


class ColourDetector(nn.Module):
    """A torchvision-style detector with known answers: detection ``c`` is the box of the
    object of colour channel ``c``; its score is the mean of feature channel ``c`` in the box.

    Uses torchvision's own ``GeneralizedRCNNTransform`` (resize + pad to a multiple of 32), and a
    stride-8 feature map ``backbone.body.layer1`` whose channel ``c`` is colour ``c``.
    """

    def __init__(self, boxes: torch.Tensor) -> None:
        super().__init__()
        self.transform = GeneralizedRCNNTransform(80, 200, [0.0] * 3, [1.0] * 3)
        self.backbone = nn.Module()
        self.backbone.body = nn.Sequential(OrderedDict(layer1=nn.AvgPool2d(8)))
        self.boxes = boxes

    def forward(self, images):
        sizes = [img.shape[-2:] for img in images]
        image_list, _ = self.transform(images)
        feats = self.backbone.body(image_list.tensors)
        out = []
        for i, (h, w) in enumerate(image_list.image_sizes):
            sy, sx = h / sizes[i][0] / 8, w / sizes[i][1] / 8
            scores = []
            for c, (x1, y1, x2, y2) in enumerate(self.boxes.tolist()):
                rows = slice(int(y1 * sy), int(y2 * sy) + 1)
                region = feats[i, c, rows, int(x1 * sx) : int(x2 * sx) + 1]
                scores.append(region.mean())
            out.append({"boxes": self.boxes.clone(), "scores": torch.stack(scores),
                        "labels": torch.arange(1, len(scores) + 1)})
        return out


def test_constructed_detector_maps_point_at_each_object_after_resize_and_padding():
    # 100 x 130 -> resized to 80 x 104, padded to 96 x 128: 20 % of the canvas is padding
    boxes = torch.tensor([[100.0, 70.0, 124.0, 94.0], [8.0, 10.0, 40.0, 42.0]])
    image = torch.zeros(3, 100, 130)
    for c, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        image[c, y1:y2, x1:x2] = 1.0 - 0.1 * c  # different scores, so a fixed order
    result = DetectionExplainer(ColourDetector(boxes), score_threshold=0.0, top_k=5)(image)
    assert len(result) == 2
    assert torch.equal(result.labels, torch.tensor([1, 2]))
    for method in ("gradcam", "gradcam++"):
        maps = result.map(method)
        assert maps.shape == (2, 100, 130)
        assert not torch.allclose(maps[0], maps[1])
        # the mass of each map lies on its own object, and the peak inside its box
        hits = detection_pointing_game(result, boxes, torch.tensor([1, 2]), method=method)
        assert hits.tolist() == [1.0, 1.0]
        ys, xs = torch.meshgrid(torch.arange(100.0), torch.arange(130.0), indexing="ij")
        for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            m = maps[k] / maps[k].sum()
            cx, cy = float((m * xs).sum()) + 0.5, float((m * ys).sum()) + 0.5
            assert abs(cx - (x1 + x2) / 2) < 4 and abs(cy - (y1 + y2) / 2) < 4


# ------------------------------------------------------------------ shared head across levels


def test_retinanet_head_levels_without_the_detection_contribute_nothing(retina, image):
    layer = "head.classification_head.conv.0"
    k = 4
    result = DetectionExplainer(retina, layer=layer, methods=("gradcam",), score_threshold=0.0,
                                top_k=k)(image)
    assert len(result) == k

    # Independent computation: capture every call (one per FPN level), gradient of each score.
    calls: list[torch.Tensor] = []
    handle = retina.get_submodule(layer).register_forward_hook(lambda m, i, o: calls.append(o))
    try:
        out = retina([image])[0]
    finally:
        handle.remove()
    assert len(calls) == 5  # P3..P7
    scores = out["scores"][:k]
    assert torch.allclose(scores.detach(), result.scores)
    transform = retina.transform
    with torch.no_grad():
        images, _ = transform([image])
    (rh, rw), (ph, pw) = images.image_sizes[0], images.tensors.shape[-2:]
    levels_used = set()
    for j in range(k):
        grads = torch.autograd.grad(scores[j], calls, retain_graph=True)
        nonzero = [i for i, g in enumerate(grads) if g.abs().sum() > 0]
        assert len(nonzero) == 1, "a detection comes from exactly one level"
        level = nonzero[0]
        levels_used.add(level)
        # The explainer's map equals the map of the origin level alone.
        cam = combine(calls[level].detach(), gradcam_weights(None, grads[level]))
        cam = nn.functional.interpolate(cam[None], size=calls[0].shape[-2:], mode="bilinear",
                                        align_corners=False)
        cam = normalize_maps(cam[0])
        canvas = nn.functional.interpolate(cam[None], size=(ph, pw), mode="bilinear",
                                           align_corners=False)[..., :rh, :rw]
        expected = normalize_maps(nn.functional.interpolate(
            canvas, size=IMAGE[1:], mode="bilinear", align_corners=False)[0])
        assert torch.allclose(result.map("gradcam")[j], expected[0], atol=1e-4)
    assert len(levels_used) >= 2, "the seeded case has detections from two levels"
    retina.zero_grad(set_to_none=True)


# ------------------------------------------------------------------ RoI-level maps


def test_roi_maps_lie_in_the_proposal_of_each_detection(frcnn, image):
    result = DetectionExplainer(frcnn, score_threshold=0.0, top_k=3, roi_cams=True)(image)
    k = len(result)
    assert k >= 1
    assert result.layers == ["backbone.body.16", ROI_LAYER]
    assert result.proposals is not None and result.proposals.shape == (k, 4)

    # Independent recovery of each detection's proposal: the pooled RoI row with gradient.
    captured: dict[str, object] = {}
    h1 = frcnn.roi_heads.box_roi_pool.register_forward_hook(
        lambda m, i, o: captured.__setitem__("pooled", o))
    h2 = frcnn.roi_heads.register_forward_pre_hook(
        lambda m, args: captured.__setitem__("proposals", args[1][0].detach()))
    try:
        out = frcnn([image])[0]
    finally:
        h1.remove()
        h2.remove()
    with torch.no_grad():
        images, _ = frcnn.transform([image])
    rh, rw = images.image_sizes[0]
    scale = torch.tensor([IMAGE[2] / rw, IMAGE[1] / rh] * 2)
    for j in range(k):
        (g,) = torch.autograd.grad(out["scores"][j], captured["pooled"], retain_graph=True)
        rows = torch.nonzero(g.flatten(1).abs().sum(1)).flatten()
        assert rows.numel() == 1
        expected = captured["proposals"][rows[0]] * scale
        assert torch.allclose(result.proposals[j], expected, atol=1e-3)
    for method in ("gradcam", "gradcam++"):
        maps = result.map(method, ROI_LAYER)
        assert maps.shape == (k, *IMAGE[1:]) and torch.isfinite(maps).all()
        for j in range(k):
            x1, y1, x2, y2 = result.proposals[j].round().int().tolist()
            outside = maps[j].clone()
            outside[max(0, y1) : y2, max(0, x1) : x2] = 0
            assert outside.abs().max() == 0
    frcnn.zero_grad(set_to_none=True)


def test_roi_layer_name_means_roi_cams(frcnn):
    explainer = DetectionExplainer(frcnn, layer=["backbone.body.13", ROI_LAYER])
    assert explainer.roi_cams and explainer.result_layers == ["backbone.body.13", ROI_LAYER]


# ------------------------------------------------------------------ borrowing, errors


def test_detector_is_borrowed(frcnn, image):
    frcnn.train()
    try:
        DetectionExplainer(frcnn, score_threshold=0.0, top_k=2, roi_cams=True)(image)
        assert frcnn.training and all(m.training for m in frcnn.modules())
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in frcnn.modules())
        assert all(p.grad is None for p in frcnn.parameters())

        def boom(*args, **kwargs):
            raise RuntimeError("injected")

        frcnn.roi_heads.box_predictor.forward = boom
        with pytest.raises(RuntimeError, match="injected"):
            DetectionExplainer(frcnn, score_threshold=0.0, top_k=2)(image)
        assert frcnn.training and all(m.training for m in frcnn.modules())
        assert all(not m._forward_hooks for m in frcnn.modules())
    finally:
        del frcnn.roi_heads.box_predictor.forward
        frcnn.eval()


def test_no_detection_above_threshold_gives_empty_result(frcnn, image):
    result = DetectionExplainer(frcnn, score_threshold=0.99, roi_cams=True)(image)
    assert len(result) == 0
    assert result.map("gradcam").shape == (0, *IMAGE[1:])
    assert result.map("gradcam++", ROI_LAYER).shape == (0, *IMAGE[1:])
    sheet = render_detection((image.permute(1, 2, 0) * 255).byte().numpy(), result)
    assert sheet.dtype.name == "uint8"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": "backbone.body.layer9"}, ValueError, "Closest layer names"),
        ({"layer": "roi_heads.box_head.fc6"}, ValueError, "roi_cams=True"),
        ({"methods": ("gradcam", "fullgrad")}, ValueError, "Unknown method"),
        ({"top_k": 0}, ValueError, "top_k"),
        ({"roi_cams": True}, ValueError, "two-stage"),
    ],
)
def test_bad_arguments(retina, frcnn, kwargs, error, match):
    detector = frcnn if "roi_heads" in str(kwargs.get("layer")) else retina
    if "layer9" in str(kwargs.get("layer")):
        detector = retina
    with pytest.raises(error, match=match):
        DetectionExplainer(detector, **kwargs)


def test_bad_images_and_models(frcnn):
    explainer = DetectionExplainer(frcnn)
    with pytest.raises(TypeError, match="floating-point"):
        explainer(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels last"):
        explainer(torch.rand(32, 32, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        explainer([[0.0]])
    with pytest.raises(TypeError, match="torchvision detection model"):
        DetectionExplainer(nn.Conv2d(3, 3, 1))


def test_batch_helper_finds_the_wrapped_detector_and_renders(frcnn, image):
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = frcnn
            self.class_names = ["__background__", "a", "b", "c"]

    wrapper = Wrapper()
    assert find_detector(wrapper) is frcnn and find_detector(nn.Linear(1, 1)) is None
    # as in trainer.validate(): called under inference mode, with inference tensors
    with torch.inference_mode():
        images = [image, image[:, :64, :96].clone()]
        results = explain_detection_batch(wrapper, images, methods=("gradcam++",), top_k=2,
                                          score_threshold=0.0, roi_cams=True)
    assert results[1].map("gradcam++", ROI_LAYER).shape == (2, 64, 96)
    assert [r.image_size for r in results] == [(100, 150), (64, 96)]
    assert results[0].class_names == wrapper.class_names
    assert all(n in wrapper.class_names for n in results[0].label_names())
    sheet = render_detection((image.permute(1, 2, 0) * 255).byte().numpy(), results[0])
    assert sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.shape[0] > 2 * 170


def test_pointing_game_matches_by_iou():
    maps = torch.zeros(2, 20, 20)
    maps[0, 5, 5] = 1.0  # inside gt 0
    maps[1, 15, 2] = 1.0  # outside gt 1
    result = DetectionResult(
        boxes=torch.tensor([[2.0, 2, 9, 9], [10.0, 10, 19, 19]]),
        labels=torch.tensor([1, 2]), scores=torch.tensor([0.9, 0.8]),
        maps={"gradcam": {"l": maps}}, image_size=(20, 20), layers=["l"], methods=["gradcam"],
    )
    gt = torch.tensor([[2.0, 2, 10, 10], [10.0, 10, 20, 20], [0.0, 0, 3, 3]])
    assert detection_pointing_game(result, gt).tolist() == [1.0, 0.0]
    # class-aware matching: the second detection's label matches no ground truth
    assert detection_pointing_game(result, gt, torch.tensor([1, 1, 1])).tolist() == [1.0]
