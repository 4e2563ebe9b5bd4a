"""A self-contained HTML report of a :class:`~lightning_cam.predict.CAMWriter` folder.

``write_report(OUT)`` (``lightning-cam report OUT``) writes ``OUT/report/``::

    index.html, report.css, report.js   the page (plain HTML/CSS/JS, no server, no network)
    data.js                             the folder's data (``window.LC_REPORT = {...}``)
    thumbs/                             one image picture and one map picture per method and
                                        layer per image (made once; see
                                        :mod:`lightning_cam.predict.thumbnails`)

The page opens from ``file://``: the data is a script, not a file fetched. It shows the dataset
means per method and layer (``summary.json``) with a histogram of each metric; a table of the
images, sortable by any column and filtered by id, class, status and misclassification (50
rows a page: 10,000 images open as fast as 100); for one image, the image and the map of each
method and layer side by side with an opacity slider (the map is a layer over the image); and
the sanity-check curves when the run had one.

Example:
    >>> import tempfile, numpy as np
    >>> write_report(tempfile.mkdtemp())  # doctest: +ELLIPSIS, +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    OutputFolderError: ... is not a CAMWriter folder ...
"""

from __future__ import annotations

import datetime
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

from lightning_cam.metrics import HIGHER_IS_BETTER
from lightning_cam.predict import storage
from lightning_cam.predict.audit import Audit, ImageSource, open_audit
from lightning_cam.predict.thumbnails import Thumbnails

REPORT_DIR = "report"
DATA_SCRIPT = "data.js"
ASSETS = ("index.html", "report.css", "report.js")
_ASSET_PACKAGE = "lightning_cam.predict.report_assets"


def _number(value: Any, digits: int = 5) -> float | None:
    """A finite float rounded to ``digits`` significant digits, or ``None`` (JSON has no NaN)."""
    if value is None or isinstance(value, bool):
        return None
    v = float(value)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def _ints(values: list[Any]) -> list[int | None]:
    return [None if v is None else int(v) for v in values]


def _means(audit: Audit) -> dict[str, list[Any]]:
    """``{"method/layer/metric": [mean, count]}`` of ``summary.json`` (the synced means)."""
    out: dict[str, list[Any]] = {}
    for m, per_layer in (audit.summary.get("metrics") or {}).items():
        for n, cells in (per_layer or {}).items():
            for k, cell in (cells or {}).items():
                cell = cell or {}
                out[f"{m}/{n}/{k}"] = [_number(cell.get("mean")), int(cell.get("count") or 0)]
    return out


def report_data(audit: Audit, pictures: dict[str, Any]) -> dict[str, Any]:
    """The page's data: the folder's columns, means, sanity curves and picture names.

    Args:
        audit: The folder read back.
        pictures: :meth:`Thumbnails.run`'s columns.
    """
    n = len(audit)
    metric_cols = {
        f"{m}/{ly}/{k}": [_number(v) for v in audit.column(f"{m}/{ly}/{k}")]
        for m, ly in audit.views
        for k in audit.metrics
    }
    status = [
        "nonfinite" if bool(nf) and (s in (None, "ok")) else (s or "ok")
        for s, nf in zip(audit.column("status"), audit.column("nonfinite"), strict=True)
    ]
    return {
        "title": audit.folder.resolve().name,
        "folder": str(audit.folder.resolve()),
        "created": audit.summary.get("created"),
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "count": n,
        "methods": audit.methods,
        "layers": audit.layers,
        "metrics": audit.metrics,
        "higher": {k: bool(HIGHER_IS_BETTER.get(k, True)) for k in audit.metrics},
        "views": [
            {"key": f"{m}/{ly}", "method": m, "layer": ly, "file": pictures["views"][f"{m}/{ly}"]}
            for m, ly in audit.views
        ],
        "means": _means(audit),
        "sanity": audit.summary.get("sanity"),
        "target": audit.run["config"].get("target"),
        "has_images": audit.images is not None,
        "columns": {
            "id": [str(v) for v in audit.column("id")],
            "index": _ints(audit.column("index")),
            "label": _ints(audit.column("label")),
            "pred": _ints(audit.column("predicted_class")),
            "prob": [_number(v, 4) for v in audit.column("predicted_prob")],
            "explained": _ints(audit.column("explained_class")),
            "status": status,
            "key": pictures["key"],
            "image": [int(bool(v)) for v in pictures["image"]],
            "maps": [int(bool(v)) for v in pictures["maps"]],
        },
        "metric_columns": metric_cols,
    }


def _write_text(path: Path, text: str) -> None:
    storage.write_bytes_atomic(path, lambda f: f.write(text.encode("utf-8")))


def data_script(data: dict[str, Any]) -> str:
    """``window.LC_REPORT = {...};``: the data as a script (a page opened from ``file://``
    cannot fetch a JSON file). ``</`` is escaped so that no string ends the script."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return "window.LC_REPORT = " + text.replace("</", "<\\/") + ";\n"


def write_report(
    output_dir: str | os.PathLike[str],
    images: ImageSource = None,
    thumbnail_size: int = 224,
) -> Path:
    """Write ``OUT/report/index.html``: the report of a finished CAMWriter folder.

    Args:
        output_dir: The CAMWriter output folder (``OUT``).
        images: Where the images are: a folder (the ids are paths relative to it), a function
            ``id -> path or (H, W, 3) uint8 RGB array or None``, or ``None`` (the folder that
            ``lightning-cam explain --data`` recorded; without one, maps are shown alone).
        thumbnail_size: Longest side of the pictures (never larger than the model input).

    Returns:
        The path of ``index.html``.

    Raises:
        OutputFolderError: Not a CAMWriter folder, or its run has not finished.
        FileNotFoundError: ``images`` is not a folder.
        ValueError: ``thumbnail_size`` < 16.
    """
    if isinstance(thumbnail_size, bool) or not isinstance(thumbnail_size, int) or (
        thumbnail_size < 16
    ):
        raise ValueError(f"thumbnail_size must be an int >= 16 (pixels), got {thumbnail_size!r}")
    audit = open_audit(output_dir, images)
    report = audit.folder / REPORT_DIR
    report.mkdir(exist_ok=True)
    thumbs = Thumbnails(audit, report, thumbnail_size)
    pictures = thumbs.run()
    data = report_data(audit, pictures)
    data["unreadable_images"] = thumbs.failed
    _write_text(report / DATA_SCRIPT, data_script(data))
    assets = resources.files(_ASSET_PACKAGE)
    for name in ASSETS:
        _write_text(report / name, assets.joinpath(name).read_text(encoding="utf-8"))
    return report / "index.html"
