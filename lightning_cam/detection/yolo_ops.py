"""Tensor operations of the YOLO path that need no ``ultralytics``: the letterbox (and its
inverse for boxes and maps), and the NMS that keeps the anchor index of every kept detection.

* :func:`letterbox`: an image ``(C, H, W)`` in ``[0, 1]`` resized (aspect ratio kept) and
  padded with grey (114 / 255) to a multiple of the stride, centered, as ultralytics' predictor
  does (``LetterBox(auto=True)``); :class:`Letterbox` says how to undo it.
* :func:`nms_with_anchors`: ultralytics' NMS (best class per anchor, class-aware IoU
  suppression) on the raw ``(4 + nc, A)`` predictions of one image, returning which anchor each
  kept detection came from.

Example:
    >>> import torch
    >>> x, box = letterbox(torch.rand(3, 50, 100), 64, stride=32)  # rectangular
    >>> tuple(x.shape), box.resized, box.pad
    ((3, 32, 64), (32, 64), (0, 0))
    >>> x, box = letterbox(torch.rand(3, 50, 100), 64, stride=32, auto=False)  # square
    >>> tuple(x.shape), box.resized, box.pad
    ((3, 64, 64), (32, 64), (16, 0))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_cam.methods import normalize_maps, upsample

__all__ = ["PAD_VALUE", "Letterbox", "NMSResult", "letterbox", "nms_with_anchors", "xywh2xyxy"]

#: ultralytics' letterbox grey, in [0, 1].
PAD_VALUE = 114 / 255


@dataclass(frozen=True)
class Letterbox:
    """Where the image lies on the model's input canvas.

    Attributes:
        size: ``(H, W)`` of the original image.
        resized: ``(h, w)`` of the resized image on the canvas.
        pad: ``(top, left)`` padding before the resized image.
        canvas: ``(H', W')`` of the model input.
    """

    size: tuple[int, int]
    resized: tuple[int, int]
    pad: tuple[int, int]
    canvas: tuple[int, int]

    def boxes_to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """``(K, 4)`` xyxy boxes in canvas pixels -> pixels of the original image, clipped."""
        h, w = self.size
        gain_y, gain_x = self.resized[0] / h, self.resized[1] / w
        top, left = self.pad
        out = boxes.float().clone()
        out[:, [0, 2]] = ((out[:, [0, 2]] - left) / gain_x).clamp(0, w)
        out[:, [1, 3]] = ((out[:, [1, 3]] - top) / gain_y).clamp(0, h)
        return out

    def canvas_maps(self, raw: torch.Tensor) -> torch.Tensor:
        """``(K, h, w)`` layer-resolution maps -> ``(K, H', W')`` over the canvas (bilinear)."""
        return upsample(raw.float(), self.canvas)

    def maps_to_original(self, canvas_maps: torch.Tensor) -> torch.Tensor:
        """``(K, H', W')`` canvas maps -> ``(K, H, W)`` of the image, ReLU'd, in ``[0, 1]``:
        the padding cropped away, the rest resized to the image."""
        return self._to_image(canvas_maps, own=False)

    def layer_maps_to_original(self, raw: torch.Tensor) -> torch.Tensor:
        """``(K, h, w)`` layer-resolution maps -> ``(K, H, W)`` of the image: the same maps as
        ``maps_to_original(canvas_maps(raw))``, with fewer full-size copies (one batched resize
        to the canvas, the crop, at most one more resize; ReLU and min-max in place)."""
        if raw.shape[0] == 0:
            return raw.new_zeros((0, *self.size), dtype=torch.float32)
        canvas = self.canvas_maps(raw)
        return self._to_image(canvas, own=canvas is not raw)

    def _to_image(self, canvas_maps: torch.Tensor, own: bool) -> torch.Tensor:
        """Crop, resize, ReLU, min-max; ``own``: ``canvas_maps`` may be written to."""
        if canvas_maps.shape[0] == 0:
            return canvas_maps.new_zeros((0, *self.size), dtype=torch.float32)
        top, left = self.pad
        crop = canvas_maps[:, top : top + self.resized[0], left : left + self.resized[1]]
        maps = upsample(crop.float(), self.size)
        if maps is crop and not (own and crop.is_contiguous()):
            return normalize_maps(maps.clamp_min(0))
        return normalize_maps(maps.clamp_min_(0), inplace=True)


def letterbox(
    image: torch.Tensor, imgsz: int | tuple[int, int], stride: int = 32, auto: bool = True
) -> tuple[torch.Tensor, Letterbox]:
    """Resize ``image`` ``(C, H, W)`` to fit ``imgsz`` (aspect ratio kept) and pad it, centered.

    As ultralytics' ``LetterBox`` (``scaleup=True``, ``center=True``): the gain is
    ``min(imgsz_h / H, imgsz_w / W)``; with ``auto`` the padding only reaches the next multiple of
    ``stride`` (ultralytics' rectangular inference), else the full ``imgsz``. The resize is
    bilinear on the float image (ultralytics resizes the uint8 image with OpenCV).

    Returns:
        The model input ``(C, H', W')`` and the :class:`Letterbox` that undoes it.
    """
    th, tw = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    h, w = int(image.shape[-2]), int(image.shape[-1])
    r = min(th / h, tw / w)
    nh, nw = int(round(h * r)), int(round(w * r))
    dh, dw = th - nh, tw - nw
    if auto:
        dh, dw = dh % stride, dw % stride
    top, left = int(round(dh / 2 - 0.1)), int(round(dw / 2 - 0.1))
    bottom, right = dh - top, dw - left
    x = image.float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    x = F.pad(x, (left, right, top, bottom), value=PAD_VALUE)
    return x, Letterbox((h, w), (nh, nw), (top, left), (nh + dh, nw + dw))


def xywh2xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` center-size boxes -> corner boxes."""
    xy, wh = boxes[:, :2], boxes[:, 2:4] / 2
    return torch.cat([xy - wh, xy + wh], dim=1)


@dataclass
class NMSResult:
    """The detections NMS kept, by decreasing score (canvas pixels)."""

    anchors: torch.Tensor  # (D,) anchor index of each detection
    labels: torch.Tensor  # (D,) its class (the anchor's best class)
    scores: torch.Tensor  # (D,) its score: the anchor's class score
    boxes: torch.Tensor  # (D, 4) xyxy


def nms_with_anchors(
    pred: torch.Tensor, score_threshold: float, iou_threshold: float, max_det: int | None = None
) -> NMSResult:
    """ultralytics' NMS on one image's raw predictions, keeping the anchor of each detection.

    As ``ultralytics.utils.nms.non_max_suppression`` with ``multi_label=False`` and
    ``agnostic=False``: each anchor proposes its best class with that class's score; anchors
    scoring at least ``score_threshold`` (ultralytics: strictly above) are suppressed per class
    at ``iou_threshold``, highest scores first, equal scores in anchor order (as
    ``torchvision.ops.nms`` orders them in ultralytics' call).

    Args:
        pred: ``(4 + nc, A)`` xywh boxes then class scores (the Detect head's eval output).
        score_threshold: Least score of a candidate.
        iou_threshold: IoU above which a lower-scoring box of the same class is dropped.
        max_det: Only the ``max_det`` best detections are wanted: NMS runs on the best
            candidates only, as many as it takes to keep ``max_det`` (greedy NMS decides each
            box from the higher-scoring ones alone, so the detections kept among the best ``n``
            candidates, never cut between equal scores, are the first of all those kept).
            ``None``: all candidates.
    """
    pred = pred.detach()
    conf, labels = pred[4:].max(0)
    cand = torch.nonzero(conf >= score_threshold).flatten()
    if max_det is None or max_det <= 0 or cand.numel() <= 4 * max_det:
        return _nms(pred, conf, labels, cand, iou_threshold)
    ranked = conf[cand].sort(descending=True, stable=True).values
    n = 4 * max_det
    while True:
        cut = ranked[n - 1]
        top = cand[conf[cand] >= cut]  # anchor order, every score equal to the cut included
        det = _nms(pred, conf, labels, top, iou_threshold)
        if det.anchors.numel() >= max_det or top.numel() == cand.numel():
            return det
        n = min(4 * int(top.numel()), int(cand.numel()))


def _nms(
    pred: torch.Tensor, conf: torch.Tensor, labels: torch.Tensor, cand: torch.Tensor,
    iou_threshold: float,
) -> NMSResult:
    """Class-aware NMS of the candidates ``cand`` (anchor indices, increasing); the kept ones
    by decreasing score, equal scores in anchor order."""
    from torchvision.ops import batched_nms

    boxes = xywh2xyxy(pred[:4, cand].T.float())
    keep = batched_nms(boxes, conf[cand].float(), labels[cand], iou_threshold).sort().values
    keep = keep[torch.argsort(conf[cand][keep], descending=True, stable=True)]
    return NMSResult(cand[keep], labels[cand][keep], conf[cand][keep], boxes[keep])
