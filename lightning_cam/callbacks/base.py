"""The CAM callbacks: explanations of a fixed probe set, logged at validation epochs.

Only scheduling, probe selection and logging live here; every map comes from
:class:`lightning_cam.engine.Explainer` and every picture from :mod:`lightning_cam.viz`.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from typing_extensions import override

from lightning_cam import viz
from lightning_cam._compat import CallbackBase, MisconfigurationException
from lightning_cam.callbacks import detection as _det
from lightning_cam.callbacks.detection import DetProbe
from lightning_cam.engine import Explainer, Explanation, borrowed, concat_explanations
from lightning_cam.layers import default_layer
from lightning_cam.methods import METHODS, method_name

Kind = Literal["heatmap", "overlay", "guided_backprop", "guided_gradcam"]
KINDS: tuple[str, ...] = ("heatmap", "overlay", "guided_backprop", "guided_gradcam")
METRICS: tuple[str, ...] = (
    "pointing_game",
    "energy_pointing_game",
    "average_drop",
    "increase_in_confidence",
    "deletion_auc",
    "insertion_auc",
)

# One computation serves every CAM callback of a trainer that shares a probe set, per step.
_SHARED: weakref.WeakKeyDictionary[Any, dict[Any, Explanation]] = weakref.WeakKeyDictionary()


def _head(target: Any, n: int) -> Any:
    return target[:n] if isinstance(target, torch.Tensor) else target


def _tail(target: Any, n: int) -> Any:
    return target[n:] if isinstance(target, torch.Tensor) else target


def _add_image(experiment: Any, tag: str, picture: Any, step: int) -> None:
    """``experiment.add_image`` for a uint8 HWC RGB picture. For torch's / tensorboardX's
    ``SummaryWriter`` the PNG is encoded with OpenCV at a fast compression level (the same pixels,
    several times faster than the default PIL encoder that ``add_image`` uses)."""
    get_writer = getattr(experiment, "_get_file_writer", None)
    if callable(get_writer):
        try:
            import cv2
            from tensorboard.compat.proto.summary_pb2 import Summary

            ok, png = cv2.imencode(
                ".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
            )
            if ok:
                height, width = picture.shape[:2]
                image = Summary.Image(
                    height=height, width=width, colorspace=3, encoded_image_string=png.tobytes()
                )
                summary = Summary(value=[Summary.Value(tag=tag, image=image)])
                get_writer().add_summary(summary, step)
                return
        except ImportError:  # pragma: no cover - tensorboard's protos are always there with it
            pass
    experiment.add_image(tag, viz.to_chw_tensor(picture), global_step=step, dataformats="CHW")


def _misconf(arg: str, value: Any, allowed: str) -> MisconfigurationException:
    return MisconfigurationException(f"{arg}={value!r} is invalid: expected {allowed}.")


class CAMCallback(CallbackBase):
    """Logs CAM explanations of a fixed set of probe images at validation epochs.

    The probe set is the first ``num_samples`` images of the validation data (dataloader
    ``dataloader_idx``), captured once, kept on CPU and saved in checkpoints, so every epoch shows
    the same images and TensorBoard's step slider shows the maps evolve. At the end of every
    ``every_n_epochs``-th validation (also mid-epoch validations; never the sanity check) rank
    zero runs the unwrapped LightningModule on the probes and logs, with
    ``step=trainer.global_step``:

    * images, one labelled grid per tag ``{method}/{layer}/{kind}`` — ``method`` is ``gradcam``
      or ``gradcam++``, ``layer`` the dotted layer name, ``kind`` one of ``heatmap``,
      ``overlay``, ``guided_backprop``, ``guided_gradcam``; each tile says the predicted class
      and its probability, and the true label when the batch has one;
    * scalars ``{method}/{layer}/{metric}``: ``pointing_game`` and ``energy_pointing_game`` when
      the batches carry masks or boxes, and optionally ``average_drop``,
      ``increase_in_confidence``, ``deletion_auc`` and ``insertion_auc``.

    During ``trainer.test()`` the same is logged with the prefix ``test/``.

    **Detectors.** When the LightningModule is or wraps a torchvision detector (Faster R-CNN,
    RetinaNet, FCOS; found by :func:`lightning_cam.detection.find_detector`) and validates on
    torchvision's batches ``(list of images, list of target dicts)`` — or wraps a detectron2
    ``GeneralizedRCNN`` / ``RetinaNet`` and validates on detectron2's batches (lists of dicts
    with ``"image"`` and ``"instances"``, already resized by its mapper) — the probes are images and
    their targets, and the callback logs, per method and layer (``layer`` relative to the
    LightningModule or to the detector; default ``backbone.body``'s last stage;
    ``"roi_heads.box_roi_pool"`` gives Faster R-CNN's RoI-level maps, each detection's CAM of its
    proposal's RoI features pasted into the proposal box):

    * ``{method}/{layer}/detections``: a row per probe image, the image with its top
      ``detection_top_k`` detections scoring at least ``detection_score_threshold`` (boxes,
      class names, scores), then one heatmap per detection with its box (when ``log_overlay``
      or ``log_heatmap``; the guided kinds do not apply to detections);
    * ``{method}/{layer}/pointing_game`` and ``energy_pointing_game``: over the detections of the
      ``metrics_num_samples`` images matched to a ground-truth box (IoU >= 0.5, same label).

    ``target`` does not apply to detectors: each detection's own score is explained.

    Several lightning-cam callbacks on one trainer with the same probe settings share one
    forward and backward pass per validation (e.g. Grad-CAM and Grad-CAM++ on the same layer).

    Args:
        layer: Dotted module name inside the LightningModule (``"backbone.layer4"``), a list of
            names, or ``None`` for the default layer (the last spatial feature map).
        num_samples: Number of probe images shown.
        every_n_epochs: Log every n-th epoch.
        target: ``"pred"`` (each probe's predicted class), ``"label"`` (its ground-truth label
            from the batch), or an int class id.
        log_heatmap: Log the colourised maps.
        log_overlay: Log the maps over the images.
        log_guided_backprop: Log guided backprop.
        log_guided_gradcam: Log guided Grad-CAM.
        mean: Per-channel mean to undo the input normalisation for display (with ``std``);
            without them float images within [0, 1] are shown as they are, others min-max
            normalised per image.
        std: Per-channel std (see ``mean``).
        class_names: Names drawn on the tiles; default: ``class_names`` of the datamodule or of
            the module's hparams when present, else class ids.
        colormap: Colour map of heatmaps and overlays (see :data:`lightning_cam.viz.COLORMAPS`).
        alpha: Opacity of the heatmap in overlays, in [0, 1].
        image_key: Key of the images in dict batches.
        label_key: Key of the labels in dict batches.
        mask_key: Key of ground-truth masks ``(B, H, W)`` in dict batches (pointing game).
        box_key: Key of ground-truth boxes ``(B, 4)`` xyxy in dict batches (pointing game).
        dataloader_idx: Which validation dataloader the probes come from.
        metrics: Explanation-quality metrics to log (see :data:`METRICS`); the pointing games
            are only logged when ground truth is in the batch.
        metrics_num_samples: Images over which metrics are averaged (a fixed set captured like
            the probes, at least ``num_samples``); default: the probe set.
        tile_size: Shorter side of the grid tiles in pixels (small images are enlarged so the
            labels stay readable).
        methods: CAM methods; set by the subclasses.
        pointing_game_tolerance: Hit radius of the pointing game in pixels; default (``None``):
            the original protocol's 15 pixels at 224 x 224 (Zhang et al., ECCV 2016), scaled to
            the images' shorter side (about 4.3 pixels at 64 x 64). ``0`` asks for the maximum
            on an object pixel.
        detection_top_k: Detectors: detections explained and shown per image, at most.
        detection_score_threshold: Detectors: least score of an explained detection.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from lightning_cam import GradCAMCallback
        >>> trainer = Trainer(callbacks=[GradCAMCallback(layer="backbone.layer4")])
    """

    default_methods: tuple[str, ...] = ("gradcam",)

    def __init__(
        self,
        layer: str | list[str] | None = None,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        target: Literal["pred", "label"] | int = "pred",
        log_heatmap: bool = False,
        log_overlay: bool = True,
        log_guided_backprop: bool = False,
        log_guided_gradcam: bool = True,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        class_names: list[str] | None = None,
        colormap: str = "jet",
        alpha: float = 0.5,
        image_key: str = "image",
        label_key: str = "label",
        mask_key: str | None = "mask",
        box_key: str | None = "box",
        dataloader_idx: int = 0,
        metrics: list[str] | None = None,
        metrics_num_samples: int | None = None,
        tile_size: int = 160,
        methods: list[str] | None = None,
        pointing_game_tolerance: float | None = None,
        detection_top_k: int = 3,
        detection_score_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if layer is not None and not isinstance(layer, str):
            if not (
                isinstance(layer, Sequence) and layer and all(isinstance(x, str) for x in layer)
            ):
                raise _misconf("layer", layer, "a dotted layer name, a list of names, or None")
        for arg, val in (("num_samples", num_samples), ("every_n_epochs", every_n_epochs)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise _misconf(arg, val, "an int >= 1")
        if isinstance(target, bool) or not (
            target in ("pred", "label") or (isinstance(target, int) and target >= 0)
        ):
            raise _misconf("target", target, "'pred', 'label' or a class id (int >= 0)")
        if (mean is None) != (std is None):
            raise MisconfigurationException(
                f"mean={mean!r} and std={std!r}: give both (to undo the normalisation) or neither."
            )
        if mean is not None and std is not None:
            if len(mean) != len(std) or not mean:
                raise _misconf("std", std, f"as many values as mean ({len(mean)})")
            if any(s <= 0 for s in std):
                raise _misconf("std", std, "positive values")
        if colormap not in viz.COLORMAPS:
            close = difflib.get_close_matches(str(colormap), list(viz.COLORMAPS), n=3)
            raise _misconf(
                "colormap",
                colormap,
                f"one of {sorted(viz.COLORMAPS)}"
                + (f" (did you mean {close[0]!r}?)" if close else ""),
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise _misconf("alpha", alpha, "a number in [0, 1]")
        if (
            isinstance(dataloader_idx, bool)
            or not isinstance(dataloader_idx, int)
            or dataloader_idx < 0
        ):
            raise _misconf("dataloader_idx", dataloader_idx, "an int >= 0")
        if metrics is None:
            metrics = ["pointing_game", "energy_pointing_game"]
        for m in metrics:
            if m not in METRICS:
                close = difflib.get_close_matches(str(m), METRICS, n=1)
                raise _misconf(
                    "metrics",
                    metrics,
                    f"names from {list(METRICS)}"
                    + (f" (did you mean {close[0]!r}?)" if close else ""),
                )
        if metrics_num_samples is not None and (
            isinstance(metrics_num_samples, bool)
            or not isinstance(metrics_num_samples, int)
            or metrics_num_samples < 1
        ):
            raise _misconf("metrics_num_samples", metrics_num_samples, "an int >= 1 or None")
        if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 16:
            raise _misconf("tile_size", tile_size, "an int >= 16")
        if pointing_game_tolerance is not None and (
            isinstance(pointing_game_tolerance, bool)
            or not isinstance(pointing_game_tolerance, (int, float))
            or not math.isfinite(pointing_game_tolerance)
            or pointing_game_tolerance < 0
        ):
            raise _misconf(
                "pointing_game_tolerance",
                pointing_game_tolerance,
                "a number of pixels >= 0 or None",
            )
        if isinstance(detection_top_k, bool) or not isinstance(detection_top_k, int) or (
            detection_top_k < 1
        ):
            raise _misconf("detection_top_k", detection_top_k, "an int >= 1")
        if (
            isinstance(detection_score_threshold, bool)
            or not isinstance(detection_score_threshold, (int, float))
            or not 0 <= detection_score_threshold <= 1
        ):
            raise _misconf(
                "detection_score_threshold", detection_score_threshold, "a number in [0, 1]"
            )
        try:
            self.methods = [method_name(m) for m in (methods or self.default_methods)]
        except ValueError:
            raise _misconf("methods", methods, f"names from {sorted(METHODS)}") from None
        if not any((log_heatmap, log_overlay, log_guided_backprop, log_guided_gradcam, metrics)):
            raise MisconfigurationException(
                "Nothing to log: every log_* flag is False and metrics is empty; "
                "enable at least one of log_heatmap, log_overlay, log_guided_backprop, "
                "log_guided_gradcam or a metric."
            )
        self.layer = [layer] if isinstance(layer, str) else (list(layer) if layer else None)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.target = target
        self.kinds = [
            k
            for k, on in zip(
                KINDS,
                (log_heatmap, log_overlay, log_guided_backprop, log_guided_gradcam),
                strict=True,
            )
            if on
        ]
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.colormap = colormap
        self.alpha = float(alpha)
        self.image_key = image_key
        self.label_key = label_key
        self.mask_key = mask_key
        self.box_key = box_key
        self.dataloader_idx = dataloader_idx
        self.metrics = list(metrics)
        self.metrics_num_samples = max(metrics_num_samples or num_samples, num_samples)
        self.tile_size = tile_size
        self.pointing_game_tolerance = (
            float(pointing_game_tolerance) if pointing_game_tolerance is not None else None
        )
        self.detection_top_k = detection_top_k
        self.detection_score_threshold = float(detection_score_threshold)
        self.probes: dict[str, torch.Tensor] | None = None
        # detectors: (image, target) pairs instead of ``probes``; set up in ``setup``
        self.det_probes: list[DetProbe] | None = None
        self._det_collecting: list[DetProbe] = []
        self._detector: Any = None
        self._backend = "torchvision"
        self._det_prefix = ""
        self._collecting: dict[str, list[torch.Tensor]] = {}
        self._explainer: Explainer | None = None
        self._layers: list[str] | None = None
        self._warned: set[str] = set()
        self.last_explanation: Explanation | None = None

    # ----------------------------------------------------------------------------------------
    # Lightning plumbing
    # ----------------------------------------------------------------------------------------

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            methods=self.methods,
            layer=self.layer,
            num_samples=self.num_samples,
            target=self.target,
            dataloader_idx=self.dataloader_idx,
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.probes is not None:
            state["probes"] = self.probes
        if self.det_probes is not None:
            state["det_probes"] = self.det_probes
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        probes = state_dict.get("probes")
        if probes is not None:
            self.probes = {k: v.cpu() for k, v in probes.items()}
        det = state_dict.get("det_probes")
        if det is not None:
            self.det_probes = [
                (img.cpu(), {k: v.cpu() for k, v in tgt.items()} if tgt is not None else None)
                for img, tgt in det
            ]

    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        from lightning_cam.detection import find_detector
        from lightning_cam.detection.detectron2 import find_detectron2_model

        self._detector = find_detector(pl_module)
        self._backend = "torchvision"
        if self._detector is None:
            self._detector = find_detectron2_model(pl_module)
            self._backend = "detectron2"
        if self._detector is not None:
            self._setup_detection(pl_module)
            return
        if self.layer is not None:
            names = dict(pl_module.named_modules())
            for name in self.layer:
                if name not in names or not name:
                    close = difflib.get_close_matches(name, [n for n in names if n], n=5)
                    raise MisconfigurationException(
                        f"layer={name!r} is not a module of {type(pl_module).__name__}. "
                        f"Closest names: {', '.join(close) if close else '(none)'}. Use a dotted "
                        "name from pl_module.named_modules(), or layer=None for the default."
                    )
        if self.target not in ("pred", "label"):
            num = self._num_classes(trainer, pl_module)
            if num is not None and int(self.target) >= num:
                raise _misconf("target", self.target, f"a class id in 0..{num - 1}")

    def _setup_detection(self, pl_module: Any) -> None:
        self._det_prefix = _det.detector_prefix(pl_module, self._detector)
        if self.layer is None:
            return
        for name in self.layer:
            if _det.detector_layer(name, self._det_prefix, self._detector) is None:
                names = [n for n, _ in self._detector.named_modules() if n]
                close = difflib.get_close_matches(name, names, n=5)
                raise MisconfigurationException(
                    f"layer={name!r} is not a module of the detector "
                    f"{type(self._detector).__name__} in {type(pl_module).__name__}. "
                    f"Closest names: {', '.join(close) if close else '(none)'}. Use a dotted name "
                    "from the detector's named_modules() (e.g. 'backbone.body.layer4'), or "
                    "layer=None for the backbone's last stage."
                )

    @staticmethod
    def _num_classes(trainer: Any, pl_module: Any) -> int | None:
        for obj in (getattr(trainer, "datamodule", None), getattr(pl_module, "hparams", None)):
            if obj is None:
                continue
            val = (
                obj.get("num_classes")
                if isinstance(obj, Mapping)
                else getattr(obj, "num_classes", None)
            )
            if isinstance(val, int):
                return val
        return None

    # ----------------------------------------------------------------------------------------
    # Probe capture
    # ----------------------------------------------------------------------------------------

    def extract(self, batch: Any) -> dict[str, torch.Tensor | None]:
        """Pull images (and labels, masks, boxes when present) out of a batch.

        Handles ``(x, y, ...)`` tuples/lists, dicts (``image_key``, ``label_key``, ``mask_key``,
        ``box_key``) and bare image tensors. Override to support other batch layouts; return a
        dict with ``"image"`` ``(B, C, H, W)`` and optionally ``"label"`` ``(B,)``, ``"mask"``
        ``(B, H, W)`` and ``"box"`` ``(B, 4)``.

        Raises:
            MisconfigurationException: when no image batch can be found.
        """
        out: dict[str, torch.Tensor | None] = {
            "image": None,
            "label": None,
            "mask": None,
            "box": None,
        }
        if isinstance(batch, torch.Tensor):
            out["image"] = batch
        elif isinstance(batch, Mapping):
            if self.image_key not in batch:
                raise MisconfigurationException(
                    f"image_key={self.image_key!r} is not in the batch "
                    f"(keys: {sorted(map(str, batch))}); "
                    "set image_key to the key of the images."
                )
            out["image"] = batch[self.image_key]
            out["label"] = batch.get(self.label_key)
            out["mask"] = batch.get(self.mask_key) if self.mask_key else None
            out["box"] = batch.get(self.box_key) if self.box_key else None
        elif isinstance(batch, (tuple, list)) and batch:
            out["image"] = batch[0]
            if len(batch) > 1:
                out["label"] = batch[1]
        img = out["image"]
        if not isinstance(img, torch.Tensor) or img.dim() != 4 or not img.is_floating_point():
            desc = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise MisconfigurationException(
                f"{type(self).__name__} expects validation batches whose images are a float tensor "
                f"(B, C, H, W); found {desc}. Batches may be (x, y, ...) tuples or dicts with "
                f"image_key={self.image_key!r}; override extract() for other layouts."
            )
        for key in ("label", "mask", "box"):
            val = out[key]
            if not isinstance(val, torch.Tensor) or val.shape[:1] != img.shape[:1]:
                out[key] = None
        return out

    def _collect_detection(self, batch: Any) -> None:
        take = self.metrics_num_samples - len(self._det_collecting)
        if take <= 0:
            return
        parts = self.extract_detection(batch)
        if parts is None:
            raise MisconfigurationException(
                f"{type(self).__name__}: the LightningModule wraps a detector "
                f"({type(self._detector).__name__}), so validation batches must be "
                "(list of (C, H, W) float images, list of target dicts with 'boxes' and "
                f"'labels'); got {type(batch).__name__}. Override extract_detection() for "
                "other layouts."
            )
        images, targets = parts
        self._det_collecting += _det.capture(images, targets, take)

    def extract_detection(
        self, batch: Any
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None] | None:
        """``(images, targets)`` of a detector's validation batch (torchvision's format); override
        for other layouts. ``None`` when ``batch`` is not a detection batch."""
        from lightning_cam.detection import split_detection_batch
        from lightning_cam.detection.detectron2 import split_detectron2_batch

        if self._backend == "detectron2":
            fmt = getattr(self._detector, "input_format", "BGR")
            return split_detection_batch(batch) or split_detectron2_batch(batch, fmt)
        return split_detection_batch(batch)

    def _collect(self, batch: Any) -> None:
        if self._detector is not None:
            self._collect_detection(batch)
            return
        want = self.metrics_num_samples
        have = len(self._collecting.get("image", []))
        if have >= want:
            return
        parts = self.extract(batch)
        take = want - have
        with torch.inference_mode(False):
            for key, val in parts.items():
                if val is None:
                    continue
                self._collecting.setdefault(key, []).extend(
                    val[:take].detach().cpu().clone().unbind(0)
                )
        n = len(self._collecting.get("image", []))
        # keep only keys that every collected sample has
        for key in list(self._collecting):
            if len(self._collecting[key]) != n:
                del self._collecting[key]

    def _finish_collect(self) -> None:
        if self.det_probes is None and self._det_collecting:
            self.det_probes = self._det_collecting
        self._det_collecting = []
        if self.probes is None and self._collecting.get("image"):
            self.probes = {k: torch.stack(v) for k, v in self._collecting.items()}
        self._collecting = {}

    def _on_batch_end(self, trainer: Any, batch: Any, dataloader_idx: int) -> None:
        if (
            self.probes is not None
            or self.det_probes is not None
            or trainer.sanity_checking
            or dataloader_idx != self.dataloader_idx
        ):
            return
        if not trainer.is_global_zero:
            return
        self._collect(batch)

    @override
    def on_validation_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._on_batch_end(trainer, batch, dataloader_idx)

    @override
    def on_test_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._on_batch_end(trainer, batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._on_epoch_end(trainer, pl_module, prefix="")

    @override
    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._on_epoch_end(trainer, pl_module, prefix="test/")

    # ----------------------------------------------------------------------------------------
    # Explain and log
    # ----------------------------------------------------------------------------------------

    def _on_epoch_end(self, trainer: Any, pl_module: Any, prefix: str) -> None:
        if trainer.sanity_checking:
            return
        if not trainer.is_global_zero:
            # Rank zero alone computes and logs; nothing here waits on another rank.
            return
        self._finish_collect()
        if prefix == "" and trainer.current_epoch % self.every_n_epochs != 0:
            return
        if self._detector is not None and self.det_probes is not None:
            self._log_detection(trainer, pl_module, prefix)
            return
        if self.probes is None:
            self._warn_once(
                "noprobe",
                f"{type(self).__name__}: no validation batch reached the callback, nothing to log.",
            )
            return
        result = self.explain(trainer, pl_module)
        self.last_explanation = result
        self._log(trainer, pl_module, result, prefix)

    def _group(self, trainer: Any) -> list[CAMCallback]:
        return [
            cb
            for cb in getattr(trainer, "callbacks", [])
            if isinstance(cb, CAMCallback) and cb._share_key() == self._share_key()
        ]

    def _share_key(self) -> tuple[Any, ...]:
        return (
            self.num_samples,
            self.metrics_num_samples,
            str(self.target),
            self.dataloader_idx,
            self.image_key,
            self.label_key,
            self.detection_top_k,
            self.detection_score_threshold,
        )

    def _target_for(self, probes: Mapping[str, torch.Tensor]) -> Any:
        if self.target == "pred":
            return None
        if self.target == "label":
            labels = probes.get("label")
            if labels is None:
                raise MisconfigurationException(
                    "target='label' but the validation batches carry no labels "
                    f"(label_key={self.label_key!r}); use target='pred' or set label_key."
                )
            return labels.long()
        return int(self.target)

    def explain(self, trainer: Any, pl_module: Any) -> Explanation:
        """Explain the probe set with ``pl_module`` (unwrapped).

        One computation serves every lightning-cam callback of the trainer with the same probe
        settings at this step: the union of their methods and layers, guided backprop when any
        of them logs it.
        """
        assert self.probes is not None
        device = pl_module.device if hasattr(pl_module, "device") else torch.device("cpu")
        images = self.probes["image"].to(device)
        group = self._group(trainer) or [self]
        cache = _SHARED.setdefault(trainer, {})
        when = (
            trainer.global_step,
            trainer.current_epoch,
            bool(getattr(trainer, "testing", False)),
        )
        key = (*when, self._share_key())
        if key in cache:
            return cache[key]
        methods: list[str] = []
        layers: list[str] = []
        guided = False
        for cb in group:
            methods += [m for m in cb.methods if m not in methods]
            layers += [n for n in cb._resolved_layers(pl_module, images) if n not in layers]
            guided = guided or any(k in ("guided_backprop", "guided_gradcam") for k in cb.kinds)
        precision = getattr(trainer, "precision_plugin", None)
        if precision is not None and hasattr(precision, "convert_input"):
            images = precision.convert_input(images)
        ctx = (
            precision.forward_context()
            if precision is not None and hasattr(precision, "forward_context")
            else contextlib.nullcontext()
        )
        target = self._target_for(self.probes)
        # Guided gradients are shown for the first num_samples probes only: the images that
        # serve the metrics alone need the maps, not a backward pass down to the input.
        n = self.num_samples if guided else images.shape[0]
        # The engine draws no random numbers; fork_rng makes sure the training RNG stream is
        # left exactly as it was whatever the model does in eval mode.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), ctx:
            explainer = Explainer(pl_module, layers, methods=methods, guided_gradcam=guided)
            result = explainer(images[:n], target=_head(target, n))
            if images.shape[0] > n:
                rest = Explainer(pl_module, layers, methods=methods)(
                    images[n:], target=_tail(target, n)
                )
                result = concat_explanations([result, rest])
        for k in [k for k in cache if k[:3] != when]:
            del cache[k]
        cache[key] = result
        return result

    def _resolved_layers(self, pl_module: Any, images: torch.Tensor) -> list[str]:
        if self.layer is not None:
            return self.layer
        if self._layers is None:
            with borrowed(pl_module), torch.inference_mode(False):
                self._layers = [default_layer(pl_module, images[:1].detach().clone())]
        return self._layers

    def _my_layers(self, result: Explanation) -> list[str]:
        if self.layer is not None:
            return self.layer
        return self._layers if self._layers is not None else [result.layers[0]]

    # ----------------------------------------------------------------------------------------

    def _class_names(self, trainer: Any, pl_module: Any) -> list[str] | None:
        if self.class_names is not None:
            return self.class_names
        for obj in (getattr(trainer, "datamodule", None), getattr(pl_module, "hparams", None)):
            if obj is None:
                continue
            names = (
                obj.get("class_names")
                if isinstance(obj, Mapping)
                else getattr(obj, "class_names", None)
            )
            if names:
                return list(names)
        return None

    def _tile_labels(self, trainer: Any, pl_module: Any, result: Explanation) -> list[str]:
        names = self._class_names(trainer, pl_module)
        assert self.probes is not None
        n = self.num_samples
        labels = self.probes.get("label")
        out: list[str] = []

        def nm(i: int) -> str:
            return names[i] if names is not None and 0 <= i < len(names) else str(i)

        probs = result.logits.float().softmax(dim=1).cpu() if result.logits is not None else None
        for i in range(min(n, self.probes["image"].shape[0])):
            parts = []
            if probs is not None:
                pred = int(probs[i].argmax())
                parts.append(f"pred {nm(pred)} {float(probs[i, pred]):.2f}")
            if labels is not None and labels.dim() == 1:
                parts.append(f"true {nm(int(labels[i]))}")
            if result.class_ids is not None and self.target != "pred":
                parts.append(f"cam {nm(int(result.class_ids[i]))}")
            out.append(" | ".join(parts))
        return out

    def _display_images(self) -> list[Any]:
        assert self.probes is not None
        imgs = self.probes["image"][: self.num_samples].float()
        return [viz.to_uint8_image(img, mean=self.mean, std=self.std) for img in imgs]

    def _resize_tile(self, tile: Any) -> Any:
        import cv2

        h, w = tile.shape[:2]
        scale = self.tile_size / min(h, w)
        if abs(scale - 1) < 1e-6:
            return tile
        interp = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
        return cv2.resize(
            tile, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp
        )

    def render(self, trainer: Any, pl_module: Any, result: Explanation) -> dict[str, Any]:
        """Return the grid pictures (uint8 HWC) of this callback keyed by tag (no prefix)."""
        n = min(self.num_samples, self.probes["image"].shape[0]) if self.probes else 0
        base = self._display_images()
        labels = self._tile_labels(trainer, pl_module, result)
        ncol = min(n, 4) if n > 0 else 1
        pictures: dict[str, Any] = {}
        for method in self.methods:
            for layer in self._my_layers(result):
                cams = result.cams[method][layer][:n].cpu()
                for kind in self.kinds:
                    tiles = []
                    for i in range(n):
                        if kind == "heatmap":
                            tile = viz.colorize(cams[i], colormap=self.colormap)
                        elif kind == "overlay":
                            tile = viz.overlay(
                                base[i], cams[i], alpha=self.alpha, colormap=self.colormap
                            )
                        elif kind == "guided_backprop":
                            assert result.guided is not None
                            tile = viz.gradients_to_image(result.guided[i].cpu())
                        else:
                            tile = viz.gradients_to_image(
                                result.guided_cams[method][layer][i].cpu()
                            )
                        tile = self._resize_tile(tile)
                        if labels[i]:
                            tile = viz.draw_label(tile, labels[i])
                        tiles.append(tile)
                    pictures[f"{method}/{layer}/{kind}"] = viz.make_grid(tiles, ncol=ncol)
        return pictures

    def compute_metrics(self, pl_module: Any, result: Explanation) -> dict[str, float]:
        """Explanation-quality scalars keyed by tag (no prefix)."""
        from lightning_cam import metrics as M

        assert self.probes is not None
        out: dict[str, float] = {}
        if not self.metrics:
            return out
        masks = self.probes.get("mask")
        boxes = self.probes.get("box")
        tolerance = self._tolerance(self.probes["image"])
        gt: dict[str, torch.Tensor] = {}
        if masks is not None and masks.dim() == 3:
            gt["masks"] = masks.bool()
        elif boxes is not None and boxes.dim() == 2 and boxes.shape[1] == 4:
            gt["boxes"] = boxes.float()
        device = pl_module.device if hasattr(pl_module, "device") else torch.device("cpu")
        images = self.probes["image"].to(device)
        class_ids = result.class_ids
        for method in self.methods:
            for layer in self._my_layers(result):
                maps = result.cams[method][layer].float()
                tag = f"{method}/{layer}"
                if gt and "pointing_game" in self.metrics:
                    # the probes' objects, dilated by the tolerance once per probe set
                    objects = self._pointing_objects(gt, tolerance, maps.shape[-2:])
                    out[f"{tag}/pointing_game"] = float(
                        M.pointing_game(maps.cpu(), masks=objects).mean()
                    )
                if gt and "energy_pointing_game" in self.metrics:
                    out[f"{tag}/energy_pointing_game"] = float(
                        M.energy_pointing_game(
                            maps.cpu(), masks=gt.get("masks"), boxes=gt.get("boxes")
                        ).mean()
                    )
                if class_ids is None:
                    continue
                if "average_drop" in self.metrics or "increase_in_confidence" in self.metrics:
                    drop, inc = M.average_drop_increase(
                        pl_module, images, maps.to(device), class_ids.to(device)
                    )
                    if "average_drop" in self.metrics:
                        out[f"{tag}/average_drop"] = float(drop.mean())
                    if "increase_in_confidence" in self.metrics:
                        out[f"{tag}/increase_in_confidence"] = float(inc.float().mean() * 100)
                if "deletion_auc" in self.metrics or "insertion_auc" in self.metrics:
                    dele, ins = M.deletion_insertion_auc(
                        pl_module, images, maps.to(device), class_ids.to(device)
                    )
                    if "deletion_auc" in self.metrics:
                        out[f"{tag}/deletion_auc"] = float(dele.mean())
                    if "insertion_auc" in self.metrics:
                        out[f"{tag}/insertion_auc"] = float(ins.mean())
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def _pointing_objects(
        self, gt: Mapping[str, torch.Tensor], tolerance: float, size: Any
    ) -> torch.Tensor:
        from lightning_cam import metrics as M

        key = (id(self.probes), tolerance, tuple(size))
        cached = getattr(self, "_objects_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        if "masks" in gt:
            objects = gt["masks"]
        else:
            objects = M.boxes_to_masks(gt["boxes"], int(size[0]), int(size[1]))
        objects = M._dilate(objects, tolerance)
        self._objects_cache = (key, objects)
        return objects

    def _tolerance(self, images: torch.Tensor) -> float:
        """The pointing game's hit radius in pixels: ``pointing_game_tolerance``, or the original
        protocol's 15 pixels at 224 x 224 scaled to the images' shorter side."""
        if self.pointing_game_tolerance is not None:
            return self.pointing_game_tolerance
        return 15.0 * min(int(images.shape[-2]), int(images.shape[-1])) / 224.0

    # ----------------------------------------------------------------------------------------
    # Detectors
    # ----------------------------------------------------------------------------------------

    def _det_layers(self) -> list[str]:
        from lightning_cam.detection import default_detection_layer
        from lightning_cam.detection.detectron2 import default_detectron2_layer

        if self.layer is None:
            if self._backend == "detectron2":
                return [default_detectron2_layer(self._detector)]
            return [default_detection_layer(self._detector)]
        out = []
        for name in self.layer:
            rel = _det.detector_layer(name, self._det_prefix, self._detector)
            out.append(rel if rel is not None else name)
        return out

    def explain_detections(self, trainer: Any, pl_module: Any) -> list[Any]:
        """Explain the top detections of every detection probe (:class:`DetectionResult` each).

        Shared like :meth:`explain`: one computation for every lightning-cam callback of the
        trainer with the same probe and detection settings at this step.
        """
        from lightning_cam.detection import DetectionExplainer

        assert self.det_probes is not None
        cache = _SHARED.setdefault(trainer, {})
        when = (
            trainer.global_step,
            trainer.current_epoch,
            bool(getattr(trainer, "testing", False)),
        )
        key = (*when, "detection", self._share_key())
        if key in cache:
            return cache[key]  # type: ignore[return-value]
        methods: list[str] = []
        layers: list[str] = []
        for cb in self._group(trainer) or [self]:
            methods += [m for m in cb.methods if m not in methods]
            layers += [n for n in cb._det_layers() if n not in layers]
        names = getattr(pl_module, "class_names", None)
        if not isinstance(names, (list, tuple)):
            names = self._class_names(trainer, pl_module)
        kwargs: dict[str, Any] = {
            "layer": layers,
            "methods": methods,
            "score_threshold": self.detection_score_threshold,
            "top_k": self.detection_top_k,
            "class_names": list(names) if names else None,
        }
        explainer: Any
        if self._backend == "detectron2":
            from lightning_cam.detection.detectron2 import Detectron2Explainer

            # images from detectron2's loaders are already resized by its mapper
            explainer = Detectron2Explainer(self._detector, min_size=0, **kwargs)
        else:
            explainer = DetectionExplainer(self._detector, **kwargs)
        device = pl_module.device if hasattr(pl_module, "device") else torch.device("cpu")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            results = [explainer(image) for image, _ in self.det_probes]
        for k in [k for k in cache if k[:3] != when]:
            del cache[k]
        cache[key] = results  # type: ignore[assignment]
        return results

    def _log_detection(self, trainer: Any, pl_module: Any, prefix: str) -> None:
        assert self.det_probes is not None
        results = self.explain_detections(trainer, pl_module)
        n = min(self.num_samples, len(self.det_probes))
        pictures: dict[str, Any] = {}
        scalars: dict[str, float] = {}
        for method in self.methods:
            for layer in self._det_layers():
                tag = f"{method}/{layer}"
                if any(k in ("overlay", "heatmap") for k in self.kinds):
                    pictures[f"{tag}/detections"] = _det.render_grid(
                        self.det_probes[:n],
                        results[:n],
                        method,
                        layer,
                        self.detection_top_k,
                        self.tile_size,
                        self.alpha,
                        self.colormap,
                    )
                scores = _det.pointing_scores(self.det_probes, results, method, layer)
                for name, value in scores.items():
                    if name in self.metrics and math.isfinite(value):
                        scalars[f"{tag}/{name}"] = value
        self._emit(trainer, pictures, scalars, prefix)

    def _log(self, trainer: Any, pl_module: Any, result: Explanation, prefix: str) -> None:
        pictures = self.render(trainer, pl_module, result) if self.kinds else {}
        scalars = self.compute_metrics(pl_module, result)
        self._emit(trainer, pictures, scalars, prefix)

    def _emit(
        self, trainer: Any, pictures: dict[str, Any], scalars: dict[str, float], prefix: str
    ) -> None:
        step = trainer.global_step
        loggers = list(getattr(trainer, "loggers", []) or [])
        wrote_images = False
        for logger in loggers:
            experiment: Any = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                for tag, pic in pictures.items():
                    _add_image(experiment, prefix + tag, pic, step)
                wrote_images = True
            elif hasattr(logger, "log_image"):
                for tag, pic in pictures.items():
                    logger.log_image(key=prefix + tag, images=[pic], step=step)
                wrote_images = True
            if scalars:
                logger.log_metrics({prefix + k: v for k, v in scalars.items()}, step=step)
        if pictures and not wrote_images:
            root = self._png_dir(trainer)
            for tag, pic in pictures.items():
                path = os.path.join(root, *(prefix + tag).split("/")) + f"/step_{step:07d}.png"
                os.makedirs(os.path.dirname(path), exist_ok=True)
                viz.save_image(path, pic)
            if not loggers:
                msg = (
                    f"{type(self).__name__}: the trainer has no logger; writing the pictures "
                    f"as PNG files under {root}."
                )
            else:
                msg = (
                    f"{type(self).__name__}: no logger can take images "
                    f"({', '.join(type(lg).__name__ for lg in loggers)}); writing them as PNG "
                    f"files under {root}."
                )
            self._warn_once("png", msg)

    @staticmethod
    def _png_dir(trainer: Any) -> str:
        base = getattr(trainer, "log_dir", None) or getattr(trainer, "default_root_dir", None)
        return os.path.join(str(base or "."), "lightning_cam")

    def _warn_once(self, key: str, msg: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        from pytorch_lightning.utilities import rank_zero_warn

        rank_zero_warn(msg)


class GradCAMCallback(CAMCallback):
    """Grad-CAM (Selvaraju et al., ICCV 2017) at validation epochs; see :class:`CAMCallback`.

    Example:
        >>> from lightning_cam import GradCAMCallback
        >>> cb = GradCAMCallback(layer="backbone.layer4", num_samples=8, log_heatmap=True)
    """

    default_methods = ("gradcam",)


class GradCAMPlusPlusCallback(CAMCallback):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018) at validation epochs; see :class:`CAMCallback`.

    Example:
        >>> from lightning_cam import GradCAMPlusPlusCallback
        >>> cb = GradCAMPlusPlusCallback(layer="backbone.layer4")
    """

    default_methods = ("gradcam++",)
