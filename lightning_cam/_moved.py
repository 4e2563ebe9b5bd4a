"""Old module paths, kept working: ``lightning_cam.viz`` is :mod:`lightning_cam.tools.viz` ...

The third round put the package's 22 root modules into layers (engine, zoo, tools, cli). Code,
YAML files and ``--reshape-transform lightning_cam.layouts.channels_last`` written before keep
working: importing an old path gives the module at its new home (the same module object, so a
monkeypatch through either name is seen by both).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

#: Old module (relative to ``lightning_cam``) -> its home now.
MOVED: dict[str, str] = {
    "cam": "engine.cam",
    "guided": "engine.guided",
    "layers": "engine.layers",
    "layouts": "engine.layouts",
    "replay": "engine.replay",
    "targets": "engine.targets",
    "wrappers": "engine.wrappers",
    "hubs": "zoo.hubs",
    "weights": "zoo.weights",
    "image_io": "tools.image_io",
    "viz": "tools.viz",
    "explainers": "tools.classifier",
    "_cli": "cli.common",
    "explain_cli": "cli.explain",
    "detect_cli": "cli.detect",
    "predict.folder": "cli.data",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed: only give it back its own spec."""
        module.__spec__ = self._spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        package, _, name = fullname.partition(".")
        if package != "lightning_cam" or name not in MOVED:
            return None
        new = f"lightning_cam.{MOVED[name]}"
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Make the old paths importable (idempotent)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
