"""benchmarks/recent.py and benchmarks/attributions.py run and render (tiny settings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tests.optional import require

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(stem: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"lightning_cam_bench_{stem}",
                                                  BENCH / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kpca_table_renders_and_maps_agree() -> None:
    require("pytorch_grad_cam", "pip install -e '.[bench]'")
    text = _load("recent").main(["--batch", "1", "--repeats", "1", "--skip", "calls", "legrad"])
    rows = [line for line in text.splitlines() if line.startswith(("| ReLU(noise) 1 x",
                                                                     "| photos, resnet18"))]
    assert len(rows) == 6
    assert all(float(r.rstrip(" |").rsplit("|", 1)[-1]) < 1e-3 for r in rows), rows


def test_attribution_table_renders_with_equal_maps() -> None:
    require("captum", "pip install captum")
    text = _load("attributions").main(["--size", "32", "--batch", "1", "--repeats", "1"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "ms" not in line
            and "---" not in line]
    assert len(rows) == 7, rows  # captum's seven methods; DeepLift refused on ResNets
    assert sum("refused" in r for r in rows) == 1
    for r in rows:
        if "refused" not in r:
            assert float(r.rstrip(" |").rsplit("|", 1)[-1]) == 0.0, r
