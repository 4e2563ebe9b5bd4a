"""Detection support of the CAM callbacks: probes, maps, pictures and scores for detectors.

:class:`DetectionTask` is the task strategy; the functions are its parts. A LightningModule
that is or wraps a torchvision detector (see
:func:`lightning_cam.detection.find_detector`) validates on batches of torchvision's detection
format, ``(list of (C, H, W) images, list of target dicts with "boxes" and "labels")``. The
callbacks then keep a probe set of images and targets, explain each probe's top detections with
:class:`~lightning_cam.detection.DetectionExplainer` (one forward and one batched backward per
image) and log one picture per method and layer plus the detection pointing game.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks.options import check_no_target
from lightning_cam.callbacks.task import CallbackView, TaskStrategy
from lightning_cam.tools import viz

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
    from lightning_cam.detection.render import (
        detection_heatmap,
        draw_detections,
        fit_tile,
        scaled_result,
    )

    rows: list[list[np.ndarray]] = []
    row_labels: list[str] = []
    for (image, target), result in zip(probes, results, strict=False):
        img = viz.to_uint8_image(image.float())
        tile, scale = fit_tile(img, tile_size)
        res = scaled_result(result, scale)
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
    (IoU >= 0.5, same label; see :func:`detection_pointing`), averaged over every matched
    detection of every image; NaN when no detection matched or the targets carry no boxes."""
    hits: list[torch.Tensor] = []
    energy: list[torch.Tensor] = []
    for (_, target), result in zip(probes, results, strict=False):
        scores = detection_pointing(result, target, method, layer)
        sel = scores["match"] >= 0
        hits.append(scores["pointing_game"][sel])
        energy.append(scores["energy_pointing_game"][sel])
    if not hits or not sum(len(h) for h in hits):
        return {"pointing_game": float("nan"), "energy_pointing_game": float("nan")}
    return {
        "pointing_game": float(torch.cat(hits).mean()),
        "energy_pointing_game": float(torch.cat(energy).mean()),
    }


def find_detector_backend(pl_module: Any) -> tuple[Any, str]:
    """``(detector, backend)`` of a module that is or wraps a detector: a torchvision one
    (``"torchvision"``), a transformers DETR-family model (``"hf"``), an ultralytics YOLO
    ``DetectionModel`` (``"yolo"``) or a detectron2 model (``"detectron2"``); ``(None, "")``
    when it wraps none. The one rule of the detection callbacks and of ``CAMWriter``."""
    from lightning_cam.detection import find_detector
    from lightning_cam.detection.detectron2 import find_detectron2_model
    from lightning_cam.detection.detr import find_detr_model
    from lightning_cam.detection.yolo import find_yolo_model

    detector = find_detector(pl_module)
    if detector is not None:
        return detector, "torchvision"
    detr = find_detr_model(pl_module)
    if detr is not None:
        return detr, "hf"
    yolo = find_yolo_model(pl_module)
    if yolo is not None:
        return yolo, "yolo"
    d2 = find_detectron2_model(pl_module)
    return (d2, "detectron2") if d2 is not None else (None, "")


#: The batch layouts each backend reads besides torchvision's (for the refusal's message).
_FORMATS = {
    "hf": ", or its image processor's output (a mapping with 'pixel_values', optionally "
    "'pixel_mask' and 'labels' with 'class_labels' and normalised 'boxes')",
    "yolo": ", or ultralytics' batches (a mapping with 'img', 'batch_idx', 'cls', 'bboxes')",
    "detectron2": ", or detectron2's (a list of dicts with 'image' and 'instances')",
}


def detector_processor(detector: Any, backend: str, pl_module: Any) -> Any:
    """A DETR's image processor: the module's ``image_processor`` attribute, else the family's
    default processor with its resize off (the images explained at their batched size, the
    training size whatever resized them, not at the default 800 px); ``None`` for the other
    backends."""
    if backend != "hf":
        return None
    processor = getattr(pl_module, "image_processor", None)
    if processor is None:
        from lightning_cam.detection.detr import default_image_processor

        processor = default_image_processor(detector)
        processor.do_resize = False
    return processor


def split_detector_batch(
    detector: Any, backend: str, batch: Any, processor: Any = None,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None] | None:
    """``(images, targets)`` of a detection batch of ``backend``'s formats (torchvision's
    ``(list of images, list of target dicts)`` or a bare list of images; detectron2's,
    ultralytics' and the Hugging Face processor's own batches for theirs, ``processor`` the
    DETR's, :func:`detector_processor`), ``None`` when it is none. ``uint8`` images (what a
    module that calls its DETR or YOLO preprocessing in its step is often fed) come out as
    floats in ``[0, 1]``, the explainers' input."""
    split = _split_batch(detector, backend, batch, processor)
    if split is None:
        return None
    images, targets = split
    return [im.float() / 255 if im.dtype == torch.uint8 else im for im in images], targets


def _split_batch(
    detector: Any, backend: str, batch: Any, processor: Any,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None] | None:
    from lightning_cam.detection import split_detection_batch
    from lightning_cam.detection.detectron2 import split_detectron2_batch

    if backend == "detectron2":
        fmt = getattr(detector, "input_format", "BGR")
        return split_detection_batch(batch) or split_detectron2_batch(batch, fmt)
    if backend == "yolo":
        from lightning_cam.detection.yolo import split_yolo_batch

        return split_detection_batch(batch) or split_yolo_batch(batch)
    if backend == "hf":
        from lightning_cam.detection.detr_data import split_hf_detection_batch

        if processor is None:
            processor = detector_processor(detector, backend, None)
        return split_detection_batch(batch) or split_hf_detection_batch(batch, processor)
    return split_detection_batch(batch)


def check_detector(
    detector: Any, backend: str, pl_module: Any, methods: Sequence[str],
    layer: Sequence[str] | None,
) -> None:  # fmt: skip
    """Refuse at setup what would fail at the first explanation: a YOLO head that is not a
    detection head, methods that explain classes only (registry flag ``needs_class_target``),
    and ``layer`` names that are no module of the detector.

    Raises:
        MisconfigurationException: Naming the argument, the bad value and what is allowed.
    """
    from lightning_cam.detection.base import detection_methods
    from lightning_cam.methods import METHODS

    if backend == "yolo":
        from lightning_cam.detection.yolo import check_yolo_model

        try:  # refused heads (segment, end-to-end ...) fail here, not after training
            check_yolo_model(detector)
        except (TypeError, ValueError) as err:
            raise MisconfigurationException(str(err)) from err
    refused = [m for m in methods if METHODS[m].needs_class_target]
    if refused:
        raise MisconfigurationException(
            f"methods={list(methods)!r} is invalid for the detector "
            f"{type(detector).__name__} in {type(pl_module).__name__}: "
            f"{', '.join(map(repr, refused))} explain classes only (they re-score other "
            "inputs or read a classifier's weights), not detections. Expected methods among "
            f"{', '.join(detection_methods())}."
        )
    prefix = detector_prefix(pl_module, detector)
    for name in layer or []:
        if relative_detector_layer(name, backend, prefix, detector) is None:
            names = [n for n, _ in detector.named_modules() if n]
            close = difflib.get_close_matches(name, names, n=5)
            raise MisconfigurationException(
                f"layer={name!r} is not a module of the detector "
                f"{type(detector).__name__} in {type(pl_module).__name__}. "
                f"Closest names: {', '.join(close) if close else '(none)'}. Use a dotted name "
                "from the detector's named_modules() (e.g. 'backbone.body.layer4'), or "
                "layer=None for the backbone's last stage."
            )


def relative_detector_layer(name: str, backend: str, prefix: str, detector: Any) -> str | None:
    """``name`` relative to the detector (:func:`detector_layer`; YOLO: also its neck)."""
    from lightning_cam.detection.yolo import YOLO_NECK

    if backend == "yolo" and name in (YOLO_NECK, f"{prefix}.{YOLO_NECK}"):
        return YOLO_NECK
    return detector_layer(name, prefix, detector)


def detector_layers(
    detector: Any, backend: str, prefix: str, layer: Sequence[str] | None
) -> list[str]:
    """Layer names relative to the detector (``layer=None``: the backend's default layer, the
    backbone's last stage; YOLO: its neck)."""
    from lightning_cam.detection import default_detection_layer
    from lightning_cam.detection.detectron2 import default_detectron2_layer
    from lightning_cam.detection.yolo import YOLO_NECK

    if layer is None:
        if backend == "detectron2":
            return [default_detectron2_layer(detector)]
        if backend == "hf":
            from lightning_cam.detection.detr import default_detr_layer

            return [default_detr_layer(detector)]
        if backend == "yolo":
            return [YOLO_NECK]
        return [default_detection_layer(detector)]
    out = []
    for name in layer:
        rel = relative_detector_layer(name, backend, prefix, detector)
        out.append(rel if rel is not None else name)
    return out


def detection_explainer(
    detector: Any, backend: str, pl_module: Any, images: Sequence[torch.Tensor],
    **kwargs: Any,
) -> Any:  # fmt: skip
    """The explainer of ``backend`` for ``images`` (``kwargs``: ``layer``, ``methods``,
    ``score_threshold``, ``top_k``, ``class_names``): :class:`DetectionExplainer`,
    ``DetrExplainer`` (with :func:`detector_processor`), ``YOLOExplainer``
    (letterboxed at the images' own size) or ``Detectron2Explainer`` (images already resized by
    detectron2's mapper)."""
    from lightning_cam.detection import DetectionExplainer

    if backend == "detectron2":
        from lightning_cam.detection.detectron2 import Detectron2Explainer

        return Detectron2Explainer(detector, min_size=0, **kwargs)
    if backend == "hf":
        from lightning_cam.detection.detr import DetrExplainer

        return DetrExplainer(detector, detector_processor(detector, backend, pl_module), **kwargs)
    if backend == "yolo":
        from lightning_cam.detection.yolo import YOLOExplainer

        side = max((max(int(im.shape[-2]), int(im.shape[-1])) for im in images), default=640)
        return YOLOExplainer(detector, imgsz=max(side, 32), **kwargs)
    return DetectionExplainer(detector, **kwargs)


def detection_pointing(
    result: Any, target: dict[str, torch.Tensor] | None, method: str, layer: str,
    tolerance: float = 0.0,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Per detection of one image: ``match`` (the index of the ground-truth box it matches,
    IoU >= 0.5 and the same label when the target has labels, Pascal VOC's greedy rule; -1
    for none), ``iou`` (with that box, NaN when unmatched), ``pointing_game`` (1.0 when the
    map's maximum lies in the matched box, within ``tolerance`` pixels) and
    ``energy_pointing_game`` (the map's share inside it), NaN for unmatched detections or
    without target boxes. Each ``(K,)``."""
    from torchvision.ops import box_iou

    from lightning_cam import metrics as M
    from lightning_cam.detection.metrics import match_detections

    k = len(result)
    nan = torch.full((k,), math.nan)
    out = {"match": torch.full((k,), -1, dtype=torch.long), "iou": nan.clone(),
           "pointing_game": nan.clone(), "energy_pointing_game": nan.clone()}  # fmt: skip
    if target is None or "boxes" not in target or k == 0:
        return out
    gt_boxes = target["boxes"].detach().float().cpu().reshape(-1, 4)
    gt_labels = target.get("labels")
    gt_labels = gt_labels.detach().cpu() if gt_labels is not None else None
    boxes = result.boxes.detach().float().cpu()
    match = match_detections(
        boxes, result.scores, gt_boxes,
        result.labels.cpu() if gt_labels is not None else None, gt_labels,
    )  # fmt: skip
    out["match"] = match
    sel = match >= 0
    if not bool(sel.any()):
        return out
    matched = gt_boxes[match[sel]]
    maps = result.map(method, layer).detach().float().cpu()[sel]
    out["iou"][sel] = box_iou(boxes[sel], matched).diagonal().float()
    out["pointing_game"][sel] = M.pointing_game(maps, boxes=matched, tolerance=tolerance).float()
    out["energy_pointing_game"][sel] = M.energy_pointing_game(maps, boxes=matched).float()
    return out


class DetectionTask(TaskStrategy):
    """Detectors: a LightningModule that is or wraps a torchvision detector (see
    :func:`lightning_cam.detection.find_detector`), a transformers DETR-family model
    (:func:`lightning_cam.detection.find_detr_model`; its image processor as
    :func:`detector_processor` says; batches in torchvision's format or the processor's,
    :func:`~lightning_cam.detection.detr_data.split_hf_detection_batch`) or a detectron2
    ``GeneralizedRCNN`` / ``RetinaNet``. Probes are ``(image, target)`` pairs; results one
    :class:`~lightning_cam.detection.DetectionResult` per probe image."""

    name = "detection"
    state_name = "det_probes"

    def __init__(self, callback: CallbackView) -> None:
        super().__init__(callback)
        self.detector: Any = None
        self.backend = "torchvision"
        self.prefix = ""
        self.processor: Any = None  # a DETR's image processor (detector_processor)

    @staticmethod
    def _find(pl_module: Any) -> tuple[Any, str]:
        return find_detector_backend(pl_module)

    @classmethod
    def applies(cls, pl_module: Any) -> bool:
        return cls._find(pl_module)[0] is not None

    def setup(self, trainer: Any, pl_module: Any) -> None:
        self.detector, self.backend = self._find(pl_module)
        check_no_target(self.options.target, "detector", "each detection's own score")
        self.prefix = detector_prefix(pl_module, self.detector)
        self.processor = detector_processor(self.detector, self.backend, pl_module)
        check_detector(
            self.detector, self.backend, pl_module, self.options.methods, self.options.layer
        )

    def split(
        self, batch: Any
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None] | None:
        """``(images, targets)`` of a detection batch, ``None`` when it is none."""
        return split_detector_batch(self.detector, self.backend, batch, self.processor)

    def capture(self, batch: Any) -> list[Any]:
        parts = self.callback.extract_detection(batch)
        if parts is None:
            raise MisconfigurationException(
                f"{type(self.callback).__name__}: the LightningModule wraps a detector "
                f"({type(self.detector).__name__}), so validation batches must be "
                "(list of (C, H, W) float images, list of target dicts with 'boxes' and "
                f"'labels'){_FORMATS.get(self.backend, '')}; got {type(batch).__name__}. "
                "Override extract_detection() for other layouts."
            )
        images, targets = parts
        # references only: the probe set copies the samples it keeps
        return [
            (
                image,
                {k: v for k, v in targets[i].items() if isinstance(v, torch.Tensor)}
                if targets is not None and isinstance(targets[i], dict)
                else None,
            )
            for i, image in enumerate(images)
        ]

    def check(self, trainer: Any, pl_module: Any, batch: Any, validation: bool) -> None:
        if validation:
            self.capture(batch)

    def layers(self) -> list[str]:
        """Layer names relative to the detector (default: the backbone's last stage)."""
        return detector_layers(self.detector, self.backend, self.prefix, self.options.layer)

    def _relative(self, name: str) -> str | None:
        """``name`` relative to the detector (:func:`relative_detector_layer`)."""
        return relative_detector_layer(name, self.backend, self.prefix, self.detector)

    def tag_name(self, layer: str) -> str:
        """The full dotted name of a detector ``layer`` in the LightningModule (the logged
        tags' layer: ``"model.backbone.body.layer4"`` for a detector held as ``self.model``,
        whichever of the two names the ``layer`` argument used)."""
        return f"{self.prefix}.{layer}" if self.prefix else layer

    def share_key(self) -> Hashable:
        o = self.options
        return (
            o.num_samples,
            o.metrics_num_samples,
            o.dataloader_idx,
            o.detection_top_k,
            o.detection_score_threshold,
        )

    def plan(self, group: Sequence[CallbackView], pl_module: Any, probes: Any) -> Hashable:
        methods: list[str] = []
        layers: list[str] = []
        for cb in group:
            task = cb.task
            assert isinstance(task, DetectionTask)
            methods += [m for m in cb.options.methods if m not in methods]
            layers += [n for n in task.layers() if n not in layers]
        return tuple(methods), tuple(layers)

    def compute(self, trainer: Any, pl_module: Any, probes: Any, plan: Any) -> list[Any]:

        methods, layers = plan
        names = getattr(pl_module, "class_names", None)
        if not isinstance(names, (list, tuple)):
            names = self.class_names(trainer, pl_module)
        kwargs: dict[str, Any] = {
            "layer": list(layers),
            "methods": list(methods),
            "score_threshold": self.options.detection_score_threshold,
            "top_k": self.options.detection_top_k,
            "class_names": list(names) if names else None,
        }
        # validation images are at the training size (YOLO: letterboxed at their own size)
        explainer = detection_explainer(
            self.detector, self.backend, pl_module, [im for im, _ in probes], **kwargs
        )
        device = getattr(pl_module, "device", torch.device("cpu"))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return [explainer(image) for image, _ in probes]

    def present(
        self, trainer: Any, pl_module: Any, probes: Any, result: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        opts = self.options
        n = min(opts.num_samples, len(probes))
        pictures: dict[str, np.ndarray] = {}
        scalars: dict[str, float] = {}
        for method in opts.methods:
            for layer in self.layers():
                tag = f"{method}/{self.tag_name(layer)}"
                if any(k in ("overlay", "heatmap") for k in opts.kinds):
                    pictures[f"{tag}/detections"] = render_grid(
                        probes[:n], result[:n], method, layer, opts.detection_top_k,
                        opts.tile_size, opts.alpha, opts.colormap,
                    )
                for name, value in pointing_scores(probes, result, method, layer).items():
                    if name in opts.metrics and math.isfinite(value):
                        scalars[f"{tag}/{name}"] = value
        return pictures, scalars
