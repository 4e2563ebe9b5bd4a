"""The classification task: images ``(B, C, H, W)`` in, class logits (or scores) out.

Outputs the callbacks accept, in order:

* with ``output_transform``: whatever it returns from the module's output, class logits
  ``(B, num_classes)`` or one score per image ``(B,)``;
* a tensor ``(B, num_classes)`` (or ``(B,)`` scores), an object with a ``.logits`` tensor, a
  dict with a ``"logits"`` key;
* a tuple, list or dict whose items include exactly one tensor ``(B, num_classes)`` (of
  ``num_classes`` classes when the datamodule or the hparams say how many; e.g. ``(logits,
  features)``): that tensor is the logits. Anything else is refused at the first batch, with
  the fix (``output_transform``).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import render, render_nd
from lightning_cam.callbacks.options import misconf
from lightning_cam.callbacks.task import CallbackView, TaskStrategy
from lightning_cam.engine import Explainer, Explanation, borrowed, concat_explanations
from lightning_cam.engine.layers import default_layer
from lightning_cam.engine.target_spec import (
    SpecScore,
    TargetChoice,
    parse_target_spec,
    sigmoid_refusal,
)
from lightning_cam.engine.targets import (
    ClassTarget,
    class_logits,
    graph_output_kind,
    remember_sigmoid_output,
    returns_sigmoid,
)
from lightning_cam.engine.wrappers import unwrap

Reader = Callable[[Any], torch.Tensor]


def label_class_ids(labels: torch.Tensor, binary: bool) -> torch.Tensor | None:
    """The class ids ``(B,)`` (int64) of a batch's labels, or ``None`` when they are not class
    ids: integer labels ``(B,)``; for a single-logit binary head (``binary``) also the float or
    bool 0/1 labels ``(B,)`` / ``(B, 1)`` that ``binary_cross_entropy_with_logits`` is fed."""
    if labels.dim() == 2 and labels.shape[1] == 1 and binary:
        labels = labels[:, 0]
    if labels.dim() != 1:
        return None
    if labels.dtype == torch.bool:
        return labels.long() if binary else None
    if labels.is_floating_point():
        whole = bool(((labels == 0) | (labels == 1)).all())
        return labels.long() if binary and whole else None
    return labels.long()


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)}"
    return type(value).__name__


def find_logits(output: Any, batch: int, num_classes: int | None) -> tuple[Reader, str]:
    """How to read logits (or scores) out of a model ``output`` for a batch of ``batch``:
    ``(reader, description)``.

    Raises:
        MisconfigurationException: When the output holds no unambiguous logits; the message
            says what it holds and how to pass ``output_transform``.
    """
    fix = (
        "Pass output_transform: a callable output -> logits (B, num_classes) or scores (B,), "
        "or its dotted path for YAML (e.g. output_transform='mypackage.heads.logits_of')."
    )
    if isinstance(output, torch.Tensor):
        if output.dim() in (1, 2) and output.shape[0] == batch:
            return (lambda out: out), "the output tensor"
        raise MisconfigurationException(
            f"The module's output is a tensor {tuple(output.shape)} for {batch} images, not class "
            f"logits (B, num_classes) or scores (B,). {fix}"
        )
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor) and logits.dim() == 2:
        return (lambda out: out.logits), "output.logits"
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return (lambda out: out["logits"]), "output['logits']"
    items: list[tuple[Any, Any]] = []
    if isinstance(output, dict):
        items = list(output.items())
    elif isinstance(output, (tuple, list)):
        items = list(enumerate(output))
    candidates = [
        key
        for key, value in items
        if isinstance(value, torch.Tensor)
        and value.dim() == 2
        and value.shape[0] == batch
        and (num_classes is None or value.shape[1] == num_classes)
    ]
    what = ", ".join(f"[{k!r}] {_shape(v)}" for k, v in items) or _shape(output)
    if len(candidates) == 1:
        key = candidates[0]
        return (lambda out: out[key]), f"output[{key!r}]"
    known = f" of {num_classes} classes" if num_classes is not None else ""
    reason = (
        f"{len(candidates)} items could be the logits (B, num_classes{known})"
        if candidates
        else f"no item is a tensor (B, num_classes{known})"
    )
    raise MisconfigurationException(
        f"Cannot tell the class logits in the module's output ({what}): {reason}. {fix}"
    )


class OutputTarget(ClassTarget):
    """A class target on logits read out of any output (see :func:`find_logits`); for ``(B,)``
    scores the scores themselves. Keeps the logits it read (``last_logits``)."""

    def __init__(self, class_ids: Any, read: Reader) -> None:
        super().__init__(class_ids)
        self.read = read

    def __call__(self, output: Any) -> torch.Tensor:
        value = self.read(output)
        if value.dim() == 1:
            return value
        self.last_logits = value.detach()
        self.last_graph_kind = graph_output_kind(value)
        # a binary head (B, 1): classes 0 / 1 score -z / z (1 - p / p for a sigmoid output)
        value = class_logits(value, sigmoid=self.last_graph_kind == "sigmoid")
        ids = self.resolve(value)
        self.last_class_ids = ids
        return value.gather(1, ids[:, None]).squeeze(1)


class ReadScoreTarget:
    """A ``binary`` / ``regression`` target spec (:class:`TargetChoice`) on the output read by
    ``read`` (see :func:`find_logits`)."""

    def __init__(self, choice: TargetChoice, read: Reader) -> None:
        self.target = SpecScore(choice)
        self.read = read

    def __call__(self, output: Any) -> torch.Tensor:
        return self.target(self.read(output))


class LogitsOf(nn.Module):
    """``model`` whose output is read by ``read`` (for the faithfulness metrics)."""

    def __init__(self, model: nn.Module, read: Reader) -> None:
        super().__init__()
        self.model = model
        self.read = read
        if returns_sigmoid(unwrap(model)):
            remember_sigmoid_output(self)  # its read output is p too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read(self.model(x))


def _shown(x: torch.Tensor) -> str:
    return f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"


def module_device(pl_module: Any) -> torch.device:
    device = getattr(pl_module, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


def precision_of(trainer: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], Any]:
    """The trainer's input conversion and forward context (autocast, half weights)."""
    plugin = getattr(trainer, "precision_plugin", None)
    convert = getattr(plugin, "convert_input", None)
    context = getattr(plugin, "forward_context", None)
    return (
        convert if callable(convert) else (lambda x: x),
        context() if callable(context) else contextlib.nullcontext(),
    )


def fork_rng(device: torch.device) -> Any:
    """A fork of the RNG streams (CPU, and ``device``'s when CUDA) restored on exit."""
    # The callbacks draw no random numbers; fork_rng leaves the training RNG stream exactly as
    # it was whatever the model does in eval mode.
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class ClassificationTask(TaskStrategy):
    """Image classifiers: probes are dicts of stacked tensors (``"image"``, ``"label"``,
    ``"mask"``, ``"box"``), results :class:`~lightning_cam.engine.explainer.Explanation` objects."""

    name = "classification"
    state_name = "probes"

    def __init__(self, callback: CallbackView) -> None:
        super().__init__(callback)
        # per module (weakly: a module's id may be reused by another one after it is freed)
        self._layers: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()
        self._readers: weakref.WeakKeyDictionary[Any, tuple[Reader, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._checked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._batch_checked = False
        self._display_checked = False
        self._scalars = render.MetricScalars()

    @classmethod
    def applies(cls, pl_module: Any) -> bool:
        return True

    # setup and checks ------------------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any) -> None:
        opts = self.options
        self.check_layer_names(pl_module)
        if isinstance(opts.target, int):
            num = self.num_classes(trainer, pl_module)
            if num is not None and int(opts.target) >= num:
                raise misconf("target", opts.target, f"a class id in 0..{num - 1}")
        self._checked.discard(pl_module)

    def capture(self, batch: Any) -> list[dict[str, torch.Tensor]]:
        parts = self.callback.extract(batch)
        n = int(parts["image"].shape[0])  # type: ignore[union-attr]
        return [
            {k: v[i] for k, v in parts.items() if isinstance(v, torch.Tensor)} for i in range(n)
        ]

    def assemble(self, samples: list[Any]) -> dict[str, torch.Tensor]:
        keys = [k for k in samples[0] if all(k in s for s in samples)]
        return {k: torch.stack([s[k] for s in samples]) for k in keys}

    def model_images(self, images: torch.Tensor) -> torch.Tensor:
        """The model's input for probe images: integer images as float (same values) when the
        check found the model answers them identically."""
        return images if images.is_floating_point() else images.float()

    def reader(self, pl_module: Any) -> Reader:
        found = self._readers.get(pl_module)
        if found is None:
            raise MisconfigurationException(  # pragma: no cover - check() runs first
                f"{self._who()}: the module's output was not checked yet"
            )
        return found[0]

    def checked_reader(
        self, trainer: Any, pl_module: Any, images: torch.Tensor
    ) -> tuple[Reader, str]:
        """``(reader, where)`` of ``pl_module``'s logits, after the model-level checks on two
        of ``images`` when this module was not checked yet (``trainer.validate(other)``)."""
        if pl_module not in self._readers:
            self._check_model(trainer, pl_module, images[:2])
            self._checked.add(pl_module)
        return self._readers[pl_module]

    def check(self, trainer: Any, pl_module: Any, batch: Any, validation: bool) -> None:
        """See :meth:`TaskStrategy.check`. Model-level checks (output, layers, map layout) run
        once per module; batch-level ones (dtype, labels, masks, display) on the first
        validation batch. Training batches serve the model-level checks only (their labels
        may differ from validation's, e.g. mixup)."""
        if validation:
            parts = self.callback.extract(batch)
        else:
            try:
                parts = self.callback.extract(batch)
            except MisconfigurationException:
                return  # a training batch of another layout: checked at the first validation
        images = parts["image"]
        assert isinstance(images, torch.Tensor)
        x = images[:2].detach()
        if pl_module not in self._checked:
            self._check_model(trainer, pl_module, x)
            self._checked.add(pl_module)
        if not self._display_checked:  # the first batch, training or validation
            self._check_display(images)
            self._display_checked = True
        if validation and not self._batch_checked:
            if not x.is_floating_point():
                self._check_integer_images(trainer, pl_module, x, _shown(x))
            self._check_batch(trainer, pl_module, parts, images)
            self._batch_checked = True

    def _forward(self, trainer: Any, pl_module: Any, x: torch.Tensor) -> Any:
        device = module_device(pl_module)
        convert, ctx = precision_of(trainer)
        with fork_rng(device), borrowed(pl_module), torch.inference_mode(False), torch.no_grad():
            with ctx:
                return pl_module(convert(x.to(device)))

    def _check_model(self, trainer: Any, pl_module: Any, x: torch.Tensor) -> None:
        who, opts = self._who(), self.options
        shown = _shown(x)
        if not x.is_floating_point():
            self._check_integer_images(trainer, pl_module, x, shown)
        xf = self.model_images(x)
        try:
            output = self._forward(trainer, pl_module, xf)
        except Exception as err:  # noqa: BLE001 - any model error is the user's to see, with context
            raise MisconfigurationException(
                f"{who}: the module fails on probe images {shown} taken from the batches "
                f"(image_key={opts.image_key!r} for dict batches, else the first item): "
                f"{type(err).__name__}: {err}. Make the batches hold the model's input images "
                "(B, C, H, W), or override extract(batch)."
            ) from err
        read: Reader
        if opts.output_transform is not None:
            transform = opts.output_transform
            read = transform
            where = f"output_transform={opts.output_transform_spec!r}"
            try:
                value = transform(output)
            except Exception as err:  # noqa: BLE001 - the user's callable
                raise MisconfigurationException(
                    f"{who}: output_transform={opts.output_transform_spec!r} fails on the "
                    f"module's output ({_shape(output)}): {type(err).__name__}: {err}"
                ) from err
        else:
            read, where = find_logits(output, x.shape[0], self.num_classes(trainer, pl_module))
            value = read(output)
        if not isinstance(value, torch.Tensor) or value.dim() not in (1, 2) or (
            value.shape[0] != x.shape[0]
        ):
            raise MisconfigurationException(
                f"{who}: {where} gives {_shape(value)} for {x.shape[0]} images; expected class "
                "logits (B, num_classes) or scores (B,). Fix output_transform."
            )
        self.check_output(pl_module, value, where)
        self._check_sigmoid_head(trainer, pl_module, xf[:1], read, where)
        self._readers[pl_module] = (read, where)
        layers = self.layers(pl_module, xf)
        cams = self._check_methods(trainer, pl_module, xf, layers, read)
        height, width = int(x.shape[-2]), int(x.shape[-1])
        rank = x.dim() - 2
        for name in layers:
            cam = cams[opts.methods[0]][name]
            if cam.dim() != rank + 1:
                spatial = {1: "(l)", 2: "(h, w)", 3: "(d, h, w)"}.get(rank, f"{rank}-D")
                raise MisconfigurationException(
                    f"{who}: layer {name!r} gives maps of shape {tuple(cam.shape[1:])} for "
                    f"inputs {tuple(x.shape)}, not {spatial} maps of the input's {rank} spatial "
                    f"axes: its output is not a (B, C, {spatial[1:-1]}) feature map (tokens?). "
                    "Choose a convolutional layer."
                )
            if rank != 2:
                continue
            h, w = int(cam.shape[-2]), int(cam.shape[-1])
            if max(h, w) > 2 and abs(math.log((h / w) / (height / width))) > math.log(2.5):
                raise MisconfigurationException(
                    f"{who}: layer {name!r} gives {h} x {w} maps for {height} x {width} images: "
                    "its output looks channels-last (B, h, w, C), which would be read as "
                    "(B, C, h, w) and give a wrong picture. Choose a layer with a (B, C, h, w) "
                    "output (e.g. the block before a permute)."
                )

    def check_output(self, pl_module: Any, value: torch.Tensor, where: str) -> None:
        """Refuse a ``target`` the output ``value`` (``(B, K)`` logits or ``(B,)`` scores, read
        from the module's output at ``where``) cannot serve."""
        opts = self.options
        choice = parse_target_spec(opts.target)
        why = choice.refusal(None if value.dim() == 1 else int(value.shape[1]))
        if why is not None:
            raise MisconfigurationException(
                f"{self._who()}: {why} ({where} gives {_shape(value)})."
            )
        if not choice.per_class:
            return
        if value.dim() == 1 and opts.target != "pred":
            raise misconf(
                "target",
                opts.target,
                f"'pred': {where} gives one score per image (B,), so there is no class to pick",
            )
        if value.dim() == 2 and isinstance(opts.target, int) and opts.target >= value.shape[1]:
            raise misconf("target", opts.target, f"a class id in 0..{value.shape[1] - 1}")

    def _check_sigmoid_head(
        self, trainer: Any, pl_module: Any, x: torch.Tensor, read: Reader, where: str
    ) -> None:
        """Refuse ``target="binary"`` on a head returning ``sigmoid(z)`` (read from a forward
        with gradients: the ``grad_fn`` says what the output is)."""
        choice = parse_target_spec(self.options.target)
        if choice.kind != "binary":
            return
        device = module_device(pl_module)
        convert, ctx = precision_of(trainer)
        with fork_rng(device), borrowed(pl_module), torch.inference_mode(False), ctx:
            with torch.enable_grad():
                value = read(pl_module(convert(x.to(device)).detach().requires_grad_(True)))
        why = sigmoid_refusal(choice, value)
        if why is not None:
            raise MisconfigurationException(f"{self._who()}: {why} ({where}).")

    def _probe_explain(
        self, trainer: Any, pl_module: Any, xf: torch.Tensor, layers: list[str], read: Reader,
        methods: Sequence[str], guided: bool,
    ) -> Explanation:
        convert, ctx = precision_of(trainer)
        with fork_rng(module_device(pl_module)), ctx:
            return Explainer(
                pl_module, layers, methods=list(methods), guided_backprop=guided,
                reshape_transform=self.options.reshape_transform,
            )(
                convert(xf.to(module_device(pl_module))),
                target=OutputTarget(None, read),
                upsample=False,
            )

    def _check_methods(
        self, trainer: Any, pl_module: Any, xf: torch.Tensor, layers: list[str], read: Reader
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Every requested method on the probe images (:meth:`TaskStrategy.check_methods`),
        guided too when guided pictures are asked for.

        Returns:
            The maps by method and layer.
        """

        def explain(x: torch.Tensor, methods: Sequence[str], guided: bool) -> Explanation:
            return self._probe_explain(trainer, pl_module, x, layers, read, methods, guided)

        return self.check_methods(xf, layers, explain, self.options.guided)

    def _check_integer_images(
        self, trainer: Any, pl_module: Any, x: torch.Tensor, shown: str
    ) -> None:
        """Integer images are explained as float images of the same values when the module
        answers both identically (a module that converts its input itself); else refused."""
        fix = (
            f"{self._who()}: the images (image_key={self.options.image_key!r}) are {shown}; "
            "gradients need float images. Convert them in the dataset or transform "
            "(x.float() / 255, then the normalisation), or override extract(batch)"
        )
        try:
            raw = self._forward(trainer, pl_module, x)
            cast = self._forward(trainer, pl_module, x.float())
            a, _ = find_logits(raw, x.shape[0], None)
            same = torch.allclose(a(raw).float(), a(cast).float(), rtol=1e-4, atol=1e-5)
        except Exception as err:  # noqa: BLE001 - refused with the reason
            raise MisconfigurationException(f"{fix}; the module fails on them: {err}") from err
        if not same:
            raise MisconfigurationException(
                f"{fix}: the module answers them differently as float, so a float copy would "
                "explain another input."
            )

    def _check_batch(
        self, trainer: Any, pl_module: Any, parts: dict[str, Any], images: torch.Tensor
    ) -> None:
        self.check_batch_labels(trainer, pl_module, parts)
        who, opts = self._who(), self.options
        mask = parts.get("mask")
        rank = images.dim() - 2
        if mask is not None and tuple(mask.shape[-rank:]) != tuple(images.shape[-rank:]):
            spatial = {1: "(B, L)", 2: "(B, H, W)", 3: "(B, D, H, W)"}[rank]
            raise MisconfigurationException(
                f"{who}: the masks (mask_key={opts.mask_key!r}) are {tuple(mask.shape)} for "
                f"inputs {tuple(images.shape)}: give {spatial} masks of the inputs' size, or "
                "mask_key=None."
            )
        self._check_display(images)

    def check_batch_labels(self, trainer: Any, pl_module: Any, parts: dict[str, Any]) -> None:
        """Refuse labels of the first validation batch (``parts`` from ``extract``) that the
        ``target`` cannot use (``target="label"``: class ids of the model's classes)."""
        who, opts = self._who(), self.options
        labels = parts.get("label")
        if opts.target == "label":
            if labels is None:
                raise MisconfigurationException(
                    f"{who}: target='label' but the validation batches carry no labels "
                    f"(label_key={opts.label_key!r} for dict batches, else the second item); "
                    "use target='pred' or set label_key."
                )
            read = self.reader(pl_module)
            output = self._forward(trainer, pl_module, self.model_images(parts["image"][:1]))
            k = int(class_logits(read(output)).shape[-1])  # a binary head: 0 / 1
            ids = label_class_ids(labels, binary=k == 2 and read(output).shape[-1] == 1)
            if ids is None:
                raise MisconfigurationException(
                    f"{who}: target='label' needs class ids (B,) of an integer dtype (or, for a "
                    f"single-logit binary head, 0/1 labels (B,) or (B, 1) of any dtype); the "
                    f"labels (label_key={opts.label_key!r}) are {tuple(labels.shape)} "
                    f"{labels.dtype} (one-hot or soft labels?). Give class ids "
                    "(labels.argmax(1)) in the validation batches, or use target='pred' (for "
                    "multi-hot labels (B, K) of a multi-label head: target='labels')."
                )
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
                raise MisconfigurationException(
                    f"{who}: target='label' but the labels hold {int(ids.min())}.."
                    f"{int(ids.max())}, not class ids in 0..{k - 1} of the model's {k} "
                    "logits; fix label_key or use target='pred'."
                )

    def _check_display(self, images: torch.Tensor) -> None:
        """Refuse inputs the pictures cannot show (mean/std of another channel count, ...)."""
        who, opts = self._who(), self.options
        try:
            if images.dim() == 4:
                render.display_images(images[:1].detach().cpu(), opts)
            else:
                render_nd.check_display(images[:1], opts)
        except (TypeError, ValueError) as err:
            raise MisconfigurationException(
                f"{who}: cannot show the probe images {tuple(images.shape)} "
                f"{str(images.dtype).replace('torch.', '')} (image_key={opts.image_key!r}): "
                f"{err}. Show 1- or 3-channel images (mean/std undo a normalisation), or "
                "override extract(batch)."
            ) from err

    # computation -----------------------------------------------------------------------------

    def layers(self, pl_module: Any, images: torch.Tensor) -> list[str]:
        """This callback's layers: ``layer``, or the default layer of ``pl_module``."""
        if self.options.layer is not None:
            return self.options.layer
        if pl_module not in self._layers:
            device = module_device(pl_module)
            with borrowed(pl_module), torch.inference_mode(False), fork_rng(device):
                x = self.model_images(images[:1].detach().clone()).to(device)
                self._layers[pl_module] = [default_layer(pl_module, x)]
        return self._layers[pl_module]

    def share_key(self) -> Hashable:
        o = self.options
        return (
            o.num_samples,
            o.metrics_num_samples,
            str(o.target),
            o.dataloader_idx,
            o.image_key,
            o.label_key,
            o.output_transform_spec if isinstance(o.output_transform_spec, str)
            else id(o.output_transform),
            o.reshape_transform if isinstance(o.reshape_transform, str)
            else id(o.reshape_transform),
        )

    def plan(self, group: Sequence[CallbackView], pl_module: Any, probes: Any) -> Hashable:
        methods: list[str] = []
        layers: list[str] = []
        guided = False
        for cb in group:
            task = cb.task
            assert isinstance(task, ClassificationTask)
            methods += [m for m in cb.options.methods if m not in methods]
            layers += [n for n in task.layers(pl_module, probes["image"]) if n not in layers]
            guided = guided or cb.options.guided
        return tuple(methods), tuple(layers), guided

    def _target_ids(self, probes: dict[str, torch.Tensor]) -> Any:
        target = self.options.target
        if target == "pred":
            return None
        if target == "label":
            labels = probes.get("label")
            if labels is None:
                raise MisconfigurationException(
                    f"{self._who()}: target='label' but the probes carry no labels "
                    f"(label_key={self.options.label_key!r}); use target='pred' or set label_key."
                )
            ids = label_class_ids(labels, binary=True)
            assert ids is not None  # checked at the first batch
            return ids
        return int(target)

    def compute(self, trainer: Any, pl_module: Any, probes: Any, plan: Any) -> Explanation:
        methods, layers, guided = plan
        device = module_device(pl_module)
        convert, ctx = precision_of(trainer)
        images = convert(self.model_images(probes["image"]).to(device))
        read = self.checked_reader(trainer, pl_module, probes["image"])[0]
        choice = parse_target_spec(self.options.target)
        ids = self._target_ids(probes) if choice.per_class else None
        # Guided gradients are shown for the first num_samples probes only: the images that
        # serve the metrics alone need the maps, not a backward pass down to the input.
        n = self.options.num_samples if guided else images.shape[0]
        parts: list[Explanation] = []
        with fork_rng(device), ctx:
            for lo, hi, g in ((0, n, guided), (n, images.shape[0], False)):
                if hi <= lo:
                    continue
                explainer = Explainer(
                    pl_module, list(layers), methods=methods, guided_gradcam=g,
                    reshape_transform=self.options.reshape_transform,
                )
                if not choice.per_class:  # binary / regression: no class, no class logits
                    part = explainer(images[lo:hi], target=ReadScoreTarget(choice, read))
                    part.logits = None
                    parts.append(part)
                    continue
                chunk = ids[lo:hi] if isinstance(ids, torch.Tensor) else ids
                target = OutputTarget(chunk, read)
                part = explainer(images[lo:hi], target=target)
                if part.logits is None or target.last_graph_kind != "sigmoid":
                    part.logits = target.last_logits  # as read (the engine converts p)
                parts.append(part)
        return concat_explanations(parts)

    def present(
        self, trainer: Any, pl_module: Any, probes: Any, result: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        opts = self.options
        layers = self.layers(pl_module, probes["image"])
        names = self.class_names(trainer, pl_module)
        draw = render.render_grids if probes["image"].dim() == 4 else render_nd.render_nd
        pictures = draw(opts, probes, result, layers, names) if opts.kinds else {}
        scalars: dict[str, float] = {}
        if opts.metrics:
            read = self._readers.get(pl_module)
            model = pl_module if read is None or read[1] == "the output tensor" else LogitsOf(
                pl_module, read[0]
            )
            images = self.model_images(probes["image"]).to(module_device(pl_module))
            scalars = self._scalars(
                opts, probes, self.callback.probe_token, model, images, result, layers
            )
        return pictures, scalars

    def metrics(self, pl_module: Any, probes: Any, result: Any) -> dict[str, float]:
        """Explanation-quality scalars of ``result`` on ``probes`` keyed by tag, with
        ``pl_module`` as it is (:meth:`CAMCallback.compute_metrics`)."""
        images = self.model_images(probes["image"])
        layers = self.layers(pl_module, images)
        return self._scalars(
            self.options, probes, self.callback.probe_token, pl_module, images, result, layers
        )
