"""Guided backprop against a hand-built reference, for every way a network spells ReLU."""

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import lightning_cam as lc

ACTS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float | None]] = {
    "module_relu": (nn.ReLU(), None),
    "module_relu_inplace": (nn.ReLU(inplace=True), None),
    "functional_relu": (F.relu, None),
    "functional_relu_inplace": (lambda t: F.relu(t, inplace=True), None),
    "torch_relu": (torch.relu, None),
    "tensor_relu_": (lambda t: t.relu_(), None),
    "module_relu6": (nn.ReLU6(), 6.0),
    "module_relu6_inplace": (nn.ReLU6(inplace=True), 6.0),
    "functional_relu6": (F.relu6, 6.0),
}


class MLP(nn.Module):
    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.l1 = nn.Linear(12, 10)
        self.l2 = nn.Linear(10, 8)
        self.l3 = nn.Linear(8, 3)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.l1(x.flatten(1)))
        h = self.act(self.l2(h))
        return self.l3(h)


def reference_guided(model: MLP, x: torch.Tensor, c: int, hi: float | None) -> torch.Tensor:
    """Hand-built guided backward: R <- R * (lo < z < hi) * (R > 0), then through W^T."""
    w1, b1 = model.l1.weight.detach(), model.l1.bias.detach()
    w2, b2 = model.l2.weight.detach(), model.l2.bias.detach()
    w3 = model.l3.weight.detach()
    z1 = x.flatten(1) @ w1.T + b1
    h1 = z1.clamp(0, hi)
    z2 = h1 @ w2.T + b2

    def gate(r: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        inside = z > 0 if hi is None else (z > 0) & (z < hi)
        return r * inside * (r > 0)

    r = w3[c].expand(x.shape[0], -1)
    r = gate(r, z2) @ w2
    r = gate(r, z1) @ w1
    return r.view_as(x)


@pytest.mark.parametrize("kind", sorted(ACTS))
def test_guided_backprop_matches_reference(kind: str) -> None:
    act, hi = ACTS[kind]
    torch.manual_seed(1)
    model = MLP(act)
    with torch.no_grad():  # push pre-activations over 6 sometimes so ReLU6's cap matters
        model.l1.weight.mul_(8)
    x = torch.randn(4, 3, 2, 2)
    gb = lc.GuidedBackprop(model)(x, target=2)
    ref = reference_guided(model, x, 2, hi)
    torch.testing.assert_close(gb, ref, rtol=1e-5, atol=1e-6)
    # and it differs from the plain gradient where negative gradients were blocked
    xg = x.clone().requires_grad_(True)
    plain = torch.autograd.grad(model(xg)[:, 2].sum(), xg)[0]
    assert not torch.allclose(gb, plain)


class CheckpointedMLP(MLP):
    """The same MLP run inside a non-reentrant activation checkpoint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(super().forward, x, use_reentrant=False)


@pytest.mark.parametrize("kind", sorted(ACTS))
def test_guided_backprop_inside_a_non_reentrant_checkpoint(kind: str) -> None:
    """The segment is re-run in the backward without the guided mode: the rule is a gradient
    hook there, and the re-run saves the same tensors as the forward."""
    act, hi = ACTS[kind]
    torch.manual_seed(1)
    model = CheckpointedMLP(act)
    with torch.no_grad():
        model.l1.weight.mul_(8)
    x = torch.randn(4, 3, 2, 2)
    gb = lc.GuidedBackprop(model)(x, target=2)
    torch.testing.assert_close(gb, reference_guided(model, x, 2, hi), rtol=1e-5, atol=1e-6)


def test_relu6_cap_is_respected() -> None:
    # An input above 6 must block the gradient under ReLU6 but not under ReLU.
    x = torch.full((1, 1, 1, 1), 7.0)

    class Net(nn.Module):
        def __init__(self, act: nn.Module) -> None:
            super().__init__()
            self.act = act

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.act(t).flatten(1)

    # (a single-output model is a binary head: the default target is its logit z)
    assert lc.GuidedBackprop(Net(nn.ReLU6()))(x).item() == 0.0
    assert lc.GuidedBackprop(Net(nn.ReLU()))(x).item() == 1.0


def test_guided_on_densenet_and_mobilenet_differs_from_plain_gradient() -> None:
    """Functional ReLU (DenseNet) and ReLU6 (MobileNet v2) are guided: no negative-only paths."""
    import torchvision

    for name in ("densenet121", "mobilenet_v2"):
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.rand(1, 3, 64, 64)
        gb = lc.GuidedBackprop(model)(x, target=1)
        xg = x.clone().requires_grad_(True)
        plain = torch.autograd.grad(model(xg)[:, 1].sum(), xg)[0]
        assert torch.isfinite(gb).all()
        scale = plain.abs().max()
        assert scale > 0
        assert (gb - plain).abs().max() > 1e-2 * scale


def test_guided_gradcam_is_product() -> None:
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    x = torch.rand(2, 3, 64, 64)
    out = lc.explain(model, x, "layer4", guided_gradcam=True, target=[1, 2])
    ggc = out.guided_cams["gradcam"]["layer4"]
    assert out.guided is not None
    torch.testing.assert_close(ggc, out.guided * out.cams["gradcam"]["layer4"][:, None])
    standalone = lc.GuidedGradCAM(model, "layer4", method="gradcam++")(x, target=[1, 2])
    torch.testing.assert_close(standalone, out.guided_cams["gradcam++"]["layer4"])
    gb = lc.GuidedBackprop(model)(x, target=[1, 2])
    torch.testing.assert_close(gb, out.guided)


def _old_rule(
    grad: torch.Tensor, out: torch.Tensor, hi: float | None, guided: bool
) -> torch.Tensor:
    """The mask formula the fused kernels replaced: grad * (0 < out (< hi)) (* (grad > 0))."""
    mask = out > 0
    if hi is not None:
        mask = mask & (out < hi)
    if guided:
        mask = mask & (grad > 0)
    return grad * mask


CLAMPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float | None]] = {
    "relu": (F.relu, None),
    "relu_inplace": (lambda t: F.relu(t, inplace=True), None),
    "tensor_relu_": (lambda t: t.relu_(), None),
    "relu6": (F.relu6, 6.0),
    "relu6_inplace": (lambda t: F.relu6(t, inplace=True), 6.0),
    "hardtanh_0_3": (lambda t: F.hardtanh(t, 0.0, 3.0), 3.0),
    "hardtanh_0_3_inplace": (lambda t: F.hardtanh_(t, 0.0, 3.0), 3.0),
}


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("kind", sorted(CLAMPS))
def test_switchable_backward_equals_mask_formula(kind: str, guided: bool) -> None:
    """The fused backward (threshold_backward / hardtanh_backward, then a clamp at 0 when
    guided) gives exactly the mask formula, values at the boundaries 0 and hi included."""
    from lightning_cam.engine.guided import GuidedReLUMode, GuidedSwitch

    act, hi = CLAMPS[kind]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 6, 7, generator=g) * 4
    x.view(-1)[:20] = 0.0
    x.view(-1)[20:40] = 6.0 if hi == 6.0 else 3.0
    grad = torch.randn(x.shape, generator=g)
    grad.view(-1)[::7] = 0.0
    leaf = x.clone().requires_grad_(True)
    switch = GuidedSwitch()
    with GuidedReLUMode(switch):
        out = act(leaf * 1.0)  # a non-leaf, so the in-place variants may run in place
    switch.guided = guided
    (got,) = torch.autograd.grad(out, leaf, grad)
    expected = _old_rule(grad, out.detach(), hi, guided)
    assert torch.equal(got, expected)  # -0.0 == 0.0: equal up to the sign of zero


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_eval_batch_norm_input_gradient_and_memory(affine: bool, dims: int) -> None:
    """Under the guided mode an eval-mode batch norm has autograd's input gradient, and the
    recorded graph keeps per-channel scales, not the normalised activation."""
    from lightning_cam.engine.guided import GuidedReLUMode, GuidedSwitch

    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](5, affine=affine)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(5, generator=g))
        bn.running_var.copy_(torch.rand(5, generator=g) + 0.1)
        if affine:
            bn.weight.copy_(torch.randn(5, generator=g))
            bn.bias.copy_(torch.randn(5, generator=g))
    bn.eval()
    x = torch.randn(3, 5, *([4] * dims), generator=g, requires_grad=True)
    r = torch.randn(x.shape, generator=g)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with GuidedReLUMode(GuidedSwitch(), inputs_only=True), torch.autograd.graph.saved_tensors_hooks(
        pack, lambda t: t
    ):
        y = bn(x * 1.0)
    (got,) = torch.autograd.grad(y, x, r)
    (expected,) = torch.autograd.grad(bn(x * 1.0), x, r)
    torch.testing.assert_close(y, bn(x), rtol=0, atol=0)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert saved and max(saved) <= 5  # no activation-sized tensor kept


def test_batch_norm_is_intercepted_in_eval_mode_with_inputs_only() -> None:
    from lightning_cam.engine.guided import GuidedReLUMode, GuidedSwitch

    bn = nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    with GuidedReLUMode(GuidedSwitch(), inputs_only=True):
        y = bn(x)
    assert type(y.grad_fn).__name__ != "_EvalBatchNormBackward"
    assert bn.num_batches_tracked.item() == 1
    # without inputs_only, eval-mode batch norm keeps autograd's rule (weight gradients too)
    bn.eval()
    with GuidedReLUMode(GuidedSwitch()):
        y = bn(x)
    assert type(y.grad_fn).__name__ != "_EvalBatchNormBackward"
    assert torch.autograd.grad(y.sum(), bn.weight)[0].shape == (3,)
