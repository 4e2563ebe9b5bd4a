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
    >>> explainer = Explainer(model, methods=("gradcam", "gradcam++"), guided_gradcam=True)
    >>> result = explainer(torch.rand(2, 3, 64, 64))
    >>> result.cams["gradcam"]["layer4"].shape, result.guided.shape
    (torch.Size([2, 64, 64]), torch.Size([2, 3, 64, 64]))
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_cam.engine.borrow import LayerCapture, borrowed
from lightning_cam.engine.guided import GuidedReLUMode, GuidedSwitch
from lightning_cam.engine.layers import LayerSpec, default_layer, get_layer, resolve_layers
from lightning_cam.engine.layouts import (
    Family,
    ReshapeTransform,
    check_reshape_transform,
    layout_transform,
    recognise,
)
from lightning_cam.engine.targets import (
    ClassTarget,
    TargetSpec,
    as_target,
    extract_logits,
    normalize_target,
    output_kind,
    remember_sigmoid_output,
    sigmoid_as_logits,
)
from lightning_cam.engine.wrappers import (
    eager_forward,
    opaque_modules,
    script_ancestor,
    unwrap,
)
from lightning_cam.methods import (
    METHODS,
    LayerPass,
    Method,
    check_fuse,
    fuse_maps,
    method_name,
    normalize_maps,
    upsample,
)

#: The key of the input attributions' maps when no method of a call reads a layer.
INPUT_KEY = "input"


class NonFiniteWarning(RuntimeWarning):
    """Some samples had a non-finite score, activation or gradient: their maps are NaN."""


class OutputWarning(UserWarning):
    """The model's class output is not logits (log-probabilities or probabilities): class
    targets differentiate that output as it is. Warned once per model."""


_WARNED_OUTPUT: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _read_output_kind(
    model: nn.Module, target: ClassTarget, logits: torch.Tensor | None
) -> torch.Tensor | None:
    """The logits to report for a class target's output: a sigmoid head's probability ``p``
    becomes ``logit(p)`` (so captions, tables and metrics read ``p``, never ``sigmoid(p)``), and
    the model is remembered as one; other outputs as they are. Warns once per model when the
    output is not logits."""
    graph = target.last_graph_kind
    if graph == "sigmoid":
        remember_sigmoid_output(unwrap(model))
        _warn_output_kind(model, target.last_logits, "sigmoid")
        if logits is not None and logits.dim() == 2 and logits.shape[1] == 1:
            return sigmoid_as_logits(logits)
        return logits
    _warn_output_kind(model, target.last_logits, graph)
    return logits


def _warn_output_kind(
    model: nn.Module, logits: torch.Tensor | None, graph: str | None = None
) -> None:
    """Say once per model when a class target differentiates log-probabilities or
    probabilities instead of the logits the papers (and the README) mean."""
    if logits is None:
        return
    kind = graph or output_kind(logits)
    if kind not in ("log_probabilities", "probabilities", "sigmoid"):
        return
    key = unwrap(model)
    if key in _WARNED_OUTPUT:
        return
    _WARNED_OUTPUT.add(key)
    if kind == "sigmoid":
        warnings.warn(
            f"{type(key).__name__} returns sigmoid probabilities p = sigmoid(z) (its output is "
            "made by a sigmoid), not logits: class targets explain p, whose gradient is the "
            "logit's scaled by p (1 - p) per image (the same normalised maps; raw maps, "
            "normalize=False, differ by that scale). Probabilities shown in captions, tables "
            "and metrics are read as p. To explain the logit, explain the model without its "
            "final sigmoid.",
            OutputWarning,
            stacklevel=5,
        )
        return
    what, head, score = (
        ("log-probabilities", "log_softmax", "log p(c) = z_c - logsumexp(z)")
        if kind == "log_probabilities"
        else ("probabilities", "softmax", "p(c) = softmax(z)_c")
    )
    warnings.warn(
        f"{type(key).__name__} returns {what} (every row's "
        f"{'logsumexp' if kind == 'log_probabilities' else 'sum'} is "
        f"{'0' if kind == 'log_probabilities' else '1'}: a final {head}), not logits: class "
        f"targets explain {score}, whose gradient mixes in every other class, not the class "
        "logit z_c of Grad-CAM and its successors. To explain logits, explain a module that "
        f"returns the logits (the same model without its final {head}). Probabilities shown "
        "in captions and tables are read correctly from the output.",
        OutputWarning,
        stacklevel=5,
    )


@dataclass
class Explanation:
    """Everything one engine call produced for a batch ``(B, C, H, W)``.

    Signals ``(B, C, L)`` and volumes / videos ``(B, C, D, H, W)`` give maps of their spatial
    shape, ``(B, L)`` / ``(B, D, H, W)``, and guided gradients of the input's shape.

    Attributes:
        cams: ``cams[method][layer]``: float32 maps ``(B, H, W)`` (or the layer's ``(B, h, w)``
            with ``upsample=False``), ReLU'd and min-max normalised to [0, 1] per sample; with
            ``normalize=False`` the method's raw map (after its ReLU where it has one), in the
            units of ``sum_k w_k A^k``: comparable across images, classes and checkpoints.
        guided: Guided backprop gradients ``(B, C, H, W)`` (float32), or ``None``.
        guided_cams: ``guided_cams[method][layer]``: guided Grad-CAM ``(B, C, H, W)``: guided
            backprop times the upsampled map.
        scores: The differentiated scores ``(B,)`` (detached, float32).
        class_ids: The class ids ``(B,)`` explained for class targets, else ``None``.
        logits: The class logits ``(B, num_classes)`` (detached) when the output has them.
        layers: Dotted names of the layers explained.
        nonfinite: ``(B,)`` bool: samples whose score, layer activations or gradients (or
            guided gradients) were not finite (NaN / inf, e.g. from a NaN pixel). Their maps,
            guided gradients and guided Grad-CAMs are NaN — never a blank map that would read
            as "no evidence" — and the call warned once (:class:`NonFiniteWarning`) naming them.
        fused: ``fused[method]``: the layers' maps fused into one (``fuse=`` given), ``(B, H, W)``.
    """

    cams: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    guided: torch.Tensor | None = None
    guided_cams: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    scores: torch.Tensor | None = None
    class_ids: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    layers: list[str] = field(default_factory=list)
    nonfinite: torch.Tensor | None = None
    fused: dict[str, torch.Tensor] = field(default_factory=dict)

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
        nonfinite=cat([p.nonfinite for p in parts]),
        fused={m: torch.cat([p.fused[m] for p in parts]) for m in first.fused},
    )


def _per_sample_ids(target: Any, batch: int) -> torch.Tensor | None:
    """Per-sample class ids of a normalised target (to split along the batch), checked against
    the batch size; ``None`` for targets that apply to any chunk (``None``, an int, a callable).
    """
    if not isinstance(target, torch.Tensor):
        return None
    ids = target
    if ids.numel() != batch:
        raise ValueError(
            f"target has {ids.numel()} class ids but the batch has {batch} images; "
            "give one id per image or a single int."
        )
    return ids


def _chunk(target: Any, ids: torch.Tensor | None, start: int, stop: int) -> Any:
    """The target of images ``start:stop``: per-sample ids sliced; a callable target with
    per-image parts (``batch_slice``, e.g. :class:`~lightning_cam.engine.targets.SegmentationTarget`
    with per-image ids or masks) sliced by itself; any other target as it is."""
    if ids is not None:
        return ids[start:stop]
    batch_slice = getattr(target, "batch_slice", None)
    return batch_slice(start, stop) if callable(batch_slice) else target


#: Spatial ranks of the inputs the engine explains: signals ``(B, C, L)``, images
#: ``(B, C, H, W)``, volumes and videos ``(B, C, D, H, W)`` / ``(B, C, T, H, W)``.
SPATIAL_RANKS: tuple[int, ...] = (1, 2, 3)


def _check_images(images: Any) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            "images must be a torch.Tensor of shape (B, C, L), (B, C, H, W) or "
            f"(B, C, D, H, W), got {type(images).__name__}"
        )
    if images.dim() - 2 not in SPATIAL_RANKS:
        hint = " (add a batch dimension: images[None])" if images.dim() == 2 else ""
        raise ValueError(
            "images must have shape (B, C, L) (signals), (B, C, H, W) (images) or "
            f"(B, C, D, H, W) (volumes, videos), got {tuple(images.shape)}{hint}"
        )
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

    def read(self, name: str, t: torch.Tensor | None) -> Any:
        """A captured activation or gradient of layer ``name`` as ``(B, C, h, w)``."""
        fn = self.layouts[name]
        return t if fn is None or t is None else fn(t)


def _grad(
    scores: torch.Tensor, inputs: list[torch.Tensor], batched: bool, retain: bool
) -> list[torch.Tensor | None]:
    """Gradients of ``scores`` w.r.t. ``inputs``; never touches ``param.grad``.

    Not batched: of ``scores.sum()``. Batched: of each score separately, stacked on a new first
    dimension, from one vmapped backward (``is_grads_batched``); if an op of the model's backward
    cannot be batched, one backward per score over the retained graph. ``None`` for an input
    the scores do not depend on.
    """
    if not batched:
        summed = scores.float().sum()
        return list(torch.autograd.grad(summed, inputs, retain_graph=retain, allow_unused=True))
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
    return list(gs)


def _layer_map(
    jobs: list[LayerPass],
    method: Method,
    size: tuple[int, ...] | None,
) -> torch.Tensor:
    """Un-normalised map of one layer: one CAM per call of the layer, resized and summed.

    A layer called several times (a head shared across FPN levels) contributes one map per call;
    calls that did not influence the score have zero gradient and add nothing. Without ``size``
    the maps are summed at the first call's resolution.
    """
    if len(jobs) > 1 and method.replays_layer:
        raise ValueError(
            f"method {method.name!r} perturbs one layer output, but layer {jobs[0].layer!r} is "
            f"called {len(jobs)} times per forward; choose a layer called once (or a gradient "
            "method, which sums the calls)."
        )
    total: torch.Tensor | None = None
    for job in jobs:
        cam = method.layer_map(job)
        if total is None:
            total = upsample(cam, size) if size is not None else cam
        else:
            total = total + upsample(cam, size if size is not None else tuple(total.shape[1:]))
    assert total is not None
    return total


def _score_index(
    k: int, batch: int, batch_index: Sequence[int] | torch.Tensor | None
) -> torch.Tensor:
    """The image of each of ``k`` scores ``(K,)``: ``batch_index`` checked, else all zeros
    for one image or ``arange(K)`` when ``K == B``."""
    if batch_index is None:
        if batch != 1 and k != batch:
            raise ValueError(
                f"score_fn returned {k} scores for {batch} images: pass batch_index "
                "(the image of each score)."
            )
        return torch.zeros(k, dtype=torch.long) if batch == 1 else torch.arange(k)
    index = torch.as_tensor(batch_index, dtype=torch.long).cpu()
    if index.shape != (k,) or (k and (index.min() < 0 or index.max() >= batch)):
        raise ValueError(
            f"batch_index must hold {k} image indices in 0..{batch - 1}, got {index.tolist()}"
        )
    return index


_INPUTS = {1: "signals (B, C, L)", 2: "images (B, C, H, W)", 3: "volumes / videos (B, C, D, H, W)"}


def _check_rank(
    layer: str,
    act: torch.Tensor,
    layout: Callable[[torch.Tensor], torch.Tensor] | None,
    images: torch.Tensor,
) -> None:
    """Refuse a layer whose map (after its layout) is not of the input's spatial rank, or whose
    first dimension is not the batch: its map could not be laid over the input."""
    shape = tuple(act.shape)
    read = tuple(layout(act.detach()[:1]).shape) if layout is not None else shape
    rank = images.dim() - 2
    if shape[0] != images.shape[0] and layout is None:
        single = (
            " If images is a single image (C, H, W), add the batch dimension: images[None]."
            if images.dim() == 3
            else ""
        )
        raise ValueError(
            f"Layer {layer!r} outputs {shape}, whose first dimension is not the batch of "
            f"{images.shape[0]} {_INPUTS[rank]}: not one map per input.{single}"
        )
    if len(read) - 2 != rank:
        raise ValueError(
            f"Layer {layer!r} outputs {shape}"
            + (f" (read as {read})" if read != shape else "")
            + f": a map of {len(read) - 2} spatial dimension(s), but the inputs are "
            f"{_INPUTS[rank]} ({tuple(images.shape)}), so its map cannot be laid over them. "
            "Choose a layer whose output has the input's spatial rank (None: the default "
            "layer), or explain the sub-model that takes what this layer sees (e.g. a "
            "spectrogram model from the spectrogram)."
        )


@contextmanager
def _unbatched_image_hint(model: nn.Module, images: torch.Tensor) -> Iterator[None]:
    """A 3-D input to a model of 2-D convolutions only is most likely one image ``(C, H, W)``
    without its batch dimension (read here as signals ``(B, C, L)``): say so when it fails."""
    try:
        yield
    except (RuntimeError, ValueError) as err:  # torch's conv / norm shape errors
        ranks = {type(m) for m in model.modules()}
        if images.dim() != 3 or nn.Conv2d not in ranks or nn.Conv1d in ranks:
            raise
        raise ValueError(
            f"The model failed on images of shape {tuple(images.shape)}, read as a batch of "
            f"{images.shape[0]} signals (B, C, L), and it has 2-D convolutions only: if this is "
            "one image (C, H, W), add the batch dimension (images[None]). The model's error: "
            f"{err}"
        ) from err


def _keep(cam: torch.Tensor) -> torch.Tensor:
    """The raw map as is (``normalize=False``)."""
    return cam


def _check_guided_reachable(model: nn.Module) -> None:
    """Refuse guided backprop where compiled code would hide the ReLUs from the guided rule."""
    opaque = opaque_modules(model)
    if opaque:
        what = "; ".join(f"{name!r} is {kind}" for name, kind in opaque[:3])
        raise TypeError(
            f"Guided backprop needs the eager model, but {what}. Its guided ReLU rule is "
            "applied to F.relu & co. as Python calls them; code compiled by TorchScript or "
            "torch.compile runs them out of reach (the result would be the plain input "
            "gradient, silently). Pass the eager module instead (the module that was traced, "
            "scripted or compiled; for torch.compile(model), model or compiled._orig_mod). "
            "A top-level torch.compile / DataParallel / DDP wrapper is fine: its eager module "
            "is used."
        )


def _nonfinite_rows(t: torch.Tensor) -> torch.Tensor:
    """``(N,)``: whether row ``i`` of ``t`` ``(N, ...)`` holds a NaN or an inf.

    One read of ``t``, no copy (an expanded tensor stays expanded): a row's sum is finite only
    if every value is; the rows whose sum is not (a non-finite value, or finite values whose sum
    overflows) are then checked value by value.
    """
    if t.dim() < 2:
        return ~torch.isfinite(t)
    if not t.is_floating_point():
        return torch.zeros(t.shape[0], dtype=torch.bool, device=t.device)
    wide = torch.float64 if t.dtype == torch.float64 else torch.float32
    bad = ~torch.isfinite(t.sum(dim=tuple(range(1, t.dim())), dtype=wide))
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten()
        bad[idx] = ~torch.isfinite(t[idx]).flatten(1).all(1)
    return bad


def _mark_nonfinite(
    result: Explanation,
    scores: torch.Tensor,
    jobs: dict[str, list[LayerPass]],
    gb: torch.Tensor | None,
    activations_bad: torch.Tensor | None = None,
) -> None:
    """Find the samples with a non-finite score, activation, gradient or map (a method's own
    extra passes can be the first to meet a NaN: Score-CAM's baseline forward of a zero image,
    say); NaN all their maps, fused ones included. ``activations_bad``: the samples whose
    activations are known non-finite (then the jobs' activations, copies of the image's, are
    not scanned again)."""
    bad = ~torch.isfinite(scores.detach()).reshape(-1)
    if activations_bad is not None:
        bad = bad | activations_bad.to(bad.device)
    for layer_jobs in jobs.values():
        for job in layer_jobs:
            checked = (job.gradients,) if activations_bad is not None else (
                job.activations, job.gradients)
            for t in checked:
                if t is not None:
                    bad = bad | _nonfinite_rows(t).to(bad.device)
    maps = [m for ms in result.cams.values() for m in ms.values()] + list(result.fused.values())
    for t in ([gb] if gb is not None else []) + maps:
        bad = bad | _nonfinite_rows(t).to(bad.device)
    result.nonfinite = bad.cpu()
    if not bool(bad.any()):
        return
    nan = float("nan")
    for maps_of in (*result.cams.values(), *result.guided_cams.values(), result.fused):
        for m in maps_of.values():
            m[bad.to(m.device)] = nan
    if result.guided is not None:
        result.guided[bad.to(result.guided.device)] = nan


def _warn_nonfinite(nonfinite: torch.Tensor | None, what: str) -> None:
    if nonfinite is None or not bool(nonfinite.any()):
        return
    idx = torch.nonzero(nonfinite).flatten().tolist()
    shown = ", ".join(map(str, idx[:20])) + (" ..." if len(idx) > 20 else "")
    warnings.warn(
        f"Non-finite values (NaN or inf) in the score, the layer activations or the gradients "
        f"of {len(idx)} of {nonfinite.numel()} {what} (index {shown}): their maps are NaN, "
        "not explanations (check the inputs for NaN / inf and the model for overflow).",
        NonFiniteWarning,
        stacklevel=3,
    )


class Explainer:
    """Computes several CAM methods, guided backprop and guided Grad-CAM in one pass.

    Args:
        model: Any image model ``(B, C, H, W) -> output``.
        layer: Dotted name, module, list of either, or ``None`` for the default layer (see
            :func:`lightning_cam.engine.layers.default_layer`).
        methods: CAM methods to compute, any mix of :data:`lightning_cam.methods.METHODS`
            (``"gradcam"``, ``"layercam"``, ``"eigencam"``, ``"scorecam"`` ...). Gradient methods
            share the one forward and the one backward; activation methods need no backward
            (with only those, none runs); perturbation methods add their own batched forwards.
        guided_backprop: Also compute guided backprop gradients.
        guided_gradcam: Also compute guided Grad-CAM for every method and layer (implies guided
            backprop).
        max_batch: Explain at most this many images per forward/backward pass (``None``: the
            whole batch at once). Peak memory then scales with ``max_batch`` instead of the
            batch: worth it for guided backprop of large batches on small machines, where the
            backward must keep every activation of the network. Results are identical. A
            callable target applies to every chunk as it is, unless it has
            ``batch_slice(start, stop)`` returning the chunk's target (as
            :class:`~lightning_cam.engine.targets.SegmentationTarget` does for per-image parts).
            Perturbation methods also run at most this many inputs per extra forward.
        fuse: ``None``, or ``"mean"`` / ``"max"`` / ``"product"``: also fuse each method's maps
            of the given layers into one (``Explanation.fused[method]``), from the same pass.
        reshape_transform: How to read the layers' outputs as ``(B, C, h, w)``: ``"auto"``
            (recognised models: ViT tokens, Swin channels-last maps...), ``"tokens"``,
            ``"channels_last"``, ``"channels_first"`` or a callable ``output -> (B, C, h, w)``;
            see :mod:`lightning_cam.engine.layouts`.
        normalize: ``True`` (default): every map min-max normalised to [0, 1] per image.
            ``False``: the method's raw map (after its ReLU where it has one; upsampled
            bilinearly when ``upsample``), so maps can be compared across images, classes and
            checkpoints. Guided Grad-CAM then multiplies by the raw map; fused maps
            (``fuse=``) are always in [0, 1] (fusing needs a common scale).

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
        fuse: str | None = None,
        reshape_transform: ReshapeTransform = "auto",
        normalize: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r}")
        self.normalize = normalize
        if isinstance(methods, str):
            methods = (methods,)
        self.model = model
        self.methods = list(dict.fromkeys(method_name(m) for m in methods))
        self.fuse = check_fuse(fuse)
        self.reshape_transform = check_reshape_transform(reshape_transform)
        self._family: Family | None | bool = False  # recognised on first use
        # Only gradient methods (and guided backprop) need the backward; see _forward.
        self._needs_grad = any(METHODS[m].needs_backward for m in self.methods)
        self.layers = resolve_layers(model, layer)
        # The default layer depends on the input size (small inputs shrink the last stages to
        # 1 x 1): found once per size; ``layers`` reports the last one used.
        self._default_layers: dict[tuple[int, ...], str] | None = (
            {} if self.layers is None else None
        )
        self.guided_backprop = bool(guided_backprop or guided_gradcam)
        self.guided_gradcam = bool(guided_gradcam)
        # Input attributions (captum's) read no layer: with only those, none is captured.
        self._needs_layers = any(METHODS[m].needs_layer for m in self.methods)
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
        if self._default_layers is None:
            assert self.layers is not None
            return self.layers
        size = tuple(images.shape[1:])
        name = self._default_layers.get(size)
        if name is None:
            name = default_layer(self.model, images, forward=eager_forward(self.model))
            self._default_layers[size] = name
        self.layers = [name]
        return self.layers

    def __call__(
        self, images: torch.Tensor, target: TargetSpec = None, upsample: bool = True
    ) -> Explanation:
        """Explain a batch.

        Args:
            images: ``(B, C, H, W)`` floating-point images, as the model expects them (or
                ``(B, C, L)`` signals, ``(B, C, D, H, W)`` volumes / videos).
            target: ``None`` (predicted class), an ``int``, per-sample class ids, or a callable
                ``output -> (B,)`` scores.
            upsample: Return maps at the image size (bilinear; linear / trilinear for signals /
                volumes) instead of the layer's.

        Returns:
            An :class:`Explanation`.

        Samples with a non-finite score, activation or gradient get NaN maps and one
        :class:`NonFiniteWarning` per call names them (see :attr:`Explanation.nonfinite`).

        Raises:
            ValueError: Bad image shape, bad target, a layer that the forward never reaches,
                whose output is not a spatial map (or is 1 x 1), or that the scores do not
                depend on (e.g. inside a reentrant activation checkpoint).
            TypeError: Non-tensor or integer images, a target of another type than listed,
                outputs without logits for class targets, guided backprop through compiled or
                TorchScript parts of the model.
        """
        _check_images(images)
        spec = normalize_target(target)
        batch, step = images.shape[0], self.max_batch
        if step is None or batch <= step:
            result = self._explain(images, spec, upsample)
        else:
            ids = _per_sample_ids(spec, batch)
            result = concat_explanations(
                [
                    self._explain(images[i : i + step], _chunk(spec, ids, i, i + step), upsample)
                    for i in range(0, batch, step)
                ]
            )
        _warn_nonfinite(result.nonfinite, "images")
        return result

    def _explain(self, images: torch.Tensor, target: TargetSpec, upsample: bool) -> Explanation:
        target_fn = as_target(target)
        with self._forward(images, target_fn) as fwd:
            self._check_scores(fwd.scores, images.shape[0])
            grads, gb = self._backward(fwd, batched=False)
            ids = target_fn.last_class_ids if isinstance(target_fn, ClassTarget) else None
            try:
                logits: torch.Tensor | None = extract_logits(fwd.output).detach()
            except TypeError:
                logits = None
            jobs = {
                n: [
                    self._job(
                        n, fwd.read(n, a.detach().float()), fwd.read(n, g), fwd.x.detach(), ids,
                        logits,
                    )
                    for a, g in zip(fwd.capture.activations[n], gs, strict=True)
                ]
                for n, gs in grads.items()
            }
            inputs = self._attributions(fwd, ids, logits, target_fn)
            with torch.no_grad():
                result = self._assemble(tuple(images.shape[2:]), jobs, gb, upsample, inputs)
                _mark_nonfinite(result, fwd.scores, jobs, gb)
            result.scores = fwd.scores.detach().float()
            result.class_ids = ids
            result.logits = logits
            if isinstance(target_fn, ClassTarget):
                result.logits = _read_output_kind(self.model, target_fn, logits)
            return result

    def _attributions(
        self, fwd: _Pass, ids: torch.Tensor | None, logits: torch.Tensor | None,
        target_fn: Callable[[Any], torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The raw input-resolution maps ``(B, H, W)`` of the attribution methods (captum's),
        computed inside the borrowed forward (eval mode, lock held), with gradients on. LeGrad's
        tool scores with the class ids, or (``ids=None``) with the call's own target."""
        wanted = [m for m in self.methods if not METHODS[m].needs_layer]
        if not wanted:
            return {}
        from lightning_cam.engine.attention import attention_gradients
        from lightning_cam.engine.replay import LogitsOf

        job = LayerPass(
            torch.empty(0), None, "input", self.model, fwd.x.detach(), ids, logits,
            self.max_batch, logits_model=LogitsOf(self.model),
        )
        job.attention_gradients = lambda xs, cs: attention_gradients(
            self.model, xs, target_fn if cs is None else cs
        )
        with torch.enable_grad():
            return {m: METHODS[m].layer_map(job).detach() for m in wanted}

    def _job(
        self,
        layer: str,
        a: torch.Tensor,
        g: torch.Tensor | None,
        x: torch.Tensor | None,
        ids: torch.Tensor | None,
        logits: torch.Tensor | None,
    ) -> LayerPass:
        """What a method gets for one layer call; the extra-pass tools only where the methods
        need them (perturbation methods on class targets)."""
        job = LayerPass(a, g, layer, self.model, x, ids, logits, self.max_batch)
        if x is not None and any(METHODS[m].replays_layer for m in self.methods):
            from lightning_cam.engine.replay import PassTools

            tools = PassTools(
                self.model, layer, x, a, logits, lambda xs, cs: self._layer_gradients(layer, xs, cs)
            )
            job.forward_logits, job.replay = tools.forward_logits, tools.replay
            job.layer_gradients = tools.layer_gradients
        return job

    def _layer_gradients(
        self, layer: str, x: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations and class-score gradients of ``layer`` for other inputs (inside a
        borrowed forward: eval mode is set; runs one more forward + backward to the layer)."""
        with ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            capture = stack.enter_context(LayerCapture(self.model, [layer], detach=True))
            output = eager_forward(self.model)(x.detach())
            capture.close()
            with torch.enable_grad():
                scores = ClassTarget(ids)(output)
            (a,) = capture.activations[layer][:1]
            (g,) = _grad(scores, [a], batched=False, retain=False)
        if g is None:
            raise ValueError(f"The class scores do not depend on layer {layer!r}.")
        return a.detach().float(), g.float()

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
        classes_only = [m for m in self.methods if METHODS[m].needs_class_target]
        if classes_only:
            raise ValueError(
                f"methods {classes_only} explain classes only (they re-score other inputs or "
                "read the classifier's weights) and cannot explain arbitrary scores such as "
                "detections; use any of "
                f"{sorted(n for n, m in METHODS.items() if not m.needs_class_target)}."
            )
        with self._forward(images, score_fn) as fwd:
            scores = fwd.scores
            if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
                raise ValueError(
                    "score_fn must return a 1-D tensor of scores (K,), got "
                    f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)}"
                )
            k = scores.shape[0]
            index = _score_index(k, images.shape[0], batch_index)
            output = fwd.output
            if k == 0:
                return self._no_scores(images, fwd, scores), output
            grads, gb = self._backward(fwd, batched=True)
            rows = torch.arange(k)
            jobs = self._score_jobs(fwd, grads, rows, index)
            if gb is not None:
                gb = gb[rows.to(gb.device), index.to(gb.device)]
            with torch.no_grad():
                result = self._assemble(tuple(images.shape[2:]), jobs, gb, upsample)
                # each score's activations are its image's: checked once per image
                per_image = torch.zeros(images.shape[0], dtype=torch.bool)
                for acts in fwd.capture.activations.values():
                    for a in acts:
                        per_image |= _nonfinite_rows(a.detach()).cpu()
                _mark_nonfinite(result, scores, jobs, gb, per_image[index])
            _warn_nonfinite(result.nonfinite, "scores")
            result.scores = scores.detach().float()
            return result, output

    def _no_scores(self, images: torch.Tensor, fwd: _Pass, scores: torch.Tensor) -> Explanation:
        """The explanation of zero scores: empty maps ``(0, H, W)`` for every method and layer."""
        size = tuple(images.shape[2:])
        empty = Explanation(layers=list(fwd.names), scores=scores.detach().float())
        for m in self.methods:
            empty.cams[m] = {n: images.new_zeros((0, *size)).float() for n in fwd.names}
        return empty

    def _score_jobs(
        self,
        fwd: _Pass,
        grads: dict[str, list[torch.Tensor | None]],
        rows: torch.Tensor,
        index: torch.Tensor,
    ) -> dict[str, list[LayerPass]]:
        """One layer pass per captured call: score ``k`` reads image ``index[k]``'s activations
        and its own gradient ``g[k, index[k]]``. Scores of one image (one image explained, or
        all scores on the same one) read it without copies: its activations expanded, its
        gradients a view."""
        k = int(rows.numel())
        one = int(index[0]) if k and bool((index == index[0]).all()) else None
        jobs: dict[str, list[LayerPass]] = {}
        for n, gs in grads.items():
            jobs[n] = []
            for a, g in zip(fwd.capture.activations[n], gs, strict=True):
                dev = a.device
                act = a.detach().float()
                if one is not None:
                    act = act[one : one + 1].expand(k, *act.shape[1:])
                    grad = None if g is None else g[:, one]
                else:
                    act = act[index.to(dev)]
                    grad = None if g is None else g[rows.to(dev), index.to(dev)]
                jobs[n].append(self._job(n, fwd.read(n, act), fwd.read(n, grad), None, None, None))
        return jobs

    @contextmanager
    def _forward(self, images: torch.Tensor, target_fn: Callable[[Any], Any]) -> Iterator[_Pass]:
        """One forward pass with the borrowed model; hooks and modes live inside this block.

        The block holds the model's lock (:func:`borrowed`): calls on one model from several
        threads run one after the other. The model runs eagerly (:func:`eager_forward`: the
        module inside ``torch.compile`` / ``DataParallel`` / DDP wrappers).
        """
        model = self.model
        guided = self.guided_backprop
        with ExitStack() as stack:
            stack.enter_context(borrowed(model))
            stack.enter_context(torch.inference_mode(False))
            if guided:
                _check_guided_reachable(model)
            run = eager_forward(model)
            with _unbatched_image_hint(model, images):
                names = self._layer_names(images) if self._needs_layers else []
            x = images.detach().clone() if (images.is_inference() or guided) else images.detach()
            switch = GuidedSwitch(False)
            capture = stack.enter_context(
                LayerCapture(model, names, detach=self._needs_grad and not guided)
            )
            mode: GuidedReLUMode | None = None
            if guided:
                x.requires_grad_(True)
                stack.enter_context(torch.enable_grad())
                mode = stack.enter_context(GuidedReLUMode(switch, inputs_only=True))
            else:
                stack.enter_context(torch.no_grad())
            with _unbatched_image_hint(model, images):
                output = run(x)
            capture.close()
            with torch.enable_grad():
                scores = target_fn(output)
            self._check_capture(model, capture, names)
            if mode is not None and mode.unrecorded_relus:
                raise ValueError(
                    f"Guided backprop cannot reach {mode.unrecorded_relus} ReLU(s) of "
                    f"{type(unwrap(model)).__name__} that run without autograd recording inside "
                    "the forward, as in a reentrant activation checkpoint "
                    "(torch.utils.checkpoint.checkpoint(..., use_reentrant=True)): its backward "
                    "re-runs them where the guided rule does not apply, which would give the "
                    "plain gradient there. Checkpoint with use_reentrant=False (supported), or "
                    "turn checkpointing off for the explanation."
                )
            if mode is not None and mode.gates == 0:
                raise ValueError(
                    f"Guided backprop needs ReLU-family, GELU, SiLU or Hardswish gates on the "
                    f"forward path, and {type(unwrap(model)).__name__} has none: its guided "
                    "backward would be the plain input gradient. Drop guided_backprop / "
                    "guided_gradcam for this model (see lightning_cam.engine.guided)."
                )
            layouts = self._layouts(capture, names, images)
            yield _Pass(x, names, capture, switch, output, scores, layouts)

    def _layouts(
        self, capture: LayerCapture, names: list[str], images: torch.Tensor
    ) -> dict[str, Callable[[torch.Tensor], torch.Tensor] | None]:
        """How each captured layer's output reads as ``(B, C, h, w)`` (see
        :mod:`lightning_cam.engine.layouts`), decided before any backward."""
        if self._family is False:
            self._family = recognise(unwrap(self.model))
        family = self._family if isinstance(self._family, Family) else None
        size = tuple(int(s) for s in images.shape[2:])
        layouts = {
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
        for n, fn in layouts.items():
            _check_rank(n, capture.activations[n][0], fn, images)
        replayed = [m for m in self.methods if METHODS[m].replays_layer]
        folded = [n for n, fn in layouts.items() if fn is not None]
        if replayed and folded:
            raise ValueError(
                f"methods {replayed} replay the network after the layer with perturbed "
                f"activations, which needs the layer's own layout; layers {folded} are read "
                "through a reshape_transform (tokens or channels-last). Use gradient or "
                "activation methods for them, or a layer whose output is (B, C, h, w)."
            )
        return layouts

    def _backward(
        self, fwd: _Pass, batched: bool
    ) -> tuple[dict[str, list[torch.Tensor | None]], torch.Tensor | None]:
        """Gradients of the scores w.r.t. every captured activation (and guided, the input).

        Not batched: of the summed scores (samples do not interact in eval mode), shaped like
        the activations. Batched: one gradient per score, ``(K, *activation.shape)``.
        """
        guided = self.guided_backprop
        acts = [a for n in fwd.names for a in fwd.capture.activations[n]]
        scores = fwd.scores
        if not self._needs_grad:
            acts = []  # activation / perturbation methods only: no backward to the layers
        if acts and not scores.requires_grad:
            raise ValueError(self._unused_message(fwd, fwd.names))
        if guided and not scores.requires_grad:
            raise ValueError("The target's scores do not depend on the input images.")
        grads: list[torch.Tensor | None] = []
        if acts:
            with self._reentrant_checkpoint_refused(f"the layer(s) {fwd.names}"):
                grads = _grad(scores, acts, batched, retain=guided)
        gb: torch.Tensor | None = None
        if guided:
            fwd.switch.guided = True
            with self._reentrant_checkpoint_refused("the input"):
                (gin,) = _grad(scores, [fwd.x], batched, retain=False)
            if gin is None:
                raise ValueError("The target's scores do not depend on the input images.")
            gb = gin.float()
            fwd.switch.guided = False  # later passes (perturbation methods) back-propagate normally
        out: dict[str, list[torch.Tensor | None]] = {}
        if not acts:
            for n in fwd.names:
                out[n] = [None for _ in fwd.capture.activations[n]]
            return out, gb
        unused: list[str] = []
        it = iter(zip(grads, acts, strict=True))
        for n in fwd.names:
            pairs = [next(it) for _ in fwd.capture.activations[n]]
            if all(g is None for g, _ in pairs):
                unused.append(n)
            # a call no score depends on: zero gradients (batched: one zero, expanded)
            out[n] = [
                (a.new_zeros(()).expand(scores.shape[0], *a.shape) if batched
                 else torch.zeros_like(a))
                if g is None
                else g.float()
                for g, a in pairs
            ]
        if unused:
            raise ValueError(self._unused_message(fwd, unused))
        return out, gb

    @contextmanager
    def _reentrant_checkpoint_refused(self, start: str) -> Iterator[None]:
        """Turn torch's refusal to ``autograd.grad`` through a reentrant checkpoint into ours."""
        try:
            yield
        except RuntimeError as err:
            if "use_reentrant=True" not in str(err):
                raise
            raise ValueError(
                f"Between {start} and the output, {type(unwrap(self.model)).__name__} runs a "
                "reentrant activation checkpoint (torch.utils.checkpoint.checkpoint(..., "
                "use_reentrant=True)), which torch cannot differentiate with "
                "torch.autograd.grad (lightning-cam's backward: it never writes param.grad). "
                "Choose a layer after the checkpointed segment, or checkpoint with "
                "use_reentrant=False (supported, guided backprop included)."
            ) from err

    @staticmethod
    def _unused_message(fwd: _Pass, names: list[str]) -> str:
        inside = [n for n in names if n in fwd.capture.in_reentrant_checkpoint]
        if inside:
            return (
                f"Layer(s) {inside} run inside a reentrant activation checkpoint "
                "(torch.utils.checkpoint.checkpoint(..., use_reentrant=True)): that segment's "
                "forward records no autograd graph and its backward re-runs it out of reach, so "
                "the scores get no gradient through the recorded activations. Choose a layer "
                "outside the checkpointed segment, or checkpoint with use_reentrant=False."
            )
        return (
            f"The target's scores do not depend on the captured layer(s) {names}: nothing to "
            "differentiate (a blank map would not be an explanation). Check the layer (is it "
            "on the path to the output?) and the target."
        )

    def _assemble(
        self,
        size: tuple[int, ...],
        jobs: dict[str, list[LayerPass]],
        gb: torch.Tensor | None,
        do_upsample: bool,
        inputs: dict[str, torch.Tensor] | None = None,
    ) -> Explanation:
        names = list(jobs) or self._input_keys()
        result = Explanation(layers=names, guided=gb)
        scale = normalize_maps if self.normalize else _keep
        for m, raw in (inputs or {}).items():  # input attributions: one map, each layer's key
            result.cams[m] = {n: scale(raw) for n in names}
            if self.guided_gradcam:
                assert gb is not None
                result.guided_cams[m] = {n: gb * scale(raw)[:, None] for n in names}
            if self.fuse is not None:
                result.fused[m] = normalize_maps(raw)
        for m in self.methods:
            method = METHODS[m]
            if not method.needs_layer:
                continue
            result.cams[m] = {}
            if self.guided_gradcam:
                result.guided_cams[m] = {}
            raws = []
            for n in names:
                raw = _layer_map(jobs[n], method, None)  # at the layer's resolution
                raws.append(raw)
                full = raw
                if do_upsample or self.guided_gradcam:
                    # One call: resize its map; several calls: sum the resized calls.
                    single = len(jobs[n]) == 1
                    full = upsample(raw, size) if single else _layer_map(jobs[n], method, size)
                result.cams[m][n] = scale(full if do_upsample else raw)
                if self.guided_gradcam:
                    assert gb is not None
                    result.guided_cams[m][n] = gb * scale(full)[:, None]
            if self.fuse is not None:
                common = size if do_upsample else max((tuple(r.shape[1:]) for r in raws),
                                                      key=lambda s: torch.Size(s).numel())
                result.fused[m] = fuse_maps(raws, self.fuse, common, method.fuse_scale)
        return result

    def _input_keys(self) -> list[str]:
        """Where the input attributions are filed when no method needs a layer: the layers
        given (the pictures' names the caller asked for), else ``"input"``."""
        if self.layers is None:
            self.layers = [INPUT_KEY]
        return list(self.layers)

    @staticmethod
    def _check_capture(model: nn.Module, capture: LayerCapture, names: list[str]) -> None:
        for n in names:
            if n in capture.bad_outputs:
                raise ValueError(
                    f"Layer {n!r} outputs {capture.bad_outputs[n]}, not a spatial feature map "
                    "(B, C, h, w); choose a convolutional layer (or None for the default)."
                )
            acts = capture.activations[n]
            if acts and all(a.shape[2:].numel() == 1 for a in acts):
                raise ValueError(
                    f"Layer {n!r} outputs shape {tuple(acts[0].shape)}: a 1 x 1 map has no "
                    "spatial extent to explain (the layer comes after a global pooling, or the "
                    "input is too small for it); choose an earlier convolutional layer (or None "
                    "for the default)."
                )
            if not acts:
                script = script_ancestor(model, get_layer(model, n))
                if script is not None:
                    where = f"{script!r} is" if script else "the model is"
                    raise TypeError(
                        f"Layer {n!r} cannot be captured: {where} a TorchScript module "
                        "(torch.jit.trace / torch.jit.script), whose forward runs a compiled "
                        "graph that never calls the Python layers, so no hook sees them. Pass "
                        "the eager module (the one that was traced or scripted)."
                    )
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
