"""Grad-CAM and Grad-CAM++ for the detections of torchvision detectors, without patching them.

torchvision's detectors return scores that are differentiable w.r.t. their backbone and head
features, so the target of detection ``k`` is simply its score. :class:`DetectionExplainer`
wraps the detector in a small module that takes an image batch ``(1, C, H, W)`` and returns the
detector's detections, and hands it to the engine (:class:`lightning_cam.engine.Explainer`):
one forward pass and one batched backward give one map per detection, per layer and per method.

* **Shared heads.** RetinaNet's and FCOS's heads run once per FPN level; the engine captures
  every call and sums the per-call CAMs. A detection comes from one level, so the calls of the
  other levels have zero gradient and add nothing (no "feature level" patch needed).
* **Alignment.** The detector resizes the image and pads it to a multiple of 32 (its
  ``GeneralizedRCNNTransform``); feature maps cover the padded canvas. Maps are computed at the
  layer's resolution, stretched over the canvas, cropped to the resized image and resized to the
  original image, so ``maps`` are ``(K, H, W)`` of the image as given.
* **K detections for about the price of one.** For torchvision's Faster R-CNN and RetinaNet,
  the parts of the forward that only *select* detections (RPN, box head of every proposal,
  logits of every anchor, postprocessing) run without autograd recording, and the ``K`` kept
  scores are recomputed, differentiably, from what each depends on (its proposal's RoI
  features; its logit's window of the classification tower): the same scores and gradients
  up to float rounding, and a batched backward that never runs through the box head of every
  proposal or the postprocessing of every anchor. Other detectors (and subclasses that change
  these computations) differentiate the detector's outputs as they are.
* **RoI-level CAMs** (Faster R-CNN, ``roi_cams=True``): the CAM of the RoI-pooled features of
  the proposal a detection came from (``roi_heads.box_roi_pool``, ``(R, C, 7, 7)``), pasted into
  the proposal box, as in the original Grad-CAM.pytorch tool. The proposal of each detection is
  recovered by recomputing the box decoding on the recorded box-head outputs; the RoI CAM is the
  engine's, on the box head alone, from the ``K`` pooled feature rows.

Example:
    >>> import torch, torchvision
    >>> det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
    ...     weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128,
    ...     box_score_thresh=0.0)
    >>> explainer = DetectionExplainer(det, score_threshold=0.0, top_k=3)
    >>> result = explainer(torch.rand(3, 100, 150))
    >>> result.map("gradcam").shape
    torch.Size([3, 100, 150])
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_cam.engine import Explainer, borrowed
from lightning_cam.layers import get_layer
from lightning_cam.methods import method_name, normalize_maps

__all__ = [
    "ROI_LAYER",
    "DetectionExplainer",
    "DetectionResult",
    "default_detection_layer",
    "explain_detection_batch",
    "find_detector",
    "is_torchvision_detector",
    "split_detection_batch",
]

#: Key of RoI-level maps in :attr:`DetectionResult.maps` (the module whose output they explain).
ROI_LAYER = "roi_heads.box_roi_pool"

_PREFIX = "detector."


def is_torchvision_detector(model: Any) -> bool:
    """Whether ``model`` is a torchvision detection model (it has a ``GeneralizedRCNNTransform``:
    Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return isinstance(model, nn.Module) and isinstance(
        getattr(model, "transform", None), GeneralizedRCNNTransform
    )


def find_detector(obj: Any) -> nn.Module | None:
    """The torchvision detector in ``obj``: ``obj`` itself, its ``detector`` / ``model``
    attribute, or its only direct child that is one (e.g. a LightningModule wrapping one).
    ``None`` when there is none."""
    return find_wrapped(obj, is_torchvision_detector)


def find_wrapped(obj: Any, is_kind: Callable[[Any], bool]) -> nn.Module | None:
    """``obj`` when ``is_kind(obj)``, else its ``detector`` / ``model`` attribute that is, else its
    only direct child that is; ``None`` when there is none."""
    if is_kind(obj):
        return obj
    if not isinstance(obj, nn.Module):
        return None
    for attr in ("detector", "model"):
        if is_kind(getattr(obj, attr, None)):
            return getattr(obj, attr)
    found = [m for m in obj.children() if is_kind(m)]
    return found[0] if len(found) == 1 else None


def split_detection_batch(
    batch: Any,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None] | None:
    """``(images, targets)`` of a detection batch, or ``None`` when ``batch`` is not one.

    Recognises torchvision's format, ``(list of (C, H, W) images, list of target dicts with
    "boxes")`` (targets ``None`` when the batch is a bare list of images).
    """

    def images_of(x: Any) -> list[torch.Tensor] | None:
        if isinstance(x, (list, tuple)) and x and all(
            isinstance(t, torch.Tensor) and t.dim() == 3 for t in x
        ):
            return list(x)
        return None

    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        images, targets = images_of(batch[0]), batch[1]
        if (
            images is not None
            and isinstance(targets, (list, tuple))
            and len(targets) == len(images)
            and all(isinstance(t, dict) and "boxes" in t for t in targets)
        ):
            return images, list(targets)
    images = images_of(batch)
    return (images, None) if images is not None else None


def default_detection_layer(detector: nn.Module) -> str:
    """The backbone's last stage: the last child of ``backbone.body`` (``backbone.body.layer4``
    for ResNets, ``backbone.body.16`` for MobileNet v3).

    Raises:
        ValueError: The detector has no ``backbone.body`` (pass a layer explicitly).
    """
    body = getattr(getattr(detector, "backbone", None), "body", None)
    children = [n for n, _ in body.named_children()] if isinstance(body, nn.Module) else []
    if not children:
        raise ValueError(
            f"{type(detector).__name__} has no backbone.body to take the default layer from; "
            "pass layer=... (a dotted name from detector.named_modules())."
        )
    return f"backbone.body.{children[-1]}"


# ----------------------------------------------------------------------------- results


@dataclass
class DetectionResult:
    """The detections of one image and their maps, in the original image's coordinates.

    Attributes:
        boxes: ``(K, 4)`` float32 ``(x1, y1, x2, y2)`` in pixels of the image as given.
        labels: ``(K,)`` int64 labels.
        scores: ``(K,)`` float32 scores (detached), decreasing.
        maps: ``maps[method][layer]``: ``(K, H, W)`` float32 in ``[0, 1]``, one map per
            detection, aligned with the image (``layer`` as named on the detector, or
            :data:`ROI_LAYER` for RoI-level maps).
        image_size: ``(H, W)`` of the image.
        layers: The layers explained (maps keys), in order.
        methods: The methods computed.
        class_names: Names indexed by label, when known.
        proposals: ``(K, 4)`` the proposal box of each detection (RoI-level maps only).
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)
    layers: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    proposals: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def map(self, method: str = "gradcam", layer: str | None = None) -> torch.Tensor:
        """The ``(K, H, W)`` maps of one method and layer (``None``: the first layer)."""
        m = method_name(method)
        if m not in self.maps:
            raise ValueError(f"method {method!r} was not computed; have {self.methods}")
        key = self.layers[0] if layer is None else layer
        if key not in self.maps[m]:
            raise ValueError(f"layer {layer!r} was not explained; have {self.layers}")
        return self.maps[m][key]

    def label_names(self) -> list[str]:
        """A name per detection: ``class_names[label]``, else ``"class <label>"``."""
        names = self.class_names or []
        return [
            names[i] if 0 <= i < len(names) else f"class {i}" for i in self.labels.tolist()
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready detections: index, box, label, name and score of each."""
        return {
            "image_size": list(self.image_size),
            "detections": [
                {
                    "index": k,
                    "box": [round(float(v), 2) for v in self.boxes[k].tolist()],
                    "label": int(self.labels[k]),
                    "class_name": name,
                    "score": round(float(self.scores[k]), 5),
                }
                for k, name in enumerate(self.label_names())
            ],
        }


# ----------------------------------------------------------------------------- adapter


@dataclass
class _RoIRecord:
    """What the RoI-recording forward keeps of one image (detached, resized coordinates)."""

    pooled: torch.Tensor  # (R, C, 7, 7)
    class_logits: torch.Tensor  # (R, num_classes)
    box_regression: torch.Tensor  # (R, num_classes * 4)
    proposals: torch.Tensor  # (R, 4)
    image_size: tuple[int, int]
    boxes: torch.Tensor  # (D, 4) detections before transform.postprocess
    scores: torch.Tensor
    labels: torch.Tensor


@dataclass
class _DenseRecord:
    """What the RetinaNet forward keeps of one image (detached, resized coordinates)."""

    cls_logits: torch.Tensor  # (HWA, num_classes), all levels
    box_regression: torch.Tensor  # (HWA, 4)
    anchors: torch.Tensor  # (HWA, 4)
    level_shapes: list[tuple[int, int]]  # (h, w) of each level
    num_anchors: int  # A, anchors per position
    image_size: tuple[int, int]
    boxes: torch.Tensor  # (D, 4) detections before transform.postprocess
    scores: torch.Tensor
    labels: torch.Tensor


class _FastPathMismatch(RuntimeError):
    """The rescored detections do not reproduce the detector's: use the generic path."""


def _overrides(obj: Any, base: type, *names: str) -> bool:
    return any(getattr(type(obj), n, None) is not getattr(base, n) for n in names)


def _fast_kind(detector: nn.Module, layers: Sequence[str]) -> str | None:
    """Which rescoring fast path fits ``detector`` (``"rcnn"``, ``"retinanet"``), else ``None``.

    The fast paths write out torchvision's eval forward, so they only take detectors whose
    forward (and the parts written out) are torchvision's own.
    """
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.retinanet import (
        RetinaNet,
        RetinaNetClassificationHead,
        RetinaNetHead,
    )
    from torchvision.models.detection.roi_heads import RoIHeads

    det: Any = detector
    if isinstance(det, GeneralizedRCNN):
        rh = getattr(det, "roi_heads", None)
        ok = (
            not _overrides(det, GeneralizedRCNN, "forward")
            and isinstance(rh, RoIHeads)
            and not _overrides(rh, RoIHeads, "forward", "postprocess_detections")
            and all(getattr(rh, n, None) is not None
                    for n in ("box_roi_pool", "box_head", "box_predictor"))
        )
        return "rcnn" if ok else None
    if isinstance(det, RetinaNet):
        head = getattr(det, "head", None)
        cls = getattr(head, "classification_head", None)
        conv = getattr(cls, "cls_logits", None)
        ok = (
            not _overrides(det, RetinaNet, "forward", "postprocess_detections")
            and type(head) is RetinaNetHead
            and type(cls) is RetinaNetClassificationHead
            and type(conv) is nn.Conv2d
            and conv.groups == 1
            and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)
            # the written-out forward bypasses these modules' own forward (and their hooks)
            and not any(n in ("head", "head.classification_head") for n in layers)
        )
        return "retinanet" if ok else None
    return None


class _DetectorAdapter(nn.Module):
    """``(B, C, H, W) -> detector(list(images))``: the engine's view of a detector.

    With ``record_rois`` (Faster R-CNN), the forward is GeneralizedRCNN's and RoIHeads' eval
    path written out (transform, backbone, rpn, RoI pooling, box head, predictor,
    postprocessing), keeping the RoI features and box-head outputs for RoI-level maps.

    **Rescoring fast path** (torchvision Faster R-CNN and RetinaNet, one image). The score of a
    detection depends on few of the values the detector computes: for Faster R-CNN, on the
    RoI features of its own proposal (the box head works row by row); for RetinaNet, on one
    logit of one FPN level, that is on a ``k x k`` window of the classification tower's output
    at that level. Differentiating the detector's outputs would backpropagate, for each of the
    ``K`` detections, through the box head of every proposal (Faster R-CNN) or the logits
    convolution and the postprocessing of every anchor (RetinaNet). So the forward runs the
    parts that only *select* detections (RPN, RoI head of all proposals, logits of all anchors,
    postprocessing) without autograd recording, and :meth:`rescore` recomputes the ``K`` kept
    scores, differentiably, from what they depend on: the same values up to float rounding and
    the same gradients, at a fraction of the backward's cost.
    """

    def __init__(
        self, detector: nn.Module, record_rois: bool = False, layers: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.detector: Any = detector
        self.record_rois = record_rois
        self.fast = _fast_kind(detector, layers)
        # the cls_logits conv itself explained: rescore from its output, not its input
        self._logits_layer = any(
            n == "head.classification_head.cls_logits" for n in layers
        )
        self.record: _RoIRecord | _DenseRecord | None = None
        self.index: torch.Tensor | None = None  # proposal / anchor of each rescored detection
        self._live: Any = None  # graph tensors rescore() differentiates from (one call)

    def clear(self) -> None:
        """Drop what one call recorded (and the graph it holds)."""
        self.record, self.index, self._live = None, None, None

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        images = list(x.unbind(0))
        fast = self.fast if len(images) == 1 else None
        self.clear()
        if fast == "retinanet":
            return self._retinanet_forward(images)
        if fast == "rcnn" or self.record_rois:
            return self._rcnn_forward(images, fast == "rcnn")
        return self.detector(images)

    @property
    def rescoring(self) -> bool:
        """Whether the last forward took the fast path (:meth:`rescore` applies)."""
        return self._live is not None

    def _backbone(self, images: list[torch.Tensor]) -> tuple[list[tuple[int, int]], Any, Any]:
        """The images' original sizes, the transformed ``ImageList`` and the backbone's
        features (an ordered dict of levels)."""
        det: Any = self.detector
        original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        image_list, _ = det.transform(images)
        features = det.backbone(image_list.tensors)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        return original, image_list, features

    def _rcnn_forward(
        self, images: list[torch.Tensor], fast: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        det: Any = self.detector
        original, image_list, features = self._backbone(images)
        with torch.no_grad() if fast else contextlib.nullcontext():
            proposals, _ = det.rpn(image_list, features)
            rh = det.roi_heads
            pooled = rh.box_roi_pool(features, proposals, image_list.image_sizes)
            logits, regression = rh.box_predictor(rh.box_head(pooled))
            boxes, scores, labels = rh.postprocess_detections(
                logits, regression, proposals, image_list.image_sizes
            )
        size = image_list.image_sizes[0]
        self.record = _RoIRecord(
            pooled.detach(), logits.detach(), regression.detach(), proposals[0].detach(),
            (int(size[0]), int(size[1])), boxes[0].detach(), scores[0].detach(), labels[0],
        )
        if fast:
            self._live = (features, image_list.image_sizes)
        dets = [{"boxes": b, "scores": s, "labels": lab}
                for b, s, lab in zip(boxes, scores, labels, strict=True)]
        return det.transform.postprocess(dets, image_list.image_sizes, original)

    def _retinanet_forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """RetinaNet's eval forward written out; the logits of all anchors and the
        postprocessing run without recording."""
        det: Any = self.detector
        original, image_list, features = self._backbone(images)
        features = list(features.values())
        cls = det.head.classification_head
        with torch.no_grad():
            box_regression = det.head.regression_head(features)
        towers = [cls.conv(f) for f in features]
        with contextlib.nullcontext() if self._logits_layer else torch.no_grad():
            level_logits = [cls.cls_logits(t) for t in towers]
        shapes = [(int(t.shape[-2]), int(t.shape[-1])) for t in level_logits]
        num_classes = cls.num_classes
        num_anchors = int(level_logits[0].shape[1]) // num_classes
        cls_logits = torch.cat(
            [lg.detach().view(1, num_anchors, num_classes, h, w).permute(0, 3, 4, 1, 2)
             .reshape(1, -1, num_classes) for lg, (h, w) in zip(level_logits, shapes, strict=True)],
            dim=1,
        )
        with torch.no_grad():
            anchors = det.anchor_generator(image_list, features)
            per_level = [h * w * num_anchors for h, w in shapes]
            split_head = {
                "cls_logits": list(cls_logits.split(per_level, dim=1)),
                "bbox_regression": list(box_regression.split(per_level, dim=1)),
            }
            split_anchors = [list(a.split(per_level)) for a in anchors]
            dets = det.postprocess_detections(split_head, split_anchors, image_list.image_sizes)
        size = image_list.image_sizes[0]
        self.record = _DenseRecord(
            cls_logits[0], box_regression[0].detach(), anchors[0], shapes, num_anchors,
            (int(size[0]), int(size[1])), dets[0]["boxes"], dets[0]["scores"], dets[0]["labels"],
        )
        self._live = level_logits if self._logits_layer else towers
        return det.transform.postprocess(dets, image_list.image_sizes, original)

    def rescore(self, keep: torch.Tensor) -> torch.Tensor:
        """Differentiable scores ``(K,)`` of the detections ``keep`` of the last forward.

        Raises:
            _FastPathMismatch: The recomputed detections differ from the detector's.
        """
        rec = self.record
        if isinstance(rec, _RoIRecord):
            scores = self._rescore_rcnn(rec, keep)
        elif isinstance(rec, _DenseRecord):
            scores = self._rescore_retinanet(rec, keep)
        else:  # pragma: no cover - rescore after a generic forward
            raise _FastPathMismatch("no fast-path forward to rescore")
        expected = rec.scores[keep].to(scores.device, scores.dtype)
        if not torch.allclose(scores.detach(), expected, rtol=1e-4, atol=1e-5):
            raise _FastPathMismatch(
                f"rescored {scores.detach().tolist()} != detected {expected.tolist()}"
            )
        return scores

    def _rescore_rcnn(self, rec: _RoIRecord, keep: torch.Tensor) -> torch.Tensor:
        """Scores of the kept detections from the features of their own proposals.

        The box head works row by row, so detection ``k`` depends on the features only
        through the RoI features of its proposal. Its gradient w.r.t. each feature level,
        ``G_k``, comes from one small backward (the ``K`` RoIs pooled from ``K`` copies of
        the features, one per detection, through the box head); the score is then returned as
        ``s_k + <G_k, f - f.detach()>``: the value ``s_k`` exactly, the gradient ``G_k``
        exactly, and the engine's batched backward over ``K`` runs through the features'
        graph only (not ``K`` times through the box head and RoI pooling of every proposal).
        """
        rh = self.detector.roi_heads
        features, image_sizes = self._live
        index, dist = _proposal_index(rh, rec, keep)
        if dist.numel() and float(dist.max()) > 1e-3:
            raise _FastPathMismatch(f"no proposal reproduces a detection (distance {dist})")
        self.index = index
        k = int(index.numel())
        props = rec.proposals[index.to(rec.proposals.device)]
        copies = OrderedDict(
            (n, f.detach().repeat(k, *([1] * (f.dim() - 1))).requires_grad_(True))
            for n, f in features.items()
        )
        pooled = rh.box_roi_pool(copies, list(props[:, None].unbind(0)), list(image_sizes) * k)
        logits, _ = rh.box_predictor(rh.box_head(pooled))
        rows = torch.arange(k, device=logits.device)
        probs = F.softmax(logits, -1)[rows, rec.labels[keep].to(logits.device)]
        grads = torch.autograd.grad(probs.sum(), list(copies.values()), allow_unused=True)
        scores = probs.detach()
        for f, g in zip(features.values(), grads, strict=True):
            if g is not None and f.requires_grad:
                scores = scores + g.flatten(1) @ (f - f.detach()).flatten()
        return scores

    def _rescore_retinanet(self, rec: _DenseRecord, keep: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import boxes as box_ops

        det = self.detector
        dev = rec.cls_logits.device
        labels = rec.labels[keep].to(dev)
        boxes = rec.boxes[keep].to(dev)
        scores = rec.scores[keep].to(dev)
        # the anchor of each detection: the one whose decoded box and score reproduce it
        decoded = det.box_coder.decode_single(rec.box_regression, rec.anchors)
        decoded = box_ops.clip_boxes_to_image(decoded, rec.image_size)
        cand_scores = torch.sigmoid(rec.cls_logits[:, labels])  # (HWA, K)
        dist = (decoded[:, None] - boxes[None]).abs().amax(-1) + (cand_scores - scores[None]).abs()
        best, index = dist.min(0)
        if best.numel() and float(best.max()) > 1e-3:
            raise _FastPathMismatch(f"no anchor reproduces a detection (distance {best})")
        self.index = index.cpu()
        a_count = rec.num_anchors
        sizes = torch.tensor([h * w * a_count for h, w in rec.level_shapes])
        starts = torch.cumsum(sizes, 0) - sizes
        level = torch.searchsorted(torch.cumsum(sizes, 0), self.index, right=True)
        local = self.index - starts[level]
        anchor, pos = local % a_count, local // a_count
        num_classes = rec.cls_logits.shape[-1]
        channel = anchor * num_classes + labels.cpu()
        conv = det.head.classification_head.cls_logits
        out: list[tuple[torch.Tensor, torch.Tensor]] = []  # (positions in keep, logits)
        for lv in sorted(set(level.tolist())):
            at = torch.nonzero(level == lv)[:, 0]
            w = rec.level_shapes[lv][1]
            ys, xs, chs = pos[at] // w, pos[at] % w, channel[at]
            live = self._live[lv]
            if self._logits_layer:  # the conv's output is explained: read the logits there
                logits = live[0, chs.to(live.device), ys.to(live.device), xs.to(live.device)]
            else:  # the logit of each detection: the conv on its window of the tower
                logits = _conv_at(conv, live, ys, xs, chs)
            out.append((at, logits))
        order = torch.cat([at for at, _ in out]).argsort()
        return torch.sigmoid(torch.cat([lg for _, lg in out])[order.to(out[0][1].device)])


def _conv_at(
    conv: nn.Conv2d, x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, chs: torch.Tensor
) -> torch.Tensor:
    """``conv(x)[0, chs[k], ys[k], xs[k]]`` ``(K,)`` from the ``K`` input windows alone."""
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph, pw = (int(p) for p in conv.padding)  # not "same"/"valid": checked by _fast_kind
    dh, dw = conv.dilation
    dev = x.device
    padded = F.pad(x[0], (pw, pw, ph, ph)) if (ph or pw) else x[0]
    rows = (ys.to(dev) * sh)[:, None, None] + (torch.arange(kh, device=dev) * dh)[None, :, None]
    cols = (xs.to(dev) * sw)[:, None, None] + (torch.arange(kw, device=dev) * dw)[None, None, :]
    windows = padded[:, rows, cols]  # (C_in, K, kh, kw)
    weight = conv.weight.detach()[chs.to(dev)]  # (K, C_in, kh, kw)
    logits = torch.einsum("ckij,kcij->k", windows, weight)
    if conv.bias is not None:
        logits = logits + conv.bias.detach()[chs.to(dev)]
    return logits


def _proposal_index(
    roi_heads: Any, rec: _RoIRecord, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The proposal each kept detection came from: the one whose decoded, clipped box and
    score for the detection's label reproduce the detection (exactly: the same computation);
    and the distance of that match ``(K,)``."""
    from torchvision.ops import boxes as box_ops

    num_classes = rec.class_logits.shape[-1]
    decoded = roi_heads.box_coder.decode(rec.box_regression, [rec.proposals])
    decoded = box_ops.clip_boxes_to_image(decoded.reshape(-1, num_classes, 4), rec.image_size)
    probs = rec.class_logits.softmax(-1)
    labels = rec.labels[keep].to(probs.device)
    boxes = rec.boxes[keep].to(probs.device)
    scores = rec.scores[keep].to(probs.device)
    cand_boxes = decoded[:, labels]  # (R, K, 4)
    cand_scores = probs[:, labels]  # (R, K)
    dist = (cand_boxes - boxes[None]).abs().amax(-1) + (cand_scores - scores[None]).abs()
    best, index = dist.min(0)
    return index.cpu(), best


class _BoxHeadScorer(nn.Module):
    """Class logits of RoI-pooled features ``(R, C, 7, 7)``: the box head and predictor alone.
    ``input`` (an identity) is the layer the engine explains: the pooled features."""

    def __init__(self, roi_heads: Any) -> None:
        super().__init__()
        self.input = nn.Identity()
        self.box_head = roi_heads.box_head
        self.box_predictor = roi_heads.box_predictor

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.box_predictor(self.box_head(self.input(pooled)))[0]


def _to_original(
    cams: torch.Tensor, resized: tuple[int, int], padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Layer-resolution maps ``(K, h, w)`` over the padded canvas -> ``(K, H, W)`` of the image."""
    if cams.shape[0] == 0:
        return cams.new_zeros((0, *size), dtype=torch.float32)
    m = F.interpolate(cams[:, None].float(), size=padded, mode="bilinear", align_corners=False)
    m = m[..., : resized[0], : resized[1]]
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(m.clamp_min(0))


def _paste(maps: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Paste ``(K, h, w)`` RoI maps into their boxes ``(K, 4)`` on a ``(K, H, W)`` canvas."""
    height, width = size
    out = maps.new_zeros((maps.shape[0], height, width), dtype=torch.float32)
    for k in range(maps.shape[0]):
        x1, y1, x2, y2 = boxes[k].tolist()
        c0, r0 = max(0, int(round(x1))), max(0, int(round(y1)))
        c1, r1 = min(width, int(round(x2))), min(height, int(round(y2)))
        bw, bh = int(round(x2)) - int(round(x1)), int(round(y2)) - int(round(y1))
        if c1 <= c0 or r1 <= r0 or bw <= 0 or bh <= 0:
            continue
        patch = F.interpolate(maps[k][None, None].float(), size=(bh, bw), mode="bilinear",
                              align_corners=False)[0, 0]
        dx, dy = c0 - int(round(x1)), r0 - int(round(y1))
        out[k, r0:r1, c0:c1] = patch[dy : dy + r1 - r0, dx : dx + c1 - c0]
    return out


def check_selection(methods: str | Sequence[str], score_threshold: Any, top_k: Any) -> list[str]:
    """The canonical, de-duplicated method names; raises on bad methods, threshold or top_k."""
    if isinstance(methods, str):
        methods = (methods,)
    names = list(dict.fromkeys(method_name(m) for m in methods))
    if not names:
        raise ValueError("methods is empty; give at least one of 'gradcam', 'gradcam++'")
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)):
        raise TypeError(f"score_threshold must be a number, got {score_threshold!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    return names


def _select(scores: torch.Tensor, threshold: float, top_k: int) -> torch.Tensor:
    """Indices of the ``top_k`` highest scores ``>= threshold``, by decreasing score."""
    order = torch.argsort(scores, descending=True, stable=True)
    return order[scores[order] >= threshold][:top_k]


def _check_image(image: Any, channels: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor (C, H, W), got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != channels or min(image.shape[1:]) < 1:
        raise ValueError(
            f"image must have shape ({channels}, H, W), got {tuple(image.shape)}"
            + (" (channels last? use image.permute(2, 0, 1))" if image.dim() == 3
               and image.shape[-1] == channels else "")
        )
    if not image.is_floating_point():
        raise TypeError(
            f"image must be a floating-point tensor in [0, 1], got dtype {image.dtype}; "
            "use image.float() / 255 (the detector normalises it itself)."
        )
    return image


class _ExplainerBase:
    """What the torchvision and detectron2 explainers share: results and their maps.

    Subclasses set ``methods``, ``layers``, ``class_names``, ``roi_cams`` and ``roi_layer`` (the
    results' key of RoI-level maps) and define ``__call__(image) -> DetectionResult``.
    """

    methods: list[str]
    layers: list[str]
    class_names: list[str] | None
    roi_cams: bool
    roi_layer: str
    _prefix: str = _PREFIX  # the detector's name inside the explained wrapper module

    def __call__(self, image: torch.Tensor) -> DetectionResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def result_layers(self) -> list[str]:
        """The keys of the results' maps: the layers, then the RoI key with RoI maps."""
        return [*self.layers, *([self.roi_layer] if self.roi_cams else [])]

    def explain(self, images: Sequence[torch.Tensor]) -> list[DetectionResult]:
        """Explain several images (one forward and one backward each)."""
        return [self(im) for im in images]

    def _new_result(
        self, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, explanation: Any,
        size: tuple[int, int], resized: tuple[int, int], padded: tuple[int, int],
    ) -> DetectionResult:
        """The result of the kept detections, with the layers' maps back on the image."""
        result = DetectionResult(
            boxes=boxes.detach().float().cpu(),
            labels=labels.detach().long().cpu(),
            scores=scores.detach().float().cpu(),
            image_size=size,
            layers=self.result_layers,
            methods=list(self.methods),
            class_names=self.class_names,
        )
        for m in self.methods:
            result.maps[m] = {
                n: _to_original(explanation.cams[m][self._prefix + n], resized, padded, size).cpu()
                for n in self.layers
            }
        return result

    def _set_roi_maps(
        self, result: DetectionResult, cams: dict[str, torch.Tensor] | None,
        proposals: torch.Tensor | None, resized: tuple[int, int], size: tuple[int, int],
    ) -> None:
        """RoI-level maps: each detection's ``(h, w)`` CAM (``cams[method]``) pasted into its
        proposal box (``proposals`` in the model input's pixels). ``None``: no detection."""
        if cams is None or proposals is None:
            for m in self.methods:
                result.maps[m][self.roi_layer] = torch.zeros((0, *size))
            result.proposals = torch.zeros((0, 4))
            return
        scale = torch.tensor([size[1] / resized[1], size[0] / resized[0]] * 2)
        result.proposals = proposals.float().cpu() * scale
        for m in self.methods:
            result.maps[m][self.roi_layer] = _paste(cams[m].float().cpu(), result.proposals, size)


class DetectionExplainer(_ExplainerBase):
    """Grad-CAM / Grad-CAM++ maps for the detections of a torchvision detector.

    The detector is borrowed: eval mode during a call, every flag restored afterwards, no hook
    left, ``param.grad`` untouched. Detections the detector itself drops (its own score
    threshold ``box_score_thresh`` / ``score_thresh`` and ``detections_per_img``) cannot be
    explained: lower them when building it (see
    :func:`lightning_cam.detection.zoo.configure_detector`).

    Args:
        detector: A torchvision detection model (Faster R-CNN, RetinaNet, FCOS, ...).
        layer: Dotted name(s) of the detector's layers (``"backbone.body.layer4"``,
            ``"head.classification_head.conv.0"``), or ``None`` for the backbone's last stage
            (:func:`default_detection_layer`). ``"roi_heads.box_roi_pool"`` means
            ``roi_cams=True``.
        methods: CAM methods (``"gradcam"``, ``"gradcam++"``).
        score_threshold: Explain detections with a score at least this.
        top_k: Explain at most this many detections (the highest scores).
        roi_cams: Also compute RoI-level maps (Faster R-CNN), under :data:`ROI_LAYER`.
        class_names: Names indexed by label, copied into the results.

    Raises:
        TypeError: ``detector`` is not a torchvision detector.
        ValueError: Unknown layer or method, a per-RoI layer, ``roi_cams`` without RoI heads,
            bad ``score_threshold`` / ``top_k``.
    """

    def __init__(
        self,
        detector: nn.Module,
        layer: str | Sequence[str] | None = None,
        methods: Sequence[str] = ("gradcam", "gradcam++"),
        score_threshold: float = 0.5,
        top_k: int = 10,
        roi_cams: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not is_torchvision_detector(detector):
            raise TypeError(
                "detector must be a torchvision detection model (with a GeneralizedRCNNTransform"
                f" as .transform), got {type(detector).__name__}"
            )
        self.methods = check_selection(methods, score_threshold, top_k)
        self.detector: Any = detector
        self.score_threshold = float(score_threshold)
        self.top_k = top_k
        self.class_names = list(class_names) if class_names is not None else None

        names = [layer] if isinstance(layer, str) else list(layer) if layer is not None else []
        roi = bool(roi_cams) or ROI_LAYER in names
        names = [n for n in names if n != ROI_LAYER]
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"layer names must be strings, got {type(n).__name__}")
            get_layer(detector, n)  # unknown names: ValueError with near matches
            if n == "roi_heads" or n.startswith("roi_heads."):
                raise ValueError(
                    f"Layer {n!r} runs once per region proposal, not per image; use "
                    f"roi_cams=True (or the layer {ROI_LAYER!r}) for RoI-level maps."
                )
        if not names:
            names = [default_detection_layer(detector)]
        self.layers = list(dict.fromkeys(names))
        rh = getattr(detector, "roi_heads", None)
        if roi and not (rh is not None and hasattr(rh, "box_roi_pool")
                        and hasattr(getattr(detector, "rpn", None), "forward")):
            raise ValueError(
                f"roi_cams=True needs a two-stage detector with roi_heads.box_roi_pool (Faster "
                f"R-CNN); {type(detector).__name__} has none."
            )
        self.roi_cams = roi
        self.roi_layer = ROI_LAYER
        self._adapter = _DetectorAdapter(detector, record_rois=roi, layers=self.layers)
        self._explainer = Explainer(
            self._adapter, [_PREFIX + n for n in self.layers], methods=self.methods
        )
        self._roi_explainer = (
            Explainer(_BoxHeadScorer(rh), "input", methods=self.methods) if roi else None
        )

    def _device(self) -> torch.device:
        p = next(self.detector.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _canvas(self, x: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(resized, padded)`` sizes of the detector's input for image ``x`` ``(1, C, H, W)``."""
        with borrowed(self.detector), torch.no_grad():
            image_list, _ = self.detector.transform([x[0]])
        h, w = image_list.image_sizes[0]
        return (int(h), int(w)), (int(image_list.tensors.shape[-2]),
                                  int(image_list.tensors.shape[-1]))

    def __call__(self, image: torch.Tensor) -> DetectionResult:
        """Detect and explain one image.

        Args:
            image: ``(C, H, W)`` float image in ``[0, 1]`` (not normalised: torchvision's
                detectors normalise internally), on any device.

        Returns:
            A :class:`DetectionResult` with the ``K <= top_k`` detections scoring at least
            ``score_threshold`` and their maps ``(K, H, W)``; ``K`` may be 0.

        Raises:
            TypeError, ValueError: Bad image.
        """
        channels = len(self.detector.transform.image_mean)
        image = _check_image(image, channels)
        x = image.detach().to(self._device())[None]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        resized, padded = self._canvas(x)
        chosen: dict[str, torch.Tensor] = {}

        def score_fn(output: list[dict[str, torch.Tensor]]) -> torch.Tensor:
            scores = output[0]["scores"]
            keep = _select(scores.detach(), self.score_threshold, self.top_k)
            chosen["keep"] = keep
            if self._adapter.rescoring and keep.numel():
                return self._adapter.rescore(keep)
            return scores[keep]

        try:
            try:
                explanation, output = self._explainer.explain_scores(x, score_fn, upsample=False)
            except _FastPathMismatch:
                # A detector that computes its detections differently from torchvision's own
                # code: differentiate its outputs as they are from now on.
                self._adapter.fast = None
                explanation, output = self._explainer.explain_scores(x, score_fn, upsample=False)
            return self._result(explanation, output, chosen["keep"], size, resized, padded)
        finally:
            self._adapter.clear()

    def _result(
        self, explanation: Any, output: list[dict[str, torch.Tensor]], keep: torch.Tensor,
        size: tuple[int, int], resized: tuple[int, int], padded: tuple[int, int],
    ) -> DetectionResult:
        det = output[0]
        result = self._new_result(
            det["boxes"][keep], det["labels"][keep], det["scores"][keep], explanation, size,
            resized, padded,
        )
        if self.roi_cams:
            self._roi_maps(result, keep, resized, size)
        return result

    def _roi_maps(
        self, result: DetectionResult, keep: torch.Tensor, resized: tuple[int, int],
        size: tuple[int, int],
    ) -> None:
        rec = self._adapter.record
        k = int(keep.numel())
        if k == 0 or rec is None:
            self._set_roi_maps(result, None, None, resized, size)
            return
        assert isinstance(rec, _RoIRecord)
        index = self._adapter.index
        if index is None:  # not rescored (generic path): find the proposals
            index = _proposal_index(self.detector.roi_heads, rec, keep)[0]
        labels = rec.labels[keep].to(rec.pooled.device)

        def score_fn(logits: torch.Tensor) -> torch.Tensor:
            # built here, where the engine has turned inference mode off (callbacks may call
            # under trainer.validate()'s inference mode): indices saved for backward
            rows = torch.arange(k, device=logits.device)
            return logits.softmax(-1)[rows, labels.clone()]

        assert self._roi_explainer is not None
        explanation, _ = self._roi_explainer.explain_scores(
            rec.pooled[index.to(rec.pooled.device)], score_fn, upsample=False
        )
        cams = {m: explanation.cams[m]["input"] for m in self.methods}
        self._set_roi_maps(result, cams, rec.proposals[index], resized, size)


def explain_detection_batch(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    layers: str | Sequence[str] | None = None,
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    top_k: int = 5,
    score_threshold: float = 0.5,
    roi_cams: bool = False,
    class_names: Sequence[str] | None = None,
) -> list[DetectionResult]:
    """Explain the detections of a list of images: for callbacks and scripts.

    Args:
        model: A torchvision detector, or a module wrapping one (a LightningModule such as
            :class:`~lightning_cam.detection.module.ShapesDetector`; see :func:`find_detector`).
        images: ``(C, H, W)`` float images in ``[0, 1]`` (inference tensors are fine).
        layers: Layer name(s) of the detector, or ``None`` for the default.
        methods: CAM methods.
        top_k: Most detections explained per image.
        score_threshold: Least score of an explained detection.
        roi_cams: Also RoI-level maps (Faster R-CNN).
        class_names: Names indexed by label; default: ``model.class_names`` when it has them.

    Returns:
        One :class:`DetectionResult` per image.

    Raises:
        TypeError: ``model`` holds no torchvision detector.
    """
    detector = find_detector(model)
    if detector is None:
        raise TypeError(
            f"{type(model).__name__} is not and does not wrap a torchvision detection model"
        )
    if class_names is None:
        names = getattr(model, "class_names", None)
        class_names = list(names) if isinstance(names, (list, tuple)) else None
    explainer = DetectionExplainer(
        detector, layer=layers, methods=methods, score_threshold=score_threshold, top_k=top_k,
        roi_cams=roi_cams, class_names=class_names,
    )
    return explainer.explain(images)
