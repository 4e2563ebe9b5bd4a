"""lightning-cam: the CAM methods of the field (Grad-CAM, Grad-CAM++, HiRes-CAM, XGrad-CAM,
Layer-CAM, Eigen-CAM, CAM, Score-CAM, Ablation-CAM, Smooth Grad-CAM++ ...), guided backprop and
guided Grad-CAM for PyTorch models, as PyTorch Lightning callbacks and standalone tools.

One class per registered method (:data:`lightning_cam.methods.METHODS`), generated from the
registry: ``lc.LayerCAM``, ``lc.ScoreCAM`` ...

Example:
    >>> import torch, torchvision
    >>> import lightning_cam as lc
    >>> model = torchvision.models.resnet18(weights=None)
    >>> lc.GradCAM(model, "layer4")(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 64, 64])
"""

from lightning_cam.cam import (
    CAM_CLASSES,
    GuidedBackprop,
    GuidedGradCAM,
    explain,
    explain_segmentation,
)
from lightning_cam.engine import Explainer, Explanation
from lightning_cam.layers import default_layer, get_layer
from lightning_cam.methods import METHODS
from lightning_cam.targets import ClassTarget, SegmentationTarget

__version__ = "0.1.0"

# GradCAM, GradCAMPlusPlus, HiResCAM, ..., ScoreCAM: one class per registered method.
globals().update(CAM_CLASSES)

# Lightning-dependent parts load on first use, so that the engine imports fast on its own.
_LAZY = {
    "CAMCallback": "lightning_cam.callbacks",
    "GradCAMCallback": "lightning_cam.callbacks",
    "GradCAMPlusPlusCallback": "lightning_cam.callbacks",
    "CAMWriter": "lightning_cam.predict",
    "explain_classifier": "lightning_cam.explainers",
    "ClassifierExplainer": "lightning_cam.explainers",
    "ClassifierExplanation": "lightning_cam.explainers",
    "ImageFailure": "lightning_cam.explainers",
    "build_classifier": "lightning_cam.zoo",
    "ClassifierMeta": "lightning_cam.zoo",
    "PretrainedWeightsUnavailableError": "lightning_cam.zoo",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_cam' has no attribute {name!r}")


__all__ = [
    "ClassifierExplainer",
    "ClassifierExplanation",
    "ClassifierMeta",
    "ImageFailure",
    "PretrainedWeightsUnavailableError",
    "build_classifier",
    "explain_classifier",
    "CAMCallback",
    "CAMWriter",
    "GradCAMCallback",
    "GradCAMPlusPlusCallback",
    "ClassTarget",
    "Explainer",
    "Explanation",
    "GuidedBackprop",
    "GuidedGradCAM",
    "METHODS",
    "default_layer",
    "explain",
    "explain_segmentation",
    "get_layer",
    "SegmentationTarget",
    *CAM_CLASSES,
]
