"""``to_fiftyone``: the dataset in FiftyOne's own database (a mongod of a temporary folder,
started by FiftyOne in a fresh process) holds the manifest's labels, predictions and metrics
and the stored maps as heatmaps; the dataset is deleted at the end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lightning_cam.predict import load_maps
from tests.optional import require
from tests.predict.audit_folder import NUM, make_audit

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["circle", "square", "triangle", "star"]


def _run(out: Path, images: Path, tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(
        HOME=str(tmp / "home"),  # ~/.fiftyone (config, logs) in the test's folder
        FIFTYONE_DATABASE_DIR=str(tmp / "db"),
        FIFTYONE_DATASET_ZOO_DIR=str(tmp / "zoo"),
        FIFTYONE_MODEL_ZOO_DIR=str(tmp / "models"),
        FIFTYONE_DEFAULT_DATASET_DIR=str(tmp / "datasets"),
        FIFTYONE_DO_NOT_TRACK="true",
        FIFTYONE_DATABASE_VALIDATION="false",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.pop("FIFTYONE_DATABASE_URI", None)
    script = ROOT / "tests" / "predict" / "fiftyone_check.py"
    done = subprocess.run(
        [sys.executable, str(script), str(out), str(images)], env=env, cwd=tmp,
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_the_dataset_holds_the_folders_maps_labels_and_metrics(tmp_path: Path) -> None:
    if importlib.util.find_spec("fiftyone") is None:  # (not imported here: the child does)
        require("fiftyone", "pip install fiftyone (the integrations extra)")
    out, images = make_audit(tmp_path)
    got = _run(out, images, tmp_path)
    df = pd.read_parquet(out / "manifest.parquet")
    assert got["count"] == NUM and got["same"]
    assert "exists" in got["refused"] and "overwrite=True" in got["refused"]
    assert got["fields"]["gradcampp_backbone"] == "cam/gradcam++/backbone"
    assert got["fields"]["gradcam_backbone_average_drop"] == "gradcam/backbone/average_drop"
    by_id = {s["image_id"]: s for s in got["samples"]}
    for i, row in df.iterrows():
        s = by_id[row["id"]]
        assert s["filepath"] == str((images / row["id"]).resolve())
        assert s["index"] == row["index"] and s["status"] == "ok"
        assert s["label"] == NAMES[int(row["label"])]
        assert s["pred"] == NAMES[int(row["predicted_class"])]
        assert s["confidence"] == pytest.approx(row["predicted_prob"], rel=1e-6)
        assert s["range"] == [0.0, 1.0]
        for method, field in (("gradcam", "gradcam_backbone"), ("gradcam++", "gradcampp_backbone")):
            want = load_maps(out, row["shard"], int(row["row"]), f"cam/{method}/backbone")
            assert np.array_equal(np.asarray(s["maps"][field], np.float32), want)
            for k in ("pointing_game", "average_drop"):
                value = s["metrics"][f"{field}_{k}"]
                assert value == pytest.approx(row[f"{method}/backbone/{k}"], rel=1e-6), (i, k)
    assert got["loaded_exist"] and got["loaded_dir"] == [str((out / "fiftyone_images").resolve())]
    assert got["left"] == []  # the datasets were deleted
