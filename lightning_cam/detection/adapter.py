"""CAM maps (any method of the registry) for the detections of torchvision detectors, unpatched.

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
    >>> result.map("eigengradcam").shape
    torch.Size([3, 100, 150])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_cam.detection.base import (
    DEFAULT_METHODS,
    DetectionExplainerBase,
    check_image,
    check_selection,
    select_detections,
)
from lightning_cam.detection.discovery import (
    default_detection_layer,
    find_detector,
    find_wrapped,
    is_torchvision_detector,
    split_detection_batch,
)
from lightning_cam.detection.rescoring import (
    DetectorAdapter,
    FastPathMismatch,
    RoIRecord,
    proposal_index,
)
from lightning_cam.detection.result import ROI_LAYER, DetectionResult
from lightning_cam.engine import Explainer, borrowed
from lightning_cam.engine.layers import get_layer

__all__ = [
    "ROI_LAYER",
    "DetectionExplainer",
    "DetectionResult",
    "check_selection",
    "default_detection_layer",
    "explain_detection_batch",
    "find_detector",
    "find_wrapped",
    "is_torchvision_detector",
    "split_detection_batch",
]

_PREFIX = "detector."


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


class DetectionExplainer(DetectionExplainerBase):
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
        methods: CAM methods: names or aliases of :data:`lightning_cam.methods.METHODS`
            (default: :data:`~lightning_cam.detection.base.DEFAULT_METHODS`).
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
        methods: str | Sequence[str] = DEFAULT_METHODS,
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
        self._adapter = DetectorAdapter(detector, record_rois=roi, layers=self.layers)
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
        image = check_image(image)  # any channel count: the detector's transform says none
        x = image.detach().to(self._device())[None]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        resized, padded = self._canvas(x)
        chosen: dict[str, torch.Tensor] = {}

        def score_fn(output: list[dict[str, torch.Tensor]]) -> torch.Tensor:
            scores = output[0]["scores"]
            keep = select_detections(scores.detach(), self.score_threshold, self.top_k)
            chosen["keep"] = keep
            if self._adapter.rescoring and keep.numel():
                return self._adapter.rescore(keep)
            return scores[keep]

        try:
            try:
                explanation, output = self._explainer.explain_scores(x, score_fn, upsample=False)
            except FastPathMismatch:
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
        assert isinstance(rec, RoIRecord)
        index = self._adapter.index
        if index is None:  # not rescored (generic path): find the proposals
            index = proposal_index(self.detector.roi_heads, rec, keep)[0]
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
    methods: str | Sequence[str] = DEFAULT_METHODS,
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
