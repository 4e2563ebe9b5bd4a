"""Task strategies: what a CAM callback captures, computes and shows for one kind of model.

The callback (:class:`~lightning_cam.callbacks.CAMCallback`) only schedules; a task strategy
does the rest for its kind of model:

* :meth:`TaskStrategy.applies` says whether it serves a LightningModule (detectors, ...) and
  :meth:`~TaskStrategy.serves` whether it serves the callback's options (the first class in
  :data:`lightning_cam.callbacks.tasks.TASKS` that does both is used);
* :meth:`~TaskStrategy.setup` validates the options against the module;
* :meth:`~TaskStrategy.capture` pulls per-sample probes out of a batch and
  :meth:`~TaskStrategy.assemble` fixes the probe set;
* :meth:`~TaskStrategy.check` is the probe forward at the first batch: it validates the output,
  the layers and the batch layout, so a misconfiguration is refused before training time is
  spent;
* :meth:`~TaskStrategy.plan` / :meth:`~TaskStrategy.compute` give the shared computation (the
  union of the methods and layers of the callbacks that share it);
* :meth:`~TaskStrategy.present` turns a result into pictures and scalars.

A new task (segmentation, say) is one subclass added to ``TASKS``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch

from lightning_cam._compat import MisconfigurationException

if TYPE_CHECKING:
    from lightning_cam.callbacks.options import CAMOptions
    from lightning_cam.engine import Explanation

class CallbackView(Protocol):
    """What a task strategy reads of the callback it serves
    (:class:`lightning_cam.callbacks.CAMCallback`; a protocol, so that the strategies never
    import the hook class, which imports them)."""

    options: CAMOptions
    task: TaskStrategy

    @property
    def probe_token(self) -> str | None: ...

    def extract(self, batch: Any) -> dict[str, torch.Tensor | None]: ...

    def extract_detection(self, batch: Any) -> Any: ...


#: ``explain(images, methods, guided) -> Explanation``: a task's probe explanation.
ProbeExplain = Callable[[torch.Tensor, Sequence[str], bool], "Explanation"]


class TaskStrategy:
    """Base class of the task strategies (see the module docstring).

    Args:
        callback: The callback served; its ``options`` hold the validated arguments.

    Attributes:
        name: Short name, part of the shared computation's keys.
        state_name: Key of the probe set in the callback's ``state_dict``.
    """

    name: ClassVar[str] = "task"
    state_name: ClassVar[str] = "probes"

    def __init__(self, callback: CallbackView) -> None:
        self.callback = callback
        self.options = callback.options

    @classmethod
    def applies(cls, pl_module: Any) -> bool:
        """Whether this strategy serves ``pl_module``."""
        raise NotImplementedError

    @classmethod
    def serves(cls, options: CAMOptions | None) -> bool:
        """Whether this strategy serves a callback of these ``options`` (e.g. the multi-label
        task: ``target="labels"``); ``None``: options not known. Default: any options."""
        return True

    def setup(self, trainer: Any, pl_module: Any) -> None:
        """Validate the options against the module (layer names, class ids)."""

    def capture(self, batch: Any) -> list[Any]:
        """Per-sample probes of a validation batch (tensors; copied by the probe set).

        Raises:
            MisconfigurationException: When the batch cannot be explained, with the fix.
        """
        raise NotImplementedError

    def assemble(self, samples: list[Any]) -> Any:
        """The probe set from the captured samples."""
        return samples

    def check(self, trainer: Any, pl_module: Any, batch: Any, validation: bool) -> None:
        """Probe forward on a few samples of ``batch``: refuse what cannot work (model output,
        layers, layout; with ``validation``, the validation batch's own fields too)."""

    def share_key(self) -> Hashable:
        """What must agree for two callbacks to share one computation (probe settings)."""
        raise NotImplementedError

    def plan(self, group: Sequence[CallbackView], pl_module: Any, probes: Any) -> Hashable:
        """What the shared computation computes for ``group`` (methods, layers, ...)."""
        raise NotImplementedError

    def compute(self, trainer: Any, pl_module: Any, probes: Any, plan: Any) -> Any:
        """Run the shared computation of ``plan`` on the probes with ``pl_module``."""
        raise NotImplementedError

    def present(
        self, trainer: Any, pl_module: Any, probes: Any, result: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """This callback's pictures and scalars of ``result``, keyed by tag (no prefix)."""
        raise NotImplementedError

    def on_result(self, result: Any) -> None:
        """Called with each result this callback presents (keeps ``last_explanation``)."""

    # helpers for subclasses ------------------------------------------------------------------

    def _who(self) -> str:
        return type(self.callback).__name__

    def check_layer_names(self, pl_module: Any) -> None:
        """Refuse a ``layer`` that names no module of ``pl_module`` (with the closest names)."""
        if self.options.layer is None:
            return
        names = dict(pl_module.named_modules())
        for name in self.options.layer:
            if name not in names or not name:
                close = difflib.get_close_matches(name, [n for n in names if n], n=5)
                raise MisconfigurationException(
                    f"layer={name!r} is not a module of {type(pl_module).__name__}. "
                    f"Closest names: {', '.join(close) if close else '(none)'}. Use a dotted "
                    "name from pl_module.named_modules(), or layer=None for the default."
                )

    def check_methods(
        self, images: torch.Tensor, layers: list[str], explain: ProbeExplain, guided: bool
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Explain the probe ``images`` with every requested method, so that a layer (never
        reached, not a map), a layout or a method that cannot work on this model (CAM without a
        GAP + linear head, ...) is refused at the first batch, before training time is spent.
        Gradient and activation methods share one pass on the images; perturbation methods,
        whose cost grows with the layer's channels, run on the first image.

        Args:
            images: A few probe images ``(B, C, H, W)``, as the model takes them.
            layers: The layers explained.
            explain: The task's probe explanation (see :data:`ProbeExplain`).
            guided: Also guided backprop (guided pictures asked for).

        Returns:
            The maps by method and layer.

        Raises:
            MisconfigurationException: Naming the layer or the method that fails, and the fix.
        """
        from lightning_cam.methods import METHODS

        who, opts = self._who(), self.options
        cheap = [m for m in opts.methods if not METHODS[m].extra_passes]
        costly = [m for m in opts.methods if METHODS[m].extra_passes]
        passes = [(cheap, images, guided)] if cheap else []
        if costly:
            passes.append((costly, images[:1], guided and not cheap))
        cams: dict[str, dict[str, torch.Tensor]] = {}
        for methods, x, g in passes:
            try:
                result = explain(x, methods, g)
            except (ValueError, TypeError) as err:
                culprit = self._failing_method(images[:1], methods, explain)
                if culprit is None:
                    raise MisconfigurationException(
                        f"{who}: layer={opts.layer if opts.layer is not None else layers!r} "
                        f"cannot be explained: {err}"
                    ) from err
                name, why = culprit
                works = [m for m in METHODS if m != name and METHODS[m].needs_backward]
                raise MisconfigurationException(
                    f"{who}: methods={list(opts.methods)!r} is invalid for this model: {name!r} "
                    f"cannot explain layer(s) {layers!r}: {why}. Drop {name!r} from methods, or "
                    f"use methods that work on any differentiable model: {', '.join(works)}."
                ) from err
            cams.update(result.cams)
        return cams

    @staticmethod
    def _failing_method(
        one: torch.Tensor, methods: Sequence[str], explain: ProbeExplain
    ) -> tuple[str, str] | None:
        """The first of ``methods`` that fails alone on the image ``one`` (with its error) when
        Grad-CAM works on the layers; ``None`` when the layers themselves fail."""
        try:
            explain(one, ["gradcam"], False)
        except (ValueError, TypeError):
            return None
        for m in methods:
            try:
                explain(one, [m], False)
            except (ValueError, TypeError) as err:
                return m, str(err).rstrip(". ")
        return None

    def class_names(self, trainer: Any, pl_module: Any) -> list[str] | None:
        """``class_names`` of the options, the datamodule, the module or its hparams."""
        if self.options.class_names is not None:
            return self.options.class_names
        for obj in (
            getattr(trainer, "datamodule", None),
            pl_module,
            getattr(pl_module, "hparams", None),
        ):
            if obj is None:
                continue
            names = (
                obj.get("class_names")
                if isinstance(obj, Mapping)
                else getattr(obj, "class_names", None)
            )
            if isinstance(names, (list, tuple)) and names:
                return [str(n) for n in names]
        return None

    @staticmethod
    def num_classes(trainer: Any, pl_module: Any) -> int | None:
        """``num_classes`` of the datamodule or the module's hparams, when known."""
        for obj in (getattr(trainer, "datamodule", None), getattr(pl_module, "hparams", None)):
            if obj is None:
                continue
            val = (
                obj.get("num_classes")
                if isinstance(obj, Mapping)
                else getattr(obj, "num_classes", None)
            )
            if isinstance(val, int) and not isinstance(val, bool):
                return val
        return None
