"""Borrowing the user's model: one lock per model, eval mode restored, hooks that live for one
forward.

Everything here undoes itself in ``finally`` (also when the model raises): training flags,
forward hooks. Nothing writes parameter ``.grad``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lightning_cam.engine.layers import get_layer
from lightning_cam.engine.wrappers import in_reentrant_checkpoint, unwrap

__all__ = ["LayerCapture", "borrowed", "model_lock"]


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that serialises lightning-cam's calls on ``model`` (one per model, shared by
    the wrappers of a module: ``torch.compile``, ``DataParallel``, DDP).

    Re-entrant: a call that borrows the model again in the same thread does not wait.
    """
    key = unwrap(model)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.RLock()
        return lock


@contextmanager
def borrowed(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the duration; restore every module's flag afterwards.

    Calls on one model are serialised: the block holds :func:`model_lock` (threads explaining
    the same model wait for each other; other models run in parallel). Only modules in training
    mode are touched: a model already in eval mode costs one walk.
    """
    with model_lock(model):
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
        self.in_reentrant_checkpoint: set[str] = set()
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
            if not torch.is_grad_enabled() and in_reentrant_checkpoint():
                self.in_reentrant_checkpoint.add(name)
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
