"""LightningCLI: every config in configs/ parses and runs (a short run), writing the tags."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytest

from lightning_cam.cli import main
from tests.callbacks.helpers import image_events, scalar_events

ROOT = Path(__file__).resolve().parents[2]
# `fit` configs; shapes_explain.yaml is a `predict` config (tests/predict/test_cli.py).
CONFIGS = sorted(
    p.name
    for p in (ROOT / "configs").glob("*.yaml")
    if "detection" not in p.name and "explain" not in p.name
)

SHORT = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.enable_progress_bar",
    "false",
    "--data.num_train",
    "64",
    "--data.num_val",
    "32",
    "--data.batch_size",
    "32",
]


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses_and_runs(config: str, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / config),
            *SHORT,
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    events = glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True)
    assert events, "no TensorBoard event file written"
    tags = image_events(os.path.dirname(events[0]))
    # a 2-D config logs `.../overlay`; a volume's `.../overlay_slices`, a signal's `.../overlay`
    assert any(t.rsplit("/", 1)[-1].startswith("overlay") for t in tags), tags


def test_main_config_logs_both_methods_and_metrics(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(ROOT / "configs" / "shapes.yaml"), *SHORT])
    log_dir = tmp_path / "lightning_logs" / "shapes" / "version_0"
    tags = image_events(str(log_dir))
    for method in ("gradcam", "gradcam++"):
        assert f"{method}/backbone/overlay" in tags
        assert f"{method}/backbone/guided_gradcam" in tags
    scalars = scalar_events(str(log_dir))
    assert "gradcam/backbone/pointing_game" in scalars
    assert "gradcam++/backbone/energy_pointing_game" in scalars


def test_callback_from_the_command_line(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "minimal.yaml"),
            *SHORT,
            "--trainer.callbacks+=lightning_cam.GradCAMPlusPlusCallback",
            "--trainer.callbacks.layer=backbone.2",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    events = glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True)
    tags = image_events(os.path.dirname(events[0]))
    assert "gradcam++/backbone.2/overlay" in tags


def test_python_dash_m_entry_point() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lightning_cam", "fit", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "--trainer.callbacks" in proc.stdout


def test_detection_config_runs_and_logs_detection_pictures(
    tmp_path: Any, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "shapes_detection.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--data.num_train",
            "8",
            "--data.num_val",
            "4",
            "--data.batch_size",
            "4",
        ]
    )
    log_dir = tmp_path / "lightning_logs" / "shapes_detection" / "version_0"
    tags = set(image_events(str(log_dir)))
    assert tags == {
        "gradcam/detector.backbone.body.layer3/detections",
        "gradcam++/detector.backbone.body.layer3/detections",
    }
