"""Multi-label classifiers explained: one map per (image, positive label) from one forward and
one batched backward (:func:`explain_multilabel`), on the targets of
:mod:`lightning_cam.engine.target_kinds`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_cam.engine.borrow import borrowed
from lightning_cam.engine.cam import explain
from lightning_cam.engine.explainer import Explanation
from lightning_cam.engine.target_kinds import (
    LabelSpec,
    check_threshold,
    given_pairs,
    multilabel_pairs,
    read_logits,
    refuse_single_logit,
)
from lightning_cam.engine.wrappers import eager_forward

__all__ = ["MultiLabelExplanation", "explain_multilabel"]


@dataclass
class MultiLabelExplanation:
    """Maps per (image, label) of a multi-label head, from :func:`explain_multilabel`.

    Attributes:
        rows: ``(P,)`` the image of each pair.
        labels: ``(P,)`` the label of each pair.
        explanation: The engine's result for the ``P`` pairs: ``cams[method][layer]``
            ``(P, H, W)``, ``scores`` ``(P,)`` (the labels' logits) ...; empty (no ``cams``)
            when no image has a label.
    """

    rows: torch.Tensor
    labels: torch.Tensor
    explanation: Explanation | None = None
    _index: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {
            (int(r), int(c)): p for p, (r, c) in enumerate(zip(self.rows, self.labels, strict=True))
        }

    def pairs(self) -> list[tuple[int, int]]:
        """The ``(image, label)`` pairs, in the order of the maps."""
        return list(self._index)

    def cam(
        self, image: int, label: int, method: str = "gradcam", layer: str | None = None
    ) -> torch.Tensor:
        """The map ``(H, W)`` of one image's label.

        Raises:
            KeyError: The pair was not explained (the label is not positive for that image).
        """
        if (image, label) not in self._index or self.explanation is None:
            raise KeyError(f"(image {image}, label {label}) is not among {self.pairs()}")
        return self.explanation.cam(method, layer)[self._index[(image, label)]]


def explain_multilabel(
    model: nn.Module,
    images: torch.Tensor,
    layer: Any = None,
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    threshold: float = 0.5,
    labels: LabelSpec = None,
    max_batch: int | None = None,
    reshape_transform: Any = "auto",
    normalize: bool = True,
    upsample: bool = True,
    guided_backprop: bool = False,
    guided_gradcam: bool = False,
) -> MultiLabelExplanation:
    """One map per (image, positive label) of a multi-label (sigmoid) classifier ``(B, K)``.

    The pairs come from :func:`multilabel_pairs` (with ``labels=None`` a no-grad forward reads
    the labels above ``threshold``); then one :func:`lightning_cam.explain` of the images
    repeated once per pair, with the pairs' labels as class ids: one forward and one backward
    for all pairs (``max_batch`` bounds them), and any registered method (class-only ones such
    as Score-CAM included). Each map explains the label's logit ``z_k``, not ``sigmoid(z_k)``.

    Args:
        model: ``(B, C, H, W) -> (B, K)`` logits (or ``.logits`` / ``['logits']``).
        images: ``(B, C, H, W)``.
        layer: As for :func:`lightning_cam.explain`.
        methods: Method names.
        threshold: Probability above which a label is positive (``labels=None``).
        labels: As for :class:`MultiLabelTarget`: given labels skip the label-reading forward.
        max_batch: Pairs per forward/backward pass (``None``: all).
        reshape_transform: As for :func:`lightning_cam.explain`.
        normalize: As for :func:`lightning_cam.explain`.
        upsample: Maps at the image size (else the layer's).
        guided_backprop: Also guided backprop per pair (``.explanation.guided``), as for
            :func:`lightning_cam.explain` (one guided backward over the same forward).
        guided_gradcam: Also guided Grad-CAM per pair (``.explanation.guided_cams``).

    Returns:
        A :class:`MultiLabelExplanation`: ``.cam(image, label, method)``, ``.rows``, ``.labels``
        and the engine's ``.explanation`` with maps ``(P, H, W)``.

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(weights=None, num_classes=4)
        >>> out = explain_multilabel(net, torch.rand(2, 3, 64, 64), "layer4", labels=[[0, 3], 1])
        >>> out.pairs(), out.cam(0, 3).shape
        ([(0, 0), (0, 3), (1, 1)], torch.Size([64, 64]))
    """
    if not isinstance(images, torch.Tensor) or images.dim() < 3:
        raise TypeError("images must be a tensor (B, C, H, W)")
    threshold = check_threshold(threshold)
    if labels is None:
        with borrowed(model), torch.inference_mode(False), torch.no_grad():
            logits = read_logits(eager_forward(model)(images), "explain_multilabel").detach()
        refuse_single_logit(logits.shape[-1])
        rows, label_ids = multilabel_pairs(logits, None, threshold)
    else:
        rows, label_ids = given_pairs(labels, images.shape[0])
    rows, label_ids = rows.cpu(), label_ids.cpu()
    if rows.numel() == 0:
        return MultiLabelExplanation(rows, label_ids, Explanation())
    result = explain(
        model,
        images[rows.to(images.device)],
        layer,
        methods=methods,
        target=label_ids,
        upsample=upsample,
        max_batch=max_batch,
        reshape_transform=reshape_transform,
        normalize=normalize,
        guided_backprop=guided_backprop,
        guided_gradcam=guided_gradcam,
    )
    if result.logits is not None:
        refuse_single_logit(result.logits.shape[-1])
    return MultiLabelExplanation(rows, label_ids, result)
