"""Run in a fresh process by ``test_fiftyone.py`` (FiftyOne reads its database settings from
the environment at import): export a CAMWriter folder, read the dataset back from FiftyOne's
database, print what it holds as JSON, delete the dataset.

    python tests/predict/fiftyone_check.py OUT IMAGES
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(out: Path, images: Path) -> dict:
    import fiftyone as fo

    from lightning_cam.predict import to_fiftyone
    from lightning_cam.tools import viz

    names = ["circle", "square", "triangle", "star"]
    made = to_fiftyone(out, images=images, name="lc-audit", class_names=names)
    try:
        to_fiftyone(out, images=images, name="lc-audit")
        refused = ""
    except ValueError as err:
        refused = str(err)
    dataset = fo.load_dataset("lc-audit")  # from the database, not the object returned
    samples = []
    for s in dataset.iter_samples():
        row = {
            "filepath": s.filepath, "image_id": s["image_id"], "index": s["index"],
            "status": s["status"], "label": s.ground_truth.label if s.ground_truth else None,
            "pred": s.prediction.label, "confidence": s.prediction.confidence,
            "maps": {f: np.asarray(s[f].map, float).tolist() for f in ("gradcam_backbone",
                                                                        "gradcampp_backbone")},
            "range": list(s["gradcam_backbone"].range),
            "metrics": {f: s[f] for f in dataset.get_field_schema() if f.endswith(
                ("pointing_game", "average_drop"))},
        }
        samples.append(row)
    info = dataset.info["lightning_cam"]
    # a loader function: the images are written once, then the samples point at them
    loaded = to_fiftyone(out, images=lambda i: viz.load_image(images / i), name="lc-loader")
    loaded_paths = loaded.values("filepath")
    result = {
        "count": len(dataset), "samples": samples, "fields": info["fields"],
        "refused": refused, "same": made.name == dataset.name,
        "loaded_exist": all(Path(p).is_file() for p in loaded_paths),
        "loaded_dir": sorted({str(Path(p).parent) for p in loaded_paths}),
    }
    for name in ("lc-audit", "lc-loader"):
        fo.load_dataset(name).delete()
    result["left"] = fo.list_datasets()
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
