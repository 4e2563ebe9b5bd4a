"""Detector architectures: the supported torchvision detectors by name, and
:func:`make_detector`, which builds them (and ``fasterrcnn_simple``, a small Faster R-CNN that
learns the synthetic shapes on a CPU in minutes) with random weights.

Example:
    >>> det = make_detector("fasterrcnn_simple", num_classes=3)
    >>> type(det).__name__, type(det.backbone).__name__
    ('FasterRCNN', 'SimpleDetectionBackbone')
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn

__all__ = [
    "CUSTOM_DETECTORS",
    "DETECTORS",
    "DETR_FAMILIES",
    "DetrFamily",
    "SimpleDetectionBackbone",
    "make_detector",
    "resolve_detector",
]

#: Detectors the adapter supports (the issue's list, plus FCOS).
DETECTORS: tuple[str, ...] = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
)

#: Small detectors of :func:`make_detector` (no pretrained
#: weights): ``fasterrcnn_simple`` is Faster R-CNN on a compact CNN, trainable from scratch on a
#: CPU in minutes.
CUSTOM_DETECTORS: tuple[str, ...] = ("fasterrcnn_simple",)

def resolve_detector(name: str) -> str:
    """Check a detector name (case-insensitive, ``-`` = ``_``); return the builder name.

    Raises:
        ValueError: Unknown name; the message lists the supported ones and near matches.
    """
    if not isinstance(name, str):
        raise TypeError(f"detector name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key in DETECTORS or key in CUSTOM_DETECTORS:
        return key
    near = difflib.get_close_matches(key, (*DETECTORS, *CUSTOM_DETECTORS), n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(map(repr, near))}?" if near else ""
    known = ", ".join((*DETECTORS, *CUSTOM_DETECTORS))
    raise ValueError(f"Unknown detector {name!r}.{hint} Supported: {known}.")


def make_detector(
    arch: str = "fasterrcnn_simple",
    num_classes: int = 5,
    min_size: int = 128,
    max_size: int = 128,
    anchor_sizes: Sequence[int] | None = None,
    score_threshold: float = 0.05,
    detections_per_img: int = 20,
    box_head_size: int | None = None,
    detector_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A torchvision detector with random weights (``weights=None, weights_backbone=None``).

    Args:
        arch: ``"fasterrcnn_simple"`` (torchvision's ``FasterRCNN`` on a compact CNN,
            :class:`SimpleDetectionBackbone`: learns the shapes on a CPU in minutes) or a name in
            :data:`DETECTORS`.
        num_classes: Number of labels, background included.
        min_size: The detector's input resize (shorter side).
        max_size: Limit of the longer side.
        anchor_sizes: Anchor sizes in pixels (Faster R-CNN: the RPN's; RetinaNet: one per FPN
            level); ``None`` keeps torchvision's, which are made for 800-pixel COCO images.
        score_threshold: The detector's own score threshold.
        detections_per_img: The most detections per image.
        box_head_size: Faster R-CNN: width of the box head's two hidden layers (torchvision:
            1024), smaller for speed.
        detector_kwargs: More keyword arguments of the torchvision builder (e.g.
            ``box_batch_size_per_image``, ``rpn_post_nms_top_n_train``).
    """
    arch = resolve_detector(arch)
    if arch == "fasterrcnn_simple":
        return _simple_faster_rcnn(
            num_classes, min_size, max_size, anchor_sizes, score_threshold, detections_per_img,
            box_head_size or 256, detector_kwargs,
        )
    kwargs: dict[str, Any] = {"min_size": min_size, "max_size": max_size}
    if arch.startswith("fasterrcnn"):
        kwargs.update(box_score_thresh=score_threshold, box_detections_per_img=detections_per_img)
    else:
        kwargs.update(score_thresh=score_threshold, detections_per_img=detections_per_img)
    if box_head_size is not None and not arch.startswith("fasterrcnn"):
        raise ValueError(f"box_head_size is for Faster R-CNN, not {arch}")
    kwargs.update(detector_kwargs or {})
    model = torchvision.models.get_model(
        arch, weights=None, weights_backbone=None, num_classes=num_classes, **kwargs
    )
    if box_head_size is not None:
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

        res = model.roi_heads.box_roi_pool.output_size
        res = res[0] * res[1] if isinstance(res, (tuple, list)) else res * res
        model.roi_heads.box_head = TwoMLPHead(model.backbone.out_channels * res, box_head_size)
        model.roi_heads.box_predictor = FastRCNNPredictor(box_head_size, num_classes)
    if anchor_sizes is not None:
        _set_anchors(model, arch, tuple(int(s) for s in anchor_sizes))
    return model


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SimpleDetectionBackbone(nn.Module):
    """A compact CNN for Faster R-CNN: ``body`` = stem and three stages, one stride-8 map.

    ``body.layer3`` (the default explained layer) gives ``(B, 128, H / 8, W / 8)``.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 128, 128)) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.body = nn.Sequential(OrderedDict(
            stem=_block(3, w0, 2),
            layer1=nn.Sequential(_block(w0, w1, 2), _block(w1, w1, 1)),
            layer2=nn.Sequential(_block(w1, w2, 2), _block(w2, w2, 1)),
            layer3=nn.Sequential(_block(w2, w3, 1), _block(w3, w3, 1)),
        ))
        self.out_channels = w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _simple_faster_rcnn(
    num_classes: int,
    min_size: int,
    max_size: int,
    anchor_sizes: Sequence[int] | None,
    score_threshold: float,
    detections_per_img: int,
    box_head_size: int,
    detector_kwargs: dict[str, Any] | None,
) -> nn.Module:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = SimpleDetectionBackbone()
    sizes = tuple(int(s) for s in (anchor_sizes or (16, 32, 64)))
    kwargs: dict[str, Any] = dict(
        min_size=min_size, max_size=max_size,
        rpn_anchor_generator=AnchorGenerator((sizes,), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(backbone.out_channels * 49, box_head_size),
        box_predictor=FastRCNNPredictor(box_head_size, num_classes),
        box_score_thresh=score_threshold, box_detections_per_img=detections_per_img,
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=150,
        box_batch_size_per_image=64,
    )
    kwargs.update(detector_kwargs or {})
    return FasterRCNN(backbone, num_classes=None, **kwargs)


def _set_anchors(model: Any, arch: str, sizes: tuple[int, ...]) -> None:
    """Replace the anchor generator (and the RPN head when the anchor count changes)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.rpn import RPNHead

    if arch.startswith("fasterrcnn"):
        levels = len(model.rpn.anchor_generator.sizes)
        if arch.startswith("fasterrcnn_mobilenet"):  # every size on every level
            generator = AnchorGenerator((sizes,) * levels, ((0.5, 1.0, 2.0),) * levels)
        else:  # one size per level
            if len(sizes) != levels:
                raise ValueError(f"anchor_sizes for {arch} needs {levels} sizes (one per FPN "
                                 f"level), got {list(sizes)}")
            generator = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * levels)
        before = model.rpn.anchor_generator.num_anchors_per_location()[0]
        model.rpn.anchor_generator = generator
        count = generator.num_anchors_per_location()[0]
        if count != before:
            model.rpn.head = RPNHead(model.backbone.out_channels, count)
    elif arch.startswith("retinanet"):
        levels = len(model.anchor_generator.sizes)
        if len(sizes) != levels:
            raise ValueError(f"anchor_sizes for {arch} needs {levels} sizes (one per FPN level), "
                             f"got {list(sizes)}")
        per = tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in sizes)
        model.anchor_generator = AnchorGenerator(per, ((0.5, 1.0, 2.0),) * levels)
    else:
        raise ValueError(f"anchor_sizes is not supported for {arch} (anchor-free)")


# ----------------------------------------------------------------------------- DETR family
# Hugging Face transformers detectors (lightning_cam.detection.detr explains them; transformers
# is imported only there). One record per model class: how its own post-processing turns the
# query logits into detections, and whether its decoder's cross-attention is a dense map.


@dataclass(frozen=True)
class DetrFamily:
    """How a DETR-family model's own post-processing (its image processor's
    ``post_process_object_detection``) selects detections from the query logits ``(Q, C')``.

    Attributes:
        model_class: The transformers class (its subclasses match too).
        scores: ``"softmax"``: softmax over the ``C + 1`` logits of a query (the last class is
            "no object"), a detection per query with its best object class (DETR);
            ``"sigmoid"``: a sigmoid per (query, class) logit, the ``candidates`` highest pairs
            (a query may give several detections, one per class).
        candidates: ``"sigmoid"``: how many (query, class) pairs the post-processing keeps
            before its threshold (``None``: the number of queries, as RT-DETR does).
        dense_cross_attention: Whether the decoder's cross-attention is a softmax over every
            encoder position (a map of the image); deformable attention samples a few
            learned points per head and level instead.
        multi_scale_encoder: Whether the encoder's tokens concatenate several feature levels
            (no single grid to fold them into).
        default_blocks: A ``ModuleList`` whose last block is the default layer instead of the
            backbone's last stage (RT-DETR: the hybrid encoder's finest output level, the best
            localising layer measured, ``benchmarks/detection_quality.md``); ``None``: the
            backbone's last stage.
    """

    model_class: str
    scores: str
    candidates: int | None
    dense_cross_attention: bool
    multi_scale_encoder: bool
    default_blocks: str | None = None


#: The supported DETR-family models, by transformers class name.
DETR_FAMILIES: dict[str, DetrFamily] = {
    f.model_class: f
    for f in (
        DetrFamily("DetrForObjectDetection", "softmax", None, True, False),
        DetrFamily("ConditionalDetrForObjectDetection", "sigmoid", 100, True, False),
        DetrFamily("DeformableDetrForObjectDetection", "sigmoid", 100, False, True),
        DetrFamily("RTDetrForObjectDetection", "sigmoid", None, False, False,
                   "model.encoder.fpn_blocks"),
        DetrFamily("RTDetrV2ForObjectDetection", "sigmoid", None, False, False,
                   "model.encoder.fpn_blocks"),
    )
}
