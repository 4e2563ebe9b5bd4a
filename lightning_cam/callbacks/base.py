"""The CAM callbacks: explanations of a fixed probe set, logged at validation runs.

The hook class only schedules. Its parts, one concern each: :mod:`.options` (arguments and
their validation), :mod:`.probes` (the probe set), :mod:`.shared` (the computation shared by the
callbacks of a trainer), :mod:`.task` / :mod:`.tasks` (classification, detection),
:mod:`.render` (pictures and scalars) and :mod:`.sinks` (TensorBoard, W&B, MLflow, PNG files).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from typing_extensions import override

from lightning_cam._compat import CallbackBase, MisconfigurationException
from lightning_cam.callbacks import render
from lightning_cam.callbacks.batches import parse_batch
from lightning_cam.callbacks.classification import ClassificationTask
from lightning_cam.callbacks.detection import DetectionTask
from lightning_cam.callbacks.options import KINDS, METRICS, CAMOptions, register_signature
from lightning_cam.callbacks.probes import ProbeSet
from lightning_cam.callbacks.shared import SHARED, weights_version
from lightning_cam.callbacks.sinks import PNGFolderSink, png_root, sink_for
from lightning_cam.callbacks.task import TaskStrategy
from lightning_cam.callbacks.tasks import task_class
from lightning_cam.engine import Explanation

__all__ = ["KINDS", "METRICS", "CAMCallback", "GradCAMCallback", "GradCAMPlusPlusCallback"]


class CAMCallback(CallbackBase):
    """Logs CAM explanations of a fixed set of probe images at validation runs.

    The probe set is the first ``metrics_num_samples`` samples of the validation data
    (dataloader ``dataloader_idx``), captured once as ordinary CPU tensors and saved in
    checkpoints, so every run shows the same images and TensorBoard's step slider shows the maps
    evolve. At the end of every ``every_n_epochs``-th validation run of ``fit`` (mid-epoch
    validations count; the sanity check does not) and of every ``trainer.validate()`` /
    ``trainer.test()`` run, rank zero runs the unwrapped LightningModule on the probes and
    logs, with ``step=trainer.global_step``:

    * images, one labelled grid per tag ``{method}/{layer}/{kind}`` — ``method`` a name from
      :data:`lightning_cam.methods.METHODS`, ``layer`` the dotted layer name, ``kind`` one of
      ``heatmap``, ``overlay``, ``guided_backprop``, ``guided_gradcam``; each tile says the
      predicted class and its probability, and the true label when the batch has one;
    * scalars ``{method}/{layer}/{metric}``: ``pointing_game`` and ``energy_pointing_game`` when
      the batches carry masks or boxes, and optionally ``localisation_error``, ``average_drop``,
      ``increase_in_confidence``, ``deletion_auc`` and ``insertion_auc``.

    During ``trainer.test()`` the same is logged with the prefix ``test/``. Images go to every
    logger that takes them (TensorBoard, W&B, MLflow; see :mod:`lightning_cam.callbacks.sinks`),
    else to PNG files ``{log_dir}/cam_images/{tag}/step_{step:07d}.png`` (``log_dir`` the
    trainer's, else ``default_root_dir``; never ``lightning_cam``, the package's own folder
    from a checkout's root; said once); under ``fast_dev_run`` nothing is written,
    but everything is computed.

    **Checked before training time is spent.** At setup the layer names and the class id; at
    the first batch (the sanity check's, or the first training batch) a probe forward on two
    images checks the output (logits found, see ``output_transform``), the layers (reached,
    ``(B, C, h, w)`` maps, not channels-last) and the batch layout (images the model and the
    pictures accept, integer class ids for ``target="label"``, masks of the images' size).
    What cannot work raises :class:`MisconfigurationException` naming the argument, the value
    and the fix.

    **Outputs.** A tensor of logits ``(B, num_classes)`` or scores ``(B,)``, an object with
    ``.logits`` or a dict with ``"logits"``; a tuple / list / dict with exactly one tensor
    ``(B, num_classes)`` (e.g. ``(logits, features)``; ``num_classes`` from the datamodule or
    hparams when known) is read as the logits. Anything else needs ``output_transform``.

    **Detectors.** When the LightningModule is or wraps a torchvision detector (Faster R-CNN,
    RetinaNet, FCOS; found by :func:`lightning_cam.detection.find_detector`) and validates on
    torchvision's batches ``(list of images, list of target dicts)`` — or wraps a detectron2
    ``GeneralizedRCNN`` / ``RetinaNet`` and validates on detectron2's batches — the probes are
    images and their targets, and the callback logs, per method and layer (``layer`` relative
    to the LightningModule or to the detector; default ``backbone.body``'s last stage;
    ``"roi_heads.box_roi_pool"`` gives Faster R-CNN's RoI-level maps):

    * ``{method}/{layer}/detections``: a row per probe image, the image with its top
      ``detection_top_k`` detections scoring at least ``detection_score_threshold``, then one
      heatmap per detection with its box (when ``log_overlay`` or ``log_heatmap``);
    * ``{method}/{layer}/pointing_game`` and ``energy_pointing_game``: over the detections of the
      ``metrics_num_samples`` images matched to a ground-truth box (IoU >= 0.5, same label).

    ``target`` does not apply to detectors: each detection's own score is explained.

    Several lightning-cam callbacks on one trainer with the same probe settings share one
    forward and backward pass per run (e.g. Grad-CAM and Grad-CAM++ on the same layer); a
    result is keyed by the model and its weights, the probes, the methods and the layers, and
    never reused by another validation / test run.

    Args:
        layer: Dotted module name inside the LightningModule (``"backbone.layer4"``), a list of
            names, or ``None`` for the default layer (the last spatial feature map).
        num_samples: Number of probe images shown.
        every_n_epochs: Log at every n-th validation run of ``fit`` (the n-th, 2n-th, ...;
            mid-epoch validations count). Lightning's ``check_val_every_n_epoch`` decides when
            validation runs; this decides which of those runs are explained.
        target: ``"pred"`` (each probe's predicted class; ``"predicted"`` is the same),
            ``"label"`` (its ground-truth label from the batch), an int class id, or
            ``"labels"`` for multi-label (sigmoid) heads validated on multi-hot labels
            ``(B, K)``: one tile per (probe, true label), captioned with the label's name and
            its sigmoid probability, from one forward and one batched backward
            (:func:`lightning_cam.explain_multilabel`; see
            :mod:`lightning_cam.callbacks.multilabel`), metrics per pair and per label
            (``{method}/{layer}/{metric}/label_{name}``); ``"binary"`` / ``"binary:negative"``
            (the logit ``z`` / ``-z`` of a single-logit head ``(B, 1)``, captioned with the spec
            and ``sigmoid(z)``) or ``"regression:<index>[:increase|decrease]"`` (an output of a
            regression head, captioned with its value): the target specs of
            :mod:`lightning_cam.engine.target_spec`, checked against the head at the first
            batch. Detectors and segmentation models ignore ``target``.
        log_heatmap: Log the colourised maps.
        log_overlay: Log the maps over the images.
        log_guided_backprop: Log guided backprop.
        log_guided_gradcam: Log guided Grad-CAM. ``None`` (default): yes, except for models
            whose guided backprop would be mostly the plain gradient (attention models: ViT,
            DeiT, Swin, MaxViT; :func:`lightning_cam.engine.guided.guided_support`), said once.
        mean: Per-channel mean to undo the input normalisation for display (with ``std``);
            without them float images within [0, 1] are shown as they are, others min-max
            normalised per image.
        std: Per-channel std (see ``mean``).
        class_names: Names drawn on the tiles; default: ``class_names`` of the datamodule or of
            the module (or its hparams) when present, else class ids.
        colormap: Colour map of heatmaps and overlays (see
            :data:`lightning_cam.tools.viz.COLORMAPS`).
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
        tile_size: Shorter side of the grid tiles in pixels.
        methods: CAM methods (names from :data:`lightning_cam.methods.METHODS`); set by the
            subclasses.
        pointing_game_tolerance: Hit radius of the pointing game in pixels; default (``None``):
            the original protocol's 15 pixels at 224 x 224 (Zhang et al., ECCV 2016), scaled to
            the images' shorter side. ``0`` asks for the maximum on an object pixel.
        detection_top_k: Detectors: detections explained and shown per image, at most.
        detection_score_threshold: Detectors: least score of an explained detection.
        output_transform: A callable ``output -> logits (B, num_classes)`` or ``scores (B,)``
            applied to the module's output, or its dotted path (``"mypackage.heads.logits_of"``,
            for YAML). Scores ``(B,)`` are explained as they are (``target`` must be
            ``"pred"``).
        reshape_transform: How the layers' outputs read as ``(B, C, h, w)``: ``"auto"``
            (ViT tokens, Swin channels-last maps of recognised models), ``"tokens"``,
            ``"channels_last"``, ``"channels_first"``, a callable or its dotted path (see
            :mod:`lightning_cam.engine.layouts`).
        ignore_index: Segmentation: the label(s) of void pixels in the true masks (VOC and
            torchvision: ``255``; Lightning's segmentation example: ``250``), a list of them, or
            ``None``; negative labels (``-100``, cross-entropy's default) are always void.
            Void pixels are neither explained nor scored.
        third_axis: For inputs of three spatial axes, what the first one is: ``"depth"``
            (volumes ``(B, C, D, H, W)``: the orthogonal slices through the map's peak and a
            slice montage) or ``"time"`` (videos ``(B, C, T, H, W)``: a frame strip and an
            animation, TensorBoard's and W&B's video panels). Signals ``(B, C, L)`` are
            plotted with the map as a colour band (:mod:`lightning_cam.tools.viz_nd`).

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
        target: str | int = "pred",
        log_heatmap: bool = False,
        log_overlay: bool = True,
        log_guided_backprop: bool = False,
        log_guided_gradcam: bool | None = None,
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
        output_transform: Callable[[Any], torch.Tensor] | str | None = None,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | str = "auto",
        ignore_index: int | list[int] | None = 255,
        third_axis: Literal["depth", "time"] = "depth",
    ) -> None:
        # by name, never by position: the signature above is the one place the arguments are
        # written (CAMOptions reads their names and defaults from it)
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.options = CAMOptions.from_arguments(
            default_methods=self.default_methods, **arguments
        )
        self.task: TaskStrategy = ClassificationTask(self)
        self._probe_sets: dict[str, ProbeSet] = {}
        self._validation_runs = 0  # validation runs of fit seen (every_n_epochs counts these)
        self._checked_train = self._checked_val = False
        self._warned: set[str] = set()
        self.last_explanation: Explanation | None = None
        self.last_result: Any = None  # the task's last result presented (any task)

    def __getattr__(self, name: str) -> Any:
        # the options read as attributes (``cb.methods``, ``cb.layer``, ``cb.kinds``, ...)
        options = self.__dict__.get("options")
        if options is not None and not name.startswith("__") and hasattr(options, name):
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- Lightning hooks ------------------------------------------------------------------------

    @property
    def state_key(self) -> str:
        o = self.options
        return self._generate_state_key(
            methods=o.methods, layer=o.layer, num_samples=o.num_samples, target=o.target,
            dataloader_idx=o.dataloader_idx,
        )  # fmt: skip

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"validation_runs": self._validation_runs}
        for probes in self._probe_sets.values():
            state.update(probes.state_dict())
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._validation_runs = int(state_dict.get("validation_runs", self._validation_runs))
        for name in state_dict:
            if name != "validation_runs":
                self.probe_set(name).load_state_dict(state_dict)

    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        cls = task_class(pl_module, self.options)
        if type(self.task) is not cls:
            self.task = cls(self)
        reason = self.options.for_model(pl_module)
        if reason:
            self._warn_once(
                "guided_gradcam_auto",
                f"no guided Grad-CAM pictures for this model by default ({reason}); pass "
                "log_guided_gradcam=True to log them anyway.",
            )
        self.task.setup(trainer, pl_module)
        self._checked_train = self._checked_val = False

    @override
    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._checked_train:  # a probe forward before the first step: fail in seconds
            self._checked_train = True
            self.task.check(trainer, pl_module, batch, validation=False)

    @override
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._begin_run(trainer, getattr(trainer, "num_val_batches", []))

    @override
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._begin_run(trainer, getattr(trainer, "num_test_batches", []))

    @override
    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._on_batch(trainer, pl_module, batch, dataloader_idx)

    @override
    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._on_batch(trainer, pl_module, batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._on_run_end(trainer, pl_module, prefix="")

    @override
    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._on_run_end(trainer, pl_module, prefix="test/")

    # -- scheduling -----------------------------------------------------------------------------

    def _begin_run(self, trainer: Any, num_batches: Any) -> None:
        SHARED.begin_run(trainer)  # a new run never sees an earlier run's results
        idx = self.options.dataloader_idx
        if isinstance(num_batches, list) and num_batches and idx >= len(num_batches):
            raise MisconfigurationException(
                f"dataloader_idx={idx} is invalid: this run has {len(num_batches)} "
                f"dataloader(s); expected 0..{len(num_batches) - 1}."
            )

    def _on_batch(self, trainer: Any, pl_module: Any, batch: Any, dataloader_idx: int) -> None:
        if dataloader_idx != self.options.dataloader_idx:
            return
        if not self._checked_val:  # every rank: a refusal must not leave ranks waiting
            self._checked_val = True
            self.task.check(trainer, pl_module, batch, validation=True)
        probes = self.probe_set(self.task.state_name)
        if not trainer.sanity_checking and trainer.is_global_zero and probes.wanted:
            probes.add(self.task.capture(batch))

    def _due(self, trainer: Any, prefix: str) -> bool:
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        if prefix or fn != "fit":
            return True  # trainer.validate() / test(): always
        self._validation_runs += 1
        return bool(getattr(trainer, "fast_dev_run", False)) or (
            self._validation_runs % self.options.every_n_epochs == 0
        )

    def _on_run_end(self, trainer: Any, pl_module: Any, prefix: str) -> None:
        if trainer.sanity_checking:
            return
        probes = self.probe_set(self.task.state_name)
        probes.finish(self.task.assemble)  # fixed after the first run, logged or not
        if not self._due(trainer, prefix) or not trainer.is_global_zero:
            return  # rank zero alone computes and logs; nothing here waits on another rank
        if probes.data is None:
            self._warn_once("noprobe", "no validation batch reached the callback, nothing to log.")
            return
        result = self.compute(trainer, pl_module)
        self.last_result = result
        if isinstance(result, Explanation):
            self.last_explanation = result
        pictures, scalars = self.task.present(trainer, pl_module, probes.data, result)
        self._emit(trainer, pictures, scalars, prefix)

    # -- shared computation ---------------------------------------------------------------------

    def probe_set(self, name: str) -> ProbeSet:
        """The probe set stored under ``name`` in the state dict (created empty)."""
        if name not in self._probe_sets:
            self._probe_sets[name] = ProbeSet(self.options.metrics_num_samples, name)
        return self._probe_sets[name]

    @property
    def probe_token(self) -> str | None:
        """Fingerprint of the current task's probe set."""
        return self.probe_set(self.task.state_name).token

    def compute(self, trainer: Any, pl_module: Any) -> Any:
        """The task's result for the probes, shared by every lightning-cam callback of the
        trainer with the same probe settings (the union of their methods and layers)."""
        probes = self.probe_set(self.task.state_name).data
        group = [
            cb
            for cb in getattr(trainer, "callbacks", [])
            if isinstance(cb, CAMCallback)
            and type(cb.task) is type(self.task)
            and cb.task.share_key() == self.task.share_key()
        ] or [self]
        plan = self.task.plan(group, pl_module, probes)
        key = (
            self.task.name, self.task.share_key(), weights_version(pl_module), self.probe_token,
            plan,
        )  # fmt: skip
        return SHARED.get(
            trainer, key, lambda: self.task.compute(trainer, pl_module, probes, plan)
        )

    # -- logging --------------------------------------------------------------------------------

    def _emit(
        self, trainer: Any, pictures: dict[str, np.ndarray], scalars: dict[str, float], prefix: str
    ) -> None:
        step = trainer.global_step
        pictures = {prefix + k: v for k, v in pictures.items()}
        scalars = {prefix + k: v for k, v in scalars.items()}
        loggers = list(getattr(trainer, "loggers", []) or [])
        sinks = [sink_for(logger) for logger in loggers]
        for sink in sinks:
            sink.log(pictures, scalars, step)
        if pictures and not any(sink.takes_images for sink in sinks):
            root = png_root(trainer)
            PNGFolderSink(root).log(pictures, {}, step)
            names = ", ".join(type(lg).__name__ for lg in loggers)
            why = f"no logger takes images ({names})" if loggers else "the trainer has no logger"
            self._warn_once("png", f"{why}; writing the pictures as PNG files under {root}.")

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            from pytorch_lightning.utilities import rank_zero_warn

            rank_zero_warn(f"{type(self).__name__}: {msg}")

    # -- public helpers (overridable / kept for compatibility) ----------------------------------

    @property
    def probes(self) -> dict[str, torch.Tensor] | None:
        """The classification probe set (stacked CPU tensors), or ``None``."""
        return self.probe_set(ClassificationTask.state_name).data  # type: ignore[no-any-return]

    @probes.setter
    def probes(self, value: dict[str, torch.Tensor] | None) -> None:
        self.probe_set(ClassificationTask.state_name).data = value

    @property
    def det_probes(self) -> list[Any] | None:
        """The detection probe set (``(image, target)`` pairs on CPU), or ``None``."""
        return self.probe_set(DetectionTask.state_name).data  # type: ignore[no-any-return]

    @det_probes.setter
    def det_probes(self, value: list[Any] | None) -> None:
        self.probe_set(DetectionTask.state_name).data = value

    def extract(self, batch: Any) -> dict[str, torch.Tensor | None]:
        """Pull images (and labels, masks, boxes when present) out of a batch.

        Handles ``(x, y, ...)`` tuples/lists, dicts (``image_key``, ``label_key``, ``mask_key``,
        ``box_key``) and bare image tensors. Override to support other batch layouts; return a
        dict with ``"image"`` ``(B, C, H, W)`` and optionally ``"label"`` ``(B,)``, ``"mask"``
        ``(B, H, W)`` and ``"box"`` ``(B, 4)``.

        Raises:
            MisconfigurationException: when no image batch can be found.
        """
        o = self.options
        out: dict[str, torch.Tensor | None] = parse_batch(
            batch, image_key=o.image_key, owner=type(self).__name__,
            keys={"label": o.label_key, "mask": o.mask_key, "box": o.box_key},
        )  # fmt: skip
        img = out["image"]
        assert img is not None
        for key in ("label", "mask", "box"):
            val = out[key]
            if not isinstance(val, torch.Tensor) or val.shape[:1] != img.shape[:1]:
                out[key] = None
        return out

    def extract_detection(
        self, batch: Any
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None] | None:
        """``(images, targets)`` of a detector's validation batch (torchvision's format); override
        for other layouts. ``None`` when ``batch`` is not a detection batch."""
        assert isinstance(self.task, DetectionTask)
        return self.task.split(batch)

    def explain(self, trainer: Any, pl_module: Any) -> Explanation:
        """Explain the classification probe set with ``pl_module`` (shared, see
        :meth:`compute`)."""
        return self.compute(trainer, pl_module)  # type: ignore[no-any-return]

    def explain_detections(self, trainer: Any, pl_module: Any) -> list[Any]:
        """Explain the top detections of every detection probe (shared, see :meth:`compute`)."""
        return self.compute(trainer, pl_module)  # type: ignore[no-any-return]

    def render(self, trainer: Any, pl_module: Any, result: Any) -> dict[str, np.ndarray]:
        """The pictures (uint8 HWC) of ``result`` keyed by tag (no prefix)."""
        probes = self.probe_set(self.task.state_name).data
        return self.task.present(trainer, pl_module, probes, result)[0]

    def compute_metrics(self, pl_module: Any, result: Any) -> dict[str, float]:
        """Explanation-quality scalars of a classification ``result`` keyed by tag."""
        task = self.task
        if not isinstance(task, ClassificationTask) or self.probes is None:
            raise RuntimeError(
                f"{type(self).__name__}.compute_metrics() needs a classification probe set; "
                f"this callback serves {type(task).__name__}."
            )
        return task.metrics(pl_module, self.probes, result)

    def _tolerance(self, images: torch.Tensor) -> float:
        return render.pointing_tolerance(self.options, images)


register_signature(CAMCallback.__init__)


class GradCAMCallback(CAMCallback):
    """Grad-CAM (Selvaraju et al., ICCV 2017) at validation runs; see :class:`CAMCallback`.

    Example:
        >>> from lightning_cam import GradCAMCallback
        >>> cb = GradCAMCallback(layer="backbone.layer4", num_samples=8, log_heatmap=True)
    """

    default_methods = ("gradcam",)


class GradCAMPlusPlusCallback(CAMCallback):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018) at validation runs; see
    :class:`CAMCallback`.

    Example:
        >>> from lightning_cam import GradCAMPlusPlusCallback
        >>> cb = GradCAMPlusPlusCallback(layer="backbone.layer4")
    """

    default_methods = ("gradcam++",)
