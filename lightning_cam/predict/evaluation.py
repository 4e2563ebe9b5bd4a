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

import torch
from torchmetrics import Metric

# The one list of metric names, the tolerance rule and the per-image dispatch live in
# :mod:`lightning_cam.metrics`; re-exported here under their former names.
from lightning_cam.metrics import (
    FAITHFULNESS_METRICS,
    HIGHER_IS_BETTER,
    LOCALISATION_IOU,
    LOCALISATION_METRICS,
    LOCALISATION_THRESHOLD,
    METRIC_NAMES,
    box_iou,
    image_metrics,
    localisation_boxes,
    localisation_error,
    masks_to_boxes,
)

__all__ = [
    "FAITHFULNESS_METRICS",
    "HIGHER_IS_BETTER",
    "LOCALISATION_IOU",
    "LOCALISATION_METRICS",
    "LOCALISATION_THRESHOLD",
    "METRIC_NAMES",
    "DatasetMeans",
    "box_iou",
    "image_metrics",
    "localisation_boxes",
    "localisation_error",
    "masks_to_boxes",
]


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
