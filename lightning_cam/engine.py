"""The engine: one forward pass, the gradients it needs, and every answer derived from them.

Only this module touches hooks, grad modes and training flags. The model is *borrowed*: every
change (forward hooks, eval mode, grad / inference mode) is undone in ``finally``, also when the
model raises; parameter ``.grad`` is never written (gradients come from ``torch.autograd.grad`` on
captured activations, never ``.backward()``).

Speed ("near the physical floor", DESIGN.md): for CAMs alone the forward runs without autograd
recording up to the first target layer; its forward hook replaces the layer's output by a detached
leaf that requires grad and turns recording on for the rest of the network. The backward then
runs from the scores to that layer only, and no parameter gradient is computed. Several methods
and several layers share the one forward and the one backward. Guided backprop needs the graph
down to the input; its ReLUs are recorded with a switchable backward rule, so the same forward
serves the ordinary backward (CAMs) and the guided one.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(weights=None)
    >>> result = explain(model, torch.rand(2, 3, 64, 64), methods=("gradcam", "gradcam++"),
    ...                  guided_gradcam=True)
    >>> result.cams["gradcam"]["layer4"].shape, result.guided.shape
    (torch.Size([2, 64, 64]), torch.Size([2, 3, 64, 64]))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_cam.guided import GuidedReLUMode, GuidedSwitch
from lightning_cam.layers import LayerSpec, default_layer, get_layer, resolve_layers
from lightning_cam.layouts import (
    Family,
    ReshapeTransform,
    check_reshape_transform,
    layout_transform,
    recognise,
)
from lightning_cam.methods import METHODS, combine, method_name, normalize_maps, upsample
from lightning_cam.targets import ClassTarget, TargetSpec, as_target, extract_logits


@dataclass
class Explanation:
    """Everything one engine call produced for a batch ``(B, C, H, W)``.

    Attributes:
        cams: ``cams[method][layer]``: float32 maps ``(B, H, W)`` (or the layer's ``(B, h, w)``
            with ``upsample=False``), ReLU'd and min-max normalised to [0, 1] per sample.
        guided: Guided backprop gradients ``(B, C, H, W)`` (float32), or ``None``.
        guided_cams: ``guided_cams[method][layer]``: guided Grad-CAM ``(B, C, H, W)``: guided
            backprop times the upsampled map.
        scores: The differentiated scores ``(B,)`` (detached, float32).
        class_ids: The class ids ``(B,)`` explained for class targets, else ``None``.
        logits: The class logits ``(B, num_classes)`` (detached) when the output has them.
        layers: Dotted names of the layers explained.
    """

    cams: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    guided: torch.Tensor | None = None
    guided_cams: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    scores: torch.Tensor | None = None
    class_ids: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    layers: list[str] = field(default_factory=list)

    def cam(self, method: str = "gradcam", layer: str | None = None) -> torch.Tensor:
        """Return one map batch; ``layer=None`` means the only (or first) layer."""
        maps = self.cams[method_name(method)]
        return maps[layer if layer is not None else self.layers[0]]


def concat_explanations(parts: Sequence[Explanation]) -> Explanation:
    """Join explanations of consecutive chunks of a batch along the batch dimension.

    Guided gradients and guided Grad-CAM are joined when every part has them, else taken from
    the parts that have them (the first ones: e.g. guided outputs for a leading subset only).
    """
    if not parts:
        raise ValueError("concat_explanations needs at least one Explanation")
    first = parts[0]
    if len(parts) == 1:
        return first

    def cat(values: list[torch.Tensor | None]) -> torch.Tensor | None:
        kept = [v for v in values if v is not None]
        return torch.cat(kept) if kept else None

    return Explanation(
        cams={
            m: {n: torch.cat([p.cams[m][n] for p in parts]) for n in maps}
            for m, maps in first.cams.items()
        },
        guided=cat([p.guided for p in parts]),
        guided_cams={
            m: {n: torch.cat([p.guided_cams[m][n] for p in parts if p.guided_cams]) for n in maps}
            for m, maps in first.guided_cams.items()
        },
        scores=cat([p.scores for p in parts]),
        class_ids=cat([p.class_ids for p in parts]),
        logits=cat([p.logits for p in parts]),
        layers=list(first.layers),
    )


def _per_sample_ids(target: TargetSpec, batch: int) -> torch.Tensor | None:
    """Per-sample class ids of ``target`` (to split along the batch), checked against the batch
    size; ``None`` for targets that apply to any chunk (``None``, an int, a callable)."""
    if target is None or isinstance(target, (int, str)) or (
        callable(target) and not isinstance(target, torch.Tensor)
    ):
        return None
    ids = torch.as_tensor(target)
    if ids.dim() != 1:
        return None  # the chunk's ClassTarget raises the clear error
    if ids.numel() != batch:
        raise ValueError(
            f"target has {ids.numel()} class ids but the batch has {batch} images; "
            "give one id per image or a single int."
        )
    return ids


@contextmanager
def borrowed(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the duration; restore every module's flag afterwards.

    Only modules in training mode are touched: a model already in eval mode costs one walk.
    """
    training = [m for m in model.modules() if m.training]
    try:
        if training:
            model.eval()
        yield
    finally:
        for m in training:
            m.training = True


class LayerCapture:
    """Hooks some layers of a model for one forward pass and records their outputs.

    Every call of a hooked layer is recorded (a head shared across FPN levels is called once per
    level). In ``detach`` mode, an output that does not take part in autograd (the forward so far
    ran without recording) is replaced by a detached leaf that requires grad, and recording is
    switched on for the rest of the forward: nothing before the layer needs a graph. The hook
    returns a copy of the recorded tensor so that an in-place op after the layer (``F.relu(x,
    inplace=True)``) cannot change what was recorded.

    Use as a context manager; the hooks are removed on exit, also after an exception.

    Args:
        model: The model.
        names: Dotted names of the layers to hook.
        detach: Replace non-recording outputs by leaves (see above).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], detach: bool) -> None:
        self.model = model
        self.names = list(names)
        self.detach = detach
        self.activations: dict[str, list[torch.Tensor]] = {n: [] for n in self.names}
        self.bad_outputs: dict[str, str] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                self.bad_outputs[name] = (
                    f"a {type(output).__name__}"
                    if not isinstance(output, torch.Tensor)
                    else f"a tensor of dtype {output.dtype}"
                )
                return None
            if output.dim() < 3:
                self.bad_outputs[name] = f"shape {tuple(output.shape)}"
                return None
            act = output
            if self.detach and not act.requires_grad:
                act = act.detach().requires_grad_(True)
                torch.set_grad_enabled(True)
            if not act.requires_grad:
                # Recording is on but nothing upstream requires grad (guided mode, input
                # cloned without grad cannot happen; frozen layers after a detached branch can).
                act = act.detach().requires_grad_(True)
            self.activations[name].append(act)
            return act.clone()

        return hook

    def __enter__(self) -> LayerCapture:
        try:
            for n in self.names:
                self._handles.append(get_layer(self.model, n).register_forward_hook(self._hook(n)))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove all hooks (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_images(images: Any) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}"
        )
    if images.dim() != 4:
        hint = " (add a batch dimension: images[None])" if images.dim() == 3 else ""
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be a floating-point tensor, got dtype {images.dtype}; "
            "convert with images.float() / 255 and apply the model's normalisation."
        )
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")


@dataclass
class _Pass:
    """What one forward pass left for the backward: input, captures, output, scores."""

    x: torch.Tensor
    names: list[str]
    capture: LayerCapture
    switch: GuidedSwitch
    output: Any
    scores: torch.Tensor
    layouts: dict[str, Callable[[torch.Tensor], torch.Tensor] | None]

    def read(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A captured activation or gradient of layer ``name`` as ``(B, C, h, w)``."""
        fn = self.layouts[name]
        return t if fn is None else fn(t)


def _grad(
    scores: torch.Tensor, inputs: list[torch.Tensor], batched: bool, retain: bool
) -> list[torch.Tensor]:
    """Gradients of ``scores`` w.r.t. ``inputs``; never touches ``param.grad``.

    Not batched: of ``scores.sum()``. Batched: of each score separately, stacked on a new first
    dimension, from one vmapped backward (``is_grads_batched``); if an op of the model's backward
    cannot be batched, one backward per score over the retained graph.
    """
    if not batched:
        summed = torch.autograd.grad(
            scores.float().sum(), inputs, retain_graph=retain, allow_unused=True
        )
        return [
            torch.zeros_like(i) if g is None else g for g, i in zip(summed, inputs, strict=True)
        ]
    k = scores.shape[0]
    eye = torch.eye(k, device=scores.device, dtype=scores.dtype)
    gs: Sequence[torch.Tensor | None]
    try:
        gs = torch.autograd.grad(
            scores,
            inputs,
            grad_outputs=eye,
            retain_graph=True,
            is_grads_batched=True,
            allow_unused=True,
        )
    except RuntimeError:
        per: list[tuple[torch.Tensor | None, ...]] = [
            torch.autograd.grad(scores[j], inputs, retain_graph=True, allow_unused=True)
            for j in range(k)
        ]
        stacked: list[torch.Tensor | None] = []
        for i, inp in enumerate(inputs):
            rows = [p[i] for p in per]
            if all(r is None for r in rows):
                stacked.append(None)
            else:
                stacked.append(
                    torch.stack([torch.zeros_like(inp) if r is None else r for r in rows])
                )
        gs = stacked
    return [i.new_zeros((k, *i.shape)) if g is None else g for g, i in zip(gs, inputs, strict=True)]


def _layer_map(
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    weight_fn: Any,
    size: tuple[int, ...] | None,
) -> torch.Tensor:
    """Un-normalised map of one layer: one CAM per call of the layer, resized and summed.

    A layer called several times (a head shared across FPN levels) contributes one map per call;
    calls that did not influence the score have zero gradient and add nothing. Without ``size``
    the maps are summed at the first call's resolution.
    """
    total: torch.Tensor | None = None
    for a, g in pairs:
        cam = combine(a, weight_fn(a, g))
        if total is None:
            total = upsample(cam, size) if size is not None else cam
        else:
            total = total + upsample(cam, size if size is not None else tuple(total.shape[1:]))
    assert total is not None
    return total


class Explainer:
    """Computes several CAM methods, guided backprop and guided Grad-CAM in one pass.

    Args:
        model: Any image model ``(B, C, H, W) -> output``.
        layer: Dotted name, module, list of either, or ``None`` for the default layer (see
            :func:`lightning_cam.layers.default_layer`).
        methods: CAM methods to compute (``"gradcam"``, ``"gradcam++"``; see
            :data:`lightning_cam.methods.METHODS`).
        guided_backprop: Also compute guided backprop gradients.
        guided_gradcam: Also compute guided Grad-CAM for every method and layer (implies guided
            backprop).
        max_batch: Explain at most this many images per forward/backward pass (``None``: the
            whole batch at once). Peak memory then scales with ``max_batch`` instead of the
            batch: worth it for guided backprop of large batches on small machines, where the
            backward must keep every activation of the network. Results are identical.
        reshape_transform: How to read the layers' outputs as ``(B, C, h, w)``: ``"auto"``
            (recognised models: ViT tokens, Swin channels-last maps...), ``"tokens"``,
            ``"channels_last"``, ``"channels_first"`` or a callable ``output -> (B, C, h, w)``;
            see :mod:`lightning_cam.layouts`.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(weights=None)
        >>> explainer = Explainer(model, "layer4", methods=("gradcam", "gradcam++"))
        >>> out = explainer(torch.rand(2, 3, 64, 64), target=[1, 2])
        >>> out.cams["gradcam++"]["layer4"].shape
        torch.Size([2, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec = None,
        methods: Sequence[str] = ("gradcam",),
        guided_backprop: bool = False,
        guided_gradcam: bool = False,
        max_batch: int | None = None,
        reshape_transform: ReshapeTransform = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(methods, str):
            methods = (methods,)
        self.model = model
        self.methods = list(dict.fromkeys(method_name(m) for m in methods))
        self.layers = resolve_layers(model, layer)
        self.guided_backprop = bool(guided_backprop or guided_gradcam)
        self.guided_gradcam = bool(guided_gradcam)
        self.reshape_transform = check_reshape_transform(reshape_transform)
        self._family: Family | None | bool = False  # recognised on first use
        self._needs_layers = bool(self.methods)
        if max_batch is not None and (
            isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
        ):
            raise ValueError(f"max_batch must be None or an int >= 1, got {max_batch!r}")
        self.max_batch = max_batch
        if self.guided_gradcam and not self.methods:
            raise ValueError("guided_gradcam=True needs at least one CAM method in methods")

    # The object holds no hooks between calls; the context manager form is for symmetry with
    # other libraries and closes nothing that could leak.
    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def close(self) -> None:
        """Nothing to release: hooks live for one call only. Kept for API symmetry."""

    def _layer_names(self, images: torch.Tensor) -> list[str]:
        if self.layers is None:
            self.layers = [default_layer(self.model, images)]
        return self.layers

    def __call__(
        self, images: torch.Tensor, target: TargetSpec = None, upsample: bool = True
    ) -> Explanation:
        """Explain a batch.

        Args:
            images: ``(B, C, H, W)`` floating-point images, as the model expects them.
            target: ``None`` (predicted class), an ``int``, per-sample class ids, or a callable
                ``output -> (B,)`` scores.
            upsample: Return maps at the image size (bilinear) instead of the layer's.

        Returns:
            An :class:`Explanation`.

        Raises:
            ValueError: Bad image shape, bad target, a layer that the forward never reaches or
                whose output is not a spatial map.
            TypeError: Non-tensor or integer images, outputs without logits for class targets.
        """
        _check_images(images)
        batch, step = images.shape[0], self.max_batch
        if step is None or batch <= step:
            return self._explain(images, target, upsample)
        ids = _per_sample_ids(target, batch)
        return concat_explanations(
            [
                self._explain(
                    images[i : i + step], ids[i : i + step] if ids is not None else target, upsample
                )
                for i in range(0, batch, step)
            ]
        )

    def _explain(self, images: torch.Tensor, target: TargetSpec, upsample: bool) -> Explanation:
        target_fn = as_target(target)
        with self._forward(images, target_fn) as fwd:
            self._check_scores(fwd.scores, images.shape[0])
            grads, gb = self._backward(fwd, batched=False)
            pairs = {
                n: [
                    (fwd.read(n, a.detach().float()), fwd.read(n, g))
                    for a, g in zip(fwd.capture.activations[n], gs, strict=True)
                ]
                for n, gs in grads.items()
            }
            with torch.no_grad():
                result = self._assemble(tuple(images.shape[2:]), pairs, gb, upsample)
            result.scores = fwd.scores.detach().float()
            if isinstance(target_fn, ClassTarget):
                result.class_ids = target_fn.last_class_ids
            try:
                result.logits = extract_logits(fwd.output).detach()
            except TypeError:
                result.logits = None
            return result

    def explain_scores(
        self,
        images: torch.Tensor,
        score_fn: Callable[[Any], torch.Tensor],
        batch_index: Sequence[int] | torch.Tensor | None = None,
        upsample: bool = True,
    ) -> tuple[Explanation, Any]:
        """One map per *score*: several targets of the same images from one forward pass.

        For detection: ``score_fn(output)`` returns the scores of K detections ``(K,)``, and
        ``batch_index[k]`` says which image detection ``k`` belongs to. The K gradients come from
        one batched backward (``torch.autograd.grad(..., is_grads_batched=True)``), falling back
        to K backwards over the retained graph where an op cannot be batched.

        Args:
            images: ``(B, C, H, W)``.
            score_fn: ``output -> (K,)`` differentiable scores.
            batch_index: Image index of each score; default all zeros when ``B == 1``, else
                ``arange(K)`` (requires ``K == B``).
            upsample: Maps at the image size (else at the layer's).

        Returns:
            ``(explanation, output)``: maps ``(K, H, W)`` per method and layer (guided backprop
            and guided Grad-CAM ``(K, C, H, W)`` when enabled), ``scores`` ``(K,)``; and the
            model's output (detached where it is a tensor), so callers can read the detections
            the scores came from.
        """
        _check_images(images)
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")
        with self._forward(images, score_fn) as fwd:
            scores = fwd.scores
            if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
                raise ValueError(
                    "score_fn must return a 1-D tensor of scores (K,), got "
                    f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)}"
                )
            k = scores.shape[0]
            batch = images.shape[0]
            if batch_index is None:
                if batch != 1 and k != batch:
                    raise ValueError(
                        f"score_fn returned {k} scores for {batch} images: pass batch_index "
                        "(the image of each score)."
                    )
                index = torch.zeros(k, dtype=torch.long) if batch == 1 else torch.arange(k)
            else:
                index = torch.as_tensor(batch_index, dtype=torch.long).cpu()
                if index.shape != (k,) or (k and (index.min() < 0 or index.max() >= batch)):
                    raise ValueError(
                        f"batch_index must hold {k} image indices in 0..{batch - 1}, "
                        f"got {index.tolist()}"
                    )
            output = fwd.output
            if k == 0:
                size = tuple(images.shape[2:])
                empty = Explanation(layers=list(fwd.names), scores=scores.detach().float())
                for m in self.methods:
                    empty.cams[m] = {n: images.new_zeros((0, *size)).float() for n in fwd.names}
                return empty, output
            grads, gb = self._backward(fwd, batched=True)
            pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
            rows = torch.arange(k)
            for n, gs in grads.items():
                pairs[n] = []
                for a, g in zip(fwd.capture.activations[n], gs, strict=True):
                    dev = a.device
                    pairs[n].append(
                        (
                            fwd.read(n, a.detach().float()[index.to(dev)]),
                            fwd.read(n, g[rows.to(dev), index.to(dev)]),
                        )
                    )
            if gb is not None:
                gb = gb[rows.to(gb.device), index.to(gb.device)]
            with torch.no_grad():
                result = self._assemble(tuple(images.shape[2:]), pairs, gb, upsample)
            result.scores = scores.detach().float()
            return result, output

    @contextmanager
    def _forward(self, images: torch.Tensor, target_fn: Callable[[Any], Any]) -> Iterator[_Pass]:
        """One forward pass with the borrowed model; hooks and modes live inside this block."""
        model = self.model
        guided = self.guided_backprop
        with ExitStack() as stack:
            stack.enter_context(borrowed(model))
            stack.enter_context(torch.inference_mode(False))
            names = self._layer_names(images) if self._needs_layers else []
            x = images.detach().clone() if (images.is_inference() or guided) else images.detach()
            switch = GuidedSwitch(False)
            capture = stack.enter_context(LayerCapture(model, names, detach=not guided))
            mode: GuidedReLUMode | None = None
            if guided:
                x.requires_grad_(True)
                stack.enter_context(torch.enable_grad())
                mode = stack.enter_context(GuidedReLUMode(switch, inputs_only=True))
            else:
                stack.enter_context(torch.no_grad())
            output = model(x)
            capture.close()
            if mode is not None and mode.gates == 0:
                raise ValueError(
                    f"Guided backprop needs ReLU-family, GELU, SiLU or Hardswish gates on the "
                    f"forward path, and {type(model).__name__} has none: its guided backward "
                    "would be the plain input gradient. Drop guided_backprop / guided_gradcam "
                    "for this model (see lightning_cam.guided)."
                )
            with torch.enable_grad():
                scores = target_fn(output)
            self._check_capture(capture, names)
            layouts = self._layouts(capture, names, images)
            yield _Pass(x, names, capture, switch, output, scores, layouts)

    def _layouts(
        self, capture: LayerCapture, names: list[str], images: torch.Tensor
    ) -> dict[str, Callable[[torch.Tensor], torch.Tensor] | None]:
        """How each captured layer's output reads as ``(B, C, h, w)`` (see
        :mod:`lightning_cam.layouts`), decided before any backward."""
        if self._family is False:
            self._family = recognise(self.model)
        family = self._family if isinstance(self._family, Family) else None
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return {
            n: layout_transform(
                self.reshape_transform,
                n,
                tuple(capture.activations[n][0].shape),
                size,
                family,
                batch=int(images.shape[0]),
            )
            for n in names
        }

    def _backward(
        self, fwd: _Pass, batched: bool
    ) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor | None]:
        """Gradients of the scores w.r.t. every captured activation (and guided, the input).

        Not batched: of the summed scores (samples do not interact in eval mode), shaped like
        the activations. Batched: one gradient per score, ``(K, *activation.shape)``.
        """
        guided = self.guided_backprop
        acts = [a for n in fwd.names for a in fwd.capture.activations[n]]
        scores = fwd.scores
        if acts and not scores.requires_grad:
            raise ValueError(
                "The target's scores do not depend on the captured layers "
                f"{fwd.names}: nothing to differentiate. Check the layer and the target."
            )
        if guided and not scores.requires_grad:
            raise ValueError("The target's scores do not depend on the input images.")
        grads: list[torch.Tensor] = []
        if acts:
            grads = list(_grad(scores, acts, batched, retain=guided))
        gb: torch.Tensor | None = None
        if guided:
            fwd.switch.guided = True
            (gin,) = _grad(scores, [fwd.x], batched, retain=False)
            gb = gin.float()
        out: dict[str, list[torch.Tensor]] = {}
        it = iter(grads)
        for n in fwd.names:
            out[n] = [next(it).float() for _ in fwd.capture.activations[n]]
        return out, gb

    def _assemble(
        self,
        size: tuple[int, ...],
        pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
        gb: torch.Tensor | None,
        do_upsample: bool,
    ) -> Explanation:
        names = list(pairs)
        result = Explanation(layers=names, guided=gb)
        for m in self.methods:
            weight_fn = METHODS[m]
            result.cams[m] = {}
            if self.guided_gradcam:
                result.guided_cams[m] = {}
            for n in names:
                raw = _layer_map(pairs[n], weight_fn, size if do_upsample else None)
                full = raw if do_upsample else _layer_map(pairs[n], weight_fn, size)
                result.cams[m][n] = normalize_maps(raw)
                if self.guided_gradcam:
                    assert gb is not None
                    result.guided_cams[m][n] = gb * normalize_maps(full)[:, None]
        return result

    @staticmethod
    def _check_capture(capture: LayerCapture, names: list[str]) -> None:
        for n in names:
            if n in capture.bad_outputs:
                raise ValueError(
                    f"Layer {n!r} outputs {capture.bad_outputs[n]}, not a spatial feature map "
                    "(B, C, h, w); choose a convolutional layer (or None for the default)."
                )
            if not capture.activations[n]:
                raise ValueError(
                    f"Layer {n!r} was never called during the forward pass, so it has no "
                    "activations to explain; choose a layer on the model's forward path."
                )

    @staticmethod
    def _check_scores(scores: Any, batch: int) -> None:
        if not isinstance(scores, torch.Tensor):
            raise TypeError(
                f"The target must return a tensor of shape (B,) = ({batch},), "
                f"got {type(scores).__name__}"
            )
        if scores.shape != (batch,):
            raise ValueError(
                f"The target must return one score per image, shape ({batch},); "
                f"got {tuple(scores.shape)}"
            )
