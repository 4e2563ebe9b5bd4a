"""The scripts in examples/ run as documented (shortened)."""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path
from typing import Any

import cv2

from tests.callbacks.helpers import image_events

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_with_callbacks(tmp_path: Any) -> None:
    example = _load("train_with_callbacks")
    example.main(
        ["--max-epochs", "1", "--num-train", "128", "--num-val", "32", "--log-dir", str(tmp_path)]
    )
    (events,) = glob.glob(str(tmp_path / "example" / "version_0" / "events.out.tfevents.*"))
    tags = image_events(os.path.dirname(events))
    assert {
        "gradcam/features/overlay",
        "gradcam/features/heatmap",
        "gradcam++/features/overlay",
        "gradcam++/features/guided_gradcam",
    } <= set(tags)


def test_explain_checkpoint(tmp_path: Any) -> None:
    import pytorch_lightning as pl

    from lightning_cam.data import ShapesDataModule
    from lightning_cam.models import ShapesClassifier

    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
    )
    trainer.fit(ShapesClassifier(), ShapesDataModule(num_train=64, num_val=32, batch_size=32))
    ckpt = (
        trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    )
    assert ckpt
    out = tmp_path / "explained"
    written = _load("explain_checkpoint").main(
        ["--ckpt", ckpt, "--out", str(out), "--num-images", "2"]
    )
    assert len(written) == 2 * 4 + 1
    for path in written:
        img = cv2.imread(path)
        assert img is not None and img.size > 0


def test_detectors_side_by_side(tmp_path: Any) -> None:
    """The README's detector picture: three detectors trained (a few steps here), each
    detection's map in a column per detector."""
    example = _load("detectors_side_by_side")
    out = example.main(["--steps", "2", "2", "2", "--images", "0", "--cache", str(tmp_path),
                        "--out", str(tmp_path / "sbs.png")])
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] > 3 * 160
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "detr-2.pt", "faster_rcnn-2.pt", "yolo-2.pt"]
