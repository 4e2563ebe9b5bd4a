"""captum's attributions through the surfaces: CAMCallback with a real Trainer and TensorBoard,
CAMWriter (stored maps equal lc.explain's, metrics, sanity check), the CLI's --method."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

import lightning_cam as lc
from tests.callbacks.helpers import image_events, loaders, make_module_cls, scalar_events
from tests.optional import require


@pytest.fixture(autouse=True)
def _captum() -> None:
    require("captum", "pip install captum")


def test_cam_callback_logs_attributions_with_pictures_and_metrics(tmp_path: Any) -> None:
    methods = ["integrated_gradients", "saliency", "gradcam"]
    cb = lc.CAMCallback(methods=methods, layer="backbone", num_samples=4,
                        log_guided_gradcam=True, metrics=["pointing_game", "deletion_auc"],
                        metrics_num_samples=8)
    train, val = loaders()
    module = make_module_cls()()
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), callbacks=[cb], accelerator="cpu", devices=1,
        max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, deterministic=True,
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="tb", version=0),
    )
    trainer.fit(module, train, val)
    tb = os.path.join(str(tmp_path), "tb", "version_0")
    images, scalars = image_events(tb), scalar_events(tb)
    for m in methods:
        assert f"{m}/backbone/overlay" in images, sorted(images)
        assert f"{m}/backbone/guided_gradcam" in images, sorted(images)
        assert f"{m}/backbone/pointing_game" in scalars, sorted(scalars)
        assert f"{m}/backbone/deletion_auc" in scalars, sorted(scalars)
    assert all(not m._forward_hooks and not m._backward_hooks for m in module.modules())


def test_cam_writer_stores_the_attribution_maps_and_runs_the_sanity_check(tmp_path: Path) -> None:
    require("pyarrow", "pip install pyarrow")
    from lightning_cam.predict import CAMWriter, load_maps
    from tests.predict.conftest import TinyShapes, loader, tiny_model, trainer

    model = tiny_model()
    writer = CAMWriter(str(tmp_path), layer="backbone", methods=["integrated_gradients",
                                                                 "gradcam"],
                       metrics=["pointing_game", "deletion_auc"], sanity_samples=2,
                       sanity_stages=1)
    trainer([writer]).predict(model, loader(), return_predictions=False)
    df = pd.read_parquet(tmp_path / "manifest.parquet").sort_values("index")
    data = TinyShapes(10)
    images = torch.stack([data[i]["image"] for i in range(10)])
    ref = lc.explain(model, images, layer="backbone",
                     methods=("integrated_gradients", "gradcam"), upsample=False)
    stored = np.stack([load_maps(tmp_path, r.shard, r.row, "cam/integrated_gradients/backbone")
                       for r in df.itertuples()])
    expected = ref.cams["integrated_gradients"]["backbone"].numpy()
    assert stored.shape == expected.shape == (10, 32, 32)  # the input's resolution
    np.testing.assert_allclose(stored, expected, atol=2e-3)
    assert df["integrated_gradients/backbone/pointing_game"].notna().all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "integrated_gradients" in summary["sanity"]["similarity"]


def test_cli_method_takes_an_attribution(tmp_path: Path, capsys: Any) -> None:
    import cv2
    import torchvision

    from lightning_cam.cli import explain as explain_cli

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "cat.png"
    cv2.imwrite(str(path), img)
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=5).state_dict(), weights)
    out = tmp_path / "out"
    torch.set_num_threads(1)
    code = explain_cli.main([
        "--image-path", str(path), "--network", "resnet18", "--weight-path", str(weights),
        "--image-size", "48", "--output-dir", str(out), "--method", "saliency", "gradcam",
    ])
    assert code in (0, None), capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["saliency", "gradcam"]
    files = summary["results"][0]["methods"]["saliency"]
    heat = cv2.imread(str(out / files["heatmap"]))
    assert heat is not None and heat.shape[:2] == (40, 50)
