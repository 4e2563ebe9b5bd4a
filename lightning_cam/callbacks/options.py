"""The CAM callbacks' options: one place that validates them and holds the validated values.

:class:`CAMOptions` is built from the constructor arguments of
:class:`~lightning_cam.callbacks.CAMCallback` (the same values LightningCLI reads from YAML);
every check raises :class:`~lightning_cam._compat.MisconfigurationException` naming the argument,
the bad value and what is allowed.

Example:
    >>> opts = CAMOptions.from_arguments(layer="backbone", methods=["gradcam++"])
    >>> opts.layer, opts.methods, opts.kinds
    (['backbone'], ['gradcam++'], ['overlay', 'guided_gradcam'])
"""

from __future__ import annotations

import difflib
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_cam._compat import MisconfigurationException
from lightning_cam.engine.layouts import LAYOUTS, ReshapeTransform, check_reshape_transform
from lightning_cam.engine.target_spec import REGRESSION_FORMS, SPEC_FORMS, parse_target_spec
from lightning_cam.methods import METHODS, method_name
from lightning_cam.metrics import METRIC_NAMES
from lightning_cam.tools import viz

KINDS: tuple[str, ...] = ("heatmap", "overlay", "guided_backprop", "guided_gradcam")
#: The metric names (the one list: :data:`lightning_cam.metrics.METRIC_NAMES`).
METRICS: tuple[str, ...] = METRIC_NAMES
#: Spellings of the target "the model's prediction": ``"pred"`` (canonical) and ``"predicted"``.
PREDICTED_TARGETS: tuple[str, ...] = ("pred", "predicted")
#: The target of multi-label (sigmoid) heads: one map per true label of multi-hot labels.
MULTILABEL_TARGET = "labels"
#: Kinds that need a guided backward pass down to the input.
GUIDED_KINDS: tuple[str, ...] = ("guided_backprop", "guided_gradcam")


def misconf(arg: str, value: Any, allowed: str) -> MisconfigurationException:
    """``MisconfigurationException("{arg}={value!r} is invalid: expected {allowed}.")``."""
    return MisconfigurationException(f"{arg}={value!r} is invalid: expected {allowed}.")


def _did_you_mean(value: Any, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_int(value: Any, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= least


def _is_number(value: Any) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    )


def resolve_callable(arg: str, spec: Any) -> Callable[[Any], Any] | None:
    """A callable from a callable or a dotted path ``"package.module.function"`` (YAML).

    Raises:
        MisconfigurationException: When the path does not import or names no callable.
    """
    if spec is None or (callable(spec) and not isinstance(spec, str)):
        return spec
    if not isinstance(spec, str) or "." not in spec:
        raise misconf(arg, spec, "a callable or its dotted path 'package.module.function'")
    module_name, _, attr = spec.rpartition(".")
    try:
        found: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise misconf(
            arg, spec, f"an importable dotted path 'package.module.function' ({err})"
        ) from None
    if not callable(found):
        raise misconf(arg, spec, f"a callable; {spec} is a {type(found).__name__}")
    return found  # type: ignore[no-any-return]


def _reshape_transform(spec: Any) -> ReshapeTransform:
    """A layout name (``"auto"``, ``"tokens"``, ``"channels_last"``, ``"channels_first"``), a
    callable, or a callable's dotted path (YAML)."""
    if isinstance(spec, str) and "." in spec:
        found = resolve_callable("reshape_transform", spec)
        assert found is not None
        return found
    try:
        return check_reshape_transform(spec)
    except (TypeError, ValueError):
        raise misconf(
            "reshape_transform", spec,
            f"one of {', '.join(LAYOUTS)}, a callable output -> (B, C, h, w) or its dotted path",
        ) from None


@dataclass
class CAMOptions:
    """The validated options of a CAM callback (see :class:`CAMCallback` for their meaning).

    ``layer`` is a list of names or ``None``; ``kinds`` the picture kinds switched on by the
    ``log_*`` flags, in :data:`KINDS` order; ``methods`` canonical names from
    :data:`lightning_cam.methods.METHODS`; ``output_transform`` the resolved callable and
    ``output_transform_spec`` what the user gave (a dotted path stays a string).
    """

    layer: list[str] | None
    num_samples: int
    every_n_epochs: int
    target: str | int
    kinds: list[str]
    mean: list[float] | None
    std: list[float] | None
    class_names: list[str] | None
    colormap: str
    alpha: float
    image_key: str
    label_key: str
    mask_key: str | None
    box_key: str | None
    dataloader_idx: int
    metrics: list[str]
    metrics_num_samples: int
    tile_size: int
    methods: list[str]
    pointing_game_tolerance: float | None
    detection_top_k: int
    detection_score_threshold: float
    output_transform: Callable[[Any], Any] | None
    output_transform_spec: Any
    reshape_transform: ReshapeTransform = "auto"
    ignore_index: list[int] = field(default_factory=lambda: [255])
    guided_gradcam_auto: bool = False
    requested_kinds: list[str] | None = None
    third_axis: str = "depth"

    def for_model(self, pl_module: Any) -> str | None:
        """Settle the kinds for ``pl_module``: with ``log_guided_gradcam=None`` (the default),
        guided Grad-CAM is left out for models whose guided backprop would be mostly the plain
        gradient (:func:`lightning_cam.engine.guided.guided_support`). Returns that reason, else
        ``None``."""
        from lightning_cam.engine.guided import guided_support

        requested = self.requested_kinds if self.requested_kinds is not None else self.kinds
        reason = guided_support(pl_module) if self.guided_gradcam_auto else None
        self.kinds = [k for k in requested if not (reason and k == "guided_gradcam")]
        return reason

    @property
    def guided(self) -> bool:
        """Whether a guided backward pass is needed (guided backprop or guided Grad-CAM)."""
        return any(k in GUIDED_KINDS for k in self.kinds)

    @classmethod
    def from_arguments(
        cls, *, default_methods: Sequence[str] = ("gradcam",), **arguments: Any
    ) -> CAMOptions:
        """Validate the constructor arguments of a CAM callback, given by name.

        ``arguments`` are the keyword arguments of :class:`~lightning_cam.callbacks.CAMCallback`
        (its signature is the one place they and their defaults are written); missing ones take
        those defaults, unknown names raise ``TypeError``.

        Raises:
            MisconfigurationException: For any bad value, naming the argument, the value and
                what is allowed.
        """
        a = {**callback_defaults(), **arguments}
        unknown = sorted(set(a) - set(callback_defaults()))
        if unknown:
            raise TypeError(f"unknown CAM callback argument(s): {', '.join(unknown)}")
        fields: dict[str, Any] = {}
        fields.update(_check_schedule(a))
        fields.update(_check_display(a))
        fields.update(_check_keys(a))
        fields.update(_check_metric_options(a))
        fields.update(_check_task_options(a))
        fields["methods"] = check_methods(a["methods"], default_methods)
        check_target_metrics(fields["target"], fields["metrics"])
        if not fields["kinds"] and not fields["metrics"]:
            raise MisconfigurationException(
                "Nothing to log: every log_* flag is False and metrics is empty; "
                "enable at least one of log_heatmap, log_overlay, log_guided_backprop, "
                "log_guided_gradcam or a metric."
            )
        return cls(**fields)


#: The callback whose constructor signature holds the arguments (:func:`register_signature`).
_SIGNATURE: list[Callable[..., Any]] = []


def register_signature(init: Callable[..., Any]) -> None:
    """Record the constructor whose signature is the one place the callbacks' arguments and
    their defaults are written (``CAMCallback.__init__``, registered by
    :mod:`lightning_cam.callbacks.base`, which imports this module, never the reverse)."""
    _SIGNATURE[:] = [init]


def callback_defaults() -> dict[str, Any]:
    """The keyword arguments of :class:`~lightning_cam.callbacks.CAMCallback` and their
    defaults, read from its signature (the one place they are written)."""
    import inspect

    if not _SIGNATURE:  # the package's __init__ imports base, which registers it
        raise RuntimeError("lightning_cam.callbacks.base has not registered CAMCallback yet")
    params = list(inspect.signature(_SIGNATURE[0]).parameters.values())[1:]
    return {p.name: p.default for p in params}


# -- checks shared by the callbacks and CAMWriter ----------------------------------------------


def check_int(arg: str, value: Any, least: int, *, optional: bool = False) -> Any:
    """``value`` when it is an int ``>= least`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return None
    if not _is_int(value, least):
        raise misconf(arg, value, f"an int >= {least}" + (" or None" if optional else ""))
    return value


def check_layer(layer: Any) -> list[str] | None:
    """A list of dotted layer names from a name, a list of names or ``None``."""
    if layer is not None and not isinstance(layer, str):
        if not (isinstance(layer, Sequence) and layer and all(isinstance(x, str) for x in layer)):
            raise misconf("layer", layer, "a dotted layer name, a list of names, or None")
    return [layer] if isinstance(layer, str) else (list(layer) if layer else None)


def check_target(target: Any, multilabel: bool = True) -> str | int:
    """A target spec (:func:`lightning_cam.engine.target_spec.parse_target_spec`) in its
    canonical spelling: ``"pred"`` (also spelt ``"predicted"``), ``"label"``, ``"labels"``
    (:data:`MULTILABEL_TARGET`; only with ``multilabel``), a class id, ``"binary"`` /
    ``"binary:negative"`` or ``"regression:<index>[:increase|decrease]"``."""
    try:
        choice = parse_target_spec(target)
    except ValueError:
        regression = isinstance(target, str) and target.strip().startswith("regression")
        raise misconf("target", target, REGRESSION_FORMS if regression else SPEC_FORMS) from None
    if choice.kind == "labels" and not multilabel:
        raise misconf(
            "target", target,
            "'pred', 'label', a class id (int >= 0), 'binary' or 'regression:<index>': one map "
            "per image here; a multi-label head's labels are explained by the callbacks' "
            "target='labels' (CAMCallback(target='labels')) or by "
            "lightning_cam.explain_multilabel",
        )  # fmt: skip
    return choice.spec


def check_no_target(target: Any, task: str, explained: str) -> None:
    """Refuse a ``target`` other than the default ``"pred"`` on a task that chooses its own
    scores (detection, segmentation): silently ignoring it would log maps of another target
    than the one asked for."""
    if target != "pred":
        raise misconf(
            "target", target,
            f"'pred' (the default) for a {task}: it explains {explained}, and target= picks a "
            "classifier's class, label(s) or output",
        )  # fmt: skip


def check_target_metrics(target: Any, metrics: Sequence[str]) -> None:
    """With ``target="labels"`` (a multi-label head), refuse the model metrics that read softmax
    probabilities: they would score a label against the other labels, not its sigmoid; with a
    ``binary`` / ``regression`` target, every model metric (they score a class)."""
    from lightning_cam.metrics import METRICS as SPECS

    if not parse_target_spec(target).per_class and target != MULTILABEL_TARGET:
        model = [m for m in metrics if SPECS[m].needs == "model"]
        if model:
            usable = [m for m in METRIC_NAMES if SPECS[m].needs != "model"]
            raise misconf(
                "metrics", list(metrics),
                f"with target={target!r} metrics that do not read a class's score: {model} "
                f"score a class of a classifier; use {', '.join(usable)}, or no metrics",
            )  # fmt: skip
    if target != MULTILABEL_TARGET:
        return
    softmax = [m for m in metrics if SPECS[m].score == "probability"]
    if softmax:
        usable = [m for m in METRIC_NAMES if SPECS[m].score != "probability"]
        raise misconf(
            "metrics", list(metrics),
            f"with target='labels' (a multi-label head) metrics that do not read softmax "
            f"probabilities: {softmax} compare a label with the other labels; use "
            f"{', '.join(usable)}",
        )  # fmt: skip


def check_methods(methods: Any, default: Sequence[str] = ("gradcam",)) -> list[str]:
    """Canonical method names (no repeats) from a non-empty list; ``None``: ``default``."""
    if methods is not None and (isinstance(methods, str) or not methods):
        raise misconf("methods", methods, f"a non-empty list of names from {sorted(METHODS)}")
    try:
        names = [method_name(m) for m in (methods or default)]
    except (TypeError, ValueError):
        bad = next((m for m in (methods or default) if not _known_method(m)), methods)
        raise misconf(
            "methods", methods, f"names from {sorted(METHODS)}{_did_you_mean(bad, list(METHODS))}"
        ) from None
    return list(dict.fromkeys(names))


def _known_method(name: Any) -> bool:
    try:
        method_name(name)
    except (TypeError, ValueError):
        return False
    return True


def check_metrics(metrics: Any) -> list[str]:
    """Metric names (no repeats) of :data:`lightning_cam.metrics.METRIC_NAMES`."""
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise misconf("metrics", metrics, f"a list of names from {list(METRIC_NAMES)}")
    for m in metrics:
        if m not in METRIC_NAMES:
            raise misconf(
                "metrics", metrics,
                f"names from {list(METRIC_NAMES)}{_did_you_mean(m, METRIC_NAMES)}",
            )  # fmt: skip
    return list(dict.fromkeys(metrics))


def check_tolerance(tolerance: Any) -> float | None:
    """The pointing game's hit radius: a number of pixels ``>= 0`` or ``None``."""
    if tolerance is None:
        return None
    if not _is_number(tolerance) or tolerance < 0:
        raise misconf("pointing_game_tolerance", tolerance, "a number of pixels >= 0 or None")
    return float(tolerance)


def check_mean_std(mean: Any, std: Any) -> tuple[list[float] | None, list[float] | None]:
    """Both or neither; as many values each; positive stds."""
    if (mean is None) != (std is None):
        raise MisconfigurationException(
            f"mean={mean!r} and std={std!r}: give both (to undo the normalisation) or neither."
        )
    if mean is None or std is None:
        return None, None
    if len(mean) != len(std) or not mean:
        raise misconf("std", std, f"as many values as mean ({len(mean)})")
    if any(not _is_number(s) or s <= 0 for s in std):
        raise misconf("std", std, "positive values")
    return [float(v) for v in mean], [float(v) for v in std]


def check_third_axis(value: Any) -> str:
    """``third_axis``: what the first of three spatial axes is, ``"depth"`` (volumes
    ``(B, C, D, H, W)``: orthogonal slices and a montage) or ``"time"`` (videos
    ``(B, C, T, H, W)``: a frame strip and an animation)."""
    if value not in ("depth", "time"):
        raise misconf("third_axis", value, "'depth' (volumes) or 'time' (videos)")
    return str(value)


def check_batch_keys(**keys: Any) -> None:
    """``image_key`` / ``label_key`` are str; ``mask_key``, ``box_key``, ``id_key`` str or
    ``None``."""
    for arg, key in keys.items():
        optional = arg not in ("image_key", "label_key")
        if not isinstance(key, str) and not (optional and key is None):
            raise misconf(
                arg, key, "a str (a key of dict batches)" + (" or None" if optional else "")
            )


# -- the callbacks' groups ----------------------------------------------------------------------


def check_detection_score_threshold(threshold: Any) -> float:
    """Detectors: the least score of an explained detection, a number in [0, 1]."""
    if not _is_number(threshold) or not 0 <= threshold <= 1:
        raise misconf("detection_score_threshold", threshold, "a number in [0, 1]")
    return float(threshold)


def check_detection_top_k(top_k: Any) -> int:
    """Detectors: the most detections explained per image, an int >= 1."""
    return int(check_int("detection_top_k", top_k, 1))


def _check_schedule(a: dict[str, Any]) -> dict[str, Any]:
    """Layer, probe set, schedule and target."""
    return {
        "layer": check_layer(a["layer"]),
        "num_samples": check_int("num_samples", a["num_samples"], 1),
        "every_n_epochs": check_int("every_n_epochs", a["every_n_epochs"], 1),
        "target": check_target(a["target"]),
        "dataloader_idx": check_int("dataloader_idx", a["dataloader_idx"], 0),
    }


def _check_display(a: dict[str, Any]) -> dict[str, Any]:
    """Pictures: kinds, normalisation, names, colours, tiles."""
    mean, std = check_mean_std(a["mean"], a["std"])
    colormap, alpha = a["colormap"], a["alpha"]
    if colormap not in viz.COLORMAPS:
        raise misconf(
            "colormap",
            colormap,
            f"one of {sorted(viz.COLORMAPS)}{_did_you_mean(colormap, list(viz.COLORMAPS))}",
        )
    if not _is_number(alpha) or not 0 <= alpha <= 1:
        raise misconf("alpha", alpha, "a number in [0, 1]")
    # log_guided_gradcam=None: guided Grad-CAM unless the model is one guided backprop says
    # little about (attention models; decided at setup, see :meth:`CAMOptions.for_model`)
    flags = (
        a["log_heatmap"], a["log_overlay"], a["log_guided_backprop"],
        a["log_guided_gradcam"] is not False,
    )  # fmt: skip
    kinds = [k for k, on in zip(KINDS, flags, strict=True) if on]
    names = a["class_names"]
    return {
        "kinds": kinds,
        "requested_kinds": list(kinds),
        "guided_gradcam_auto": a["log_guided_gradcam"] is None,
        "mean": mean,
        "std": std,
        "class_names": [str(c) for c in names] if names is not None else None,
        "colormap": colormap,
        "alpha": float(alpha),
        "tile_size": check_int("tile_size", a["tile_size"], 16),
        "third_axis": check_third_axis(a.get("third_axis", "depth")),
    }


def _check_keys(a: dict[str, Any]) -> dict[str, Any]:
    """Keys of dict batches."""
    keys = {k: a[k] for k in ("image_key", "label_key", "mask_key", "box_key")}
    check_batch_keys(**keys)
    return keys


def _check_metric_options(a: dict[str, Any]) -> dict[str, Any]:
    """Metrics, their sample count and the pointing game's tolerance."""
    metrics = ["pointing_game", "energy_pointing_game"] if a["metrics"] is None else a["metrics"]
    num = check_int("metrics_num_samples", a["metrics_num_samples"], 1, optional=True)
    return {
        "metrics": check_metrics(metrics),
        "metrics_num_samples": max(num or a["num_samples"], a["num_samples"]),
        "pointing_game_tolerance": check_tolerance(a["pointing_game_tolerance"]),
    }


def _check_task_options(a: dict[str, Any]) -> dict[str, Any]:
    """Detection, segmentation and model-output options."""
    threshold = check_detection_score_threshold(a["detection_score_threshold"])
    ignore = a["ignore_index"]
    void = [] if ignore is None else (
        [ignore] if not isinstance(ignore, (list, tuple)) else list(ignore)
    )  # fmt: skip
    if not all(_is_int(v, 0) for v in void):
        raise misconf(
            "ignore_index", ignore,
            "a label id >= 0 of void mask pixels (e.g. 255, 250), a list of them, or None",
        )  # fmt: skip
    return {
        "detection_top_k": check_detection_top_k(a["detection_top_k"]),
        "detection_score_threshold": threshold,
        "ignore_index": sorted(set(void)),
        "output_transform": resolve_callable("output_transform", a["output_transform"]),
        "output_transform_spec": a["output_transform"],
        "reshape_transform": _reshape_transform(a["reshape_transform"]),
    }
