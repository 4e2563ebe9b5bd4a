"""The public method classes: one per registered method, also visible to type checkers."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_cam as lc
from lightning_cam.engine import cam
from lightning_cam.methods import METHODS


def _declared(path: Path) -> set[str]:
    """Class names declared under ``if TYPE_CHECKING:`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for sub in ast.walk(node):
                if isinstance(sub, ast.ClassDef):
                    out.add(sub.name)
                if isinstance(sub, ast.ImportFrom) and sub.module == "lightning_cam.engine.cam":
                    out.update(a.name for a in sub.names)
    return out


def test_declared_classes_are_the_registry() -> None:
    wanted = {m.class_name for m in METHODS.values()}
    assert _declared(Path(cam.__file__)) == wanted
    assert _declared(Path(lc.__file__)) == wanted


def test_generated_class_runs_its_method() -> None:
    for m in METHODS.values():
        cls = getattr(lc, m.class_name)
        assert cls is cam.CAM_CLASSES[m.class_name] and cls.method == m.name
