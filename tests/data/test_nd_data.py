"""The embedded 3-D shapes volumes and 1-D signals: deterministic, labelled by what they draw,
masks that cover the object / event and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_cam.data import (
    CLASSES_1D,
    CLASSES_3D,
    Shapes3DDataModule,
    Shapes3DDataset,
    SignalsDataModule,
    SignalsDataset,
)


def test_shapes3d_samples_are_deterministic_and_cycle_the_classes() -> None:
    a, b = Shapes3DDataset(6, seed=3), Shapes3DDataset(6, seed=3)
    for i in range(6):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["mask"], sb["mask"])
        assert int(sa["label"]) == i % 3
    s = a[-1]
    assert s["image"].shape == (1, 24, 24, 24) and s["image"].dtype == torch.float32
    assert s["mask"].dtype == torch.bool and 0.0 <= float(s["image"].min()) <= 1.0
    assert not torch.equal(Shapes3DDataset(1, seed=4)[0]["image"], a[0]["image"])


def test_shapes3d_mask_is_the_bright_object() -> None:
    ds = Shapes3DDataset(6, volume_size=20, seed=0, clutter=False)
    for i in range(6):
        s = ds[i]
        vol, mask = s["image"][0], s["mask"]
        assert mask.sum() > 20
        assert float(vol[mask].mean()) > 0.5 > float(vol[~mask].mean()) + 0.2


def test_shapes3d_shapes_have_their_form() -> None:
    ds = Shapes3DDataset(1, volume_size=21)
    centre, r = np.array([10.5, 10.5, 10.5]), 6.0
    sphere = ds.shape_mask("sphere", centre, r)
    cube = ds.shape_mask("cube", centre, r)
    cross = ds.shape_mask("cross", centre, r)
    assert abs(int(sphere.sum()) - 4 / 3 * np.pi * r**3) / (4 / 3 * np.pi * r**3) < 0.1
    assert int(cube.sum()) == 9**3  # half side 0.8 r = 4.8: centres i + 0.5 with |i - 10| <= 4
    assert cross[10, 10, 4:17].all() and not cross[10, 10, 3]  # a bar of half length r
    assert not cross[6, 6, 10]  # off the bars


def test_signals_event_lives_inside_the_mask() -> None:
    ds = SignalsDataset(9, length=256, seed=1, clutter=False)
    for i in range(9):
        s = ds[i]
        x, mask = s["image"][0].numpy(), s["mask"].numpy()
        assert s["image"].shape == (1, 256) and mask.shape == (256,)
        assert ds.class_names[int(s["label"])] == CLASSES_1D[i % 3]
        # the baseline is slow: a moving average removes it, the events stand out of the noise
        hp = np.abs(x - np.convolve(x, np.ones(31) / 31, mode="same"))
        near = np.convolve(mask, np.ones(33), mode="same") > 0  # the average spreads 16 samples
        far = ~near
        far[:16] = far[-16:] = False
        assert hp[mask].max() > 2 * hp[far].max()
        assert 20 <= int(mask.sum()) <= 50
    assert torch.equal(SignalsDataset(2, seed=1)[1]["image"], SignalsDataset(2, seed=1)[1]["image"])


def test_datamodules_split_disjointly_and_batch() -> None:
    dm = Shapes3DDataModule(num_train=4, num_val=4, num_test=4, batch_size=2, volume_size=16)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["mask"].shape == (2, 16, 16, 16)
    assert not torch.equal(dm.dataset("train")[0]["image"], dm.dataset("val")[0]["image"])
    assert dm.class_names == list(CLASSES_3D) and dm.num_classes == 3
    sm = SignalsDataModule(num_train=4, num_val=4, num_test=4, batch_size=4, length=64)
    sm.setup("fit")
    assert next(iter(sm.train_dataloader()))["image"].shape == (4, 1, 64)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: Shapes3DDataset(0), "num_samples"),
        (lambda: Shapes3DDataset(2, volume_size=8), "volume_size"),
        (lambda: Shapes3DDataset(2, classes=["torus"]), "classes"),
        (lambda: SignalsDataset(2, length=16), "length"),
        (lambda: SignalsDataset(2, classes=["burst", "burst"]), "classes"),
        (lambda: SignalsDataModule(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments_are_refused(factory, match) -> None:
    with pytest.raises(ValueError, match=match):
        factory()
