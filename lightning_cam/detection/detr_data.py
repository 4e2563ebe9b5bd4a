"""Hugging Face's detection batches and torchvision's, both ways, for the DETR family.

A LightningModule fine-tuning a transformers DETR (the Hugging Face object-detection recipe)
feeds its image processor's output: ``{"pixel_values": (B, 3, H, W)`` normalised and padded,
``"pixel_mask": (B, H, W)``, ``"labels": [{"class_labels": (N,), "boxes": (N, 4)}, ...]}``,
boxes ``(cx, cy, w, h)`` normalised by the padded canvas. The explainers and callbacks take
torchvision's format, images in ``[0, 1]`` and targets ``{"boxes": xyxy pixels, "labels"}``:
:func:`split_hf_detection_batch` undoes the processor's normalisation and padding, and
:func:`hf_detection_labels` writes torchvision targets as a DETR's loss reads them.

Example:
    >>> import torch
    >>> t = {"boxes": torch.tensor([[8.0, 16.0, 40.0, 48.0]]), "labels": torch.tensor([2])}
    >>> hf_detection_labels([t], (64, 64), label_offset=1)[0]["boxes"]
    tensor([[0.3750, 0.5000, 0.5000, 0.5000]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["hf_detection_labels", "split_hf_detection_batch"]

Targets = list[dict[str, torch.Tensor]]


def _unnormalise(pixels: torch.Tensor, processor: Any) -> torch.Tensor:
    """``pixel_values`` back to ``[0, 1]`` images with the processor's own settings."""
    x = pixels.detach().float()
    if getattr(processor, "do_normalize", True):
        mean = torch.as_tensor(getattr(processor, "image_mean", (0.485, 0.456, 0.406)))
        std = torch.as_tensor(getattr(processor, "image_std", (0.229, 0.224, 0.225)))
        if mean.numel() not in (1, x.shape[1]) or std.numel() not in (1, x.shape[1]):
            raise ValueError(
                f"the image processor's image_mean / image_std have {mean.numel()} / "
                f"{std.numel()} entries for {x.shape[1]}-channel pixel_values"
            )
        shape = (1, -1, 1, 1)
        x = x * std.to(x).reshape(shape) + mean.to(x).reshape(shape)
    if getattr(processor, "do_rescale", True):
        x = x / (float(getattr(processor, "rescale_factor", 1 / 255)) * 255.0)
    return x.clamp(0.0, 1.0)


def _unpadded(mask: torch.Tensor | None, size: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` of an image's content in the padded canvas (top-left, as DETR pads)."""
    if mask is None:
        return size
    rows, cols = mask.bool().any(-1), mask.bool().any(-2)
    return int(rows.sum()), int(cols.sum())


def _targets(labels: Any, canvas: tuple[int, int], count: int) -> Targets | None:
    """HF labels -> torchvision targets (boxes xyxy in the canvas' pixels), or ``None``."""
    if not (isinstance(labels, Sequence) and len(labels) == count and all(
            isinstance(t, Mapping) and isinstance(t.get("boxes"), torch.Tensor)
            and isinstance(t.get("class_labels"), torch.Tensor) for t in labels)):
        return None
    h, w = canvas
    out = []
    for t in labels:
        b = t["boxes"].detach().float().reshape(-1, 4).cpu()
        xyxy = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
        out.append({"boxes": xyxy * torch.tensor([w, h, w, h], dtype=torch.float32),
                    "labels": t["class_labels"].detach().long().reshape(-1).cpu()})
    return out


def split_hf_detection_batch(
    batch: Any, processor: Any,
) -> tuple[list[torch.Tensor], Targets | None] | None:
    """``(images, targets)`` of a Hugging Face detection batch, ``None`` when it is none.

    Args:
        batch: A mapping with ``pixel_values`` ``(B, 3, H, W)`` (the image processor's output,
            a ``BatchFeature`` or a dict), optionally ``pixel_mask`` ``(B, H, W)`` and
            ``labels`` (one dict per image with ``class_labels`` and normalised ``boxes``).
        processor: The image processor that made the batch (its ``image_mean``, ``image_std``,
            ``rescale_factor`` undo the normalisation).

    Returns:
        ``[0, 1]`` float images ``(3, h, w)`` cropped to their unpadded content (the
        processor's resized size), and targets with ``boxes`` xyxy in those pixels and
        ``labels`` the ``class_labels`` (the model's class ids); targets ``None`` without
        labels.

    Raises:
        ValueError: The processor's mean / std do not fit the channels.
    """
    if not isinstance(batch, Mapping):
        return None
    pixels = batch.get("pixel_values")
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
        return None
    mask = batch.get("pixel_mask")
    mask = mask if isinstance(mask, torch.Tensor) and mask.shape[0] == pixels.shape[0] else None
    full = _unnormalise(pixels, processor)
    canvas = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    images = []
    for i in range(pixels.shape[0]):
        h, w = _unpadded(None if mask is None else mask[i], canvas)
        images.append(full[i, :, :h, :w])
    return images, _targets(batch.get("labels"), canvas, len(images))


def hf_detection_labels(
    targets: Sequence[Mapping[str, torch.Tensor]], size: tuple[int, int], label_offset: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """torchvision-style targets of images of ``size`` ``(H, W)`` as a DETR's loss reads them:
    ``class_labels`` (``labels - label_offset``: 1 where the data number classes from 1 with
    0 the background, as torchvision's) and ``boxes`` ``(cx, cy, w, h) / (W, H, W, H)``."""
    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    out = []
    for t in targets:
        b = t["boxes"].detach().float().reshape(-1, 4).cpu() / scale
        boxes = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)
        out.append({"class_labels": t["labels"].detach().long().reshape(-1).cpu() - label_offset,
                    "boxes": boxes})
    return out
