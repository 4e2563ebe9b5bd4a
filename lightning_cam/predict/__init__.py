"""Explain and evaluate whole datasets on Lightning's predict loop.

* :mod:`~lightning_cam.predict.writer`: :class:`CAMWriter`, the prediction writer callback;
* :mod:`~lightning_cam.predict.storage`: the output folder, per-rank shards, the manifest;
* :mod:`~lightning_cam.predict.evaluation`: per-image metrics and their synced dataset means;
* :mod:`~lightning_cam.predict.sanity`: the cascading model-parameter randomisation test;
* :mod:`~lightning_cam.predict.summary`: ``summary.json`` and ``summary.md``;
* :mod:`~lightning_cam.predict.report`: the HTML report of a folder (``lightning-cam report``),
  read back by :mod:`~lightning_cam.predict.audit`, pictures by
  :mod:`~lightning_cam.predict.thumbnails`;
* :mod:`~lightning_cam.predict.fiftyone_export`: the folder as a FiftyOne dataset;
``lightning-cam explain --data`` (image folders through the same loop) is
:mod:`lightning_cam.cli.data` (once ``lightning_cam.predict.folder``, still importable).
"""

from lightning_cam.predict.fiftyone_export import to_fiftyone
from lightning_cam.predict.report import write_report
from lightning_cam.predict.storage import OutputFolderError, load_maps
from lightning_cam.predict.writer import CAMWriter

__all__ = ["CAMWriter", "OutputFolderError", "load_maps", "to_fiftyone", "write_report"]
