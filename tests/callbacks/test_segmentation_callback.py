"""The CAM callbacks on a segmentation LightningModule: overlays per class, pointing game
against the true masks, the embedded segmentation config."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torchvision

from lightning_cam import GradCAMCallback, explain_segmentation, metrics
from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import render
from lightning_cam.callbacks.segmentation import SegmentationTask, is_segmentation_module
from lightning_cam.callbacks.tasks import task_class
from lightning_cam.cli import main
from lightning_cam.data import ShapesDataModule
from lightning_cam.models import ShapesClassifier, ShapesSegmenter
from tests.callbacks.helpers import image_events, scalar_events

ROOT = Path(__file__).resolve().parents[2]


def test_task_selection() -> None:
    assert task_class(ShapesSegmenter()) is SegmentationTask
    fcn = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3
    )
    assert is_segmentation_module(fcn)
    assert task_class(ShapesClassifier()) is not SegmentationTask


def _fit(tmp_path: Any, callback: Any, model: Any = None, epochs: int = 1) -> tuple[Any, Any]:
    pl.seed_everything(0)
    model = model or ShapesSegmenter(
        class_names=["background", "circle", "square", "triangle", "star"]
    )
    data = ShapesDataModule(image_size=32, batch_size=16, num_train=32, num_val=16, seed=0)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="seg"),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(model, datamodule=data)
    return trainer, model


def test_maps_and_pointing_game_match_explain_segmentation(tmp_path: Any) -> None:
    cb = GradCAMCallback(layer="backbone", num_samples=4, metrics_num_samples=8)
    trainer, model = _fit(tmp_path, cb, epochs=4)
    task = cb.task
    assert isinstance(task, SegmentationTask) and task.last_result is not None
    probes = cb.probe_set("seg_probes").data
    assert probes["mask"].shape == (8, 32, 32) and not probes["mask"].is_floating_point()
    pairs = task.pairs(model, probes)
    # one object per shapes image: one class (1 + label) per probe, the background left out
    assert len(pairs) == 8 and all(c >= 1 for _, c in pairs)
    classes = sorted({c for _, c in pairs})
    assert sorted(task.last_result) == classes
    model.eval()
    ref = explain_segmentation(model, probes["image"], classes, layer="backbone")
    maps = []
    for i, c in pairs:
        got = task.last_result[c].cams["gradcam"]["backbone"][i]
        want = ref[c].cams["gradcam"]["backbone"][i]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        maps.append(want)
    assert any(bool(m.abs().max() > 0) for m in maps)  # some classes predicted: real maps
    truth = torch.stack([probes["mask"][i] == c for i, c in pairs])
    tol = render.pointing_tolerance(cb.options, probes["image"])
    expected = float(metrics.pointing_game(torch.stack(maps), masks=truth, tolerance=tol).mean())
    energy = float(metrics.energy_pointing_game(torch.stack(maps), masks=truth).mean())
    log_dir = trainer.logger.log_dir
    scalars = scalar_events(log_dir)
    assert scalars["gradcam/backbone/pointing_game"][-1].value == pytest.approx(expected)
    assert scalars["gradcam/backbone/energy_pointing_game"][-1].value == pytest.approx(
        energy, rel=1e-4
    )
    tags = image_events(log_dir)
    assert "gradcam/backbone/overlay" in tags
    # tiles are named by segmentation class (the module's names), not the datamodule's labels
    assert task.class_names(trainer, model) == model.class_names


def test_boolean_masks_are_refused_with_the_fix(tmp_path: Any) -> None:
    class NoConversion(ShapesSegmenter):
        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            return batch  # the callbacks see bool object masks

        def _step(self, batch: Any, stage: str) -> torch.Tensor:
            return super()._step(super().on_after_batch_transfer(batch, 0), stage)

    cb = GradCAMCallback(layer="backbone", num_samples=2, metrics_num_samples=2)
    with pytest.raises(MisconfigurationException, match="integer class indices"):
        _fit(tmp_path, cb, NoConversion())


def test_segmentation_config(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit", "--config", str(ROOT / "configs" / "shapes_segmentation.yaml"),
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--data.num_train", "32",
            "--data.num_val", "16", "--data.batch_size", "16", "--data.image_size", "32",
        ]
    )  # fmt: skip
    events = glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True)
    log_dir = os.path.dirname(events[0])
    assert "gradcam/backbone/overlay" in image_events(log_dir)
    value = scalar_events(log_dir)["gradcam/backbone/pointing_game"][-1].value
    assert 0.0 <= value <= 1.0
