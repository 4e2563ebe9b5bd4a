"""Dataset-level evaluation of explanations: per-image scores, and their means synced across ranks.

Per image and per (method, layer) map, as columns of the manifest:

* ``pointing_game``, ``energy_pointing_game`` (:mod:`lightning_cam.metrics`), against the
  object mask, else the box;
* ``localisation_error``: the weakly supervised localisation of the Grad-CAM paper (Selvaraju
  et al., ICCV 2017, sec. 4.1): threshold the map at 15 % of its maximum, take the bounding box
  of the largest connected region, and count an error when its IoU with the true box is below
  0.5 (see :func:`localisation_error`);
* ``average_drop`` (percent) and ``increase_in_confidence`` (0 or 100) of the Grad-CAM++ paper;
* ``deletion_auc`` and ``insertion_auc`` of RISE.

The dataset means are kept by :class:`DatasetMeans`, a ``torchmetrics.Metric`` whose states (sums
and counts) are reduced across processes by torchmetrics (``dist_reduce_fx="sum"``) when
``compute()`` is called.

Example:
    >>> import torch
    >>> maps = torch.zeros(1, 8, 8); maps[0, 2:4, 2:4] = 1.0
    >>> localisation_error(maps, torch.tensor([[2.0, 2.0, 4.0, 4.0]]))
    tensor([0.])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from lightning_cam import metrics as M

#: Every metric name, the ones that need ground truth (a mask or a box) first.
LOCALISATION_METRICS = ("pointing_game", "energy_pointing_game", "localisation_error")
FAITHFULNESS_METRICS = (
    "average_drop",
    "increase_in_confidence",
    "deletion_auc",
    "insertion_auc",
)
METRIC_NAMES = LOCALISATION_METRICS + FAITHFULNESS_METRICS
#: Whether a higher value is better, for the summary table.
HIGHER_IS_BETTER = {
    "pointing_game": True,
    "energy_pointing_game": True,
    "localisation_error": False,
    "average_drop": False,
    "increase_in_confidence": True,
    "deletion_auc": False,
    "insertion_auc": True,
}
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
    found = localisation_boxes(maps, threshold)
    true = boxes.detach().float().cpu().tolist()
    errors = [
        1.0 if f is None or box_iou(f, t) < iou else 0.0
        for f, t in zip(found, true, strict=True)
    ]
    return torch.tensor(errors, dtype=torch.float32)


def image_metrics(
    names: Sequence[str],
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: torch.Tensor,
    masks: torch.Tensor | None,
    boxes: torch.Tensor | None,
    tolerance: float,
    deletion_steps: int = 16,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image values ``(B,)`` of the metrics ``names`` for maps ``(B, H, W)`` in ``[0, 1]``.

    Localisation metrics without a mask or box give NaN (not applicable).
    """
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
                M.pointing_game(maps, tolerance=tolerance, **gt).cpu() if have else nan
            )
        if "energy_pointing_game" in wanted:
            out["energy_pointing_game"] = (
                M.energy_pointing_game(maps, **gt).cpu() if have else nan
            )
    if "localisation_error" in wanted:
        if boxes is None and masks is not None:
            boxes = masks_to_boxes(masks)
        out["localisation_error"] = localisation_error(maps, boxes) if boxes is not None else nan
    if wanted & {"average_drop", "increase_in_confidence"}:
        drop, inc = M.average_drop_increase(
            model, images, maps.to(images.device), class_ids, batch_size=batch_size
        )
        out["average_drop"] = drop.float().cpu()
        out["increase_in_confidence"] = 100.0 * inc.float().cpu()
    if wanted & {"deletion_auc", "insertion_auc"}:
        dele, ins = M.deletion_insertion_auc(
            model,
            images,
            maps.to(images.device),
            class_ids,
            steps=deletion_steps,
            batch_size=batch_size,
        )
        out["deletion_auc"], out["insertion_auc"] = dele.float().cpu(), ins.float().cpu()
    return {k: out[k] for k in names}


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight pixel-edge boxes ``(B, 4)`` of masks ``(B, H, W)`` (an empty mask: a zero box)."""
    boxes = torch.zeros(masks.shape[0], 4)
    for i, m in enumerate(masks.bool().cpu()):
        ys = torch.nonzero(m.any(dim=1)).flatten()
        xs = torch.nonzero(m.any(dim=0)).flatten()
        if len(xs):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


class DatasetMeans(Metric):
    """Means of named per-image values over a dataset, NaN values left out, synced across ranks.

    States: ``total`` and ``count``, one entry per name, reduced by sum across processes
    (torchmetrics' ``dist_reduce_fx="sum"``): ``compute()`` returns the same means on every
    rank, equal to a single-process run's.

    Args:
        names: The names of the values (fixed for the life of the metric).

    Example:
        >>> m = DatasetMeans(["a", "b"])
        >>> m.update({"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([float("nan"), 2.0])})
        >>> m.compute()
        {'a': (2.0, 2), 'b': (2.0, 1)}
    """

    full_state_update = False
    total: torch.Tensor
    count: torch.Tensor

    def __init__(self, names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = list(names)
        self._pos = {n: i for i, n in enumerate(self.names)}
        n = len(self.names)
        self.add_state("total", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: dict[str, torch.Tensor]) -> None:  # type: ignore[override]
        """Add per-image values ``{name: (B,)}``; NaN entries are skipped."""
        for name, v in values.items():
            v = torch.as_tensor(v, dtype=torch.float64).flatten()
            ok = torch.isfinite(v)
            i = self._pos[name]
            self.total[i] += v[ok].sum().to(self.total.device)
            self.count[i] += ok.sum().to(self.count.device)

    def add_sums(self, totals: dict[str, float], counts: dict[str, float]) -> None:
        """Add sums and counts computed elsewhere (the shards of an interrupted run)."""
        for name, t in totals.items():
            i = self._pos[name]
            self.total[i] += float(t)
            self.count[i] += float(counts[name])
        self.update({})  # counts as an update: compute() on a rank without images is expected

    def compute(self) -> dict[str, tuple[float, int]]:  # type: ignore[override]
        """``{name: (mean, count)}`` over every process (mean NaN for a name without values)."""
        out: dict[str, tuple[float, int]] = {}
        for name, i in self._pos.items():
            c = float(self.count[i])
            out[name] = (float(self.total[i]) / c if c > 0 else math.nan, int(c))
        return out
