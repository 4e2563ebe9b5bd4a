"""Detection explanations: a CAM map per detection (any method of the registry) for torchvision
and detectron2 detectors.

Where things are:

* :mod:`~lightning_cam.detection.adapter`: :class:`DetectionExplainer` /
  :func:`explain_detection_batch` for torchvision detectors: maps ``(K, H, W)`` per method and
  layer for the ``K`` detections of an image, from one forward and one batched backward, with
  the detector as installed (no patching); RoI-level maps for Faster R-CNN.
* :mod:`~lightning_cam.detection.rescoring`: the torchvision detector as the engine sees it, and
  the fast path that rescores the kept detections.
* :mod:`~lightning_cam.detection.detectron2`: :class:`Detectron2Explainer` /
  :func:`build_detectron2_model`, the same for detectron2 models (Faster R-CNN, RetinaNet) when
  detectron2 is installed (importing this package never imports it).
* :mod:`~lightning_cam.detection.detr`: :class:`DetrExplainer` / :func:`explain_detr_batch`
  for Hugging Face DETR-family detectors (DETR, Conditional / Deformable DETR, RT-DETR), per
  query, plus the decoder's cross-attention map (transformers is imported only when used).
* :mod:`~lightning_cam.detection.yolo`: :class:`YOLOExplainer` / :func:`load_yolo`, the same
  for ultralytics YOLO detection models (v8, 11; importing this package never imports
  ultralytics), with :mod:`~lightning_cam.detection.yolo_ops` (letterbox, NMS with anchors).
* :mod:`~lightning_cam.detection.base`: what both explainers share (selection, alignment, RoI
  pasting, the base class); :mod:`~lightning_cam.detection.result`: :class:`DetectionResult`.
* :mod:`~lightning_cam.detection.discovery`: finding a detector in a wrapper, a batch's images
  and targets, the default layer.
* :mod:`~lightning_cam.detection.render`: pictures (:func:`render_detection`,
  :func:`draw_detections`, :func:`detection_heatmap`); :mod:`~lightning_cam.detection.metrics`:
  :func:`detection_pointing_game`, :func:`detection_scores`.
* :mod:`~lightning_cam.detection.architectures`: detectors by name and :func:`make_detector`;
  :mod:`~lightning_cam.detection.zoo`: :func:`build_detector`, with weights from a file
  (:mod:`lightning_cam.zoo.weights`) or torchvision.
* :mod:`~lightning_cam.detection.module`: :class:`~lightning_cam.detection.module.ShapesDetector`,
  a detector as a LightningModule for the synthetic shapes detection data (import it from there:
  it needs Lightning).

Example:
    >>> import torch, torchvision
    >>> from lightning_cam.detection import DetectionExplainer
    >>> det = torchvision.models.detection.retinanet_resnet50_fpn(
    ...     weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128,
    ...     score_thresh=0.0)
    >>> explainer = DetectionExplainer(det, layer="head.classification_head.conv.0",
    ...                                score_threshold=0.0, top_k=2)
    >>> explainer(torch.rand(3, 96, 128)).map("eigengradcam").shape
    torch.Size([2, 96, 128])
"""

from lightning_cam.detection.adapter import DetectionExplainer, explain_detection_batch
from lightning_cam.detection.detectron2 import (
    Detectron2Explainer,
    build_detectron2_model,
    explain_detectron2_batch,
)
from lightning_cam.detection.detr import (
    DetrExplainer,
    explain_detr_batch,
    find_detr_model,
    is_detr_model,
    load_detr_model,
)
from lightning_cam.detection.discovery import (
    default_detection_layer,
    find_detector,
    is_torchvision_detector,
    split_detection_batch,
)
from lightning_cam.detection.metrics import (
    detection_pointing_game,
    detection_scores,
    match_detections,
)
from lightning_cam.detection.render import (
    detection_heatmap,
    draw_detections,
    layer_label,
    render_detection,
)
from lightning_cam.detection.result import ROI_LAYER, DetectionResult
from lightning_cam.detection.yolo import (
    YOLO_NECK,
    YOLOExplainer,
    explain_yolo_batch,
    find_yolo_model,
    is_yolo_model,
    load_yolo,
)
from lightning_cam.detection.zoo import (
    CUSTOM_DETECTORS,
    DETECTORS,
    DetectorMeta,
    build_detector,
    configure_detector,
)

__all__ = [
    "CUSTOM_DETECTORS",
    "DETECTORS",
    "ROI_LAYER",
    "YOLO_NECK",
    "DetectionExplainer",
    "DetectionResult",
    "DetrExplainer",
    "Detectron2Explainer",
    "DetectorMeta",
    "YOLOExplainer",
    "build_detector",
    "build_detectron2_model",
    "configure_detector",
    "default_detection_layer",
    "detection_heatmap",
    "detection_pointing_game",
    "detection_scores",
    "draw_detections",
    "explain_detection_batch",
    "explain_detr_batch",
    "explain_detectron2_batch",
    "explain_yolo_batch",
    "find_detector",
    "find_detr_model",
    "is_detr_model",
    "find_yolo_model",
    "is_torchvision_detector",
    "is_yolo_model",
    "layer_label",
    "load_detr_model",
    "load_yolo",
    "match_detections",
    "render_detection",
    "split_detection_batch",
]
