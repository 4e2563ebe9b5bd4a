"""Pictures of detection explanations: predicted boxes, per-detection heatmaps, one sheet.

All functions take the image as ``uint8`` ``(H, W, 3)`` (or anything
:func:`lightning_cam.tools.viz.to_uint8_image` accepts) and return new ``uint8`` RGB images.

Example:
    >>> # result = DetectionExplainer(detector)(image_tensor)
    >>> # sheet = render_detection(image_uint8, result)   # rows: detections; columns: maps
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from lightning_cam.detection.result import ROI_KEYS, DetectionResult
from lightning_cam.methods import method_name
from lightning_cam.tools import viz

__all__ = [
    "detection_heatmap",
    "draw_detections",
    "fit_tile",
    "layer_label",
    "render_detection",
    "scaled_result",
]


def layer_label(layer: str) -> str:
    """A short name of a detector layer for captions (``body.layer4``, ``cls_head.conv.0``)."""
    if layer in ROI_KEYS:
        return "RoI"
    for prefix, short in (("backbone.body.", "body."), ("head.classification_head.", "cls_head."),
                          ("head.regression_head.", "reg_head."), ("backbone.", "")):
        if layer.startswith(prefix):
            return short + layer[len(prefix):]
    return layer


def _captions(result: DetectionResult) -> list[str]:
    return [f"{k}: {name}" for k, name in enumerate(result.label_names())]


def draw_detections(
    image: viz.ArrayLike, result: DetectionResult, indices: Sequence[int] | None = None
) -> np.ndarray:
    """The image with the detections' boxes, ``"k: name"`` and scores (``indices``: a subset)."""
    idx = list(range(len(result))) if indices is None else [int(i) for i in indices]
    caps = _captions(result)
    return viz.draw_boxes(
        image, result.boxes[idx], labels=[caps[i] for i in idx], scores=result.scores[idx],
    )


def detection_heatmap(
    image: viz.ArrayLike,
    result: DetectionResult,
    k: int,
    method: str | None = None,
    layer: str | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
    draw_box: bool = True,
) -> np.ndarray:
    """The map of detection ``k`` over the image, with its box (and the proposal box of RoI
    maps, in white)."""
    out = viz.overlay(image, result.map(method, layer)[k], alpha=alpha, colormap=colormap)
    if draw_box:
        key = result.layers[0] if layer is None else layer
        if key in ROI_KEYS and result.proposals is not None and len(result.proposals) > k:
            out = viz.draw_boxes(out, result.proposals[k : k + 1], color=(255, 255, 255))
        out = draw_detections(out, result, [k])
    return out


def fit_tile(image: np.ndarray, tile_size: int | None) -> tuple[np.ndarray, float]:
    """``image`` resized so that its longest side is ``tile_size`` (``None``: unchanged), and
    the scale factor applied."""
    if tile_size is None:
        return image, 1.0
    h, w = image.shape[:2]
    scale = tile_size / max(h, w)
    if abs(scale - 1.0) < 1e-6:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), scale


def scaled_result(result: DetectionResult, scale: float) -> DetectionResult:
    """``result`` with its boxes and proposals scaled by ``scale`` (for a resized image; the maps
    are shared, drawn at any size)."""
    if scale == 1.0:
        return result
    return DetectionResult(
        boxes=result.boxes * scale, labels=result.labels, scores=result.scores, maps=result.maps,
        image_size=result.image_size, layers=result.layers, methods=result.methods,
        class_names=result.class_names,
        proposals=None if result.proposals is None else result.proposals * scale,
        attention_maps=result.attention_maps,
    )


def render_detection(
    image: viz.ArrayLike,
    result: DetectionResult,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    max_detections: int | None = None,
    tile_size: int | None = 256,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> np.ndarray:
    """One picture of an image's detections and their maps.

    A row per detection: the image with that detection's box, then its map for every layer and
    method, labelled (columns: ``"detection"``, ``"body.layer4 gradcam"``...; rows:
    ``"k: name"``). Without detections: the image, captioned so.

    Args:
        image: The explained image, ``uint8`` ``(H, W, 3)`` of the result's ``image_size``.
        result: Its :class:`~lightning_cam.detection.DetectionResult`.
        methods: Methods to show (default: all of the result's).
        layers: Layers to show (default: all).
        max_detections: Rows at most (the highest scores first).
        tile_size: Longest side of every tile (small images are enlarged so that captions stay
            legible); ``None`` keeps the image size.
        alpha: Heatmap weight of the overlays.
        colormap: A :data:`lightning_cam.tools.viz.COLORMAPS` name.

    Returns:
        ``uint8`` ``(H', W', 3)`` sheet.

    Raises:
        ValueError: The image's size is not the result's, unknown method or layer.
    """
    img = viz.to_uint8_image(image)
    if tuple(img.shape[:2]) != tuple(result.image_size):
        raise ValueError(
            f"image is {img.shape[1]}x{img.shape[0]} but the result is for "
            f"{result.image_size[1]}x{result.image_size[0]}"
        )
    ms = [method_name(m) for m in (methods if methods is not None else result.methods)]
    ls = list(layers) if layers is not None else list(result.layers)
    for m in ms:
        for layer in ls:
            result.map(m, layer)  # raises on unknown names
    tile, scale = fit_tile(img, tile_size)
    res = scaled_result(result, scale)
    count = len(result)
    if max_detections is not None:
        count = min(count, max(0, int(max_detections)))
    if count == 0:
        return viz.draw_label(tile, "no detection above the threshold")
    rows = []
    for k in range(count):
        row = [draw_detections(tile, res, [k])]
        for layer in ls:
            for m in ms:
                row.append(detection_heatmap(tile, res, k, m, layer, alpha, colormap))
        rows.append(row)
    cols = ["detection"] + [f"{layer_label(layer)} {m}" for layer in ls for m in ms]
    labels = [f"{k}: {name} {float(result.scores[k]):.2f}"
              for k, name in enumerate(result.label_names()[:count])]
    return viz.annotate_sheet(rows, row_labels=labels, col_labels=cols)


# The names lightning_cam.callbacks.detection imports (until it uses the public ones).
_fit = fit_tile
_scaled = scaled_result
