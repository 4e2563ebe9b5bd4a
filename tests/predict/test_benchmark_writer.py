"""Smoke test of benchmarks/writer.py: one tiny worker run each way and the report renders
(no timing asserted)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "writer.py"


def test_worker_and_report(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("lightning_cam_bench_writer", PATH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    try:
        spec.loader.exec_module(bench)
        for writer in (False, True):
            bench.worker(argparse.Namespace(model="shapes", size=64, num=6, batch=3,
                                            writer=writer, devices=1, strategy="auto",
                                            accelerator="cpu", threads=1))
            got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert got["images_per_s"] > 0 and got["maxrss_mb"] > 0
        res = {"throughput": {"m": {"plain": [10.0], "writer": [9.0]}},
               "ddp": {"one": [5.0], "two": [9.0], "images": 8},
               "memory": {"10": 100.0, "100": 101.0}}
        text = bench.render(res, "load 0")
        assert "0.90 x [0.90-0.90]" in text and "1.80 x" in text and "1.01 x" in text
    finally:
        sys.modules.pop(spec.name, None)
