"""Explanation-quality metrics: is the saliency map on the object, and does it carry the evidence?

Two families, all pure tensor functions (no hooks, no Lightning):

* **Localisation**, with ground truth (boxes or masks): :func:`pointing_game` (Zhang et al.,
  "Top-down Neural Attention by Excitation Backprop", ECCV 2016) and
  :func:`energy_pointing_game` (Wang et al., "Score-CAM", CVPR-W 2020).
* **Faithfulness**, without ground truth, by querying the model: :func:`average_drop_increase`
  (Chattopadhyay et al., "Grad-CAM++", WACV 2018), :func:`average_gain` (Zhang et al.,
  "Opti-CAM", 2023), :func:`deletion_insertion_auc` (Petsiuk et al., "RISE", BMVC 2018) and
  :func:`road` (Rong et al., "ROAD", ICML 2022: MoRF / LeRF with noisy linear imputation,
  :mod:`lightning_cam.metrics.imputation`).

Quantus (an optional dependency) can call our methods through :func:`quantus_explain_func`.

Conventions shared by every function:

* ``maps`` are saliency maps ``(B, H, W)``, float, aligned pixel for pixel with the images
  ``(B, C, H, W)`` (upsample CAMs to the image first); nominally in ``[0, 1]``. Signals and
  volumes / videos work the same way: maps ``(B, L)`` for inputs ``(B, C, L)``, ``(B, D, H, W)``
  for ``(B, C, D, H, W)``, with masks of the maps' shape ("pixel" then means sample or voxel;
  boxes and the localisation error are 2-D only).
* A box is ``(x1, y1, x2, y2)`` in continuous pixel coordinates: pixel ``(row y, col x)`` covers
  ``[x, x + 1) x [y, y + 1)`` and belongs to the box when its centre ``(x + 0.5, y + 0.5)``
  satisfies ``x1 <= x + 0.5 < x2`` and ``y1 <= y + 0.5 < y2`` (see :func:`boxes_to_masks`).
* Metrics that query the model borrow it: eval mode and ``torch.no_grad()`` for the call, every
  submodule's training flag restored afterwards (also when the model raises), ``param.grad``
  never touched.
* **Class scores**: softmax probabilities of the logits (a ``(B, 1)`` head: the sigmoid, read
  as ``[1 - p, p]``) unless a function's ``raw_scores=True``, which reads the model's own output
  for the class (a logit for an ordinary head; torchcam's convention). :attr:`MetricSpec.score`
  says which one each registered name uses; the names ending in ``_logit`` are the raw ones.

Example:
    >>> import torch
    >>> maps = torch.zeros(1, 4, 4); maps[0, 1, 2] = 1.0
    >>> boxes = torch.tensor([[2.0, 0.0, 4.0, 2.0]])
    >>> pointing_game(maps, boxes=boxes), energy_pointing_game(maps, boxes=boxes)
    (tensor([1.]), tensor([1.]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_cam.engine import borrowed
from lightning_cam.engine.targets import (
    class_log_probabilities,
    extract_logits,
    returns_sigmoid,
    sigmoid_as_logits,
)
from lightning_cam.engine.wrappers import unwrap
from lightning_cam.metrics.interop import quantus_explain_func as quantus_explain_func

ClassIds = int | Sequence[int] | torch.Tensor | None
Baseline = Literal["zero", "blur"]

#: Gaussian blur used by the ``"blur"`` baseline: RISE's evaluation kernel (size 11, sigma 5).
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0


# --------------------------------------------------------------------------------------------
# The metric registry: the one list of metric names (callbacks, CAMWriter, CLIs, summaries)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """What a metric name needs and how it reads.

    Attributes:
        name: The name used by every surface (``metrics=[...]``, manifest columns, tags).
        needs: ``"ground_truth"`` (a mask or a box of the object) or ``"model"`` (extra
            forwards of the model on modified images).
        higher_is_better: For the summaries' arrows.
        score: The class score a model metric reads: ``"probability"`` (softmax, the
            default of every function), ``"logit"`` (the model's raw output for the class,
            ``raw_scores=True``; the name ends in ``_logit``), ``"none"`` (ground-truth metrics).
    """

    name: str
    needs: Literal["ground_truth", "model"]
    higher_is_better: bool
    score: Literal["probability", "logit", "none"] = "none"


#: Every metric, the ones that need ground truth (a mask or a box) first. Add a metric here
#: (and its line in :func:`image_metrics`): the callbacks, ``CAMWriter`` and the CLIs take it.
METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("pointing_game", "ground_truth", True),
        MetricSpec("energy_pointing_game", "ground_truth", True),
        MetricSpec("localisation_error", "ground_truth", False),
        MetricSpec("average_drop", "model", False, "probability"),
        MetricSpec("increase_in_confidence", "model", True, "probability"),
        MetricSpec("deletion_auc", "model", False, "probability"),
        MetricSpec("insertion_auc", "model", True, "probability"),
        MetricSpec("average_gain", "model", True, "probability"),
        MetricSpec("deletion_auc_logit", "model", False, "logit"),
        MetricSpec("insertion_auc_logit", "model", True, "logit"),
        MetricSpec("road_morf", "model", False, "probability"),
        MetricSpec("road_lerf", "model", True, "probability"),
        MetricSpec("road_combined", "model", True, "probability"),
        MetricSpec("road_morf_logit", "model", False, "logit"),
        MetricSpec("road_lerf_logit", "model", True, "logit"),
        MetricSpec("road_combined_logit", "model", True, "logit"),
    )
}
#: The metric names, in :data:`METRICS` order.
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
#: The names that need a mask or a box.
LOCALISATION_METRICS: tuple[str, ...] = tuple(
    n for n, s in METRICS.items() if s.needs == "ground_truth"
)
#: The names that query the model.
FAITHFULNESS_METRICS: tuple[str, ...] = tuple(n for n, s in METRICS.items() if s.needs == "model")
#: Whether a higher value is better, for the summary tables.
HIGHER_IS_BETTER: dict[str, bool] = {n: s.higher_is_better for n, s in METRICS.items()}
#: The class score each metric reads (``"probability"``, ``"logit"`` or ``"none"``).
SCORES: dict[str, str] = {n: s.score for n, s in METRICS.items()}
#: ROAD's default removal percentages (pytorch-grad-cam's; symmetric, so that its
#: "percentile kept" convention removes the same fractions).
ROAD_PERCENTAGES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: Standard deviation of the noise of ROAD's imputation (the paper's, and its peers').
ROAD_NOISE = 0.01


def score_note(names: Sequence[str]) -> str:
    """One sentence saying which class scores the metrics ``names`` read (``""`` when none
    reads the model), for the summaries.

    Example:
        >>> score_note(["road_morf", "road_morf_logit"])
        'Class scores: softmax probabilities; the names ending in _logit: the raw model output.'
    """
    kinds = {METRICS[n].score for n in names if n in METRICS} - {"none"}
    if not kinds:
        return ""
    if kinds == {"logit"}:
        return "Class scores: the raw model output for the class (logits), not probabilities."
    if kinds == {"probability"}:
        return "Class scores: softmax probabilities (not logits)."
    return "Class scores: softmax probabilities; the names ending in _logit: the raw model output."
#: The pointing game's default hit radius: 15 pixels at 224 x 224 (Zhang et al., ECCV 2016).
POINTING_GAME_TOLERANCE_AT_224 = 15.0


def pointing_tolerance(tolerance: float | None, size: Sequence[int], rank: int = 2) -> float:
    """The pointing game's hit radius in pixels for images of ``size`` ``(..., H, W)``.

    ``tolerance`` when given, else the original protocol's 15 pixels at 224 x 224 scaled to the
    images' shorter side (the rule of the callbacks and of ``CAMWriter``). ``rank``: the inputs'
    spatial rank: ``1`` scales by the signal's length ``size[-1]``; ``3`` (volumes, videos) by
    the shorter in-plane side ``min(H, W)``, as for images.

    Example:
        >>> pointing_tolerance(None, (112, 224)), pointing_tolerance(3, (112, 224))
        (7.5, 3.0)
        >>> pointing_tolerance(None, (1, 2, 448), rank=1)
        30.0
    """
    if tolerance is not None:
        return float(tolerance)
    if rank == 1:
        return POINTING_GAME_TOLERANCE_AT_224 * int(size[-1]) / 224.0
    h, w = int(size[-2]), int(size[-1])
    return POINTING_GAME_TOLERANCE_AT_224 * min(h, w) / 224.0


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_maps(maps: object, *, values: Literal["any", "nonneg", "unit"]) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a torch.Tensor (B, H, W), got {type(maps).__name__}")
    if maps.dim() not in (2, 3, 4):
        raise ValueError(
            "maps must have shape (B, H, W) (or (B, L) of signals, (B, D, H, W) of volumes), "
            f"got {tuple(maps.shape)}"
            + (" (squeeze the channel dimension)" if maps.dim() == 5 and maps.shape[1] == 1 else "")
        )
    if not maps.is_floating_point():
        raise ValueError(f"maps must be a floating-point tensor, got dtype {maps.dtype}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps must be finite, found NaN or infinite values")
    if values != "any" and maps.numel() > 0:
        low = float(maps.min())
        if low < 0:
            raise ValueError(
                f"maps must be non-negative (saliency in [0, 1]), got a minimum of {low:g}; "
                "apply ReLU and normalise the maps first"
            )
        if values == "unit":
            high = float(maps.max())
            if high > 1:
                raise ValueError(
                    f"maps must lie in [0, 1] to mask images, got a maximum of {high:g}; "
                    "normalise each map by its maximum first"
                )
    return maps


def _check_images(images: object, maps: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, C, H, W), got {type(images).__name__}")
    if images.dim() not in (3, 4, 5) or not images.is_floating_point():
        raise ValueError(
            f"images must be a floating-point tensor of shape (B, C, H, W) (or (B, C, L), "
            f"(B, C, D, H, W)), got shape {tuple(images.shape)} and dtype {images.dtype}"
        )
    if (images.shape[0], *images.shape[2:]) != tuple(maps.shape):
        squeeze = (
            " (squeeze the maps' channel dimension)"
            if maps.dim() == images.dim() and maps.shape[1] == 1
            else ""
        )
        raise ValueError(
            f"maps shape {tuple(maps.shape)} does not match images shape {tuple(images.shape)}: "
            "expected maps (B, H, W) for images (B, C, H, W) (maps (B, *spatial) for inputs "
            f"(B, C, *spatial)); upsample the maps to the image size{squeeze}"
        )
    return images


def _check_masks(masks: object, maps: torch.Tensor) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor (B, H, W), got {type(masks).__name__}")
    if tuple(masks.shape) != tuple(maps.shape):
        raise ValueError(
            f"masks shape {tuple(masks.shape)} does not match maps shape {tuple(maps.shape)}: "
            "expected both (B, H, W) (or both (B, L), (B, D, H, W))"
            + (
                " (squeeze the maps' channel dimension)"
                if maps.dim() == masks.dim() + 1 and maps.shape[1] == 1
                else ""
            )
        )
    if masks.dtype != torch.bool:
        bad = masks[(masks != 0) & (masks != 1)]
        if bad.numel() > 0:
            raise ValueError(
                f"masks must be boolean or contain only 0 and 1, found the value {bad[0].item()}"
            )
        masks = masks != 0
    return masks.to(maps.device)


def _object_masks(
    maps: torch.Tensor, masks: torch.Tensor | None, boxes: torch.Tensor | None
) -> torch.Tensor:
    if (masks is None) == (boxes is None):
        raise ValueError(
            "exactly one of masks= or boxes= is required, got "
            + ("both" if masks is not None else "neither")
        )
    if masks is not None:
        return _check_masks(masks, maps)
    if maps.dim() != 3:
        raise ValueError(
            f"boxes (x1, y1, x2, y2) locate objects in images; maps of shape "
            f"{tuple(maps.shape)} are {maps.dim() - 1}-D: give masks of the maps' shape instead"
        )
    boxes = _check_boxes(boxes)
    if boxes.shape[0] != maps.shape[0]:
        raise ValueError(
            f"boxes shape {tuple(boxes.shape)} does not match maps shape {tuple(maps.shape)}: "
            "expected one box (B, 4) per map (B, H, W)"
        )
    return boxes_to_masks(boxes, maps.shape[1], maps.shape[2]).to(maps.device)


def _check_boxes(boxes: object) -> torch.Tensor:
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"boxes must be a torch.Tensor (B, 4), got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"boxes must have shape (B, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}"
        )
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError(f"boxes must be real numbers, got dtype {boxes.dtype}")
    if not boxes.is_floating_point():
        boxes = boxes.float()
    if not torch.isfinite(boxes).all():
        raise ValueError("boxes must be finite, found NaN or infinite values")
    flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if flipped.any():
        i = int(flipped.nonzero()[0])
        raise ValueError(
            f"boxes must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, box {i} is "
            f"{boxes[i].tolist()}"
        )
    return boxes


def _check_positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _class_id_tensor(class_ids: ClassIds, batch: int, device: torch.device) -> torch.Tensor | None:
    if class_ids is None:
        return None
    if isinstance(class_ids, bool):
        raise ValueError(f"class_ids must be an int, a sequence of ints or None, got {class_ids!r}")
    if isinstance(class_ids, int):
        return torch.full((batch,), class_ids, dtype=torch.long, device=device)
    ids = torch.as_tensor(class_ids, device=device)
    if ids.dim() != 1 or ids.shape[0] != batch:
        raise ValueError(
            f"class_ids must be an int or have shape ({batch},) (one id per image), "
            f"got shape {tuple(ids.shape)}"
        )
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise ValueError(f"class_ids must be integers, got dtype {ids.dtype}")
    return ids.long()


def _resolve_class_ids(class_ids: torch.Tensor | None, reference: torch.Tensor) -> torch.Tensor:
    """Validate ``(B,)`` ids against ``reference`` ``(B, K)``; ``None`` means its argmax."""
    num_classes = reference.shape[1]
    if class_ids is None:
        return reference.argmax(dim=1)
    class_ids = class_ids.to(reference.device)
    bad = (class_ids < 0) | (class_ids >= num_classes)
    if bad.any():
        raise ValueError(
            f"class_ids must lie in [0, {num_classes}) for a model with {num_classes} classes, "
            f"got {int(class_ids[bad][0])}"
        )
    return class_ids


def _log_probabilities(
    model: nn.Module,
    make_batch: Callable[[int, int], torch.Tensor],
    total: int,
    batch_size: int | None,
) -> torch.Tensor:
    """Run ``model`` on ``total`` inputs built chunk by chunk; return log-softmax ``(total, K)``."""
    return _forward_scores(model, make_batch, total, batch_size)[0]


def _forward_scores(
    model: nn.Module,
    make_batch: Callable[[int, int], torch.Tensor],
    total: int,
    batch_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on ``total`` inputs built chunk by chunk; return ``(log-softmax, raw)``,
    each ``(total, K)`` float32. Raw scores are the model's output (a ``(B, 1)`` head's ``z``
    read as ``[-z, z]``; a sigmoid head's ``logit(p)``).

    The model is borrowed: eval mode and ``torch.no_grad()`` for the call, every submodule's
    training flag restored afterwards, also when the model raises.
    """
    step = total if batch_size is None else batch_size
    chunks: list[torch.Tensor] = []
    raws: list[torch.Tensor] = []
    sigmoid = returns_sigmoid(unwrap(model))  # its (B, 1) output is p, not a logit
    with borrowed(model), torch.no_grad():
        for start in range(0, total, max(step, 1)):
            stop = min(start + step, total)
            logits = extract_logits(model(make_batch(start, stop)))
            if logits.shape[0] != stop - start:
                raise ValueError(
                    f"the model returned logits of shape {tuple(logits.shape)} for a batch of "
                    f"{stop - start} images: expected ({stop - start}, num_classes)"
                )
            # float32 whatever the model's precision: softmax of low-precision logits is coarse.
            if sigmoid and logits.dim() == 2 and logits.shape[1] == 1:
                logits = sigmoid_as_logits(logits)
            chunks.append(class_log_probabilities(logits))
            raw = logits.detach().float()
            raws.append(torch.cat([-raw, raw], dim=1) if raw.shape[1:] == (1,) else raw)
    return torch.cat(chunks), torch.cat(raws)


# --------------------------------------------------------------------------------------------
# Localisation metrics
# --------------------------------------------------------------------------------------------


def boxes_to_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rasterise boxes into boolean masks by the pixel-centre rule.

    Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates (the torchvision / COCO
    convention): pixel ``(row y, col x)`` covers the square ``[x, x + 1) x [y, y + 1)`` and is
    inside the box when its centre lies in the half-open box::

        x1 <= x + 0.5 < x2   and   y1 <= y + 0.5 < y2

    A box with integer edges therefore covers exactly columns ``x1 .. x2 - 1`` and rows
    ``y1 .. y2 - 1``; ``(0, 0, W, H)`` covers the whole image and two boxes sharing an edge never
    share a pixel. Pascal VOC boxes, whose ``x2, y2`` are inclusive pixel indices, need ``+1`` on
    ``x2`` and ``y2``. Parts of a box outside the image are ignored.

    Args:
        boxes: ``(B, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels (float or int).
        height: Mask height ``H``.
        width: Mask width ``W``.

    Returns:
        ``(B, H, W)`` boolean masks on the boxes' device.

    Raises:
        ValueError: Boxes not ``(B, 4)``, not finite, with ``x2 < x1`` or ``y2 < y1``; a
            non-positive size.

    Example:
        >>> boxes_to_masks(torch.tensor([[0.4, 0.0, 2.6, 1.0]]), 2, 4).int()
        tensor([[[1, 1, 1, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    _check_positive_int("height", height)
    _check_positive_int("width", width)
    boxes = _check_boxes(boxes)
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    in_x = (boxes[:, 0:1] <= xs) & (xs < boxes[:, 2:3])  # (B, W)
    in_y = (boxes[:, 1:2] <= ys) & (ys < boxes[:, 3:4])  # (B, H)
    return in_y[:, :, None] & in_x[:, None, :]


def _dilate(masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Pixels within Euclidean distance ``tolerance`` (between pixel centres) of a mask pixel
    (masks ``(B, *spatial)`` of 1 to 3 spatial dimensions: a segment, disk or ball)."""
    radius = int(math.floor(tolerance))
    if radius == 0:
        return masks
    rank = masks.dim() - 1
    offsets = torch.arange(-radius, radius + 1, device=masks.device, dtype=torch.float32)
    grids = torch.meshgrid(*([offsets] * rank), indexing="ij")
    ball = torch.stack([g**2 for g in grids]).sum(0) <= tolerance**2
    conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    # Counts are small integers, exact in float32: a pixel is reached when the count is > 0.
    reached = conv(masks[:, None].float(), ball[None, None].float(), padding=radius)
    return reached[:, 0] > 0.5


def pointing_game(
    maps: torch.Tensor,
    masks: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    tolerance: float = 0,
) -> torch.Tensor:
    """Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016).

    A map *hits* when the location of its maximum lies on the object::

        hit_i = 1  if  min_{p in argmax(map_i), q in object_i} ||p - q||_2 <= tolerance  else 0

    (distances between pixel centres). ``tolerance=0`` asks for the maximum on an object pixel;
    the original protocol uses 15 pixels at 224 x 224 input, implemented by dilating the object
    mask with a disk of that radius. The pointing accuracy is ``hit.mean()``.

    Conventions:

    * **Ties**: when several pixels share the maximal value, the map hits if *any* of them is
      on the (dilated) object.
    * **All-zero map**: a miss (it points nowhere). An empty object mask is a miss too.

    Args:
        maps: ``(B, H, W)`` non-negative saliency maps.
        masks: ``(B, H, W)`` object masks, bool or ``{0, 1}``. Exactly one of ``masks`` / ``boxes``.
        boxes: ``(B, 4)`` object boxes ``(x1, y1, x2, y2)`` in pixels, rasterised with
            :func:`boxes_to_masks`.
        tolerance: Hit radius in pixels, ``>= 0``.

    Returns:
        ``(B,)`` float tensor, ``1.0`` for a hit and ``0.0`` for a miss.

    Raises:
        ValueError: Neither or both of ``masks`` / ``boxes``; shapes that do not agree; masks
            not boolean / ``{0, 1}``; negative or non-finite maps; a negative tolerance.

    Example:
        >>> maps = torch.zeros(1, 4, 4); maps[0, 0, 0] = 1.0
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, 0, 1] = True
        >>> pointing_game(maps, masks), pointing_game(maps, masks, tolerance=1)
        (tensor([0.]), tensor([1.]))
    """
    maps = _check_maps(maps, values="nonneg")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number of pixels >= 0, got {tolerance!r}")
    objects = _dilate(_object_masks(maps, masks, boxes), float(tolerance))
    ones = (1,) * (maps.dim() - 1)
    peak = (
        maps.flatten(1).amax(dim=1).view(-1, *ones) if maps.numel() else maps.new_zeros(0, *ones)
    )
    maximal = maps == peak
    hits = (maximal & objects).flatten(1).any(dim=1) & (peak.flatten() > 0)
    return hits.to(maps.dtype)


def energy_pointing_game(
    maps: torch.Tensor,
    masks: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., "Score-CAM", CVPR Workshops 2020).

    The share of the map's mass on the object::

        energy_i = sum_{p in object_i} map_i(p) / sum_p map_i(p)

    An all-zero map scores ``0``.

    Args:
        maps: ``(B, H, W)`` non-negative saliency maps.
        masks: ``(B, H, W)`` object masks, bool or ``{0, 1}``. Exactly one of ``masks`` / ``boxes``.
        boxes: ``(B, 4)`` object boxes ``(x1, y1, x2, y2)`` in pixels (see :func:`boxes_to_masks`).

    Returns:
        ``(B,)`` float tensor in ``[0, 1]``.

    Raises:
        ValueError: As :func:`pointing_game`.

    Example:
        >>> maps = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])
        >>> energy_pointing_game(maps, boxes=torch.tensor([[1.0, 0.0, 2.0, 1.0]]))
        tensor([0.7500])
    """
    maps = _check_maps(maps, values="nonneg")
    objects = _object_masks(maps, masks, boxes)
    total = maps.flatten(1).sum(dim=1)
    inside = (maps * objects).flatten(1).sum(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, inside / safe, torch.zeros_like(total))


# --------------------------------------------------------------------------------------------
# Faithfulness metrics (query the model)
# --------------------------------------------------------------------------------------------


def average_drop_increase(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: ClassIds,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image drop and increase in confidence (Chattopadhyay et al., "Grad-CAM++", WACV 2018).

    With ``Y_i`` the probability of class ``c`` on image ``i`` and ``O_i`` its probability on the
    explanation-masked image ``images * maps[:, None]``::

        drop_i     = max(0, Y_i - O_i) / Y_i * 100
        increase_i = O_i > Y_i

    Average Drop % is ``mean(drop_i)`` (lower is better), Increase in Confidence % is
    ``100 * mean(increase_i)`` (higher is better); see :func:`average_drop` and
    :func:`increase_in_confidence`.

    ``Y`` and ``O`` are **softmax probabilities**, not logits: the ratio ``(Y - O) / Y`` needs a
    positive score bounded above (a logit can be negative or zero, which flips or breaks the
    ratio), and the softmax makes the scores of different images comparable. The ratio is
    computed as ``1 - exp(log O - log Y)`` from log-softmax, which stays finite when ``Y``
    underflows.

    The model is borrowed: eval mode and ``torch.no_grad()`` for the call, every submodule's
    training flag restored afterwards (also when it raises); ``param.grad`` is never touched.
    Cost: ``2 B`` images, in forwards of at most ``batch_size`` images.

    Args:
        model: Classifier returning logits ``(N, num_classes)``, or an output with a ``logits``
            attribute (or ``"logits"`` key).
        images: ``(B, C, H, W)`` model inputs.
        maps: ``(B, H, W)`` saliency maps in ``[0, 1]`` aligned with ``images``.
        class_ids: The explained class: an ``int`` for all images, ``(B,)`` ids, or ``None`` for
            the class the model predicts on each unmodified image.
        batch_size: Most images per forward; ``None`` for one forward of all ``2 B`` images.

    Returns:
        ``(drop_percent, increase)``: ``(B,)`` float drops in ``[0, 100]`` and ``(B,)`` bools.

    Raises:
        ValueError: Shapes that do not agree, maps outside ``[0, 1]``, bad ``class_ids`` or
            ``batch_size``.
        TypeError: A model output without class logits.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
        >>> drop, inc = average_drop_increase(model, torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), 1)
        >>> drop.shape, inc.dtype
        (torch.Size([2]), torch.bool)
    """
    drop, increase, _ = average_drop_increase_gain(model, images, maps, class_ids, batch_size)
    return drop, increase


def average_drop_increase_gain(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: ClassIds,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image drop, increase and gain in confidence, from the same ``2 B`` forwards.

    With ``Y_i`` and ``O_i`` as in :func:`average_drop_increase` (softmax probabilities of the
    explained class on the image and on ``images * maps[:, None]``), the gain of Opti-CAM
    (Zhang et al., "Opti-CAM: Optimizing saliency maps for interpretability", CVIU 2024,
    arXiv:2301.07002) is::

        gain_i = max(0, O_i - Y_i) / (1 - Y_i) * 100        (0 when Y_i = 1)

    the mirror of the drop: how much of the room left above ``Y_i`` the masked image gains.
    Average Gain % is ``mean(gain_i)``, higher is better (see :func:`average_gain`). Like the
    drop it needs probabilities (``1 - Y`` is meaningless for a logit): no ``raw_scores``.

    Args:
        model: As for :func:`average_drop_increase`.
        images: ``(B, C, H, W)`` model inputs.
        maps: ``(B, H, W)`` saliency maps in ``[0, 1]``.
        class_ids: An ``int``, ``(B,)`` ids, or ``None`` for the predicted classes.
        batch_size: Most images per forward; ``None`` for one forward.

    Returns:
        ``(drop_percent, increase, gain_percent)``: ``(B,)`` floats in ``[0, 100]``, ``(B,)``
        bools, ``(B,)`` floats in ``[0, 100]``.

    Raises:
        ValueError: As :func:`average_drop_increase`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
        >>> d, i, g = average_drop_increase_gain(model, torch.rand(2, 3, 4, 4), torch.ones(2, 4, 4),
        ...                                      class_ids=0)
        >>> d.tolist(), i.tolist(), g.tolist()  # the masked image is the image
        ([0.0, 0.0], [False, False], [0.0, 0.0])
    """
    maps = _check_maps(maps, values="unit")
    images = _check_images(images, maps)
    _check_positive_int("batch_size", batch_size, allow_none=True)
    batch = images.shape[0]
    ids = _class_id_tensor(class_ids, batch, images.device)
    masked_maps = maps.to(device=images.device, dtype=images.dtype)[:, None]

    def make_batch(start: int, stop: int) -> torch.Tensor:
        # Flat index j: image j // 2, unmodified when j is even, masked when odd.
        j = torch.arange(start, stop, device=images.device)
        b = j // 2
        odd = (j % 2 == 1).view(-1, *([1] * (images.dim() - 1)))
        scale = torch.where(odd, masked_maps[b], 1.0)
        return images[b] * scale

    log_probs = _log_probabilities(model, make_batch, 2 * batch, batch_size)
    log_probs = log_probs.view(batch, 2, -1)
    ids = _resolve_class_ids(ids, log_probs[:, 0])
    log_y, log_o = log_probs.gather(2, ids.view(batch, 1, 1).expand(batch, 2, 1)).unbind(1)
    log_y, log_o = log_y.squeeze(1), log_o.squeeze(1)
    drop = 100.0 * (1.0 - torch.exp(log_o - log_y)).clamp(min=0.0)
    room = -torch.expm1(log_y.double())  # 1 - Y, exact near Y = 1
    rise = (log_o.double().exp() - log_y.double().exp()).clamp(min=0.0)
    gain = torch.where(room > 0, 100.0 * rise / room.clamp(min=1e-300), 0.0).clamp(max=100.0)
    return drop, log_o > log_y, gain.to(drop.dtype)


def average_drop(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: ClassIds,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Average Drop % (Grad-CAM++): ``mean_i max(0, Y_i - O_i) / Y_i * 100``; lower is better.

    See :func:`average_drop_increase` for the definitions and arguments; to get both scores,
    call it once instead of this and :func:`increase_in_confidence`.

    Returns:
        0-dim float tensor in ``[0, 100]``.
    """
    return average_drop_increase(model, images, maps, class_ids, batch_size)[0].mean()


def increase_in_confidence(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: ClassIds,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Increase in Confidence % (Grad-CAM++): ``100 * mean_i [O_i > Y_i]``; higher is better.

    See :func:`average_drop_increase` for the definitions and arguments.

    Returns:
        0-dim float tensor in ``[0, 100]``.
    """
    return (
        100.0 * average_drop_increase(model, images, maps, class_ids, batch_size)[1].float().mean()
    )


def average_gain(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: ClassIds,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Average Gain % (Opti-CAM): ``mean_i max(0, O_i - Y_i) / (1 - Y_i) * 100``; higher is
    better. Softmax probabilities; see :func:`average_drop_increase_gain`.

    Returns:
        0-dim float tensor in ``[0, 100]``.
    """
    return average_drop_increase_gain(model, images, maps, class_ids, batch_size)[2].mean()


def blur(
    images: torch.Tensor, kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """Gaussian blur of ``(B, C, H, W)`` images, the ``"blur"`` baseline of deletion/insertion.

    RISE's kernel (size 11, sigma 5), separable, with replicate padding: unlike RISE's zero
    padding it does not darken the borders, and a constant image stays constant. Signals
    ``(B, C, L)`` and volumes / videos ``(B, C, D, H, W)`` are blurred along every axis alike.
    """
    half = kernel_size // 2
    x = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - half
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    channels, rank = images.shape[1], images.dim() - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    out = F.pad(images, (half, half) * rank, mode="replicate")
    for axis in range(rank):  # the last axis first, as the 2-D version did
        shape = [1] * rank
        shape[rank - 1 - axis] = -1
        out = conv(out, k.view(1, 1, *shape).expand(channels, 1, *shape), groups=channels)
    return out


def saliency_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel by decreasing saliency: ``(B, H, W)`` ints, 0 for the most salient.

    Ties keep raster order (row-major: top-left first), by a stable sort.
    """
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=maps.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks.view(maps.shape)


def deletion_insertion_auc(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: ClassIds,
    steps: int = 16,
    baseline: Baseline = "zero",
    batch_size: int | None = None,
    raw_scores: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion AUC (Petsiuk et al., "RISE", BMVC 2018).

    Pixels are ranked by decreasing saliency (ties in raster order). With ``N = H * W`` and
    ``n_k = floor(k N / steps)`` for ``k = 0 .. steps``, let ``T_k`` be the ``n_k`` top-ranked
    pixels (all channels) and ``p(x)`` the softmax probability of class ``c``:

    * deletion: ``x_k = image`` with ``T_k`` replaced by the baseline; ``p`` should fall fast
      (lower AUC is better);
    * insertion: ``x_k = baseline`` with ``T_k`` taken from the image; ``p`` should rise fast
      (higher AUC is better).

    Each AUC is the trapezoid rule over the fraction of pixels ``f_k = n_k / N`` in ``[0, 1]``::

        AUC = sum_{k=1..steps} (f_k - f_{k-1}) * (p(x_{k-1}) + p(x_k)) / 2

    (``f_k = k / steps`` when ``steps`` divides ``N``). Baselines: ``"zero"`` (all zeros) or
    ``"blur"`` (the image under a Gaussian blur of size 11, sigma 5, as in RISE's evaluation).

    Cost is bounded: exactly ``steps + 1`` images per curve, ``2 B (steps + 1)`` in all, in
    forwards of at most ``batch_size`` images holding consecutive steps of consecutive images
    (``None``: one forward). The model is borrowed as in :func:`average_drop_increase`.

    Args:
        model: Classifier returning logits ``(N, num_classes)`` (or with a ``logits`` attribute).
        images: ``(B, C, H, W)`` model inputs.
        maps: ``(B, H, W)`` saliency maps aligned with ``images``; only their order matters.
        class_ids: An ``int``, ``(B,)`` ids, or ``None`` for the class predicted on each
            unmodified image.
        steps: Number of steps of each curve, ``>= 1``.
        baseline: ``"zero"`` or ``"blur"``.
        batch_size: Most images per forward; ``None`` for one forward.
        raw_scores: ``False``: ``p`` is the softmax probability (AUCs in ``[0, 1]``, RISE's).
            ``True``: the model's raw output for the class (a logit; torchcam's convention),
            AUCs in logit units (the metric names ``deletion_auc_logit`` / ``insertion_auc_logit``).

    Returns:
        ``(deletion_auc, insertion_auc)``, each ``(B,)`` float (in ``[0, 1]`` for probabilities).

    Raises:
        ValueError: Shapes that do not agree, non-finite maps, bad ``steps``, ``baseline``,
            ``class_ids`` or ``batch_size``.
        TypeError: A model output without class logits.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
        >>> dele, ins = deletion_insertion_auc(model, torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8),
        ...                                    class_ids=None, steps=4)
        >>> dele.shape, ins.shape
        (torch.Size([2]), torch.Size([2]))
    """
    maps = _check_maps(maps, values="any")
    images = _check_images(images, maps)
    _check_positive_int("steps", steps)
    _check_positive_int("batch_size", batch_size, allow_none=True)
    if baseline not in ("zero", "blur"):
        raise ValueError(f"baseline must be 'zero' or 'blur', got {baseline!r}")
    batch = images.shape[0]
    ids = _class_id_tensor(class_ids, batch, images.device)
    pixels = images.shape[2:].numel()
    ones = (1,) * (images.dim() - 1)
    device = images.device

    base = torch.zeros_like(images) if baseline == "zero" else blur(images)
    ranks = saliency_ranks(maps.to(device))[:, None]  # (B, 1, *spatial)
    counts = torch.arange(steps + 1, device=device) * pixels // steps  # n_k
    per_image = 2 * (steps + 1)

    def make_batch(start: int, stop: int) -> torch.Tensor:
        # Flat index j: image j // per_image, then deletion k = 0..steps, insertion k = 0..steps.
        j = torch.arange(start, stop, device=device)
        b, rest = j // per_image, j % per_image
        insertion, k = rest // (steps + 1), rest % (steps + 1)
        top = ranks[b] < counts[k].view(-1, *ones)
        use_base = top != (insertion == 1).view(-1, *ones)
        return torch.where(use_base, base[b], images[b])

    log_probs, raw = _forward_scores(model, make_batch, batch * per_image, batch_size)
    log_probs = log_probs.view(batch, 2, steps + 1, -1)
    ids = _resolve_class_ids(ids, log_probs[:, 0, 0])  # deletion step 0: the unmodified image
    index = ids.view(batch, 1, 1, 1).expand(batch, 2, steps + 1, 1)
    scores = raw.view_as(log_probs) if raw_scores else log_probs.exp()
    curves = scores.gather(3, index).squeeze(3)  # (B, 2, steps + 1)
    fractions = counts.to(curves.dtype) / pixels
    auc = torch.trapezoid(curves, fractions, dim=-1)
    return auc[:, 0], auc[:, 1]


# --------------------------------------------------------------------------------------------
# ROAD: RemOve And Debias (noisy linear imputation)
# --------------------------------------------------------------------------------------------


def _check_percentages(percentages: object) -> tuple[float, ...]:
    if isinstance(percentages, (str, bytes)) or not isinstance(percentages, Sequence):
        raise ValueError(
            f"percentages must be a sequence of numbers in (0, 100), got {percentages!r}"
        )
    out: list[float] = []
    for p in percentages:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 100:
            raise ValueError(
                f"percentages must lie in (0, 100) (a share of the pixels removed; 100 would "
                f"leave nothing to impute from), got {p!r} in {list(percentages)}"
            )
        out.append(float(p))
    if not out:
        raise ValueError("percentages is empty: give at least one, e.g. ROAD_PERCENTAGES")
    return tuple(out)


def road_masks(maps: torch.Tensor, percentages: Sequence[float]) -> torch.Tensor:
    """The pixels ROAD removes: ``(B, 2 P, H, W)`` bool, MoRF for each percentage then LeRF.

    With ``N = H * W`` and ``n_p = floor(p N / 100)``, MoRF removes the ``n_p`` most salient
    pixels, LeRF the ``n_p`` least salient (ranks of :func:`saliency_ranks`: ties in raster
    order). pytorch-grad-cam thresholds at ``np.percentile`` (ties all on one side, counts
    ``N - ceil((N - 1)(100 - p) / 100)``) and Quantus keeps ``int(N p / 100)`` of an unstable
    argsort: the three agree when ``N`` is a multiple of 100 and the map has no ties.

    Example:
        >>> road_masks(torch.tensor([[[0.9, 0.1], [0.5, 0.3]]]), [50]).int().tolist()
        [[[[1, 0], [1, 0]], [[0, 1], [0, 1]]]]
    """
    percentages = _check_percentages(percentages)
    pixels = maps.shape[1] * maps.shape[2]
    ranks = saliency_ranks(maps)[:, None]  # (B, 1, H, W)
    counts = torch.tensor([math.floor(p * pixels / 100) for p in percentages],
                          device=maps.device).view(1, -1, 1, 1)  # fmt: skip
    return torch.cat([ranks < counts, ranks >= pixels - counts], dim=1)


@dataclass(frozen=True)
class ROADCurves:
    """The scores of ROAD's imputed images (see :func:`road`).

    Attributes:
        percentages: The removed percentages ``p`` (``P`` of them).
        score: ``"probability"`` (softmax) or ``"logit"`` (raw model output for the class).
        original: ``(B,)`` score of the explained class on the unmodified image.
        morf: ``(B, P)`` its score after removing the ``p %`` most relevant pixels (lower is
            better: a faithful map points at the evidence).
        lerf: ``(B, P)`` after removing the ``p %`` least relevant pixels (higher is better).
        morf_kept: ``(B, P)`` bool, the class is still the model's top class (MoRF): the
            paper's accuracy curve is its mean over images, and Quantus's ``ROAD`` its value.
        lerf_kept: ``(B, P)`` bool, the same under LeRF.
    """

    percentages: tuple[float, ...]
    score: str
    original: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor
    morf_kept: torch.Tensor
    lerf_kept: torch.Tensor

    def combined(self) -> torch.Tensor:
        """``(B,)`` ``mean_p (LeRF_p - MoRF_p) / 2``: pytorch-grad-cam's ``ROADCombined``
        (its score differences cancel the original score); higher is better."""
        return (self.lerf - self.morf).mean(dim=1) / 2


def road(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: ClassIds,
    percentages: Sequence[float] = ROAD_PERCENTAGES,
    noise: float = ROAD_NOISE,
    raw_scores: bool = False,
    batch_size: int | None = None,
    seed: int | None = 0,
) -> ROADCurves:
    """ROAD, RemOve And Debias (Rong, Leemann et al., "A Consistent and Efficient Evaluation
    Strategy for Attribution Methods", ICML 2022).

    For each percentage ``p``, the ``p %`` most relevant (MoRF) or least relevant (LeRF) pixels
    (:func:`road_masks`) are removed by noisy linear imputation
    (:func:`lightning_cam.metrics.imputation.noisy_linear_imputation`: each removed pixel the
    weighted mean of its 8 neighbours, 1/6 on the edges and 1/12 on the diagonals, one sparse
    linear system, plus ``noise * N(0, 1)``); the imputation, unlike a constant, leaks no
    information through the shape of the removed region. The model scores the explained class
    ``c`` on each imputed image: MoRF scores should fall fast, LeRF scores stay high.

    Scores: softmax probabilities by default; ``raw_scores=True`` reads the model's own output
    for the class (a logit; pytorch-grad-cam's ``ClassifierOutputTarget`` and torchcam do).
    The paper plots the model's accuracy against ``p``: :attr:`ROADCurves.morf_kept` /
    :attr:`ROADCurves.lerf_kept`, whose means over images are that curve.

    Peers, on the same maps and masks (noise 0): pytorch-grad-cam's
    ``ROADMostRelevantFirst(percentile=100 - p)`` returns ``morf - original`` for its target
    (the same numbers with ``ClassifierOutputSoftmaxTarget``; with ``raw_scores=True`` for
    ``ClassifierOutputTarget``), its ``percentile`` being the share *kept*; its
    ``ROADLeastRelevantFirst(percentile=100 - p)`` gives ``lerf - original``; Quantus's
    ``ROAD`` is MoRF only and returns ``morf_kept``. The removed pixels agree as
    :func:`road_masks` says.

    Cost: ``B (2 P + 1)`` images in forwards of at most ``batch_size``; the imputation of one
    image solves one block-diagonal sparse system for its ``2 P`` masks on the CPU (see
    ``benchmarks/quality.md`` for timings). The model is borrowed as in
    :func:`average_drop_increase`.

    Args:
        model: Classifier returning logits ``(N, num_classes)`` (or with a ``logits`` attribute).
        images: ``(B, C, H, W)`` model inputs (``noise`` is in their units).
        maps: ``(B, H, W)`` saliency maps aligned with ``images``; only their order matters.
        class_ids: An ``int``, ``(B,)`` ids, or ``None`` for the class predicted on each
            unmodified image.
        percentages: Percentages of the pixels removed, each in ``(0, 100)``.
        noise: Standard deviation of the imputation noise (``0``: plain linear imputation).
        raw_scores: Score raw outputs instead of softmax probabilities (see above).
        batch_size: Most images per forward; ``None`` for one forward.
        seed: Seed of the noise (reproducible values); ``None``: torch's global generator.

    Returns:
        A :class:`ROADCurves`.

    Raises:
        ValueError: Shapes that do not agree, non-finite maps, bad ``percentages``, ``noise``,
            ``class_ids`` or ``batch_size``.
        TypeError: A model output without class logits.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
        >>> curves = road(model, torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), None, [25, 50])
        >>> curves.morf.shape, curves.lerf_kept.dtype, curves.score
        (torch.Size([2, 2]), torch.bool, 'probability')
    """
    forward = _road_forward(model, images, maps, class_ids, percentages, noise, batch_size, seed)
    return _road_curves(*forward, raw_scores=raw_scores)


def _road_forward(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: ClassIds,
    percentages: Sequence[float],
    noise: float,
    batch_size: int | None,
    seed: int | None,
) -> tuple[tuple[float, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(percentages, log-softmax, raw, ids)``: scores ``(B, 2 P + 1, K)`` of the unmodified
    image, then MoRF, then LeRF images, for both score kinds from one set of forwards."""
    from lightning_cam.metrics.imputation import noisy_linear_imputation

    maps = _check_maps(maps, values="any")
    images = _check_images(images, maps)
    checked = _check_percentages(percentages)
    _check_positive_int("batch_size", batch_size, allow_none=True)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0, got {noise!r}")
    batch = images.shape[0]
    ids = _class_id_tensor(class_ids, batch, images.device)
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    removed = road_masks(maps.to(images.device), checked)
    imputed = noisy_linear_imputation(images, removed, float(noise), generator)
    stack = torch.cat([images[:, None], imputed], dim=1).flatten(0, 1)  # (B (2P + 1), C, H, W)
    log_probs, raw = _forward_scores(
        model, lambda start, stop: stack[start:stop], stack.shape[0], batch_size
    )
    log_probs = log_probs.view(batch, 2 * len(checked) + 1, -1)
    ids = _resolve_class_ids(ids, log_probs[:, 0])
    return checked, log_probs, raw.view_as(log_probs), ids


def _road_curves(
    percentages: tuple[float, ...],
    log_probs: torch.Tensor,
    raw: torch.Tensor,
    ids: torch.Tensor,
    raw_scores: bool,
) -> ROADCurves:
    batch, images, _ = log_probs.shape
    count = len(percentages)
    scores = raw if raw_scores else log_probs.exp()
    picked = scores.gather(2, ids.view(batch, 1, 1).expand(batch, images, 1))[..., 0]
    kept = log_probs.argmax(dim=2) == ids[:, None]
    return ROADCurves(
        percentages=percentages,
        score="logit" if raw_scores else "probability",
        original=picked[:, 0],
        morf=picked[:, 1 : count + 1],
        lerf=picked[:, count + 1 :],
        morf_kept=kept[:, 1 : count + 1],
        lerf_kept=kept[:, count + 1 :],
    )


# --------------------------------------------------------------------------------------------
# Per-image dispatch: the metrics of one batch of maps, by name
# --------------------------------------------------------------------------------------------


#: The Grad-CAM paper's threshold, a fraction of the map's maximum.
LOCALISATION_THRESHOLD = 0.15
LOCALISATION_IOU = 0.5


def _largest_region_box(binary: np.ndarray) -> tuple[float, float, float, float] | None:
    """Pixel-edge box of the largest 8-connected region of a bool ``(H, W)`` array."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        binary.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return None
    # Largest area; ties: the first label in raster order.
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return float(x), float(y), float(x + w), float(y + h)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes (0 when both are empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def localisation_boxes(
    maps: torch.Tensor, threshold: float = LOCALISATION_THRESHOLD
) -> list[tuple[float, float, float, float] | None]:
    """The Grad-CAM paper's box of each map ``(B, H, W)``: pixels ``>= threshold * max``, largest
    8-connected region, its pixel-edge bounding box (``None`` for an all-zero map)."""
    out: list[tuple[float, float, float, float] | None] = []
    for m in maps.detach().float().cpu().numpy():
        peak = float(m.max()) if m.size else 0.0
        out.append(_largest_region_box(m >= threshold * peak) if peak > 0 else None)
    return out


def localisation_error(
    maps: torch.Tensor,
    boxes: torch.Tensor,
    threshold: float = LOCALISATION_THRESHOLD,
    iou: float = LOCALISATION_IOU,
) -> torch.Tensor:
    """Weakly supervised localisation error (Grad-CAM paper, sec. 4.1), per image.

    ``error_i = 1`` when ``IoU(box(map_i), boxes_i) < iou`` (or the map is all zero), else 0,
    where ``box(map)`` is the bounding box of the largest connected region of
    ``map >= threshold * max(map)``. The paper's top-1 localisation error also counts a wrong
    class as an error; the manifest's ``predicted_class`` and ``label`` give that.

    Args:
        maps: ``(B, H, W)`` non-negative maps at the image resolution.
        boxes: ``(B, 4)`` true boxes ``(x1, y1, x2, y2)`` in pixel-edge coordinates.
        threshold: Fraction of the maximum (0.15 in the paper).
        iou: IoU below which the localisation is an error (0.5).

    Returns:
        ``(B,)`` float tensor of 0 / 1.
    """
    if maps.dim() != 3:
        raise ValueError(
            f"localisation_error compares 2-D boxes; maps of shape {tuple(maps.shape)} are "
            f"{maps.dim() - 1}-D (use pointing_game / energy_pointing_game with masks)"
        )
    found = localisation_boxes(maps, threshold)
    true = boxes.detach().float().cpu().tolist()
    errors = [
        1.0 if f is None or box_iou(f, t) < iou else 0.0
        for f, t in zip(found, true, strict=True)
    ]
    return torch.tensor(errors, dtype=torch.float32)


def image_metrics(
    names: Sequence[str],
    model: nn.Module | None,
    images: torch.Tensor | None,
    maps: torch.Tensor,
    class_ids: torch.Tensor | None,
    masks: torch.Tensor | None,
    boxes: torch.Tensor | None,
    tolerance: float,
    deletion_steps: int = 16,
    batch_size: int | None = None,
    road_percentages: Sequence[float] = ROAD_PERCENTAGES,
) -> dict[str, torch.Tensor]:
    """Per-image values ``(B,)`` of the metrics ``names`` for maps ``(B, H, W)`` in ``[0, 1]``:
    the one dispatch from a name of :data:`METRICS` to its function (callbacks and
    ``CAMWriter``).

    Localisation metrics without a mask or box give NaN (not applicable), and so does the
    localisation error (a 2-D box metric) for signals and volumes. ``model``,
    ``images`` and ``class_ids`` are only read by the metrics that query the model (``class_ids``
    ``None``: the predicted classes). The ROAD names are means over ``road_percentages``
    (:func:`road`, noise :data:`ROAD_NOISE`, seed 0); each name's class score is
    :data:`SCORES`' (``_logit``: raw outputs, else softmax probabilities).

    Raises:
        ValueError: For a name not in :data:`METRICS`, or a metric that queries the model
            without ``model`` and ``images``.
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: expected names from {list(METRICS)}")
    faithful = [n for n in names if METRICS[n].needs == "model"]
    if faithful and (model is None or images is None):
        raise ValueError(f"{faithful} query the model: give model and images")
    out: dict[str, torch.Tensor] = {}
    batch = maps.shape[0]
    nan = torch.full((batch,), math.nan)
    maps = maps.float()
    wanted = set(names)
    if wanted & {"pointing_game", "energy_pointing_game"}:
        gt: dict[str, Any] = {"masks": masks} if masks is not None else {"boxes": boxes}
        have = masks is not None or boxes is not None
        if "pointing_game" in wanted:
            out["pointing_game"] = (
                pointing_game(maps, tolerance=tolerance, **gt).cpu() if have else nan
            )
        if "energy_pointing_game" in wanted:
            out["energy_pointing_game"] = (
                energy_pointing_game(maps, **gt).cpu() if have else nan
            )
    if "localisation_error" in wanted and maps.dim() != 3:  # a 2-D box metric
        out["localisation_error"] = nan
    elif "localisation_error" in wanted:
        if boxes is None and masks is not None:
            boxes = masks_to_boxes(masks)
        out["localisation_error"] = localisation_error(maps, boxes) if boxes is not None else nan
    if model is None or images is None:
        return {k: out[k] for k in names}
    out.update(
        _model_metrics(
            wanted, model, images, maps.to(images.device), class_ids, deletion_steps,
            batch_size, road_percentages,
        )
    )  # fmt: skip
    return {k: out[k] for k in names}


def _model_metrics(
    wanted: set[str],
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: torch.Tensor | None,
    deletion_steps: int,
    batch_size: int | None,
    road_percentages: Sequence[float],
) -> dict[str, torch.Tensor]:
    """The per-image values of the metrics of ``wanted`` that query the model, each family
    from one set of forwards."""
    out: dict[str, torch.Tensor] = {}
    if wanted & {"average_drop", "increase_in_confidence", "average_gain"}:
        drop, inc, gain = average_drop_increase_gain(
            model, images, maps, class_ids, batch_size=batch_size
        )
        out["average_drop"] = drop.float().cpu()
        out["increase_in_confidence"] = 100.0 * inc.float().cpu()
        out["average_gain"] = gain.float().cpu()
    for suffix, raw in (("", False), ("_logit", True)):
        if wanted & {f"deletion_auc{suffix}", f"insertion_auc{suffix}"}:
            dele, ins = deletion_insertion_auc(
                model, images, maps, class_ids, steps=deletion_steps, batch_size=batch_size,
                raw_scores=raw,
            )  # fmt: skip
            out[f"deletion_auc{suffix}"] = dele.float().cpu()
            out[f"insertion_auc{suffix}"] = ins.float().cpu()
    if any(n.startswith("road_") for n in wanted):
        forward = _road_forward(
            model, images, maps, class_ids, road_percentages, ROAD_NOISE, batch_size, 0
        )
        for suffix, raw in (("", False), ("_logit", True)):
            curves = _road_curves(*forward, raw_scores=raw)
            out[f"road_morf{suffix}"] = curves.morf.mean(dim=1).float().cpu()
            out[f"road_lerf{suffix}"] = curves.lerf.mean(dim=1).float().cpu()
            out[f"road_combined{suffix}"] = curves.combined().float().cpu()
    return out


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight pixel-edge boxes ``(B, 4)`` of masks ``(B, H, W)`` (an empty mask: a zero box)."""
    boxes = torch.zeros(masks.shape[0], 4)
    for i, m in enumerate(masks.bool().cpu()):
        ys = torch.nonzero(m.any(dim=1)).flatten()
        xs = torch.nonzero(m.any(dim=0)).flatten()
        if len(xs):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes
