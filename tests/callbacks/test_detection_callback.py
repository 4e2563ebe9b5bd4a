"""The CAM callbacks on LightningModules that wrap a torchvision detector."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_cam import GradCAMCallback, GradCAMPlusPlusCallback
from lightning_cam._compat import MisconfigurationException
from lightning_cam.data.detection import ShapesDetectionDataModule
from lightning_cam.detection.module import ShapesDetector
from tests.callbacks.helpers import image_events, scalar_events
from tests.detection.test_adapter import ColourDetector

BOXES = torch.tensor([[60.0, 40.0, 84.0, 64.0], [8.0, 10.0, 40.0, 42.0]])


def _image(shift: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    image = torch.zeros(3, 100, 130)
    for c, (x1, y1, x2, y2) in enumerate(BOXES.int().tolist()):
        image[c, y1:y2, x1:x2] = 1.0 - 0.1 * c - 0.01 * shift
    return image, {"boxes": BOXES.clone(), "labels": torch.tensor([1, 2])}


class ColourModule(pl.LightningModule):
    """A LightningModule wrapping the constructed detector (known right answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.detector = ColourDetector(BOXES)
        self.class_names = ["__background__", "red", "green"]

    def forward(self, images: list[torch.Tensor]) -> Any:
        return self.detector(images)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if isinstance(batch, (list, tuple)):
            self(batch[0])


def _loader(n: int = 4) -> DataLoader:
    return DataLoader(
        [_image(i) for i in range(n)], batch_size=2,
        collate_fn=lambda b: ([x for x, _ in b], [t for _, t in b]),
    )


def test_detection_callback_logs_boxes_maps_and_a_perfect_pointing_game(tmp_path):
    callbacks = [
        GradCAMCallback(layer="detector.backbone.body.layer1", num_samples=3, detection_top_k=2,
                        detection_score_threshold=0.0, metrics_num_samples=4),
        GradCAMPlusPlusCallback(layer="backbone.body.layer1", num_samples=3, detection_top_k=2,
                                detection_score_threshold=0.0, metrics_num_samples=4),
    ]
    logger = TensorBoardLogger(str(tmp_path), name="det")
    trainer = pl.Trainer(accelerator="cpu", logger=logger, callbacks=callbacks,
                         enable_progress_bar=False, enable_model_summary=False)
    module = ColourModule()
    before = {n: m.training for n, m in module.named_modules()}
    # trainer.validate(): inference mode on, as Lightning runs it
    trainer.validate(module, dataloaders=_loader())
    log_dir = logger.log_dir
    images = image_events(log_dir)
    tags = {"gradcam/detector.backbone.body.layer1/detections",
            "gradcam++/detector.backbone.body.layer1/detections"}
    assert tags <= set(images)
    scalars = scalar_events(log_dir)
    for method in ("gradcam", "gradcam++"):
        pg = scalars[f"{method}/detector.backbone.body.layer1/pointing_game"]
        assert [e.value for e in pg] == [1.0]  # both detections of all 4 images hit their box
        energy = scalars[f"{method}/detector.backbone.body.layer1/energy_pointing_game"][0].value
        assert 0.5 < energy <= 1.0
    # one row per probe image (3), a column for the boxes and one per detection (2)
    # (tiles fit in tile_size=160: 160 x 123 for these 130 x 100 images)
    event = images["gradcam/detector.backbone.body.layer1/detections"][0]
    assert 3 * 123 <= event.height < 3 * 123 + 60 and 3 * 160 < event.width <= 4 * 160

    assert {n: m.training for n, m in module.named_modules()} == before
    assert all(not m._forward_hooks for m in module.modules())
    # probes are kept, with their targets, for resume
    state = callbacks[0].state_dict()
    assert len(state["det_probes"]) == 4 and "boxes" in state["det_probes"][0][1]
    fresh = GradCAMCallback(layer="backbone.body.layer1")
    fresh.load_state_dict(state)
    assert fresh.det_probes is not None and len(fresh.det_probes) == 4


def test_detection_callback_shares_one_computation(tmp_path, monkeypatch):
    from lightning_cam.detection import DetectionExplainer

    calls = []
    original = DetectionExplainer.__call__

    def counting(self: Any, image: torch.Tensor) -> Any:
        calls.append(tuple(self.methods))
        return original(self, image)

    monkeypatch.setattr(DetectionExplainer, "__call__", counting)
    callbacks = [GradCAMCallback(num_samples=2, detection_score_threshold=0.0),
                 GradCAMPlusPlusCallback(num_samples=2, detection_score_threshold=0.0)]
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=callbacks,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="no logger"):
        trainer.validate(ColourModule(), dataloaders=_loader(2))
    assert calls == [("gradcam", "gradcam++")] * 2  # one pass per probe image for both
    pngs = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert len(pngs) == 2 and all("detections" in str(p) for p in pngs)


def test_detection_callback_bad_layer_and_bad_batches():
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False,
                         callbacks=[GradCAMCallback(layer="backbone.body.layer9")])
    with pytest.raises(MisconfigurationException, match=r"layer='backbone.body.layer9'.*layer1"):
        trainer.validate(ColourModule(), dataloaders=_loader(2))

    cb = GradCAMCallback()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb])
    images = DataLoader(torch.stack([_image(0)[0], _image(1)[0]]), batch_size=2)
    with pytest.raises(MisconfigurationException, match="list of target dicts"):
        trainer.validate(ColourModule(), dataloaders=images)


@pytest.mark.parametrize("kwargs", [{"detection_top_k": 0}, {"detection_score_threshold": 2},
                                    {"pointing_game_tolerance": -1}])
def test_detection_arguments_are_validated(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(MisconfigurationException, match=name):
        GradCAMCallback(**kwargs)


def test_shapes_detector_fit_logs_detection_pictures_each_epoch(tmp_path):
    """A real torchvision detector (random init, tiny) during fit, as configs/shapes_detection."""
    dm = ShapesDetectionDataModule(num_train=4, num_val=2, num_test=2, image_size=96,
                                   batch_size=2)
    torch.manual_seed(0)
    model = ShapesDetector(
        arch="fasterrcnn_mobilenet_v3_large_320_fpn", min_size=96, max_size=96,
        anchor_sizes=[16, 32, 64, 128, 256], box_head_size=64, class_names=dm.class_names,
        detector_kwargs={"box_batch_size_per_image": 16, "rpn_post_nms_top_n_train": 50,
                         "rpn_pre_nms_top_n_train": 50, "box_score_thresh": 0.0},
    )
    logger = TensorBoardLogger(str(tmp_path), name="fit")
    cb = GradCAMCallback(num_samples=2, detection_top_k=2, detection_score_threshold=0.0)
    # RoI-level maps (Faster R-CNN), by the RoI layer's name; computed in the same pass
    roi = GradCAMPlusPlusCallback(layer="roi_heads.box_roi_pool", num_samples=2,
                                  detection_top_k=2, detection_score_threshold=0.0)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1,
                         accelerator="cpu", logger=logger, callbacks=[cb, roi],
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    images = image_events(logger.log_dir)
    (tag,) = [t for t in images if t.startswith("gradcam/")]
    # the default: backbone.body's last stage
    assert tag.startswith("gradcam/detector.backbone.body.")
    assert tag.endswith("/detections")
    assert len(images[tag]) == 2  # one picture per validation epoch
    assert len(images["gradcam++/detector.roi_heads.box_roi_pool/detections"]) == 2
    assert cb.det_probes is not None and len(cb.det_probes) == 2


def test_pointing_game_tolerance_defaults_to_the_original_protocol_scaled():
    from types import SimpleNamespace

    # the map's peak lies 3 pixels right of a 64 x 64 image's object: within 15 px at 224 px
    # scaled to 64 px (4.29 px), not on the object itself
    maps = torch.zeros(1, 64, 64)
    maps[0, 30, 23] = 1.0
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 20:40, 10:21] = True
    result = SimpleNamespace(cams={"gradcam": {"backbone": maps}}, class_ids=None)
    scores = {}
    for tol in (None, 0, 2.5, 3.0):
        cb = GradCAMCallback(layer="backbone", pointing_game_tolerance=tol)
        cb.probes = {"image": torch.zeros(1, 3, 64, 64), "mask": mask}
        assert cb._tolerance(cb.probes["image"]) == (15 * 64 / 224 if tol is None else tol)
        scores[tol] = cb.compute_metrics(torch.nn.Identity(), result)[
            "gradcam/backbone/pointing_game"
        ]
    assert scores == {None: 1.0, 0: 0.0, 2.5: 0.0, 3.0: 1.0}


def test_metric_images_get_maps_without_a_guided_pass_and_match_one_full_pass():
    from types import SimpleNamespace

    from lightning_cam import explain
    from tests.callbacks.helpers import make_module_cls

    torch.manual_seed(0)
    module = make_module_cls()().eval()
    cb = GradCAMCallback(layer="backbone.3", num_samples=2, metrics_num_samples=6,
                         log_guided_backprop=True)
    images = torch.rand(6, 3, 16, 16)
    cb.probes = {"image": images, "label": torch.tensor([0, 1, 2, 0, 1, 2])}
    class FakeTrainer(SimpleNamespace):  # weak-referenceable and hashable, as the cache needs
        __hash__ = object.__hash__

    trainer = FakeTrainer(callbacks=[cb], global_step=0, current_epoch=0, testing=False,
                          precision_plugin=None)
    got = cb.explain(trainer, module)
    full = explain(module, images, layer="backbone.3", methods=("gradcam",),
                   guided_gradcam=True)
    assert torch.allclose(got.cams["gradcam"]["backbone.3"], full.cams["gradcam"]["backbone.3"],
                          atol=1e-6)
    assert torch.equal(got.class_ids, full.class_ids)
    assert got.guided.shape == (2, 3, 16, 16)  # only the shown probes
    assert torch.allclose(got.guided, full.guided[:2], atol=1e-6)


class _CountingColourModule(ColourModule):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.steps += 1
        super().validation_step(batch, batch_idx)


@pytest.mark.parametrize("methods", [["gradcam", "scorecam"], ["cam"], ["smoothgradcam++"]])
def test_class_only_methods_are_refused_at_setup_for_a_detector(methods):
    from lightning_cam import CAMCallback
    from lightning_cam.detection.base import detection_methods
    from lightning_cam.methods import METHODS

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[CAMCallback(methods=methods)])
    module = _CountingColourModule()
    with pytest.raises(MisconfigurationException) as info:
        trainer.validate(module, dataloaders=_loader(2))
    message = str(info.value)
    refused = [m for m in methods if METHODS[m].needs_class_target]
    assert message.startswith(f"methods={methods!r} is invalid"), message
    assert all(repr(m) in message.split("explain classes only")[0] for m in refused)
    allowed = detection_methods()
    assert "gradcam" in allowed and "scorecam" not in allowed
    assert message.endswith(f"Expected methods among {', '.join(allowed)}.")
    assert module.steps == 0  # refused at setup, before any batch


def test_detector_whose_image_mean_is_not_one_per_channel_is_explained_after_fit(tmp_path):
    """torchgeo-style detectors set ``transform.image_mean = [0.0]`` (one value broadcast over
    any channels): the channel count comes from the images, not from image_mean."""
    dm = ShapesDetectionDataModule(num_train=2, num_val=2, num_test=2, image_size=64,
                                   batch_size=2)
    torch.manual_seed(0)
    model = ShapesDetector(
        min_size=64, max_size=64, class_names=dm.class_names, box_head_size=32,
        detector_kwargs={"image_mean": [0.0], "image_std": [1.0], "box_score_thresh": 0.0,
                         "box_batch_size_per_image": 16, "rpn_post_nms_top_n_train": 20,
                         "rpn_pre_nms_top_n_train": 20},
    )
    assert len(model.detector.transform.image_mean) == 1
    logger = TensorBoardLogger(str(tmp_path), name="geo")
    cb = GradCAMCallback(num_samples=2, detection_top_k=1, detection_score_threshold=0.0)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                         accelerator="cpu", logger=logger, callbacks=[cb],
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    (tag,) = image_events(logger.log_dir)
    assert tag.startswith("gradcam/detector.backbone.") and tag.endswith("/detections")
    result = cb.compute(trainer, model)
    assert len(result) == 2 and all(r.map("gradcam", r.layers[0]).shape[-2:] == (64, 64)
                                    for r in result if len(r))



@pytest.mark.parametrize("target", ["label", 2, "binary"])
def test_a_classifier_target_is_refused_at_setup_for_a_detector(target):
    """Detections explain their own scores: a target= would be silently ignored, so it is
    refused before any batch."""
    from lightning_cam import CAMCallback

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[CAMCallback(target=target)])
    module = _CountingColourModule()
    with pytest.raises(MisconfigurationException,
                       match=r"'pred' \(the default\) for a detector: it explains each "
                             "detection's own score"):
        trainer.validate(module, dataloaders=_loader(2))
    assert module.steps == 0
