"""Target specs (``binary``, ``binary:negative``, ``regression:<i>[:direction]``) in the
callbacks: a single-logit binary module (BCE-with-logits, as public projects write it) and a
two-output regression module, with a real Trainer and TensorBoard logger."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import lightning_cam as lc
from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import render
from lightning_cam.engine.target_kinds import RegressionTarget
from lightning_cam.engine.target_spec import SpecScore, parse_target_spec
from lightning_cam.engine.targets import BinaryTarget
from tests.callbacks.helpers import image_events, make_trainer, tb_dir
from tests.callbacks.test_clients import (
    BinaryClassifier,
    HeadOnBackbone,
    LabelledBlobs,
    SigmoidClassifier,
    binary_loaders,
)

LAYER = "backbone.features"


class Regressor(HeadOnBackbone):
    """Two regression outputs (the square's centre, say), MSE loss."""

    outputs, lr = 2, 0.01
    loss = staticmethod(F.mse_loss)


def _centre(q: int) -> torch.Tensor:
    return torch.tensor([q / 3, 1.0 - q / 3])


def _regression_loaders() -> tuple[DataLoader, DataLoader]:
    return (DataLoader(LabelledBlobs(16, 0, _centre), batch_size=8),
            DataLoader(LabelledBlobs(8, 1, _centre), batch_size=8))


@pytest.mark.parametrize("spec", ["binary", "binary:negative"])
def test_binary_spec_logs_pictures_with_the_spec_caption(tmp_path: Any, spec: str) -> None:
    cb = lc.GradCAMCallback(layer=LAYER, target=spec, num_samples=4, metrics=["pointing_game"])
    model = BinaryClassifier()
    make_trainer(tmp_path, [cb]).fit(model, *binary_loaders())
    assert f"gradcam/{LAYER}/overlay" in image_events(tb_dir(tmp_path))
    result, probes = cb.last_explanation, cb.probes
    assert result is not None and probes is not None
    model.eval()
    z = model(probes["image"]).detach()[:, 0]
    torch.testing.assert_close(result.scores, -z if spec.endswith("negative") else z)
    want = lc.GradCAM(model, LAYER)(probes["image"], target=BinaryTarget(spec != "binary"))
    torch.testing.assert_close(result.cams["gradcam"][LAYER], want)
    caps = render.tile_labels(result, probes["label"], 4, None, True, cb.options.target)
    for i, cap in enumerate(caps):  # the positive class's probability for both specs
        p = float(torch.sigmoid(z[i]))
        assert cap == f"{spec} p={p:.2f} | true {int(probes['label'][i, 0])}"


def test_regression_decrease_is_the_map_of_the_negated_output(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer=LAYER, target="regression:1:decrease", num_samples=4)
    model = Regressor()
    make_trainer(tmp_path, [cb]).fit(model, *_regression_loaders())
    assert f"gradcam/{LAYER}/overlay" in image_events(tb_dir(tmp_path))
    result, probes = cb.last_explanation, cb.probes
    assert result is not None and probes is not None
    model.eval()
    y = model(probes["image"]).detach()
    torch.testing.assert_close(result.scores, -y[:, 1])

    def negated(out: torch.Tensor) -> torch.Tensor:
        return -out[:, 1]

    want = lc.GradCAM(model, LAYER)(probes["image"], target=negated)
    torch.testing.assert_close(result.cams["gradcam"][LAYER], want)
    same = lc.GradCAM(model, LAYER)(probes["image"], target=RegressionTarget(1, "decrease"))
    torch.testing.assert_close(result.cams["gradcam"][LAYER], same)
    caps = render.tile_labels(result, probes["label"], 4, None, True, cb.options.target)
    assert caps[0] == f"regression:1:decrease y={float(y[0, 1]):.2f}"


@pytest.mark.parametrize(
    ("module", "spec", "match"),
    [
        ("regression", "binary", r"single-logit head \(B, 1\), but the output has 2 values"),
        ("regression", "regression:2", r"index 2 is out of range .* use an index in 0..1"),
        ("binary", 0, r"class id, but the output is a single-logit .* target='binary'"),
        ("binary", "regression:1", r"index 1 is out of range for an output of 1 value"),
    ],
)
def test_specs_the_head_cannot_serve_are_refused_before_training(
    tmp_path: Any, module: str, spec: Any, match: str
) -> None:
    model, data = (
        (Regressor(), _regression_loaders()) if module == "regression"
        else (BinaryClassifier(), binary_loaders())
    )
    before = [p.detach().clone() for p in model.parameters()]
    cb = lc.GradCAMCallback(layer=LAYER, target=spec)
    with pytest.raises(MisconfigurationException, match=match):
        make_trainer(tmp_path, [cb]).fit(model, *data)
    for a, b in zip(before, model.parameters(), strict=True):  # refused before any step
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("binary:positve", r"is invalid: expected 'pred', 'label', 'labels'"),
        ("regression:x", r"regression:<index>"),
        ("regression:0:down", r"increase, decrease"),
        (-1, r"class id \(int >= 0\)"),
    ],
)
def test_bad_specs_are_refused_with_the_forms(spec: Any, match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        lc.GradCAMCallback(target=spec)


def test_model_metrics_are_refused_for_score_targets() -> None:
    with pytest.raises(MisconfigurationException, match=r"do not read a class's score"):
        lc.GradCAMCallback(target="binary", metrics=["average_drop"])


def test_spec_spellings() -> None:
    assert parse_target_spec("regression").spec == "regression:0"
    assert parse_target_spec("regression:3:output").spec == "regression:3"
    assert parse_target_spec("regression:3:increase").spec == "regression:3:increase"
    assert parse_target_spec("binary:positive").spec == "binary"
    assert parse_target_spec(BinaryTarget(negative=True)).spec == "binary:negative"
    assert parse_target_spec(RegressionTarget(2, "decrease")).spec == "regression:2:decrease"
    assert parse_target_spec(None).spec == "pred"
    assert parse_target_spec("labels").spec == "labels"
    value = parse_target_spec("binary:negative").explained_value(torch.tensor([-2.0]))
    torch.testing.assert_close(value, torch.sigmoid(torch.tensor([2.0])))


def test_binary_on_a_sigmoid_head_is_refused(tmp_path: Any) -> None:
    """A head returning sigmoid(z) holds p, not the logit the spec explains (and whose sigmoid
    the caption would show): refused with the fix, before training."""
    cb = lc.GradCAMCallback(layer=LAYER, target="binary")
    with pytest.raises(MisconfigurationException, match=r"returns sigmoid\(z\).*BCEWithLogitsLoss"):
        make_trainer(tmp_path, [cb]).fit(SigmoidClassifier(), *binary_loaders())
    p = torch.sigmoid(torch.zeros(2, 1, requires_grad=True))
    with pytest.raises(ValueError, match=r"returns sigmoid\(z\)"):
        SpecScore(parse_target_spec("binary"))(p)
    torch.testing.assert_close(SpecScore(parse_target_spec("binary"))(p.detach()), p[:, 0].detach())
