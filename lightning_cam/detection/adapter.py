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

from collections import OrderedDict
from collections.abc import Sequence
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
    if is_torchvision_detector(obj):
        return obj
    if not isinstance(obj, nn.Module):
        return None
    for attr in ("detector", "model"):
        if is_torchvision_detector(getattr(obj, attr, None)):
            return getattr(obj, attr)
    found = [m for m in obj.children() if is_torchvision_detector(m)]
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


class _DetectorAdapter(nn.Module):
    """``(B, C, H, W) -> detector(list(images))``: the engine's view of a detector.

    With ``record_rois`` (Faster R-CNN), the forward is GeneralizedRCNN's and RoIHeads' eval
    path written out (transform, backbone, rpn, RoI pooling, box head, predictor,
    postprocessing), keeping the RoI features and box-head outputs for RoI-level maps.
    """

    def __init__(self, detector: nn.Module, record_rois: bool = False) -> None:
        super().__init__()
        self.detector: Any = detector
        self.record_rois = record_rois
        self.record: _RoIRecord | None = None

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        images = list(x.unbind(0))
        if not self.record_rois:
            return self.detector(images)
        return self._rcnn_forward(images)

    def _rcnn_forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        det: Any = self.detector
        original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        image_list, _ = det.transform(images)
        features = det.backbone(image_list.tensors)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
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
        dets = [{"boxes": b, "scores": s, "labels": lab}
                for b, s, lab in zip(boxes, scores, labels, strict=True)]
        return det.transform.postprocess(dets, image_list.image_sizes, original)


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


class DetectionExplainer:
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
        if isinstance(methods, str):
            methods = (methods,)
        self.methods = list(dict.fromkeys(method_name(m) for m in methods))
        if not self.methods:
            raise ValueError("methods is empty; give at least one of 'gradcam', 'gradcam++'")
        if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)):
            raise TypeError(f"score_threshold must be a number, got {score_threshold!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
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
        self._adapter = _DetectorAdapter(detector, record_rois=roi)
        self._explainer = Explainer(
            self._adapter, [_PREFIX + n for n in self.layers], methods=self.methods
        )
        self._roi_explainer = (
            Explainer(_BoxHeadScorer(rh), "input", methods=self.methods) if roi else None
        )

    @property
    def result_layers(self) -> list[str]:
        """The keys of the results' maps: the layers, then :data:`ROI_LAYER` with RoI maps."""
        return [*self.layers, *([ROI_LAYER] if self.roi_cams else [])]

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
            return scores[keep]

        explanation, output = self._explainer.explain_scores(x, score_fn, upsample=False)
        keep = chosen["keep"]
        det = output[0]
        result = DetectionResult(
            boxes=det["boxes"][keep].detach().float().cpu(),
            labels=det["labels"][keep].detach().cpu(),
            scores=det["scores"][keep].detach().float().cpu(),
            image_size=size,
            layers=self.result_layers,
            methods=list(self.methods),
            class_names=self.class_names,
        )
        for m in self.methods:
            result.maps[m] = {
                n: _to_original(explanation.cams[m][_PREFIX + n], resized, padded, size).cpu()
                for n in self.layers
            }
        if self.roi_cams:
            self._roi_maps(result, keep, resized, size)
        self._adapter.record = None
        return result

    def explain(self, images: Sequence[torch.Tensor]) -> list[DetectionResult]:
        """Explain several images (one forward and one backward each)."""
        return [self(im) for im in images]

    def _roi_maps(
        self, result: DetectionResult, keep: torch.Tensor, resized: tuple[int, int],
        size: tuple[int, int],
    ) -> None:
        rec = self._adapter.record
        k = int(keep.numel())
        if k == 0 or rec is None:
            for m in self.methods:
                result.maps[m][ROI_LAYER] = torch.zeros((0, *size))
            result.proposals = torch.zeros((0, 4))
            return
        index = self._proposal_index(rec, keep)
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
        scale = torch.tensor([size[1] / resized[1], size[0] / resized[0]] * 2)
        proposals = rec.proposals[index].float().cpu() * scale
        result.proposals = proposals
        for m in self.methods:
            result.maps[m][ROI_LAYER] = _paste(
                explanation.cams[m]["input"].float().cpu(), proposals, size
            )

    def _proposal_index(self, rec: _RoIRecord, keep: torch.Tensor) -> torch.Tensor:
        """The proposal each kept detection came from: the one whose decoded, clipped box and
        score for the detection's label reproduce the detection exactly."""
        from torchvision.ops import boxes as box_ops

        rh = self.detector.roi_heads
        num_classes = rec.class_logits.shape[-1]
        decoded = rh.box_coder.decode(rec.box_regression, [rec.proposals])
        decoded = box_ops.clip_boxes_to_image(decoded.reshape(-1, num_classes, 4), rec.image_size)
        probs = rec.class_logits.softmax(-1)
        labels = rec.labels[keep].to(probs.device)
        boxes = rec.boxes[keep].to(probs.device)
        scores = rec.scores[keep].to(probs.device)
        cand_boxes = decoded[:, labels]  # (R, K, 4)
        cand_scores = probs[:, labels]  # (R, K)
        dist = (cand_boxes - boxes[None]).abs().amax(-1) + (cand_scores - scores[None]).abs()
        return dist.argmin(0).cpu()


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
