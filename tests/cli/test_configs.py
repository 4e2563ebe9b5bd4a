"""Packaged configs by name (``--config shapes``), a path as before, ``lightning-cam demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lightning_cam
from lightning_cam.cli import main
from lightning_cam.cli.app import config_args
from lightning_cam.configs import CONFIG_DIR, config_names, config_path, resolve_config
from tests.callbacks.helpers import image_events
from tests.cli.test_app import SHORT

ROOT = Path(__file__).resolve().parents[2]


def test_configs_live_in_the_package() -> None:
    assert CONFIG_DIR == Path(lightning_cam.__file__).resolve().parent / "configs"
    assert {"shapes", "shapes_explain", "shapes_detection", "minimal"} <= set(config_names())
    # the old path keeps working (configs/ is a link to the packaged folder)
    assert (ROOT / "configs" / "shapes.yaml").read_bytes() == config_path("shapes").read_bytes()
    assert config_path("shapes.yaml") == config_path("shapes") == CONFIG_DIR / "shapes.yaml"


def test_config_values(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "shapes"  # a file of the user's wins over a packaged name
    own.write_text("seed_everything: 1\n")
    assert resolve_config("shapes") == "shapes"
    assert resolve_config("minimal") == str(CONFIG_DIR / "minimal.yaml")
    assert resolve_config("{seed_everything: 3}") == "{seed_everything: 3}"  # inline YAML
    assert config_args(["fit", "--config=minimal", "--config", "shapes_explain"]) == [
        "fit", f"--config={CONFIG_DIR / 'minimal.yaml'}", "--config",
        str(CONFIG_DIR / "shapes_explain.yaml"),
    ]
    assert config_args(["demo", "--trainer.max_epochs", "1"]) == [
        "fit", "--config", str(CONFIG_DIR / "shapes.yaml"), "--trainer.max_epochs", "1",
    ]


@pytest.mark.parametrize("value", ["shapez", "configs/shapes.yaml", "../shapes", "nope.yaml"])
def test_unknown_config_lists_the_known_ones(value: str, tmp_path: Any, monkeypatch: Any,
                                             capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)  # configs/shapes.yaml is no file here
    with pytest.raises(ValueError, match="known configs: .*shapes"):
        config_path(value)
    assert main(["fit", "--config", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lightning-cam: --config {value!r}: no such file")
    assert ", ".join(config_names()) in err


def test_fit_by_name_and_demo_from_any_directory(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    main(["demo", *SHORT])
    main(["fit", "--config", "shapes", *SHORT])
    for version in ("version_0", "version_1"):
        tags = image_events(str(tmp_path / "lightning_logs" / "shapes" / version))
        assert {"gradcam/backbone/overlay", "gradcam++/backbone/guided_gradcam"} <= set(tags)
