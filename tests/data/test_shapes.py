"""The embedded default: synthetic shapes data and the shapes classifier (smoke only)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from pytorch_lightning import Trainer
from torch.utils.data import DataLoader

from lightning_cam.data import CLASSES, ShapesDataModule, ShapesDataset
from lightning_cam.models import ShapesClassifier


def _digest(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def samples() -> list[dict[str, torch.Tensor]]:
    ds = ShapesDataset(num_samples=200, seed=3)
    return [ds[i] for i in range(len(ds))]


# ----------------------------------------------------------------------------- dataset
def test_same_seed_and_index_give_identical_samples() -> None:
    a = ShapesDataset(num_samples=50, seed=7)
    b = ShapesDataset(num_samples=50, seed=7)
    for i in (0, 13, 49):
        # Read in a different order from a fresh instance: still the same sample.
        sb = b[i]
        sa = a[i]
        for key in ("image", "label", "box", "mask"):
            assert torch.equal(sa[key], sb[key]), key
    assert torch.equal(a[-1]["image"], a[49]["image"])


def test_different_index_or_seed_gives_different_samples() -> None:
    a = ShapesDataset(num_samples=50, seed=7)
    assert not torch.equal(a[0]["image"], a[4]["image"])  # same class, different sample
    assert not torch.equal(a[0]["image"], ShapesDataset(num_samples=50, seed=8)[0]["image"])
    assert len({_digest(a[i]["image"]) for i in range(len(a))}) == len(a)


def test_shapes_and_dtypes(samples: list[dict[str, torch.Tensor]]) -> None:
    s = samples[0]
    assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.float32
    assert s["label"].shape == () and s["label"].dtype == torch.int64
    assert s["box"].shape == (4,) and s["box"].dtype == torch.float32
    assert s["mask"].shape == (64, 64) and s["mask"].dtype == torch.bool
    for s in samples:
        assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0


def test_other_image_size() -> None:
    s = ShapesDataset(num_samples=4, image_size=96, clutter=False)[2]
    assert s["image"].shape == (3, 96, 96) and s["mask"].shape == (96, 96)
    # the object scales with the image: tight box of the mask, 20-55 % of the side
    ys, xs = torch.nonzero(s["mask"], as_tuple=True)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    assert s["box"].tolist() == box
    assert 0.2 * 96 <= max(box[2] - box[0], box[3] - box[1]) <= 0.55 * 96
    # without clutter, everything away from the object is the smooth background: the object's
    # pixels stand out from a ring around it
    img, mask = s["image"], s["mask"]
    ring = torch.nn.functional.max_pool2d(mask[None, None].float(), 7, 1, 3)[0, 0].bool() & ~mask
    assert (img[:, mask].mean(1) - img[:, ring].mean(1)).abs().max() > 0.1


def test_box_is_tight_around_mask(samples: list[dict[str, torch.Tensor]]) -> None:
    for s in samples:
        mask, box = s["mask"], s["box"]
        x0, y0, x1, y1 = (int(v) for v in box.tolist())
        assert torch.equal(box, box.round()), "pixel-edge boxes are integral"
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        inside = mask[y0:y1, x0:x1]
        assert inside.sum() == mask.sum(), "mask pixels outside the box"
        # Tight: the box's first/last rows and columns all touch the mask.
        assert inside[0].any() and inside[-1].any()
        assert inside[:, 0].any() and inside[:, -1].any()


def test_object_size_and_contrast(samples: list[dict[str, torch.Tensor]]) -> None:
    for s in samples:
        x0, y0, x1, y1 = s["box"].tolist()
        assert 0.2 * 64 <= max(x1 - x0, y1 - y0) <= 0.55 * 64
        img, mask = s["image"], s["mask"]
        ring = torch.nn.functional.max_pool2d(mask[None, None].float(), 7, 1, 3)[0, 0].bool()
        ring &= ~mask
        obj = img[:, mask].mean(dim=1)
        around = img[:, ring].mean(dim=1)
        assert (obj - around).norm() > 0.2, "object hardly differs from its surroundings"


def test_labels_balanced_and_all_classes_present(
    samples: list[dict[str, torch.Tensor]],
) -> None:
    labels = torch.stack([s["label"] for s in samples])
    counts = torch.bincount(labels, minlength=len(CLASSES))
    assert counts.tolist() == [50, 50, 50, 50]


def test_colour_is_independent_of_class(samples: list[dict[str, torch.Tensor]]) -> None:
    means = torch.zeros(len(CLASSES), 3)
    for s in samples:
        means[s["label"]] += s["image"][:, s["mask"]].mean(dim=1) / 50
    spread = (means - means.mean(dim=0)).abs().max()
    assert spread < 0.12, f"mean object colour depends on the class: {means}"


def test_class_subset_and_order() -> None:
    ds = ShapesDataset(num_samples=8, classes=["star", "circle"])
    assert ds.class_names == ["star", "circle"] and ds.num_classes == 2
    assert sorted({int(ds[i]["label"]) for i in range(len(ds))}) == [0, 1]


def test_clutter_off_keeps_background_plain_outside_object() -> None:
    plain = ShapesDataset(num_samples=4, seed=1, clutter=False)[0]
    busy = ShapesDataset(num_samples=4, seed=1, clutter=True)[0]
    assert plain["image"].shape == busy["image"].shape
    assert not torch.equal(plain["image"], busy["image"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"image_size": 16}, "image_size"),
        ({"classes": ["circle", "hexagon"]}, "hexagon"),
        ({"classes": ["circle", "circle"]}, "distinct"),
        ({"classes": "circle"}, "classes"),
    ],
)
def test_dataset_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapesDataset(**kwargs)


def test_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        ShapesDataset(num_samples=3)[3]


def test_default_collate_batches_dicts() -> None:
    loader = DataLoader(ShapesDataset(num_samples=10), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 64, 64)
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    assert batch["box"].shape == (4, 4)
    assert batch["mask"].shape == (4, 64, 64) and batch["mask"].dtype == torch.bool


# ----------------------------------------------------------------------------- datamodule
def test_datamodule_splits_are_disjoint() -> None:
    dm = ShapesDataModule(num_train=60, num_val=30, num_test=30, batch_size=16)
    dm.setup("fit")
    dm.setup("test")
    seeds = {split: dm.split_seed(split) for split in dm.SPLITS}
    assert len(set(seeds.values())) == 3
    digests = {
        split: {_digest(dm.dataset(split)[i]["image"]) for i in range(len(dm.dataset(split)))}
        for split in dm.SPLITS
    }
    assert len(digests["train"]) == 60 and len(digests["val"]) == 30
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]
    # Another base seed gives other splits.
    other = ShapesDataModule(seed=1)
    assert other.split_seed("train") not in seeds.values()


def test_datamodule_loaders_and_properties() -> None:
    dm = ShapesDataModule(num_train=40, num_val=20, num_test=12, batch_size=16)
    assert dm.num_classes == 4 and dm.class_names == list(CLASSES)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 3 and len(dm.val_dataloader()) == 2
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape == (12, 3, 64, 64)
    val = next(iter(dm.val_dataloader()))
    assert val["label"][:4].tolist() == [0, 1, 2, 3], "val is in index order"
    assert dm.hparams["batch_size"] == 16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_train": 0}, "num_train"),
        ({"batch_size": -1}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapesDataModule(**kwargs)


def test_split_name_is_checked() -> None:
    with pytest.raises(ValueError, match="split"):
        ShapesDataModule().dataset("training")


# ----------------------------------------------------------------------------- model smoke
def test_simple_model_shapes() -> None:
    model = ShapesClassifier().eval()
    x = torch.rand(2, 3, 64, 64)
    assert model.backbone(x).shape[-2:] == (8, 8)
    assert model(x).shape == (2, 4)
    probs = model.predict_step({"image": x}, 0)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))
    assert model.class_names == ["0", "1", "2", "3"]


def test_torchvision_backbone() -> None:
    model = ShapesClassifier(backbone="resnet18", num_classes=3).eval()
    assert isinstance(model.head, torch.nn.Identity)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "resnet-18"}, "resnet18"),
        ({"backbone": "nope"}, "Valid names"),
        ({"num_classes": 1}, "num_classes"),
        ({"lr": 0.0}, "lr"),
        ({"class_names": ["a", "b"]}, "class_names"),
    ],
)
def test_model_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapesClassifier(**kwargs)


def test_fast_dev_run_trains_one_step() -> None:
    dm = ShapesDataModule(num_train=16, num_val=8, num_test=8, batch_size=8)
    model = ShapesClassifier(class_names=dm.class_names)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert "train/loss_step" in trainer.logged_metrics or "train/loss" in trainer.logged_metrics
    assert model.hparams["class_names"] == list(CLASSES)
    assert np.isfinite(float(trainer.callback_metrics["val/loss"]))


def test_simple_model_gradcam_equals_cam() -> None:
    """Global max pooling keeps Grad-CAM == CAM / (h * w) on ``backbone`` (as average would)."""
    model = ShapesClassifier().eval()
    x = torch.rand(3, 3, 64, 64)
    labels = torch.tensor([0, 2, 3])
    acts = model.backbone((x - model.mean) / model.std)
    logits = model.head(acts)
    score = logits.gather(1, labels[:, None]).sum()
    (grads,) = torch.autograd.grad(score, acts)
    gradcam = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1).relu()
    weights = model.head[-1].weight[labels]  # (B, C)
    cam = torch.einsum("bchw,bc->bhw", acts, weights).relu() / (8 * 8)
    torch.testing.assert_close(gradcam, cam)
