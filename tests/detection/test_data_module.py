"""Synthetic detection data, detection metrics, ShapesDetector, build_detector, the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning import Trainer

from lightning_cam.data.detection import (
    ShapesDetectionDataModule,
    ShapesDetectionDataset,
    collate_detection,
)
from lightning_cam.data.shapes import ShapesDataset
from lightning_cam.detection import (
    DetectionExplainer,
    build_detector,
    detection_scores,
    explain_detection_batch,
    match_detections,
    split_detection_batch,
)
from lightning_cam.detection.module import ShapesDetector, make_detector
from lightning_cam.zoo.classifiers import StateDictMismatchError, WeightFileError

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes_detection.yaml"

GRAD = ("gradcam", "gradcam++")  # the methods whose maps these tests check


def test_dataset_targets_follow_torchvision_and_are_exact():
    ds = ShapesDetectionDataset(20, image_size=96, seed=5, masks=True, max_objects=3)
    counts = set()
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        n = len(target["labels"])
        counts.add(n)
        assert 1 <= n <= 3 and target["boxes"].shape == (n, 4)
        assert target["labels"].min() >= 1 and target["labels"].max() <= 4
        for box, mask in zip(target["boxes"], target["masks"], strict=True):
            assert torch.equal(box, ShapesDataset.mask_to_box(mask.bool()))
        masks = target["masks"].bool()
        assert (masks.sum(0) <= 1).all(), "objects do not overlap"
        again_image, again = ds[i]
        assert torch.equal(image, again_image) and torch.equal(target["boxes"], again["boxes"])
    assert counts == {1, 2, 3}
    assert ds.class_names == ["__background__", "circle", "square", "triangle", "star"]
    assert ds.num_classes == 5


def test_datamodule_batches_are_lists_and_splits_differ():
    dm = ShapesDetectionDataModule(num_train=8, num_val=4, num_test=4, batch_size=4)
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert isinstance(images, list) and len(images) == 4 and isinstance(targets[0], dict)
    val_image, _ = dm.dataset("val")[0]
    assert not torch.equal(val_image, dm.dataset("train")[0][0])
    assert collate_detection([(images[0], targets[0])]) == ([images[0]], [targets[0]])
    assert split_detection_batch((images, targets)) == (images, targets)
    assert split_detection_batch(images) == (images, None)
    assert split_detection_batch({"image": images[0]}) is None
    with pytest.raises(ValueError, match="max_objects"):
        ShapesDetectionDataModule(min_objects=3, max_objects=2)


def test_match_and_scores_by_hand():
    gt = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]),
          "labels": torch.tensor([1, 2])}
    pred = {"boxes": torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 9, 10], [50.0, 50, 60, 60],
                                   [20.0, 20, 30, 30]]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.4]),
            "labels": torch.tensor([1, 1, 2, 2])}
    match = match_detections(pred["boxes"], pred["scores"], gt["boxes"], pred["labels"],
                             gt["labels"])
    assert match.tolist() == [0, -1, -1, 1]  # the duplicate and the stray box are misses
    scores = detection_scores([pred], [gt])
    # class 1: TP then FP -> AP 1; class 2: FP (0.7) then TP (0.4) -> precision 1/2 at recall 1
    assert scores["map"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["recall"] == pytest.approx(0.5)  # the 0.4 detection is below 0.5
    assert detection_scores([pred], [gt], score_threshold=0.3)["recall"] == 1.0
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.long)}
    assert detection_scores([empty], [gt]) == {"map": 0.0, "recall": 0.0}


def _tiny_detector(**kwargs) -> ShapesDetector:
    torch.manual_seed(0)
    return ShapesDetector(
        arch="fasterrcnn_mobilenet_v3_large_320_fpn", min_size=96, max_size=96,
        anchor_sizes=[16, 32, 64, 128, 256], box_head_size=64,
        detector_kwargs={"box_batch_size_per_image": 16, "rpn_post_nms_top_n_train": 50,
                         "rpn_pre_nms_top_n_train": 50}, **kwargs,
    )


def test_shapes_detector_trains_validates_and_is_explained(tmp_path):
    dm = ShapesDetectionDataModule(num_train=4, num_val=2, num_test=2, image_size=96,
                                   batch_size=2)
    model = _tiny_detector(class_names=dm.class_names)
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                      accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0)
    trainer.fit(model, dm)
    metrics = trainer.callback_metrics
    assert {"train/loss", "val/map50", "val/recall50"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss"])
    ckpt = tmp_path / "det.ckpt"
    trainer.save_checkpoint(ckpt)

    images = [dm.dataset("val")[0][0]]
    (result,) = explain_detection_batch(model, images, top_k=2, score_threshold=0.0, methods=GRAD)
    assert result.class_names == dm.class_names
    assert result.map("gradcam").shape == (len(result), 96, 96)

    # the checkpoint rebuilds the same detector (anchors and box head included)
    detector, meta = build_detector(None, ckpt, min_size=96, max_size=96)
    assert meta.name == "fasterrcnn_mobilenet_v3_large_320_fpn"
    assert meta.categories == dm.class_names and meta.num_classes == 5
    model.eval()
    with torch.no_grad():
        expected = model(images)[0]["scores"]
        got = detector(images)[0]["scores"]
    assert torch.allclose(expected, got)


def test_build_detector_from_state_dict_and_bad_files(tmp_path):
    detector = make_detector("retinanet_resnet50_fpn", num_classes=3, min_size=64, max_size=64)
    sd_path = tmp_path / "retina.pth"
    torch.save({f"module.{k}": v for k, v in detector.state_dict().items()}, sd_path)
    built, meta = build_detector("retinanet_resnet50_fpn", sd_path)
    assert meta.num_classes == 3 and meta.categories is None and not built.training
    explainer = DetectionExplainer(built, score_threshold=0.0, top_k=1, methods=GRAD)
    assert explainer.layers == ["backbone.body.layer4"]
    with pytest.raises(StateDictMismatchError, match="do not fit fcos_resnet50_fpn"):
        build_detector("fcos_resnet50_fpn", sd_path)
    with pytest.raises(WeightFileError, match="not found"):
        build_detector("fcos_resnet50_fpn", tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_text("junk")
    with pytest.raises(WeightFileError, match="not a PyTorch file"):
        build_detector("fcos_resnet50_fpn", junk)
    with pytest.raises(ValueError, match="name its architecture"):
        build_detector(None, sd_path)


def test_default_simple_detector_and_its_checkpointless_weights(tmp_path):
    model = ShapesDetector(min_size=96, max_size=96)
    assert model.hparams["arch"] == "fasterrcnn_simple"
    path = tmp_path / "simple.pth"
    torch.save(model.detector.state_dict(), path)
    detector, meta = build_detector("fasterrcnn_simple", path, min_size=96, max_size=96)
    assert meta.num_classes == 5
    explainer = DetectionExplainer(detector, score_threshold=0.0, top_k=2, roi_cams=True,
                                   methods=GRAD)
    assert explainer.layers == ["backbone.body.layer3"]
    result = explainer(torch.rand(3, 80, 96))
    assert result.map("gradcam", "roi_heads.box_roi_pool").shape == (len(result), 80, 96)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_detector("fasterrcnn_simple")


def test_config_builds_its_classes():
    config = yaml.safe_load(CONFIG.read_text())
    from jsonargparse import ArgumentParser

    assert config["model"]["class_path"] == "lightning_cam.detection.module.ShapesDetector"
    assert config["data"]["class_path"] == "lightning_cam.data.detection.ShapesDetectionDataModule"
    parser = ArgumentParser()
    parser.add_class_arguments(ShapesDetector, "model")
    parser.add_class_arguments(ShapesDetectionDataModule, "data")
    cfg = parser.parse_object({"model": config["model"]["init_args"],
                               "data": config["data"]["init_args"]})
    init = parser.instantiate_classes(cfg)
    assert isinstance(init.model, ShapesDetector) and init.data.num_classes == 5
