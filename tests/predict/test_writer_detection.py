"""``CAMWriter`` on LightningModules that wrap a detector (torchvision, YOLO, DETR)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_cam import CAMWriter
from lightning_cam._compat import MisconfigurationException
from lightning_cam.predict import OutputFolderError, load_maps, write_report
from lightning_cam.predict.detection_writer import DETECTION_MAP_SIDE
from tests.detection.test_adapter import ColourDetector

BOXES = torch.tensor([[60.0, 40.0, 84.0, 64.0], [8.0, 10.0, 40.0, 42.0]])
LAYER = "detector.backbone.body.layer1"


def _trainer(writer: CAMWriter, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", callbacks=[writer], logger=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def _colour_item(i: int, blank: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    image = torch.zeros(3, 100, 130)
    if not blank:
        for c, (x1, y1, x2, y2) in enumerate(BOXES.int().tolist()):
            image[c, y1:y2, x1:x2] = 1.0 - 0.1 * c - 0.01 * i
    return image, {"boxes": BOXES.clone(), "labels": torch.tensor([1, 2])}


class ColourModule(pl.LightningModule):
    """The constructed detector (known right answers) in a LightningModule."""

    def __init__(self) -> None:
        super().__init__()
        self.detector = ColourDetector(BOXES)
        self.class_names = ["__background__", "red", "green"]

    def forward(self, images: list[torch.Tensor]) -> Any:
        return self.detector(images)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return self(batch[0])


def _colour_loader(items: list[Any]) -> DataLoader:
    return DataLoader(items, batch_size=2,
                      collate_fn=lambda b: ([x for x, _ in b], [t for _, t in b]))


def _stored(out: Any, row: Any, key: str) -> np.ndarray:
    return load_maps(out, row.shard, int(row.row), key)


def _hygiene(module: torch.nn.Module, before: dict[str, bool]) -> None:
    assert {n: m.training for n, m in module.named_modules()} == before
    assert not any(m._forward_hooks or m._backward_hooks for m in module.modules())
    assert all(p.grad is None for p in module.parameters())


def test_colour_detector_rows_maps_pointing_games_and_an_image_without_detections(tmp_path):
    from lightning_cam.detection import DetectionExplainer

    items = [_colour_item(0), _colour_item(1), _colour_item(2, blank=True)]
    module = ColourModule()
    before = {n: m.training for n, m in module.named_modules()}
    writer = CAMWriter(tmp_path, layer=LAYER, map_size="input", detection_top_k=2,
                       detection_score_threshold=0.3)
    _trainer(writer).predict(module, _colour_loader(items), return_predictions=False)
    _hygiene(module, before)
    df = pd.read_parquet(tmp_path / "manifest.parquet")
    # two detections on each drawn image, none on the blank one (scores 0 < 0.3)
    assert len(df) == 4 and sorted(set(df["index"])) == [0, 1]
    assert list(df["detection"]) == [0, 1, 0, 1] and list(df["label_name"][:2]) == ["red", "green"]
    assert list(df["gt_index"]) == [0, 1, 0, 1]
    np.testing.assert_allclose(df["gt_iou"], 1.0)
    np.testing.assert_allclose(np.stack(df["box"]), np.concatenate([BOXES.numpy()] * 2))
    explainer = DetectionExplainer(module.detector, layer="backbone.body.layer1",
                                   methods=["gradcam", "gradcam++"], score_threshold=0.3,
                                   top_k=2)
    expected = explainer(items[1][0])
    np.testing.assert_allclose(df["score"][2:], expected.scores.numpy(), rtol=1e-6)
    pg_col = f"gradcam/{LAYER}/pointing_game"
    energy_col = f"gradcam/{LAYER}/energy_pointing_game"
    for d in range(2):
        row = df.iloc[2 + d]
        want = expected.map("gradcam", "backbone.body.layer1")[d]
        np.testing.assert_allclose(_stored(tmp_path, row, f"cam/gradcam/{LAYER}"), want.numpy(),
                                   atol=1e-3)  # float16 of a [0, 1] map
        # by hand: the map's maximum inside the box (x1 <= x + 0.5 < x2), the mass inside it
        x1, y1, x2, y2 = BOXES[d].int().tolist()
        inside = torch.zeros_like(want, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        peak = want == want.max()
        assert row[pg_col] == float((peak & inside).any())
        assert row[energy_col] == pytest.approx(float(want[inside].sum() / want.sum()), abs=1e-5)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "detection" and summary["images"] == 3
    assert summary["detections"] == 4 and summary["images_without_detections"] == 1
    assert summary["matched_detections"] == 4 == summary["detections_with_targets"]
    cell = summary["metrics"]["gradcam"][LAYER]["pointing_game"]
    assert cell["count"] == 4 and cell["mean"] == pytest.approx(df[pg_col].mean())
    assert cell["mean"] == 1.0  # each colour's map points at its own object
    assert "(1 images without detections)" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "label"}, "target='label' does not apply"),
        ({"guided_backprop": True}, "guided_backprop=True does not apply"),
        ({"guided_gradcam": True}, "guided_backprop=True"),
        ({"sanity_samples": 2}, "sanity_samples=2 does not apply.*sanity_samples=0"),
        ({"overlays": 2}, "overlays=2"),
        ({"normalize": False}, "normalize=False"),
        ({"max_batch": 1}, "max_batch=1"),
        ({"label_key": "y"}, "image_key="),
        ({"metrics": ["average_drop"]}, r"'average_drop' are no detection metrics"),
        ({"methods": ["scorecam"]}, "explain classes only"),
        ({"layer": "backbone.body.layer9"}, r"layer='backbone.body.layer9'.*layer1"),
    ],
)
def test_options_that_do_not_apply_to_detectors_are_refused_at_setup(tmp_path, kwargs, match):
    writer = CAMWriter(tmp_path, **kwargs)
    with pytest.raises(MisconfigurationException, match=match):
        _trainer(writer).predict(ColourModule(), _colour_loader([_colour_item(0)]),
                                 return_predictions=False)
    assert not (tmp_path / "manifest.parquet").exists()


def test_detection_arguments_are_checked_as_the_callbacks_check_them(tmp_path):
    with pytest.raises(MisconfigurationException, match="detection_top_k"):
        CAMWriter(tmp_path, detection_top_k=0)
    with pytest.raises(MisconfigurationException, match=r"detection_score_threshold.*\[0, 1\]"):
        CAMWriter(tmp_path, detection_score_threshold=1.5)


def test_limited_runs_a_refused_rerun_and_a_refused_report(tmp_path):
    items = [_colour_item(i) for i in range(4)]
    writer = CAMWriter(tmp_path / "a", layer=LAYER, detection_score_threshold=0.3)
    _trainer(writer, limit_predict_batches=1).predict(
        ColourModule(), _colour_loader(items), return_predictions=False)
    df = pd.read_parquet(tmp_path / "a" / "manifest.parquet")
    assert sorted(set(df["index"])) == [0, 1] and len(df) == 4
    assert df["map_shape"].iloc[0] == "49x64"  # 100 x 130 within DETECTION_MAP_SIDE
    assert DETECTION_MAP_SIDE == 64
    writer = CAMWriter(tmp_path / "b", layer=LAYER)
    _trainer(writer, fast_dev_run=True).predict(
        ColourModule(), _colour_loader(items), return_predictions=False)
    assert writer.summary is not None and writer.summary["images"] == 2
    for threshold, match in ((0.3, "do not resume"), (0.5, "another configuration")):
        with pytest.raises(OutputFolderError, match=match):
            _trainer(CAMWriter(tmp_path / "a", layer=LAYER,
                               detection_score_threshold=threshold)).predict(
                ColourModule(), _colour_loader(items), return_predictions=False)
    with pytest.raises(OutputFolderError, match="of a detector.*pandas"):
        write_report(tmp_path / "a")


@pytest.mark.parametrize("map_size", ["layer", "input"])
def test_shapes_detector_stored_maps_are_the_explainers(tmp_path, map_size):
    from lightning_cam.data.detection import ShapesDetectionDataModule
    from lightning_cam.detection import DetectionExplainer
    from lightning_cam.detection.module import ShapesDetector

    torch.manual_seed(0)
    module = ShapesDetector(score_threshold=0.0, detections_per_img=5, min_size=96, max_size=96)
    dm = ShapesDetectionDataModule(num_train=4, num_val=4, num_test=3, batch_size=2,
                                   image_size=96)
    before = {n: m.training for n, m in module.named_modules()}
    dtype = "float16" if map_size == "layer" else "uint8"
    writer = CAMWriter(tmp_path, map_size=map_size, map_dtype=dtype, methods=["gradcam"],
                       detection_top_k=2, detection_score_threshold=0.0)
    _trainer(writer).predict(module, dm, return_predictions=False)
    _hygiene(module, before)
    df = pd.read_parquet(tmp_path / "manifest.parquet")
    dm.setup("predict")
    data = dm.dataset("test")
    explainer = DetectionExplainer(module.detector, methods=["gradcam"], top_k=2,
                                   score_threshold=0.0, class_names=module.class_names)
    results = [explainer(data[i][0]) for i in range(3)]
    assert len(df) == sum(len(r) for r in results) == 6
    assert list(df["id"]) == [str(int(data[i][1]["image_id"])) for i in range(3) for _ in "ab"]
    for row in df.itertuples():
        result = results[row.index]
        key = f"gradcam/detector.{result.layers[0]}"
        want = result.map("gradcam")[row.detection]
        got = _stored(tmp_path, row, f"cam/{key}")
        if map_size == "layer":  # 96 x 96 -> area-averaged to 64 x 64
            assert got.shape == (DETECTION_MAP_SIDE, DETECTION_MAP_SIDE)
            want = F.interpolate(want[None, None], size=(64, 64), mode="area")[0, 0]
            np.testing.assert_allclose(got, want.numpy(), atol=1e-3)
        else:
            assert got.shape == (96, 96)
            np.testing.assert_allclose(got, want.numpy(), atol=0.5 / 255 + 1e-6)
        np.testing.assert_allclose(row.box, result.boxes[row.detection].numpy(), rtol=1e-5)
        assert row.score == pytest.approx(float(result.scores[row.detection]), rel=1e-5)
        assert row.label_name == result.label_names()[row.detection]


def test_yolo_module_rows_and_maps(tmp_path):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from lightning_cam.data.detection import ShapesDetectionDataset, collate_detection
    from lightning_cam.detection.yolo import YOLOExplainer
    from lightning_cam.detection.yolo_module import ShapesYOLO

    torch.manual_seed(0)
    module = ShapesYOLO(width=0.125)
    with torch.no_grad():  # random-init class biases: some detections above 0
        for seq in module.model.model[-1].cv3:
            seq[-1].bias.normal_(0.0, 1.0)
    data = ShapesDetectionDataset(2, image_size=64, seed=5)
    loader = DataLoader(data, batch_size=2, collate_fn=collate_detection)
    module.eval()
    writer = CAMWriter(tmp_path, methods=["gradcam"], map_size="input", detection_top_k=2,
                       detection_score_threshold=0.0)
    _trainer(writer).predict(module, loader, return_predictions=False)
    df = pd.read_parquet(tmp_path / "manifest.parquet")
    explainer = YOLOExplainer(module.model, methods=["gradcam"], top_k=2, score_threshold=0.0,
                              imgsz=64)
    results = [explainer(data[i][0]) for i in range(2)]
    assert len(df) == sum(len(r) for r in results) > 0
    for row in df.itertuples():
        want = results[row.index].map("gradcam")[row.detection]
        got = _stored(tmp_path, row, "cam/gradcam/model.neck")
        np.testing.assert_allclose(got, want.numpy(), atol=1e-3)
    assert all(p.grad is None for p in module.parameters())


def test_detr_module_on_bare_image_batches(tmp_path):
    from lightning_cam.detection.detr import DetrExplainer
    from tests.detection.detr_models import tiny_detr

    class DetrModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.image_processor = tiny_detr("detr")

        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            pixels = self.image_processor(images=batch, return_tensors="pt", do_rescale=False)
            return self.model(**pixels)

    torch.manual_seed(1)
    images = [torch.rand(3, 48, 64) for _ in range(3)]
    loader = DataLoader(images, batch_size=2, collate_fn=list)
    module = DetrModule()
    writer = CAMWriter(tmp_path, methods=["gradcam"], map_size="input", detection_top_k=2,
                       detection_score_threshold=0.0)
    _trainer(writer).predict(module, loader, return_predictions=False)
    df = pd.read_parquet(tmp_path / "manifest.parquet")
    explainer = DetrExplainer(module.model, module.image_processor, methods=["gradcam"],
                              top_k=2, score_threshold=0.0)
    results = [explainer(im) for im in images]
    assert len(df) == sum(len(r) for r in results) == 6
    assert "gt_index" not in df.columns  # no targets: no matching, no pointing game
    layer = results[0].layers[0]
    for row in df.itertuples():
        want = results[row.index].map("gradcam", layer)[row.detection]
        got = _stored(tmp_path, row, f"cam/gradcam/model.{layer}")
        np.testing.assert_allclose(got, want.numpy(), atol=1e-3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["detections"] == 6 and summary["detections_with_targets"] == 0
    assert not any(m._forward_hooks for m in module.modules())
