"""What the torchvision and detectron2 detection explainers share: the selection of detections,
image checks, maps brought back onto the image, RoI maps pasted into their boxes, and the base
class that builds :class:`~lightning_cam.detection.result.DetectionResult` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lightning_cam.detection.result import DetectionResult
from lightning_cam.methods import (
    DEFAULT_DETECTION_METHODS,
    METHODS,
    method_name,
    normalize_maps,
)

__all__ = [
    "DEFAULT_METHODS",
    "DetectionExplainerBase",
    "check_image",
    "check_selection",
    "detection_methods",
    "paste_roi_maps",
    "select_detections",
    "to_original",
]

#: Methods the detection explainers compute when none are given
#: (:data:`lightning_cam.methods.DEFAULT_DETECTION_METHODS`, under its historical name here).
DEFAULT_METHODS: tuple[str, ...] = DEFAULT_DETECTION_METHODS


def to_original(
    cams: torch.Tensor, resized: tuple[int, int], padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Layer-resolution maps ``(K, h, w)`` over the padded canvas -> ``(K, H, W)`` of the image."""
    if cams.shape[0] == 0:
        return cams.new_zeros((0, *size), dtype=torch.float32)
    m = F.interpolate(cams[:, None].float(), size=padded, mode="bilinear", align_corners=False)
    m = m[..., : resized[0], : resized[1]]
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(m.clamp_min(0))


def paste_roi_maps(maps: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
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


def detection_methods() -> list[str]:
    """The registered methods that explain any differentiable score, hence detections: all but
    those that explain classes only (re-scoring other inputs, or reading a classifier's
    weights; their registry entry says ``needs_class_target``)."""
    return [n for n, m in METHODS.items() if not getattr(m, "needs_class_target", False)]


def check_selection(methods: str | Sequence[str], score_threshold: Any, top_k: Any) -> list[str]:
    """The canonical, de-duplicated method names; raises on bad methods, threshold or top_k.

    Raises:
        ValueError: An unknown method, one that explains classes only (not detections), no
            method, a bad ``top_k``.
        TypeError: A ``score_threshold`` that is not a number.
    """
    if isinstance(methods, str):
        methods = (methods,)
    names = list(dict.fromkeys(method_name(m) for m in methods))
    usable = detection_methods()
    if not names:
        raise ValueError(
            f"methods is empty; give at least one of {usable} (default: {list(DEFAULT_METHODS)})"
        )
    classes_only = [n for n in names if n not in usable]
    if classes_only:
        raise ValueError(
            f"methods {classes_only} explain classes only (they re-score other inputs or read "
            f"a classifier's weights), not detections; use any of {usable}."
        )
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)):
        raise TypeError(f"score_threshold must be a number, got {score_threshold!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    return names


def select_detections(scores: torch.Tensor, threshold: float, top_k: int) -> torch.Tensor:
    """Indices of the ``top_k`` highest scores ``>= threshold``, by decreasing score."""
    order = torch.argsort(scores, descending=True, stable=True)
    return order[scores[order] >= threshold][:top_k]


def check_image(image: Any, channels: int | None = None) -> torch.Tensor:
    """``image`` as one ``(C, H, W)`` float tensor (a leading batch of one dropped).

    Args:
        image: The image to check.
        channels: The channels the detector takes; ``None``: any number (the image's own).
            torchvision's detectors read theirs from the images, not from
            ``transform.image_mean``, whose length may differ (torchgeo sets ``[0.0]``).

    Raises:
        TypeError, ValueError: Not a floating-point ``(C, H, W)`` tensor.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor (C, H, W), got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    expected = channels if channels is not None else "C"
    channels_last = image.dim() == 3 and (
        image.shape[-1] == channels
        if channels is not None
        else image.shape[-1] in (1, 3, 4) and image.shape[0] > 4
    )
    if (
        image.dim() != 3
        or (channels is not None and image.shape[0] != channels)
        or channels_last
        or min(image.shape) < 1
    ):
        raise ValueError(
            f"image must have shape ({expected}, H, W), got {tuple(image.shape)}"
            + (" (channels last? use image.permute(2, 0, 1))" if channels_last else "")
        )
    if not image.is_floating_point():
        raise TypeError(
            f"image must be a floating-point tensor in [0, 1], got dtype {image.dtype}; "
            "use image.float() / 255 (the detector normalises it itself)."
        )
    return image


class DetectionExplainerBase:
    """What the torchvision and detectron2 explainers share: results and their maps.

    Subclasses set ``methods``, ``layers``, ``class_names``, ``roi_cams`` and ``roi_layer`` (the
    results' key of RoI-level maps) and define ``__call__(image) -> DetectionResult``.
    """

    methods: list[str]
    layers: list[str]
    class_names: list[str] | None
    roi_cams: bool
    roi_layer: str
    _prefix: str = "detector."  # the detector's name inside the explained wrapper module

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
                n: to_original(explanation.cams[m][self._prefix + n], resized, padded, size).cpu()
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
            result.maps[m][self.roi_layer] = paste_roi_maps(
                cams[m].float().cpu(), result.proposals, size
            )
