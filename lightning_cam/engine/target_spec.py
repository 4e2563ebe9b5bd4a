"""Target specs: one vocabulary of *what is explained* for the CLI (``--target``), the
callbacks' and :class:`~lightning_cam.predict.CAMWriter`'s ``target=`` argument.

Spellings (:func:`parse_target_spec`):

* ``"pred"`` (the default; also ``"predicted"`` and ``None``): each image's predicted class;
* ``"label"``: each image's ground-truth class id from the batch;
* an int class id ``>= 0`` (also its digits, ``"3"``, as a shell or YAML gives it);
* ``"labels"``: every true label of a multi-label (sigmoid) head (callbacks only);
* ``"binary"``: the positive logit ``z`` of a single-logit head ``(B, 1)``
  (:class:`~lightning_cam.engine.targets.BinaryTarget`); ``"binary:negative"``: ``-z``;
* ``"regression:<index>[:output|increase|decrease]"``: output ``index`` of a regression head
  ``(B, D)`` (:class:`~lightning_cam.engine.target_kinds.RegressionTarget`, with its direction
  names; ``"regression"`` alone is index 0).

Example:
    >>> parse_target_spec("regression:1:decrease").spec
    'regression:1:decrease'
    >>> parse_target_spec("7").spec, parse_target_spec("predicted").spec
    (7, 'pred')
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import torch

from lightning_cam.engine.target_kinds import Direction, RegressionTarget
from lightning_cam.engine.targets import BinaryTarget, extract_logits, graph_output_kind

__all__ = [
    "REGRESSION_FORMS", "SPEC_FORMS", "SpecScore", "TargetChoice", "output_width",
    "parse_target_spec", "sigmoid_refusal",
]

#: The spellings a target spec may take, for messages.
SPEC_FORMS = (
    "'pred', 'label', 'labels' (multi-label heads), 'binary' / 'binary:negative' (a "
    "single-logit head (B, 1)), 'regression:<index>[:increase|decrease]', or a class id "
    "(int >= 0)"
)
#: The spellings of a regression spec, for messages.
REGRESSION_FORMS = (
    "'regression:<index>' or 'regression:<index>:<direction>' with an index >= 0 and a "
    "direction among output, increase, decrease (e.g. 'regression:1:decrease')"
)
_DIRECTIONS: tuple[Direction, ...] = ("output", "increase", "decrease")


@dataclass(frozen=True)
class TargetChoice:
    """A parsed target spec (:func:`parse_target_spec`).

    Attributes:
        kind: ``"pred"``, ``"label"``, ``"class"``, ``"labels"``, ``"binary"`` or
            ``"regression"``.
        class_id: The class id (``kind == "class"``).
        negative: ``binary:negative`` (the score ``-z``).
        index: The regression output explained.
        direction: The regression direction (:class:`RegressionTarget`'s names).
    """

    kind: str
    class_id: int | None = None
    negative: bool = False
    index: int = 0
    direction: Direction = "output"

    @property
    def spec(self) -> str | int:
        """The canonical spelling: ``"pred"``, ``"label"``, ``"labels"``, the int class id,
        ``"binary"``, ``"binary:negative"``, ``"regression:<i>"`` or ``"regression:<i>:<dir>"``."""
        if self.kind == "class":
            assert self.class_id is not None
            return self.class_id
        if self.kind == "binary":
            return "binary:negative" if self.negative else "binary"
        if self.kind == "regression":
            tail = "" if self.direction == "output" else f":{self.direction}"
            return f"regression:{self.index}{tail}"
        return self.kind

    @property
    def per_class(self) -> bool:
        """Whether the target picks a class of a classifier (``pred``, ``label``, an id)."""
        return self.kind in ("pred", "label", "class")

    def score_target(self) -> BinaryTarget | RegressionTarget:
        """The engine's target of a ``binary`` / ``regression`` spec.

        Raises:
            ValueError: For class and multi-label specs (they are built from class ids).
        """
        if self.kind == "binary":
            return BinaryTarget(negative=self.negative)
        if self.kind == "regression":
            return RegressionTarget(self.index, self.direction)
        raise ValueError(f"target {self.spec!r} is a class target, not a score target")

    def explained_value(self, scores: torch.Tensor) -> torch.Tensor:
        """What the differentiated ``scores`` ``(B,)`` mean to a reader, float32 ``(B,)``: for
        ``binary`` the sigmoid probability of the positive class (also for
        ``binary:negative``, whose score is ``-z``); for ``regression`` the output value
        (``decrease`` differentiates ``-y``); for class targets the scores as they are."""
        s = scores.detach().float()
        if self.kind == "binary":
            return torch.sigmoid(-s if self.negative else s)
        if self.kind == "regression" and self.direction == "decrease":
            return -s
        return s

    def caption(self, score: float) -> str:
        """``"binary p=0.73"`` / ``"regression:1 y=-0.20"``: the spec and the explained value
        of one image (its differentiated ``score``)."""
        value = float(self.explained_value(torch.tensor([score]))[0])
        name = "p" if self.kind == "binary" else "y" if self.kind == "regression" else "score"
        return f"{self.spec} {name}={value:.2f}"

    def refusal(self, width: int | None) -> str | None:
        """Why this target cannot explain an output of ``width`` values per image (``None``:
        one score per image, ``(B,)``), with the fix; ``None`` when it can. Class ids out of
        range are the caller's to word (it knows the class names)."""
        k = 1 if width is None else width
        if self.kind == "binary" and k != 1:
            return (
                f"target='binary' explains a single-logit head (B, 1), but the output has {k} "
                "values per image: use 'pred', a class id, or 'regression:<index>' for a "
                "regression head"
            )
        if self.kind == "regression" and self.index >= k:
            return (
                f"target={self.spec!r}: index {self.index} is out of range for an output of {k} "
                f"value(s) per image: use an index in 0..{k - 1}"
            )
        if self.kind == "class" and width == 1:
            return (
                f"target={self.spec!r} is a class id, but the output is a single-logit binary "
                "head (B, 1): use target='binary' (the logit z, evidence for the positive "
                "class) or 'binary:negative' (-z, evidence against it)"
            )
        return None


def output_width(output: Any) -> int | None:
    """The values per image of a model output: ``K`` of ``(B, K)`` logits (a tensor, a
    ``.logits`` object, a ``"logits"`` dict), ``None`` for one score per image ``(B,)``."""
    if isinstance(output, torch.Tensor) and output.dim() == 1:
        return None
    return int(extract_logits(output).shape[1])


class SpecScore:
    """The score target of a ``binary`` / ``regression`` spec that first checks the output
    (:meth:`TargetChoice.refusal`): a head the spec cannot serve is refused with the spec's
    reason and fix, never explained as something else.

    Example:
        >>> SpecScore(parse_target_spec("regression:1:decrease"))(torch.tensor([[1.0, 2.0]]))
        tensor([-2.])
    """

    def __init__(self, choice: TargetChoice) -> None:
        self.choice = choice
        self.target = choice.score_target()

    def batch_slice(self, start: int, stop: int) -> SpecScore:
        return self  # one index for every image

    def __call__(self, output: Any) -> torch.Tensor:
        why = self.choice.refusal(output_width(output)) or sigmoid_refusal(self.choice, output)
        if why is not None:
            raise ValueError(why)
        return self.target(output)


def sigmoid_refusal(choice: TargetChoice, output: Any) -> str | None:
    """Why a ``binary`` spec cannot explain ``output`` when the head ends in a sigmoid (its
    ``grad_fn``, :func:`~lightning_cam.engine.targets.graph_output_kind`): the output is the
    probability ``p``, not the logit ``z`` the spec explains (and whose ``sigmoid`` it shows)."""
    if choice.kind != "binary" or not isinstance(output, torch.Tensor):
        return None
    if graph_output_kind(output) != "sigmoid":
        return None
    return (
        "target='binary' explains the logit z of a single-logit head, but this head returns "
        "sigmoid(z), a probability: return the logit z from forward (apply the sigmoid in the "
        "loss, BCEWithLogitsLoss), or use target='pred'"
    )


def _int_of(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _parse_regression(text: str, given: Any) -> TargetChoice:
    parts = text.split(":")
    bad = ValueError(f"target {given!r} is not a target spec: expected {REGRESSION_FORMS}")
    if len(parts) > 3:
        raise bad
    index = _int_of(parts[1]) if len(parts) > 1 else 0
    direction = parts[2] if len(parts) > 2 else "output"
    if index is None or direction not in _DIRECTIONS:
        raise bad
    return TargetChoice("regression", index=index, direction=direction)  # type: ignore[arg-type]


def parse_target_spec(spec: Any) -> TargetChoice:
    """Parse a target spec (see the module's docstring); a :class:`BinaryTarget` or a
    :class:`RegressionTarget` with one index for every image reads as its spec too.

    Raises:
        ValueError: Anything else, naming the value and the spellings allowed.

    Example:
        >>> parse_target_spec("binary:negative")
        TargetChoice(kind='binary', class_id=None, negative=True, index=0, direction='output')
    """
    if spec is None:
        return TargetChoice("pred")
    if isinstance(spec, BinaryTarget):
        return TargetChoice("binary", negative=spec.negative)
    if isinstance(spec, RegressionTarget) and isinstance(spec.index, int):
        return TargetChoice("regression", index=spec.index, direction=spec.direction)
    class_id = _int_of(spec)
    if class_id is not None and class_id >= 0:
        return TargetChoice("class", class_id=class_id)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("pred", "predicted"):
            return TargetChoice("pred")
        if text in ("label", "labels"):
            return TargetChoice(text)
        if text in ("binary", "binary:positive", "binary:negative"):
            return TargetChoice("binary", negative=text == "binary:negative")
        if text == "regression" or text.startswith("regression:"):
            return _parse_regression(text, spec)
    raise ValueError(f"target {spec!r} is not a target spec: expected {SPEC_FORMS}")
