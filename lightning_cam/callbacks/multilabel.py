"""The multi-label task (``target="labels"``): sigmoid heads ``(B, K)`` validated on multi-hot
labels ``(B, K)`` (``BCEWithLogitsLoss``'s targets).

Each probe image gets one tile per true label, its map from
:func:`lightning_cam.engine.multilabel.explain_multilabel` (one forward and one batched backward
for all (image, label) pairs), captioned with the label's name and its sigmoid probability; the
metrics are per pair, logged as their mean over the pairs and per label
(``{method}/{layer}/{metric}/label_{name}``). The labels explained are the batch's true ones
(the model's thresholded predictions are not offered: a tile per predicted label would need a
threshold option and show no ground truth).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import render
from lightning_cam.callbacks.classification import (
    ClassificationTask,
    LogitsOf,
    Reader,
    fork_rng,
    module_device,
    precision_of,
)
from lightning_cam.callbacks.options import MULTILABEL_TARGET, CAMOptions
from lightning_cam.callbacks.task import CallbackView
from lightning_cam.engine import Explanation, concat_explanations
from lightning_cam.engine.multilabel import MultiLabelExplanation, explain_multilabel
from lightning_cam.tools import viz

#: Where :func:`~lightning_cam.callbacks.classification.find_logits` found logits that the
#: engine reads itself (no wrapper needed).
_NATIVE = ("the output tensor", "output.logits", "output['logits']")


def is_multi_hot(labels: torch.Tensor) -> bool:
    """Whether ``labels`` hold 0 / 1 only (bool, integer or float)."""
    return labels.dtype == torch.bool or bool(((labels == 0) | (labels == 1)).all())


def tag_name(name: str) -> str:
    """A label name as a tag part: characters other than letters, digits, ``_ . -`` become
    ``_`` (a ``/`` would nest the tag)."""
    return re.sub(r"[^0-9A-Za-z_.\-]", "_", name) or "_"


def label_probabilities(explanation: Explanation, labels: torch.Tensor) -> torch.Tensor | None:
    """``sigmoid(z_k)`` ``(P,)`` of each pair's label ``k`` (from the logits the engine read,
    else from the explained scores, which are the labels' logits)."""
    if explanation.logits is not None and explanation.logits.dim() == 2:
        z = explanation.logits.detach().float().cpu()
        return torch.sigmoid(z.gather(1, labels.long()[:, None]).squeeze(1))
    if explanation.scores is not None:
        return torch.sigmoid(explanation.scores.detach().float().cpu())
    return None


def render_label_grids(
    options: CAMOptions,
    probes: Mapping[str, torch.Tensor],
    result: MultiLabelExplanation,
    layers: Sequence[str],
    names: Sequence[str] | None,
) -> dict[str, np.ndarray]:
    """One grid per tag ``{method}/{layer}/{kind}``: a tile per (shown probe, true label), in
    image order, captioned ``#{image} {label name} {sigmoid probability}``."""
    n = min(options.num_samples, probes["image"].shape[0])
    shown = [p for p, (row, _) in enumerate(result.pairs()) if row < n]
    expl = result.explanation
    if not shown or expl is None:
        return {}
    base = render.display_images(probes["image"][:n], options)
    probs = label_probabilities(expl, result.labels)
    nonfinite = expl.nonfinite

    def caption(p: int) -> str:
        row, label = int(result.rows[p]), int(result.labels[p])
        name = names[label] if names is not None and 0 <= label < len(names) else str(label)
        text = f"#{row} {name}" + (f" {float(probs[p]):.2f}" if probs is not None else "")
        if nonfinite is not None and bool(nonfinite[p]):
            text = f"NON-FINITE: no map | {text}"
        return text

    pictures: dict[str, np.ndarray] = {}
    for method in options.methods:
        for layer in layers:
            cams = expl.cams[method][layer].cpu()
            for kind in options.kinds:
                tiles = []
                for p in shown:
                    base_p = base[int(result.rows[p])]
                    tile = render.kind_tile(options, kind, base_p, cams, expl, method, layer, p)
                    tiles.append(viz.draw_label(tile, caption(p)))
                pictures[f"{method}/{layer}/{kind}"] = viz.make_grid(tiles, ncol=min(len(tiles), 4))
    return pictures


def _rename_layers(explanation: Explanation, names: dict[str, str]) -> Explanation:
    """``explanation`` with its layer keys renamed (``model.x`` of a wrapper -> ``x``)."""
    if not names:
        return explanation

    def keyed(maps: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
        return {m: {names.get(n, n): t for n, t in per.items()} for m, per in maps.items()}

    explanation.cams = keyed(explanation.cams)
    explanation.guided_cams = keyed(explanation.guided_cams)
    explanation.layers = [names.get(n, n) for n in explanation.layers]
    return explanation


class MultiLabelTask(ClassificationTask):
    """Multi-label classifiers (``target="labels"``): probes as for
    :class:`~lightning_cam.callbacks.classification.ClassificationTask` with multi-hot
    ``"label"`` ``(N, K)``; results
    :class:`~lightning_cam.engine.multilabel.MultiLabelExplanation` objects (one map per
    (probe, true label))."""

    name = "multilabel"

    def __init__(self, callback: CallbackView) -> None:
        super().__init__(callback)
        self._widths: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._label_scalars = render.MetricScalars()
        self._said: set[str] = set()

    @classmethod
    def serves(cls, options: CAMOptions | None) -> bool:
        return options is not None and options.target == MULTILABEL_TARGET

    def _say_once(self, key: str, msg: str) -> None:
        if key not in self._said:
            self._said.add(key)
            from pytorch_lightning.utilities import rank_zero_warn

            rank_zero_warn(f"{self._who()}: {msg}")

    # checks ----------------------------------------------------------------------------------

    def check_output(self, pl_module: Any, value: torch.Tensor, where: str) -> None:
        """Refuse outputs that are not multi-label logits ``(B, K)``, ``K >= 2``."""
        if value.dim() == 1 or value.shape[-1] == 1:
            raise MisconfigurationException(
                f"{self._who()}: target='labels' explains every true label of a multi-label "
                f"(sigmoid) head's logits (B, K), but {where} gives {tuple(value.shape)}: one "
                "score per image (a single-logit binary head). Use target='label' (its 0/1 "
                "labels) or target='pred'."
            )
        self._widths[pl_module] = int(value.shape[-1])

    def check_labels(self, pl_module: Any, labels: torch.Tensor, strict: bool) -> None:
        """Refuse labels that are not multi-hot ``(B, K)`` of the head's ``K`` logits; with
        ``strict`` (validation batches) also values other than 0 / 1."""
        who, key = self._who(), self.options.label_key
        shown = f"{tuple(labels.shape)} {str(labels.dtype).replace('torch.', '')}"
        where = f"the labels (label_key={key!r} for dict batches, else the second item) are {shown}"
        if labels.dim() == 1 or (labels.dim() == 2 and labels.shape[1] == 1):
            raise MisconfigurationException(
                f"{who}: target='labels' needs multi-hot labels (B, K), one 0/1 column per "
                f"logit; {where}: class ids (or a binary head's 0/1 labels). Use "
                "target='label' for class ids."
            )
        if labels.dim() != 2:
            raise MisconfigurationException(
                f"{who}: target='labels' needs multi-hot labels (B, K); {where}. Fix label_key "
                "or override extract(batch)."
            )
        k = self._widths.get(pl_module) if pl_module is not None else None
        if k is not None and labels.shape[1] != k:
            raise MisconfigurationException(
                f"{who}: target='labels' but {where} for a head of {k} logits: give multi-hot "
                f"labels (B, {k}), one column per logit, or fix label_key."
            )
        if strict and not is_multi_hot(labels):
            values = torch.unique(labels.float())[:6].tolist()
            raise MisconfigurationException(
                f"{who}: target='labels' needs 0/1 multi-hot labels; {where} holding "
                f"{values} (soft or smoothed labels?). Give 0/1 labels in the validation "
                "batches."
            )

    def check(self, trainer: Any, pl_module: Any, batch: Any, validation: bool) -> None:
        """As for the classification task; also 2-D images only, and the training batches'
        label shapes (their values may be soft: mixup, label smoothing)."""
        try:
            parts = self.callback.extract(batch)
        except MisconfigurationException:
            parts = None
        images = None if parts is None else parts["image"]
        if isinstance(images, torch.Tensor) and images.dim() != 4:
            raise MisconfigurationException(
                f"{self._who()}: target='labels' shows 2-D images (B, C, H, W); the inputs are "
                f"{tuple(images.shape)}. Use target='pred' or target='label' for them."
            )
        super().check(trainer, pl_module, batch, validation)
        labels = None if parts is None else parts.get("label")
        if not validation and isinstance(labels, torch.Tensor):
            self.check_labels(pl_module, labels, strict=False)

    def check_batch_labels(self, trainer: Any, pl_module: Any, parts: dict[str, Any]) -> None:
        """The first validation batch's labels (multi-hot, the head's width, 0 / 1) and masks
        (one per image ``(B, H, W)`` or one per label ``(B, K, H, W)``)."""
        labels = parts.get("label")
        if labels is None:
            raise MisconfigurationException(
                f"{self._who()}: target='labels' but the validation batches carry no labels "
                f"(label_key={self.options.label_key!r} for dict batches, else the second "
                "item); set label_key to the multi-hot labels (B, K), or use target='pred'."
            )
        self.check_labels(pl_module, labels, strict=True)
        mask, images = parts.get("mask"), parts["image"]
        if mask is not None and mask.dim() == images.dim() and mask.shape[1] != labels.shape[1]:
            raise MisconfigurationException(
                f"{self._who()}: the masks (mask_key={self.options.mask_key!r}) are "
                f"{tuple(mask.shape)} for labels {tuple(labels.shape)}: give one mask per "
                "image (B, H, W) or one per label (B, K, H, W), or mask_key=None."
            )

    def capture(self, batch: Any) -> list[dict[str, torch.Tensor]]:
        samples = super().capture(batch)
        labels = [s.get("label") for s in samples]
        if samples and all(isinstance(v, torch.Tensor) for v in labels):
            self.check_labels(None, torch.stack(labels), strict=True)  # type: ignore[arg-type]
        return samples

    # computation -----------------------------------------------------------------------------

    def _explained(
        self, pl_module: Any, read: Reader, where: str, layers: Sequence[str]
    ) -> tuple[Any, list[str], dict[str, str]]:
        """The model the engine explains, its layer names, and their names in ``pl_module``:
        ``pl_module`` itself when the engine reads its logits, else a wrapper reading them."""
        if where in _NATIVE:
            return pl_module, list(layers), {}
        inner = {f"model.{n}": n for n in layers}
        return LogitsOf(pl_module, read), list(inner), inner

    def compute(  # type: ignore[override]  # this task's result type
        self, trainer: Any, pl_module: Any, probes: Any, plan: Any
    ) -> MultiLabelExplanation:
        methods, layers, guided = plan
        device = module_device(pl_module)
        convert, ctx = precision_of(trainer)
        read, where = self.checked_reader(trainer, pl_module, probes["image"])
        model, names, inner = self._explained(pl_module, read, where, layers)
        images = convert(self.model_images(probes["image"]).to(device))
        labels = probes["label"]
        # guided gradients for the shown probes only (as the classification task)
        n = self.options.num_samples if guided else images.shape[0]
        rows, ids, parts = [], [], []
        with fork_rng(device), ctx:
            for lo, hi, g in ((0, n, guided), (n, images.shape[0], False)):
                if hi <= lo:
                    continue
                part = explain_multilabel(
                    model, images[lo:hi], names, methods=methods, labels=labels[lo:hi],
                    reshape_transform=self.options.reshape_transform, guided_gradcam=g,
                )  # fmt: skip
                if part.rows.numel() == 0 or part.explanation is None:
                    continue
                rows.append(part.rows + lo)
                ids.append(part.labels)
                parts.append(_rename_layers(part.explanation, inner))
        if not parts:
            empty = torch.zeros(0, dtype=torch.long)
            return MultiLabelExplanation(empty, empty.clone(), Explanation())
        return MultiLabelExplanation(torch.cat(rows), torch.cat(ids), concat_explanations(parts))

    def present(
        self, trainer: Any, pl_module: Any, probes: Any, result: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        opts = self.options
        layers = self.layers(pl_module, probes["image"])
        names = self.class_names(trainer, pl_module)
        n = min(opts.num_samples, probes["image"].shape[0])
        empty = [i for i in range(n) if i not in set(result.rows.tolist())]
        if empty:
            self._say_once(
                "unlabelled",
                f"{len(empty)} of the {n} probe images have no true label (all-zero multi-hot "
                f"labels: images {empty[:8]}); they get no tile.",
            )
        pictures = render_label_grids(opts, probes, result, layers, names) if opts.kinds else {}
        read, where = self.checked_reader(trainer, pl_module, probes["image"])
        model = pl_module if where in _NATIVE else LogitsOf(pl_module, read)
        scalars = self.label_metrics(trainer, pl_module, model, probes, result)
        return pictures, scalars

    def metrics(self, pl_module: Any, probes: Any, result: Any) -> dict[str, float]:
        """Per-pair metrics of ``result`` with ``pl_module`` as it is (see
        :meth:`label_metrics`)."""
        return self.label_metrics(None, pl_module, pl_module, probes, result)

    def label_metrics(
        self, trainer: Any, pl_module: Any, model: Any, probes: Any, result: Any
    ) -> dict[str, float]:
        """The metrics per (image, label) pair: ``{method}/{layer}/{metric}``, their mean over
        the pairs (NaN, "not applicable", left out: e.g. an empty per-label mask), and
        ``.../label_{name}`` the mean over the pairs of each label.

        The pairs' ground truth: the image's mask ``(H, W)`` or box, or its label's mask of
        per-label masks ``(K, H, W)``; the model metrics read the label's logit.
        """
        opts = self.options
        if not opts.metrics or result.explanation is None or result.rows.numel() == 0:
            return {}
        rows, labels = result.rows, result.labels
        pair_probes: dict[str, torch.Tensor] = {"image": probes["image"][rows]}
        mask, box = probes.get("mask"), probes.get("box")
        if mask is not None:
            pair_probes["mask"] = mask[rows, labels] if mask.dim() == 4 else mask[rows]
        if box is not None:
            pair_probes["box"] = box[rows]
        device = module_device(pl_module)
        images = self.model_images(probes["image"]).to(device)[rows.to(device)]
        layers = self.layers(pl_module, probes["image"])
        values, keep = self._label_scalars.per_sample(
            opts, pair_probes, model, images, result.explanation, layers
        )
        kept = labels if keep is None else labels[keep]
        names = self.class_names(trainer, pl_module) if trainer is not None else opts.class_names
        out: dict[str, float] = {}
        for tag, v in values.items():
            out[tag] = float(torch.nanmean(v.float()))
            for c in torch.unique(kept).tolist():
                name = names[c] if names is not None and c < len(names) else str(c)
                out[f"{tag}/label_{tag_name(name)}"] = float(torch.nanmean(v[kept == c].float()))
        return {k: v for k, v in out.items() if np.isfinite(v)}
