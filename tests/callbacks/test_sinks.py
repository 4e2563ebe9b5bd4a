"""Real W&B (offline) and MLflow (local file store) runs: the pictures are read back from the
run's files, with the callbacks' tags and steps."""

from __future__ import annotations

import re
from typing import Any

import pytest

import lightning_cam as lc
from lightning_cam.callbacks.sinks import mlflow_key
from lightning_cam.tools import viz
from tests.callbacks.helpers import loaders, make_module_cls, make_trainer
from tests.optional import require


def _callbacks() -> list[Any]:
    return [
        lc.GradCAMCallback(layer="backbone", num_samples=4, tile_size=32),
        lc.GradCAMPlusPlusCallback(layer="backbone", num_samples=4, tile_size=32),
    ]


def test_wandb_offline_run_holds_the_pictures(tmp_path: Any, monkeypatch: Any) -> None:
    require("wandb", "pip install 'lightning-cam[integrations]'")
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="cams")
    train, val = loaders()
    trainer = make_trainer(tmp_path, _callbacks(), logger=logger, max_epochs=2)
    trainer.fit(make_module_cls()(), train, val)
    logger.experiment.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    images = sorted((run / "files" / "media" / "images").rglob("*.png"))
    names = sorted(str(p.relative_to(run / "files" / "media" / "images")) for p in images)
    for method in ("gradcam", "gradcam++"):
        # W&B names media {key}_{its own step}_{hash}.png: one row per callback and
        # validation epoch holds both kinds
        rows = []
        for kind in ("overlay", "guided_gradcam"):
            pattern = rf"{re.escape(method)}/backbone/{kind}_(\d+)_[0-9a-f]+\.png"
            rows.append(sorted(int(m.group(1)) for n in names if (m := re.fullmatch(pattern, n))))
        assert len(rows[0]) == 2 and rows[0] == rows[1], names
    picture = viz.load_image(images[0])
    assert picture.shape == (32 + 4, 4 * 32 + 5 * 2, 3)


def test_mlflow_file_store_run_holds_the_pictures(tmp_path: Any, monkeypatch: Any) -> None:
    require("mlflow", "pip install 'lightning-cam[integrations]'")
    from pytorch_lightning.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    logger = MLFlowLogger(experiment_name="cams", tracking_uri=f"file:{store}")
    train, val = loaders()
    trainer = make_trainer(tmp_path, _callbacks(), logger=logger, max_epochs=2)
    trainer.fit(make_module_cls()(), train, val)
    artifacts = store / logger.experiment_id / logger.run_id / "artifacts" / "images"
    pngs = sorted(p.name for p in artifacts.glob("*.png"))
    for method in ("gradcam", "gradcam++"):
        key = mlflow_key(f"{method}/backbone/overlay").replace("/", "~")
        steps = sorted(int(m.group(1)) for n in pngs
                       if (m := re.fullmatch(rf"{re.escape(key)}\+step\+(\d+)\+.*\.png", n)))
        assert steps == [4, 8], pngs
    assert mlflow_key("gradcam++/backbone/overlay") == "gradcampp/backbone/overlay"
    picture = viz.load_image(next(artifacts.glob("gradcampp~backbone~overlay+step+8+*.png")))
    assert picture.shape == (32 + 4, 4 * 32 + 5 * 2, 3)
    # scalars: Grad-CAM++'s keep their own names (not merged into Grad-CAM's)
    metrics = store / logger.experiment_id / logger.run_id / "metrics"
    names = {str(p.relative_to(metrics)) for p in metrics.rglob("*") if p.is_file()}
    assert {"gradcam/backbone/pointing_game", "gradcampp/backbone/pointing_game"} <= names
    lines = (metrics / "gradcampp" / "backbone" / "pointing_game").read_text().split()
    assert len(lines) == 2 * 3  # "timestamp value step" per validation epoch


@pytest.mark.parametrize("name", ["DummyLogger", "TensorBoardLogger"])
def test_sinks_pick_by_logger_class(name: str) -> None:
    from pytorch_lightning import loggers
    from pytorch_lightning.loggers.logger import DummyLogger

    from lightning_cam.callbacks.sinks import DisabledSink, TensorBoardSink, sink_for

    logger = DummyLogger() if name == "DummyLogger" else getattr(loggers, name)("/tmp/x")
    assert type(sink_for(logger)) is {"DummyLogger": DisabledSink,
                                      "TensorBoardLogger": TensorBoardSink}[name]


def test_a_custom_tensorboard_logger_gets_the_pictures(tmp_path: Any) -> None:
    """A logger of the user's own whose experiment is a SummaryWriter (duck-typed)."""
    from pytorch_lightning.loggers.logger import Logger
    from torch.utils.tensorboard import SummaryWriter

    from tests.callbacks.helpers import image_events

    class MyLogger(Logger):
        def __init__(self) -> None:
            super().__init__()
            self.writer = SummaryWriter(str(tmp_path / "mine"))

        @property
        def experiment(self) -> Any:
            return self.writer

        name = "mine"
        version = "0"

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

        def finalize(self, status: str) -> None:
            self.writer.flush()

    train, val = loaders()
    logger = MyLogger()
    make_trainer(tmp_path, [lc.GradCAMCallback(layer="backbone")], logger=logger).fit(
        make_module_cls()(), train, val
    )
    logger.writer.flush()
    assert "gradcam/backbone/overlay" in image_events(str(tmp_path / "mine"))
    assert not list(tmp_path.rglob("*.png"))


def test_importing_the_callbacks_needs_no_wandb_or_mlflow() -> None:
    import subprocess
    import sys

    code = ("import sys, lightning_cam, lightning_cam.callbacks; "
            "print(sorted(m for m in ('wandb', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
