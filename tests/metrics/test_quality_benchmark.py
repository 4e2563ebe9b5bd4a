"""Smoke test of ``benchmarks/quality.py``: one row per registered method with ROAD and average
gain, per-percentage ROAD tables, on an untrained shapes classifier (no timing asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from lightning_cam.methods import METHODS

QUALITY = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


def test_quality_table_has_road_and_gain_for_every_method(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    from lightning_cam.models import ShapesClassifier

    torch.manual_seed(0)
    ckpt = tmp_path / "model.ckpt"
    model = ShapesClassifier(class_names=["circle", "square", "triangle", "star"])
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__,
                "hyper_parameters": dict(model.hparams)}, ckpt)
    spec = importlib.util.spec_from_file_location("lightning_cam_benchmarks_quality", QUALITY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        out = tmp_path / "quality.md"
        assert module.main(["--ckpt", str(ckpt), "--num", "2", "--percentages", "25", "75",
                            "--speed-images", "0", "--out", str(out)]) == 0
    finally:
        sys.modules.pop(spec.name, None)
    text = out.read_text()
    assert "avg gain % ↑" in text and "ROAD MoRF ↓" in text and "ROAD LeRF ↑" in text
    assert "softmax probabilities" in text and "| method | 25 % | 75 % |" in text
    for m in METHODS.values():
        assert f"| {m.title} | {m.kind} |" in text
