"""Finding detectors: in a module tree, in a batch, and their default layer.

* :func:`is_torchvision_detector`, :func:`find_detector`, :func:`find_wrapped`: the detector
  inside a LightningModule (or any wrapper).
* :func:`split_detection_batch`: ``(images, targets)`` of torchvision-style detection batches.
* :func:`default_detection_layer`: the backbone's last stage.

Example:
    >>> import torch, torchvision
    >>> det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
    ...     weights=None, weights_backbone=None, num_classes=3)
    >>> find_detector(torch.nn.Sequential(det)) is det, default_detection_layer(det)
    (True, 'backbone.body.16')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "default_detection_layer",
    "find_detector",
    "find_wrapped",
    "is_torchvision_detector",
    "split_detection_batch",
]


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
