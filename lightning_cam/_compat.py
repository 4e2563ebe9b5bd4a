"""Both Lightning namespaces: ``pytorch_lightning`` and ``lightning.pytorch``.

A Trainer of one namespace rejects callbacks of the other (``isinstance`` checks against its own
``Callback``). lightning-cam's callbacks derive from *both* ``Callback`` classes when both
packages are installed, so one class serves either Trainer; the same holds for
:class:`MisconfigurationException`, which users of either namespace can catch.
"""

from __future__ import annotations

import importlib
from typing import Any

_CALLBACKS: list[type] = []
_MISCONF: list[type] = []
_LOGGER_BASES: list[type] = []

for _ns in ("pytorch_lightning", "lightning.pytorch"):
    try:
        _mod = importlib.import_module(_ns)
    except ImportError:  # pragma: no cover - depends on what is installed
        continue
    _CALLBACKS.append(_mod.Callback)
    _exc = importlib.import_module(f"{_ns}.utilities.exceptions")
    if _exc.MisconfigurationException not in _MISCONF:
        _MISCONF.append(_exc.MisconfigurationException)

if not _CALLBACKS:  # pragma: no cover
    raise ImportError(
        "lightning-cam needs PyTorch Lightning: pip install pytorch-lightning (or lightning)"
    )

#: A ``Callback`` base that is an instance of every installed namespace's ``Callback``.
CallbackBase: Any = type("CallbackBase", tuple(_CALLBACKS), {"__module__": __name__})


class MisconfigurationException(*_MISCONF):  # type: ignore[misc]
    """Raised for a bad callback argument; an instance of each namespace's exception of that
    name, so ``except MisconfigurationException`` works whichever namespace the user imports."""


def callback_namespaces() -> list[str]:
    """The Lightning namespaces whose Trainer accepts lightning-cam's callbacks."""
    return [c.__module__.split(".callbacks")[0] for c in _CALLBACKS]
