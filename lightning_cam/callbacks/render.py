"""Rendering for the classification task: labelled grids per method, layer and kind, and the
explanation-quality scalars. Pure presentation: every map comes from the shared computation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lightning_cam.callbacks.options import CAMOptions
from lightning_cam.engine import Explanation
from lightning_cam.engine.target_spec import TargetChoice, parse_target_spec
from lightning_cam.engine.targets import class_probabilities
from lightning_cam.tools import viz


def display_images(images: torch.Tensor, options: CAMOptions) -> list[np.ndarray]:
    """``uint8`` RGB pictures of probe images ``(N, C, H, W)`` (``mean``/``std`` undone)."""
    return [
        viz.to_uint8_image(img if img.dtype == torch.uint8 else img.float(),
                           mean=options.mean, std=options.std)
        for img in images
    ]


def resize_tile(tile: np.ndarray, size: int) -> np.ndarray:
    """Scale ``tile`` so its shorter side is ``size`` (nearest when enlarging: crisp pixels)."""
    import cv2

    h, w = tile.shape[:2]
    scale = size / min(h, w)
    if abs(scale - 1) < 1e-6:
        return tile
    interp = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
    return cv2.resize(
        tile, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp
    )


def tile_labels(
    result: Explanation,
    labels: torch.Tensor | None,
    n: int,
    names: Sequence[str] | None,
    show_cam_class: bool,
    target: str | int = "pred",
) -> list[str]:
    """One caption per shown probe: predicted class and probability (or the explained score
    when the output has no logits), the true label, and the explained class when it is not the
    prediction; for a ``binary`` / ``regression`` ``target`` the spec and its value instead
    (:meth:`~lightning_cam.engine.target_spec.TargetChoice.caption`) and the true value;
    samples with non-finite values (NaN maps) are marked."""
    choice = parse_target_spec(target)
    if not choice.per_class:
        return _score_labels(result, labels, n, choice)

    def nm(i: int) -> str:
        return names[i] if names is not None and 0 <= i < len(names) else str(i)

    probs = class_probabilities(result.logits).cpu() if result.logits is not None else None
    if labels is not None and labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # a binary head's (B, 1) float labels
    out: list[str] = []
    for i in range(n):
        parts = []
        if probs is not None:
            pred = int(probs[i].argmax())
            parts.append(f"pred {nm(pred)} {float(probs[i, pred]):.2f}")
        elif result.scores is not None:
            parts.append(f"score {float(result.scores[i]):.2f}")
        if labels is not None and labels.dim() == 1:
            parts.append(f"true {nm(int(labels[i]))}")
        if result.class_ids is not None and show_cam_class:
            parts.append(f"cam {nm(int(result.class_ids[i]))}")
        nonfinite = getattr(result, "nonfinite", None)
        if nonfinite is not None and bool(nonfinite[i]):
            # NaN maps draw as empty: say so, never let them read as "no evidence"
            parts = ["NON-FINITE: no map", *parts]
        out.append(" | ".join(parts))
    return out


def _score_labels(
    result: Explanation, labels: torch.Tensor | None, n: int, choice: TargetChoice
) -> list[str]:
    """Captions of a ``binary`` / ``regression`` target: ``"binary p=0.73 | true 1"``."""
    if labels is not None and labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    out: list[str] = []
    for i in range(n):
        parts = [choice.caption(float(result.scores[i]))] if result.scores is not None else []
        if labels is not None and labels.dim() == 1:
            value = float(labels[i])
            parts.append(f"true {int(value)}" if value.is_integer() else f"true {value:.2f}")
        nonfinite = getattr(result, "nonfinite", None)
        if nonfinite is not None and bool(nonfinite[i]):
            parts = ["NON-FINITE: no map", *parts]
        out.append(" | ".join(parts))
    return out


def kind_tile(
    options: CAMOptions, kind: str, base: np.ndarray, cams: torch.Tensor, result: Explanation,
    method: str, layer: str, i: int,
) -> np.ndarray:  # fmt: skip
    """Row ``i``'s tile of picture ``kind`` (``heatmap``, ``overlay`` on its display image
    ``base``, ``guided_backprop``, ``guided_gradcam``), resized to ``options.tile_size``."""
    if kind == "heatmap":
        tile = viz.colorize(cams[i], colormap=options.colormap)
    elif kind == "overlay":
        tile = viz.overlay(base, cams[i], alpha=options.alpha, colormap=options.colormap)
    elif kind == "guided_backprop":
        assert result.guided is not None
        tile = viz.gradients_to_image(result.guided[i].cpu())
    else:
        tile = viz.gradients_to_image(result.guided_cams[method][layer][i].cpu())
    return resize_tile(tile, options.tile_size)


def render_grids(
    options: CAMOptions,
    probes: Mapping[str, torch.Tensor],
    result: Explanation,
    layers: Sequence[str],
    names: Sequence[str] | None,
) -> dict[str, np.ndarray]:
    """The grid pictures (``uint8`` HWC) keyed by tag ``{method}/{layer}/{kind}``."""
    n = min(options.num_samples, probes["image"].shape[0])
    base = display_images(probes["image"][:n], options)
    labels = tile_labels(
        result, probes.get("label"), n, names, options.target != "pred", options.target
    )
    ncol = min(n, 4) if n > 0 else 1
    pictures: dict[str, np.ndarray] = {}
    for method in options.methods:
        for layer in layers:
            cams = result.cams[method][layer][:n].cpu()
            for kind in options.kinds:
                tiles = []
                for i in range(n):
                    tile = kind_tile(options, kind, base[i], cams, result, method, layer, i)
                    if labels[i]:
                        tile = viz.draw_label(tile, labels[i])
                    tiles.append(tile)
                pictures[f"{method}/{layer}/{kind}"] = viz.make_grid(tiles, ncol=ncol)
    return pictures


def pointing_tolerance(options: CAMOptions, images: torch.Tensor) -> float:
    """The pointing game's hit radius in pixels (:func:`lightning_cam.metrics.pointing_tolerance`:
    ``pointing_game_tolerance``, or 15 pixels at 224 x 224 scaled to the images' shorter side;
    for signals ``(B, C, L)`` to the length ``L``)."""
    from lightning_cam import metrics as M

    return M.pointing_tolerance(
        options.pointing_game_tolerance, images.shape, rank=images.dim() - 2
    )


class MetricScalars:
    """Explanation-quality scalars of the classification task, keyed by ``{method}/{layer}/
    {metric}``: the means of :func:`lightning_cam.metrics.image_metrics` (the dispatch
    ``CAMWriter`` uses too) over the probes."""

    def __call__(
        self,
        options: CAMOptions,
        probes: Mapping[str, torch.Tensor],
        token: Any,
        model: Any,
        images: torch.Tensor,
        result: Any,
        layers: Sequence[str],
    ) -> dict[str, float]:
        """Scalars for ``result``; ``model`` answers logits (faithfulness metrics) and
        ``images`` are its inputs (on its device)."""
        values, _ = self.per_sample(options, probes, model, images, result, layers)
        out = {tag: float(v.float().mean()) for tag, v in values.items()}
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def per_sample(
        self,
        options: CAMOptions,
        probes: Mapping[str, torch.Tensor],
        model: Any,
        images: torch.Tensor,
        result: Any,
        layers: Sequence[str],
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The per-sample values ``(N,)`` behind :meth:`__call__`'s means, keyed by tag, and
        which probes they are of: ``keep`` ``(B,)`` bool (``None``: all). Samples with
        non-finite values (a diverged model, a NaN pixel) have NaN maps, not explanations:
        they are left out (no values at all when none is left)."""
        from lightning_cam import metrics as M

        out: dict[str, torch.Tensor] = {}
        if not options.metrics:
            return out, None
        masks = probes.get("mask")
        boxes = probes.get("box")
        tolerance = pointing_tolerance(options, probes["image"])
        gt: dict[str, torch.Tensor] = {}
        if masks is not None and masks.dim() == images.dim() - 1:
            gt["masks"] = masks.bool()
        elif boxes is not None and images.dim() == 4 and boxes.dim() == 2 and boxes.shape[1] == 4:
            gt["boxes"] = boxes.float()
        keep: torch.Tensor | None = None
        nonfinite = getattr(result, "nonfinite", None)
        if nonfinite is not None and bool(nonfinite.any()):
            keep = ~nonfinite.cpu()
            if not bool(keep.any()):
                return out, keep

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t if keep is None else t[keep.to(t.device)]

        images = rows(images)
        dev = images.device
        gt = {k: rows(v).to(dev) for k, v in gt.items()}
        class_ids = None if result.class_ids is None else rows(result.class_ids)
        names = [
            m for m in options.metrics
            if (M.METRICS[m].needs == "ground_truth" and gt)
            or (M.METRICS[m].needs == "model" and class_ids is not None)
        ]  # fmt: skip
        if not names:
            return out, keep
        for method in options.methods:
            for layer in layers:
                maps = rows(result.cams[method][layer].float())
                values = M.image_metrics(
                    names, model, images, maps.to(dev),
                    None if class_ids is None else class_ids.to(dev),
                    gt.get("masks"), gt.get("boxes"), tolerance=tolerance,
                )  # fmt: skip
                for name, v in values.items():
                    out[f"{method}/{layer}/{name}"] = v.detach().cpu()
        return out, keep
