"""The torchvision detector as the engine sees it, and the rescoring fast path.

:class:`DetectorAdapter` turns a detector into a module ``(B, C, H, W) -> detections`` for the
engine. For torchvision's own Faster R-CNN and RetinaNet (one image), its forward runs the parts
that only *select* detections without autograd recording, and :meth:`DetectorAdapter.rescore`
recomputes the ``K`` kept scores, differentiably, from what each depends on: the same scores and
gradients up to float rounding, at a fraction of the backward's cost. A detector whose
detections are computed differently raises :class:`FastPathMismatch`: the explainer then
differentiates the detector's outputs as they are.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DenseRecord",
    "DetectorAdapter",
    "FastPathMismatch",
    "RoIRecord",
    "fast_kind",
    "proposal_index",
]


@dataclass
class RoIRecord:
    """What an RoI-recording forward keeps of one image (detached, resized coordinates): the
    one record of the torchvision (Faster / Mask R-CNN) and detectron2 (``GeneralizedRCNN``)
    RoI paths."""

    pooled: torch.Tensor  # (R, C, h, w): RoI-pooled features of every proposal
    class_logits: torch.Tensor  # (R, num_classes)
    box_regression: torch.Tensor  # (R, num_classes * 4)
    proposals: torch.Tensor  # (R, 4)
    image_size: tuple[int, int]
    boxes: torch.Tensor  # (D, 4) detections before the resize to the original image
    scores: torch.Tensor
    labels: torch.Tensor
    #: (D,) proposal index of every detection the model returned, when the model tells
    #: (detectron2's ``box_predictor.inference``); else ``None``.
    kept: torch.Tensor | None = None


@dataclass
class DenseRecord:
    """What the RetinaNet forward keeps of one image (detached, resized coordinates)."""

    cls_logits: torch.Tensor  # (HWA, num_classes), all levels
    box_regression: torch.Tensor  # (HWA, 4)
    anchors: torch.Tensor  # (HWA, 4)
    level_shapes: list[tuple[int, int]]  # (h, w) of each level
    num_anchors: int  # A, anchors per position
    image_size: tuple[int, int]
    boxes: torch.Tensor  # (D, 4) detections before transform.postprocess
    scores: torch.Tensor
    labels: torch.Tensor


class FastPathMismatch(RuntimeError):
    """The rescored detections do not reproduce the detector's: use the generic path."""


def _overrides(obj: Any, base: type, *names: str) -> bool:
    return any(getattr(type(obj), n, None) is not getattr(base, n) for n in names)


def fast_kind(detector: nn.Module, layers: Sequence[str]) -> str | None:
    """Which rescoring fast path fits ``detector`` (``"rcnn"``, ``"retinanet"``), else ``None``.

    The fast paths write out torchvision's eval forward, so they only take detectors whose
    forward (and the parts written out) are torchvision's own.
    """
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.retinanet import (
        RetinaNet,
        RetinaNetClassificationHead,
        RetinaNetHead,
    )
    from torchvision.models.detection.roi_heads import RoIHeads

    det: Any = detector
    if isinstance(det, GeneralizedRCNN):
        rh = getattr(det, "roi_heads", None)
        ok = (
            not _overrides(det, GeneralizedRCNN, "forward")
            and isinstance(rh, RoIHeads)
            and not _overrides(rh, RoIHeads, "forward", "postprocess_detections")
            and all(getattr(rh, n, None) is not None
                    for n in ("box_roi_pool", "box_head", "box_predictor"))
        )
        return "rcnn" if ok else None
    if isinstance(det, RetinaNet):
        head = getattr(det, "head", None)
        cls = getattr(head, "classification_head", None)
        conv = getattr(cls, "cls_logits", None)
        ok = (
            not _overrides(det, RetinaNet, "forward", "postprocess_detections")
            and type(head) is RetinaNetHead
            and type(cls) is RetinaNetClassificationHead
            and type(conv) is nn.Conv2d
            and conv.groups == 1
            and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)
            # the written-out forward bypasses these modules' own forward (and their hooks)
            and not any(n in ("head", "head.classification_head") for n in layers)
        )
        return "retinanet" if ok else None
    return None


class DetectorAdapter(nn.Module):
    """``(B, C, H, W) -> detector(list(images))``: the engine's view of a detector.

    With ``record_rois`` (Faster R-CNN), the forward is GeneralizedRCNN's and RoIHeads' eval
    path written out (transform, backbone, rpn, RoI pooling, box head, predictor,
    postprocessing), keeping the RoI features and box-head outputs for RoI-level maps.

    **Rescoring fast path** (torchvision Faster R-CNN and RetinaNet, one image). The score of a
    detection depends on few of the values the detector computes: for Faster R-CNN, on the
    RoI features of its own proposal (the box head works row by row); for RetinaNet, on one
    logit of one FPN level, that is on a ``k x k`` window of the classification tower's output
    at that level. Differentiating the detector's outputs would backpropagate, for each of the
    ``K`` detections, through the box head of every proposal (Faster R-CNN) or the logits
    convolution and the postprocessing of every anchor (RetinaNet). So the forward runs the
    parts that only *select* detections (RPN, RoI head of all proposals, logits of all anchors,
    postprocessing) without autograd recording, and :meth:`rescore` recomputes the ``K`` kept
    scores, differentiably, from what they depend on: the same values up to float rounding and
    the same gradients, at a fraction of the backward's cost.
    """

    def __init__(
        self, detector: nn.Module, record_rois: bool = False, layers: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.detector: Any = detector
        self.record_rois = record_rois
        self.fast = fast_kind(detector, layers)
        # the cls_logits conv itself explained: rescore from its output, not its input
        self._logits_layer = any(
            n == "head.classification_head.cls_logits" for n in layers
        )
        self.record: RoIRecord | DenseRecord | None = None
        self.index: torch.Tensor | None = None  # proposal / anchor of each rescored detection
        self._live: Any = None  # graph tensors rescore() differentiates from (one call)

    def clear(self) -> None:
        """Drop what one call recorded (and the graph it holds)."""
        self.record, self.index, self._live = None, None, None

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        images = list(x.unbind(0))
        fast = self.fast if len(images) == 1 else None
        self.clear()
        if fast == "retinanet":
            return self._retinanet_forward(images)
        if fast == "rcnn" or self.record_rois:
            return self._rcnn_forward(images, fast == "rcnn")
        return self.detector(images)

    @property
    def rescoring(self) -> bool:
        """Whether the last forward took the fast path (:meth:`rescore` applies)."""
        return self._live is not None

    def _backbone(self, images: list[torch.Tensor]) -> tuple[list[tuple[int, int]], Any, Any]:
        """The images' original sizes, the transformed ``ImageList`` and the backbone's
        features (an ordered dict of levels)."""
        det: Any = self.detector
        original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        image_list, _ = det.transform(images)
        features = det.backbone(image_list.tensors)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        return original, image_list, features

    def _rcnn_forward(
        self, images: list[torch.Tensor], fast: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        det: Any = self.detector
        original, image_list, features = self._backbone(images)
        with torch.no_grad() if fast else contextlib.nullcontext():
            proposals, _ = det.rpn(image_list, features)
            rh = det.roi_heads
            pooled = rh.box_roi_pool(features, proposals, image_list.image_sizes)
            logits, regression = rh.box_predictor(rh.box_head(pooled))
            boxes, scores, labels = rh.postprocess_detections(
                logits, regression, proposals, image_list.image_sizes
            )
        size = image_list.image_sizes[0]
        self.record = RoIRecord(
            pooled.detach(), logits.detach(), regression.detach(), proposals[0].detach(),
            (int(size[0]), int(size[1])), boxes[0].detach(), scores[0].detach(), labels[0],
        )
        if fast:
            self._live = (features, image_list.image_sizes)
        dets = [{"boxes": b, "scores": s, "labels": lab}
                for b, s, lab in zip(boxes, scores, labels, strict=True)]
        return det.transform.postprocess(dets, image_list.image_sizes, original)

    def _retinanet_forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """RetinaNet's eval forward written out; the logits of all anchors and the
        postprocessing run without recording."""
        det: Any = self.detector
        original, image_list, features = self._backbone(images)
        features = list(features.values())
        cls = det.head.classification_head
        with torch.no_grad():
            box_regression = det.head.regression_head(features)
        towers = [cls.conv(f) for f in features]
        with contextlib.nullcontext() if self._logits_layer else torch.no_grad():
            level_logits = [cls.cls_logits(t) for t in towers]
        shapes = [(int(t.shape[-2]), int(t.shape[-1])) for t in level_logits]
        num_classes = cls.num_classes
        num_anchors = int(level_logits[0].shape[1]) // num_classes
        cls_logits = torch.cat(
            [lg.detach().view(1, num_anchors, num_classes, h, w).permute(0, 3, 4, 1, 2)
             .reshape(1, -1, num_classes) for lg, (h, w) in zip(level_logits, shapes, strict=True)],
            dim=1,
        )
        with torch.no_grad():
            anchors = det.anchor_generator(image_list, features)
            per_level = [h * w * num_anchors for h, w in shapes]
            split_head = {
                "cls_logits": list(cls_logits.split(per_level, dim=1)),
                "bbox_regression": list(box_regression.split(per_level, dim=1)),
            }
            split_anchors = [list(a.split(per_level)) for a in anchors]
            dets = det.postprocess_detections(split_head, split_anchors, image_list.image_sizes)
        size = image_list.image_sizes[0]
        self.record = DenseRecord(
            cls_logits[0], box_regression[0].detach(), anchors[0], shapes, num_anchors,
            (int(size[0]), int(size[1])), dets[0]["boxes"], dets[0]["scores"], dets[0]["labels"],
        )
        self._live = level_logits if self._logits_layer else towers
        return det.transform.postprocess(dets, image_list.image_sizes, original)

    def rescore(self, keep: torch.Tensor) -> torch.Tensor:
        """Differentiable scores ``(K,)`` of the detections ``keep`` of the last forward.

        Raises:
            FastPathMismatch: The recomputed detections differ from the detector's.
        """
        rec = self.record
        if isinstance(rec, RoIRecord):
            scores = self._rescore_rcnn(rec, keep)
        elif isinstance(rec, DenseRecord):
            scores = self._rescore_retinanet(rec, keep)
        else:  # pragma: no cover - rescore after a generic forward
            raise FastPathMismatch("no fast-path forward to rescore")
        expected = rec.scores[keep].to(scores.device, scores.dtype)
        if not torch.allclose(scores.detach(), expected, rtol=1e-4, atol=1e-5):
            raise FastPathMismatch(
                f"rescored {scores.detach().tolist()} != detected {expected.tolist()}"
            )
        return scores

    def _rescore_rcnn(self, rec: RoIRecord, keep: torch.Tensor) -> torch.Tensor:
        """Scores of the kept detections from the features of their own proposals.

        The box head works row by row, so detection ``k`` depends on the features only
        through the RoI features of its proposal. Its gradient w.r.t. each feature level,
        ``G_k``, comes from one small backward (the ``K`` RoIs pooled from ``K`` copies of
        the features, one per detection, through the box head); the score is then returned as
        ``s_k + <G_k, f - f.detach()>``: the value ``s_k`` exactly, the gradient ``G_k``
        exactly, and the engine's batched backward over ``K`` runs through the features'
        graph only (not ``K`` times through the box head and RoI pooling of every proposal).
        """
        rh = self.detector.roi_heads
        features, image_sizes = self._live
        index, dist = proposal_index(rh, rec, keep)
        if dist.numel() and float(dist.max()) > 1e-3:
            raise FastPathMismatch(f"no proposal reproduces a detection (distance {dist})")
        self.index = index
        k = int(index.numel())
        props = rec.proposals[index.to(rec.proposals.device)]
        copies = OrderedDict(
            (n, f.detach().repeat(k, *([1] * (f.dim() - 1))).requires_grad_(True))
            for n, f in features.items()
        )
        pooled = rh.box_roi_pool(copies, list(props[:, None].unbind(0)), list(image_sizes) * k)
        logits, _ = rh.box_predictor(rh.box_head(pooled))
        rows = torch.arange(k, device=logits.device)
        probs = F.softmax(logits, -1)[rows, rec.labels[keep].to(logits.device)]
        grads = torch.autograd.grad(probs.sum(), list(copies.values()), allow_unused=True)
        scores = probs.detach()
        for f, g in zip(features.values(), grads, strict=True):
            if g is not None and f.requires_grad:
                scores = scores + g.flatten(1) @ (f - f.detach()).flatten()
        return scores

    def _rescore_retinanet(self, rec: DenseRecord, keep: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import boxes as box_ops

        det = self.detector
        dev = rec.cls_logits.device
        labels = rec.labels[keep].to(dev)
        boxes = rec.boxes[keep].to(dev)
        scores = rec.scores[keep].to(dev)
        # the anchor of each detection: the one whose decoded box and score reproduce it
        decoded = det.box_coder.decode_single(rec.box_regression, rec.anchors)
        decoded = box_ops.clip_boxes_to_image(decoded, rec.image_size)
        cand_scores = torch.sigmoid(rec.cls_logits[:, labels])  # (HWA, K)
        dist = (decoded[:, None] - boxes[None]).abs().amax(-1) + (cand_scores - scores[None]).abs()
        best, index = dist.min(0)
        if best.numel() and float(best.max()) > 1e-3:
            raise FastPathMismatch(f"no anchor reproduces a detection (distance {best})")
        self.index = index.cpu()
        a_count = rec.num_anchors
        sizes = torch.tensor([h * w * a_count for h, w in rec.level_shapes])
        starts = torch.cumsum(sizes, 0) - sizes
        level = torch.searchsorted(torch.cumsum(sizes, 0), self.index, right=True)
        local = self.index - starts[level]
        anchor, pos = local % a_count, local // a_count
        num_classes = rec.cls_logits.shape[-1]
        channel = anchor * num_classes + labels.cpu()
        conv = det.head.classification_head.cls_logits
        out: list[tuple[torch.Tensor, torch.Tensor]] = []  # (positions in keep, logits)
        for lv in sorted(set(level.tolist())):
            at = torch.nonzero(level == lv)[:, 0]
            w = rec.level_shapes[lv][1]
            ys, xs, chs = pos[at] // w, pos[at] % w, channel[at]
            live = self._live[lv]
            if self._logits_layer:  # the conv's output is explained: read the logits there
                logits = live[0, chs.to(live.device), ys.to(live.device), xs.to(live.device)]
            else:  # the logit of each detection: the conv on its window of the tower
                logits = _conv_at(conv, live, ys, xs, chs)
            out.append((at, logits))
        order = torch.cat([at for at, _ in out]).argsort()
        return torch.sigmoid(torch.cat([lg for _, lg in out])[order.to(out[0][1].device)])


def _conv_at(
    conv: nn.Conv2d, x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, chs: torch.Tensor
) -> torch.Tensor:
    """``conv(x)[0, chs[k], ys[k], xs[k]]`` ``(K,)`` from the ``K`` input windows alone."""
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph, pw = (int(p) for p in conv.padding)  # not "same"/"valid": checked by fast_kind
    dh, dw = conv.dilation
    dev = x.device
    padded = F.pad(x[0], (pw, pw, ph, ph)) if (ph or pw) else x[0]
    rows = (ys.to(dev) * sh)[:, None, None] + (torch.arange(kh, device=dev) * dh)[None, :, None]
    cols = (xs.to(dev) * sw)[:, None, None] + (torch.arange(kw, device=dev) * dw)[None, None, :]
    windows = padded[:, rows, cols]  # (C_in, K, kh, kw)
    weight = conv.weight.detach()[chs.to(dev)]  # (K, C_in, kh, kw)
    logits = torch.einsum("ckij,kcij->k", windows, weight)
    if conv.bias is not None:
        logits = logits + conv.bias.detach()[chs.to(dev)]
    return logits


def proposal_index(
    roi_heads: Any, rec: RoIRecord, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The proposal each kept detection came from: the one whose decoded, clipped box and
    score for the detection's label reproduce the detection (exactly: the same computation);
    and the distance of that match ``(K,)``."""
    from torchvision.ops import boxes as box_ops

    num_classes = rec.class_logits.shape[-1]
    decoded = roi_heads.box_coder.decode(rec.box_regression, [rec.proposals])
    decoded = box_ops.clip_boxes_to_image(decoded.reshape(-1, num_classes, 4), rec.image_size)
    probs = rec.class_logits.softmax(-1)
    labels = rec.labels[keep].to(probs.device)
    boxes = rec.boxes[keep].to(probs.device)
    scores = rec.scores[keep].to(probs.device)
    cand_boxes = decoded[:, labels]  # (R, K, 4)
    cand_scores = probs[:, labels]  # (R, K)
    dist = (cand_boxes - boxes[None]).abs().amax(-1) + (cand_scores - scores[None]).abs()
    best, index = dist.min(0)
    return index.cpu(), best
