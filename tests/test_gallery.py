"""The docs gallery: every ``docs/gallery/<topic>.py`` runs and writes the pictures committed
under ``docs/gallery/img/<topic>/``; the gallery page is the one ``scripts/gallery.py`` writes."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runner() -> Any:
    spec = importlib.util.spec_from_file_location("gallery_runner", ROOT / "scripts" / "gallery.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOPICS = sorted(_runner().scripts())


def test_the_page_is_generated() -> None:
    runner = _runner()
    assert TOPICS, "no gallery script"
    assert (ROOT / "docs" / "gallery" / "index.md").read_text() == runner.render_page(), (
        "docs/gallery/index.md is stale: run `make gallery` (or scripts/gallery.py --page)")
    for name in runner.LONG_RUNS:
        assert (ROOT / "docs" / name).is_file(), name


@pytest.mark.parametrize("topic", TOPICS)
def test_gallery_script_runs(topic: str, tmp_path: Path) -> None:
    runner = _runner()
    main = runner.load(runner.scripts()[topic]).main
    assert list(inspect.signature(main).parameters) == ["out_dir"]
    written = runner.run(topic, tmp_path)  # checks: pictures, written into tmp_path
    committed = sorted(p.name for p in (ROOT / "docs" / "gallery" / "img" / topic).iterdir())
    assert sorted(p.name for p in written) == committed, "run `make gallery` and commit"
    for path in written:
        if path.suffix.lower() == ".gif":
            continue
        picture = cv2.imread(str(path))
        assert picture is not None and picture.shape[0] >= 32 and picture.shape[1] >= 32, path
        assert float(np.std(picture)) > 10.0, f"{path} is nearly blank"
