"""Every kind of registered method through ``CAMCallback`` with a real Trainer and TensorBoard."""

from __future__ import annotations

import os
from typing import Any

import pytest

import lightning_cam as lc
from tests.callbacks.helpers import image_events, loaders, make_module_cls, scalar_events

pl = pytest.importorskip("pytorch_lightning")


def test_cam_callback_logs_gradient_activation_and_perturbation_methods(tmp_path: Any) -> None:
    methods = ["hirescam", "layercam", "eigencam", "cam", "scorecam", "ablationcam",
               "smoothgradcam++"]
    cb = lc.CAMCallback(methods=methods, layer="backbone", num_samples=4,
                        log_guided_gradcam=True, metrics=["pointing_game"],
                        metrics_num_samples=8)
    train, val = loaders()
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), callbacks=[cb], accelerator="cpu", devices=1,
        max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, deterministic=True,
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="tb", version=0),
    )
    trainer.fit(make_module_cls()(), train, val)
    tb = os.path.join(str(tmp_path), "tb", "version_0")
    images = image_events(tb)
    for m in methods:
        assert f"{m}/backbone/overlay" in images, sorted(images)
        assert f"{m}/backbone/guided_gradcam" in images, sorted(images)
    scalars = scalar_events(tb)
    assert all(f"{m}/backbone/pointing_game" in scalars for m in methods), sorted(scalars)
