"""Guided backpropagation (Springenberg et al., ICLR 2015 workshop, "Striving for Simplicity").

Guided backprop changes the backward rule of each ReLU: the incoming gradient passes only where
both the forward input was positive (the usual ReLU rule) *and* the gradient itself is positive::

    R_l = (f_l > 0) * (R_{l+1} > 0) * R_{l+1}

Popular libraries swap ``nn.ReLU`` modules, which is silently wrong for models that call
``F.relu`` / ``torch.relu`` (Inception v3, DenseNet) or use ``ReLU6`` (MobileNet v2). Here a
``TorchFunctionMode`` intercepts the functions themselves — ``F.relu``, ``torch.relu``,
``Tensor.relu``, their in-place variants, ``F.relu6`` and ``F.hardtanh`` with ``min_val=0``
(what ``nn.ReLU6`` calls) — so module and functional ReLUs alike are covered.

The replacement ReLU's backward rule is read from a switch at *backward* time, so one forward
pass serves both an ordinary backward (for Grad-CAM) and a guided one (for guided backprop).

**Smooth gates (GELU, SiLU / Swish, Hardswish).** The guided rule is defined for ReLU-family
gates. For the smooth gates of modern networks (ConvNeXt and ViTs use GELU, EfficientNet SiLU,
MobileNet v3 Hardswish) lightning-cam applies the *positive-gradient rule*: the gate's own
backward on the positive part of the incoming gradient::

    R_l = f'(x_l) * max(R_{l+1}, 0)

For a ReLU, ``f'(x) = (x > 0)`` and this is exactly the rule above; for a smooth gate it keeps
the gate's local slope (which GELU and SiLU make slightly negative for negative inputs) instead
of a hard mask. ``F.gelu`` (``nn.GELU``, Hugging Face's GELU), ``F.silu`` (``nn.SiLU``) and
``F.hardswish`` are intercepted like the ReLUs; in-place variants are computed out of place
(inside non-reentrant checkpoints: ordinary gate, positive part of its output gradient).

A model with none of these gates on its forward path has no guided backward at all (the result
would be the plain gradient, silently): the engine refuses guided backprop for it. For
attention models (ViT, DeiT, Swin, MaxViT) gradients also flow through attention and residual
paths that no gate guides: guided images of them are mostly the plain gradient, and
:func:`guided_support` says so — callers with defaults (callbacks) should leave guided images
off there.

Activation checkpointing (``torch.utils.checkpoint``): the non-reentrant kind re-runs a segment
during the backward, where no ``TorchFunctionMode`` is active, and checks that the re-run saves
the same tensors. Inside such a segment the ReLUs therefore run unchanged and the guided rule is
a hook on their output's gradient (``R_l = relu'(f_l) * clamp(R_{l+1}, min=0)``, the same rule),
so forward and re-run match. The reentrant kind runs its segment without autograd recording and
re-runs it in its backward out of reach: ReLUs seen there are counted
(:attr:`GuidedReLUMode.unrecorded_relus`) so that the engine can refuse instead of returning a
plain gradient.

Example:
    >>> import torch
    >>> switch = GuidedSwitch()
    >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    >>> with GuidedReLUMode(switch):
    ...     y = torch.relu(x)
    >>> switch.guided = True
    >>> torch.autograd.grad(y, x, torch.tensor([5.0, -1.0, 2.0]))[0]
    tensor([0., 0., 2.])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from lightning_cam.engine.families import recognise
from lightning_cam.engine.wrappers import in_reentrant_checkpoint


class GuidedSwitch:
    """Selects the backward rule of the ReLUs recorded under a :class:`GuidedReLUMode`.

    Attributes:
        guided: ``False`` for the ordinary ReLU gradient, ``True`` for guided backprop.
    """

    def __init__(self, guided: bool = False) -> None:
        self.guided = guided


class _SwitchableClamp(torch.autograd.Function):
    """``clamp(x, lo, hi)`` whose backward is ordinary or guided depending on a switch."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        lo: float,
        hi: float | None,
        switch: GuidedSwitch,
        inplace: bool,
    ) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            out = x.clamp_(min=lo, max=hi)
        else:
            out = x.clamp(min=lo, max=hi)
        ctx.save_for_backward(out)
        ctx.lo, ctx.hi, ctx.switch = lo, hi, switch
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        # One fused kernel each: the gradient where lo < out (< hi), else 0. ``out`` is the
        # clamped output, so ``lo < out < hi`` exactly where ``lo < x < hi``.
        if ctx.hi is None:
            grad_in = torch.ops.aten.threshold_backward(grad, out, ctx.lo)
        else:
            grad_in = torch.ops.aten.hardtanh_backward(grad, out, ctx.lo, ctx.hi)
        if ctx.switch.guided:
            # Guided: also only where the incoming gradient is positive; on the already masked
            # gradient that is a clamp at 0 (in place: ``grad_in`` is a fresh tensor).
            grad_in = grad_in.clamp_(min=0)
        return grad_in, None, None, None, None


def _in_checkpoint() -> bool:
    """Whether a non-reentrant activation checkpoint records the current ops (its saved-tensor
    hooks are on top): its backward re-runs them and checks they save the same tensors, so ops
    are left as they are there."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    hooks = top(False) if top is not None else None
    if hooks is None:
        return False
    pack = hooks[0]
    return bool(getattr(pack, "_checkpoint_internal", False)) or "_checkpoint_hook" in getattr(
        pack, "__qualname__", ""
    )


def _guided_grad_hook(switch: GuidedSwitch) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """Hook for the gradient arriving at a ReLU's output: positive part when guided."""

    def hook(grad: torch.Tensor) -> torch.Tensor | None:
        return grad.clamp(min=0) if switch.guided else None

    return hook


class _SwitchableGate(torch.autograd.Function):
    """A smooth gate (``gelu``, ``silu``, ``hardswish``) whose backward is ordinary or follows
    the positive-gradient rule ``f'(x) * max(grad, 0)``, depending on a switch."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, kind: str, approximate: str, switch: GuidedSwitch
    ) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kind, ctx.approximate, ctx.switch = kind, approximate, switch
        if kind == "gelu":
            return F.gelu(x, approximate=approximate)
        return F.silu(x) if kind == "silu" else F.hardswish(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        if ctx.switch.guided:
            grad = grad.clamp(min=0)
        if ctx.kind == "gelu":
            grad_in = torch.ops.aten.gelu_backward(grad, x, approximate=ctx.approximate)
        elif ctx.kind == "silu":
            grad_in = torch.ops.aten.silu_backward(grad, x)
        else:
            grad_in = torch.ops.aten.hardswish_backward(grad, x)
        return grad_in, None, None, None


def _gate_spec(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, str, str] | None:
    """Return (input, kind, approximate) when ``func`` is a smooth gate, else None."""
    if func is F.gelu:
        return args[0], "gelu", str(_arg(args, kwargs, 1, "approximate", "none"))
    if func is F.silu:
        return args[0], "silu", "none"
    if func is F.hardswish:
        return args[0], "hardswish", "none"
    return None


def guided_support(model: nn.Module) -> str | None:
    """Whether guided backprop shows something of ``model``: ``None`` when it does, else the
    reason it would be mostly the plain gradient (attention models, recognised by
    :func:`lightning_cam.engine.families.recognise`; the record's ``guided_unsupported``).

    Use it for defaults (callbacks: guided images on only when this is ``None``); an explicit
    request still runs (the smooth gates follow the positive-gradient rule).

    Example:
        >>> import torchvision
        >>> guided_support(torchvision.models.resnet18(weights=None)) is None
        True
    """
    family = recognise(model)
    if family is not None and family.guided_unsupported is not None:
        return f"a {family.name}: {family.guided_unsupported}"
    return None


class _EvalBatchNorm(torch.autograd.Function):
    """Eval-mode ``F.batch_norm``, differentiable w.r.t. its input only.

    In eval mode batch norm is a per-channel affine map ``y = x * s + t`` with
    ``s = weight / sqrt(running_var + eps)``, so its input gradient is ``grad * s``. Autograd's
    own rule saves the input (a whole activation, kept alive until the backward, for the
    weight gradient nobody asks for here) and runs the general backward kernel; this one saves
    ``s`` (one value per channel) and multiplies. The forward is ``F.batch_norm`` itself.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
    ) -> torch.Tensor:
        out = F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)
        scale = torch.rsqrt(running_var.to(torch.float32) + eps)
        if weight is not None:
            scale = scale * weight.to(torch.float32)
        ctx.save_for_backward(scale)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        shape = (1, -1) + (1,) * (grad.dim() - 2)
        return grad * scale.to(grad.dtype).view(shape), None, None, None, None, None


def _eval_batch_norm_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any, Any, Any, Any, float] | None:
    """``(x, running_mean, running_var, weight, bias, eps)`` of an eval-mode ``F.batch_norm``
    call (running statistics used, not updated), else None."""
    x = args[0] if args else kwargs.get("input")
    mean = _arg(args, kwargs, 1, "running_mean", None)
    var = _arg(args, kwargs, 2, "running_var", None)
    if _arg(args, kwargs, 5, "training", False) or mean is None or var is None:
        return None
    weight = _arg(args, kwargs, 3, "weight", None)
    bias = _arg(args, kwargs, 4, "bias", None)
    if not (isinstance(x, torch.Tensor) and isinstance(mean, torch.Tensor)
            and isinstance(var, torch.Tensor)) or x.dim() < 2:
        return None
    return x, mean, var, weight, bias, float(_arg(args, kwargs, 7, "eps", 1e-5))


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str, default: Any) -> Any:
    if len(args) > pos:
        return args[pos]
    return kwargs.get(name, default)


def _relu_spec(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, float, float | None, bool] | None:
    """Return (input, lo, hi, inplace) when ``func`` is a ReLU-like clamp at zero, else None."""
    if func in (F.relu, torch.relu, torch.Tensor.relu):
        return args[0], 0.0, None, bool(_arg(args, kwargs, 1, "inplace", False))
    if func in (torch.relu_, torch.Tensor.relu_):
        return args[0], 0.0, None, True
    if func is F.relu6:
        return args[0], 0.0, 6.0, bool(_arg(args, kwargs, 1, "inplace", False))
    if func in (F.hardtanh, F.hardtanh_):
        lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
        hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
        if lo != 0.0:
            return None
        inplace = func is F.hardtanh_ or bool(_arg(args, kwargs, 3, "inplace", False))
        return args[0], lo, hi, inplace
    return None


class GuidedReLUMode(TorchFunctionMode):
    """Records every ReLU / ReLU6 (and GELU / SiLU / Hardswish, see the module docstring) of a
    forward pass with a switchable backward rule.

    Only ReLUs whose input takes part in autograd are replaced. With ``inputs_only`` (what the
    engine uses: it never differentiates w.r.t. parameters), eval-mode ``F.batch_norm`` (what
    ``nn.BatchNorm*d`` calls in eval mode) is recorded with an input-only backward
    (:class:`_EvalBatchNorm`): the same input gradient, without keeping its input alive until
    the backward (half the guided backward's memory on ResNets), but no gradient for its weight
    and bias. Everything else runs unchanged.

    Inside non-reentrant activation checkpoints the ReLUs and batch norms run unchanged and the
    guided rule is a gradient hook on the ReLU's output (see the module docstring).

    Args:
        switch: Shared switch read by the recorded ReLUs at backward time.
        inputs_only: The graph is only differentiated w.r.t. activations and inputs, never
            w.r.t. parameters.

    Attributes:
        unrecorded_relus: ReLUs seen inside a reentrant activation checkpoint, whose forward
            records no graph and whose backward re-runs them without the guided rule.
        gates: Gates recorded with the guided rule (ReLU family and smooth gates).
    """

    def __init__(self, switch: GuidedSwitch, inputs_only: bool = False) -> None:
        super().__init__()
        self.switch = switch
        self.inputs_only = inputs_only
        self.unrecorded_relus = 0
        self.gates = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.batch_norm and self.inputs_only:
            bn = _eval_batch_norm_args(args, kwargs)
            if (
                bn is not None
                and torch.is_grad_enabled()
                and bn[0].requires_grad
                and not _in_checkpoint()
            ):
                return _EvalBatchNorm.apply(*bn)
            return func(*args, **kwargs)
        spec = _relu_spec(func, args, kwargs)
        if spec is not None:
            x, lo, hi, inplace = spec
            if not torch.is_grad_enabled():
                if in_reentrant_checkpoint():
                    self.unrecorded_relus += 1
            elif isinstance(x, torch.Tensor) and x.requires_grad:
                self.gates += 1
                if _in_checkpoint():
                    out = func(*args, **kwargs)
                    if isinstance(out, torch.Tensor) and out.requires_grad:
                        out.register_hook(_guided_grad_hook(self.switch))
                    return out
                else:
                    return _SwitchableClamp.apply(x, lo, hi, self.switch, inplace)
        gate = _gate_spec(func, args, kwargs)
        if gate is not None:
            x, kind, approximate = gate
            if not torch.is_grad_enabled():
                if in_reentrant_checkpoint():
                    self.unrecorded_relus += 1
            elif isinstance(x, torch.Tensor) and x.requires_grad:
                self.gates += 1
                if _in_checkpoint():  # f'(x) * max(grad, 0): autograd's f' after the hook
                    out = func(*args, **kwargs)
                    if isinstance(out, torch.Tensor) and out.requires_grad:
                        out.register_hook(_guided_grad_hook(self.switch))
                    return out
                return _SwitchableGate.apply(x, kind, approximate, self.switch)
        return func(*args, **kwargs)
