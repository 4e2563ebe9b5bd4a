"""Detection explanations: Grad-CAM / Grad-CAM++ per detection for torchvision detectors.

* :class:`DetectionExplainer` / :func:`explain_detection_batch`: maps ``(K, H, W)`` per layer and
  method for the ``K`` detections of an image, from one forward and one batched backward, with
  the detector as installed (no patching); RoI-level maps for Faster R-CNN.
* :func:`render_detection`, :func:`draw_detections`, :func:`detection_heatmap`: pictures.
* :func:`detection_pointing_game`, :func:`detection_scores`: explanation and detection quality.
* :func:`build_detector`: torchvision detectors by name, weights from a file or torchvision.
* :class:`Detectron2Explainer` / :func:`build_detectron2_model`: the same for detectron2 models
  (Faster R-CNN, RetinaNet) when detectron2 is installed (importing this package never imports it).
* :class:`~lightning_cam.detection.module.ShapesDetector`: a detector as a LightningModule for
  the synthetic shapes detection data (import it from :mod:`lightning_cam.detection.module`).

Example:
    >>> import torch, torchvision
    >>> from lightning_cam.detection import DetectionExplainer
    >>> det = torchvision.models.detection.retinanet_resnet50_fpn(
    ...     weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128,
    ...     score_thresh=0.0)
    >>> explainer = DetectionExplainer(det, layer="head.classification_head.conv.0",
    ...                                score_threshold=0.0, top_k=2)
    >>> explainer(torch.rand(3, 96, 128)).map("gradcam++").shape
    torch.Size([2, 96, 128])
"""

from lightning_cam.detection.adapter import (
    ROI_LAYER,
    DetectionExplainer,
    DetectionResult,
    default_detection_layer,
    explain_detection_batch,
    find_detector,
    is_torchvision_detector,
    split_detection_batch,
)
from lightning_cam.detection.detectron2 import (
    Detectron2Explainer,
    build_detectron2_model,
    explain_detectron2_batch,
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
    "DetectionExplainer",
    "DetectionResult",
    "Detectron2Explainer",
    "DetectorMeta",
    "build_detector",
    "build_detectron2_model",
    "configure_detector",
    "default_detection_layer",
    "detection_heatmap",
    "detection_pointing_game",
    "detection_scores",
    "draw_detections",
    "explain_detection_batch",
    "explain_detectron2_batch",
    "find_detector",
    "is_torchvision_detector",
    "layer_label",
    "match_detections",
    "render_detection",
    "split_detection_batch",
]
