"""Quantus metrics calling our methods through
:func:`lightning_cam.metrics.quantus_explain_func`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lightning_cam as lc
from lightning_cam import metrics as M
from tests.optional import require


def _setup() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 2)).eval()
    x = torch.rand(4, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x.numpy(), y.numpy()


KWARGS = {"method": "gradcam++", "layer": "1"}


def test_explain_func_returns_our_maps() -> None:
    model, x, y = _setup()
    got = M.quantus_explain_func(model, x, y, **KWARGS)
    want = lc.explain(model, torch.from_numpy(x), "1", methods=("gradcam++",),
                      target=torch.from_numpy(y)).cams["gradcam++"]["1"]
    assert got.shape == (4, 1, 10, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, 0], want.numpy(), atol=1e-6)
    one = M.quantus_explain_func(model, x, 1, method="Grad-CAM", layer="1")  # an int, a spelling
    assert one.shape == (4, 1, 10, 10)
    with pytest.raises(TypeError, match="unexpected explain_func_kwargs"):
        M.quantus_explain_func(model, x, y, methods="gradcam")
    with pytest.raises(ValueError, match="gradcam"):
        M.quantus_explain_func(model, x, y, method="gradkam")


def test_a_quantus_faithfulness_metric_calls_our_method() -> None:
    """Pixel flipping with explain_func equals pixel flipping on our precomputed maps."""
    quantus = require("quantus", "pip install quantus")
    model, x, y = _setup()

    def metric():  # type: ignore[no-untyped-def]
        return quantus.PixelFlipping(features_in_step=10, perturb_baseline="black",
                                     disable_warnings=True, display_progressbar=False)

    via_func = metric()(model=model, x_batch=x, y_batch=y, a_batch=None, device="cpu",
                        explain_func=M.quantus_explain_func, explain_func_kwargs=KWARGS)
    maps = M.quantus_explain_func(model, x, y, **KWARGS)
    given = metric()(model=model, x_batch=x, y_batch=y, a_batch=maps, device="cpu")
    assert len(via_func) == 4 and np.isfinite(np.asarray(via_func)).all()
    np.testing.assert_allclose(np.asarray(via_func), np.asarray(given), atol=1e-6)


def test_a_quantus_randomisation_metric_calls_our_method() -> None:
    """Random logit with two classes explains the other class: its similarity is Quantus's
    similarity of our maps for y and for 1 - y; model parameter randomisation explains
    randomised copies of the model layer by layer, and leaves ours as it was."""
    quantus = require("quantus", "pip install quantus")
    model, x, y = _setup()
    metric = quantus.RandomLogit(num_classes=2, normalise=False, disable_warnings=True,
                                 display_progressbar=False)
    got = metric(model=model, x_batch=x, y_batch=y, a_batch=None, device="cpu",
                 explain_func=M.quantus_explain_func, explain_func_kwargs=KWARGS)
    mine = M.quantus_explain_func(model, x, y, **KWARGS).reshape(4, -1)
    other = M.quantus_explain_func(model, x, 1 - y, **KWARGS).reshape(4, -1)
    want = metric.similarity_func(mine, other, batched=True)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    before = [p.detach().clone() for p in model.parameters()]
    mprt = quantus.MPRT(disable_warnings=True, display_progressbar=False)
    scores = mprt(model=model, x_batch=x, y_batch=y, a_batch=None, device="cpu",
                  explain_func=M.quantus_explain_func, explain_func_kwargs=KWARGS)
    assert set(scores) == {"original", "0", "4"}  # the layers with parameters, one by one
    assert all(np.isfinite(v).all() for v in scores.values())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
