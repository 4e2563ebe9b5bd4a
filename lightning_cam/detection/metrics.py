"""Detection quality and detection-explanation quality, as pure tensor functions.

* :func:`match_detections`: greedy one-to-one matching of detections to ground-truth boxes by IoU
  (Pascal VOC's rule: by decreasing score, each detection takes the best-overlapping ground truth
  of its class; a ground truth already taken makes it a false positive).
* :func:`detection_scores`: AP at one IoU threshold (VOC all-point interpolation) averaged over
  classes, and the recall of the confident detections — no pycocotools needed.
* :func:`detection_pointing_game`: the pointing game of per-detection saliency maps: a detection
  matched to a ground-truth box *hits* when the maximum of its map lies in that box.

Boxes are ``(x1, y1, x2, y2)`` in pixels throughout.

Example:
    >>> import torch
    >>> gt = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}
    >>> pred = {"boxes": torch.tensor([[1.0, 1, 10, 10]]), "scores": torch.tensor([0.9]),
    ...         "labels": torch.tensor([1])}
    >>> detection_scores([pred], [gt])
    {'map': 1.0, 'recall': 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torchvision.ops import box_iou

from lightning_cam.metrics import pointing_game

if TYPE_CHECKING:
    from lightning_cam.detection.result import DetectionResult


def _boxes(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, 4), got {type(x).__name__}")
    t = x.detach().float().cpu()
    if t.numel() == 0:
        return t.reshape(0, 4)
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as x1, y1, x2, y2; got {tuple(t.shape)}")
    return t


def match_detections(
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor,
    gt_boxes: torch.Tensor,
    pred_labels: torch.Tensor | None = None,
    gt_labels: torch.Tensor | None = None,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """Match detections to ground-truth boxes one to one (Pascal VOC's greedy rule).

    Detections are visited by decreasing score; each takes the ground truth (of the same label
    when both label tensors are given) it overlaps most, if that IoU is ``>= iou_threshold`` and
    no earlier detection took it.

    Args:
        pred_boxes: ``(P, 4)`` detected boxes.
        pred_scores: ``(P,)`` their scores.
        gt_boxes: ``(G, 4)`` ground-truth boxes.
        pred_labels: ``(P,)`` labels, or ``None`` for class-agnostic matching.
        gt_labels: ``(G,)`` labels, or ``None``.
        iou_threshold: Minimum IoU of a match.

    Returns:
        ``(P,)`` long tensor: the index of the matched ground truth, ``-1`` for none.

    Raises:
        ValueError: Shapes that do not agree, or an IoU threshold outside ``(0, 1]``.
    """
    pb, gb = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
    scores = torch.as_tensor(pred_scores).detach().float().cpu().reshape(-1)
    if scores.shape[0] != pb.shape[0]:
        raise ValueError(f"pred_scores has {scores.shape[0]} entries for {pb.shape[0]} boxes")
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    match = torch.full((pb.shape[0],), -1, dtype=torch.long)
    if pb.shape[0] == 0 or gb.shape[0] == 0:
        return match
    iou = box_iou(pb, gb)
    if pred_labels is not None and gt_labels is not None:
        pl_ = torch.as_tensor(pred_labels).cpu().reshape(-1)
        gl = torch.as_tensor(gt_labels).cpu().reshape(-1)
        if pl_.shape[0] != pb.shape[0] or gl.shape[0] != gb.shape[0]:
            raise ValueError("labels must have one entry per box")
        iou = torch.where(pl_[:, None] == gl[None, :], iou, torch.full_like(iou, -1.0))
    taken = torch.zeros(gb.shape[0], dtype=torch.bool)
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        best = int(iou[i].argmax())
        if iou[i, best] >= iou_threshold and not taken[best]:
            taken[best] = True
            match[i] = best
    return match


def _average_precision(tp: torch.Tensor, scores: torch.Tensor, num_gt: int) -> float:
    """VOC all-point interpolated AP of detections ``tp`` (bool) with ``scores``."""
    if num_gt == 0:
        return float("nan")
    if tp.numel() == 0:
        return 0.0
    order = torch.argsort(scores, descending=True, stable=True)
    hits = tp[order].double()
    ctp = torch.cumsum(hits, 0)
    cfp = torch.cumsum(1 - hits, 0)
    recall = ctp / num_gt
    precision = ctp / (ctp + cfp)
    zero, one = torch.zeros(1, dtype=torch.double), torch.ones(1, dtype=torch.double)
    mrec = torch.cat([zero, recall, one])
    mpre = torch.cat([zero, precision, zero])
    mpre = torch.flip(torch.cummax(torch.flip(mpre, [0]), 0).values, [0])
    step = mrec[1:] != mrec[:-1]
    return float(((mrec[1:] - mrec[:-1]) * mpre[1:])[step].sum())


def detection_scores(
    preds: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> dict[str, float]:
    """Mean average precision and recall at one IoU threshold.

    Args:
        preds: Per image, a dict with ``boxes`` ``(P, 4)``, ``scores`` ``(P,)``, ``labels``.
        targets: Per image, a dict with ``boxes`` ``(G, 4)`` and ``labels`` ``(G,)``.
        iou_threshold: IoU of a match (0.5: the Pascal VOC / COCO ``AP50`` criterion).
        score_threshold: Detections counted by ``recall``.

    Returns:
        ``{"map": ..., "recall": ...}``: AP (all-point interpolation) averaged over the classes
        present in the ground truth, and the fraction of ground-truth boxes matched by a
        detection of the right class with score ``>= score_threshold``. ``nan`` without ground
        truth.

    Raises:
        ValueError: ``preds`` and ``targets`` of different lengths.
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    per_class: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    gt_count: dict[int, int] = {}
    found = total = 0
    for pred, tgt in zip(preds, targets, strict=True):
        pl_ = torch.as_tensor(pred["labels"]).cpu().reshape(-1)
        ps = torch.as_tensor(pred["scores"]).detach().float().cpu().reshape(-1)
        gl = torch.as_tensor(tgt["labels"]).cpu().reshape(-1)
        match = match_detections(pred["boxes"], ps, tgt["boxes"], pl_, gl, iou_threshold)
        for c in gl.tolist():
            gt_count[c] = gt_count.get(c, 0) + 1
        for c in set(pl_.tolist()):
            sel = pl_ == c
            per_class.setdefault(c, []).append((match[sel] >= 0, ps[sel]))
        confident = match[(ps >= score_threshold) & (match >= 0)]
        found += int(confident.unique().numel())
        total += int(gl.numel())
    aps = []
    for c, n in gt_count.items():
        parts = per_class.get(c, [])
        tp = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, dtype=torch.bool)
        sc = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0)
        aps.append(_average_precision(tp, sc, n))
    return {
        "map": float(sum(aps) / len(aps)) if aps else float("nan"),
        "recall": found / total if total else float("nan"),
    }


def detection_pointing_game(
    result: DetectionResult,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor | None = None,
    method: str | None = None,
    layer: str | None = None,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """Pointing game of the detections of one image against its ground-truth boxes.

    Detections are matched to ground-truth boxes with :func:`match_detections` (class-aware when
    ``gt_labels`` is given); a matched detection *hits* when the maximum of its map lies in its
    ground-truth box (:func:`lightning_cam.metrics.pointing_game` with the box). Unmatched
    detections are not scored: they test the detector, not the explanation.

    Args:
        result: A :class:`~lightning_cam.detection.DetectionResult` of the image.
        gt_boxes: ``(G, 4)`` ground-truth boxes, in the coordinates of the explained image.
        gt_labels: ``(G,)`` labels, or ``None`` for class-agnostic matching.
        method: The CAM method whose maps are scored (``None``: the first computed).
        layer: The layer; ``None``: the result's first layer.
        iou_threshold: IoU of a match.

    Returns:
        ``(M,)`` float tensor of hits (1.0) and misses (0.0), one per matched detection
        (``M`` may be 0). Average over images for the pointing accuracy.

    Example:
        >>> # hits = detection_pointing_game(result, target["boxes"], target["labels"])
    """
    maps = result.map(method, layer).float().cpu()
    match = match_detections(
        result.boxes, result.scores, gt_boxes,
        result.labels if gt_labels is not None else None, gt_labels, iou_threshold,
    )
    sel = match >= 0
    if not bool(sel.any()):
        return torch.zeros(0)
    boxes = _boxes(gt_boxes, "gt_boxes")[match[sel]]
    return pointing_game(maps[sel], boxes=boxes)
