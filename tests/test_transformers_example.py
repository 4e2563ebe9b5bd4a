"""examples/vit_shapes.py runs as documented (shortened): a tiny ViT, its default layer."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parents[1]


def test_vit_shapes_example(tmp_path: Any) -> None:
    spec = importlib.util.spec_from_file_location("vit_shapes", ROOT / "examples" / "vit_shapes.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "vit.png"
    result = example.main(
        ["--epochs", "1", "--num-train", "64", "--num-val", "16", "--out", str(out)]
    )
    assert result["layer"] == "encoder.layers.encoder_layer_3.ln_1"
    assert 0.0 <= result["pointing_game"] <= 1.0
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[0] > 2 * 64
