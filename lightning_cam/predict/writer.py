"""``CAMWriter``: explain and evaluate a whole dataset on Lightning's predict loop.

A prediction writer (``BasePredictionWriter``): during ``trainer.predict(model, datamodule)`` it
explains every batch with the registry's methods at the chosen layers and writes the results as
they come (see :mod:`lightning_cam.predict.storage` for the files). Distribution, precision and
sampling are Lightning's: under ``strategy="ddp"`` each rank explains the images its sampler
gives it and writes its own shards; rank zero joins the shard indexes into the manifest after a
barrier. Dataset means of the explanation-quality metrics are torchmetrics states reduced across
ranks. A rerun with the same arguments and output folder skips the images already written.

Example:
    >>> import tempfile, torch
    >>> from pytorch_lightning import Trainer
    >>> from lightning_cam.data import ShapesDataModule
    >>> from lightning_cam.models import ShapesClassifier
    >>> out = tempfile.mkdtemp()
    >>> writer = CAMWriter(out, layer="backbone", metrics=["pointing_game"])
    >>> trainer = Trainer(accelerator="cpu", callbacks=[writer], logger=False,
    ...                   enable_progress_bar=False, enable_model_summary=False)
    >>> dm = ShapesDataModule(num_train=8, num_val=8, num_test=8, batch_size=4)
    >>> _ = trainer.predict(ShapesClassifier(), dm, return_predictions=False)
    >>> import pandas as pd
    >>> len(pd.read_parquet(f"{out}/manifest.parquet"))
    8
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from typing_extensions import override

from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks.batches import parse_batch
from lightning_cam.callbacks.options import (
    check_batch_keys,
    check_detection_score_threshold,
    check_detection_top_k,
    check_int,
    check_layer,
    check_methods,
    check_metrics,
    check_target,
    check_target_metrics,
    check_third_axis,
    check_tolerance,
    misconf,
)
from lightning_cam.engine import Explainer, Explanation
from lightning_cam.engine.layers import resolve_layers
from lightning_cam.engine.target_spec import SpecScore, parse_target_spec
from lightning_cam.engine.targets import class_probabilities, extract_logits
from lightning_cam.methods import DEFAULT_METHODS, normalize_maps, upsample
from lightning_cam.metrics import (
    LOCALISATION_METRICS,
    METRIC_NAMES,
    image_metrics,
    pointing_tolerance,
)
from lightning_cam.predict import storage
from lightning_cam.predict.detection_writer import DetectionAudit, detection_audit
from lightning_cam.predict.evaluation import DatasetMeans
from lightning_cam.predict.sanity import SIMILARITIES, cascade_stages, randomisation_test
from lightning_cam.predict.summary import write_summary


def _writer_bases() -> tuple[type, ...]:
    """``BasePredictionWriter`` of every installed Lightning namespace: the predict loop finds
    writers by ``isinstance`` against its own class."""
    bases: list[type] = []
    for ns in ("pytorch_lightning", "lightning.pytorch"):
        try:
            mod = importlib.import_module(f"{ns}.callbacks")
        except ImportError:  # pragma: no cover - depends on what is installed
            continue
        bases.append(mod.BasePredictionWriter)
    return tuple(bases)


PredictionWriterBase: Any = type(
    "PredictionWriterBase", _writer_bases(), {"__module__": __name__}
)

DEFAULT_METRICS = (
    "pointing_game",
    "energy_pointing_game",
    "localisation_error",
    "average_drop",
    "increase_in_confidence",
)
_UNSAFE = re.compile(r"[^\w.+-]+")
_SAFE_PART = re.compile(r"[^A-Za-z0-9._+-]+")
#: The ``status`` of an image that was read and explained.
STATUS_OK = "ok"


def overlay_stem(image_id: str) -> str:
    """A file-name stem for ``image_id``: unique per id and readable.

    Letters of any script are kept (``猫.png`` stays ``猫.png``); other unsafe characters become
    ``_`` and then a short hash of the id is appended, so that ids which differ only in those
    characters (``a/b.png`` and ``a_b.png``) never share a file.

    Example:
        >>> overlay_stem("im0.png"), overlay_stem("cat/im0.png")
        ('im0.png', 'cat_im0.png~821abc3c')
    """
    stem = _UNSAFE.sub("_", image_id)
    if stem != image_id or not stem:
        stem += "~" + hashlib.blake2b(image_id.encode(), digest_size=4).hexdigest()
    return stem


def input_hashes(images: torch.Tensor) -> list[str]:
    """One hash per image of ``(B, C, H, W)``: the model input's bytes, dtype and shape (the
    file's content after every transform: another file, image size or normalisation, another
    hash)."""
    data = images.detach().contiguous().cpu()
    out = []
    for x in data:
        h = hashlib.blake2b(digest_size=8)
        h.update(f"{x.dtype}{tuple(x.shape)}".encode())
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b"")
        out.append(h.hexdigest())
    return out


_misconf = misconf


def _version(t: torch.Tensor) -> int | None:
    """The in-place version counter (inference tensors have none: ``None``)."""
    return None if t.is_inference() else int(t._version)


class _ForwardReuse:
    """Lets ``predict_step``'s forward return the logits the explanation already computed.

    The explanation runs one forward of the module on the batch's images (to get the gradients
    it needs); ``predict_step`` would run a second, identical one. For one batch at a time, the
    module's ``forward`` is replaced by a function that, called once with the very same image
    tensor (same object, not modified in place since; inference tensors, which have no version
    counter, are compared by identity), returns a copy of those logits, and calls
    the real forward for anything else. On the first batch it calls the real forward and compares:
    only when the outputs agree (a plain tensor, ``allclose``) is the shortcut used afterwards;
    otherwise it is never used again. The module's own forward is put back after every batch and
    on exceptions.
    """

    def __init__(self) -> None:
        self.verified: bool | None = None
        self._installed = False
        self._previous: Any = None

    def install(self, module: nn.Module, images: torch.Tensor, logits: torch.Tensor | None) -> None:
        if self.verified is False or logits is None or self._installed:
            return
        original = module.forward
        version = _version(images)
        used = [False]

        def forward(*args: Any, **kwargs: Any) -> Any:
            if (
                not used[0]
                and len(args) == 1
                and not kwargs
                and args[0] is images
                and _version(images) == version
            ):
                used[0] = True
                if self.verified:
                    return logits.clone()
                real = original(*args)
                self.verified = (
                    isinstance(real, torch.Tensor)
                    and real.shape == logits.shape
                    and real.dtype == logits.dtype
                    and torch.allclose(real.float(), logits.float(), rtol=1e-4, atol=1e-5)
                )
                return real
            return original(*args, **kwargs)

        self._previous = module.__dict__.get("forward")
        module.forward = forward  # type: ignore[method-assign]
        self._installed = True

    def remove(self, module: nn.Module) -> None:
        if not self._installed:
            return
        if self._previous is None:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = self._previous
        self._previous = None
        self._installed = False


def _device(module: nn.Module) -> torch.device:
    dev = getattr(module, "device", None)
    if isinstance(dev, torch.device):
        return dev
    return next(iter(module.parameters()), torch.zeros(0)).device


class CAMWriter(PredictionWriterBase):
    """Explains every batch of ``trainer.predict`` and writes maps, a manifest and a summary.

    Storage (the choice, documented): CAMs are stored at the **layer's resolution in float16**
    by default (``map_size="layer"``, ``map_dtype="float16"``): 128 bytes per map for an 8 x 8
    layer, exact to 1e-3, and resampling to the image (``lightning_cam.methods.upsample`` then
    ``normalize_maps``) gives back the engine's full-size map. ``map_size="input"`` stores the
    map at the image size; ``map_dtype="uint8"`` stores ``round(255 * map)``. Guided backprop and
    guided Grad-CAM (off by default: ``3 x H x W`` values each) are float16 at the image size.

    Per image the manifest (``manifest.parquet``) holds: ``index`` (dataset index, -1 when the
    loader does not tell), ``id``, ``rank``, ``label`` (when the batch has labels),
    ``explained_class``, ``score`` (the differentiated logit), ``target`` (the target spec),
    ``target_value`` (a ``binary`` / ``regression`` target's value), ``predicted_class``,
    ``predicted_prob``, one column per ``{method}/{layer}/{metric}``, ``status`` (``"ok"``, or
    the dataset's reason for an image it could not read: see :meth:`extract`), ``nonfinite``
    (a NaN / inf input, logit or map), ``input_hash`` / ``input_shape`` (the model input's
    content hash and shape: a rerun with other data at the same indices is refused),
    ``map_shape`` (the stored maps' shape, e.g. ``6x6x6`` for a volume at a layer of
    ``(B, C, 6, 6, 6)``), and ``shard`` / ``row``: where its maps are. Signals ``(B, C, L)``,
    volumes and videos ``(B, C, D, H, W)`` are explained like images: their maps have the
    input's spatial rank (``(L,)``, ``(D, H, W)``) and their metrics are per input. An
    unreadable or non-finite image gets NaN maps (0 in uint8), NaN metrics left out of the
    means, no predicted class and no overlay.
    ``summary.json`` and ``summary.md`` hold the dataset means (synced across ranks), the count
    of each ``status`` when some images were not explained, and the sanity check (or why it
    failed); the means are also logged to the trainer's logger as
    ``explain/{method}/{layer}/{metric}``.

    Memory is bounded: a rank buffers at most ``shard_size`` images before writing a shard; the
    sanity sample (``sanity_samples`` images) is the only other per-image state.

    Args:
        output_dir: Output folder (created). A folder holding another configuration's results is
            refused, never mixed.
        methods: CAM methods of :data:`lightning_cam.methods.METHODS` (default: Grad-CAM and
            Grad-CAM++).
        layer: Layer name(s) of the LightningModule, or ``None`` for the default layer.
        target: What is explained, a target spec as the callbacks' ``target``
            (:mod:`lightning_cam.engine.target_spec`): ``"pred"`` (the model's prediction;
            ``"predicted"`` is the same), ``"label"`` (the batch's labels), a class id
            (int >= 0), ``"binary"`` / ``"binary:negative"`` (a single-logit head ``(B, 1)``:
            the rows' ``target_value`` is ``sigmoid(z)``, the positive class's probability) or
            ``"regression:<index>[:increase|decrease]"`` (``target_value``: the output's value).
            Multi-label heads' ``"labels"`` are refused here: use
            :func:`lightning_cam.explain_multilabel` or ``CAMCallback(target="labels")``.
        guided_backprop: Also store guided backprop ``(3, H, W)`` per image.
        guided_gradcam: Also store guided Grad-CAM per method and layer.
        map_size: ``"layer"`` or ``"input"`` resolution of the stored CAMs.
        map_dtype: ``"float16"`` or ``"uint8"``.
        normalize: ``True``: maps min-max normalised to [0, 1] per image. ``False``: the
            method's raw map (after its ReLU where it has one), comparable across images,
            classes and checkpoints, stored as its [0, 1] map plus its scale: each shard holds
            ``cam_scale/{method}/{layer}`` ``(B, 2)`` float32 (the raw map's min and max at the
            stored resolution), and :func:`~lightning_cam.predict.load_maps` returns the raw
            map. Metrics and overlays use the [0, 1] maps either way.
        shard_size: Images per shard file.
        metrics: Per-image metrics (``pointing_game``, ``energy_pointing_game``,
            ``localisation_error`` need a mask or box in the batch; ``average_drop``,
            ``increase_in_confidence``, ``deletion_auc``, ``insertion_auc`` query the model:
            2 and ``2 * (deletion_steps + 1)`` extra forwards per image and map).
        pointing_game_tolerance: Hit radius in pixels; ``None``: 15 px at 224 px, scaled.
        deletion_steps: Steps of the deletion/insertion curves.
        metrics_batch_size: Images per forward of the faithfulness metrics (``None``: all).
        sanity_samples: Images (those of dataset index ``< sanity_samples``) for the cascading
            model-parameter randomisation test; 0 turns it off.
        sanity_stages: Points of the cascade at which the similarity is measured.
        overlays: Write overlay pictures of the images of dataset index ``< overlays``
            (``.jpg``; signals: ``-signal.png`` plots; volumes: ``-slices.png`` through the
            map's peak and ``-montage.png``; videos: ``-frames.gif`` and ``-strip.png``).
        overlay_ids: Also write overlays of these image ids.
        mean: Per-channel mean used to normalise the images (to draw overlays).
        std: Per-channel std used to normalise the images.
        image_key: Key of the images in dict batches.
        label_key: Key of the labels.
        mask_key: Key of the object masks ``(B, H, W)`` (``(B, L)``, ``(B, D, H, W)`` for
            signals, volumes).
        box_key: Key of the object boxes ``(B, 4)``.
        id_key: Key of the image ids (strings or ints); default id: the dataset index.
        max_batch: Images per explanation pass (bounds memory; ``None``: the whole batch).
        seed: Seed of the sanity check's re-initialisations.
        reuse_forward: Let ``predict_step``'s forward reuse the explanation's forward (one
            forward per batch instead of two) when it calls the module on the batch's image
            tensor itself, checked equal on the first batch; full precision only (under mixed
            precision ``predict_step`` runs in autocast and keeps its own forward).
        third_axis: For inputs of three spatial axes, ``"depth"`` (volumes: slice pictures)
            or ``"time"`` (videos: GIF and frame strip), as the callbacks' ``third_axis``.
        detection_top_k: Detectors: detections explained per image, at most.
        detection_score_threshold: Detectors: least score of an explained detection.

    Detectors: a LightningModule that is or wraps one (as the detection callbacks find them)
    gets one row and one map per method and layer per detection, and the pointing games of
    each detection against its matched ground-truth box (see
    :mod:`lightning_cam.predict.detection_writer`; ``pointing_game_tolerance=None`` is 0 there:
    the map's maximum in the box). The default metrics become ``pointing_game`` and
    ``energy_pointing_game``; the arguments that do not apply (``target``, guided outputs,
    ``sanity_samples``, overlays, ``normalize=False`` ...) are refused at setup.

    Raises:
        MisconfigurationException: A bad argument (named, with what is allowed).
    """

    def __init__(
        self,
        output_dir: str = "cam_predictions",
        methods: Sequence[str] = DEFAULT_METHODS,
        layer: str | list[str] | None = None,
        target: str | int = "pred",
        guided_backprop: bool = False,
        guided_gradcam: bool = False,
        map_size: Literal["layer", "input"] = "layer",
        map_dtype: Literal["float16", "uint8"] = "float16",
        shard_size: int = 1024,
        metrics: Sequence[str] = DEFAULT_METRICS,
        pointing_game_tolerance: float | None = None,
        deletion_steps: int = 16,
        metrics_batch_size: int | None = None,
        sanity_samples: int = 0,
        sanity_stages: int = 5,
        overlays: int = 0,
        overlay_ids: list[str] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        mask_key: str = "mask",
        box_key: str = "box",
        id_key: str = "id",
        max_batch: int | None = None,
        seed: int = 0,
        reuse_forward: bool = True,
        normalize: bool = True,
        third_axis: Literal["depth", "time"] = "depth",
        detection_top_k: int = 3,
        detection_score_threshold: float = 0.5,
    ) -> None:
        super().__init__(write_interval="batch")
        if not isinstance(normalize, bool):
            raise _misconf("normalize", normalize, "True or False")
        self.normalize = normalize
        self._set_explanation(methods, layer, target, guided_backprop, guided_gradcam, max_batch)
        self._set_storage(output_dir, map_size, map_dtype, shard_size, overlays, overlay_ids)
        self._set_metrics(
            metrics, pointing_game_tolerance, deletion_steps, metrics_batch_size, sanity_samples,
            sanity_stages,
        )  # fmt: skip
        for name, stat in (("mean", mean), ("std", std)):
            if stat is not None and len(stat) not in (1, 3):
                raise _misconf(name, stat, "None or 1 or 3 numbers")
        check_batch_keys(
            image_key=image_key, label_key=label_key, mask_key=mask_key, box_key=box_key,
            id_key=id_key,
        )  # fmt: skip
        self.mean, self.std = mean, std
        self.image_key, self.label_key = image_key, label_key
        self.mask_key, self.box_key, self.id_key = mask_key, box_key, id_key
        self.seed = seed
        self.reuse_forward = bool(reuse_forward)
        self.third_axis = check_third_axis(third_axis)
        self.detection_top_k = check_detection_top_k(detection_top_k)
        self.detection_score_threshold = check_detection_score_threshold(
            detection_score_threshold
        )
        self._detection: DetectionAudit | None = None
        self._reset()

    def _set_explanation(
        self, methods: Any, layer: Any, target: Any, guided_backprop: bool,
        guided_gradcam: bool, max_batch: int | None,
    ) -> None:  # fmt: skip
        """What is explained: the callbacks' checks (:mod:`lightning_cam.callbacks.options`)."""
        self.methods = check_methods([methods] if isinstance(methods, str) else list(methods))
        check_layer(layer)
        self.layer = layer
        canonical = check_target(target, multilabel=False)
        # stored as "predicted" (the folder's configuration of earlier versions)
        self.target = "predicted" if canonical == "pred" else canonical
        self._choice = parse_target_spec(canonical)
        self.guided_backprop = bool(guided_backprop or guided_gradcam)
        self.guided_gradcam = bool(guided_gradcam)
        self.max_batch = check_int("max_batch", max_batch, 1, optional=True)

    def _set_storage(
        self, output_dir: Any, map_size: str, map_dtype: str, shard_size: int, overlays: int,
        overlay_ids: list[str] | None,
    ) -> None:  # fmt: skip
        """Where and how the maps are written."""
        if map_size not in ("layer", "input"):
            raise _misconf("map_size", map_size, "'layer' or 'input'")
        if map_dtype not in ("float16", "uint8"):
            raise _misconf("map_dtype", map_dtype, "'float16' or 'uint8'")
        if not isinstance(output_dir, (str, Path)) or not str(output_dir).strip():
            raise _misconf("output_dir", output_dir, "a folder path")
        self.output_dir = Path(output_dir).expanduser()
        self.map_size = map_size
        self.map_dtype = map_dtype
        self.shard_size = check_int("shard_size", shard_size, 1)
        self.overlays = check_int("overlays", overlays, 0)
        self.overlay_ids = {str(i) for i in (overlay_ids or [])}

    def _set_metrics(
        self, metrics: Any, pointing_game_tolerance: Any, deletion_steps: int,
        metrics_batch_size: int | None, sanity_samples: int, sanity_stages: int,
    ) -> None:  # fmt: skip
        """The metrics and the sanity check: the callbacks' checks."""
        self.metrics = check_metrics([metrics] if isinstance(metrics, str) else list(metrics))
        check_tolerance(pointing_game_tolerance)
        self.pointing_game_tolerance = pointing_game_tolerance  # as given (the folder's config)
        self.deletion_steps = check_int("deletion_steps", deletion_steps, 1)
        self.metrics_batch_size = check_int(
            "metrics_batch_size", metrics_batch_size, 1, optional=True
        )
        self.sanity_samples = check_int("sanity_samples", sanity_samples, 0)
        self.sanity_stages = check_int("sanity_stages", sanity_stages, 1)
        check_target_metrics(self.target, self.metrics)
        if self.sanity_samples and not self._choice.per_class:
            raise misconf(
                "sanity_samples", self.sanity_samples,
                f"0 with target={self.target!r}: the sanity check explains classes",
            )  # fmt: skip

    def _reset(self) -> None:
        self._explainer: Explainer | None = None
        self._shards: storage.ShardWriter | None = None
        self._done = np.zeros(0, np.int64)
        self._quality: DatasetMeans | None = None
        self._sanity: DatasetMeans | None = None
        self._sanity_stage_names: list[str] = []
        self._sanity_buffer: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._sanity_count = 0
        self._fingerprint = ""
        self._config: dict[str, Any] = {}
        self._layers: list[str] = []
        self._seen: dict[int, tuple[str, str | None, str | None]] = {}
        self._checked_space = False
        self._warned: set[str] = set()
        self._world = 1
        self._prior: tuple[dict[str, float], dict[str, float]] = ({}, {})
        self._pending: tuple[dict[str, Any], np.ndarray, list[str], Explanation] | None = None
        self._reuse: _ForwardReuse | None = None
        #: After a run: the summary written (``summary.json``'s content) on rank zero.
        self.summary: dict[str, Any] | None = None

    @property
    def summary_path(self) -> Path:
        """``summary.md`` in the output folder."""
        from lightning_cam.predict.summary import SUMMARY_MD

        return self.output_dir / SUMMARY_MD

    @property
    @override
    def state_key(self) -> str:
        return f"CAMWriter{{output_dir={str(self.output_dir)!r}}}"

    # ------------------------------------------------------------------ set-up

    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Check the layers and that every rank can write to the output folder."""
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        # pyarrow loads pandas on first use (a second): at setup, not in the middle of the loop.
        storage.require_pyarrow().array([0])
        default_metrics = tuple(self.metrics) == DEFAULT_METRICS
        self._detection = detection_audit(self, pl_module, default_metrics)
        if self._detection is not None:  # a detector: its own path
            storage.prepare_folder(self.output_dir, trainer.global_rank)
            return
        try:
            resolve_layers(pl_module, self.layer)
        except (TypeError, ValueError) as err:
            raise MisconfigurationException(f"layer={self.layer!r} is invalid: {err}") from err
        storage.prepare_folder(self.output_dir, trainer.global_rank)

    def _resolved_config(self, trainer: Any, pl_module: nn.Module) -> dict[str, Any]:
        dataset_len = None
        try:
            loaders = trainer.predict_dataloaders
            loaders = loaders if isinstance(loaders, Sequence) else [loaders]
            dataset_len = [len(dl.dataset) for dl in loaders]
        except (AttributeError, TypeError):
            pass
        return {
            "methods": self.methods,
            "layer": self.layer,
            "target": self.target,
            "guided_backprop": self.guided_backprop,
            "guided_gradcam": self.guided_gradcam,
            "map_size": self.map_size,
            "map_dtype": self.map_dtype,
            "normalize": self.normalize,
            "metrics": self.metrics,
            "pointing_game_tolerance": self.pointing_game_tolerance,
            "deletion_steps": self.deletion_steps,
            "model": type(pl_module).__name__,
            "model_digest": storage.model_digest(pl_module),
            "dataset_len": dataset_len,
        }

    @override
    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        """Check the folder's run file on every rank, write it on rank zero, and read what an
        earlier attempt completed (to skip it)."""
        self._reset()
        if self._detection is not None:
            self._detection.start(trainer, pl_module)
            return
        loaders = getattr(trainer, "predict_dataloaders", None)
        if isinstance(loaders, (list, tuple)) and len(loaders) > 1:
            raise MisconfigurationException(
                f"CAMWriter explains one predict dataloader, got {len(loaders)} (their dataset "
                "indices would collide): run trainer.predict once per dataset, each with its own "
                "output_dir."
            )
        config = self._resolved_config(trainer, pl_module)
        fingerprint = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
        run = {"fingerprint": fingerprint, "config": config, "format": 1}
        must_write = storage.check_run_file(self.output_dir, run)  # every rank: same answer
        rank, world = trainer.global_rank, trainer.world_size
        storage.remove_stale(self.output_dir, rank)
        # Shards of an earlier attempt, read before the barrier (no rank writes before it):
        # skip their images; their metric sums count once (rank zero adds them all; the sync
        # sums over ranks).
        done: list[np.ndarray] = []
        prior_sum: dict[str, float] = {}
        prior_count: dict[str, float] = {}
        for _name, path in storage.complete_shards(self.output_dir):
            table = storage.read_index(path, fingerprint)
            done.append(table.column("index").to_numpy())
            cols = {
                c: table.column(c).to_pylist()
                for c in ("index", "id", "input_hash", "input_shape")
                if c in table.column_names
            }
            for i, idx in enumerate(cols["index"]):
                if idx is not None and idx >= 0:
                    self._seen[int(idx)] = (
                        str(cols["id"][i]) if "id" in cols else "",
                        cols["input_hash"][i] if "input_hash" in cols else None,
                        cols["input_shape"][i] if "input_shape" in cols else None,
                    )
            if rank == 0:
                for col in table.column_names:
                    if col.count("/") >= 2 and col.rsplit("/", 1)[1] in METRIC_NAMES:
                        values = table.column(col).to_numpy(zero_copy_only=False).astype(float)
                        ok = np.isfinite(values)
                        prior_sum[col] = prior_sum.get(col, 0.0) + float(values[ok].sum())
                        prior_count[col] = prior_count.get(col, 0.0) + float(ok.sum())
        trainer.strategy.barrier("cam_writer_check")
        if must_write and trainer.is_global_zero:
            storage.write_run_file(self.output_dir, run)
        self._done = np.unique(np.concatenate(done)) if done else np.zeros(0, np.int64)
        self._done = self._done[self._done >= 0]
        self._world = world
        self._prior = (prior_sum, prior_count)
        self._fingerprint, self._config = fingerprint, config
        self._explainer = Explainer(
            pl_module,
            self.layer,
            methods=self.methods,
            guided_backprop=self.guided_backprop,
            guided_gradcam=self.guided_gradcam,
            max_batch=self.max_batch,
            normalize=self.normalize,
        )
        self._shards = storage.ShardWriter(
            self.output_dir, rank, fingerprint, shard_size=self.shard_size
        )
        full_precision = str(getattr(trainer, "precision", "32-true")) in (
            "32-true", "64-true", "32", "64"
        )
        self._reuse = _ForwardReuse() if self.reuse_forward and full_precision else None

    def _metric_names(self) -> list[str]:
        assert self._layers
        return [f"{m}/{n}/{k}" for m in self.methods for n in self._layers for k in self.metrics]

    def _init_states(self, pl_module: nn.Module) -> None:
        """Once the layers are known (first batch): the synced metric states."""
        self._quality = DatasetMeans(self._metric_names()).to(_device(pl_module))
        prior_sum, prior_count = self._prior
        self._quality.add_sums(
            {k: v for k, v in prior_sum.items() if k in self._quality.names},
            {k: v for k, v in prior_count.items() if k in self._quality.names},
        )
        if self.sanity_samples:
            stages = cascade_stages(pl_module, self.sanity_stages)
            self._sanity_stage_names = [name for name, _ in stages]
            names = [
                f"{m}/{n}/{s}/{sim}"
                for m in self.methods
                for n in self._layers
                for s in range(len(stages))
                for sim in SIMILARITIES
            ]
            self._sanity = DatasetMeans(names).to(_device(pl_module))
            self._sanity.update({})

    # ------------------------------------------------------------------ batches

    def extract(self, batch: Any) -> dict[str, Any]:
        """``image``, ``label``, ``mask``, ``box``, ``id``, ``status`` of a batch (``None`` when
        absent).

        Handles dicts (the ``*_key`` arguments; ``"status"``: one string per image, anything but
        ``"ok"`` marks an image the dataset could not read, which is recorded, not explained),
        ``(x, y, ...)`` tuples and bare tensors; override for other layouts.
        """
        out = parse_batch(
            batch, image_key=self.image_key, owner="CAMWriter",
            keys={
                "label": self.label_key, "mask": self.mask_key, "box": self.box_key,
                "id": self.id_key, "status": "status",
            },
        )  # fmt: skip
        label = out["label"]
        if not isinstance(batch, dict) and isinstance(label, torch.Tensor) and label.dim() != 1:
            out["label"] = None  # (x, y) tuples: y are labels when they are class ids (B,)
        return out

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            from pytorch_lightning.utilities import rank_zero_warn

            rank_zero_warn(message)

    @override
    def on_predict_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Explain the batch's images not written yet (before ``predict_step``, so that its
        forward can reuse the explanation's: see ``reuse_forward``)."""
        self._pending = None
        if self._detection is not None:  # explained at the batch's end
            return
        parts = self.extract(batch)
        images: torch.Tensor = parts["image"]
        b = images.shape[0]
        batch_indices = getattr(trainer.predict_loop, "current_batch_indices", None)
        if batch_indices is not None and len(batch_indices) == b:
            index = np.asarray(list(batch_indices), np.int64)
        else:
            self._warn_once(
                "indices",
                "CAMWriter: the predict loader does not tell the dataset indices of its "
                "batches (not a DataLoader?); images get index -1 and a rerun cannot skip them.",
            )
            index = np.full(b, -1, np.int64)
        self._collect_sanity(images, parts["label"], index)
        todo = ~np.isin(index, self._done) | (index < 0)
        hashes = input_hashes(images)
        self._check_same_data(index, todo, self._ids(parts["id"], index, ~todo), images, hashes)
        if not todo.any():
            return
        picked = np.flatnonzero(todo)
        keep = torch.from_numpy(picked).to(images.device)
        sub = {
            k: (v.index_select(0, keep.to(v.device)) if isinstance(v, torch.Tensor) else v)
            for k, v in parts.items()
        }
        sub["input_hash"] = [hashes[i] for i in picked]
        if parts["status"] is not None:
            sub["status"] = [str(parts["status"][i]) for i in picked]
        out = self._explain(sub)
        self._pending = (sub, index[todo], self._ids(parts["id"], index, todo), out)
        if todo.all() and self._reuse is not None:
            self._reuse.install(pl_module, images, out.logits)

    @override
    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Write the batch's explanations: metrics, shard rows and maps, overlays."""
        if self._detection is not None:
            self._detection.write(trainer, pl_module, batch, batch_indices)
            return
        if self._reuse is not None:
            self._reuse.remove(pl_module)
        pending, self._pending = self._pending, None
        if pending is not None:
            sub, index, ids, out = pending
            self._write(trainer, pl_module, sub, index, ids, out)

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Give the module its own forward back."""
        if self._reuse is not None:
            self._reuse.remove(pl_module)

    def _check_same_data(
        self, index: np.ndarray, todo: np.ndarray, ids: list[str], images: torch.Tensor,
        hashes: list[str],
    ) -> None:
        """Refuse a rerun whose images already written are not the same data: another id, or
        another input (file content, image size, transforms) at the same dataset index."""
        shape = "x".join(str(int(d)) for d in images.shape[1:])
        for j, i in enumerate(np.flatnonzero(~todo)):
            idx = int(index[i])
            old_id, old_hash, old_shape = self._seen.get(idx, (ids[j], None, None))
            if old_id != ids[j]:
                what = f"id {old_id!r} then, {ids[j]!r} now (other files or another order)"
            elif old_shape is not None and old_shape != shape:
                what = f"id {ids[j]!r}, input {old_shape} then, {shape} now (another image size)"
            elif old_hash is not None and old_hash != hashes[i]:
                what = f"id {ids[j]!r}, other input content (the file or the transforms changed)"
            else:
                continue
            raise storage.OutputFolderError(
                f"output_dir={str(self.output_dir)!r} holds the maps of other data: dataset "
                f"index {idx}: {what}. Refusing to mix them: choose another output_dir, or "
                "delete this one to start over."
            )

    def _ids(self, raw: Any, index: np.ndarray, todo: np.ndarray) -> list[str]:
        if raw is None:
            return [str(i) for i in index[todo]]
        values = raw.tolist() if isinstance(raw, torch.Tensor) else list(raw)
        return [str(v) for v, t in zip(values, todo, strict=True) if t]

    def _collect_sanity(
        self, images: torch.Tensor, labels: torch.Tensor | None, index: np.ndarray
    ) -> None:
        if not self.sanity_samples:
            return
        if (index >= 0).all():
            pick = np.flatnonzero(index < self.sanity_samples)
        else:  # no indices: the first images this rank sees
            pick = np.arange(min(len(index), self.sanity_samples - self._sanity_count))
        if pick.size == 0:
            return
        sel = torch.from_numpy(pick).to(images.device)
        lab = labels.index_select(0, sel.to(labels.device)).cpu() if labels is not None else None
        self._sanity_buffer.append((images.index_select(0, sel).detach().cpu().clone(), lab))
        self._sanity_count += int(pick.size)

    def _target(self, parts: dict[str, Any]) -> torch.Tensor | SpecScore | None:
        if not self._choice.per_class:  # binary / regression: checked against the head
            return SpecScore(self._choice)
        if self.target == "predicted":
            return None
        if isinstance(self.target, int):  # one class id for every image
            images = parts["image"]
            with torch.inference_mode(False):
                return torch.full(
                    (images.shape[0],), self.target, dtype=torch.long, device=images.device
                )
        if parts["label"] is None:
            raise MisconfigurationException(
                f"target='label' but the batch has no labels (label_key={self.label_key!r}); "
                "give the labels or use target='pred'."
            )
        with torch.inference_mode(False):  # a normal tensor: autograd may save it
            return parts["label"].clone()

    def _tolerance(self, size: tuple[int, ...]) -> float:
        return pointing_tolerance(self.pointing_game_tolerance, size, rank=len(size))

    def _explain(self, parts: dict[str, Any]) -> Explanation:
        assert self._explainer is not None
        try:
            return self._explainer(parts["image"], target=self._target(parts), upsample=False)
        except (ValueError, TypeError) as err:
            raise MisconfigurationException(f"CAMWriter cannot explain the batch: {err}") from err

    def _write(
        self,
        trainer: Any,
        pl_module: Any,
        parts: dict[str, Any],
        index: np.ndarray,
        ids: list[str],
        out: Explanation,
    ) -> None:
        assert self._shards is not None
        images: torch.Tensor = parts["image"]
        size = tuple(int(d) for d in images.shape[2:])  # (L,), (H, W) or (D, H, W)
        if not self._layers:
            self._check_end(out)
            self._layers = list(out.layers)
            self._init_states(pl_module)
        assert self._quality is not None
        unread = self._unreadable(parts, len(ids))
        nonfinite = self._nonfinite(images, out) & ~unread
        bad = unread | nonfinite
        full = {
            (m, n): normalize_maps(upsample(out.cams[m][n].float(), size))
            for m in out.cams
            for n in out.cams[m]
        }
        class_ids = out.class_ids
        if class_ids is None and self._choice.per_class:
            class_ids = self._target(parts)  # type: ignore[assignment]
        # the bad rows' maps are NaN: scored as blanks here, their values NaN-marked below
        scored = {k: v.nan_to_num(0.0) for k, v in full.items()} if bad.any() else full
        columns = self._evaluate(pl_module, parts, scored, class_ids, size)
        if bad.any():  # NaN-marked: never scored into the means, never drawn
            mask = torch.from_numpy(bad)
            for k, v in columns.items():
                columns[k] = v.float().masked_fill(mask.to(v.device), math.nan)
            for key, maps in full.items():
                rows = mask.to(maps.device).view(-1, *([1] * (maps.dim() - 1)))
                full[key] = maps.masked_fill(rows, math.nan)
        self._quality.update(columns)
        stored = self._stored_maps(out, full, bad)
        self._check_space(trainer, stored, len(ids))
        flags = {"unread": unread, "nonfinite": nonfinite}
        self._add_rows(parts, out, index, ids, columns, stored, class_ids, flags)
        self._write_overlays(parts, full, index, ids, bad, out)

    def _check_end(self, out: Explanation) -> None:
        """At the first batch: the target against the head (a class id of a single-logit
        head), and what the end of the run needs (the sanity check's classes)."""
        if out.logits is not None and out.logits.dim() == 2:
            why = self._choice.refusal(int(out.logits.shape[1]))
            if why is not None:
                raise MisconfigurationException(f"CAMWriter: {why}.")
        if self.sanity_samples and self.target == "predicted" and out.logits is None:
            raise MisconfigurationException(
                f"sanity_samples={self.sanity_samples} needs the class logits of the module's "
                "output (a (B, num_classes) tensor, an object with .logits or a dict with "
                "'logits'), to pick the classes it explains: return them, use "
                "target='label', or set sanity_samples=0."
            )

    @staticmethod
    def _unreadable(parts: dict[str, Any], b: int) -> np.ndarray:
        status = parts.get("status")
        if status is None:
            return np.zeros(b, bool)
        return np.asarray([str(v) != STATUS_OK for v in status], bool)

    @staticmethod
    def _nonfinite(images: torch.Tensor, out: Explanation) -> np.ndarray:
        """Per image: a non-finite input, logit or map (``(B,)`` bool)."""
        bad = ~torch.isfinite(images.detach()).flatten(1).all(dim=1).cpu()
        if out.logits is not None:
            bad |= ~torch.isfinite(out.logits.detach().float()).flatten(1).all(dim=1).cpu()
        for per_layer in out.cams.values():
            for cam in per_layer.values():
                bad |= ~torch.isfinite(cam.detach().float()).flatten(1).all(dim=1).cpu()
        return bad.numpy()

    def _evaluate(
        self,
        pl_module: nn.Module,
        parts: dict[str, Any],
        full: dict[tuple[str, str], torch.Tensor],
        class_ids: torch.Tensor | None,
        size: tuple[int, ...],
    ) -> dict[str, torch.Tensor]:
        if not self.metrics:
            return {}
        masks, boxes = parts["mask"], parts["box"]
        if masks is None and boxes is None and any(
            m in LOCALISATION_METRICS for m in self.metrics
        ):
            self._warn_once(
                "gt",
                f"CAMWriter: the batches have no masks ({self.mask_key!r}) or boxes "
                f"({self.box_key!r}): the localisation metrics are left empty (NaN).",
            )
        if boxes is not None:
            boxes = boxes.float()
        columns: dict[str, torch.Tensor] = {}
        for (m, n), maps in full.items():
            values = image_metrics(
                self.metrics,
                pl_module,
                parts["image"],
                maps,
                class_ids,
                masks,
                boxes,
                tolerance=self._tolerance(size),
                deletion_steps=self.deletion_steps,
                batch_size=self.metrics_batch_size,
            )
            for k, v in values.items():
                columns[f"{m}/{n}/{k}"] = v
        return columns

    def _stored_maps(
        self, out: Explanation, full: dict[tuple[str, str], torch.Tensor], bad: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The arrays of the batch to store, ``{key: (B, ...)}`` (see the class docstring);
        the maps of ``bad`` images are NaN (0 in uint8: see the ``nonfinite`` and ``status``
        columns)."""
        arrays: dict[str, np.ndarray] = {}
        for (m, n), big in full.items():
            mask = torch.from_numpy(bad).view(-1, *([1] * (big.dim() - 1)))
            if self.normalize:
                cam = big if self.map_size == "input" else out.cams[m][n].float()
            else:  # raw maps: stored as [0, 1] maps and the scale that gives them back
                raw = out.cams[m][n].float()
                if self.map_size == "input":
                    raw = upsample(raw, tuple(big.shape[1:]))
                flat = raw.detach().flatten(1)
                scale = torch.stack([flat.min(1).values, flat.max(1).values], 1).cpu()
                arrays[f"cam_scale/{m}/{n}"] = scale.masked_fill(
                    mask.view(-1, 1), math.nan
                ).numpy()
                cam = normalize_maps(raw)
            cam = cam.detach().cpu().masked_fill(mask, math.nan)
            if self.map_dtype == "uint8":
                cam = (cam * 255.0).round().clamp(0, 255).nan_to_num(0.0)
                arrays[f"cam/{m}/{n}"] = cam.to(torch.uint8).numpy()
            else:
                arrays[f"cam/{m}/{n}"] = cam.to(torch.float16).numpy()
        if self.guided_backprop and out.guided is not None:
            arrays["guided_backprop"] = out.guided.detach().cpu().to(torch.float16).numpy()
        for m, per_layer in out.guided_cams.items():
            for n, t in per_layer.items():
                arrays[f"guided_gradcam/{m}/{n}"] = t.detach().cpu().to(torch.float16).numpy()
        return arrays

    def _check_space(self, trainer: Any, stored: dict[str, np.ndarray], batch: int) -> None:
        """At the first batch: refuse when the rest of the dataset cannot fit on the device."""
        if self._checked_space:
            return
        self._checked_space = True
        per_image = sum(a.nbytes for a in stored.values()) / max(batch, 1) + 512
        try:
            loaders = trainer.predict_dataloaders
            loaders = loaders if isinstance(loaders, Sequence) else [loaders]
            total = sum(len(dl.dataset) for dl in loaders)
        except (AttributeError, TypeError):
            return
        remaining = max(total - len(self._done), 0)
        storage.check_free_space(self.output_dir, int(per_image * remaining / self._world))

    def _add_rows(
        self,
        parts: dict[str, Any],
        out: Explanation,
        index: np.ndarray,
        ids: list[str],
        columns: dict[str, torch.Tensor],
        stored: dict[str, np.ndarray],
        class_ids: torch.Tensor | None,
        flags: dict[str, np.ndarray],
    ) -> None:
        assert self._shards is not None
        unread, nonfinite = flags["unread"], flags["nonfinite"]
        status = parts.get("status")
        hashes = parts["input_hash"]
        shape = "x".join(str(int(d)) for d in parts["image"].shape[1:])
        first = next((a for k, a in stored.items() if k.startswith("cam/")), None)
        map_shape = "x".join(str(int(d)) for d in first.shape[1:]) if first is not None else ""
        per_class = self._choice.per_class
        logits = out.logits.float() if out.logits is not None and per_class else None
        values = (
            None if per_class or out.scores is None
            else self._choice.explained_value(out.scores).cpu().tolist()
        )
        probs = (
            class_probabilities(logits).cpu() if logits is not None and logits.dim() == 2 else None
        )
        pred = probs.max(dim=1) if probs is not None else None
        labels = parts["label"].cpu().tolist() if parts["label"] is not None else None
        explained = class_ids.cpu().tolist() if class_ids is not None else None
        scores = out.scores.cpu().tolist() if out.scores is not None else None
        cols = {k: v.tolist() for k, v in columns.items()}
        for i in range(len(ids)):
            bad = bool(unread[i] or nonfinite[i])
            row: dict[str, Any] = {"index": int(index[i]), "id": ids[i]}
            row["status"] = str(status[i]) if status is not None else STATUS_OK
            row["nonfinite"] = bool(nonfinite[i])
            row["input_hash"], row["input_shape"] = hashes[i], shape
            row["map_shape"] = map_shape
            row["label"] = int(labels[i]) if labels is not None else None
            known = explained is not None and not (bad and self.target == "predicted")
            row["explained_class"] = int(explained[i]) if known else None  # type: ignore[index]
            row["score"] = None if scores is None else math.nan if bad else float(scores[i])
            row["target"] = str(self._choice.spec)
            row["target_value"] = (
                None if values is None else math.nan if bad else float(values[i])
            )
            row["predicted_class"] = int(pred.indices[i]) if pred is not None and not bad else None
            row["predicted_prob"] = float(pred.values[i]) if pred is not None and not bad else None
            for k, v in cols.items():
                row[k] = float(v[i])
            self._shards.add(row, {k: a[i] for k, a in stored.items()})

    def _write_overlays(
        self,
        parts: dict[str, Any],
        full: dict[tuple[str, str], torch.Tensor],
        index: np.ndarray,
        ids: list[str],
        bad: np.ndarray,
        out: Explanation,
    ) -> None:
        if not self.overlays and not self.overlay_ids:
            return
        wanted = [
            i
            for i in range(len(ids))
            if (0 <= index[i] < self.overlays or ids[i] in self.overlay_ids) and not bad[i]
        ]
        if not wanted:
            return
        from lightning_cam.tools import viz

        folder = self.output_dir / "overlays"
        folder.mkdir(exist_ok=True)
        images = parts["image"]
        if images.dim() != 4:
            guided = self._guided_gradients(out, list(full))
            self._write_nd_overlays(folder, images, full, guided, [(i, ids[i]) for i in wanted])
            return
        for i in wanted:
            picture = viz.to_uint8_image(images[i].detach().float().cpu(), self.mean, self.std)
            stem = overlay_stem(ids[i])
            for (m, n), maps in full.items():
                path = folder / f"{stem}-{_SAFE_PART.sub('_', m)}-{_SAFE_PART.sub('_', n)}.jpg"
                viz.save_image(path, viz.overlay(picture, maps[i].cpu().numpy()))

    def _guided_gradients(
        self, out: Explanation, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
        """The input gradients drawn with each map: ``guided_backprop`` (with
        ``guided_backprop=True``, the same for every map) and the map's ``guided_gradcam``
        (with ``guided_gradcam=True``)."""
        guided: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        for m, n in keys:
            grads: dict[str, torch.Tensor] = {}
            if self.guided_backprop and out.guided is not None:
                grads["guided_backprop"] = out.guided
            cam = out.guided_cams.get(m, {}).get(n) if self.guided_gradcam else None
            if cam is not None:
                grads["guided_gradcam"] = cam
            guided[(m, n)] = grads
        return guided

    def _write_nd_overlays(
        self,
        folder: Path,
        images: torch.Tensor,
        full: dict[tuple[str, str], torch.Tensor],
        guided: dict[tuple[str, str], dict[str, torch.Tensor]],
        wanted: list[tuple[int, str]],
    ) -> None:
        """The pictures of signals (``-signal.png``), volumes (``-slices.png`` through the map's
        peak, ``-montage.png``) and videos (``-frames.gif``, ``-strip.png``), from the rank
        (:mod:`lightning_cam.tools.viz_nd`); with guided gradients also
        ``-guided_backprop-signal.png`` / ``-slices.png`` (through the same peak) /
        ``-strip.png``, and the same for ``guided_gradcam``."""
        from lightning_cam.tools import viz, viz_nd

        kind = viz_nd.picture_kind(images.dim() - 2, self.third_axis)  # type: ignore[arg-type]
        stats: dict[str, Any] = {"mean": self.mean, "std": self.std}
        for i, image_id in wanted:
            x = images[i].detach().float().cpu()
            stem = overlay_stem(image_id)
            for (m, n), maps in full.items():
                base = f"{stem}-{_SAFE_PART.sub('_', m)}-{_SAFE_PART.sub('_', n)}"
                cam = maps[i].detach().float().cpu()
                if kind == "signal":
                    viz.save_image(folder / f"{base}-signal.png", viz_nd.signal_band(x, cam))
                elif kind == "volume":
                    viz.save_image(folder / f"{base}-slices.png",
                                   viz_nd.volume_slices(x, cam, **stats))  # fmt: skip
                    viz.save_image(folder / f"{base}-montage.png",
                                   viz_nd.volume_montage(x, cam, **stats))  # fmt: skip
                else:
                    frames = viz_nd.video_frames(x, cam, **stats)
                    viz_nd.save_gif(folder / f"{base}-frames.gif", frames)
                    viz.save_image(folder / f"{base}-strip.png", viz_nd.video_strip(frames))
                for what, grads in guided.get((m, n), {}).items():
                    g = grads[i].detach().float().cpu()
                    if kind == "signal":
                        picture, name = viz_nd.guided_signal(x, g), "signal"
                    elif kind == "volume":
                        picture = viz_nd.guided_slices(g, index=viz_nd.peak_index(cam))
                        name = "slices"
                    else:
                        picture, name = viz_nd.guided_strip(g), "strip"
                    viz.save_image(folder / f"{base}-{what}-{name}.png", picture)

    # ------------------------------------------------------------------ the end

    @override
    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        """Flush this rank's shard, sync the metrics, run the sanity check; rank zero writes
        the manifest and the summary."""
        if self._detection is not None:
            self.summary = self._detection.end(trainer, pl_module)
            return
        assert self._shards is not None
        self._shards.flush()
        trainer.strategy.barrier("cam_writer_flushed")
        if not self._layers:  # nothing explained on this rank (all done, or no batch)
            self._layers = self._layers_from_run(pl_module)
            self._init_states(pl_module)
        assert self._quality is not None
        quality = self._quality.compute()  # collective: every rank
        sanity: dict[str, tuple[float, int]] = {}
        failure: Exception | None = None
        if self._sanity is not None:
            try:
                self._run_sanity(pl_module)
            except Exception as err:  # noqa: BLE001 - reported after the manifest is written
                failure = err
            sanity = self._sanity.compute()  # collective: also after a failure on this rank
        if not trainer.is_global_zero:
            if failure is not None:
                raise self._sanity_failed(failure) from failure
            return
        rows = storage.write_manifest(self.output_dir, self._fingerprint)
        storage.remove_stale(self.output_dir)
        self.summary = write_summary(
            self.output_dir,
            rows=rows,
            methods=self.methods,
            layers=self._layers,
            metrics=self.metrics,
            quality=quality,
            sanity=sanity,
            sanity_stages=self._sanity_stage_names,
            config=self._config,
            sanity_error=None if failure is None else self._failure_text(failure),
        )
        logger = trainer.logger
        if logger is not None:
            logged = {
                f"explain/{k}": v for k, (v, count) in quality.items() if count and math.isfinite(v)
            }
            if logged:
                logger.log_metrics(logged, step=trainer.global_step)
                logger.save()
        if failure is not None:
            raise self._sanity_failed(failure) from failure

    @staticmethod
    def _failure_text(err: BaseException) -> str:
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"

    def _sanity_failed(self, err: BaseException) -> RuntimeError:
        return RuntimeError(
            f"CAMWriter: the sanity check failed ({self._failure_text(err)}). Every map, the "
            f"manifest and the summary are written in {str(self.output_dir)!r}; rerun with "
            "sanity_samples=0 to finish without it."
        )

    def _layers_from_run(self, pl_module: nn.Module) -> list[str]:
        """The layer names when this rank explained nothing: given, or from the shards."""
        if self._explainer is not None and self._explainer.layers:
            return list(self._explainer.layers)
        for _name, path in storage.complete_shards(self.output_dir):
            with np.load(path.with_suffix(".npz")) as data:
                keys = list(data.files)
            # "cam/{method}/{layer}": layer names are dotted module names (no "/")
            found = [k.split("/", 2)[2] for k in keys if k.startswith("cam/") and k.count("/") >= 2]
            if found:
                return list(dict.fromkeys(found))
        names = resolve_layers(pl_module, self.layer)
        return names if names else ["(default)"]

    def _run_sanity(self, pl_module: nn.Module) -> None:
        assert self._sanity is not None
        if not self._sanity_buffer:
            return
        images = torch.cat([b[0] for b in self._sanity_buffer]).to(_device(pl_module))
        got = [b[1] for b in self._sanity_buffer if b[1] is not None]
        labels = torch.cat(got) if len(got) == len(self._sanity_buffer) else None
        self._sanity_buffer = []
        if self.target == "label" and labels is not None:
            class_ids = labels.to(_device(pl_module))
        elif isinstance(self.target, int):
            class_ids = torch.full(
                (images.shape[0],), self.target, dtype=torch.long, device=images.device
            )
        else:
            with torch.inference_mode(False), torch.no_grad():  # read as the batches are
                class_ids = extract_logits(pl_module(images.clone())).argmax(dim=1)
        _names, values = randomisation_test(
            pl_module,
            images.clone(),
            class_ids.clone(),
            self._layers,
            self.methods,
            num_stages=self.sanity_stages,
            seed=self.seed,
        )
        self._sanity.update(values)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None
