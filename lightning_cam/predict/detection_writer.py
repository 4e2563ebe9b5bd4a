"""``CAMWriter`` on detectors: every detection of a dataset explained, stored and scored.

When the LightningModule of ``trainer.predict`` is or wraps a detector (the detection callbacks'
rule, :func:`~lightning_cam.callbacks.detection.find_detector_backend`: torchvision, a
transformers DETR-family model, an ultralytics YOLO ``DetectionModel`` or detectron2),
:class:`~lightning_cam.predict.CAMWriter` hands its run to a :class:`DetectionAudit`. Per predict
batch (torchvision's ``(list of (C, H, W) images, list of target dicts)`` or a bare list of
images) each image's top ``detection_top_k`` detections scoring at least
``detection_score_threshold`` are explained by the backend's explainer (one forward and one
batched backward per image), and each detection gets one manifest row and one map per method and
layer.

Manifest row of a detection: ``index`` (the image's dataset index), ``id`` (the target's
``image_id`` when it has one, else the index), ``detection`` (its rank among the image's
explained detections, by decreasing score), ``box`` (``[x1, y1, x2, y2]`` in pixels of the
image), ``label``, ``label_name``, ``score``, ``image_size`` (``[H, W]``), ``map_shape``, and,
when the batch has targets with ``"boxes"``: ``gt_index`` (the ground-truth box it matches, IoU
>= 0.5 and the same label, Pascal VOC's greedy rule; -1 for none), ``gt_iou``, and one column
``{method}/{layer}/{metric}`` per ``pointing_game`` / ``energy_pointing_game`` (of its map
against the matched box; NaN when unmatched). Then ``shard`` / ``row``: where its maps are.
An image without detections has no row; it counts in the summary.

Maps (``cam/{method}/{layer}``, layers named in the LightningModule) are the explainer's [0, 1]
maps at the image size, stored area-downsampled to at most :data:`DETECTION_MAP_SIDE` pixels on
the longer side with ``map_size="layer"`` (the default; ``upsample`` to ``image_size`` to draw
them) or at the image size with ``map_size="input"``; float16, or uint8 ``round(255 * map)``.
A shard holds maps of one shape: a new shape starts a new shard.

``summary.json`` (``"task": "detection"``): images, detections, images without detections,
detections with targets and matched, and per method and layer the means of the pointing games
over the matched detections (synced across ranks). Detection runs do not resume: a folder with
shards is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks.detection import (
    check_detector,
    detection_explainer,
    detection_pointing,
    detector_layers,
    detector_prefix,
    detector_processor,
    find_detector_backend,
    split_detector_batch,
)
from lightning_cam.callbacks.options import check_layer
from lightning_cam.predict import storage
from lightning_cam.predict.evaluation import DatasetMeans
from lightning_cam.predict.summary import SUMMARY_JSON, SUMMARY_MD, markdown_table

#: The per-detection metrics (against the matched ground-truth box).
DETECTION_METRICS = ("pointing_game", "energy_pointing_game")
#: Longest side of a stored detection map with ``map_size="layer"``.
DETECTION_MAP_SIDE = 64
#: The counts of the summary, kept as :class:`DatasetMeans` entries (mean x count = total).
_COUNTS = ("detections_per_image", "no_detection", "matched")

#: ``(argument, is it set to something a detector cannot use?, why and what to do)``.
_REFUSED: tuple[tuple[str, Any, str], ...] = (
    ("target", lambda w: w.target != "predicted",
     "a detector explains its detections, not a class: leave target='pred'"),
    ("guided_backprop", lambda w: w.guided_backprop,
     "guided pictures are not computed for detections: leave it False"),
    ("guided_gradcam", lambda w: w.guided_gradcam,
     "guided pictures are not computed for detections: leave it False"),
    ("sanity_samples", lambda w: w.sanity_samples,
     "the randomisation test explains classes: set sanity_samples=0"),
    ("normalize", lambda w: not w.normalize,
     "detection maps are [0, 1] maps per detection: leave normalize=True"),
    ("overlays", lambda w: w.overlays or w.overlay_ids,
     "detection overlays are not written (lightning-cam detect draws them): leave overlays=0 "
     "and overlay_ids=None"),
    ("mean", lambda w: w.mean is not None or w.std is not None,
     "mean and std only draw overlays: leave them None"),
    ("max_batch", lambda w: w.max_batch is not None,
     "detectors are explained one image at a time: leave it None"),
    ("metrics_batch_size", lambda w: w.metrics_batch_size is not None,
     "the detection metrics query no model: leave it None"),
    ("third_axis", lambda w: w.third_axis != "depth", "detectors take images: leave it"),
    ("image_key", lambda w: (w.image_key, w.label_key, w.mask_key, w.box_key, w.id_key)
     != ("image", "label", "mask", "box", "id"),
     "detection batches are (list of images, list of target dicts with 'boxes' and 'labels') "
     "or a list of images: leave the *_key arguments at their defaults"),
)  # fmt: skip


def detection_audit(writer: Any, pl_module: Any, default_metrics: bool) -> DetectionAudit | None:
    """The :class:`DetectionAudit` of ``writer`` (a ``CAMWriter``) when ``pl_module`` wraps a
    detector, else ``None``; refuses what a detector cannot use (``default_metrics``: the
    writer's metrics are its defaults, which become :data:`DETECTION_METRICS`).

    Raises:
        MisconfigurationException: An argument that does not apply to detectors (named, with
            why and what to give), or methods, layers or a head the detector cannot explain.
    """
    detector, backend = find_detector_backend(pl_module)
    if detector is None:
        return None
    what = f"the detector {type(detector).__name__} in {type(pl_module).__name__}"
    for arg, refused, why in _REFUSED:
        if refused(writer):
            raise MisconfigurationException(
                f"CAMWriter: {arg}={getattr(writer, arg)!r} does not apply to {what}: {why}."
            )
    metrics = list(DETECTION_METRICS) if default_metrics else list(writer.metrics)
    other = [m for m in metrics if m not in DETECTION_METRICS]
    if other:
        raise MisconfigurationException(
            f"CAMWriter: metrics={list(writer.metrics)!r} is invalid for {what}: "
            f"{', '.join(map(repr, other))} are no detection metrics. Expected metrics among "
            f"{', '.join(DETECTION_METRICS)} (of each detection's map against its matched "
            "ground-truth box)."
        )
    check_detector(detector, backend, pl_module, writer.methods, check_layer(writer.layer))
    return DetectionAudit(writer, pl_module, detector, backend, metrics)


def _class_names(trainer: Any, pl_module: Any) -> list[str] | None:
    """``class_names`` of the module, the datamodule or the module's hparams."""
    hparams = getattr(pl_module, "hparams", None)
    for names in (
        getattr(pl_module, "class_names", None),
        getattr(getattr(trainer, "datamodule", None), "class_names", None),
        hparams.get("class_names") if hparams is not None else None,
    ):
        if isinstance(names, (list, tuple)) and names:
            return [str(n) for n in names]
    return None


def stored_map(cam: torch.Tensor, map_size: str, map_dtype: str) -> np.ndarray:
    """One detection's ``(H, W)`` [0, 1] map as stored: area-downsampled to at most
    :data:`DETECTION_MAP_SIDE` pixels on the longer side (``map_size="layer"``) or as is
    (``"input"``), then float16 or uint8 ``round(255 * map)``."""
    cam = cam.detach().float().cpu()
    h, w = int(cam.shape[-2]), int(cam.shape[-1])
    if map_size == "layer" and max(h, w) > DETECTION_MAP_SIDE:
        s = DETECTION_MAP_SIDE / max(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        cam = F.interpolate(cam[None, None], size=size, mode="area")[0, 0]
    if map_dtype == "uint8":
        return (cam * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    return cam.to(torch.float16).numpy()


class DetectionAudit:
    """A ``CAMWriter`` run on a detector: explains each predict batch and writes its rows, maps
    and summary (see the module docstring).

    Args:
        writer: The ``CAMWriter`` (its options are read, never changed).
        pl_module: The LightningModule.
        detector: The detector found in it.
        backend: ``"torchvision"``, ``"hf"``, ``"yolo"`` or ``"detectron2"``.
        metrics: The per-detection metrics (of :data:`DETECTION_METRICS`).
    """

    def __init__(
        self, writer: Any, pl_module: Any, detector: Any, backend: str, metrics: list[str]
    ) -> None:
        self.writer = writer
        self.detector, self.backend = detector, backend
        self.processor = detector_processor(detector, backend, pl_module)  # DETRs' only
        self.metrics = metrics
        self.prefix = detector_prefix(pl_module, detector)
        self.layers = detector_layers(detector, backend, self.prefix, check_layer(writer.layer))
        self.names = [f"{self.prefix}.{n}" if self.prefix else n for n in self.layers]
        self._shards: storage.ShardWriter | None = None
        self._means: DatasetMeans | None = None
        self._shape: tuple[int, ...] | None = None
        self._class_names: list[str] | None = None
        self._config: dict[str, Any] = {}
        self._fingerprint = ""

    def _metric_names(self) -> list[str]:
        return [f"{m}/{n}/{k}" for m in self.writer.methods for n in self.names
                for k in self.metrics]  # fmt: skip

    def config(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        """The run's configuration (``run.json``): another one is refused, never mixed."""
        w = self.writer
        try:
            loaders = trainer.predict_dataloaders
            loaders = loaders if isinstance(loaders, Sequence) else [loaders]
            dataset_len: list[int] | None = [len(dl.dataset) for dl in loaders]
        except (AttributeError, TypeError):
            dataset_len = None
        return {
            "task": "detection", "backend": self.backend, "methods": list(w.methods),
            "layer": w.layer, "layers": self.names, "map_size": w.map_size,
            "map_dtype": w.map_dtype, "metrics": self.metrics,
            "pointing_game_tolerance": w.pointing_game_tolerance,
            "detection_top_k": w.detection_top_k,
            "detection_score_threshold": w.detection_score_threshold,
            "model": type(pl_module).__name__, "model_digest": storage.model_digest(pl_module),
            "dataset_len": dataset_len,
        }  # fmt: skip

    def start(self, trainer: Any, pl_module: Any) -> None:
        """Check the folder on every rank (another configuration, or shards of an earlier
        attempt: refused), write ``run.json`` on rank zero, and open this rank's shards."""
        w = self.writer
        loaders = getattr(trainer, "predict_dataloaders", None)
        if isinstance(loaders, (list, tuple)) and len(loaders) > 1:
            raise MisconfigurationException(
                f"CAMWriter explains one predict dataloader, got {len(loaders)}: run "
                "trainer.predict once per dataset, each with its own output_dir."
            )
        self._config = self.config(trainer, pl_module)
        self._fingerprint = hashlib.sha256(
            json.dumps(self._config, sort_keys=True).encode()
        ).hexdigest()
        run = {"fingerprint": self._fingerprint, "config": self._config, "format": 1}
        must_write = storage.check_run_file(w.output_dir, run)
        storage.remove_stale(w.output_dir, trainer.global_rank)
        if any(True for _ in storage.complete_shards(w.output_dir)):
            raise storage.OutputFolderError(
                f"output_dir={str(w.output_dir)!r} already holds the shards of this detection "
                "run: detection runs do not resume. Delete the folder to start over, or choose "
                "another output_dir."
            )
        trainer.strategy.barrier("cam_writer_check")
        if must_write and trainer.is_global_zero:
            storage.write_run_file(w.output_dir, run)
        self._shards = storage.ShardWriter(
            w.output_dir, trainer.global_rank, self._fingerprint, shard_size=w.shard_size
        )
        device = getattr(pl_module, "device", torch.device("cpu"))
        self._means = DatasetMeans([*self._metric_names(), *_COUNTS]).to(device)
        self._means.update({})
        self._class_names = _class_names(trainer, pl_module)
        self._shape = None

    def _split(self, batch: Any) -> tuple[list[torch.Tensor], list[Any] | None]:
        parts = split_detector_batch(self.detector, self.backend, batch, self.processor)
        if parts is None:
            raise MisconfigurationException(
                f"CAMWriter: the LightningModule wraps a detector "
                f"({type(self.detector).__name__}), so predict batches must be (list of "
                "(C, H, W) float images, list of target dicts with 'boxes' and 'labels') or a "
                f"list of images; got {type(batch).__name__}."
            )
        return parts

    def explain(self, pl_module: Any, images: Sequence[torch.Tensor]) -> list[Any]:
        """The :class:`~lightning_cam.detection.DetectionResult` of each image (the backend's
        explainer, one forward and one batched backward per image; the RNG state kept)."""
        w = self.writer
        explainer = detection_explainer(
            self.detector, self.backend, pl_module, images, layer=list(self.layers),
            methods=list(w.methods), score_threshold=w.detection_score_threshold,
            top_k=w.detection_top_k, class_names=self._class_names,
        )  # fmt: skip
        device = getattr(pl_module, "device", torch.device("cpu"))
        with torch.inference_mode(False):  # the loop's tensors may be inference tensors
            copies = [im.detach().clone() for im in images]
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                return [explainer(im) for im in copies]

    def write(
        self, trainer: Any, pl_module: Any, batch: Any, batch_indices: Sequence[int] | None
    ) -> None:
        """Explain the batch and add one row (and its maps) per detection."""
        images, targets = self._split(batch)
        n = len(images)
        index = (
            [int(i) for i in batch_indices]
            if batch_indices is not None and len(batch_indices) == n
            else [-1] * n
        )
        results = self.explain(pl_module, images)
        for i, result in enumerate(results):
            target = targets[i] if targets is not None and isinstance(targets[i], dict) else None
            self._add_image(images[i], target, index[i], result)

    def _image_id(self, target: dict[str, Any] | None, index: int) -> str:
        raw = target.get("image_id") if target is not None else None
        if isinstance(raw, torch.Tensor) and raw.numel() == 1:
            return str(raw.item())
        return str(raw) if isinstance(raw, (int, str)) else str(index)

    def _add_image(
        self, image: torch.Tensor, target: dict[str, Any] | None, index: int, result: Any
    ) -> None:
        assert self._shards is not None and self._means is not None
        w, k = self.writer, len(result)
        has_boxes = target is not None and "boxes" in target
        scores = {
            (m, n): detection_pointing(
                result, target, m, layer, tolerance=w.pointing_game_tolerance or 0.0
            )
            for m in w.methods
            for layer, n in zip(self.layers, self.names, strict=True)
        }  # fmt: skip
        counts = {"detections_per_image": torch.tensor([float(k)]),
                  "no_detection": torch.tensor([float(k == 0)])}  # fmt: skip
        first = next(iter(scores.values()), None)
        if has_boxes and first is not None:
            counts["matched"] = (first["match"] >= 0).float()
        values = {f"{m}/{n}/{key}": s[key] for (m, n), s in scores.items() for key in self.metrics}
        self._means.update({**counts, **values})
        image_id = self._image_id(target, index)
        size = [int(image.shape[-2]), int(image.shape[-1])]
        names = result.label_names()
        for d in range(k):
            maps = {
                f"cam/{m}/{n}": stored_map(result.map(m, layer)[d], w.map_size, w.map_dtype)
                for m in w.methods
                for layer, n in zip(self.layers, self.names, strict=True)
            }
            shape = next(iter(maps.values())).shape
            if self._shape is not None and shape != self._shape and len(self._shards):
                self._shards.flush()  # a shard holds maps of one shape
            self._shape = shape
            row: dict[str, Any] = {
                "index": index, "id": image_id, "detection": d, "status": "ok",
                "box": [float(v) for v in result.boxes[d].tolist()],
                "label": int(result.labels[d]), "label_name": names[d],
                "score": float(result.scores[d]), "image_size": size,
                "map_shape": "x".join(str(int(s)) for s in shape),
            }  # fmt: skip
            if has_boxes and first is not None:
                row["gt_index"] = int(first["match"][d])
                row["gt_iou"] = float(first["iou"][d])
            for key, value in values.items():
                row[key] = float(value[d])
            self._shards.add(row, maps)

    def end(self, trainer: Any, pl_module: Any) -> dict[str, Any] | None:
        """Flush, sync the means (every rank), and on rank zero write the manifest and the
        summary and log the means; returns the summary on rank zero."""
        assert self._shards is not None and self._means is not None
        self._shards.flush()
        trainer.strategy.barrier("cam_writer_flushed")
        means = self._means.compute()  # collective: every rank
        if not trainer.is_global_zero:
            return None
        out: Path = self.writer.output_dir
        rows = storage.write_manifest(out, self._fingerprint, unique_index=False)
        storage.remove_stale(out)
        summary = self._summary(rows, means)
        logger = trainer.logger
        quality = {k: v for k, v in means.items() if k not in _COUNTS}
        logged = {f"explain/{k}": v for k, (v, c) in quality.items() if c and math.isfinite(v)}
        if logger is not None and logged:
            logger.log_metrics(logged, step=trainer.global_step)
            logger.save()
        return summary

    def _summary(self, rows: int, means: dict[str, tuple[float, int]]) -> dict[str, Any]:
        """Write ``summary.json`` and ``summary.md``; return the JSON content."""
        per_image, images = means["detections_per_image"]
        empty, _ = means["no_detection"]
        matched, with_targets = means["matched"]

        def total(mean: float, count: int) -> int:
            return round(mean * count) if count else 0

        methods, quality = list(self.writer.methods), {
            k: v for k, v in means.items() if k not in _COUNTS
        }
        metrics: dict[str, Any] = {}
        for m in methods:
            for n in self.names:
                metrics.setdefault(m, {})[n] = {
                    k: {"mean": None if not math.isfinite(v) else v, "count": c}
                    for k in self.metrics
                    for v, c in [quality[f"{m}/{n}/{k}"]]
                }
        summary = {
            "task": "detection",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "images": images, "detections": total(per_image, images), "rows": rows,
            "images_without_detections": total(empty, images),
            "detections_with_targets": with_targets,
            "matched_detections": total(matched, with_targets),
            "methods": methods, "layers": self.names, "metrics": metrics, "config": self._config,
        }  # fmt: skip
        md = [
            "# Dataset explanation summary (detector)", "",
            f"{images} images, {summary['detections']} detections explained "
            f"({summary['images_without_detections']} images without detections); "
            f"{summary['matched_detections']} of {with_targets} detections with targets matched "
            "a ground-truth box (IoU >= 0.5, same label). Means over the matched detections.",
            "", markdown_table(methods, self.names, self.metrics, quality),
        ]  # fmt: skip
        text = json.dumps(summary, indent=2, default=str) + "\n"
        out: Path = self.writer.output_dir
        storage.write_bytes_atomic(out / SUMMARY_JSON, lambda f: f.write(text.encode()))
        markdown = "\n".join(md) + "\n"
        storage.write_bytes_atomic(out / SUMMARY_MD, lambda f: f.write(markdown.encode()))
        return summary
