"""The computation shared by the CAM callbacks of one trainer.

Several callbacks with the same probe settings (Grad-CAM and Grad-CAM++ on one layer, say) are
served by one forward and one backward pass per validation. A result is keyed by what really
determines it: the model (identity and weights version), the probe set's fingerprint, the task
settings, the methods, the layers and whether a guided pass ran; and it lives for one
validation / test run only (:meth:`SharedResults.begin_run` drops everything at the start of
each run), so two ``trainer.validate()`` calls at the same step never see each other's maps.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any

from torch import nn


def weights_version(module: nn.Module) -> tuple[int, int]:
    """``(id, version)`` of ``module``'s weights: the version sums the in-place version counters
    of its parameters and buffers (an optimizer step or ``load_state_dict`` changes it)."""
    version = 0
    for t in (*module.parameters(), *module.buffers()):
        try:
            version += int(t._version)
        except RuntimeError:  # inference tensors carry no version counter
            version += 1 << 40
    return id(module), version


class SharedResults:
    """Results per trainer and key, dropped at the start of every run."""

    def __init__(self) -> None:
        self._store: weakref.WeakKeyDictionary[Any, dict[Hashable, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def begin_run(self, trainer: Any) -> None:
        """Forget every result of ``trainer``: a new validation / test run starts."""
        self._store.pop(trainer, None)

    def get(self, trainer: Any, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The result for ``key`` in the current run of ``trainer``, computed once."""
        cache = self._store.setdefault(trainer, {})
        if key not in cache:
            cache[key] = compute()
        return cache[key]


#: The process-wide store of the CAM callbacks.
SHARED = SharedResults()
