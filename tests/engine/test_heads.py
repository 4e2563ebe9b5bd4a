"""Off-path heads and outputs (issue 19): binary heads, log-softmax outputs, non-finite
fusion / Score-CAM, bf16 autocast, raw maps, models without a spatial layer."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import lightning_cam as lc
from lightning_cam.engine import Explainer, NonFiniteWarning, OutputWarning
from lightning_cam.engine.targets import BinaryTarget, class_probabilities


def _net(out: int, tail: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, out),
    ]
    return nn.Sequential(*layers, *([tail] if tail is not None else []))


def _gradcam_by_hand(model: nn.Module, x: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k w_k A^k) of the conv+ReLU layer for score sign * z (single-logit head)."""
    a = model[1](model[0](x))
    w = model[4].weight[0] / (a.shape[2] * a.shape[3])  # d z / d A^k_ij, the same everywhere
    return torch.relu((sign.view(-1, 1, 1, 1) * w.view(1, -1, 1, 1) * a).sum(1)).detach()


def test_binary_head_classes_probabilities_and_maps() -> None:
    model = _net(1)
    x = torch.rand(4, 3, 8, 8)
    z = model(x)[:, 0].detach()
    probs = class_probabilities(model(x))
    assert torch.allclose(probs[:, 1], torch.sigmoid(z))
    assert torch.allclose(probs.sum(1), torch.ones(4))
    pred = lc.explain(model, x, "1", methods=("gradcam",), normalize=False)
    assert pred.class_ids.tolist() == (z > 0).long().tolist()
    sign = torch.where(z > 0, 1.0, -1.0)
    assert torch.allclose(pred.scores, sign * z)
    assert torch.allclose(pred.cams["gradcam"]["1"],
                          _gradcam_by_hand(model, x, sign), atol=1e-6)
    for cls, s in ((1, 1.0), (0, -1.0)):
        out = lc.explain(model, x, "1", methods=("gradcam",), target=cls, normalize=False)
        assert torch.allclose(out.scores, s * z)
        assert torch.allclose(out.cams["gradcam"]["1"],
                              _gradcam_by_hand(model, x, torch.full((4,), s)), atol=1e-6)
        by_callable = lc.explain(model, x, "1", methods=("gradcam",),
                                 target=BinaryTarget(negative=cls == 0), normalize=False)
        assert torch.allclose(by_callable.cams["gradcam"]["1"], out.cams["gradcam"]["1"])
    # class-only methods read the head as two classes too
    cam = lc.explain(model, x, "1", methods=("cam", "scorecam"), target=0)
    assert cam.cams["cam"]["1"].shape == (4, 8, 8)
    # class 0 scores -z: CAM is min-max(sum_k -w_k A^k), no ReLU
    with torch.no_grad():
        a = model[1](model[0](x))
        m0 = -(model[4].weight[0].view(1, -1, 1, 1) * a).sum(1)
    lo, hi = m0.amin((1, 2), keepdim=True), m0.amax((1, 2), keepdim=True)
    torch.testing.assert_close(cam.cams["cam"]["1"], (m0 - lo) / (hi - lo), rtol=1e-4, atol=1e-5)


def test_log_softmax_output_warned_once_and_probabilities_right() -> None:
    model = _net(3, nn.LogSoftmax(dim=1))
    x = torch.rand(2, 3, 8, 8)
    with pytest.warns(OutputWarning, match="log-probabilities"):
        out = lc.explain(model, x, "1", methods=("gradcam",))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutputWarning)
        lc.explain(model, x, "1", methods=("gradcam",))
    assert out.logits is not None
    assert torch.allclose(class_probabilities(out.logits), out.logits.exp(), atol=1e-6)


def test_softmax_output_probabilities_not_softmaxed_twice() -> None:
    model = _net(3, nn.Softmax(dim=1))
    x = torch.rand(2, 3, 8, 8)
    p = model(x).detach()
    assert torch.allclose(class_probabilities(p), p)
    with pytest.warns(OutputWarning, match="probabilities"):
        lc.explain(model, x, "1", methods=("gradcam",))


class _StdNorm(nn.Module):
    """Per-image standardisation: 0 / 0 = NaN for a constant (zero) image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean((1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)


def test_scorecam_nan_baseline_is_marked_not_blank() -> None:
    torch.manual_seed(0)
    # ReLU after a conv with a negative bias: some channels are all zero -> the zero-image
    # baseline forward runs, and gives NaN logits.
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.bias[:2] = -100.0
    model = nn.Sequential(_StdNorm(), conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    x = torch.rand(2, 3, 8, 8)
    with pytest.warns(NonFiniteWarning):
        out = lc.explain(model, x, "2", methods=("scorecam", "gradcam"), target=1)
    assert out.nonfinite is not None and out.nonfinite.tolist() == [True, True]
    assert torch.isnan(out.cams["scorecam"]["2"]).all()


def test_fusion_of_a_nan_sample_is_nan() -> None:
    model = _net(3)
    x = torch.rand(3, 3, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    with pytest.warns(NonFiniteWarning):
        out = lc.explain(model, x, ["0", "1"], methods=("gradcam",), fuse="max", target=0)
    assert out.nonfinite.tolist() == [False, True, False]
    fused = out.fused["gradcam"]
    assert torch.isnan(fused[1]).all() and torch.isfinite(fused[[0, 2]]).all()


def test_cam_under_bf16_autocast() -> None:
    model = _net(3)
    x = torch.rand(2, 3, 8, 8)
    ref = lc.explain(model, x, "1", methods=("cam", "gradcam"), target=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = lc.explain(model, x, "1", methods=("cam", "gradcam"), target=2)
    for m in ("cam", "gradcam"):
        assert low.cams[m]["1"].dtype == torch.float32
        assert torch.allclose(low.cams[m]["1"], ref.cams[m]["1"], atol=0.05)


def test_raw_gradcam_equals_hand_computed_and_normalised_is_its_min_max() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x = torch.rand(2, 1, 6, 6)
    raw = lc.GradCAM(model, layer="0", normalize=False)(x, target=1, upsample=False)
    a = conv(x).detach()
    g = model[2].weight[1].view(2, 4, 4).detach()  # d y_1 / d A, the same for every image
    hand = torch.relu((g.mean((1, 2)).view(1, 2, 1, 1) * a).sum(1))
    assert torch.allclose(raw, hand, atol=1e-6)
    norm = lc.GradCAM(model, layer="0")(x, target=1, upsample=False)
    lo = hand.flatten(1).min(1).values.view(-1, 1, 1)
    hi = hand.flatten(1).max(1).values.view(-1, 1, 1)
    expected = torch.where(hi > lo, (hand - lo) / (hi - lo).clamp_min(1e-30), 0.0)
    assert bool((hi > lo).any())
    assert torch.allclose(norm, expected, atol=1e-6)
    with pytest.raises(TypeError, match="normalize"):
        Explainer(model, "0", normalize="no")  # type: ignore[arg-type]


def test_mlp_without_spatial_layer_says_so() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="No layer of .* outputs a spatial feature map"):
        lc.GradCAM(model)(torch.rand(1, 3, 2, 2))


def test_sigmoid_output_is_read_as_its_probability() -> None:
    # `return torch.sigmoid(self.fc(x))` trained with BCELoss: the (B, 1) output is p, which its
    # numbers cannot tell from a logit. The graph can: captions and metrics read p, not sigmoid(p).
    plain = _net(1)
    model = _net(1, nn.Sigmoid())
    x = torch.rand(4, 3, 8, 8)
    p = model(x)[:, 0].detach()
    with pytest.warns(OutputWarning, match="sigmoid probabilities"):
        out = lc.explain(model, x, "1", methods=("gradcam",), target=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutputWarning)  # once per model
        lc.explain(model, x, "1", methods=("gradcam",), target=1)
    torch.testing.assert_close(class_probabilities(out.logits)[:, 1], p, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.scores, p)  # what is differentiated: p itself
    pred = lc.explain(model, x * torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1, 1), "1",
                      methods=("gradcam",))
    decided = model(x * torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1, 1))[:, 0] > 0.5
    assert pred.class_ids.tolist() == decided.long().tolist()  # p > 0.5, not "p > 0"
    # d p / d A = p (1 - p) d z / d A: the same normalised map as the logit's
    want = lc.explain(plain, x, "1", methods=("gradcam",), target=1)
    torch.testing.assert_close(out.cams["gradcam"]["1"], want.cams["gradcam"]["1"],
                               rtol=0, atol=1e-5)
    # metrics score the head's probability: average drop by hand from p on the masked images
    maps = out.cams["gradcam"]["1"]
    drop, _ = lc.metrics.average_drop_increase(model, x, maps, torch.ones(4, dtype=torch.long))
    o = model(x * maps[:, None])[:, 0].detach()
    torch.testing.assert_close(drop, (torch.clamp(p - o, min=0) / p * 100).float(),
                               rtol=1e-4, atol=1e-4)


class _Tail(nn.Module):
    def __init__(self, tail: str) -> None:
        super().__init__()
        self.net, self.tail = _net(3), tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        if self.tail == "conv_head":
            return z[:, :, None, None]  # a 1 x 1 convolutional classifier's (B, K, 1, 1)
        if self.tail == "squeezed":
            return z[:, 0]  # `fc(x).squeeze(1)` of a binary head: (B,)
        return torch.sigmoid(z[:, :1]).squeeze(1)  # and its sigmoid


def test_outputs_of_other_shapes_are_read_or_refused_with_the_fix() -> None:
    x = torch.rand(3, 3, 8, 8)
    flat = lc.explain(_Tail("conv_head").net, x, "1", methods=("gradcam",))
    conv = lc.explain(_Tail("conv_head"), x, "net.1", methods=("gradcam",))
    torch.testing.assert_close(conv.cams["gradcam"]["net.1"], flat.cams["gradcam"]["1"])
    torch.testing.assert_close(conv.logits, flat.logits)
    squeezed = _Tail("squeezed")
    with pytest.raises(TypeError, match=r"got \(3,\): one score per image.*BinaryTarget\(\)"):
        lc.explain(squeezed, x, "net.1", methods=("gradcam",))
    by_binary = lc.explain(squeezed, x, "net.1", methods=("gradcam",),
                           target=BinaryTarget(negative=True))
    torch.testing.assert_close(by_binary.scores, -squeezed(x).detach())
    # the sigmoid is found behind the squeeze that follows it
    from lightning_cam.engine.targets import graph_output_kind

    assert graph_output_kind(_Tail("sigmoid")(x)) == "sigmoid"
    assert graph_output_kind(squeezed(x)) is None
