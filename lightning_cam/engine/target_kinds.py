"""Targets beyond single-label classes: multi-label heads, regression, embeddings, CLIP.

Each target is a callable ``output -> (B,)`` differentiable scores, usable as ``target=`` of every
gradient method's class (``lc.GradCAM(...)(x, target=...)``), of :func:`lightning_cam.explain` and
of :class:`~lightning_cam.engine.Explainer`. Targets holding per-image data (labels, indices,
reference vectors) have ``batch_slice(start, stop)``, so ``max_batch`` gives the same maps as one
pass. Methods that explain classes only (they re-score other inputs or read a classifier's
weights: Score-CAM, Ablation-CAM, CAM) take class ids, not these targets; a multi-label head's
labels are class ids to them, see :func:`~lightning_cam.engine.multilabel.explain_multilabel`.

Example:
    >>> import torch
    >>> z = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, -2.0]])
    >>> MultiLabelTarget()(z)  # the logits of each image's positive labels, summed
    tensor([2.5000, 1.0000])
    >>> multilabel_pairs(z)
    (tensor([0, 0, 1]), tensor([0, 2, 1]))
    >>> RegressionTarget(1, "decrease")(torch.tensor([[0.5, 2.0]]))
    tensor([-2.])
    >>> EmbeddingTarget(torch.tensor([1.0, 0.0]))(torch.tensor([[3.0, 4.0]]))
    tensor([0.6000])
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "CLIPImageEmbedder",
    "EmbeddingTarget",
    "MultiLabelTarget",
    "RegressionTarget",
    "TextSimilarityTarget",
    "clip_text_embeddings",
    "integer_id",
    "multilabel_pairs",
]

LabelSpec = Union[None, int, Sequence[Any], torch.Tensor, np.ndarray]


def integer_id(value: Any) -> int | None:
    """An integer (a class id, a label, an index) from an int of any type or a 0-d integer
    tensor / array, else ``None`` (bools and floats are not integers here)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        kind = value.dtype.kind if isinstance(value, np.ndarray) else None
        if kind is not None:
            return int(value) if kind in "iu" else None
        dt = value.dtype
        integral = not (dt.is_floating_point or dt.is_complex or dt == torch.bool)
        return int(value) if integral else None
    return None


def read_logits(output: Any, what: str) -> torch.Tensor:
    """The output tensor: a tensor, an object with ``.logits`` or a dict with ``"logits"``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]  # type: ignore[no-any-return]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits  # type: ignore[no-any-return]
    raise TypeError(
        f"{what} reads a tensor output (or .logits / ['logits']), got {type(output).__name__}; "
        "wrap the model so that it returns that tensor, or pass a callable target."
    )


# ----------------------------------------------------------------------------- multi-label


def check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    return float(threshold)


def _label_mask(logits: torch.Tensor, labels: LabelSpec, threshold: float) -> torch.Tensor:
    """The labels ``(B, K)`` bool explained per image of a multi-label head's logits ``(B, K)``.

    ``labels``: ``None`` (``sigmoid(z_k) > threshold``), an ``int`` (that label for every image),
    a ``(B, K)`` bool / 0-1 tensor or array (e.g. multi-hot ground truth), or one entry per image,
    each an ``int`` or a sequence of ints (its label set, possibly empty).
    """
    if logits.dim() != 2:
        raise ValueError(
            f"a multi-label head gives logits (B, K), got shape {tuple(logits.shape)}"
        )
    batch, k = logits.shape
    dev = logits.device
    if labels is None:
        return torch.sigmoid(logits.detach().float()) > threshold
    single = integer_id(labels)
    mask = torch.zeros(batch, k, dtype=torch.bool, device=dev)
    if single is not None:
        ids: list[list[int]] = [[single]] * batch
    elif isinstance(labels, (torch.Tensor, np.ndarray)) and labels.ndim == 2:
        given = torch.as_tensor(labels).to(dev)
        if tuple(given.shape) != (batch, k):
            raise ValueError(
                f"a label mask must have the logits' shape {(batch, k)}, got {tuple(given.shape)}"
            )
        if given.dtype.is_floating_point and not bool(((given == 0) | (given == 1)).all()):
            raise ValueError("a float label mask must hold 0 / 1 only (multi-hot labels)")
        return given != 0
    elif isinstance(labels, (torch.Tensor, np.ndarray, Sequence)) and not isinstance(
        labels, (str, bytes)
    ):
        entries = list(labels)
        if len(entries) != batch:
            raise ValueError(
                f"labels has {len(entries)} entries but the batch has {batch} images; give one "
                "label (or label set) per image, a single int, or a (B, K) mask."
            )
        ids = []
        for entry in entries:
            one = integer_id(entry)
            if one is not None:
                ids.append([one])
                continue
            if isinstance(entry, (str, bytes)) or not isinstance(
                entry, (Sequence, torch.Tensor, np.ndarray)
            ):
                raise TypeError(f"a label set must be an int or a sequence of ints, got {entry!r}")
            values = [integer_id(v) for v in entry]
            if any(v is None for v in values):
                raise TypeError(f"a label set must hold ints, got {entry!r}")
            ids.append([int(v) for v in values if v is not None])
    else:
        raise TypeError(
            "labels must be None, an int, one label (set) per image or a (B, K) mask; got "
            f"{labels!r} ({type(labels).__name__})"
        )
    for i, row in enumerate(ids):
        for c in row:
            if not 0 <= c < k:
                raise ValueError(
                    f"label {c} is out of range for a head with {k} labels (0..{k - 1})"
                )
            mask[i, c] = True
    return mask


def _slice_labels(labels: LabelSpec, start: int, stop: int) -> LabelSpec:
    if labels is None or integer_id(labels) is not None:
        return labels
    return labels[start:stop]  # type: ignore[index]


class MultiLabelTarget:
    """Score of a multi-label (sigmoid) head ``(B, K)``: the sum of the *logits* ``z_k`` of the
    labels explained per image (not of ``sigmoid(z_k)``, whose gradient vanishes for confident
    labels; the logit is the pre-activation score, as Grad-CAM uses).

    One call explains one score per image: with one label per image it is that label's map;
    with several (``labels=None`` and several positive labels) the map of their summed logits.
    For one map per (image, positive label) use
    :func:`~lightning_cam.engine.multilabel.explain_multilabel` (one forward and one backward
    for all pairs), or :func:`multilabel_pairs` to build the pairs yourself.

    Args:
        labels: ``None``: each image's positive labels, ``sigmoid(z_k) > threshold``; an
            ``int``: that label for every image; one entry per image (an ``int`` or a label
            set); or a ``(B, K)`` bool / 0-1 mask (e.g. multi-hot ground truth). An image with
            no label scores 0 and gets an all-zero map.
        threshold: Probability above which a label is positive (``labels=None`` only).

    Attributes:
        last_labels: The ``(B, K)`` bool labels of the last call.

    Example:
        >>> MultiLabelTarget([1, [0, 2]])(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
        tensor([2., 4.])
    """

    def __init__(self, labels: LabelSpec = None, threshold: float = 0.5) -> None:
        self.labels = labels
        self.threshold = check_threshold(threshold)
        self.last_labels: torch.Tensor | None = None

    def batch_slice(self, start: int, stop: int) -> MultiLabelTarget:
        """The target of images ``start:stop`` (per-image labels sliced)."""
        return MultiLabelTarget(_slice_labels(self.labels, start, stop), self.threshold)

    def __call__(self, output: Any) -> torch.Tensor:
        z = read_logits(output, "MultiLabelTarget")
        mask = _label_mask(z, self.labels, self.threshold)
        self.last_labels = mask
        return (z * mask.to(z.dtype)).sum(1)


def multilabel_pairs(
    logits: torch.Tensor, labels: LabelSpec = None, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (image, label) pairs to explain of a multi-label head's logits ``(B, K)``.

    Args:
        logits: ``(B, K)``.
        labels: As for :class:`MultiLabelTarget` (``None``: ``sigmoid(z_k) > threshold``).
        threshold: Probability above which a label is positive.

    Returns:
        ``(rows, label_ids)``: two ``(P,)`` long tensors, image-major (image 0's labels first,
        ascending), on the logits' device.

    Example:
        >>> multilabel_pairs(torch.tensor([[0.0, 3.0], [2.0, 1.0]]), threshold=0.6)
        (tensor([0, 1, 1]), tensor([1, 0, 1]))
    """
    mask = _label_mask(logits, labels, check_threshold(threshold))
    rows, label_ids = mask.nonzero(as_tuple=True)
    return rows, label_ids


def refuse_single_logit(k: int) -> None:
    if k == 1:
        raise ValueError(
            "a single-logit head (B, 1) is a binary classifier, not a multi-label one: explain "
            "it with target=BinaryTarget() (or class id 1 for the logit z)."
        )


def given_pairs(labels: LabelSpec, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (image, label) pairs of given labels, without running the model (the engine checks
    the labels against the head's width)."""
    if isinstance(labels, (torch.Tensor, np.ndarray)) and labels.ndim == 2:
        mask = _label_mask(torch.zeros(tuple(labels.shape)), labels, 0.5)
        rows, label_ids = mask.nonzero(as_tuple=True)
        return rows, label_ids
    k = 1 + max(
        (c for row in _label_sets(labels, batch) for c in row), default=0
    )
    mask = _label_mask(torch.zeros(batch, k), labels, 0.5)
    rows, label_ids = mask.nonzero(as_tuple=True)
    return rows, label_ids


def _label_sets(labels: LabelSpec, batch: int) -> list[list[int]]:
    """Per-image label sets of an int or a sequence of per-image entries (ints or sequences);
    anything else gives ``[]`` here and is refused by :func:`_label_mask`."""
    one = integer_id(labels)
    if one is not None:
        return [[one]] * batch
    if isinstance(labels, (str, bytes)) or not isinstance(
        labels, (Sequence, torch.Tensor, np.ndarray)
    ):
        return []
    out: list[list[int]] = []
    for entry in labels:
        e = integer_id(entry)
        if e is not None:
            out.append([e])
        elif isinstance(entry, (Sequence, torch.Tensor, np.ndarray)) and not isinstance(
            entry, (str, bytes)
        ):
            out.append([v for v in (integer_id(x) for x in entry) if v is not None])
    return out


# ----------------------------------------------------------------------------- regression

Direction = Literal["output", "increase", "decrease"]
_DIRECTIONS = ("output", "increase", "decrease")


class RegressionTarget:
    """Score of a regression output: the value at ``index`` (``"output"`` / ``"increase"``:
    where evidence raises it), or its negation (``"decrease"``: where evidence lowers it).

    Args:
        index: The output explained of a ``(B, D)`` output: an ``int`` for every image, or one
            per image. A ``(B,)`` or ``(B, 1)`` output has the single index 0.
        direction: ``"output"`` (the value ``y``), ``"increase"`` (the same score ``y``: what
            makes it larger) or ``"decrease"`` (``-y``: what makes it smaller).

    Example:
        >>> y = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
        >>> RegressionTarget(1)(y), RegressionTarget([0, 1], "decrease")(y)
        (tensor([-2.,  4.]), tensor([-1., -4.]))
    """

    def __init__(
        self, index: int | Sequence[int] | torch.Tensor = 0, direction: Direction = "output"
    ) -> None:
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
        one = integer_id(index)
        if one is None:
            if isinstance(index, (str, bytes)) or not isinstance(
                index, (Sequence, torch.Tensor, np.ndarray)
            ):
                raise TypeError(f"index must be an int or one int per image, got {index!r}")
            values = [integer_id(v) for v in index]
            if any(v is None for v in values):
                raise TypeError(f"index must be an int or one int per image, got {index!r}")
            self.index: int | torch.Tensor = torch.tensor(values, dtype=torch.long)
        else:
            self.index = one
        self.direction: Direction = direction

    def batch_slice(self, start: int, stop: int) -> RegressionTarget:
        """The target of images ``start:stop`` (per-image indices sliced)."""
        index = self.index if isinstance(self.index, int) else self.index[start:stop]
        return RegressionTarget(index, self.direction)

    def __call__(self, output: Any) -> torch.Tensor:
        y = read_logits(output, "RegressionTarget")
        if y.dim() == 1:
            y = y[:, None]
        if y.dim() != 2:
            raise ValueError(
                f"RegressionTarget reads outputs (B,) or (B, D), got {tuple(y.shape)}; pass a "
                "callable target for other shapes."
            )
        batch, d = y.shape
        if isinstance(self.index, int):
            idx = torch.full((batch,), self.index, dtype=torch.long, device=y.device)
        else:
            if self.index.numel() != batch:
                raise ValueError(
                    f"index has {self.index.numel()} entries but the batch has {batch} images"
                )
            idx = self.index.to(y.device).clone()  # not an inference tensor
        if batch and (int(idx.min()) < 0 or int(idx.max()) >= d):
            raise ValueError(f"index {idx.tolist()} is out of range for an output of {d} values")
        value = y.gather(1, idx[:, None])[:, 0]
        return -value if self.direction == "decrease" else value


# ----------------------------------------------------------------------------- embeddings


def _embedding(output: Any) -> torch.Tensor:
    """An embedding ``(B, D)``: a tensor, or ``.image_embeds`` / ``.pooler_output`` (Hugging
    Face outputs; ``CLIPModel.get_image_features`` returns the projection in the latter)."""
    e: torch.Tensor | None = output if isinstance(output, torch.Tensor) else None
    if e is None:
        for key in ("image_embeds", "pooler_output"):
            v = output.get(key) if isinstance(output, dict) else getattr(output, key, None)
            if isinstance(v, torch.Tensor):
                e = v
                break
        if e is None:
            raise TypeError(
                f"an embedding target reads an embedding (B, D) tensor, got "
                f"{type(output).__name__}; wrap the model so that it returns the embedding."
            )
    if e.dim() != 2:
        raise ValueError(f"an embedding output is (B, D), got {tuple(e.shape)}")
    return e


def _reference(reference: Any, what: str) -> torch.Tensor:
    if isinstance(reference, np.ndarray):
        reference = torch.from_numpy(reference)
    if not isinstance(reference, torch.Tensor) or not (
        reference.is_floating_point() and reference.dim() in (1, 2)
    ):
        raise TypeError(
            f"{what} must be a float tensor (D,) or (B, D), got "
            f"{tuple(reference.shape) if isinstance(reference, torch.Tensor) else reference!r}"
        )
    with torch.inference_mode(False):
        return reference.detach().clone()


class EmbeddingTarget:
    """Score of an embedding model ``(B, D)``: the cosine similarity of each image's embedding
    with a reference: a concept vector ``(D,)``, or one reference per image ``(B, D)`` (e.g.
    another image's embedding, computed beforehand under ``torch.no_grad()``). The map shows
    what makes the image's embedding *point towards* the reference.

    Args:
        reference: ``(D,)`` or ``(B, D)`` float (detached; per-image rows are sliced with the
            batch under ``max_batch``).
        eps: Floor on the norms (as :func:`torch.nn.functional.cosine_similarity`).

    Example:
        >>> EmbeddingTarget(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))(torch.tensor([[1.0, 1.0]] * 2))
        tensor([0.7071, 0.7071])
    """

    _what = "reference"

    def __init__(self, reference: torch.Tensor | np.ndarray, eps: float = 1e-8) -> None:
        self.reference = _reference(reference, self._what)
        self.eps = float(eps)

    def batch_slice(self, start: int, stop: int) -> EmbeddingTarget:
        """The target of images ``start:stop`` (per-image references sliced)."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        if self.reference.dim() == 2:
            out.reference = self.reference[start:stop]
        return out

    def similarity(self, output: Any) -> torch.Tensor:
        """The cosine similarities ``(B,)`` of the output's embeddings with the reference."""
        e = _embedding(output)
        ref = self.reference.to(device=e.device, dtype=e.dtype)
        if ref.shape[-1] != e.shape[1]:
            raise ValueError(
                f"the {self._what} has {ref.shape[-1]} dimensions, the embedding {e.shape[1]}"
            )
        if ref.dim() == 2 and ref.shape[0] != e.shape[0]:
            raise ValueError(
                f"{ref.shape[0]} per-image {self._what}s for a batch of {e.shape[0]} images; "
                f"give one (D,) {self._what} or one per image (B, D)."
            )
        return torch.nn.functional.cosine_similarity(e, ref.expand_as(e), dim=1, eps=self.eps)

    def __call__(self, output: Any) -> torch.Tensor:
        return self.similarity(output)


class TextSimilarityTarget(EmbeddingTarget):
    """Score of an image-text model (CLIP): the similarity of each image's embedding with a
    text embedding given by the user (:func:`clip_text_embeddings`): ``scale * cos(image,
    text)``, with ``scale = 1`` or CLIP's ``logit_scale.exp()`` (then the score is CLIP's
    ``logits_per_image`` for that text). Use it on a model returning image embeddings, e.g.
    :class:`CLIPImageEmbedder`.

    Args:
        text_embedding: ``(D,)`` one text for every image, or ``(B, D)`` one per image.
        logit_scale: Multiplier of the cosine (a float or a 0-d tensor); ``None``: 1.

    Example:
        >>> TextSimilarityTarget(torch.tensor([0.0, 2.0]), logit_scale=10.0)(torch.ones(1, 2))
        tensor([7.0711])
    """

    _what = "text embedding"

    def __init__(
        self,
        text_embedding: torch.Tensor | np.ndarray,
        logit_scale: float | torch.Tensor | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(text_embedding, eps)
        self.logit_scale = 1.0 if logit_scale is None else float(logit_scale)

    def __call__(self, output: Any) -> torch.Tensor:
        return self.similarity(output) * self.logit_scale


def _features(out: Any) -> torch.Tensor:
    """``get_image_features`` / ``get_text_features`` return a tensor (transformers < 5) or an
    output whose ``pooler_output`` is the projected embedding (transformers >= 5)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"expected CLIP features (a tensor or .pooler_output), got {type(out)}")


class CLIPImageEmbedder(nn.Module):
    """A Hugging Face ``CLIPModel`` as an image model ``pixel_values (B, 3, H, W) -> image
    embeddings (B, D)`` (``get_image_features``: the vision tower, then the projection), to
    explain with :class:`TextSimilarityTarget`. Layer names are the CLIP model's under
    ``clip.``: ``clip.vision_model.encoder.layers.10`` ... (tokens ``(B, 1 + h*w, D)``: fold
    them with ``reshape_transform=fold_tokens(1, (H // patch, W // patch))``; ``"auto"`` does
    not recognise CLIP yet). The embedding is the last block's class token, so the last block's
    own patch tokens do not reach it (zero gradients): explain an earlier block, or the last
    block's ``layer_norm1``.

    Args:
        clip: A ``transformers.CLIPModel`` (or any module with ``get_image_features``).
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(clip, "get_image_features", None)):
            raise TypeError(
                f"CLIPImageEmbedder needs a CLIP model with get_image_features, got "
                f"{type(clip).__name__}"
            )
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        get: Any = self.clip.get_image_features
        return _features(get(pixel_values=pixel_values))


def clip_text_embeddings(
    clip: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Text embeddings ``(T, D)`` (detached) of tokenised texts, for
    :class:`TextSimilarityTarget`: ``clip.get_text_features`` under ``torch.no_grad()``, the
    model in eval mode for the call."""
    from lightning_cam.engine.borrow import borrowed

    get: Any = getattr(clip, "get_text_features", None)
    if not callable(get):
        raise TypeError(f"expected a CLIP model with get_text_features, got {type(clip).__name__}")
    with borrowed(clip), torch.inference_mode(False), torch.no_grad():
        return _features(get(input_ids=input_ids, attention_mask=attention_mask)).detach()
