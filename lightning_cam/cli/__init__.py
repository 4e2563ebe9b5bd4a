"""The ``lightning-cam`` command: one module per subcommand; they only parse and call.

``app`` (the entry point and LightningCLI's ``fit`` / ``validate`` / ``test`` / ``predict``),
``explain`` (classifiers' pictures), ``data`` (``explain --data``: a folder on Lightning's
predict loop), ``explain_args`` (the one parser of both), ``detect`` (detectors), ``common``
(the flags and messages every subcommand shares).
"""

from lightning_cam.cli.app import CAMLightningCLI, main

__all__ = ["CAMLightningCLI", "main"]
