"""The shared steps of every method: combine, normalise, upsample; and what a method is given.

A method turns what one forward (and backward) left for a layer — a :class:`LayerPass` — into a
map ``(B, *spatial)``. Gradient methods are *weighting functions* ``(A, g) -> weights`` that
broadcast against the activations ``A`` (or, for a few, a map directly); everything after that —
the weighted sum over channels, ReLU, upsampling, normalisation, fusing layers — is shared here.

Example:
    >>> import torch
    >>> A = torch.rand(2, 8, 7, 7)
    >>> combine(A, torch.ones(2, 8, 1, 1)).shape
    torch.Size([2, 7, 7])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

WeightFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Kind = Literal["gradient", "activation", "perturbation", "attribution"]
#: The kinds of method: the three CAM kinds in the order their cost grows, then the input
#: attributions (captum's, :mod:`lightning_cam.methods.attribution`), which need no layer.
KINDS: tuple[Kind, ...] = ("gradient", "activation", "perturbation", "attribution")


def spatial_dims(t: torch.Tensor) -> tuple[int, ...]:
    """The spatial dimensions of a ``(B, K, *spatial)`` tensor."""
    return tuple(range(2, t.dim()))


def normalize_maps(cam: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Min-max normalise each map of ``(B, *spatial)`` to [0, 1].

    A constant map (all zero after the ReLU, say) becomes all zero, never NaN. A map with a
    non-finite value (NaN / inf, e.g. from NaN logits of a perturbation forward) becomes all
    NaN: it is not an explanation, and must never read as a blank one.

    ``inplace``: write the result into ``cam`` (a contiguous floating-point tensor the caller
    owns) and return it, instead of a new tensor.
    """
    if inplace and not (cam.is_floating_point() and cam.is_contiguous()):
        raise ValueError("normalize_maps(inplace=True) needs a contiguous floating-point tensor")
    flat = (cam if cam.is_floating_point() else cam.float()).flatten(1)
    # amin / amax propagate NaN, and an inf is an extreme: a row is non-finite iff they are
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    rng = hi - lo
    spread = rng > 0
    out = flat.sub_(lo) if inplace else flat - lo  # the one full-size allocation, if any
    out.div_(torch.where(spread, rng, torch.ones_like(rng)))
    if not bool(spread.all()):
        out.masked_fill_(~spread, 0.0)
    bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
    if bool(bad.any()):
        out.masked_fill_(bad, float("nan"))
    return out.view_as(cam)


def combine(
    activations: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """The shared step: ``ReLU(sum_k w_k A^k)`` in float32, not normalised, not upsampled.

    Args:
        activations: ``(B, K, *spatial)``.
        weights: broadcastable to ``activations`` (``(B, K, 1, ..., 1)`` for channel weights).

    Returns:
        ``(B, *spatial)`` float32 map.
    """
    with torch.autocast(device_type=activations.device.type, enabled=False):
        return F.relu((weights.float() * activations.float()).sum(dim=1))


def upsample(cam: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinearly resize ``(B, h, w)`` maps to ``size`` (align_corners=False)."""
    if tuple(cam.shape[1:]) == tuple(size):
        return cam
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(cam[:, None], size=size, mode=mode, align_corners=False)[:, 0]


def _no_tool(what: str) -> Callable[..., Any]:
    def missing(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError(
            f"This method needs {what}, which this surface does not provide (e.g. detection "
            "scores from a callable target); use a gradient or activation method here."
        )

    return missing


@dataclass
class LayerPass:
    """What one forward (and backward) pass left for one layer, given to a method.

    The engine fills it; methods only read it (and call the tools it carries, which run the
    borrowed model the engine set up: eval mode, hooks removed, no parameter gradient).

    Attributes:
        activations: ``(B, K, *spatial)`` float32, detached.
        gradients: ``(B, K, *spatial)`` float32 ``d score / d activations``, or ``None`` when no
            backward ran (activation and perturbation methods need none).
        layer: Dotted name of the layer.
        model: The model (for methods that read its structure, e.g. CAM's classifier weights).
        images: ``(B, C, H, W)`` the explained inputs (detached), or ``None``.
        class_ids: ``(B,)`` class explained per sample for class targets, else ``None``.
        logits: ``(B, num_classes)`` of the forward, when the output has them.
        max_batch: Inputs per extra forward (``None``: the method picks a memory-bounded size).
        forward_logits: ``images (N, C, H, W) -> (N, num_classes)`` class logits of other
            inputs, no grad (Score-CAM's masked inputs).
        replay: ``(activations (N, K, *spatial), rows (N,), ids (N,)) -> (N,)``: class scores
            when the layer outputs ``activations`` for images ``rows`` (Ablation-CAM); runs only
            the network after the layer where it can be split off. ``ids=None``: all class
            scores ``(N, num_classes)``; differentiable in ``activations`` that require grad
            (Shapley-CAM, Finer-CAM).
        layer_gradients: ``(images (N, C, H, W), ids (N,)) -> (activations, gradients)`` of the
            layer for other inputs (Smooth Grad-CAM++'s noisy samples).
        logits_model: A module ``images (N, C, H, W) -> (N, num_classes)`` class scores,
            differentiable (the borrowed model, in eval mode, read as the class targets read
            it), for the attribution methods (captum's); ``None`` where not provided.
        attention_gradients: ``(images (N, C, H, W), ids (N,) | None) -> (grads, prefix, (gh,
            gw))``: per transformer block, ``d s^l / d P^l`` ``(N, heads, T, T)`` of the score
            its tokens get from the model's head (the class ``ids``; ``None``: the call's own
            target, e.g. a CLIP text similarity, on the images of the call) w.r.t. its attention
            probabilities, the number of prefix tokens and the patch grid (LeGrad).
    """

    activations: torch.Tensor
    gradients: torch.Tensor | None = None
    layer: str = ""
    model: nn.Module | None = None
    images: torch.Tensor | None = None
    class_ids: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    max_batch: int | None = None
    forward_logits: Callable[[torch.Tensor], torch.Tensor] = field(
        default_factory=lambda: _no_tool("class logits of extra forward passes")
    )
    replay: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] = field(
        default_factory=lambda: _no_tool("to replay the network after the layer")
    )
    layer_gradients: Callable[
        [torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
    ] = field(default_factory=lambda: _no_tool("the layer's gradients for other inputs"))
    logits_model: nn.Module | None = None
    attention_gradients: Callable[
        [torch.Tensor, torch.Tensor | None], tuple[list[torch.Tensor], int, tuple[int, int]]
    ] = field(default_factory=lambda: _no_tool("a ViT's attention maps"))

    def require_class_ids(self, method: str) -> torch.Tensor:
        """The class ids, or a clear error for targets that are not classes."""
        if self.class_ids is None:
            raise ValueError(
                f"method {method!r} needs class targets (None, an int or per-image class ids) "
                "to score its extra forward passes; a callable target or detection scores "
                "cannot be re-evaluated on other inputs. Use a gradient method (e.g. "
                "'gradcam', 'layercam') for such targets."
            )
        return self.class_ids


def chunk_size(max_batch: int | None, item: torch.Tensor, budget_mb: float = 64.0) -> int:
    """Inputs per extra forward: ``max_batch``, else as many copies of ``item`` as fit in
    ``budget_mb`` MiB (at least 1)."""
    if max_batch is not None:
        return max_batch
    per = max(1, item.numel() * item.element_size())
    return max(1, int(budget_mb * 2**20 // per))


@dataclass(frozen=True)
class Method:
    """One registered CAM method: the registry entry every surface reads.

    Attributes:
        name: Canonical name users pass as ``methods=`` / ``--method`` (``"layercam"``).
        class_name: Name of the generated public class (``"LayerCAM"``).
        kind: ``"gradient"`` (weights from activations and gradients: one forward + one
            backward shared by all of them), ``"activation"`` (activations only: no backward),
            ``"perturbation"`` (extra forward passes, batched, bounded by ``max_batch``), or
            ``"attribution"`` (captum's input attributions: no layer; maps at the input's
            resolution; extra forward and backward passes, bounded by ``max_batch``).
        paper: The reference (authors, title, venue, year).
        compute: The computation. Gradient methods: a function ``(A, g) -> weights`` that
            broadcast against ``A`` (or ``-> map`` when ``returns == "map"``). Activation and
            perturbation methods: a function ``(LayerPass) -> weights`` (or ``-> map``).
            Attribution methods: ``(LayerPass) -> (B, H, W)`` map at the input's resolution.
        returns: ``"weights"`` (combined as ``ReLU(sum_k w_k A^k)``) or ``"map"`` (ReLU'd as is).
        title: Display name (``"Layer-CAM"``).
        aliases: Other accepted spellings (case-insensitive).
        fuse_scale: How each layer's raw map is scaled before multi-layer fusion (``None``:
            min-max normalisation). LayerCAM registers its paper's ``tanh(2 M / max M)``.
        relu: Clip the map at zero (every method but CAM, whose paper shows ``sum_k w_k A^k``
            min-max normalised as is).
        needs_class_target: Explains classes only (``target`` ``None``, an int or class ids):
            CAM and the perturbation methods, which re-score other inputs or read the
            classifier's weights. Surfaces with other targets (detection scores, callables)
            refuse these up front.
        doc_example: The generated class's docstring example (doctest lines), where the
            generic one (a small convnet) does not apply (LeGrad needs a ViT).
    """

    name: str
    class_name: str
    kind: Kind
    paper: str
    compute: Callable[..., torch.Tensor]
    returns: Literal["weights", "map"] = "weights"
    title: str = ""
    aliases: tuple[str, ...] = ()
    fuse_scale: Callable[[torch.Tensor], torch.Tensor] | None = None
    relu: bool = True
    needs_class_target: bool = False
    doc_example: str = ""

    @property
    def needs_backward(self) -> bool:
        """Whether the method needs the gradients of the shared backward (``kind ==
        "gradient"``: its ``compute`` is a weighting function of ``(A, g)``)."""
        return self.kind == "gradient"

    @property
    def extra_passes(self) -> bool:
        """Whether the method runs extra forward passes of its own, batched by ``max_batch``
        (``kind`` ``"perturbation"`` or ``"attribution"``): the costly ones."""
        return self.kind in ("perturbation", "attribution")

    @property
    def replays_layer(self) -> bool:
        """Whether the method replays the network after the layer on perturbed activations
        (``kind == "perturbation"``), so the layer must be called once and read as it is."""
        return self.kind == "perturbation"

    @property
    def needs_layer(self) -> bool:
        """Whether the method reads a layer (every CAM); ``False`` for the input attributions
        (``kind == "attribution"``), whose maps are the input's: the engine files them under
        each explained layer's name (the same map), or under ``"input"`` when no method of the
        call needs a layer."""
        return self.kind != "attribution"

    def layer_map(self, job: LayerPass) -> torch.Tensor:
        """The un-normalised map ``(B, *spatial)`` of one layer (ReLU'd, float32)."""
        if self.needs_backward:
            if job.gradients is None:
                raise ValueError(f"method {self.name!r} needs gradients; none were computed")
            out = self.compute(job.activations, job.gradients)
        else:
            out = self.compute(job)
        if self.returns == "weights":
            if not self.relu:
                with torch.autocast(device_type=out.device.type, enabled=False):
                    return (out.float() * job.activations.float()).sum(dim=1)
            return combine(job.activations, out)
        return F.relu(out.float()) if self.relu else out.float()

    def __call__(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """The weighting function itself (gradient methods): ``METHODS[name](A, g)``."""
        if not self.needs_backward:
            raise TypeError(
                f"method {self.name!r} is a {self.kind} method, not a weighting function of "
                "(activations, gradients); use Method.layer_map(LayerPass(...))."
            )
        return self.compute(activations, gradients)
