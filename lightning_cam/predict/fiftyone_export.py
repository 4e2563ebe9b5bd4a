"""A :class:`~lightning_cam.predict.CAMWriter` folder as a FiftyOne dataset (``pip install
fiftyone``): browse the audit in the FiftyOne App.

One sample per image, with:

* ``ground_truth`` (the label) and ``prediction`` (the predicted class and its probability) as
  ``fo.Classification``, the class names when given;
* one ``fo.Heatmap`` per method and layer (the stored ``[0, 1]`` map, at its stored resolution:
  the App stretches it over the image), field ``{method}_{layer}``;
* one float field per metric, ``{method}_{layer}_{metric}`` (``None`` where the metric has no
  value), and ``image_id``, ``index``, ``status``, ``explained_class``, ``score``.

Field names are the manifest's names made FiftyOne-safe (``+`` -> ``p``, other characters
-> ``_``: ``gradcam++`` / ``layer4.1`` -> ``gradcampp_layer4_1``); ``dataset.info["lightning_cam"]``
maps every field back to its manifest column and holds the dataset means.

Example:
    ``dataset = to_fiftyone("audit", images="photos/")``, then ``fo.launch_app(dataset)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from lightning_cam.predict.audit import Audit, ImageSource, open_audit
from lightning_cam.predict.thumbnails import short_hash

_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")
#: The folder (in the CAMWriter folder) of the images a loader function gave.
IMAGES_DIR = "fiftyone_images"


def field_name(*parts: str) -> str:
    """A FiftyOne field name for a manifest name (``"gradcam++", "layer4.1"`` ->
    ``"gradcampp_layer4_1"``).

    Example:
        >>> field_name("gradcam++", "model.layer4.1", "pointing_game")
        'gradcampp_model_layer4_1_pointing_game'
    """
    return "_".join(_UNSAFE.sub("_", p.replace("+", "p")).strip("_") for p in parts)


def _require_fiftyone() -> Any:
    try:
        import fiftyone as fo
    except ImportError as err:
        raise ImportError(
            "to_fiftyone needs FiftyOne: pip install fiftyone (or pip install "
            "'lightning-cam[integrations]')"
        ) from err
    return fo


def _fields(audit: Audit) -> dict[str, str]:
    """``{field: manifest column or map key}``; refuses two names that become one field."""
    fields: dict[str, str] = {}
    for m, n in audit.views:
        fields[field_name(m, n)] = f"cam/{m}/{n}"
        for k in audit.metrics:
            fields[field_name(m, n, k)] = f"{m}/{n}/{k}"
    if len(fields) != len(audit.views) * (1 + len(audit.metrics)):
        raise ValueError(
            f"the methods {audit.methods} and layers {audit.layers} give clashing FiftyOne "
            "field names: export a folder with distinct names"
        )
    return fields


def _filepaths(audit: Audit) -> list[str]:
    """The image file of every sample: under the images folder, or written once from a loader
    function to ``OUT/fiftyone_images/``."""
    if audit.images is None:
        raise ValueError(
            f"{str(audit.folder)!r} records no images and none were given: a FiftyOne sample is "
            "an image file, so pass images= (the folder the ids are relative to, or a function "
            "id -> image)."
        )
    ids = [str(v) for v in audit.column("id")]
    if isinstance(audit.images, Path):
        return [str((audit.images / i).resolve()) for i in ids]
    from lightning_cam.tools import viz

    folder = audit.folder / IMAGES_DIR
    folder.mkdir(exist_ok=True)
    paths = []
    for image_id in ids:
        path = folder / f"{short_hash(image_id)}.png"
        if not path.is_file():
            image = audit.load_image(image_id)
            if image is not None:
                viz.save_image(path, image)
        paths.append(str(path.resolve()))
    return paths


def _label(value: Any, class_names: list[str] | None) -> str | None:
    if value is None:
        return None
    v = int(value)
    return class_names[v] if class_names is not None and 0 <= v < len(class_names) else str(v)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if np.isfinite(v) else None


def _sample(fo: Any, audit: Audit, i: int, path: str, fields: dict[str, str],
            class_names: list[str] | None) -> Any:  # fmt: skip
    col = audit.column
    sample = fo.Sample(filepath=path)
    sample["image_id"] = str(col("id")[i])
    sample["index"] = None if col("index")[i] is None else int(col("index")[i])
    sample["status"] = "nonfinite" if bool(col("nonfinite")[i]) else str(col("status")[i] or "ok")
    sample["explained_class"] = None if col("explained_class")[i] is None else int(
        col("explained_class")[i]
    )
    sample["score"] = _number(col("score")[i])
    label = _label(col("label")[i], class_names)
    if label is not None:
        sample["ground_truth"] = fo.Classification(label=label)
    predicted = _label(col("predicted_class")[i], class_names)
    if predicted is not None:
        sample["prediction"] = fo.Classification(
            label=predicted, confidence=_number(col("predicted_prob")[i])
        )
    for name, source in fields.items():
        if source.startswith("cam/"):
            _m, method, layer = source.split("/", 2)
            cam = audit.map(i, method, layer)
            if cam is not None:
                sample[name] = fo.Heatmap(map=cam, range=[0.0, 1.0])
        else:
            sample[name] = _number(col(source)[i])
    return sample


def to_fiftyone(
    output_dir: str | os.PathLike[str],
    images: ImageSource = None,
    name: str | None = None,
    class_names: list[str] | None = None,
    overwrite: bool = False,
    persistent: bool = False,
) -> Any:
    """Build a FiftyOne dataset of a finished CAMWriter folder (see the module docstring).

    Args:
        output_dir: The CAMWriter output folder.
        images: Where the images are, as for :func:`~lightning_cam.predict.write_report`;
            ``None``: the folder that ``lightning-cam explain --data`` recorded.
        name: The dataset name (default: ``lightning-cam/<folder name>``).
        class_names: Names of the class ids (labels and predictions); default: the ids.
        overwrite: Replace an existing dataset of that name (else an existing name is refused).
        persistent: Keep the dataset in FiftyOne's database after the Python session.

    Returns:
        The ``fiftyone.Dataset``.

    Raises:
        OutputFolderError: Not a (finished) CAMWriter folder.
        ValueError: No images, a dataset of that name exists and ``overwrite`` is false, or
            clashing field names.
        ImportError: FiftyOne is not installed.
    """
    audit = open_audit(output_dir, images)
    fields = _fields(audit)
    paths = _filepaths(audit)
    fo = _require_fiftyone()
    name = name or f"lightning-cam/{audit.folder.resolve().name}"
    if not overwrite and fo.dataset_exists(name):
        raise ValueError(
            f"a FiftyOne dataset named {name!r} exists: pass overwrite=True to replace it, or "
            "another name="
        )
    names = list(class_names) if class_names is not None else None
    dataset = fo.Dataset(name, overwrite=overwrite)
    dataset.add_samples(
        [_sample(fo, audit, i, paths[i], fields, names) for i in range(len(audit))],
        progress=False,
    )
    dataset.info["lightning_cam"] = {
        "folder": str(audit.folder.resolve()),
        "fields": fields,
        "means": audit.summary.get("metrics"),
        "sanity": audit.summary.get("sanity"),
    }
    dataset.save()
    dataset.persistent = bool(persistent)
    return dataset
