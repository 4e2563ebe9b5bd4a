"""ROAD and average gain through every surface: a callback on a real Trainer (TensorBoard
scalars read back), CAMWriter (manifest columns, summaries) and ``lightning-cam explain --data``;
each value equal to :func:`lightning_cam.metrics.road` / ``average_gain`` computed here."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import lightning_cam as lc
from lightning_cam import metrics as M
from tests.optional import require

NAMES = ["road_morf", "road_lerf_logit", "road_combined", "average_gain"]


def _expected(model: torch.nn.Module, images: torch.Tensor, maps: torch.Tensor,
              ids: torch.Tensor) -> dict[str, torch.Tensor]:
    prob = M.road(model, images, maps, ids)  # the surfaces' settings: ROAD_PERCENTAGES, seed 0
    raw = M.road(model, images, maps, ids, raw_scores=True)
    return {
        "road_morf": prob.morf.mean(1),
        "road_lerf_logit": raw.lerf.mean(1),
        "road_combined": prob.combined(),
        "average_gain": M.average_drop_increase_gain(model, images, maps, ids)[2],
    }


def test_callback_logs_road_and_gain_per_epoch(tmp_path: Path) -> None:
    require("tensorboard", "pip install tensorboard")
    from tests.callbacks.helpers import (
        BlobData,
        make_module_cls,
        make_trainer,
        scalar_events,
        tb_dir,
    )

    data = BlobData(8, seed=1)
    cb = lc.CAMCallback(layer="backbone", methods=["gradcam"], num_samples=4, metrics=NAMES)
    module = make_module_cls()()
    trainer = make_trainer(tmp_path, [cb], max_epochs=2, limit_train_batches=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    scalars = scalar_events(tb_dir(tmp_path))
    for name in NAMES:
        assert len(scalars[f"gradcam/backbone/{name}"]) == 2  # once per epoch
    result = cb.last_explanation
    assert result is not None and result.class_ids is not None
    images = torch.stack([data.items[i][0] for i in range(4)])
    maps = result.cams["gradcam"]["backbone"].float().cpu()
    want = _expected(module, images, maps, result.class_ids.cpu())
    for name, value in want.items():
        got = scalars[f"gradcam/backbone/{name}"][-1].value
        assert got == pytest.approx(float(value.mean()), rel=1e-4, abs=1e-5), name


def test_writer_stores_road_per_image_and_says_the_scores(tmp_path: Path) -> None:
    require("pyarrow", "pip install pyarrow")
    from lightning_cam.methods import normalize_maps, upsample
    from lightning_cam.predict import CAMWriter
    from tests.predict.conftest import TinyShapes, loader, tiny_model, trainer

    model = tiny_model()
    writer = CAMWriter(str(tmp_path), layer="backbone", methods=["gradcam"], metrics=NAMES)
    trainer([writer]).predict(model, loader(6), return_predictions=False)
    df = pd.read_parquet(tmp_path / "manifest.parquet").sort_values("index")
    data = TinyShapes(6)
    images = torch.stack([data[i]["image"] for i in range(6)])
    ref = lc.explain(model, images, layer="backbone", methods=("gradcam",), upsample=False)
    full = normalize_maps(upsample(ref.cams["gradcam"]["backbone"], (32, 32)))
    summary = json.loads((tmp_path / "summary.json").read_text())
    # The writer's maps equal these to float rounding; two pixels of nearly equal saliency can
    # then swap ranks at a removal threshold, which moves a ROAD score by ~1e-4.
    for name, value in _expected(model, images, full, ref.class_ids).items():
        np.testing.assert_allclose(df[f"gradcam/backbone/{name}"], value.numpy(), atol=1e-3)
        mean = summary["metrics"]["gradcam"]["backbone"][name]["mean"]
        assert mean == pytest.approx(float(value.mean()), abs=1e-3)
    assert summary["metric_scores"] == {"road_morf": "probability", "road_lerf_logit": "logit",
                                        "road_combined": "probability",
                                        "average_gain": "probability"}
    md = (tmp_path / "summary.md").read_text()
    assert "road morf ↓" in md and "road lerf logit ↑" in md and "average gain ↑" in md
    assert M.score_note(NAMES) in md


def test_explain_data_cli_takes_the_new_metrics(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    require("pyarrow", "pip install pyarrow")
    from lightning_cam import cli
    from tests.predict.test_cli import _folder, _weights

    data = _folder(tmp_path / "data", tree=True)
    w = _weights(tmp_path / "w.pth")
    args = ["explain", "--data", str(data), "--output-dir", str(tmp_path / "out"), "--network",
            "resnet18", "--weight-path", str(w), "--image-size", "32", "--batch-size", "6",
            "--methods", "gradcam", "--metrics", "road_morf", "road_lerf", "average_gain",
            "--quiet"]
    assert cli.main(args) == 0
    df = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    for name in ("road_morf", "road_lerf", "average_gain"):
        (key,) = [c for c in df.columns if c.startswith("gradcam/") and c.endswith(f"/{name}")]
        col = df[key]
        assert len(col) == 6 and col.notna().all()
        assert col.between(0, 100 if name == "average_gain" else 1).all()
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "road morf ↓" in md and "softmax probabilities" in md
    capsys.readouterr()
    assert cli.main([*args[:-5], "--metrics", "road_morph", "--quiet"]) == 2
    assert "road_morf" in capsys.readouterr().err  # the near match
