"""Explain and evaluate whole datasets on Lightning's predict loop.

* :mod:`~lightning_cam.predict.writer`: :class:`CAMWriter`, the prediction writer callback;
* :mod:`~lightning_cam.predict.storage`: the output folder, per-rank shards, the manifest;
* :mod:`~lightning_cam.predict.evaluation`: per-image metrics and their synced dataset means;
* :mod:`~lightning_cam.predict.sanity`: the cascading model-parameter randomisation test;
* :mod:`~lightning_cam.predict.summary`: ``summary.json`` and ``summary.md``;
``lightning-cam explain --data`` (image folders through the same loop) is
:mod:`lightning_cam.cli.data` (once ``lightning_cam.predict.folder``, still importable).
"""

from lightning_cam.predict.storage import OutputFolderError, load_maps
from lightning_cam.predict.writer import CAMWriter

__all__ = ["CAMWriter", "OutputFolderError", "load_maps"]
