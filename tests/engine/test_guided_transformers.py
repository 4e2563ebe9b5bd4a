"""Guided backprop on GELU / SiLU / Hardswish models: the positive-gradient rule, and refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.guided import GuidedReLUMode, GuidedSwitch, guided_support
from tests.reference import class_score, reference_gradcam

_GATES = {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "silu": nn.SiLU(),
          "hardswish": nn.Hardswish()}


class _MLP(nn.Module):
    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.gate = gate
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.gate(self.fc1(x.flatten(1))))


def _derivative(kind: str, z: torch.Tensor) -> torch.Tensor:
    """f'(z) by hand."""
    if kind == "gelu":
        phi = torch.exp(-0.5 * z**2) / (2 * torch.pi) ** 0.5
        return 0.5 * (1 + torch.erf(z / 2**0.5)) + z * phi
    if kind == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    if kind == "hardswish":
        return torch.where(z < -3, 0.0, torch.where(z > 3, 1.0, (2 * z + 3) / 6))
    z = z.clone().requires_grad_(True)  # gelu_tanh: by autograd of the formula
    c = (2 / torch.pi) ** 0.5
    y = 0.5 * z * (1 + torch.tanh(c * (z + 0.044715 * z**3)))
    return torch.autograd.grad(y.sum(), z)[0]


@pytest.mark.parametrize("kind", sorted(_GATES))
def test_positive_gradient_rule_matches_hand_computation(kind: str) -> None:
    model = _MLP(_GATES[kind]).eval()
    x = torch.randn(3, 3, 2, 2)
    c = 1
    z = model.fc1(x.flatten(1)).detach()
    upstream = model.fc2.weight[c].detach().expand_as(z)  # d y_c / d gate output
    guided_z = _derivative(kind, z) * upstream.clamp(min=0)  # f'(z) * max(R, 0)
    expected = (guided_z @ model.fc1.weight.detach()).view_as(x)
    got = lc.GuidedBackprop(model)(x, target=c)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # Not the plain gradient: the negative upstream gradients were cut.
    plain = ((_derivative(kind, z) * upstream) @ model.fc1.weight.detach()).view_as(x)
    assert not torch.allclose(got, plain, atol=1e-4)


@pytest.mark.parametrize("inplace", [False, True])
def test_ordinary_backward_unchanged_under_the_mode(inplace: bool) -> None:
    """With the switch off, the recorded gates have autograd's own gradient (Grad-CAM)."""
    x = torch.randn(4, 5)
    g = torch.randn(4, 5)
    for fn in (lambda t: F.gelu(t), lambda t: F.gelu(t, approximate="tanh"),
               lambda t: F.silu(t, inplace=inplace), lambda t: F.hardswish(t, inplace=inplace)):
        a = x.clone().requires_grad_(True)
        expected = torch.autograd.grad(fn(a * 1.0), a, g)[0]
        b = x.clone().requires_grad_(True)
        switch = GuidedSwitch(False)
        with GuidedReLUMode(switch) as mode:
            y = fn(b * 1.0)
        assert mode.gates == 1
        torch.testing.assert_close(torch.autograd.grad(y, b, g)[0], expected)


def test_guided_on_efficientnet_silu_is_guided() -> None:
    model = torchvision.models.efficientnet_b0(weights=None, num_classes=5).eval()
    x = torch.rand(1, 3, 64, 64)
    out = lc.explain(model, x, "features", methods=("gradcam",), target=2, guided_backprop=True)
    assert out.guided is not None and out.guided.abs().sum() > 0
    xr = x.clone().requires_grad_(True)
    plain = torch.autograd.grad(model(xr)[0, 2], xr)[0]
    cosine = F.cosine_similarity(out.guided.flatten(), plain.flatten(), dim=0)
    assert cosine < 0.9  # random weights give tiny values: compare directions
    # The CAM of the same pass is unaffected by the guided switch.
    cam = lc.explain(model, x, "features", methods=("gradcam",), target=2)
    torch.testing.assert_close(out.cams["gradcam"]["features"], cam.cams["gradcam"]["features"])


class _NoGates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))


def test_guided_refused_without_any_gate_and_model_left_clean() -> None:
    model = _NoGates().train()
    with pytest.raises(ValueError, match=r"_NoGates has none.*plain input gradient"):
        lc.GuidedBackprop(model)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="has none"):
        lc.GuidedGradCAM(model, "conv")(torch.rand(1, 3, 8, 8))
    assert model.training and not any(m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    x = torch.rand(1, 3, 8, 8)
    maps = lc.GradCAM(model, "conv")(x)
    assert maps.shape == (1, 8, 8)
    # the 6x6 map (tanh: the gradient varies over space) resized to 8x8, then scaled
    pred = int(model.eval()(x).argmax(1))
    model.train()
    ref = reference_gradcam(model, model.conv, x, class_score(pred), size=(8, 8))
    torch.testing.assert_close(maps, ref, rtol=1e-4, atol=1e-5)


def test_guided_support_for_defaults() -> None:
    with torch.device("meta"):
        vit = torchvision.models.vit_b_16(weights=None)
        swin = torchvision.models.swin_t(weights=None)
        convnext = torchvision.models.convnext_tiny(weights=None)
        maxvit = torchvision.models.maxvit_t(weights=None)
    assert "torchvision ViT" in str(guided_support(vit))
    assert "torchvision Swin" in str(guided_support(swin))
    assert "MaxViT" in str(guided_support(maxvit))
    assert guided_support(convnext) is None
    assert guided_support(torchvision.models.resnet18(weights=None)) is None


def test_guided_on_vit_runs_when_asked() -> None:
    """An explicit request on a ViT still works (its MLP GELUs follow the rule)."""
    model = torchvision.models.vit_b_32(weights=None, image_size=64, num_classes=4).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)
    out = lc.explain(model, torch.rand(1, 3, 64, 64), methods=("gradcam",), target=1,
                     guided_gradcam=True)
    assert out.guided is not None and torch.isfinite(out.guided).all()
    assert out.guided_cams["gradcam"][out.layers[0]].shape == (1, 3, 64, 64)
