"""The rescoring fast path of DetectionExplainer (Faster R-CNN, RetinaNet) against the generic
path, which differentiates the detector's own outputs: same detections, same maps."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lightning_cam.detection import ROI_LAYER, DetectionExplainer
from lightning_cam.detection.rescoring import FastPathMismatch

GRAD = ("gradcam", "gradcam++")  # the methods whose maps these tests check


def _seeded(fn, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return fn(weights=None, weights_backbone=None, **kwargs).eval()


@pytest.fixture(scope="module")
def frcnn() -> nn.Module:
    return _seeded(
        torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn,
        num_classes=4, min_size=128, max_size=160, box_score_thresh=0.0,
        box_detections_per_img=8,
    )


@pytest.fixture(scope="module")
def retina() -> nn.Module:
    return _seeded(
        torchvision.models.detection.retinanet_resnet50_fpn,
        num_classes=3, min_size=128, max_size=160, score_thresh=0.0, detections_per_img=8,
    )


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand((3, 100, 150), generator=torch.Generator().manual_seed(1))


def _both(detector: nn.Module, image: torch.Tensor, **kwargs):
    fast = DetectionExplainer(detector, score_threshold=0.0, top_k=6, **kwargs, methods=GRAD)
    generic = DetectionExplainer(detector, score_threshold=0.0, top_k=6, **kwargs, methods=GRAD)
    generic._adapter.fast = None  # the reference: differentiate the detector's outputs
    return fast, fast(image), generic(image)


def _assert_same(a, b) -> None:
    assert len(a) == len(b) >= 2
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.scores, b.scores)
    assert a.maps.keys() == b.maps.keys()
    for m in a.maps:
        assert a.maps[m].keys() == b.maps[m].keys()
        for n in a.maps[m]:
            torch.testing.assert_close(a.maps[m][n], b.maps[m][n], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "kwargs", "kind"),
    [
        ("frcnn", {}, "rcnn"),
        ("frcnn", {"layer": ["backbone.body.12", "backbone.fpn.layer_blocks.1"]}, "rcnn"),
        ("frcnn", {"roi_cams": True}, "rcnn"),
        ("retina", {"layer": "head.classification_head.conv.0"}, "retinanet"),
        ("retina", {"layer": ["backbone.body.layer3", "head.classification_head.cls_logits"]},
         "retinanet"),
    ],
)
def test_fast_path_equals_generic_path(request, name, kwargs, kind, image) -> None:
    detector = request.getfixturevalue(name)
    fast, a, b = _both(detector, image, **kwargs)
    assert fast._adapter.fast == kind  # the fast path ran (no fallback)
    _assert_same(a, b)
    if kwargs.get("roi_cams"):
        assert torch.equal(a.proposals, b.proposals)
        assert ROI_LAYER in a.maps["gradcam"]


def test_fast_path_hygiene(frcnn, image) -> None:
    frcnn.train()
    flags = {n: m.training for n, m in frcnn.named_modules()}
    explainer = DetectionExplainer(frcnn, score_threshold=0.0, top_k=3, methods=GRAD)
    explainer(image)
    assert {n: m.training for n, m in frcnn.named_modules()} == flags
    assert all(p.grad is None for p in frcnn.parameters())
    assert explainer._adapter.record is None and explainer._adapter._live is None
    frcnn.eval()


def test_mismatch_falls_back_to_generic_path(retina, image, monkeypatch) -> None:
    explainer = DetectionExplainer(retina, layer="head.classification_head.conv.0",
                                   score_threshold=0.0, top_k=4, methods=GRAD)
    reference = explainer(image)

    def broken(keep):
        raise FastPathMismatch("test")

    monkeypatch.setattr(explainer._adapter, "rescore", broken)
    result = explainer(image)
    assert explainer._adapter.fast is None
    torch.testing.assert_close(result.map("gradcam"), reference.map("gradcam"), rtol=0,
                               atol=1e-5)


def test_overridden_detector_takes_generic_path(retina) -> None:
    class Custom(type(retina)):  # type: ignore[misc]
        def postprocess_detections(self, *args, **kwargs):
            return super().postprocess_detections(*args, **kwargs)

    custom = Custom.__new__(Custom)
    custom.__dict__.update(retina.__dict__)
    assert DetectionExplainer(custom, methods=GRAD)._adapter.fast is None
    assert DetectionExplainer(retina, methods=GRAD)._adapter.fast == "retinanet"
    # the written-out forward bypasses the head modules: explaining them is generic
    explainer = DetectionExplainer(retina, layer="head.classification_head", methods=GRAD)
    assert explainer._adapter.fast is None
