"""A finished :class:`~lightning_cam.predict.CAMWriter` folder read back: what the report and
the FiftyOne export show.

:func:`open_audit` checks that a folder is a CAMWriter folder whose run has finished
(``run.json``, ``manifest.parquet`` and ``summary.json``) and refuses anything else with the
reason and the fix; :class:`Audit` holds its manifest (one list per column), the methods,
layers and metrics of the run, the summary, and where the images are.

Images: a CAMWriter folder stores maps, not images. ``lightning-cam explain --data DIR`` records
``DIR`` in ``data.json`` (the ids are paths relative to it); otherwise give the folder of the
images (``images=``: ids relative to it) or a function ``id -> path or (H, W, 3) uint8 RGB
array`` (``None`` when the image is not available). Without images the maps are shown alone.

Example:
    >>> import tempfile
    >>> open_audit(tempfile.mkdtemp())  # doctest: +ELLIPSIS, +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    OutputFolderError: ... is not a CAMWriter folder ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from lightning_cam.predict import storage
from lightning_cam.predict.summary import SUMMARY_JSON

#: Written by ``lightning-cam explain --data`` next to the manifest: ``{"root": DIR}``.
DATA_FILE = "data.json"

#: An image given by a function: ``id -> path, (H, W, 3) uint8 RGB array, or None``.
ImageLoader = Callable[[str], Union[str, "os.PathLike[str]", np.ndarray, None]]
ImageSource = Union[str, "os.PathLike[str]", ImageLoader, None]


@dataclass
class Audit:
    """A CAMWriter folder: its manifest columns, run and summary.

    Attributes:
        folder: The CAMWriter output folder.
        rows: The manifest, ``{column: [value per image]}`` (NaN and nulls as in the file).
        methods: The CAM methods of the run.
        layers: The layers explained.
        metrics: The per-image metrics (manifest columns ``{method}/{layer}/{metric}``).
        summary: ``summary.json``'s content.
        run: ``run.json``'s content.
        images: Where the images are: a folder (ids relative to it), a function, or ``None``.
    """

    folder: Path
    rows: dict[str, list[Any]]
    methods: list[str]
    layers: list[str]
    metrics: list[str]
    summary: dict[str, Any]
    run: dict[str, Any]
    images: Path | ImageLoader | None = None
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows.get("id", []))

    @property
    def views(self) -> list[tuple[str, str]]:
        """``(method, layer)`` pairs: one map per image each (``cam/{method}/{layer}``)."""
        return [(m, n) for m in self.methods for n in self.layers]

    def column(self, name: str) -> list[Any]:
        """A manifest column (``None`` per image when the folder has none)."""
        return self.rows.get(name) or [None] * len(self)

    def explained(self, i: int) -> bool:
        """Whether image ``i`` has maps (read and finite)."""
        status = self.column("status")[i]
        return (status in (None, "ok")) and not bool(self.column("nonfinite")[i])

    def image_path(self, image_id: str) -> Path | None:
        """The file of ``image_id`` under the images folder (``None``: no folder or no file)."""
        if not isinstance(self.images, Path):
            return None
        path = self.images / image_id
        return path if path.is_file() else None

    def load_image(self, image_id: str) -> np.ndarray | None:
        """The ``(H, W, 3)`` uint8 RGB image of ``image_id``, or ``None`` when unavailable.

        Raises:
            OSError, ValueError: A file that exists but cannot be decoded.
        """
        from lightning_cam.tools import viz

        if self.images is None:
            return None
        if isinstance(self.images, Path):
            path = self.image_path(image_id)
            return None if path is None else viz.load_image(path)
        got = self.images(image_id)
        if got is None:
            return None
        if isinstance(got, np.ndarray):
            return viz.to_uint8_image(got)
        return viz.load_image(got)

    def map(self, i: int, method: str, layer: str) -> np.ndarray | None:
        """The stored ``[0, 1]`` map of image ``i`` (float32, at the stored resolution), or
        ``None`` for an image without maps. One shard is kept in memory at a time."""
        if not self.explained(i):
            return None
        shard, row = self.column("shard")[i], self.column("row")[i]
        if self._loaded.get("name") != shard:
            with np.load(self.folder / shard) as data:
                self._loaded = {"name": shard, "arrays": {k: data[k] for k in data.files}}
        arr = self._loaded["arrays"][f"cam/{method}/{layer}"][int(row)]
        out = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        return None if not np.isfinite(out).all() else out

    def shard_stamp(self, shard: str) -> str:
        """``size:mtime_ns`` of a shard's maps file (another file, another stamp)."""
        st = (self.folder / shard).stat()
        return f"{st.st_size}:{st.st_mtime_ns}"


def _not_ours(folder: Path, why: str) -> storage.OutputFolderError:
    return storage.OutputFolderError(
        f"{str(folder)!r} is not a CAMWriter folder ({why}): give the output_dir of a "
        "CAMWriter run or of `lightning-cam explain --data DIR --output-dir OUT`."
    )


def _read_json(path: Path, folder: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _not_ours(folder, f"{path.name} cannot be read: {err}") from err
    if not isinstance(value, dict):
        raise _not_ours(folder, f"{path.name} is not a JSON object")
    return value


def _image_source(folder: Path, images: ImageSource) -> Path | ImageLoader | None:
    if callable(images):
        return images
    if images is None:
        recorded = folder / DATA_FILE
        if not recorded.is_file():
            return None
        root = _read_json(recorded, folder).get("root")
        return Path(root) if isinstance(root, str) and Path(root).is_dir() else None
    path = Path(images).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"images={str(images)!r} is not a folder: give the folder the image ids are "
            "relative to (the --data folder of `lightning-cam explain --data`)."
        )
    return path


def open_audit(output_dir: str | os.PathLike[str], images: ImageSource = None) -> Audit:
    """Read a finished CAMWriter folder.

    Args:
        output_dir: The CAMWriter output folder.
        images: Where the images are (see the module docstring); ``None``: the folder that
            ``lightning-cam explain --data`` recorded, if any.

    Returns:
        The :class:`Audit`.

    Raises:
        OutputFolderError: Not a CAMWriter folder, a detector's folder, or its run has not
            finished (the reason and what to do).
        FileNotFoundError: ``images`` is not a folder.
    """
    folder = Path(output_dir).expanduser()
    if not folder.is_dir():
        raise _not_ours(folder, "no such folder")
    run_file = folder / storage.RUN_FILE
    if not run_file.is_file():
        raise _not_ours(folder, f"no {storage.RUN_FILE}")
    run = _read_json(run_file, folder)
    if "fingerprint" not in run or not isinstance(run.get("config"), dict):
        raise _not_ours(folder, f"{storage.RUN_FILE} is not a CAMWriter run file")
    if run["config"].get("task") == "detection":
        raise storage.OutputFolderError(
            f"{str(folder)!r} is the CAMWriter folder of a detector (one manifest row per "
            "detection): the report and the FiftyOne export show image classifiers' folders "
            "only. Read its manifest.parquet with pandas and each detection's map with "
            "lightning_cam.predict.load_maps(folder, row.shard, row.row, 'cam/{method}/{layer}')."
        )
    manifest, summary_file = folder / storage.MANIFEST_FILE, folder / SUMMARY_JSON
    if not manifest.is_file() or not summary_file.is_file():
        missing = storage.MANIFEST_FILE if not manifest.is_file() else SUMMARY_JSON
        raise storage.OutputFolderError(
            f"{str(folder)!r} is a CAMWriter folder whose run has not finished (no {missing}): "
            "rerun the same command (it resumes where it stopped), then make the report."
        )
    summary = _read_json(summary_file, folder)
    pq = storage.require_pyarrow().parquet
    rows = pq.read_table(manifest).to_pydict()
    metrics = list(run["config"].get("metrics") or [])
    methods = list(summary.get("methods") or run["config"].get("methods") or [])
    layers = list(summary.get("layers") or [])
    return Audit(
        folder=folder,
        rows=rows,
        methods=methods,
        layers=layers,
        metrics=metrics,
        summary=summary,
        run=run,
        images=_image_source(folder, images),
    )


def record_images(output_dir: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    """Write ``data.json`` (``{"root": absolute path}``): where the images of a folder are, for
    :func:`open_audit` (``lightning-cam explain --data`` calls it)."""
    text = json.dumps({"root": str(Path(root).expanduser().resolve())}, indent=2) + "\n"
    storage.write_bytes_atomic(Path(output_dir) / DATA_FILE, lambda f: f.write(text.encode()))
