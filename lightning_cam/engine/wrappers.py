"""What the engine runs: the eager module behind wrappers, and the compiled parts it cannot reach.

Explanations need Python to see the model's layers and ReLUs: forward hooks record a layer's
activations, and guided backprop intercepts ``F.relu`` & co. at ``torch.function`` level. Some
ways of running a model hide them:

* ``torch.compile(model)`` returns an ``OptimizedModule`` around the eager module
  (``._orig_mod``, the same parameters); Lightning's trainer turns a compiled LightningModule into
  the module with a compiled ``forward`` (the eager one is kept in ``_compiler_ctx``).
  ``nn.DataParallel`` / ``DistributedDataParallel`` wrap the module (``.module``): replicas run
  in other threads (or ranks must join), where this process's hooks and modes do not apply.
  :func:`unwrap` finds the eager module and :func:`eager_forward` its eager forward: the engine
  runs those, so maps and guided backprop are those of the eager model, with the same weights.
* TorchScript (``torch.jit.trace`` / ``torch.jit.script``) runs a graph without Python: no hook
  fires inside it, and no ReLU can be intercepted. Submodules compiled in place
  (``module.compile()``, ``torch.compile`` of a submodule) run code generated once, with the
  backward rule baked in. :func:`opaque_modules` lists such parts; the engine refuses guided
  backprop on a model that has them, and a layer inside TorchScript, saying why and what to pass
  instead (the eager module).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> unwrap(nn.DataParallel(net)) is net, unwrap(torch.compile(net)) is net
    (True, True)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

_PARALLEL: tuple[type[nn.Module], ...] = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def _optimized_module_type() -> type | None:
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except Exception:  # pragma: no cover - torch without dynamo
        return None
    return OptimizedModule  # type: ignore[no-any-return]


def _compiled_wrapper(module: nn.Module) -> bool:
    optimized = _optimized_module_type()
    return optimized is not None and isinstance(module, optimized)


def unwrap(model: nn.Module) -> nn.Module:
    """Return the eager module inside ``torch.compile`` / ``DataParallel`` / DDP wrappers.

    The wrappers share their parameters with the module they wrap, so explaining the eager
    module explains the wrapped model. Any other module is returned as is.
    """
    while True:
        if _compiled_wrapper(model):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, _PARALLEL):
            model = model.module  # type: ignore[assignment]
        else:
            return model


def _eager_bound_forward(module: nn.Module) -> Callable[..., Any] | None:
    """The eager ``forward`` of a module whose ``forward`` was replaced by a compiled one (what
    Lightning does to a compiled LightningModule), else ``None``."""
    forward = module.__dict__.get("forward")
    if forward is None:
        return None
    ctx = getattr(module, "_compiler_ctx", None)
    if isinstance(ctx, dict) and callable(ctx.get("original_forward")):
        return ctx["original_forward"]  # type: ignore[no-any-return]
    orig = getattr(forward, "_torchdynamo_orig_callable", None)
    return orig if callable(orig) else None


def eager_forward(model: nn.Module) -> Callable[..., Any]:
    """Return what to call to run ``model`` eagerly: :func:`unwrap`'s module; its uncompiled
    call when it was compiled in place (``module.compile()``); its eager ``forward`` when
    Lightning replaced it by a compiled one.

    The module's own hooks run, except in the last case (hooks on the *top* module do not run
    then; the engine hooks submodules only).
    """
    module = unwrap(model)
    forward = _eager_bound_forward(module)
    if forward is not None:
        return forward
    if getattr(module, "_compiled_call_impl", None) is not None:
        return module._call_impl
    return module


def opaque_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``(dotted name, what)`` of the parts of :func:`unwrap`'s module that Python cannot see
    into: TorchScript modules, compiled submodules, compiled ``forward`` methods of submodules.

    The top module's own compilation (in place, or Lightning's compiled ``forward``) is not
    listed: :func:`eager_forward` bypasses it.
    """
    found: list[tuple[str, str]] = []
    root = unwrap(model)
    for name, module in root.named_modules():
        label = name or "the model"
        if isinstance(module, torch.jit.ScriptModule):
            found.append((label, "a TorchScript module (torch.jit.trace / torch.jit.script)"))
        elif _compiled_wrapper(module):
            found.append((label, "compiled (torch.compile)"))
        elif name and getattr(module, "_compiled_call_impl", None) is not None:
            found.append((label, "compiled in place (module.compile())"))
        elif name and _eager_bound_forward(module) is not None:
            found.append((label, "compiled (its forward is a torch.compile'd function)"))
    return found


def script_ancestor(model: nn.Module, layer: nn.Module) -> str | None:
    """The dotted name (``""`` for the model itself) of a TorchScript module that is or holds
    ``layer``, else ``None``: hooks on such a layer never fire."""
    for name, module in unwrap(model).named_modules():
        if isinstance(module, torch.jit.ScriptModule) and any(
            m is layer for m in module.modules()
        ):
            return name
    return None


_REENTRANT_CHECKPOINT = (torch.utils.checkpoint.CheckpointFunction.forward.__code__,)


def in_reentrant_checkpoint(depth: int = 64) -> bool:
    """Whether the caller runs inside ``torch.utils.checkpoint(..., use_reentrant=True)``, whose
    segment records no autograd graph and is re-run, out of reach, in the backward."""
    frame = sys._getframe(1)
    while frame is not None and depth > 0:
        if frame.f_code in _REENTRANT_CHECKPOINT:
            return True
        frame, depth = frame.f_back, depth - 1  # type: ignore[assignment]
    return False
