"""The module paths from before the third round's restructure still import, as the same modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import lightning_cam
from lightning_cam._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_is_the_new_module(old: str) -> None:
    before = importlib.import_module(f"lightning_cam.{old}")
    after = importlib.import_module(f"lightning_cam.{MOVED[old]}")
    assert before is after
    assert after.__spec__ is not None and after.__spec__.name == f"lightning_cam.{MOVED[old]}"


def test_old_paths_in_a_fresh_interpreter() -> None:
    """`from lightning_cam.viz import ...` as the first import of a process (no warm cache)."""
    code = (
        "from lightning_cam.viz import overlay\n"
        "from lightning_cam.targets import ClassTarget\n"
        "from lightning_cam.layouts import channels_last\n"
        "import lightning_cam.tools.viz as v, lightning_cam.engine.targets as t\n"
        "assert overlay is v.overlay and ClassTarget is t.ClassTarget\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_faces_keep_their_names() -> None:
    from lightning_cam import cli, engine, zoo

    assert engine.Explainer is lightning_cam.Explainer
    assert callable(cli.main) and callable(zoo.build_classifier)
    assert zoo.ClassifierMeta is lightning_cam.ClassifierMeta


def test_the_package_uses_the_new_paths() -> None:
    """The aliases are for users' code; the package itself imports modules where they live."""
    import re
    from pathlib import Path

    root = Path(lightning_cam.__file__).parent
    old = "|".join(MOVED)
    pattern = re.compile(rf"^\s*(from|import) lightning_cam\.({old})\b", re.M)
    found = [
        f"{p.relative_to(root)}: {m.group(0).strip()}"
        for p in root.rglob("*.py")
        if p.name != "_moved.py"
        for m in pattern.finditer(p.read_text(encoding="utf-8"))
    ]
    assert found == []
