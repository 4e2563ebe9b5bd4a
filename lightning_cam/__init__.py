"""lightning-cam: Grad-CAM, Grad-CAM++, guided backprop and guided Grad-CAM for PyTorch models,
as PyTorch Lightning callbacks and standalone tools.

Example:
    >>> import torch, torchvision
    >>> import lightning_cam as lc
    >>> model = torchvision.models.resnet18(weights=None)
    >>> lc.GradCAM(model, "layer4")(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 64, 64])
"""

from lightning_cam.cam import GradCAM, GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM, explain
from lightning_cam.engine import Explainer, Explanation
from lightning_cam.layers import default_layer, get_layer
from lightning_cam.targets import ClassTarget

__version__ = "0.1.0"

__all__ = [
    "ClassTarget",
    "Explainer",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "default_layer",
    "explain",
    "get_layer",
]
