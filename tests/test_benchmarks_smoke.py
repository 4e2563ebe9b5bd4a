"""Smoke test of ``benchmarks/run.py`` on a tiny model: every case runs once and the report
renders; where the peers are installed, their maps agree with ours on a model with ``nn.ReLU``
modules only. No timing is asserted (timing belongs in ``benchmarks/``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from tests.optional import require

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lightning_cam_benchmarks_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _rows(bench: ModuleType, keys: list[str] | None = None) -> tuple[object, list[dict]]:
    torch.manual_seed(0)
    ctx = bench.context_for(Tiny().eval(), "tiny", batch=2, size=16, layer="features")
    cases = bench.CASES if keys is None else [bench.CASE_BY_KEY[k] for k in keys]
    try:
        rows = bench.run_model(ctx, cases, reps=1, warmup=1)
    finally:
        ctx.close()
    return ctx, rows


def test_floors_and_ours_run_and_render(bench: ModuleType) -> None:
    keys = [c.key for c in bench.CASES if c.impl in ("floor", bench.OURS)]
    ctx, rows = _rows(bench, keys)
    assert [r["key"] for r in rows] == keys
    for r in rows:
        assert len(r["times"]) == 1 and r["median"] > 0
    both = next(r for r in rows if r["key"] == "ours.both")
    assert both["diff"]["gradcam"]["max"] == 0.0 and both["diff"]["gradcam++"]["max"] == 0.0
    # Every gradient method of the registry from one call: the same maps as one call each.
    allgrad = next(r for r in rows if r["key"] == "ours.allgrad")
    assert set(allgrad["diff"]) == set(bench.GRADIENT) and len(bench.GRADIENT) >= 7
    assert all(d["max"] == 0.0 for d in allgrad["diff"].values()), allgrad["diff"]
    table, targets = bench.model_table(rows, None)
    assert "lightning-cam" in table and "gradcam_vs_floor" in targets
    args = bench.parse_args(["--quick", "--models", "tiny"])
    header = {"date": "d", "command": "c", "cpu": "cpu", "cpus": 2, "load_start": "0",
              "load_1": 0.0, "busy": False, "versions": "v", "load_end": "0"}
    raw = {"args": vars(args), "header": header, "sections": [],
           "models": {"tiny": {"layer": ctx.layer, "rows": rows, "memory": None}}}
    text = bench.report(json.loads(json.dumps(raw, default=str)))  # what --render-json reads
    assert text.startswith("# lightning-cam benchmarks")
    assert "## tiny (layer `features`)" in text and "Grad-CAM <= 1.10 x" in text
    assert "each gradient method <= 1.10 x" in text and "Eigen-CAM and CAM <= 1.05 x" in text


def test_peers_agree_with_ours_on_a_relu_model(bench: ModuleType) -> None:
    for module in ("pytorch_grad_cam", "captum", "torchcam"):
        require(module, "pip install -e '.[bench]' installs the peer libraries")
    _, rows = _rows(bench)
    by = {r["key"]: r for r in rows}
    assert all("median" in r for r in rows), [r for r in rows if "median" not in r]
    # Same formula, same ReLU modules: the normalised maps agree up to interpolation rounding.
    for key in ("pgc.gradcam", "captum.gradcam", "torchcam.gradcam", "pgc.gbp", "captum.gbp",
                "pgc.ggc", "pgc.hirescam", "pgc.gradcam-elementwise", "pgc.xgradcam",
                "pgc.layercam", "torchcam.xgradcam", "torchcam.layercam", "torchcam.cam"):
        for method, d in by[key]["diff"].items():
            assert d["max"] < 1e-3, (key, method, d)


def test_detection_and_callback_cases_degrade_gracefully(bench: ModuleType) -> None:
    args = argparse.Namespace(detectors="", reps=1, warmup=1, quick=True)
    section = bench.case_detection(args)
    assert section.body.startswith("Not measured") and section.data == {"measured": False}
