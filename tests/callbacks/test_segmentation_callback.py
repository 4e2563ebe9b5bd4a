"""The CAM callbacks on a segmentation LightningModule: overlays per class, pointing game
against the true masks, the embedded segmentation config."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lightning_cam import GradCAMCallback, explain_segmentation, metrics
from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import render
from lightning_cam.callbacks.segmentation import SegmentationTask, is_segmentation_module
from lightning_cam.callbacks.tasks import task_class
from lightning_cam.cli import main
from lightning_cam.data import ShapesDataModule
from lightning_cam.models import ShapesClassifier, ShapesSegmenter
from tests.callbacks.helpers import BlobData, image_events, scalar_events

ROOT = Path(__file__).resolve().parents[2]


def test_task_selection() -> None:
    assert task_class(ShapesSegmenter()) is SegmentationTask
    fcn = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3
    )
    assert is_segmentation_module(fcn)
    assert task_class(ShapesClassifier()) is not SegmentationTask


def _fit(tmp_path: Any, callback: Any, model: Any = None, epochs: int = 1) -> tuple[Any, Any]:
    pl.seed_everything(0)
    model = model or ShapesSegmenter(
        class_names=["background", "circle", "square", "triangle", "star"]
    )
    data = ShapesDataModule(image_size=32, batch_size=16, num_train=32, num_val=16, seed=0)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="seg"),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(model, datamodule=data)
    return trainer, model


def test_maps_and_pointing_game_match_explain_segmentation(tmp_path: Any) -> None:
    cb = GradCAMCallback(layer="backbone", num_samples=4, metrics_num_samples=8)
    trainer, model = _fit(tmp_path, cb, epochs=4)
    task = cb.task
    assert isinstance(task, SegmentationTask) and task.last_result is not None
    probes = cb.probe_set("seg_probes").data
    assert probes["mask"].shape == (8, 32, 32) and not probes["mask"].is_floating_point()
    pairs = task.pairs(model, probes)
    # one object per shapes image: one class (1 + label) per probe, the background left out
    assert len(pairs) == 8 and all(c >= 1 for _, c in pairs)
    classes = sorted({c for _, c in pairs})
    assert sorted(task.last_result) == classes
    model.eval()
    ref = explain_segmentation(model, probes["image"], classes, layer="backbone")
    maps = []
    for i, c in pairs:
        got = task.last_result[c].cams["gradcam"]["backbone"][i]
        want = ref[c].cams["gradcam"]["backbone"][i]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        maps.append(want)
    assert any(bool(m.abs().max() > 0) for m in maps)  # some classes predicted: real maps
    truth = torch.stack([probes["mask"][i] == c for i, c in pairs])
    tol = render.pointing_tolerance(cb.options, probes["image"])
    expected = float(metrics.pointing_game(torch.stack(maps), masks=truth, tolerance=tol).mean())
    energy = float(metrics.energy_pointing_game(torch.stack(maps), masks=truth).mean())
    log_dir = trainer.logger.log_dir
    scalars = scalar_events(log_dir)
    assert scalars["gradcam/backbone/pointing_game"][-1].value == pytest.approx(expected)
    assert scalars["gradcam/backbone/energy_pointing_game"][-1].value == pytest.approx(
        energy, rel=1e-4
    )
    tags = image_events(log_dir)
    assert "gradcam/backbone/overlay" in tags
    # tiles are named by segmentation class (the module's names), not the datamodule's labels
    assert task.class_names(trainer, model) == model.class_names


def test_boolean_masks_are_refused_with_the_fix(tmp_path: Any) -> None:
    class NoConversion(ShapesSegmenter):
        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            return batch  # the callbacks see bool object masks

        def _step(self, batch: Any, stage: str) -> torch.Tensor:
            return super()._step(super().on_after_batch_transfer(batch, 0), stage)

    cb = GradCAMCallback(layer="backbone", num_samples=2, metrics_num_samples=2)
    with pytest.raises(MisconfigurationException, match="integer class indices"):
        _fit(tmp_path, cb, NoConversion())


def test_segmentation_config(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit", "--config", str(ROOT / "configs" / "shapes_segmentation.yaml"),
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--data.num_train", "32",
            "--data.num_val", "16", "--data.batch_size", "16", "--data.image_size", "32",
        ]
    )  # fmt: skip
    events = glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True)
    log_dir = os.path.dirname(events[0])
    assert "gradcam/backbone/overlay" in image_events(log_dir)
    value = scalar_events(log_dir)["gradcam/backbone/pointing_game"][-1].value
    assert 0.0 <= value <= 1.0


class BinarySegmenter(pl.LightningModule):
    """One-channel binary logits (B, 1, H, W), float 0/1 masks whose border pixels are void
    (Lightning's segmentation example and VOC mark them 250 / 255); BCE over non-void pixels."""

    cam_task = "segmentation"
    class_names = ["background", "square"]

    def __init__(self, void: int = 255) -> None:
        super().__init__()
        self.void = void
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Conv2d(8, 1, 1)
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def _loss(self, batch: Any) -> torch.Tensor:
        logits, mask = self(batch["image"])[:, 0], batch["mask"]
        valid = mask != self.void
        return F.binary_cross_entropy_with_logits(logits[valid], mask[valid])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps += 1
        return self._loss(batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _binary_loader(void: int = 255, n: int = 8) -> DataLoader:
    items = []
    for img, _, mask, _ in BlobData(n, seed=1).items:
        target = mask.float()
        target[0, :] = target[:, 0] = float(void)  # void border pixels
        items.append({"image": img, "mask": target})
    return DataLoader(items, batch_size=4)


def _binary_trainer(tmp_path: Any, callback: Any, **kw: Any) -> Any:
    pl.seed_everything(0)
    kw.setdefault("max_epochs", 2)
    kw.setdefault("num_sanity_val_steps", 0)
    return pl.Trainer(
        accelerator="cpu",
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="bin"),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_binary_segmentation_with_float_masks_and_void_pixels(tmp_path: Any) -> None:
    """(B, 1, H, W) logits and float 0/1 masks with 255 borders: the positive class (1) is
    explained, its score the positive logit summed over the pixels predicted positive."""
    cb = GradCAMCallback(layer="backbone", num_samples=2, metrics_num_samples=4)
    model = BinarySegmenter()
    trainer = _binary_trainer(tmp_path, cb)
    trainer.fit(model, _binary_loader(), _binary_loader())
    task = cb.task
    assert isinstance(task, SegmentationTask) and task.last_result is not None
    probes = cb.probe_set("seg_probes").data
    assert probes["mask"].dtype == torch.long
    assert set(probes["mask"].unique().tolist()) == {0, 1, 255}
    assert sorted(task.last_result) == [1]  # background and void left out
    model.eval()
    with torch.no_grad():
        logit = model(probes["image"])[:, 0]
    ref = explain_segmentation(model, probes["image"], [1], layer="backbone")[1]
    torch.testing.assert_close(task.last_result[1].scores, (logit * (logit > 0)).flatten(1).sum(1))
    maps = task.last_result[1].cams["gradcam"]["backbone"]
    torch.testing.assert_close(maps, ref.cams["gradcam"]["backbone"], rtol=1e-4, atol=1e-6)
    assert torch.equal(task.last_prediction, (logit > 0).long())
    truth = probes["mask"] == 1
    tol = render.pointing_tolerance(cb.options, probes["image"])
    expected = float(metrics.pointing_game(maps, masks=truth, tolerance=tol).mean())
    scalars = scalar_events(trainer.logger.log_dir)
    assert scalars["gradcam/backbone/pointing_game"][-1].value == pytest.approx(expected)
    assert len(image_events(trainer.logger.log_dir)["gradcam/backbone/overlay"]) == 2


def test_void_labels_other_than_ignore_index_are_refused_at_step_0(tmp_path: Any) -> None:
    model = BinarySegmenter(void=250)
    cb = GradCAMCallback(layer="backbone", num_samples=2)
    match = r"labels \[250\].*ignore_index=\[250, 255\]"
    with pytest.raises(MisconfigurationException, match=match):
        _binary_trainer(tmp_path, cb).fit(model, _binary_loader(250), _binary_loader(250))
    assert model.steps == 0  # refused before the first training step
    # declared void: explained, the 250 pixels neither explained nor scored
    cb = GradCAMCallback(layer="backbone", num_samples=2, ignore_index=[250, 255])
    _binary_trainer(tmp_path, cb, max_epochs=1).fit(
        model, _binary_loader(250), _binary_loader(250)
    )
    assert sorted(cb.task.last_result) == [1]


@pytest.mark.parametrize(("bias", "caption"), [(3.0, "square"), (-3.0, "square: not predicted")])
def test_captions_say_what_the_model_predicts_not_what_the_map_is(
    tmp_path: Any, monkeypatch: Any, bias: float, caption: str
) -> None:
    """A head with zero weights: every map is zero; the class is predicted everywhere (bias > 0)
    or nowhere (bias < 0), and the caption says which."""
    from lightning_cam import viz

    model = BinarySegmenter()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(bias)
    labels: list[str] = []
    draw = viz.draw_label
    monkeypatch.setattr(viz, "draw_label", lambda tile, text, *a, **k: (
        labels.append(text), draw(tile, text, *a, **k))[1])
    cb = GradCAMCallback(layer="backbone", num_samples=2)
    _binary_trainer(tmp_path, cb).validate(model, _binary_loader())
    assert float(cb.task.last_result[1].cams["gradcam"]["backbone"].abs().max()) == 0.0
    assert labels == [caption, caption]


class UnusedLayer(ShapesSegmenter):
    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Conv2d(3, 4, 1)  # never called by forward
        self.steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps += 1
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "unused"}, r"layer=\['unused'\] cannot be explained"),
        ({"layer": "backbone", "methods": ["gradcam", "scorecam"]},
         r"methods=\['gradcam', 'scorecam'\].*'scorecam' explain classes only"),
        ({"layer": "backbon"}, r"layer='backbon' is not a module.*Closest names: backbone"),
        ({"layer": "backbone", "target": "label"},
         r"target='label' is invalid.*'pred' \(the default\) for a segmentation model"),
    ],
)
def test_explanations_that_cannot_work_are_refused_at_step_0(
    tmp_path: Any, kwargs: dict[str, Any], match: str
) -> None:
    model = UnusedLayer()
    data = ShapesDataModule(image_size=32, batch_size=8, num_train=16, num_val=8, seed=0)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, callbacks=[GradCAMCallback(**kwargs)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with pytest.raises(MisconfigurationException, match=match):
        trainer.fit(model, datamodule=data)
    assert model.steps == 0


class CoarseSegmenter(BinarySegmenter):
    """SegFormer's habit: logits at half the image size (three classes), upsampled in the loss;
    masks at the image size with void (255) borders."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(8, 3, 2, stride=2)

    def _loss(self, batch: Any) -> torch.Tensor:
        logits = F.interpolate(self(batch["image"]), size=batch["mask"].shape[-2:],
                               mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, batch["mask"].long(), ignore_index=255)


def test_coarser_logits_than_the_image_are_explained(tmp_path: Any) -> None:
    cb = GradCAMCallback(layer="backbone", num_samples=2, metrics_num_samples=4,
                         metrics=["pointing_game"])
    model = CoarseSegmenter()
    _binary_trainer(tmp_path, cb, max_epochs=1).fit(model, _binary_loader(), _binary_loader())
    task = cb.task
    assert isinstance(task, SegmentationTask) and task.last_result is not None
    probes = cb.probe_set("seg_probes").data
    images = probes["image"]
    # the captions' prediction: the logits upsampled bilinearly (as the loss does), argmax
    logits = F.interpolate(model.eval()(images), size=images.shape[-2:], mode="bilinear",
                           align_corners=False)
    assert torch.equal(task.last_prediction, logits.argmax(1))
    # the maps: the engine's on the coarse logits (true masks resized to their grid)
    assert sorted(task.last_result) == [1]
    want = explain_segmentation(model, images, [1], layer="backbone")[1]
    got = task.last_result[1]
    torch.testing.assert_close(got.cams["gradcam"]["backbone"], want.cams["gradcam"]["backbone"],
                               rtol=1e-4, atol=1e-6)
    assert want.cams["gradcam"]["backbone"].shape[-2:] == images.shape[-2:]


class SignalSegmenter(BinarySegmenter):
    """A 1-D conv segmenter ``(B, 2, L) -> (B, 3, L)``: the callback's pictures are 2-D."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv1d(8, 3, 1)

    def _loss(self, batch: Any) -> torch.Tensor:
        return F.cross_entropy(self(batch["image"]), batch["mask"].long())


def test_nd_segmentation_is_refused_at_step_0_with_the_fix(tmp_path: Any) -> None:
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(2, 32, generator=g), "mask": torch.randint(0, 3, (32,))}
             for _ in range(8)]  # fmt: skip
    model = SignalSegmenter()
    trainer = _binary_trainer(tmp_path, GradCAMCallback(layer="backbone"), max_epochs=1)
    with pytest.raises(MisconfigurationException,
                       match=r"draws 2-D images.*signals \(B, C, L\).*SegmentationTarget"):
        trainer.fit(model, DataLoader(items, batch_size=4), DataLoader(items, batch_size=4))
    assert model.steps == 0
