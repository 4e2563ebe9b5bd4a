"""Smoke test of ``benchmarks/nd.py``: every case runs once on a small volume and the report
renders; MONAI's map (its flip undone) equals ours. No timing is asserted."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from tests.optional import require

ND = Path(__file__).resolve().parents[1] / "benchmarks" / "nd.py"


def test_cases_run_agree_and_render() -> None:
    require("monai", "pip install monai")
    require("pytorch_grad_cam", "pip install grad-cam")
    spec = importlib.util.spec_from_file_location("lightning_cam_benchmarks_nd", ND)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    try:
        spec.loader.exec_module(bench)
        model, x = bench.build(32, 1)
        calls = {k: bench.make_case(k, model, x, "features.denseblock3", 1) for k in bench.CASES}
        maps = {k: fn() for k, fn in calls.items()}
        assert maps["floor"] is None and maps["ours"].shape == (1, 32, 32, 32)
        np.testing.assert_allclose(maps["monai"], maps["ours"], atol=1e-5)
        assert maps["pgc"].shape == maps["ours"].shape
        times = bench.time_cases(calls, reps=1, warmup=0)
        args = argparse.Namespace(batch=1, size=32, layer="features.denseblock3", reps=1,
                                  warmup=0)
        report = bench.render(args, times, {"monai": 0.0, "pgc": 0.1}, None,
                              ((0.0,), (0.0,)))
        assert report.count("\n| ") == 5 and "x lightning-cam" in report
    finally:
        sys.modules.pop(spec.name, None)
