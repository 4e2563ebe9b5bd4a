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
from lightning_cam.methods import METHODS, method_name
from lightning_cam.tools import viz

KINDS: tuple[str, ...] = ("heatmap", "overlay", "guided_backprop", "guided_gradcam")
METRICS: tuple[str, ...] = (
    "pointing_game",
    "energy_pointing_game",
    "average_drop",
    "increase_in_confidence",
    "deletion_auc",
    "insertion_auc",
)
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
        cls,
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
        output_transform: Any = None,
        default_methods: Sequence[str] = ("gradcam",),
        reshape_transform: Any = "auto",
        ignore_index: int | list[int] | None = 255,
    ) -> CAMOptions:
        """Validate the constructor arguments of a CAM callback.

        Raises:
            MisconfigurationException: For any bad value, naming the argument, the value and
                what is allowed.
        """
        if layer is not None and not isinstance(layer, str):
            if not (
                isinstance(layer, Sequence) and layer and all(isinstance(x, str) for x in layer)
            ):
                raise misconf("layer", layer, "a dotted layer name, a list of names, or None")
        for arg, val in (("num_samples", num_samples), ("every_n_epochs", every_n_epochs)):
            if not _is_int(val, 1):
                raise misconf(arg, val, "an int >= 1")
        if isinstance(target, bool) or not (
            target in ("pred", "label") or _is_int(target, 0)
        ):
            raise misconf("target", target, "'pred', 'label' or a class id (int >= 0)")
        if (mean is None) != (std is None):
            raise MisconfigurationException(
                f"mean={mean!r} and std={std!r}: give both (to undo the normalisation) or neither."
            )
        if mean is not None and std is not None:
            if len(mean) != len(std) or not mean:
                raise misconf("std", std, f"as many values as mean ({len(mean)})")
            if any(not _is_number(s) or s <= 0 for s in std):
                raise misconf("std", std, "positive values")
        if colormap not in viz.COLORMAPS:
            raise misconf(
                "colormap",
                colormap,
                f"one of {sorted(viz.COLORMAPS)}{_did_you_mean(colormap, list(viz.COLORMAPS))}",
            )
        if not _is_number(alpha) or not 0 <= alpha <= 1:
            raise misconf("alpha", alpha, "a number in [0, 1]")
        for arg, key in (("image_key", image_key), ("label_key", label_key)):
            if not isinstance(key, str):
                raise misconf(arg, key, "a str (a key of dict batches)")
        for arg, opt in (("mask_key", mask_key), ("box_key", box_key)):
            if opt is not None and not isinstance(opt, str):
                raise misconf(arg, opt, "a str (a key of dict batches) or None")
        if not _is_int(dataloader_idx, 0):
            raise misconf("dataloader_idx", dataloader_idx, "an int >= 0")
        if metrics is None:
            metrics = ["pointing_game", "energy_pointing_game"]
        if isinstance(metrics, str):
            raise misconf("metrics", metrics, f"a list of names from {list(METRICS)}")
        for m in metrics:
            if m not in METRICS:
                raise misconf(
                    "metrics", metrics, f"names from {list(METRICS)}{_did_you_mean(m, METRICS)}"
                )
        if metrics_num_samples is not None and not _is_int(metrics_num_samples, 1):
            raise misconf("metrics_num_samples", metrics_num_samples, "an int >= 1 or None")
        if not _is_int(tile_size, 16):
            raise misconf("tile_size", tile_size, "an int >= 16")
        if pointing_game_tolerance is not None and (
            not _is_number(pointing_game_tolerance) or pointing_game_tolerance < 0
        ):
            raise misconf(
                "pointing_game_tolerance",
                pointing_game_tolerance,
                "a number of pixels >= 0 or None",
            )
        if not _is_int(detection_top_k, 1):
            raise misconf("detection_top_k", detection_top_k, "an int >= 1")
        if not _is_number(detection_score_threshold) or not 0 <= detection_score_threshold <= 1:
            raise misconf(
                "detection_score_threshold", detection_score_threshold, "a number in [0, 1]"
            )
        void = [] if ignore_index is None else (
            [ignore_index] if not isinstance(ignore_index, (list, tuple)) else list(ignore_index)
        )
        if not all(_is_int(v, 0) for v in void):
            raise misconf(
                "ignore_index", ignore_index,
                "a label id >= 0 of void mask pixels (e.g. 255, 250), a list of them, or None",
            )
        if methods is not None and (isinstance(methods, str) or not methods):
            raise misconf("methods", methods, f"a non-empty list of names from {sorted(METHODS)}")
        try:
            names = [method_name(m) for m in (methods or default_methods)]
        except (TypeError, ValueError):
            raise misconf("methods", methods, f"names from {sorted(METHODS)}") from None
        # None: guided Grad-CAM unless the model is one guided backprop says little about
        # (attention models; decided at setup, see :meth:`for_model`)
        flags = (log_heatmap, log_overlay, log_guided_backprop, log_guided_gradcam is not False)
        kinds = [k for k, on in zip(KINDS, flags, strict=True) if on]
        if not kinds and not metrics:
            raise MisconfigurationException(
                "Nothing to log: every log_* flag is False and metrics is empty; "
                "enable at least one of log_heatmap, log_overlay, log_guided_backprop, "
                "log_guided_gradcam or a metric."
            )
        return cls(
            layer=[layer] if isinstance(layer, str) else (list(layer) if layer else None),
            num_samples=num_samples,
            every_n_epochs=every_n_epochs,
            target=target,
            kinds=kinds,
            mean=[float(v) for v in mean] if mean is not None else None,
            std=[float(v) for v in std] if std is not None else None,
            class_names=[str(c) for c in class_names] if class_names is not None else None,
            colormap=colormap,
            alpha=float(alpha),
            image_key=image_key,
            label_key=label_key,
            mask_key=mask_key,
            box_key=box_key,
            dataloader_idx=dataloader_idx,
            metrics=list(metrics),
            metrics_num_samples=max(metrics_num_samples or num_samples, num_samples),
            tile_size=tile_size,
            methods=list(dict.fromkeys(names)),
            pointing_game_tolerance=(
                float(pointing_game_tolerance) if pointing_game_tolerance is not None else None
            ),
            detection_top_k=detection_top_k,
            detection_score_threshold=float(detection_score_threshold),
            output_transform=resolve_callable("output_transform", output_transform),
            output_transform_spec=output_transform,
            reshape_transform=_reshape_transform(reshape_transform),
            ignore_index=sorted(set(void)),
            guided_gradcam_auto=log_guided_gradcam is None,
            requested_kinds=list(kinds),
        )
