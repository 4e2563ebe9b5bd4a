"""Targets: model output -> one differentiable score per sample.

A target says *what* is explained. The engine differentiates the scores a target returns and
nothing else. Classification targets pick a pre-softmax class score (the logit), as in the
Grad-CAM and Grad-CAM++ papers; custom targets are any callable ``output -> (B,)``.

Example:
    >>> import torch
    >>> logits = torch.tensor([[1.0, 3.0], [2.0, 0.5]])
    >>> ClassTarget(None)(logits)
    tensor([3., 2.])
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import torch

# Multi-label, regression, embedding and CLIP targets live in engine/target_kinds.py, and are
# reached from here too (``lc.targets.MultiLabelTarget``).
from lightning_cam.engine.target_kinds import *  # noqa: F403
from lightning_cam.engine.target_kinds import integer_id
from lightning_cam.methods.recent import check_ranks, finer_scores

TargetSpec = Union[
    None, int, Sequence[int], torch.Tensor, np.ndarray, Callable[[Any], torch.Tensor]
]

_TARGET_KINDS = (
    "None, an int class id (any integer type: int, numpy integer, 0-d integer tensor), "
    "per-image class ids (a list / tuple of ints, a 1-D integer numpy array or tensor), or a "
    "callable output -> (B,) scores (None: each image's predicted class)"
)


def normalize_target(target: Any) -> None | int | torch.Tensor | Callable[[Any], torch.Tensor]:
    """Bring a class target to one of four canonical forms, or refuse it.

    Accepts what users naturally pass: ``None``; an integer of any type (``int``,
    ``numpy.int64``, a 0-d integer tensor such as ``logits.argmax()``, a 0-d numpy array);
    per-image ids as a list / tuple of integers, a 1-D integer numpy array or a 1-D integer
    tensor of any integer dtype; or a callable ``output -> (B,)`` scores.

    Args:
        target: The target as given by the user.

    Returns:
        ``None``, a Python ``int``, a 1-D ``torch.long`` tensor on the CPU, or the callable.

    Raises:
        TypeError: Anything else (strings, floats, booleans, float arrays ...), naming the value.
        ValueError: Integer ids with more than one dimension.

    Example:
        >>> import numpy as np, torch
        >>> normalize_target(np.int64(2)), normalize_target(torch.tensor(3))
        (2, 3)
        >>> normalize_target(np.array([1, 2], dtype=np.int32))
        tensor([1, 2])
    """
    if target is None:
        return None
    if callable(target) and not isinstance(target, (torch.Tensor, np.ndarray)):
        return target  # type: ignore[no-any-return]
    if isinstance(target, (bool, np.bool_)):
        raise TypeError(f"target must be {_TARGET_KINDS}; got the bool {target!r}")
    if isinstance(target, numbers.Integral):
        return int(target)
    ids: torch.Tensor
    if isinstance(target, torch.Tensor):
        ids = target.detach()
    elif isinstance(target, np.ndarray):
        if target.dtype.kind not in "iu":
            raise TypeError(
                f"target must be {_TARGET_KINDS}; got a numpy array of dtype {target.dtype}"
            )
        ids = torch.from_numpy(target.astype(np.int64))
    elif isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        values = [integer_id(v) for v in target]
        bad = [v for v, i in zip(target, values, strict=True) if i is None]
        if bad:
            raise TypeError(
                f"target must be {_TARGET_KINDS}; got a {type(target).__name__} holding "
                f"{bad[0]!r} ({type(bad[0]).__name__})"
            )
        ids = torch.tensor(values, dtype=torch.long)
    else:
        raise TypeError(
            f"target must be {_TARGET_KINDS}; got {target!r} ({type(target).__name__})"
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"target must be {_TARGET_KINDS}; got a tensor of dtype {ids.dtype}")
    if ids.dim() == 0:
        return int(ids)
    if ids.dim() != 1:
        raise ValueError(f"target class ids must be 1-D, got shape {tuple(ids.shape)}")
    # An ordinary tensor even when made (or given) under ``torch.inference_mode()``, e.g. in
    # Lightning's validate/test loops: autograd refuses inference tensors in the target's gather.
    with torch.inference_mode(False):
        return ids.to(device="cpu", dtype=torch.long).clone()


def extract_logits(output: Any) -> torch.Tensor:
    """Return the class logits ``(B, num_classes)`` from a model's output.

    Accepts a tensor, a named tuple or object with a ``logits`` attribute (Inception v3's
    ``InceptionOutputs``, GoogLeNet's, Hugging Face outputs) and dicts with a ``"logits"`` key.

    Raises:
        TypeError: For any other output; the message suggests a callable target.
    """
    if isinstance(output, torch.Tensor):
        logits = output
    elif hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        logits = output.logits
    elif isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        logits = output["logits"]
    else:
        raise TypeError(
            f"Cannot find class logits in a model output of type {type(output).__name__}: "
            "expected a tensor (B, num_classes), an object with a .logits tensor, or a dict "
            "with a 'logits' key. For other outputs pass target=callable(output) -> (B,) scores."
        )
    if logits.dim() == 4 and tuple(logits.shape[2:]) == (1, 1):
        logits = logits.flatten(1)  # a convolutional head's (B, K, 1, 1)
    if logits.dim() == 1:
        raise TypeError(
            f"Expected class logits of shape (B, num_classes), got {tuple(logits.shape)}: one "
            "score per image. If it is a binary head's logit (`fc(x).squeeze(1)`), pass "
            "target=lightning_cam.targets.BinaryTarget() (or return (B, 1)); for any other "
            "score pass target=callable(output) -> (B,)."
        )
    if logits.dim() != 2:
        raise TypeError(
            f"Expected class logits of shape (B, num_classes), got {tuple(logits.shape)}. "
            "For other outputs (segmentation, detection) pass target=callable(output) -> (B,)."
        )
    return logits


def class_logits(logits: torch.Tensor, sigmoid: bool = False) -> torch.Tensor:
    """The class scores ``(B, K)`` of logits ``(B, K)``; a single-logit binary head ``(B, 1)``
    (logit ``z`` of the positive class, probability ``sigmoid(z)``) reads as two classes with
    scores ``[-z, z]``: class 1 is the positive decision (score ``z``, the logit), class 0 the
    negative one (score ``-z``, the negated logit; its map shows the evidence *against* the
    positive class). The argmax is then the decision ``z > 0``.
    With ``sigmoid`` (the head returns ``p = sigmoid(z)``, see :func:`graph_output_kind`) the
    scores are ``[1 - p, p]``: the same gradients up to the scale ``p (1 - p)``, and the argmax
    the decision ``p > 0.5``.

    Example:
        >>> class_logits(torch.tensor([[2.0], [-1.0]]))
        tensor([[-2.,  2.],
                [ 1., -1.]])
    """
    if logits.dim() == 2 and logits.shape[1] == 1:
        if sigmoid:
            return torch.cat([1 - logits, logits], dim=1)
        return torch.cat([-logits, logits], dim=1)
    return logits


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, K)`` (float32) of a classifier's output ``(B, K)``.

    Softmax of logits (a ``log_softmax`` output gives the same, exactly); a binary head
    ``(B, 1)`` gives ``[1 - sigmoid(z), sigmoid(z)]`` (classes as in :func:`class_logits`); an
    output that already holds probabilities (rows non-negative, summing to 1, ``K > 1``) is
    returned as is, not softmaxed a second time.

    Example:
        >>> class_probabilities(torch.tensor([[0.0]]))
        tensor([[0.5000, 0.5000]])
    """
    x = logits.detach().float()
    if x.dim() == 2 and x.shape[1] == 1:
        p = torch.sigmoid(x)
        return torch.cat([1 - p, p], dim=1)
    if output_kind(x) == "probabilities":
        return x
    return x.softmax(dim=1)


def class_log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``log`` of :func:`class_probabilities` ``(B, K)`` float32, computed stably
    (``log_softmax``; ``logsigmoid(-z), logsigmoid(z)`` for a binary head ``(B, 1)``)."""
    x = logits.detach().float()
    if x.dim() == 2 and x.shape[1] == 1:
        return torch.nn.functional.logsigmoid(torch.cat([-x, x], dim=1))
    if output_kind(x) == "probabilities":
        return x.log()
    return x.log_softmax(dim=1)


#: The ``grad_fn`` of a model output that ends in a normalisation, and what the output holds.
_GRAPH_KINDS = {
    "LogSoftmaxBackward0": "log_probabilities",
    "SoftmaxBackward0": "probabilities",
    "SigmoidBackward0": "sigmoid",
}

#: Models seen (by an explanation's forward) to return ``sigmoid(z)``: single-logit heads whose
#: output is a probability, which their numbers alone cannot tell from a logit.
_SIGMOID_MODELS: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def graph_output_kind(output: torch.Tensor) -> str | None:
    """What an output holds, read from the operation that made it (its ``grad_fn``):
    ``"log_probabilities"`` (``log_softmax``), ``"probabilities"`` (``softmax``), ``"sigmoid"``
    (``sigmoid``), or ``None`` (anything else, or no graph). Reshapes after the operation
    (``squeeze``, ``view``, ``flatten``) are looked through."""
    fn = getattr(output, "grad_fn", None)
    for _ in range(4):  # through the reshapes after it (squeeze, view, flatten)
        if fn is None:
            return None
        name = type(fn).__name__
        if name in _GRAPH_KINDS:
            return _GRAPH_KINDS[name]
        if not name.startswith(_SHAPE_OPS) or len(fn.next_functions) != 1:
            return None
        fn = fn.next_functions[0][0]
    return None


#: Operations that only reshape (what they are applied to is what the output holds).
_SHAPE_OPS = ("View", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Unsafe", "Alias")


def remember_sigmoid_output(model: torch.nn.Module) -> None:
    """Record that ``model`` returns sigmoid probabilities (see :func:`returns_sigmoid`)."""
    _SIGMOID_MODELS.add(model)


def returns_sigmoid(model: torch.nn.Module) -> bool:
    """Whether an explanation saw ``model`` return ``sigmoid(z)``: its ``(B, 1)`` output is then
    the probability ``p`` itself, read as ``[1 - p, p]`` (never ``sigmoid(p)``)."""
    return model in _SIGMOID_MODELS


def sigmoid_as_logits(p: torch.Tensor) -> torch.Tensor:
    """The logits ``z`` of sigmoid probabilities ``p`` (``logit(p)``, float32, clamped at
    ``1e-7``), so that everything reading logits reads the head's own probability."""
    return torch.logit(p.detach().float(), eps=1e-7)


def output_kind(logits: torch.Tensor) -> str:
    """What a classifier's output ``(B, K)`` holds, read from its numbers: ``"log_probabilities"``
    (every row's ``logsumexp`` is 0: a ``log_softmax`` head), ``"probabilities"`` (rows
    non-negative and summing to 1: a ``softmax`` head), ``"binary"`` (``K == 1``) or
    ``"logits"``. Rows with non-finite values are ignored; ``K == 1`` is never a softmax."""
    x = logits.detach().float()
    if x.dim() != 2 or x.shape[0] == 0:
        return "logits"
    if x.shape[1] == 1:
        return "binary"
    x = x[torch.isfinite(x).all(dim=1)]
    if x.shape[0] == 0:
        return "logits"
    tol = 1e-3
    if bool((x.logsumexp(dim=1).abs() < tol).all()) and bool((x <= tol).all()):
        return "log_probabilities"
    if bool((x >= 0).all()) and bool(((x.sum(dim=1) - 1).abs() < tol).all()):
        return "probabilities"
    return "logits"


class BinaryTarget:
    """Score of a single-logit binary head ``(B, 1)``: the logit ``z`` (the positive decision),
    or ``-z`` with ``negative=True`` (the negative decision: where the evidence against the
    positive class is). The same scores as class ids 1 and 0 on such a head (see
    :func:`class_logits`); usable with any gradient or activation method.

    Args:
        negative: Explain the negative decision (``-z``) instead of the positive one (``z``).

    Example:
        >>> BinaryTarget()(torch.tensor([[2.0], [-1.0]])), BinaryTarget(True)(torch.tensor([[2.0]]))
        (tensor([ 2., -1.]), tensor([-2.]))
    """

    def __init__(self, negative: bool = False) -> None:
        if not isinstance(negative, bool):
            raise TypeError(f"negative must be a bool, got {negative!r}")
        self.negative = negative

    def __call__(self, output: Any) -> torch.Tensor:
        if isinstance(output, torch.Tensor) and output.dim() == 1:
            output = output[:, None]  # a squeezed single logit (B,)
        logits = extract_logits(output)
        if logits.shape[1] != 1:
            raise ValueError(
                f"BinaryTarget explains a single-logit head (B, 1); this output has "
                f"{logits.shape[1]} classes: use class ids (target=int) instead."
            )
        z = logits[:, 0]
        return -z if self.negative else z


class ClassTarget:
    """Score of a class: the pre-softmax logit ``y^c`` per sample.

    On a single-logit binary head ``(B, 1)`` the classes are 0 (negative decision, score
    ``-z``) and 1 (positive decision, score ``z``): see :func:`class_logits`. ``None`` explains
    each sample's decision (1 where ``z > 0``, else 0).

    Args:
        class_ids: ``None`` for each sample's predicted class (argmax of the logits), an ``int``
            for the same class for every sample, or a sequence / 1-D tensor of per-sample ids.

    Attributes:
        last_class_ids: The class ids used by the last call, ``(B,)`` long tensor.
        last_logits: The logits the last call read, ``(B, num_classes)`` (detached).
        last_graph_kind: What the last output held by its ``grad_fn``
            (:func:`graph_output_kind`).
    """

    def __init__(
        self, class_ids: None | int | Sequence[int] | torch.Tensor | np.ndarray = None
    ) -> None:
        ids = normalize_target(class_ids)
        if callable(ids) and not isinstance(ids, torch.Tensor):
            raise TypeError(f"class_ids must be class ids, not a callable; got {ids!r}")
        self.class_ids: None | int | torch.Tensor = ids
        self.last_class_ids: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None
        self.last_graph_kind: str | None = None

    def resolve(self, logits: torch.Tensor) -> torch.Tensor:
        """Return the class ids ``(B,)`` for these logits, validated."""
        batch, num_classes = logits.shape
        ids = self.class_ids
        if ids is None:
            out = logits.detach().argmax(dim=1)
        elif isinstance(ids, int):
            out = torch.full((batch,), ids, dtype=torch.long, device=logits.device)
        else:
            out = ids.to(logits.device)
            if out.numel() != batch:
                raise ValueError(
                    f"target has {out.numel()} class ids but the batch has {batch} images; "
                    "give one id per image or a single int."
                )
        if out.numel() and (int(out.min()) < 0 or int(out.max()) >= num_classes):
            bad = int(out.min()) if int(out.min()) < 0 else int(out.max())
            raise ValueError(
                f"class id {bad} is out of range for a model with {num_classes} classes "
                f"(valid ids: 0..{num_classes - 1})."
            )
        return out

    def __call__(self, output: Any) -> torch.Tensor:
        raw = extract_logits(output)
        self.last_logits = raw.detach()
        self.last_graph_kind = graph_output_kind(raw)
        logits = class_logits(raw, sigmoid=self.last_graph_kind == "sigmoid")
        ids = self.resolve(logits)
        self.last_class_ids = ids
        return logits.gather(1, ids[:, None]).squeeze(1)


def as_target(target: TargetSpec) -> Callable[[Any], torch.Tensor]:
    """Turn a target specification into a callable ``output -> (B,)`` scores.

    Raises:
        TypeError, ValueError: As :func:`normalize_target`.
    """
    spec = normalize_target(target)
    if callable(spec) and not isinstance(spec, torch.Tensor):
        return spec
    return ClassTarget(spec)


# ----------------------------------------------------------------------------- segmentation

MaskSpec = Union[None, torch.Tensor]


def extract_segmentation_logits(output: Any) -> torch.Tensor:
    """Return the per-pixel (per-sample, per-voxel) class logits ``(B, K, *S)`` of a
    segmentation model's output: ``(B, K, L)`` (signals), ``(B, K, H, W)`` (images) or
    ``(B, K, D, H, W)`` (volumes).

    Accepts a tensor, a dict with an ``"out"`` key (torchvision's FCN / DeepLabV3 / LRASPP) or a
    ``"logits"`` key, and objects with a ``.logits`` tensor (Hugging Face).

    Raises:
        TypeError: For any other output, or logits that are not 3-, 4- or 5-D.
    """
    logits: Any = output
    if isinstance(output, dict):
        logits = output.get("out", output.get("logits"))
    elif not isinstance(output, torch.Tensor) and hasattr(output, "logits"):
        logits = output.logits
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (3, 4, 5):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(output).__name__
        raise TypeError(
            f"Expected segmentation logits (B, K, L), (B, K, H, W) or (B, K, D, H, W) (a "
            f"tensor, a dict with 'out', or an object with .logits), got {got}."
        )
    return logits


def segmentation_prediction(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class of every pixel ``(B, *S)`` (long) of logits ``(B, K, *S)``:
    the argmax, or for one-channel binary logits ``(B, 1, *S)`` ``1`` (the positive class)
    where the logit is ``> 0``, else ``0``."""
    if logits.shape[1] == 1:
        return (logits.detach()[:, 0] > 0).long()
    return logits.detach().argmax(1)


def _two_class(logits: torch.Tensor) -> torch.Tensor:
    """One-channel binary logits ``y`` as two-class logits ``(-y, y)``: class ``1`` (positive)
    is predicted where ``y > 0``, and its score is ``y``; class ``0`` (the negative decision)
    scores ``-y`` where ``y <= 0``. Other logits as they are."""
    return torch.cat([-logits, logits], 1) if logits.shape[1] == 1 else logits


def _region_masks(
    logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``(N, *S)`` float regions for rows ``ids`` (one class per row, rows = samples) of logits
    ``(N, K, *S)``; a per-sample mask ``(B, *S)`` of a whole batch is cut to ``rows``."""
    batch, spatial = logits.shape[0], tuple(logits.shape[2:])
    rank = len(spatial)
    if mask is None:
        return (logits.detach().argmax(1) == ids.view(-1, *([1] * rank))).to(logits.dtype)
    m = torch.as_tensor(mask, device=logits.device)
    if m.dim() == rank + 1 and rows is not None:
        m = m[rows[0] : rows[1]]
    if m.dim() == rank:
        m = m.expand(batch, *m.shape)
    if m.dim() != rank + 1 or m.shape[0] != batch:
        names = {1: "L", 2: "H, W", 3: "D, H, W"}[rank]
        raise ValueError(
            f"mask must be ({names}) or (B, {names}) with B = {batch} for logits "
            f"{tuple(logits.shape)}, got {tuple(m.shape)}"
        )
    m = m.to(logits.dtype)
    if tuple(m.shape[1:]) != spatial:  # e.g. an image-size mask for logits at 1/4 resolution
        m = torch.nn.functional.interpolate(m[:, None], size=spatial, mode="nearest")[:, 0]
    return m


class SegmentationTarget:
    """Score of a class over a region of a segmentation output: ``sum_{ij in M} y^c_ij``, the
    class's logits summed over the region ``M`` (as in Vinogradova et al., "Towards
    Interpretable Semantic Segmentation via Gradient-weighted Class Activation Mapping",
    AAAI 2020). Signals ``(B, K, L)`` and volumes ``(B, K, D, H, W)`` the same way: the sum is
    over the samples or voxels of the region.

    Args:
        class_ids: An ``int`` for every sample, or per-sample ids (sequence / 1-D tensor).
        mask: ``None``: the region is the predicted mask of the class (pixels whose argmax is
            the class; empty when the class is predicted nowhere, which gives an all-zero
            map). Else a given mask of the output's spatial shape, for every sample
            (``(H, W)``; ``(L,)``, ``(D, H, W)``) or per sample (``(B, H, W)``; ``(B, L)``,
            ``(B, D, H, W)``) (bool or weights; resized with nearest neighbours when the
            logits have another size). Which one a mask is follows from the logits' rank.

    One-channel binary logits ``(B, 1, *S)`` have two classes: ``1``, the positive class
    (its logit ``y`` summed over the pixels where ``y > 0``, or over ``mask``), and ``0``, the
    negative decision (``-y`` summed where ``y <= 0``).

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 2, 2); logits[0, 1, 0] = 5.0
        >>> SegmentationTarget(1)({"out": logits})
        tensor([10.])
        >>> volume = torch.zeros(1, 2, 2, 2, 2); volume[0, 1, 0] = 1.0  # (B, K, D, H, W)
        >>> SegmentationTarget(1, mask=torch.ones(2, 2, 2))(volume)  # 4 voxels of 1, 4 of 0
        tensor([4.])
    """

    def __init__(
        self, class_ids: int | Sequence[int] | torch.Tensor, mask: MaskSpec = None
    ) -> None:
        if class_ids is None or isinstance(class_ids, bool):
            raise TypeError(
                "SegmentationTarget needs class_ids: an int or one id per image (the class to "
                f"explain), got {class_ids!r}"
            )
        self.class_ids = class_ids
        self.mask = mask
        # rows of a per-sample mask that this target's samples are (set by batch_slice: a
        # mask's rank says whether it is per sample only next to the logits' rank)
        self._rows: tuple[int, int] | None = None

    def batch_slice(self, start: int, stop: int) -> SegmentationTarget:
        """The target of images ``start:stop`` of the batch: per-image ids sliced, an ``int``
        id kept; a per-image mask ``(B, *S)`` is cut to these rows when the logits say it is
        one (the engine calls it when ``max_batch`` splits the batch)."""
        ids: Any = ClassTarget(self.class_ids).class_ids  # an int or a 1-D tensor of ids
        if isinstance(ids, torch.Tensor):
            ids = ids[start:stop]
        part = SegmentationTarget(ids, self.mask)
        offset = self._rows[0] if self._rows is not None else 0
        part._rows = (offset + start, offset + stop)
        return part

    def __call__(self, output: Any) -> torch.Tensor:
        logits = _two_class(extract_segmentation_logits(output))
        ids = ClassTarget(self.class_ids).resolve(logits.flatten(2).mean(2))
        region = _region_masks(logits, ids, self.mask, self._rows)
        rank = logits.dim() - 2
        per_class = logits.gather(1, ids.view(-1, 1, *([1] * rank)).expand(
            -1, 1, *logits.shape[2:]))  # fmt: skip
        return (per_class[:, 0] * region).flatten(1).sum(1)


def segmentation_scores(
    class_ids: Sequence[int], mask: MaskSpec = None
) -> Callable[[Any], torch.Tensor]:
    """Scores of several classes per image, for one batched backward
    (:meth:`lightning_cam.engine.Explainer.explain_scores`): ``output -> (B * K,)``, ordered
    image-major (image 0's K classes first), each a :class:`SegmentationTarget` score."""
    ids = [int(c) for c in class_ids]

    def scores(output: Any) -> torch.Tensor:
        logits = extract_segmentation_logits(output)
        batch = logits.shape[0]
        rows = [
            SegmentationTarget(c, mask)(output) for c in ids
        ]  # each (B,)
        return torch.stack(rows, 1).reshape(batch * len(ids))

    return scores


# ----------------------------------------------------------------------------- Finer-CAM


class FinerTarget:
    """Finer-CAM's target (Zhang, Gu et al., CVPR 2025): a class *against its most similar
    classes*, ``S = sum_j p_j (y^t - alpha y^j) / sum_j p_j`` over the classes ``j`` whose
    scores are closest to ``y^t`` (similarity ranks 1, 2, 3; fewer on models with fewer
    classes), ``p = softmax(y)`` (see :func:`lightning_cam.methods.recent.finer_scores`).

    Usable with every gradient method (``lc.GradCAM(model, layer)(x, target=FinerTarget())``
    is the ``finercam`` method); the targets ``t`` are class ids as :class:`ClassTarget`'s.

    Args:
        class_ids: ``None`` (each sample's predicted class), an ``int`` or per-sample ids.
        alpha: Comparison strength (0: the class score alone).
        ranks: Similarity ranks of the comparison classes (rank 0 is the target itself).

    Example:
        >>> FinerTarget(0, ranks=(1,))(torch.tensor([[2.0, 1.0, -3.0]]))
        tensor([1.])
    """

    def __init__(
        self,
        class_ids: None | int | Sequence[int] | torch.Tensor | np.ndarray = None,
        alpha: float = 1.0,
        ranks: Sequence[int] = (1, 2, 3),
    ) -> None:
        self.classes = ClassTarget(class_ids)
        self.alpha = float(alpha)
        self.ranks = check_ranks(ranks)

    @property
    def last_class_ids(self) -> torch.Tensor | None:
        """The target classes of the last call ``(B,)``."""
        return self.classes.last_class_ids

    def __call__(self, output: Any) -> torch.Tensor:
        raw = extract_logits(output)
        self.classes.last_logits = raw.detach()
        logits = class_logits(raw)
        ids = self.classes.resolve(logits)
        self.classes.last_class_ids = ids
        return finer_scores(logits, ids, self.alpha, self.ranks)
