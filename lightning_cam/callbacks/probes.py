"""The probe set: a fixed set of validation samples, captured once, kept on CPU, checkpointed.

Samples are captured from the first validation batches as ordinary tensors (detached CPU
clones made outside inference mode, so user code may differentiate them whatever mode the
capture ran under) and assembled once by the task strategy (stacked images for
classification, ``(image, target)`` pairs for detection). A fingerprint of the content names
the set in the shared computation's keys: two callbacks holding equal probes share one pass.

Example:
    >>> import torch
    >>> probes = ProbeSet(size=2, state_name="probes")
    >>> probes.add([{"image": torch.zeros(3, 4, 4)}] * 3)
    >>> probes.finish(lambda samples: {"image": torch.stack([s["image"] for s in samples])})
    >>> probes.data["image"].shape, probes.data["image"].is_inference()
    (torch.Size([2, 3, 4, 4]), False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch


def plain_copy(value: Any) -> Any:
    """A detached CPU copy of every tensor in ``value`` (dicts, lists, tuples), made outside
    inference mode: ordinary tensors that autograd accepts."""
    with torch.inference_mode(False):
        return _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value


def fingerprint(value: Any) -> str:
    """A digest of the tensors (values, shapes, dtypes) and keys in ``value``."""
    digest = hashlib.blake2b(digest_size=16)

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(v, dict):
            for k in v:
                digest.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            digest.update(f"[{len(v)}".encode())
            for x in v:
                feed(x)
        else:
            digest.update(repr(v).encode())

    feed(value)
    return digest.hexdigest()


class ProbeSet:
    """Up to ``size`` samples, captured once and then fixed.

    Args:
        size: How many samples to capture.
        state_name: Key of the assembled probes in the owner's ``state_dict``.

    Attributes:
        data: The assembled probes (task-specific), or ``None`` until captured.
        token: Fingerprint of ``data`` (``None`` while empty).
    """

    def __init__(self, size: int, state_name: str) -> None:
        self.size = size
        self.state_name = state_name
        self._data: Any = None
        self.token: str | None = None
        self._pending: list[Any] = []

    @property
    def data(self) -> Any:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value
        self.token = None if value is None else fingerprint(value)

    @property
    def complete(self) -> bool:
        """Captured (or restored): no more samples are taken."""
        return self._data is not None

    @property
    def wanted(self) -> int:
        """How many more samples the capture takes."""
        return 0 if self.complete else max(0, self.size - len(self._pending))

    def add(self, samples: list[Any]) -> None:
        """Keep up to :attr:`wanted` of ``samples`` (copied with :func:`plain_copy`)."""
        take = self.wanted
        if take:
            self._pending += plain_copy(list(samples[:take]))

    def finish(self, assemble: Callable[[list[Any]], Any]) -> None:
        """Fix the set: ``data = assemble(samples)`` (outside inference mode)."""
        if not self.complete and self._pending:
            with torch.inference_mode(False):
                self.data = assemble(self._pending)
        self._pending = []

    def state_dict(self) -> dict[str, Any]:
        return {} if self._data is None else {self.state_name: self._data}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint; missing keys leave the set as it is."""
        if state.get(self.state_name) is not None:
            self.data = plain_copy(state[self.state_name])
            self._pending = []
