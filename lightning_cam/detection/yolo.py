"""CAM maps (any method of the registry) per detection of an ultralytics YOLO detector (v8, 11,
and the one-to-many head of v10 / 26), unpatched.

``ultralytics`` is optional: importing this module does not import it (a model can only be an
ultralytics model once the user has imported ultralytics; :func:`load_yolo` imports it).

* **The score explained.** In eval mode a ``DetectionModel`` returns its raw predictions
  ``(B, 4 + nc, A)`` (a box and the sigmoid class scores of each of the ``A`` anchors of the three
  scales) and the head's raw class logits. The detections are what NMS keeps of them
  (:func:`~lightning_cam.detection.yolo_ops.nms_with_anchors`: ultralytics' NMS, run here on
  the model's own raw output, keeping the anchor of each kept detection: no patching, no
  matching). The score explained for detection ``k`` is the pre-NMS class score of its anchor
  ``a`` for its class ``c``: ``sigmoid(logits[c, a])``, the very number reported as its score.
* **One forward, one batched backward** for the ``K`` detections (the engine's
  :meth:`~lightning_cam.engine.Explainer.explain_scores`), with the model as given (eval mode
  during the call, every flag restored, no hook left, ``param.grad`` untouched).
* **Layers.** By default :data:`YOLO_NECK`: the three neck outputs that feed the Detect head
  (the head's ``f`` inputs, e.g. ``model.15``, ``model.18``, ``model.21`` of YOLOv8) *as the
  head sees them*: the gradient of a detection's score w.r.t. each scale's head input, through
  the head (:mod:`~lightning_cam.detection.yolo_head`), the three maps summed, as the
  per-level calls of RetinaNet's shared head are. A detection's score depends on the head's
  input at its own scale only, so for gradient methods its map comes from that scale; the
  whole model runs without autograd recording and the ``K`` scores are recomputed from their
  windows of the head's input. Any module of the model can be named too (``"model.18"``,
  ``"model.22.cv3.0"``): one map each, of the gradient of the model's own output through the
  whole network (a second forward and backward when given with :data:`YOLO_NECK`).
* **Original coordinates.** The image is letterboxed as ultralytics' predictor does
  (:func:`~lightning_cam.detection.yolo_ops.letterbox`); boxes and maps are brought back to the
  image as given.
* **Refused** (with the fix): TorchScript / ONNX / other exported models (their graph hides the
  scores), heads that are not plain detection heads (segment, pose, OBB, world, RT-DETR), and
  NMS-free end-to-end heads (YOLOv10, YOLO26 with ``end2end``), whose top-k over the
  one-to-one head returns no anchor index. ``fuse()``'d models work (hooks see fused modules).

Example:
    >>> import os; os.environ.setdefault("YOLO_OFFLINE", "1")
    '1'
    >>> import torch
    >>> model = load_yolo("yolov8n.yaml", num_classes=3)
    >>> explainer = YOLOExplainer(model, score_threshold=0.0, top_k=2, imgsz=64)
    >>> explainer(torch.rand(3, 48, 64)).map("segeigencam", YOLO_NECK).shape
    torch.Size([2, 48, 64])
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_cam.detection.base import (
    DetectionExplainerBase,
    check_image,
    check_selection,
    select_detections,
)
from lightning_cam.detection.discovery import find_wrapped
from lightning_cam.detection.result import DetectionResult
from lightning_cam.detection.yolo_head import YOLOAdapter, head_scores, local_radius
from lightning_cam.detection.yolo_ops import Letterbox, letterbox, nms_with_anchors, xywh2xyxy
from lightning_cam.engine import Explainer, borrowed
from lightning_cam.engine.layers import get_layer

__all__ = [
    "EXPORTED_SUFFIXES",
    "YOLO_DEFAULT_METHODS",
    "YOLO_NECK",
    "YOLOExplainer",
    "check_yolo_model",
    "explain_yolo_batch",
    "find_yolo_model",
    "is_yolo_model",
    "load_yolo",
    "split_yolo_batch",
    "yolo_neck_layers",
    "yolo_targets",
]

#: Methods :class:`YOLOExplainer` computes when none are given: Seg-Eigen-CAM localised a tiny
#: YOLO's detections best on the shapes data (``benchmarks/detection_quality.md``, YOLO section:
#: pointing game 0.83, energy 0.66 on the object's mask, 0.003 on the other objects).
YOLO_DEFAULT_METHODS: tuple[str, ...] = ("segeigencam",)

_PREFIX = "model."  # the model inside the adapter the engine explains

#: Key of the default maps: the Detect head's three inputs (gradients through the head), the
#: scales' maps summed.
YOLO_NECK = "neck"

#: File endings of ultralytics exports (refused: their graph hides the scores).
EXPORTED_SUFFIXES = (
    ".torchscript", ".onnx", ".engine", ".tflite", ".pb", ".mlpackage", ".mlmodel", ".xml",
    ".bin", ".param", ".mnn", ".rknn", ".axmodel", "_openvino_model", "_saved_model",
    "_ncnn_model", "_paddle_model", "_web_model", "_edgetpu.tflite", "_imx_model",
)
_FIX = ("pass the ultralytics DetectionModel itself (YOLO('best.pt').model), its .pt "
        "checkpoint or its .yaml config")


def _tasks() -> Any:
    """``ultralytics.nn.tasks`` when ultralytics is imported, else ``None``."""
    return sys.modules.get("ultralytics.nn.tasks")


def is_yolo_model(obj: Any) -> bool:
    """Whether ``obj`` is an ultralytics ``DetectionModel`` (any head; see
    :func:`check_yolo_model` for what is explained). Never imports ultralytics."""
    tasks = _tasks()
    return tasks is not None and isinstance(obj, tasks.DetectionModel)


def find_yolo_model(obj: Any) -> nn.Module | None:
    """The ``DetectionModel`` in ``obj``: itself, its ``model`` / ``detector`` attribute (an
    ultralytics ``YOLO`` object, a LightningModule) or its only child that is one; else ``None``."""
    return find_wrapped(obj, is_yolo_model)


def _refuse_exported(model: Any) -> None:
    if isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise TypeError(
            "a TorchScript YOLO runs a compiled graph that no hook sees and whose scores are "
            f"not differentiable per anchor; {_FIX}."
        )
    backend = sys.modules.get("ultralytics.nn.autobackend")
    if backend is not None and isinstance(model, backend.AutoBackend):
        raise TypeError(
            "an ultralytics AutoBackend of an exported model (ONNX, TensorRT, OpenVINO ...) "
            f"hides the scores' graph; {_FIX}."
        )


def check_yolo_model(model: Any) -> nn.Module:
    """The ``DetectionModel`` to explain in ``model``, checked; returns its Detect head.

    Raises:
        TypeError: No ultralytics DetectionModel (TorchScript, exported, another model).
        ValueError: A head that is no plain detection head, or an NMS-free end-to-end head.
    """
    _refuse_exported(model)
    found = find_yolo_model(model)
    if found is None:
        _refuse_exported(getattr(model, "model", None))
        raise TypeError(
            f"{type(model).__name__} is not and does not wrap an ultralytics DetectionModel; "
            f"{_FIX}."
        )
    from ultralytics.nn.modules import head as heads

    det: Any = found.model[-1]  # type: ignore[index]
    plain = tuple(getattr(heads, n) for n in ("Detect", "v10Detect") if hasattr(heads, n))
    if type(det) not in plain:
        raise ValueError(
            f"{type(found).__name__} has a {type(det).__name__} head; lightning-cam explains "
            "plain YOLO detection heads (Detect, v10Detect: ultralytics task 'detect'). Train or "
            "load a detection model (e.g. yolo11n.yaml) instead."
        )
    if getattr(det, "end2end", False):
        has_many = getattr(det, "cv2", None) is not None
        fix = ("set model.end2end = False: its one-to-many head and NMS give each detection "
               "an anchor, which lightning-cam explains" if has_many else
               "fuse() removed its one-to-many head: load the checkpoint unfused, set "
               "model.end2end = False (the one-to-many head with NMS) and explain that")
        raise ValueError(
            f"{type(det).__name__} runs NMS-free (end2end): its detections are a top-k over the "
            "one-to-one head, and the outputs do not say which anchor each came from; " + fix
            + "."
        )
    return det


def yolo_neck_layers(model: nn.Module) -> list[str]:
    """The dotted names of the modules feeding the Detect head (its ``f``), smallest stride
    first (``["model.15", "model.18", "model.21"]`` for YOLOv8)."""
    det: Any = check_yolo_model(model)
    inputs = det.f if isinstance(det.f, (list, tuple)) else [det.f]
    return [f"model.{int(i) % len(model.model)}" for i in inputs]  # type: ignore[arg-type]


@contextlib.contextmanager
def _quiet_ultralytics() -> Iterator[None]:
    """ultralytics logs to stdout at INFO while building ("Overriding model.yaml nc=..."):
    warnings only, for the duration (a library does not print)."""
    import logging

    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _build(cfg: Any, num_classes: int | None) -> nn.Module:
    from ultralytics.nn.tasks import DetectionModel

    with _quiet_ultralytics():
        return DetectionModel(cfg, nc=num_classes, verbose=False).eval()


def _load_pt(path: Path, device: Any) -> nn.Module:
    from ultralytics.nn import tasks

    # ultralytics >= 8.4: load_checkpoint; before: attempt_load_one_weight
    old = "attempt_load_one_weight"
    loader: Any = getattr(tasks, "load_checkpoint", None) or getattr(tasks, old)
    with _quiet_ultralytics():
        model, _ = loader(str(path), device=device, fuse=False)
    return model  # type: ignore[no-any-return]


def load_yolo(
    source: str | Path | dict[str, Any],
    num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """An ultralytics ``DetectionModel`` from a ``.pt`` checkpoint or a ``.yaml`` config.

    Args:
        source: A ``.pt`` file (an ultralytics checkpoint: never downloaded) or a ``.yaml``
            config: a file, or one of ultralytics' own (``"yolov8n.yaml"``, ``"yolo11s.yaml"``),
            built with random weights; or a config as a dict (ultralytics' yaml, loaded).
        num_classes: A config's number of classes (default: the config's).
        device: Where to put the model.

    Raises:
        ValueError: An exported model (TorchScript, ONNX ...) or an unknown file type.
        FileNotFoundError: A ``.pt`` file that does not exist.
    """
    if isinstance(source, dict):
        model = _build(source, num_classes)
        check_yolo_model(model)
        return model.to(device) if device is not None else model
    text = str(source)
    low = text.lower().rstrip("/")
    if low.endswith(EXPORTED_SUFFIXES):
        raise ValueError(
            f"{text} is an exported model: its graph (TorchScript, ONNX, TensorRT ...) hides "
            "the scores lightning-cam differentiates; pass the .pt checkpoint it was exported "
            "from (or its .yaml config)."
        )
    if low.endswith((".yaml", ".yml")):
        model = _build(text, num_classes)
    elif low.endswith((".pt", ".pth")):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(
                f"no YOLO checkpoint at {text} (lightning-cam never downloads weights: give a "
                "local .pt file, or a .yaml config for random weights)"
            )
        model = _load_pt(path, device)
    else:
        raise ValueError(f"a YOLO model is a .pt checkpoint or a .yaml config, got {text!r}")
    check_yolo_model(model)
    return model.to(device) if device is not None else model


def _raw_predictions(output: Any, det: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(y, logits)`` of the model's eval output: ``y`` ``(B, 4 + nc, A)`` and the class
    logits ``(B, nc, A)`` that its scores are the sigmoid of (``None`` when not found)."""
    y, raw = (output[0], output[1]) if isinstance(output, (tuple, list)) else (output, None)
    nc = int(det.nc)
    if not isinstance(y, torch.Tensor) or y.dim() != 3 or y.shape[1] != 4 + nc:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"the YOLO model returned {shape}, not raw predictions (B, 4 + {nc}, anchors): an "
            "end-to-end or export-mode head; set model.end2end = False and head.export = False."
        )
    if isinstance(raw, dict) and "one2many" in raw:
        raw = raw["one2many"]
    if isinstance(raw, dict) and isinstance(raw.get("scores"), torch.Tensor):
        return y, raw["scores"]
    if isinstance(raw, (list, tuple)) and raw and all(isinstance(t, torch.Tensor) for t in raw):
        # ultralytics < 8.4: per-scale (B, 4 * reg_max + nc, h, w), class logits last
        b = raw[0].shape[0]
        return y, torch.cat([t.view(b, t.shape[1], -1)[:, -nc:] for t in raw], dim=-1)
    return y, None


class YOLOExplainer(DetectionExplainerBase):
    """Grad-CAM (any method) per detection of an ultralytics YOLO ``DetectionModel``.

    The same call as :class:`~lightning_cam.detection.DetectionExplainer`: an image in, a
    :class:`DetectionResult` out, with boxes, labels (ultralytics' class indices, from 0),
    scores and ``maps[method][layer]`` ``(K, H, W)`` in the image's coordinates.

    Args:
        model: A ``DetectionModel`` (or an ultralytics ``YOLO`` / a module wrapping one).
        layer: Dotted module name(s) of the model and / or :data:`YOLO_NECK`; ``None``:
            :data:`YOLO_NECK`.
        methods: CAM methods of the registry (default: :data:`YOLO_DEFAULT_METHODS`).
        score_threshold: Explain detections scoring at least this (also NMS's candidates).
        top_k: Explain at most this many detections (the highest scores; ultralytics' ``max_det``).
        class_names: Names indexed by label; default: the model's ``names``.
        iou_threshold: NMS IoU threshold (ultralytics' ``iou``, default 0.7).
        imgsz: The letterbox size (an int or ``(h, w)``); default: the checkpoint's training
            ``imgsz``, else 640.

    Raises:
        TypeError, ValueError: See :func:`check_yolo_model`; unknown layers or methods, bad
            thresholds.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | Sequence[str] | None = None,
        methods: str | Sequence[str] = YOLO_DEFAULT_METHODS,
        score_threshold: float = 0.5,
        top_k: int = 10,
        class_names: Sequence[str] | None = None,
        iou_threshold: float = 0.7,
        imgsz: int | tuple[int, int] | None = None,
    ) -> None:
        self.head: Any = check_yolo_model(model)
        found: Any = find_yolo_model(model)
        self.model = found
        self.methods = check_selection(methods, score_threshold, top_k)
        if not 0.0 <= float(iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
        self.score_threshold, self.top_k = float(score_threshold), top_k
        self.iou_threshold = float(iou_threshold)
        self.imgsz = _check_imgsz(imgsz, self.model)
        self.stride = int(max(self.model.stride.max().item(), 32))
        if class_names is None:
            names = getattr(self.model, "names", None)
            class_names = [names[i] for i in sorted(names)] if isinstance(names, dict) else names
        self.class_names = list(class_names) if class_names is not None else None
        self.layers = self._check_layers(layer)
        self.roi_cams, self.roi_layer = False, ""
        self._neck = yolo_neck_layers(self.model)
        self._adapter = YOLOAdapter(self.model)
        # the wrapper's own flags in eval mode (the model's stay the user's: borrowed per call)
        self._adapter.training = self._adapter.neck.training = False
        cls_head = getattr(self.head, "one2many", {}).get("cls_head", None)
        branches: Any = cls_head if cls_head is not None else self.head.cv3
        self._branches = list(branches)
        self._radii: list[int | None] = [local_radius(b) for b in self._branches]
        # raw maps (normalize=False) at the layers' resolution: brought to the image here
        self._neck_explainer = (
            Explainer(self._adapter, "neck", methods=self.methods, normalize=False)
            if YOLO_NECK in self.layers else None
        )
        named = [_PREFIX + n for n in self.layers if n != YOLO_NECK]
        self._layer_explainer = (
            Explainer(self._adapter, named, methods=self.methods, normalize=False)
            if named else None
        )

    def _check_layers(self, layer: str | Sequence[str] | None) -> list[str]:
        names = [layer] if isinstance(layer, str) else list(layer) if layer is not None else []
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"layer names must be strings, got {type(n).__name__}")
            if n != YOLO_NECK:
                get_layer(self.model, n)  # unknown names: ValueError with near matches
        return list(dict.fromkeys(names)) or [YOLO_NECK]

    def _input(self, image: torch.Tensor) -> tuple[torch.Tensor, Letterbox]:
        p = next(self.model.parameters())
        x, box = letterbox(image.detach().to(p.device), self.imgsz, self.stride)
        return x[None].to(p.dtype), box

    def _channels(self) -> int | None:
        cfg = getattr(self.model, "yaml", None)
        return int(cfg.get("ch", 3)) if isinstance(cfg, dict) else None

    def _select(self, output: Any) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """NMS on the raw output; ``(nms, keep, y, logits)``."""
        y, logits = _raw_predictions(output, self.head)
        det = nms_with_anchors(y[0], self.score_threshold, self.iou_threshold, self.top_k)
        return det, select_detections(det.scores, self.score_threshold, self.top_k), y, logits

    def detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The detections alone (one no-grad forward, no maps): ``boxes`` ``(K, 4)`` in the
        image's pixels, ``labels``, ``scores``, as :meth:`__call__` reports them."""
        x, box = self._input(check_image(image, self._channels()))
        with borrowed(self.model), torch.no_grad():
            det, keep, _, _ = self._select(self.model(x))
        return {"boxes": box.boxes_to_original(det.boxes[keep]), "labels": det.labels[keep].long(),
                "scores": det.scores[keep].float()}

    def __call__(self, image: torch.Tensor) -> DetectionResult:
        """Detect and explain one image.

        Args:
            image: ``(C, H, W)`` float RGB image in ``[0, 1]``, any size, on any device.

        Returns:
            A :class:`DetectionResult` with the ``K <= top_k`` detections NMS keeps that score at
            least ``score_threshold``; ``K`` may be 0.
        """
        x, box = self._input(check_image(image, self._channels()))
        chosen: dict[str, Any] = {}
        cams: dict[str, dict[str, torch.Tensor]] = {m: {} for m in self.methods}
        with _fresh_anchor_cache(self.head):
            if self._neck_explainer is not None:
                explanation, _ = self._neck_explainer.explain_scores(
                    x, lambda out: self._neck_scores(out, chosen), upsample=False)
                self._check_explained(explanation.scores, chosen)
                for m in self.methods:
                    cams[m][YOLO_NECK] = explanation.cams[m]["neck"]
            if self._layer_explainer is not None:
                explanation, _ = self._layer_explainer.explain_scores(
                    x, lambda out: self._output_scores(out, chosen), upsample=False)
                self._check_explained(explanation.scores, chosen)
                for m in self.methods:
                    for n in self.layers:
                        if n != YOLO_NECK:
                            cams[m][n] = explanation.cams[m][_PREFIX + n]
        return self._result(cams, chosen["det"], chosen["keep"], box)

    def _selected(self, output: Any, chosen: dict[str, Any]) -> tuple[Any, torch.Tensor, Any]:
        """NMS on the raw output; the same detections in every pass of a call."""
        det, keep, y, logits = self._select(output)
        if "det" in chosen and not torch.equal(chosen["det"].anchors[chosen["keep"]],
                                               det.anchors[keep]):
            raise RuntimeError("the model gave other detections in a second forward of the same "
                               "input (is it deterministic in eval mode?)")
        chosen["det"], chosen["keep"] = det, keep
        return det, keep, (y, logits)

    def _neck_scores(self, output: Any, chosen: dict[str, Any]) -> torch.Tensor:
        """The kept detections' scores from the head's inputs (the ``neck`` leaves)."""
        out, feats = output
        det, keep, _ = self._selected(out, chosen)
        if feats is None:
            raise ValueError(
                "this ultralytics version's outputs do not carry the Detect head's inputs "
                f"(ultralytics >= 8.4 does); explain named layers instead: layer={self._neck}"
            )
        anchors, labels = det.anchors[keep], det.labels[keep]
        scores = head_scores(self._branches, self._radii, feats, anchors, labels)
        expected = det.scores[keep].to(scores.device, scores.dtype)
        if any(r is not None for r in self._radii) and not torch.allclose(
                scores.detach(), expected, rtol=0, atol=1e-5):
            self._radii = [None] * len(self._branches)  # not local after all: whole maps
            scores = head_scores(self._branches, self._radii, feats, anchors, labels)
        return scores

    def _output_scores(self, output: Any, chosen: dict[str, Any]) -> torch.Tensor:
        """The kept detections' scores from the model's own outputs (named layers)."""
        det, keep, (y, logits) = self._selected(output[0], chosen)
        anchors, labels = det.anchors[keep], det.labels[keep]
        if logits is None:
            return y[0, 4 + labels, anchors]  # type: ignore[no-any-return]
        return torch.sigmoid(logits[0, labels, anchors].float())

    @staticmethod
    def _check_explained(explained: torch.Tensor | None, chosen: dict[str, Any]) -> None:
        """Never a map of another score than the one reported."""
        reported = chosen["det"].scores[chosen["keep"]].float().cpu()
        if explained is not None and explained.numel() and not torch.allclose(
                explained.cpu(), reported, rtol=0, atol=1e-5):
            raise RuntimeError(f"explained scores {explained.tolist()} != reported "
                               f"{reported.tolist()}: the model's head does not match its output")

    def _result(
        self, cams: dict[str, dict[str, torch.Tensor]], det: Any, keep: torch.Tensor,
        box: Letterbox,
    ) -> DetectionResult:
        result = DetectionResult(
            boxes=box.boxes_to_original(det.boxes[keep]).cpu(),
            labels=det.labels[keep].long().cpu(),
            scores=det.scores[keep].float().cpu(),
            image_size=box.size,
            layers=list(self.layers),
            methods=list(self.methods),
            class_names=self.class_names,
        )
        k = int(keep.numel())
        for m in self.methods:
            result.maps[m] = {
                n: box.layer_maps_to_original(cams[m][n]).cpu() if k
                else torch.zeros((0, *box.size))
                for n in self.layers
            }
        return result


@contextlib.contextmanager
def _fresh_anchor_cache(head: Any) -> Iterator[None]:
    """The Detect head caches its anchors per input shape; a cache made under inference mode
    (ultralytics' predictor, Lightning's validation) cannot enter autograd: rebuild it for the
    call, then put the head's own cache back."""
    saved = {n: getattr(head, n, None) for n in ("anchors", "strides", "shape")}
    anchors = saved["anchors"]
    stale = isinstance(anchors, torch.Tensor) and anchors.is_inference()
    try:
        if stale:
            head.shape = None
        yield
    finally:
        if stale:
            for n, v in saved.items():
                setattr(head, n, v)


def _check_imgsz(imgsz: Any, model: Any) -> int | tuple[int, int]:
    if imgsz is None:
        args = getattr(model, "args", None)
        imgsz = args.get("imgsz", 640) if isinstance(args, dict) else 640
        imgsz = 640 if imgsz is None else imgsz
    if isinstance(imgsz, (list, tuple)) and len(imgsz) == 1:
        imgsz = imgsz[0]
    if isinstance(imgsz, int) and not isinstance(imgsz, bool) and imgsz >= 32:
        return imgsz
    if (isinstance(imgsz, (list, tuple)) and len(imgsz) == 2
            and all(isinstance(v, int) and v >= 32 for v in imgsz)):
        return (int(imgsz[0]), int(imgsz[1]))
    raise ValueError(f"imgsz must be an int >= 32 or (h, w), got {imgsz!r}")


def explain_yolo_batch(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    layers: str | Sequence[str] | None = None,
    methods: str | Sequence[str] = YOLO_DEFAULT_METHODS,
    top_k: int = 5,
    score_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    imgsz: int | tuple[int, int] | None = None,
) -> list[DetectionResult]:
    """Explain the detections of a list of ``(C, H, W)`` images with :class:`YOLOExplainer`
    (for callbacks and scripts; ``model`` may wrap the DetectionModel)."""
    explainer = YOLOExplainer(
        model, layer=layers, methods=methods, score_threshold=score_threshold, top_k=top_k,
        class_names=class_names, imgsz=imgsz,
    )
    return explainer.explain(images)


def split_yolo_batch(
    batch: Any,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None] | None:
    """``(images, targets)`` of an ultralytics batch ``{"img": (B, C, H, W), "batch_idx": (N,),
    "cls": (N, 1), "bboxes": (N, 4) normalised xywh}`` (uint8 images become floats in
    ``[0, 1]``; targets: boxes xyxy in pixels, labels); ``None`` when ``batch`` is not one."""
    if not isinstance(batch, dict) or not isinstance(batch.get("img"), torch.Tensor):
        return None
    img = batch["img"]
    if img.dim() != 4:
        return None
    images = list((img.float() / 255 if not img.is_floating_point() else img).unbind(0))
    if not all(isinstance(batch.get(k), torch.Tensor) for k in ("batch_idx", "cls", "bboxes")):
        return images, None
    h, w = int(img.shape[-2]), int(img.shape[-1])
    xyxy = xywh2xyxy(batch["bboxes"].float().reshape(-1, 4)) * torch.tensor(
        [w, h, w, h], dtype=torch.float32, device=batch["bboxes"].device)
    idx, cls = batch["batch_idx"].long().flatten(), batch["cls"].long().flatten()
    targets = [{"boxes": xyxy[idx == i], "labels": cls[idx == i]} for i in range(len(images))]
    return images, targets


def yolo_targets(
    targets: Sequence[dict[str, torch.Tensor]], size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """torchvision-style targets (``boxes`` xyxy pixels, ``labels``) of images of ``size``
    ``(H, W)`` -> the ``batch_idx``, ``cls``, ``bboxes`` (normalised xywh) of ultralytics' loss."""
    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    idx, cls, boxes = [], [], []
    for i, t in enumerate(targets):
        b = t["boxes"].detach().float().cpu().reshape(-1, 4) / scale
        boxes.append(torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], dim=1))
        cls.append(t["labels"].detach().float().cpu().reshape(-1, 1))
        idx.append(torch.full((b.shape[0],), float(i)))
    return {"batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(boxes)}
