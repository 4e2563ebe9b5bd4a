"""What every zoo shares: the record of a built classifier, its errors and ImageNet's statistics.

The torchvision builders (:mod:`lightning_cam.zoo.classifiers`) and the timm / Hugging Face ones
(:mod:`lightning_cam.zoo.hubs`) both return a :class:`ClassifierMeta`; neither imports the other's
module for it, so the zoo has no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TORCHVISION_NUM_CLASSES",
    "ClassifierMeta",
    "UnknownNetworkError",
    "resolve_device",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: torchvision's classifiers have an ImageNet head by default.
TORCHVISION_NUM_CLASSES = 1000


class UnknownNetworkError(ValueError):
    """The network name is neither a seed network, an alias nor a torchvision classifier."""


@dataclass
class ClassifierMeta:
    """What a model built by :func:`build_classifier` expects and knows.

    Attributes:
        name: The network name as requested (``"shufflenet_v2"``); used in output file names.
        arch: The architecture actually built (torchvision builder name, or
            ``"ShapesClassifier"`` for a lightning-cam checkpoint).
        input_size: Square input side the network is meant for (299 for Inception v3, else 224;
            a checkpoint's own size when it records one).
        mean: Per-channel normalisation mean (RGB, images in [0, 1]).
        std: Per-channel normalisation std.
        num_classes: Number of classes of the head.
        categories: Class names when the weights carry them (torchvision's ImageNet categories
            for a 1000-class torchvision head, a checkpoint's ``class_names``), else ``None``.
        weights: Where the weights came from (a path, or ``"torchvision:<Weights enum>"``).
    """

    name: str
    arch: str
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = TORCHVISION_NUM_CLASSES
    categories: list[str] | None = None
    weights: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def class_name(self, class_id: int) -> str | None:
        """Name of ``class_id`` when categories are known, else ``None``."""
        if self.categories is not None and 0 <= class_id < len(self.categories):
            return self.categories[class_id]
        return None


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and check that it is usable here.

    Raises:
        ValueError: Unparseable device string, or CUDA/MPS requested but not available.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"Invalid device {device!r}: expected e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'."
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device!r} requested but CUDA is not available here.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"Device {device!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {device!r} requested but MPS is not available here.")
    return dev
