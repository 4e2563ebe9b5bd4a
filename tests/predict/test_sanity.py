from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from lightning_cam.predict.sanity import (
    cascade_stages,
    parametrised_modules,
    randomisation_test,
    spearman,
    ssim,
)


def test_stages_cover_every_parametrised_module_top_down() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    mods = parametrised_modules(model)
    stages = cascade_stages(model, 4)
    flat = [m for _, ms in stages for m in ms]
    assert flat == [m for _, m in mods][::-1]  # every module once, from the top
    assert stages[0][1][0] is model.fc and stages[-1][0] == "conv1"
    assert len(cascade_stages(model, 1000)) == len(mods)  # at most one stage per module


def test_similarities() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((16, 16)).astype(np.float32)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, 1 - a) == pytest.approx(-1.0)
    assert spearman(a, np.zeros_like(a)) == 0.0  # a constant map ranks nothing
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, rng.random((16, 16)).astype(np.float32)) < 0.3


def test_randomisation_changes_gradcam_and_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(3, 3, 16, 16)
    names, values = randomisation_test(model, images, torch.tensor([0, 1, 2]), ["2"],
                                       ["gradcam"], num_stages=3, seed=1)
    assert names == ["6", "2", "0"]
    assert set(values) == {f"gradcam/2/{s}/{k}" for s in range(3) for k in ("spearman", "ssim")}
    for v in values.values():
        assert v.shape == (3,) and torch.isfinite(v).all()
    # once the layer itself is randomised, the maps are far from the trained ones
    assert values["gradcam/2/1/spearman"].mean() < 0.9
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    again = randomisation_test(model, images, torch.tensor([0, 1, 2]), ["2"], ["gradcam"],
                               num_stages=3, seed=1)[1]
    for k in values:  # seeded: deterministic
        torch.testing.assert_close(values[k], again[k])
