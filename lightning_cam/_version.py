"""The one place of lightning-cam's version: ``lightning_cam.__version__``, and the package
metadata (``pyproject.toml`` reads it: ``[tool.setuptools.dynamic]``). CHANGELOG.md's newest
entry names it."""

__version__ = "0.3.0"
