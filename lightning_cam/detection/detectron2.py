"""Grad-CAM and Grad-CAM++ for the detections of detectron2 models, without editing detectron2.

The original Grad-CAM.pytorch tool asked its users to edit detectron2's source (record the
proposal of each Faster R-CNN detection in ``fast_rcnn_inference_single_image``; record the
feature level of each RetinaNet detection in ``inference_single_image``). Here detectron2 is
used as installed, through its public modules and methods; the only hooks are the engine's, for
the duration of one call:

* **Faster R-CNN** (``GeneralizedRCNN``, e.g. model zoo
  ``PascalVOC-Detection/faster_rcnn_R_50_C4.yaml``): per detection, CAMs of backbone layers
  (``backbone.res4``, ...), and with ``roi_cams=True`` the CAM of its proposal's RoI feature map
  pasted into the proposal box (the original tool's method). For RoI maps the eval path of
  ``GeneralizedRCNN.inference`` is written out with detectron2's own modules (preprocess,
  backbone, proposal generator, RoI pooling, box head, ``box_predictor.inference``, which
  returns the proposal index of every detection); the RoI CAM is the engine's, on the box head
  alone (``roi_heads.res5`` for C4 heads, the pooled features ``roi_heads.box_pooler`` for FPN
  heads), from the pooled features of the ``K`` detections' proposals.
* **RetinaNet** (e.g. ``COCO-Detection/retinanet_R_50_FPN_3x.yaml``): per detection, CAMs of
  ``head.cls_subnet.0`` ... ``head.cls_subnet.7`` or any backbone layer. The head is shared
  across FPN levels: the engine captures every call and sums the per-call CAMs; a detection's
  score depends on its own level only, so the other levels have zero gradient and add nothing
  (no "feature level" patch).

Images are given as for the torchvision adapter, ``(C, H, W)`` RGB floats in ``[0, 1]``; they are
resized as detectron2's ``DefaultPredictor`` does (shortest edge ``INPUT.MIN_SIZE_TEST``, longest
at most ``INPUT.MAX_SIZE_TEST``), scaled to ``[0, 255]`` and put in the model's channel order
(``INPUT.FORMAT``). Maps are aligned with the image as given: ``(K, H, W)``.

detectron2 is optional: importing this module does not import it; building or explaining a
model without it raises an :class:`ImportError` that says how to install it.

Example (needs detectron2's trained weights file, so it is shown, not run; the tests build the
same models from their configs with random weights)::

    model, cfg = build_detectron2_model(
        "COCO-Detection/retinanet_R_50_FPN_3x.yaml", "model_final.pkl")
    explainer = Detectron2Explainer(model, cfg, layer="head.cls_subnet.7")
    result = explainer(image)  # (3, H, W) in [0, 1]
    result.map().shape         # (K, H, W); the default method, EigenGrad-CAM
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_cam.detection.base import (
    DEFAULT_METHODS,
    DetectionExplainerBase,
    check_image,
    check_selection,
    select_detections,
)
from lightning_cam.detection.discovery import find_wrapped
from lightning_cam.detection.rescoring import RoIRecord
from lightning_cam.detection.result import D2_ROI_LAYERS, DetectionResult
from lightning_cam.engine import Explainer, borrowed
from lightning_cam.engine.layers import get_layer

__all__ = [
    "D2_ROI_LAYERS",
    "INSTALL_HINT",
    "Detectron2Explainer",
    "build_detectron2_model",
    "default_detectron2_layer",
    "detectron2_class_names",
    "explain_detectron2_batch",
    "find_detectron2_model",
    "is_detectron2_model",
    "require_detectron2",
    "resolve_config_file",
    "split_detectron2_batch",
]

#: How users install detectron2 (upstream installs from source; it is not on PyPI).
INSTALL_HINT = (
    "install it from source: pip install 'git+https://github.com/facebookresearch/detectron2.git'"
    " (needs torch first; see https://detectron2.readthedocs.io/en/latest/tutorials/install.html)"
)

_PREFIX = "model."


def require_detectron2() -> Any:
    """Import and return the ``detectron2`` package.

    Raises:
        ImportError: detectron2 is not installed (the message says how to install it).
    """
    try:
        import detectron2
    except ImportError as err:
        raise ImportError(
            f"The detectron2 backend needs detectron2, which is not installed ({err}); "
            f"{INSTALL_HINT}"
        ) from err
    return detectron2


def is_detectron2_model(model: Any) -> bool:
    """Whether ``model`` is a detectron2 detector this module explains (``GeneralizedRCNN`` or a
    dense detector such as ``RetinaNet``). Never imports detectron2: without it loaded, no
    detectron2 model can exist."""
    if not isinstance(model, nn.Module) or "detectron2" not in sys.modules:
        return False
    try:
        from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
        from detectron2.modeling.meta_arch.retinanet import RetinaNet
    except ImportError:
        return False
    kinds: tuple[type, ...] = (GeneralizedRCNN, RetinaNet)
    try:
        from detectron2.modeling.meta_arch.dense_detector import DenseDetector

        kinds = (*kinds, DenseDetector)
    except ImportError:  # pragma: no cover - older detectron2
        pass
    return isinstance(model, kinds)


def find_detectron2_model(obj: Any) -> nn.Module | None:
    """The detectron2 detector in ``obj``: ``obj`` itself, its ``model`` / ``detector``
    attribute, or its only direct child that is one (e.g. a LightningModule wrapping one).
    ``None`` when there is none."""
    return find_wrapped(obj, is_detectron2_model)


def split_detectron2_batch(
    batch: Any, input_format: str = "BGR"
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None] | None:
    """``(images, targets)`` of a batch of detectron2's data loaders, or ``None`` when ``batch``
    is not one: :func:`~lightning_cam.detection.split_detection_batch`'s counterpart.

    A detectron2 batch is a list of dicts with ``"image"`` ``(C, H, W)`` in ``[0, 255]`` in the
    model's channel order (already resized by the dataset mapper) and, for annotated data,
    ``"instances"`` with ``gt_boxes`` / ``gt_classes``. Images become RGB floats in ``[0, 1]``
    (explain them with ``Detectron2Explainer(..., min_size=0)``: no second resize); targets
    ``{"boxes": (N, 4), "labels": (N,)}`` in the same pixels (``None`` unless every item has
    them).
    """
    if not (
        isinstance(batch, (list, tuple)) and batch
        and all(isinstance(d, dict) and isinstance(d.get("image"), torch.Tensor)
                and d["image"].dim() == 3 for d in batch)
    ):
        return None
    images: list[torch.Tensor] = []
    targets: list[dict[str, torch.Tensor]] = []
    for item in batch:
        image = item["image"].float().div(255.0).clamp(0, 1)
        images.append(image.flip(0) if input_format == "BGR" else image)
        inst = item.get("instances")
        has = callable(getattr(inst, "has", None))
        if has and inst.has("gt_boxes") and inst.has("gt_classes"):
            targets.append({"boxes": inst.gt_boxes.tensor.float(),
                            "labels": inst.gt_classes.long()})
    return images, targets if len(targets) == len(images) else None


# ----------------------------------------------------------------------------- configs, models


def _zoo_configs() -> list[str]:
    from detectron2 import model_zoo

    root = Path(model_zoo.__file__).parent / "configs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


def resolve_config_file(config_file: str | os.PathLike[str]) -> str:
    """A detectron2 config: a YAML file path, or a model-zoo name
    (``"COCO-Detection/retinanet_R_50_FPN_3x.yaml"``, the ``.yaml`` may be left out).

    Raises:
        ImportError: detectron2 is not installed.
        ValueError: Neither a file nor a model-zoo config (near matches listed), or a Python
            (LazyConfig) config, which this backend does not read.
    """
    require_detectron2()
    name = os.fspath(config_file)
    if name.endswith(".py"):
        raise ValueError(
            f"config {name!r} is a LazyConfig (.py) config; the detectron2 backend reads YAML "
            "configs (e.g. 'COCO-Detection/retinanet_R_50_FPN_3x.yaml')"
        )
    path = Path(name).expanduser()
    if path.is_file():
        return str(path)
    from detectron2 import model_zoo

    zoo_name = name if name.endswith(".yaml") else f"{name}.yaml"
    try:
        return str(model_zoo.get_config_file(zoo_name))
    except RuntimeError:
        close = difflib.get_close_matches(zoo_name, _zoo_configs(), n=4, cutoff=0.5)
        hint = f" Closest model-zoo configs: {', '.join(close)}." if close else ""
        raise ValueError(
            f"config {name!r} is neither a YAML file nor a detectron2 model-zoo config.{hint}"
        ) from None


def _opt_text(cfg: Any, key: str, value: Any) -> str:
    """``value`` as the text yacs parses; an int where the config holds a float becomes a float
    (``SCORE_THRESH_TEST 0`` -> ``0.0``: yacs rejects the type change)."""
    text = value if isinstance(value, str) else repr(list(value) if isinstance(value, tuple)
                                                   else value)
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, float):
        try:
            return repr(float(text))
        except ValueError:
            pass
    return text


def _config(
    config_file: str | os.PathLike[str], opts: Sequence[Any], device: str | torch.device
) -> Any:
    from detectron2.config import get_cfg

    path = resolve_config_file(config_file)
    opts = list(opts)
    if len(opts) % 2:
        raise ValueError(f"opts must be KEY VALUE pairs, got an odd number of items: {opts}")
    cfg = get_cfg()
    try:
        cfg.merge_from_file(path)
        pairs = []
        for key, value in zip(opts[::2], opts[1::2], strict=True):
            pairs += [str(key), _opt_text(cfg, str(key), value)]
        cfg.merge_from_list(pairs)
    except (KeyError, AssertionError, ValueError) as err:
        raise ValueError(f"bad detectron2 config option: {' '.join(str(err).split())}") from err
    cfg.MODEL.DEVICE = str(device)
    return cfg


def build_detectron2_model(
    config_file: str | os.PathLike[str],
    weight_path: str | os.PathLike[str] | None = None,
    opts: Sequence[Any] = (),
    device: str | torch.device = "cpu",
    score_threshold: float | None = None,
    top_k: int | None = None,
) -> tuple[nn.Module, Any]:
    """Build a detectron2 model from its config, in eval mode, with weights from a file.

    Args:
        config_file: A YAML config file, or a model-zoo name such as
            ``"PascalVOC-Detection/faster_rcnn_R_50_C4.yaml"`` (see :func:`resolve_config_file`).
        weight_path: A detectron2 checkpoint (``model_final.pkl`` of the model zoo, or a
            ``.pth`` written by detectron2's trainer), loaded with ``DetectionCheckpointer``.
            ``None``: random weights (for tests only: the maps mean nothing).
        opts: ``KEY VALUE`` pairs merged into the config (``["INPUT.MIN_SIZE_TEST", 320]``).
        device: Torch device (``MODEL.DEVICE``).
        score_threshold: Lower the model's own test score threshold to this (never raise it),
            so that it returns every detection an explainer may ask for.
        top_k: Raise ``TEST.DETECTIONS_PER_IMAGE`` to this (never lower it).

    Returns:
        ``(model, cfg)``: the model, and the frozen config (it holds the input size and format
        and the dataset whose class names :func:`detectron2_class_names` reads).

    Raises:
        ImportError: detectron2 is not installed.
        ValueError: Unknown config or option; weights that do not fit the model (decided from
            the keys and shapes detectron2's checkpointer matched: none matched, some with
            other shapes, or some of the model's missing).
        FileNotFoundError: ``weight_path`` does not exist.
    """
    require_detectron2()
    from detectron2.modeling import build_model

    cfg = _config(config_file, opts, device)
    if score_threshold is not None:
        for node in (cfg.MODEL.ROI_HEADS, cfg.MODEL.RETINANET):
            node.SCORE_THRESH_TEST = min(float(node.SCORE_THRESH_TEST), float(score_threshold))
    if top_k is not None:
        cfg.TEST.DETECTIONS_PER_IMAGE = max(int(cfg.TEST.DETECTIONS_PER_IMAGE), int(top_k))
    cfg.freeze()
    if weight_path is not None and not Path(weight_path).expanduser().is_file():
        raise FileNotFoundError(f"weights file {os.fspath(weight_path)!r} does not exist")
    model = build_model(cfg)
    model.eval()
    if weight_path is not None:
        _load_weights(model, weight_path, config_file)
    return model, cfg


def _load_weights(
    model: nn.Module, weight_path: str | os.PathLike[str], config_file: str | os.PathLike[str]
) -> None:
    """Load a checkpoint with detectron2's ``DetectionCheckpointer`` and decide from its report of
    incompatible keys (keys and shapes, not values) whether the weights fit the model.

    Raises:
        ValueError: The file cannot be read; no weight of it fits the model; some weights have
            other shapes than the model's (skipped by detectron2: wrong config for the file); or
            some of the model's weights are not in the file (they would stay random).
    """
    from detectron2.checkpoint import DetectionCheckpointer

    report: list[Any] = []

    class _Reporting(DetectionCheckpointer):  # type: ignore[misc]
        def _log_incompatible_keys(self, incompatible: Any) -> None:
            report.append(incompatible)
            super()._log_incompatible_keys(incompatible)

    path, config = os.fspath(weight_path), os.fspath(config_file)
    try:
        _Reporting(model).load(str(Path(path).expanduser()))
    except (OSError, RuntimeError, ValueError, KeyError, AssertionError, EOFError,
            TypeError, AttributeError, ImportError) as err:
        raise ValueError(f"cannot load weights from {path!r}: {err}") from err
    if not report:  # pragma: no cover - every fvcore checkpointer reports
        return
    incompatible = report[0]
    wanted = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    missing = set(incompatible.missing_keys)
    shapes = list(incompatible.incorrect_shapes)
    skipped = {k for k, _, _ in shapes}
    # parameters only: detectron2 drops pixel_mean / pixel_std from the missing keys whatever
    # the file holds (they come from the config)
    loaded = [k for k, _ in model.named_parameters() if k not in missing and k not in skipped]

    def some(keys: Sequence[str], n: int = 3) -> str:
        keys = list(keys)
        return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")

    if not loaded:
        raise ValueError(
            f"no weight of {path!r} fits the model of {config!r} (none of its parameters is in "
            "the file with the model's shape; wrong config for these weights?)"
        )
    if shapes:
        k, file_shape, model_shape = shapes[0]
        raise ValueError(
            f"{len(shapes)} weight(s) of {path!r} have other shapes than the model of "
            f"{config!r}, e.g. {k}: {list(file_shape)} in the file, {list(model_shape)} in the "
            "model; detectron2 would leave them random. Use the config the weights were "
            "trained with (e.g. MODEL.ROI_HEADS.NUM_CLASSES / MODEL.RETINANET.NUM_CLASSES in "
            "--opts)."
        )
    absent = [k for k in wanted if k in missing]
    if absent:
        raise ValueError(
            f"{len(absent)} weight(s) of the model of {config!r} are not in {path!r} and would "
            f"stay random: {some(absent)}. Give the checkpoint of the whole trained model "
            "(e.g. model_final.pkl), not a backbone's."
        )


def detectron2_class_names(cfg: Any) -> list[str] | None:
    """Class names of a config's test dataset, from detectron2's ``MetadataCatalog``
    (``thing_classes``, indexed by label), or ``None`` when it has none or when their number is
    not the model's number of classes."""
    require_detectron2()
    import detectron2.data  # noqa: F401 - registers the builtin datasets' metadata
    from detectron2.data import MetadataCatalog

    model_cfg = cfg.MODEL
    arch = str(model_cfg.META_ARCHITECTURE)
    node = model_cfg.RETINANET if arch == "RetinaNet" else model_cfg.ROI_HEADS
    num_classes = int(node.NUM_CLASSES)
    for name in list(cfg.DATASETS.TEST or ()):
        names = MetadataCatalog.get(name).get("thing_classes", None)
        if names and len(names) == num_classes:  # else: a model of other classes
            return [str(n) for n in names]
    return None


def default_detectron2_layer(model: nn.Module) -> str:
    """The backbone's last stage: ``backbone.res4`` (C4 backbones) or
    ``backbone.bottom_up.res5`` (FPN backbones)."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(
            f"{type(model).__name__} has no backbone to take the default layer from; pass "
            "layer=... (a dotted name from model.named_modules())."
        )
    prefix, body = "backbone.", backbone
    bottom_up = getattr(backbone, "bottom_up", None)
    if isinstance(bottom_up, nn.Module):
        prefix, body = "backbone.bottom_up.", bottom_up
    names = [n for n, _ in body.named_children()]
    stages = [n for n in names if n.startswith("res")] or names
    if not stages:
        raise ValueError("the backbone has no stages; pass layer=...")
    return prefix + stages[-1]


# ----------------------------------------------------------------------------- adapter


class _Detectron2Adapter(nn.Module):
    """``(1, C, h, w)`` model-ready image -> the model's outputs: the engine's view of a
    detectron2 detector. ``out_size`` is the size of the original image (boxes are scaled to
    it, as ``DefaultPredictor`` does with ``"height"`` / ``"width"``).

    With ``record_rois`` (Faster R-CNN), the forward is ``GeneralizedRCNN.inference``'s eval
    path written out with the model's own modules, keeping the pooled RoI features, the
    proposals and the proposal index of every detection.
    """

    def __init__(self, model: nn.Module, record_rois: bool = False) -> None:
        super().__init__()
        self.model: Any = model
        self.record_rois = record_rois
        self.out_size: tuple[int, int] = (0, 0)
        self.record: RoIRecord | None = None

    def _inputs(self, x: torch.Tensor) -> list[dict[str, Any]]:
        height, width = self.out_size
        return [{"image": im, "height": height, "width": width} for im in x.unbind(0)]

    def forward(self, x: torch.Tensor) -> list[dict[str, Any]]:
        if not self.record_rois:
            return self.model(self._inputs(x))
        return self._rcnn_forward(self._inputs(x))

    def _rcnn_forward(self, batched: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from detectron2.modeling.postprocessing import detector_postprocess

        model = self.model
        images = model.preprocess_image(batched)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        rh = model.roi_heads
        boxes = [p.proposal_boxes for p in proposals]
        if hasattr(rh, "res5"):  # Res5ROIHeads (C4)
            pooled = rh.pooler([features[f] for f in rh.in_features], boxes)
            predictions = rh.box_predictor(rh.res5(pooled).mean(dim=[2, 3]))
        else:  # StandardROIHeads (FPN)
            pooled = rh.box_pooler([features[f] for f in rh.box_in_features], boxes)
            predictions = rh.box_predictor(rh.box_head(pooled))
        instances, kept = rh.box_predictor.inference(predictions, proposals)
        instances = rh.forward_with_given_boxes(features, instances)
        size = images.image_sizes[0]
        first = instances[0]
        self.record = RoIRecord(
            pooled=pooled.detach(),
            class_logits=predictions[0].detach(),
            box_regression=predictions[1].detach(),
            proposals=proposals[0].proposal_boxes.tensor.detach(),
            image_size=(int(size[0]), int(size[1])),
            boxes=first.pred_boxes.tensor.detach(),
            scores=first.scores.detach(),
            labels=first.pred_classes.detach(),
            kept=kept[0].detach(),
        )
        return [
            {"instances": detector_postprocess(inst, inp["height"], inp["width"])}
            for inst, inp in zip(instances, batched, strict=True)
        ]


class _RoIScorer(nn.Module):
    """Class logits of RoI-pooled features ``(R, C, h, w)``: the box head and predictor alone.
    The engine explains ``res5`` (C4 heads) or ``input`` (FPN heads: the pooled features)."""

    def __init__(self, roi_heads: Any) -> None:
        super().__init__()
        self.c4 = hasattr(roi_heads, "res5")
        if self.c4:
            self.res5 = roi_heads.res5
        else:
            self.input = nn.Identity()
            self.box_head = roi_heads.box_head
        self.box_predictor = roi_heads.box_predictor

    @property
    def layer(self) -> str:
        return "res5" if self.c4 else "input"

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.c4:
            return self.box_predictor(self.res5(pooled).mean(dim=[2, 3]))[0]
        return self.box_predictor(self.box_head(self.input(pooled)))[0]


def _resized_size(height: int, width: int, short: int, longest: int) -> tuple[int, int]:
    """``ResizeShortestEdge.get_output_shape``: shortest edge ``short``, longest at most
    ``longest``, rounded half up (``short <= 0``: no resize)."""
    if short <= 0:
        return height, width
    scale = short / min(height, width)
    newh, neww = height * scale, width * scale
    if longest > 0 and max(newh, neww) > longest:
        scale = longest / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


class Detectron2Explainer(DetectionExplainerBase):
    """Grad-CAM / Grad-CAM++ maps for the detections of a detectron2 detector.

    The same interface as :class:`~lightning_cam.detection.DetectionExplainer`: ``explainer(image)``
    returns a :class:`~lightning_cam.detection.DetectionResult` whose maps are ``(K, H, W)``
    aligned with the image. The model is borrowed: eval mode during a call, every flag
    restored afterwards, no hook left, ``param.grad`` untouched, detectron2's code unchanged.
    Detections the model itself drops (its test score threshold and
    ``TEST.DETECTIONS_PER_IMAGE``) cannot be explained: lower / raise them when building it
    (:func:`build_detectron2_model` ``score_threshold`` / ``top_k``).

    Args:
        model: A detectron2 ``GeneralizedRCNN`` (Faster R-CNN) or ``RetinaNet``.
        cfg: Its config: input size (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), channel
            order (``INPUT.FORMAT``) and class names (``DATASETS.TEST`` metadata). ``None``:
            detectron2's defaults (800 / 1333, the model's ``input_format``) and no names.
        layer: Dotted name(s) of the model's layers (``"backbone.res4"``,
            ``"head.cls_subnet.7"``), or ``None`` for the backbone's last stage
            (:func:`default_detectron2_layer`). A name of :data:`D2_ROI_LAYERS` means
            ``roi_cams=True``.
        methods: CAM methods: names or aliases of :data:`lightning_cam.methods.METHODS`
            (default: :data:`~lightning_cam.detection.base.DEFAULT_METHODS`).
        score_threshold: Explain detections with a score at least this.
        top_k: Explain at most this many detections (the highest scores).
        roi_cams: Also compute RoI-level maps (Faster R-CNN), keyed by the RoI layer
            (:attr:`roi_layer`).
        class_names: Names indexed by label; default: the config's dataset metadata.
        min_size: Shortest edge of the model's input (default: the config's); ``0``: no
            resize (images already resized, e.g. by detectron2's data loader).
        max_size: Limit of the longest edge (default: the config's).

    Raises:
        ImportError: detectron2 is not installed.
        TypeError: ``model`` is not a detectron2 detector.
        ValueError: Unknown layer or method, a per-proposal or proposal-generator layer,
            ``roi_cams`` without supported RoI heads, bad ``score_threshold`` / ``top_k``.
    """

    _prefix = _PREFIX

    def __init__(
        self,
        model: nn.Module,
        cfg: Any = None,
        layer: str | Sequence[str] | None = None,
        methods: str | Sequence[str] = DEFAULT_METHODS,
        score_threshold: float = 0.5,
        top_k: int = 10,
        roi_cams: bool = False,
        class_names: Sequence[str] | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> None:
        require_detectron2()
        if not is_detectron2_model(model):
            raise TypeError(
                "model must be a detectron2 detector (GeneralizedRCNN or RetinaNet), got "
                f"{type(model).__name__}"
            )
        self.methods = check_selection(methods, score_threshold, top_k)
        self.model: Any = model
        self.cfg = cfg
        self.score_threshold = float(score_threshold)
        self.top_k = top_k
        if class_names is None and cfg is not None:
            class_names = detectron2_class_names(cfg)
        self.class_names = list(class_names) if class_names is not None else None
        self._set_input(cfg, min_size, max_size)
        rh = getattr(model, "roi_heads", None)
        names, roi = self._choose_layers(layer, roi_cams)
        self.layers = list(dict.fromkeys(names))
        self.roi_cams = roi
        self._adapter = _Detectron2Adapter(model, record_rois=roi)
        self._explainer = Explainer(
            self._adapter, [_PREFIX + n for n in self.layers], methods=self.methods
        )
        self._roi_scorer = _RoIScorer(rh) if roi else None
        self._roi_explainer = (
            Explainer(self._roi_scorer, self._roi_scorer.layer, methods=self.methods)
            if self._roi_scorer is not None else None
        )

    def _set_input(self, cfg: Any, min_size: int | None, max_size: int | None) -> None:
        """Set ``min_size``, ``max_size`` and ``input_format``: the given sizes, else the
        config's (else detectron2's defaults), and the config's (else the model's) format."""
        inp = getattr(cfg, "INPUT", None)
        self.min_size = int(min_size if min_size is not None
                            else inp.MIN_SIZE_TEST if inp is not None else 800)
        self.max_size = int(max_size if max_size is not None
                            else inp.MAX_SIZE_TEST if inp is not None else 1333)
        fmt = (
            inp.FORMAT if inp is not None
            else getattr(self.model, "input_format", None) or "BGR"
        )  # fmt: skip
        if fmt not in ("BGR", "RGB"):
            raise ValueError(f"input format {fmt!r} is not supported; the model must take BGR "
                             "or RGB images")
        self.input_format = fmt

    def _choose_layers(
        self, layer: str | Sequence[str] | None, roi_cams: bool
    ) -> tuple[list[str], bool]:
        """Set ``roi_layer``; return the checked image-level layer names (the default layer when
        none) and whether RoI-level maps are wanted.

        Raises:
            TypeError, ValueError: As :class:`Detectron2Explainer` documents for ``layer``.
        """
        model = self.model
        names = [layer] if isinstance(layer, str) else list(layer) if layer is not None else []
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"layer names must be strings, got {type(n).__name__}")
        rh = getattr(model, "roi_heads", None)
        supported = rh is not None and (
            (hasattr(rh, "res5") and hasattr(rh, "pooler"))
            or (hasattr(rh, "box_pooler") and hasattr(rh, "box_head"))
        ) and hasattr(getattr(rh, "box_predictor", None), "inference")
        self.roi_layer = (
            D2_ROI_LAYERS[0] if supported and hasattr(rh, "res5") else D2_ROI_LAYERS[1]
        )
        roi = bool(roi_cams) or any(n in D2_ROI_LAYERS for n in names)
        names = [n for n in names if n not in D2_ROI_LAYERS]
        for n in names:
            self._check_image_layer(n)
        if roi and not supported:
            raise ValueError(
                "roi_cams=True needs a two-stage detectron2 model (GeneralizedRCNN) with "
                f"Res5ROIHeads or StandardROIHeads; {type(model).__name__} with "
                f"{type(rh).__name__ if rh is not None else 'no roi_heads'} has none."
            )
        if not names:
            names = [default_detectron2_layer(model)]
        return names, roi

    def _check_image_layer(self, n: str) -> None:
        """Refuse an unknown layer, or one that runs per proposal or makes the proposals."""
        get_layer(self.model, n)  # unknown names: ValueError with near matches
        if n == "roi_heads" or n.startswith("roi_heads."):
            raise ValueError(
                f"Layer {n!r} runs once per region proposal, not per image; use "
                f"roi_cams=True (or the layer {self.roi_layer!r}) for RoI-level maps."
            )
        if n == "proposal_generator" or n.startswith("proposal_generator."):
            raise ValueError(
                f"Layer {n!r} only makes the proposals, which detectron2 computes without "
                "gradient: its maps would be zero. Choose a backbone layer."
            )

    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """The model's input for an image: ``(C, H, W)`` RGB in ``[0, 1]`` -> ``(1, C, h, w)``
        resized as ``DefaultPredictor`` does, in ``[0, 255]``, in the model's channel order."""
        x = image.detach().to(self._device()).float()[None]
        h, w = _resized_size(int(x.shape[-2]), int(x.shape[-1]), self.min_size, self.max_size)
        if (h, w) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                              antialias=True)
        x = x.clamp(0, 1) * 255.0
        return x.flip(1) if self.input_format == "BGR" else x

    def _padded(self, x: torch.Tensor) -> tuple[int, int]:
        """Size of the padded canvas the backbone sees for the model input ``x``."""
        with borrowed(self.model), torch.no_grad():
            images = self.model.preprocess_image([{"image": x[0]}])
        return int(images.tensor.shape[-2]), int(images.tensor.shape[-1])

    def __call__(self, image: torch.Tensor) -> DetectionResult:
        """Detect and explain one image.

        Args:
            image: ``(C, H, W)`` RGB float image in ``[0, 1]`` (not normalised, not resized:
                done here as detectron2's ``DefaultPredictor`` does), on any device.

        Returns:
            A :class:`DetectionResult` with the ``K <= top_k`` detections scoring at least
            ``score_threshold`` (boxes in the image's pixels; labels are detectron2's, from 0)
            and their maps ``(K, H, W)``; ``K`` may be 0.

        Raises:
            TypeError, ValueError: Bad image.
        """
        image = check_image(image, 3)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        x = self.preprocess(image)
        resized = (int(x.shape[-2]), int(x.shape[-1]))
        padded = self._padded(x)
        chosen: dict[str, torch.Tensor] = {}

        def score_fn(output: list[dict[str, Any]]) -> torch.Tensor:
            scores = output[0]["instances"].scores
            keep = select_detections(scores.detach(), self.score_threshold, self.top_k)
            chosen["keep"] = keep
            return scores[keep]

        self._adapter.out_size = size
        try:
            explanation, output = self._explainer.explain_scores(x, score_fn, upsample=False)
            keep = chosen["keep"]
            inst = output[0]["instances"]
            result = self._new_result(
                inst.pred_boxes.tensor[keep], inst.pred_classes[keep], inst.scores[keep],
                explanation, size, resized, padded,
            )
            if self.roi_cams:
                self._roi_maps(result, keep, resized, size)
        finally:
            self._adapter.record = None
        return result

    def _roi_maps(
        self, result: DetectionResult, keep: torch.Tensor, resized: tuple[int, int],
        size: tuple[int, int],
    ) -> None:
        rec = self._adapter.record
        k = int(keep.numel())
        if k == 0 or rec is None:
            self._set_roi_maps(result, None, None, resized, size)
            return
        assert rec.kept is not None  # the detectron2 forward records it
        index = rec.kept[keep.to(rec.kept.device)]
        labels = result.labels.to(rec.pooled.device)

        def score_fn(logits: torch.Tensor) -> torch.Tensor:
            # the detection's score: softmax over the classes (background last), its label
            rows = torch.arange(k, device=logits.device)
            return logits.softmax(-1)[rows, labels.clone()]

        assert self._roi_explainer is not None
        explanation, _ = self._roi_explainer.explain_scores(
            rec.pooled[index.to(rec.pooled.device)], score_fn, upsample=False
        )
        assert self._roi_scorer is not None
        cams = {m: explanation.cams[m][self._roi_scorer.layer] for m in self.methods}
        proposals = rec.proposals[index.to(rec.proposals.device)]
        self._set_roi_maps(result, cams, proposals, resized, size)


def explain_detectron2_batch(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    cfg: Any = None,
    layers: str | Sequence[str] | None = None,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    top_k: int = 5,
    score_threshold: float = 0.5,
    roi_cams: bool = False,
    class_names: Sequence[str] | None = None,
) -> list[DetectionResult]:
    """Explain the detections of a list of images with a detectron2 model, or a module wrapping
    one (see :func:`find_detectron2_model`): :func:`explain_detection_batch`'s counterpart.

    Raises:
        ImportError: detectron2 is not installed.
        TypeError: ``model`` holds no detectron2 detector.
    """
    require_detectron2()
    detector = find_detectron2_model(model)
    if detector is None:
        raise TypeError(f"{type(model).__name__} is not and does not wrap a detectron2 model")
    if class_names is None:
        names = getattr(model, "class_names", None)
        class_names = list(names) if isinstance(names, (list, tuple)) else None
    explainer = Detectron2Explainer(
        detector, cfg, layer=layers, methods=methods, score_threshold=score_threshold,
        top_k=top_k, roi_cams=roi_cams, class_names=class_names,
    )
    return explainer.explain(images)
