"""captum's attributions as registry methods: equal to a direct captum call, hand-computed
numbers (saliency of a linear model, IG completeness), batching, seeding and hygiene."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import lightning_cam as lc
from lightning_cam.methods import METHODS
from lightning_cam.methods.attribution import reduce_channels, shap_baselines
from tests.optional import require

# captum's (LeGrad, also of kind attribution, has tests/methods/test_legrad.py)
ATTRIBUTIONS = sorted(n for n, m in METHODS.items()
                      if m.compute.__module__ == "lightning_cam.methods.attribution")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    ).eval()


def _direct(name: str, model: nn.Module, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The same attribution by a plain captum call (per image and seeded where random)."""
    ca = require("captum.attr", "pip install captum")

    def seeded(fn: Any) -> torch.Tensor:
        outs = []
        for i in range(len(x)):
            torch.manual_seed(0)
            np.random.seed(0)
            outs.append(fn(x[i : i + 1], ids[i : i + 1]))
        return torch.cat(outs)

    def sigma(xi: torch.Tensor) -> float:
        return float(0.15 * (xi.max() - xi.min()))

    if name == "saliency":
        a = ca.Saliency(model).attribute(x, target=ids)
        return a.abs().sum(1)
    if name == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(x, target=ids, n_steps=50).sum(1).relu()
    if name in ("smoothgrad", "vargrad"):
        nt = ca.NoiseTunnel(ca.Saliency(model))
        return seeded(lambda xi, ci: nt.attribute(
            xi, nt_type=name, nt_samples=16, stdevs=sigma(xi), target=ci, abs=False
        )).abs().sum(1)
    if name == "occlusion":  # window min(H, W) // 8 = 2, stride 1
        return ca.Occlusion(model).attribute(
            x, sliding_window_shapes=(3, 2, 2), strides=(3, 1, 1), target=ids
        ).sum(1).relu()
    if name == "gradient_shap":
        gs = ca.GradientShap(model)
        return seeded(lambda xi, ci: gs.attribute(
            xi, baselines=shap_baselines(xi), n_samples=16, target=ci
        )).sum(1).relu()
    assert name == "deeplift"
    return ca.DeepLift(model).attribute(x, target=ids).sum(1).relu()


@pytest.mark.parametrize("name", ATTRIBUTIONS)
def test_equal_to_a_direct_captum_call(name: str) -> None:
    model, x, ids = _net(), torch.rand(3, 3, 16, 16), torch.tensor([0, 3, 1])
    ours = getattr(lc, METHODS[name].class_name)(model, normalize=False)(x, target=ids)
    assert not ours.requires_grad and ours.grad_fn is None  # no graph kept alive
    ref = _direct(name, model, x.clone(), ids)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    normed = lc.explain(model, x, methods=[name], target=ids).cams[name]["input"]
    torch.testing.assert_close(normed, lc.methods.normalize_maps(ref), rtol=1e-3, atol=1e-4)


def test_saliency_of_a_linear_model_is_the_absolute_weights() -> None:
    require("captum", "pip install captum")
    lin = nn.Linear(3 * 4 * 5, 2)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.randn(2, 3, 4, 5)
    sal = lc.Saliency(model, normalize=False)(x, target=[1, 0])
    w = lin.weight.detach().view(2, 3, 4, 5)
    torch.testing.assert_close(sal, w[[1, 0]].abs().sum(1))  # sum_c |W[class, c]|
    assert METHODS["saliency"].kind == "attribution"


class _Square(nn.Module):
    """y = [1, 2] * sum x^2: every IG attribution w x_i^2 > 0 from the zero baseline."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x**2).flatten(1).sum(1, keepdim=True) * torch.tensor([1.0, 2.0])


def test_integrated_gradients_completeness_and_hand_values() -> None:
    require("captum", "pip install captum")
    x = torch.rand(2, 3, 5, 5) + 0.1
    raw = lc.IntegratedGradients(_Square(), normalize=False)(x, target=1)
    # a_i = x_i * int_0^1 4 t x_i dt = 2 x_i^2; the map sums channels
    torch.testing.assert_close(raw, (2 * x**2).sum(1), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        full = _Square()(x)[:, 1]
    torch.testing.assert_close(raw.flatten(1).sum(1), full)  # = f(x) - f(0)
    # a constant baseline 1: f(x) - f(1) over the pixels, signed, then ReLU per pixel
    from lightning_cam.methods.attribution import integrated_gradients_map
    from lightning_cam.methods.core import LayerPass

    job = LayerPass(torch.empty(0), images=x, class_ids=torch.tensor([1, 1]),
                    logits_model=_Square())
    m = integrated_gradients_map(job, baseline=1.0)
    torch.testing.assert_close(m, (2 * (x**2 - 1)).sum(1).relu(), rtol=1e-4, atol=1e-5)


def test_deeplift_completeness_on_a_relu_network() -> None:
    require("captum", "pip install captum")
    model, x = _net(), torch.rand(1, 3, 12, 12)
    from lightning_cam.methods.attribution import captum_attr

    a = captum_attr().DeepLift(model).attribute(x.clone().requires_grad_(True), target=2)
    with torch.no_grad():
        delta = model(x)[0, 2] - model(torch.zeros_like(x))[0, 2]
    torch.testing.assert_close(a.sum(), delta, rtol=1e-4, atol=1e-5)
    ours = lc.DeepLift(model, normalize=False)(x, target=2)
    torch.testing.assert_close(ours, a.sum(1).relu())


def test_reductions_hand_computed() -> None:
    a = torch.tensor([[[[1.0, -3.0]], [[-2.0, 1.0]]]])  # (1, 2, 1, 2)
    torch.testing.assert_close(reduce_channels(a, "positive"), torch.tensor([[[0.0, 0.0]]]))
    torch.testing.assert_close(reduce_channels(a, "abs"), torch.tensor([[[3.0, 4.0]]]))
    torch.testing.assert_close(reduce_channels(a, "max_abs"), torch.tensor([[[2.0, 3.0]]]))
    with pytest.raises(ValueError, match="reduce must be one of"):
        reduce_channels(a, "mean")


@pytest.mark.parametrize("name", ["integrated_gradients", "smoothgrad", "occlusion",
                                  "gradient_shap", "deeplift"])
def test_max_batch_bounds_every_forward_with_the_same_maps(name: str) -> None:
    require("captum", "pip install captum")
    model, x, ids = _net(), torch.rand(3, 3, 16, 16), [0, 1, 2]
    sizes: list[int] = []
    handle = model[0].register_forward_hook(lambda _m, i, _o: sizes.append(i[0].shape[0]))
    try:
        small = lc.explain(model, x, methods=[name], target=ids, max_batch=4,
                           normalize=False).cams[name]["input"]
    finally:
        handle.remove()
    assert sizes and max(sizes) <= 4, sizes
    if name == "gradient_shap":  # its samples drawn in calls of max_batch: other draws
        return
    big = lc.explain(model, x, methods=[name], target=ids, max_batch=None,
                     normalize=False).cams[name]["input"]
    torch.testing.assert_close(small, big, rtol=1e-4, atol=1e-6)


def test_seeded_and_the_global_generators_untouched() -> None:
    require("captum", "pip install captum")
    model, x = _net(), torch.rand(2, 3, 16, 16)
    torch.manual_seed(123)
    np.random.seed(7)
    t_state, n_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = lc.explain(model, x, methods=["smoothgrad", "gradient_shap"], target=[0, 1])
    assert torch.equal(torch.get_rng_state(), t_state)
    assert np.array_equal(np.random.get_state()[1], n_state)
    # an image's map is its own, whatever its batch
    b = lc.explain(model, x[1:], methods=["smoothgrad", "gradient_shap"], target=[1])
    for m in ("smoothgrad", "gradient_shap"):
        torch.testing.assert_close(a.cams[m]["input"][1:], b.cams[m]["input"])


def test_attributions_refuse_callable_and_detection_targets() -> None:
    model, x = _net(), torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="needs class targets"):
        lc.explain(model, x, methods=["integrated_gradients"], target=lambda out: out[:, 0])
    explainer = lc.Explainer(model, methods=["saliency"])
    with pytest.raises(ValueError, match=re.escape("['saliency'] explain classes only")):
        explainer.explain_scores(x, lambda out: out[0, :2])


def test_binary_head_reads_as_two_classes() -> None:
    require("captum", "pip install captum")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1)).eval()
    x = torch.rand(2, 3, 2, 2)
    pos = lc.Saliency(model, normalize=False)(x, target=1)
    neg = lc.Saliency(model, normalize=False)(x, target=0)
    w = model[1].weight.detach().view(3, 2, 2).abs().sum(0)
    torch.testing.assert_close(pos, w.expand(2, 2, 2))
    torch.testing.assert_close(neg, w.expand(2, 2, 2))  # |d(-z)/dx| = |w|


def test_keys_follow_the_layers_and_guided_gradcam() -> None:
    require("captum", "pip install captum")
    model, x = _net(), torch.rand(2, 3, 16, 16)
    out = lc.Explainer(model, "2", methods=["gradcam", "saliency"], guided_gradcam=True,
                       fuse="mean")(x, target=[0, 1])
    assert out.layers == ["2"] and set(out.cams["saliency"]) == {"2"}
    sal = out.cams["saliency"]["2"]
    torch.testing.assert_close(out.guided_cams["saliency"]["2"], out.guided * sal[:, None])
    torch.testing.assert_close(out.fused["saliency"], sal)
    only = lc.Explainer(model, methods=["saliency"])
    res = only(x, target=[0, 1])
    assert res.layers == ["input"] and only.layers == ["input"]
    torch.testing.assert_close(res.cams["saliency"]["input"], sal)


class _Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:  # the engine's forward passes, captum's first one raises
            raise RuntimeError("boom")
        return self.net(x)


@pytest.mark.parametrize("name", ATTRIBUTIONS)
def test_harmless_also_when_the_model_raises(name: str) -> None:
    require("captum", "pip install captum")
    model = _Boom().train()
    model.net[0].weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        lc.explain(model, torch.rand(2, 3, 8, 8), methods=[name], target=[0, 1])
    assert model.training and all(m.training for m in model.modules())
    assert not model.net[0].weight.requires_grad and model.net[2].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert "input" not in vars(m) and "output" not in vars(m)
    model.calls = -10  # now it works, and leaves nothing either
    lc.explain(model, torch.rand(2, 3, 8, 8), methods=[name], target=[0, 1])
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_deeplift_refuses_a_reused_relu_clearly_and_cleans_up() -> None:
    require("captum", "pip install captum")

    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.relu(self.relu(self.conv(x)) - 0.1).mean(dim=(2, 3)))

    model = Reused().eval()
    with pytest.raises(ValueError, match="called more than once"):
        lc.DeepLift(model)(torch.rand(1, 3, 8, 8), target=0)
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks
        assert "input" not in vars(m) and "output" not in vars(m)
    lc.IntegratedGradients(model)(torch.rand(1, 3, 8, 8), target=0)  # the fix works


def test_deeplift_under_deterministic_algorithms_on_a_max_pool_model() -> None:
    # Lightning's deterministic=True (the main job's config) sets use_deterministic_algorithms;
    # captum's max-pool rule calls max_unpool, which has no deterministic kernel: the map is
    # still made (equal to the one without the mode) and the strict mode comes back after.
    require("captum", "pip install captum")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    free = lc.explain(net, x, "0", methods=["deeplift"], target=1).cam("deeplift")
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.warns(UserWarning, match="deterministic"):
            got = lc.explain(net, x, "0", methods=["deeplift"], target=1).cam("deeplift")
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(got, free)
