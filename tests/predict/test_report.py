"""``write_report`` / ``lightning-cam report``: the data the page shows equals the folder's,
the pictures are the stored maps, made once, and a folder that is not CAMWriter's is refused.
(The page itself is tested in a browser: ``test_report_browser.py``.)"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lightning_cam import cli
from lightning_cam.predict import OutputFolderError, load_maps
from lightning_cam.predict.report import write_report
from lightning_cam.predict.thumbnails import THUMBS_DIR, Thumbnails, short_hash
from lightning_cam.tools import viz
from tests.predict.audit_folder import METRICS, NUM, make_audit


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_audit(tmp_path_factory.mktemp("report"))


def read_data(out: Path) -> dict:
    text = (out / "report" / "data.js").read_text(encoding="utf-8")
    prefix = "window.LC_REPORT = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix):-2].replace("<\\/", "</"))


def _copy(audit: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    out, images = audit
    shutil.copytree(out, tmp_path / "audit")
    shutil.copytree(images, tmp_path / "images")
    return tmp_path / "audit", tmp_path / "images"


def test_the_data_is_the_manifest_and_the_summary(audit: tuple[Path, Path], tmp_path: Path) -> None:
    out, images = _copy(audit, tmp_path)
    page = write_report(out, images=images)
    assert page == out / "report" / "index.html"
    for name in ("index.html", "report.css", "report.js"):
        assert (out / "report" / name).stat().st_size > 100
    data = read_data(out)
    df = pd.read_parquet(out / "manifest.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert data["count"] == NUM and data["columns"]["id"] == list(df["id"])
    assert data["columns"]["label"] == [int(v) for v in df["label"]]
    assert data["columns"]["pred"] == [int(v) for v in df["predicted_class"]]
    assert data["methods"] == ["gradcam", "gradcam++"] and data["layers"] == ["backbone"]
    assert data["higher"] == {"pointing_game": True, "average_drop": False}
    for m in data["methods"]:
        for k in METRICS:
            got = data["metric_columns"][f"{m}/backbone/{k}"]
            want = df[f"{m}/backbone/{k}"].to_numpy()
            assert np.allclose(np.asarray(got, float), want, rtol=1e-4, atol=1e-6)
            mean, count = data["means"][f"{m}/backbone/{k}"]
            cell = summary["metrics"][m]["backbone"][k]
            assert math.isclose(mean, cell["mean"], rel_tol=1e-4, abs_tol=1e-6)
            assert count == cell["count"] == NUM
    assert data["sanity"]["stages"] == summary["sanity"]["stages"]
    assert len(data["sanity"]["similarity"]["gradcam"]["backbone"]["ssim"]) == 2
    assert data["has_images"] and data["columns"]["image"] == [1] * NUM


def test_the_map_picture_is_the_stored_map_upsampled_and_coloured(
    audit: tuple[Path, Path], tmp_path: Path
) -> None:
    """Independently: bilinear (align_corners=False) to 32 px, min-max, OpenCV's jet."""
    out, images = _copy(audit, tmp_path)
    write_report(out, images=images)
    data = read_data(out)
    df = pd.read_parquet(out / "manifest.parquet")
    for view in data["views"]:
        for i in (0, NUM - 1):
            cam = load_maps(out, df["shard"][i], int(df["row"][i]), f"cam/{view['key']}")
            big = F.interpolate(torch.from_numpy(cam)[None, None], size=(32, 32),
                                mode="bilinear", align_corners=False)[0, 0].numpy()
            big = (big - big.min()) / (big.max() - big.min())
            levels = np.round(big * 255).clip(0, 255).astype(np.uint8)
            want = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
            key = data["columns"]["key"][i]
            got = viz.load_image(out / "report" / THUMBS_DIR / f"{key}-{view['file']}.png")
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 4  # rounding at level edges
            assert (got == want).mean() > 0.97
    # the image picture is the image file (32 px: not resized; JPEG, so up to its loss)
    got = viz.load_image(out / "report" / THUMBS_DIR / f"{data['columns']['key'][0]}.jpg")
    own, other = (_error(got, viz.load_image(images / n)) for n in ("img000", "img001"))
    assert own < 12 and other > 2 * own


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_pictures_are_made_once_and_remade_when_their_source_changes(
    audit: tuple[Path, Path], tmp_path: Path
) -> None:
    from lightning_cam.predict.audit import open_audit

    out, images = _copy(audit, tmp_path)
    report = out / "report"
    first = Thumbnails(open_audit(out, images), report)
    first.run()
    assert (first.made, first.reused, first.removed) == (NUM * 3, 0, 0)
    again = Thumbnails(open_audit(out, images), report)
    again.run()
    assert (again.made, again.reused) == (0, NUM * 3)
    # one image file changes, a stray picture lies there, one picture was deleted
    picture = viz.load_image(images / "img002")
    viz.save_image(images / "img002.png", 255 - picture)
    os.replace(images / "img002.png", images / "img002")
    (report / THUMBS_DIR / "stale.png").write_bytes(b"x")
    key0 = short_hash("img000")
    next(p for p in (report / THUMBS_DIR).glob(f"{key0}-*.png")).unlink()
    third = Thumbnails(open_audit(out, images), report)
    third.run()
    assert (third.made, third.reused, third.removed) == (2, NUM * 3 - 2, 1)
    got = viz.load_image(report / THUMBS_DIR / f"{short_hash('img002')}.jpg")
    assert _error(got, 255 - picture) < 12 and _error(got, picture) > 24


def test_without_images_the_maps_are_shown_alone(audit: tuple[Path, Path], tmp_path: Path) -> None:
    out, _images = _copy(audit, tmp_path)
    write_report(out)
    data = read_data(out)
    assert not data["has_images"] and data["columns"]["image"] == [0] * NUM
    assert data["columns"]["maps"] == [1] * NUM
    assert len(list((out / "report" / THUMBS_DIR).glob("*.jpg"))) == 0


def test_a_loader_function_and_the_recorded_folder_give_the_images(
    audit: tuple[Path, Path], tmp_path: Path
) -> None:
    from lightning_cam.predict.audit import record_images

    out, images = _copy(audit, tmp_path)
    seen: list[str] = []

    def load(image_id: str) -> np.ndarray | None:
        seen.append(image_id)
        return None if image_id == "img001" else viz.load_image(images / image_id)

    write_report(out, images=load)
    assert read_data(out)["columns"]["image"] == [1, 0, 1, 1, 1, 1] and len(seen) == NUM
    record_images(out, images)  # what `lightning-cam explain --data` does
    write_report(out)
    assert read_data(out)["columns"]["image"] == [1] * NUM


def test_a_folder_that_is_not_camwriters_is_refused(
    audit: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OutputFolderError, match="is not a CAMWriter folder.*no run.json"):
        write_report(empty)
    (empty / "run.json").write_text('{"something": 1}')
    with pytest.raises(OutputFolderError, match="not a CAMWriter run file"):
        write_report(empty)
    out, _ = _copy(audit, tmp_path)
    (out / "manifest.parquet").unlink()
    with pytest.raises(OutputFolderError, match="has not finished.*rerun the same command"):
        write_report(out)
    assert not (out / "report").exists()
    assert cli.main(["report", str(empty)]) == 2
    assert "not a CAMWriter" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        write_report(audit[0], images=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="thumbnail_size"):
        write_report(audit[0], thumbnail_size=4)


def test_the_cli_writes_the_report(audit: tuple[Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, images = _copy(audit, tmp_path)
    assert cli.main(["report", str(out), "--images", str(images), "--thumbnail-size", "16"]) == 0
    assert "report/index.html" in capsys.readouterr().out
    key = read_data(out)["columns"]["key"][0]
    assert viz.load_image(out / "report" / THUMBS_DIR / f"{key}.jpg").shape == (16, 16, 3)
