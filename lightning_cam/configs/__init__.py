"""The LightningCLI configs that ship with the package, addressable by name.

``lightning-cam fit --config shapes`` reads ``lightning_cam/configs/shapes.yaml`` from the
installed package, so a pip user runs the main job from any directory; a path (``--config
my.yaml``) is read as before. A new config is a new ``<name>.yaml`` file here: it is known by
its name at once.

Example:
    >>> from lightning_cam.configs import config_names, config_path
    >>> "shapes" in config_names()
    True
    >>> config_path("shapes").name
    'shapes.yaml'
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR", "config_names", "config_path", "resolve_config"]

#: The folder of the packaged configs (``<name>.yaml``).
CONFIG_DIR = Path(__file__).resolve().parent


def config_names() -> list[str]:
    """The names of the packaged configs, sorted (``["minimal", "shapes", ...]``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name: str) -> Path:
    """The file of the packaged config ``name`` (with or without ``.yaml``).

    Raises:
        ValueError: ``name`` is not a packaged config; the message lists the known names.
    """
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = CONFIG_DIR / f"{stem}.yaml"
    if "/" in stem or "\\" in stem or not path.is_file():
        raise ValueError(
            f"--config {name!r}: no such file, and not a config of lightning-cam; "
            f"known configs: {', '.join(config_names())} (or give a path to a YAML file)"
        )
    return path


def resolve_config(value: str) -> str:
    """``value`` of ``--config`` as LightningCLI should read it: an existing file (or an inline
    YAML mapping) unchanged, a packaged config's name as its path.

    Raises:
        ValueError: ``value`` is neither a file nor a packaged config's name.
    """
    if Path(value).is_file() or ":" in value or "\n" in value:  # a path, or inline YAML
        return value
    return str(config_path(value))
