"""Detection support of the CAM callbacks: probes, maps, pictures and scores for detectors.

A LightningModule that is or wraps a torchvision detector (see
:func:`lightning_cam.detection.find_detector`) validates on batches of torchvision's detection
format, ``(list of (C, H, W) images, list of target dicts with "boxes" and "labels")``. The
callbacks then keep a probe set of images and targets, explain each probe's top detections with
:class:`~lightning_cam.detection.DetectionExplainer` (one forward and one batched backward per
image) and log one picture per method and layer plus the detection pointing game.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_cam import viz

DetProbe = tuple[torch.Tensor, dict[str, torch.Tensor] | None]


def detector_prefix(pl_module: nn.Module, detector: nn.Module) -> str:
    """The dotted name of ``detector`` inside ``pl_module`` (``""`` when it is the module)."""
    for name, module in pl_module.named_modules():
        if module is detector:
            return name
    return ""


def detector_layer(name: str, prefix: str, detector: nn.Module) -> str | None:
    """``name`` relative to the detector: accepts names relative to the LightningModule
    (``"model.backbone.body.layer4"``) and to the detector (``"backbone.body.layer4"``).
    ``None`` when it names no module of the detector."""
    from lightning_cam.detection import ROI_LAYER

    names = dict(detector.named_modules())
    if prefix and name.startswith(prefix + "."):
        rel = name[len(prefix) + 1 :]
        if rel in names or rel == ROI_LAYER:
            return rel
    if name in names or name == ROI_LAYER:
        return name
    return None


def capture(images: Sequence[torch.Tensor], targets: Sequence[Any] | None, take: int) -> list[
    DetProbe
]:
    """Detached CPU copies of up to ``take`` images and their targets (tensors only)."""
    out: list[DetProbe] = []
    with torch.inference_mode(False):
        for i, image in enumerate(images[:take]):
            target = targets[i] if targets is not None else None
            kept = (
                {
                    k: v.detach().cpu().clone()
                    for k, v in target.items()
                    if isinstance(v, torch.Tensor)
                }
                if isinstance(target, dict)
                else None
            )
            out.append((image.detach().cpu().clone(), kept))
    return out


def _blank(like: np.ndarray, text: str) -> np.ndarray:
    tile = np.full_like(like, 235)
    return viz.draw_label(tile, text) if text else tile


def render_grid(
    probes: Sequence[DetProbe],
    results: Sequence[Any],
    method: str,
    layer: str,
    shown: int,
    tile_size: int,
    alpha: float,
    colormap: str,
) -> np.ndarray:
    """One picture of a method and layer: a row per probe image, the image with all its
    explained detections, then the map of each of its top ``shown`` detections (box drawn)."""
    from lightning_cam.detection.render import _fit, _scaled, detection_heatmap, draw_detections

    rows: list[list[np.ndarray]] = []
    row_labels: list[str] = []
    for (image, target), result in zip(probes, results, strict=False):
        img = viz.to_uint8_image(image.float())
        tile, scale = _fit(img, tile_size)
        res = _scaled(result, scale)
        k = min(len(result), shown)
        truth = len(target["boxes"]) if target is not None and "boxes" in target else None
        row_labels.append(
            f"{len(result)} det" + (f" / {truth} true" if truth is not None else "")
        )
        if len(result) == 0:
            rows.append([viz.draw_label(tile, "no detection above the threshold")])
            continue
        row = [draw_detections(tile, res)]
        row += [detection_heatmap(tile, res, j, method, layer, alpha, colormap) for j in range(k)]
        row += [_blank(tile, "") for _ in range(shown - k)]
        rows.append(row)
    width = max((len(r) for r in rows), default=1)
    cols = (["detections"] + [f"detection {j}" for j in range(shown)])[:width]
    return viz.annotate_sheet(rows, row_labels=row_labels, col_labels=cols)


def pointing_scores(
    probes: Sequence[DetProbe], results: Sequence[Any], method: str, layer: str
) -> dict[str, float]:
    """Pointing game and energy pointing game of the detections matched to a ground-truth box
    (IoU >= 0.5, same label), averaged over every matched detection of every image; NaN when
    no detection matched or the targets carry no boxes."""
    from lightning_cam import metrics as M
    from lightning_cam.detection.metrics import match_detections

    hits: list[torch.Tensor] = []
    energy: list[torch.Tensor] = []
    for (_, target), result in zip(probes, results, strict=False):
        if target is None or "boxes" not in target or len(result) == 0:
            continue
        gt_boxes = target["boxes"].float().reshape(-1, 4)
        gt_labels = target.get("labels")
        match = match_detections(
            result.boxes,
            result.scores,
            gt_boxes,
            result.labels if gt_labels is not None else None,
            gt_labels,
        )
        sel = match >= 0
        if not bool(sel.any()):
            continue
        maps = result.map(method, layer).float()[sel]
        boxes = gt_boxes[match[sel]]
        hits.append(M.pointing_game(maps, boxes=boxes))
        energy.append(M.energy_pointing_game(maps, boxes=boxes))
    if not hits:
        return {"pointing_game": float("nan"), "energy_pointing_game": float("nan")}
    return {
        "pointing_game": float(torch.cat(hits).mean()),
        "energy_pointing_game": float(torch.cat(energy).mean()),
    }
