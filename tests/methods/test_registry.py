"""Every registered method against hand-computed maps, and the registry's contracts.

The tiny model of ``tests/methods/test_gradient_identities.py``:
x (1, 1, 2, 2) = [[1, 2], [3, 4]] -> 1x1 conv with
A_0 = x, A_1 = 5 - x -> logits_c = sum_ij sum_k V[c, k] A_k,ij^power with V = [[1, -0.5],
[-1, 1]]. With power 1 the gradient is V[c, k] everywhere; with power 2 it is 2 V[c, k] A_k.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.replay import PassTools, split_after
from lightning_cam.methods import (
    FUSE_MODES,
    KINDS,
    METHODS,
    LayerPass,
    fuse_maps,
    get_method,
    method_name,
    normalize_maps,
)
from lightning_cam.methods.gradient import first_component, layercam_fuse_scale
from lightning_cam.methods.perturbation import smoothgradcampp_weights
from tests.methods.test_gradient_identities import GapNet, LinearScoreNet, X
from tests.reference import minmax, reference_gradcam


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)


def _cam(cls: str, model: nn.Module, target: int, layer: str = "conv") -> torch.Tensor:
    return getattr(lc, cls)(model, layer)(X, target=target, upsample=False)


# --------------------------------------------------------------------------- registry
def test_registry_entries_are_complete_and_classes_generated() -> None:
    assert set(METHODS) >= {
        "gradcam", "gradcam++", "hirescam", "gradcam-elementwise", "xgradcam", "layercam",
        "eigengradcam", "eigencam", "cam", "scorecam", "ablationcam", "smoothgradcam++",
    }
    for name, m in METHODS.items():
        assert m.name == name and m.kind in KINDS and m.paper and m.title
        assert m.compute.__doc__ and m.returns in ("weights", "map")
        cls = getattr(lc, m.class_name)
        assert cls.method == name and cls.__name__ == m.class_name
        assert m.paper in (cls.__doc__ or "")
        assert method_name(m.class_name) == name  # the class name is accepted as a name
        for alias in m.aliases:
            assert method_name(alias.upper()) == name
    assert [METHODS[n].kind for n in ("hirescam", "eigencam", "scorecam",
                                      "integrated_gradients")] == list(KINDS)


def test_method_properties_follow_the_kind() -> None:
    """Callers read needs_backward / extra_passes, never kind strings: one answer per kind."""
    expected = {"gradient": (True, False, False, True), "activation": (False, False, False, True),
                "perturbation": (False, True, True, True),
                "attribution": (False, True, False, False)}
    for m in METHODS.values():
        got = (m.needs_backward, m.extra_passes, m.replays_layer, m.needs_layer)
        assert got == expected[m.kind], m.name
    assert METHODS["gradcam"].needs_backward and not METHODS["gradcam"].extra_passes
    assert not METHODS["eigencam"].needs_backward and not METHODS["eigencam"].extra_passes
    for name in ("scorecam", "ablationcam"):
        assert METHODS[name].extra_passes and not METHODS[name].needs_backward
        assert METHODS[name].needs_class_target
    assert sorted(set(expected)) == sorted(KINDS)


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(torch.relu(self.conv(x)))).mean(dim=(2, 3)))


def test_replays_layer_decides_which_methods_refuse_a_shared_layer() -> None:
    """A layer called twice: methods with extra passes refuse it, the others sum the calls."""
    torch.manual_seed(0)
    model, x = _Twice().eval(), torch.rand(1, 3, 6, 6)
    for name, m in METHODS.items():
        if m.replays_layer:
            with pytest.raises(ValueError, match="called 2 times"):
                lc.explain(model, x, methods=[name], layer="conv", target=0)
    maps = lc.explain(model, x, methods=["gradcam", "eigencam"], layer="conv", target=0)
    assert set(maps.cams) == {"gradcam", "eigencam"}


def test_weighting_function_call_kept_and_refused_for_other_kinds() -> None:
    a, g = torch.rand(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    assert torch.equal(METHODS["gradcam"](a, g), g.mean(dim=(2, 3), keepdim=True))
    with pytest.raises(TypeError, match="perturbation method"):
        METHODS["scorecam"](a, g)


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown method 'gradcam3'.*'layercam'"):
        lc.Explainer(GapNet(), "features", methods=("gradcam3",))
    with pytest.raises(ValueError, match="fuse must be None or one of"):
        lc.Explainer(GapNet(), "features", fuse="sum")


# --------------------------------------------------------------------------- gradient methods
def test_power1_class0_hand_computed() -> None:
    # g = V[0] = [1, -0.5] everywhere.
    gc = _t([[0, 1 / 7], [4 / 7, 1]])  # ReLU(A_0 - 0.5 A_1) = ReLU([[-1, .5], [2, 3.5]]) / 3.5
    a0 = _t([[0, 1 / 3], [2 / 3, 1]])  # A_0 normalised
    expected = {
        "HiResCAM": gc,  # constant gradient: sum_k g A = Grad-CAM's map
        "XGradCAM": gc,  # w_k = sum(g A) / sum(A) = g_k
        "GradCAMElementWise": a0,  # ReLU(1 * A_0) + ReLU(-0.5 * A_1) = A_0
        "LayerCAM": a0,  # ReLU(g) = [1, 0]: A_0
    }
    for cls, want in expected.items():
        torch.testing.assert_close(_cam(cls, LinearScoreNet(), 0), want, msg=cls)


def test_power2_class1_hand_computed() -> None:
    # y_1 = sum(-A_0^2 + A_1^2): g_0 = -2 A_0 = -2 [[1, 2], [3, 4]], g_1 = 2 A_1 = 2 [[4, 3], ...
    model = LinearScoreNet(power=2)
    # HiRes: -2 A_0^2 + 2 A_1^2 = [[30, 10], [-10, -30]] -> [[1, 1/3], [0, 0]]
    torch.testing.assert_close(_cam("HiResCAM", model, 1), _t([[1, 1 / 3], [0, 0]]))
    # XGrad: w_0 = -2 * 30 / 10 = -6, w_1 = 2 * 30 / 10 = 6 -> 6 (A_1 - A_0) = [[18, 6], [-6, -18]]
    torch.testing.assert_close(_cam("XGradCAM", model, 1), _t([[1, 1 / 3], [0, 0]]))
    # Element-wise: ReLU(-2 A_0^2) = 0, ReLU(2 A_1^2) = [[32, 18], [8, 2]] -> (m - 2) / 30
    elementwise = _t([[1, 16 / 30], [6 / 30, 0]])
    torch.testing.assert_close(_cam("GradCAMElementWise", model, 1), elementwise)
    # Layer-CAM: ReLU(g_0) = 0, ReLU(g_1) A_1 = 2 A_1^2: the same map here
    torch.testing.assert_close(_cam("LayerCAM", model, 1), elementwise)
    # EigenGrad-CAM: g A = (-2 A_0^2, 2 A_1^2) per position: (-2, 32), (-8, 18), (-18, 8),
    # (-32, 2): centred (15, 15), (9, 1), (-1, -9), (-15, -15) -> v = (1, 1)/sqrt(2) up to sign;
    # projection 30, 10, -10, -30 (/sqrt 2), sign: correlates with sum_k g A = [[30, 10], ...].
    torch.testing.assert_close(_cam("EigenGradCAM", model, 1), _t([[1, 1 / 3], [0, 0]]))


# --------------------------------------------------------------------------- activation methods
class Doubling(nn.Module):
    """x -> A_0 = x, A_1 = 2x (a 1x1 conv) -> logits = sum_k,ij V[c, k] A."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        return torch.stack([a.sum(dim=(1, 2, 3)), -a.sum(dim=(1, 2, 3))], dim=1)


def test_eigencam_hand_computed_and_sign_convention() -> None:
    # Positions (A_0, A_1) = (0, 0), (1, 2), (2, 4), (3, 6): centred along v = (1, 2)/sqrt 5,
    # projections (-7.5, -2.5, 2.5, 7.5)/sqrt 5; the sign follows sum_k A_k (increasing):
    # ReLU -> (0, 0, 2.5, 7.5) -> [[0, 0], [1/3, 1]]. Class agnostic: target 0 and 1 agree.
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    for target in (0, 1):
        cam = lc.EigenCAM(Doubling(), "conv")(x, target=target, upsample=False)
        torch.testing.assert_close(cam, _t([[0, 0], [1 / 3, 1]]))
    # Flipping the activations flips the reference: the convention, not LAPACK, decides.
    a = torch.rand(3, 5, 4, 4)
    p = first_component(a)
    torch.testing.assert_close(first_component(-a), -p)  # -A: the reference flips too
    ref = a.sum(1).flatten(1) - a.sum(1).flatten(1).mean(1, keepdim=True)
    assert ((p.flatten(1) * ref).sum(1) > 0).all()


def test_eigencam_needs_no_backward() -> None:
    model = GapNet().eval()
    x = torch.randn(2, 3, 8, 8)
    calls: list[bool] = []
    model.fc.register_forward_hook(lambda _m, _i, out: calls.append(out.requires_grad))
    out = lc.explain(model, x, "features", methods=("eigencam", "cam"))
    assert calls == [False]  # no graph was recorded at all
    assert set(out.cams) == {"eigencam", "cam"}


def test_cam_equals_classifier_weighted_sum_on_gap_models() -> None:
    model = GapNet().eval()
    x = torch.randn(3, 3, 9, 9)
    target = [0, 3, 4]
    cam = lc.CAM(model, "features")(x, target=target, upsample=False)
    feats = model.features(x).detach()
    ref = torch.einsum("bkij,bk->bij", feats, model.fc.weight[target].detach())
    torch.testing.assert_close(cam, normalize_maps(ref))  # eq. 2, min-max, no ReLU
    # And Grad-CAM equals its ReLU (Grad-CAM paper, sec. 3.1).
    torch.testing.assert_close(normalize_maps(ref.relu()),
                               lc.GradCAM(model, "features")(x, target, upsample=False))


def test_cam_refuses_other_heads_clearly() -> None:
    import torchvision

    vgg_like = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3),
    )
    with pytest.raises(ValueError, match="global average pooling \\+ one linear layer.*'gradcam'"):
        lc.CAM(vgg_like, "1")(torch.rand(1, 3, 8, 8))
    resnet = torchvision.models.resnet18(weights=None, num_classes=4)
    with pytest.raises(ValueError, match=r"'layer3'.*no nn.Linear\(256, num_classes\)"):
        lc.CAM(resnet, "layer3")(torch.rand(1, 3, 64, 64))
    # Same channel count as fc's input, but batch norm and the residual come after it.
    with pytest.raises(ValueError, match=r"\['fc'\] with 512 inputs do not reproduce"):
        lc.CAM(resnet, "layer4.1.conv2")(torch.rand(1, 3, 64, 64))
    lc.CAM(resnet, "layer4")(torch.rand(1, 3, 64, 64))  # the right layer works
    with pytest.raises(ValueError, match="needs class targets"):
        lc.CAM(GapNet(), "features")(torch.rand(1, 3, 8, 8), target=lambda out: out[:, 0])


# --------------------------------------------------------------------------- perturbation
def test_scorecam_hand_computed() -> None:
    # Masks (input size = layer size): H_0 = (x - 1)/3, H_1 = (A_1 - 1)/3 = (4 - x)/3.
    # y_0(z) = sum(z - 0.5 (5 - z)) = 1.5 sum(z) - 10: masked sums 20/3 and 10/3 -> S = (0, -5).
    w0 = 1 / (1 + math.exp(-5))
    w1 = 1 - w0
    a0, a1 = X[0, 0], 5 - X[0, 0]
    ref = torch.relu(w0 * a0 + w1 * a1)
    cam = lc.ScoreCAM(LinearScoreNet(), "conv")(X, target=0, upsample=False)
    torch.testing.assert_close(cam, normalize_maps(ref[None]))


def test_scorecam_dead_channels_share_one_forward() -> None:
    model = LinearScoreNet()
    seen: list[int] = []
    model.conv.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[0]))
    x = torch.ones(1, 1, 2, 2)  # A_0 = 1, A_1 = 4: both channels constant -> both masks zero
    cam = lc.ScoreCAM(model, "conv")(x, target=0)
    assert seen == [1, 1]  # the forward + one shared forward of a zero image
    assert torch.equal(cam, torch.zeros_like(cam))  # a constant map normalises to zero


def test_ablationcam_hand_computed_and_replay_split() -> None:
    # y_0 = sum(A_0 - 0.5 A_1) = 10 - 5 = 5; zero A_0: -5 -> w_0 = 10/5 = 2; zero A_1: 10 ->
    # w_1 = -5/5 = -1. Map ReLU(2 A_0 - A_1) = ReLU(3x - 5) = [[0, 1], [4, 7]] / 7.
    cam = lc.AblationCAM(LinearScoreNet(), "conv")(X, target=0, upsample=False)
    torch.testing.assert_close(cam, _t([[0, 1 / 7], [4 / 7, 1]]))
    assert split_after(LinearScoreNet(), "conv") is not None


def test_ablationcam_negative_score_divides_by_its_magnitude() -> None:
    # Class 1 of power-1 model: y_1 = sum(A_1 - A_0) = 0: weights are the plain drops y - y_k:
    # zero A_0: y = 10 -> -10; zero A_1: y = -10 -> +10. Map ReLU(10 (A_1 - A_0)).
    cam = lc.AblationCAM(LinearScoreNet(), "conv")(X, target=1, upsample=False)
    torch.testing.assert_close(cam, _t([[1, 1 / 3], [0, 0]]))
    model = LinearScoreNet()
    with torch.no_grad():
        model.conv.bias.copy_(torch.tensor([0.0, 9.0]))  # y_1 = sum(A_1 - A_0) = 16 > 0
        model.V.copy_(torch.tensor([[1.0, -0.5], [1.0, -1.0]]))  # y_1 = sum(A_0 - A_1) = -16
    # w = (y - y_k)/|y| = ((-16 - (-26))/16, (-16 - 10)/16) = (10/16, -26/16):
    # ReLU(10 A_0 - 26 A_1) with A_1 = 9 - x > 0 is all zero: no evidence, no map (the paper's
    # division by y < 0 would turn this into the negated, "opposite" evidence).
    cam = lc.AblationCAM(model, "conv")(X, target=1, upsample=False)
    assert torch.equal(cam, torch.zeros_like(cam))


class SkipAround(nn.Module):
    """The layer's output is added to a value computed before it: fx cannot split cleanly."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.fc((self.layer(s) + s).mean(dim=(2, 3)))


def test_ablation_replay_falls_back_to_full_forwards_with_identical_maps() -> None:
    import torchvision

    torch.manual_seed(0)
    assert split_after(SkipAround(), "layer") is None
    model = SkipAround().eval()
    x = torch.randn(2, 3, 8, 8)
    cam = lc.AblationCAM(model, "layer")(x, target=[0, 2])
    # Reference: full forwards with the channel zeroed by a hook, one channel at a time.
    ref = []
    with torch.no_grad():
        for i, c in enumerate([0, 2]):
            acts = model.layer(model.stem(x[i : i + 1]))
            y = model(x[i : i + 1])[0, c]
            w = []
            for k in range(4):
                h = model.layer.register_forward_hook(
                    lambda _m, _i, o, k=k: o.index_fill(1, torch.tensor([k]), 0.0)
                )
                w.append((y - model(x[i : i + 1])[0, c]) / y.abs())
                h.remove()
            ref.append(torch.relu(torch.einsum("k,kij->ij", torch.stack(w), acts[0])))
    want = lc.methods.upsample(normalize_maps(torch.stack(ref)), (8, 8))
    torch.testing.assert_close(cam, normalize_maps(want), rtol=1e-5, atol=1e-5)
    # The split path (resnet: layer3 -> layer4 -> pool -> fc) equals full forwards.
    net = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    xr = torch.randn(1, 3, 64, 64)
    acts: list[torch.Tensor] = []
    h = net.layer3.register_forward_hook(lambda _m, _i, o: acts.append(o))
    with torch.no_grad():
        logits = net(xr)
    h.remove()
    split = PassTools(net, "layer3", xr, acts[0], logits, lambda *_: (xr, xr))
    full = PassTools(net, "layer3", xr, acts[0], None, lambda *_: (xr, xr))  # no check: full
    abl = acts[0].repeat(3, 1, 1, 1)
    abl[torch.arange(3), torch.arange(3)] = 0
    rows, ids = torch.zeros(3, dtype=torch.long), torch.tensor([1, 1, 1])
    torch.testing.assert_close(split.replay(abl, rows, ids), full.replay(abl, rows, ids),
                               rtol=1e-5, atol=1e-5)
    assert (split.replay_mode, full.replay_mode) == ("split", "full")


def test_smoothgradcampp_is_seeded_and_reduces_to_gradcampp() -> None:
    # Constant gradients (power 1): the noise cannot change them: Grad-CAM++'s hand value.
    cam = lc.SmoothGradCAMPlusPlus(LinearScoreNet(), "conv")(X, target=0, upsample=False)
    torch.testing.assert_close(cam, _t([[0, 1 / 3], [2 / 3, 1]]))
    model = GapNet().eval()
    x = torch.randn(2, 3, 8, 8)
    state = torch.random.get_rng_state()
    first = lc.SmoothGradCAMPlusPlus(model, "features.0")(x, target=[1, 2])
    again = lc.SmoothGradCAMPlusPlus(model, "features.0", max_batch=3)(x, target=[1, 2])
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    torch.testing.assert_close(first, again)  # seeded; chunking does not change the noise
    # std = 0: every noisy copy is the image: Grad-CAM++ exactly.
    out = lc.explain(model, x, "features.0", methods=("gradcam++",), target=[1, 2],
                     upsample=False)
    acts = model.features[0](x).detach()
    job = LayerPass(acts, None, "features.0", model, x, torch.tensor([1, 2]))
    job.layer_gradients = lambda xs, ids: lc.Explainer(model, "features.0")._layer_gradients(
        "features.0", xs, ids
    )
    w = smoothgradcampp_weights(job, num_samples=3, std=0.0)
    torch.testing.assert_close(
        normalize_maps(lc.methods.combine(acts, w)), out.cams["gradcam++"]["features.0"]
    )


def test_smoothgradcampp_noise_is_the_images_own_whatever_its_batch() -> None:
    # An image's map depends on the image and the seed only: not on its batch, its position in
    # it, or max_batch splitting the batch (the engine's chunks used to draw other noise).
    model = GapNet().eval()
    x = torch.randn(5, 3, 8, 8)
    ids = [1, 2, 0, 1, 2]
    whole = lc.SmoothGradCAMPlusPlus(model, "features.0")(x, target=ids)
    split = lc.SmoothGradCAMPlusPlus(model, "features.0", max_batch=2)(x, target=ids)
    alone = lc.SmoothGradCAMPlusPlus(model, "features.0")(x[3:4], target=ids[3])
    order = [4, 3, 2, 1, 0]
    reversed_ = lc.SmoothGradCAMPlusPlus(model, "features.0")(
        x[order], target=[ids[i] for i in order]
    )
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone[0], whole[3], rtol=0, atol=1e-6)
    torch.testing.assert_close(reversed_, whole[order], rtol=0, atol=1e-6)
    # the noise is real: another seed is another map of the same image
    one = x[3:4]
    acts = model.features[0](one).detach()
    job = LayerPass(acts, None, "features.0", model, one, torch.tensor([ids[3]]))
    job.layer_gradients = lambda xs, c: lc.Explainer(model, "features.0")._layer_gradients(
        "features.0", xs, c
    )
    seeds = [lc.methods.combine(acts, smoothgradcampp_weights(job, seed=s)) for s in (0, 0, 1)]
    torch.testing.assert_close(seeds[0], seeds[1])
    assert (seeds[0] - seeds[2]).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["scorecam", "ablationcam", "smoothgradcam++"])
def test_perturbation_methods_refuse_callable_targets(name: str) -> None:
    cls = getattr(lc, METHODS[name].class_name)
    with pytest.raises(ValueError, match="needs class targets"):
        cls(GapNet(), "features")(torch.rand(1, 3, 8, 8), target=lambda out: out[:, 0])


def test_perturbation_max_batch_bounds_every_forward() -> None:
    model = GapNet().eval()
    sizes: list[int] = []
    model.features.register_forward_pre_hook(lambda _m, inp: sizes.append(inp[0].shape[0]))
    x = torch.randn(2, 3, 6, 6)
    a = lc.ScoreCAM(model, "features", max_batch=3)(x, target=[0, 1])
    assert max(sizes) <= 3 and len(sizes) > 3
    b = lc.ScoreCAM(model, "features")(x, target=[0, 1])
    torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- fusion
def test_fuse_modes_hand_computed() -> None:
    m1 = torch.tensor([[[0.0, 2.0], [4.0, 4.0]]])  # normalised: [[0, .5], [1, 1]]
    m2 = torch.tensor([[[1.0, 1.0], [3.0, 5.0]]])  # normalised: [[0, 0], [.5, 1]]
    n1, n2 = normalize_maps(m1), normalize_maps(m2)
    torch.testing.assert_close(fuse_maps([m1, m2], "max", (2, 2)), torch.maximum(n1, n2))
    torch.testing.assert_close(fuse_maps([m1, m2], "mean", (2, 2)),
                               normalize_maps((n1 + n2) / 2))
    torch.testing.assert_close(fuse_maps([m1, m2], "product", (2, 2)), normalize_maps(n1 * n2))
    # Layer-CAM's scale: tanh(2 M / max M)
    torch.testing.assert_close(layercam_fuse_scale(m1), torch.tanh(2 * m1 / 4))
    assert FUSE_MODES == ("mean", "max", "product")


@pytest.mark.parametrize("fuse", FUSE_MODES)
def test_fuse_any_method_from_one_pass(fuse: str) -> None:
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    layers = ["layer2", "layer3", "layer4"]
    out = lc.explain(net, x, layers, methods=("gradcam", "layercam", "eigencam"), target=[0, 3],
                     fuse=fuse)
    small = lc.explain(net, x, layers, methods=("gradcam", "layercam", "eigencam"),
                       target=[0, 3], upsample=False)
    for name in ("gradcam", "eigencam"):
        # Each layer's map at its resolution, min-max scaled (idempotent: the normalised maps
        # serve), resized to the image, combined, normalised. (Layer-CAM's own scale: below and
        # in the torchcam comparison.)
        assert get_method(name).fuse_scale is None
        maps = [small.cams[name][n] for n in layers]
        torch.testing.assert_close(out.fused[name], fuse_maps(maps, fuse, (64, 64)))
    single = lc.LayerCAM(net, layers, fuse=fuse)(x, target=[0, 3])
    torch.testing.assert_close(single, out.fused["layercam"])


# --------------------------------------------------------------------------- hygiene
# LeGrad needs a ViT (its own hygiene test: tests/methods/test_legrad.py).
@pytest.mark.parametrize("name", sorted(n for n in METHODS if n != "legrad"))
def test_every_method_is_harmless(name: str) -> None:
    model = GapNet().train()
    model.features[0].weight.requires_grad_(False)
    x = torch.randn(2, 3, 6, 6)
    cls = getattr(lc, METHODS[name].class_name)
    cam = cls(model, "features")(x, target=[0, 1])
    assert cam.shape == (2, 6, 6) and torch.isfinite(cam).all()
    assert float(cam.min()) >= 0 and float(cam.max()) <= 1
    # computed as in eval mode (dropout/BN off), the model untouched
    twin = GapNet().eval()
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(cam, cls(twin, "features")(x, target=[0, 1]))
    if name in ("gradcam", "hirescam", "xgradcam", "cam"):
        # behind GAP + linear the gradient is w_c / (h w) everywhere: all four are CAM's
        # M_c = sum_k w_ck A^k (the gradient methods ReLU it, CAM keeps the negative end)
        with torch.no_grad():
            ref = torch.einsum("bkij,bk->bij", twin.features(x), twin.fc.weight[[0, 1]])
        ref = ref if name == "cam" else ref.relu()
        torch.testing.assert_close(cam, minmax(ref), rtol=1e-4, atol=1e-5)
    assert model.training and all(m.training for m in model.modules())
    assert not model.features[0].weight.requires_grad and model.fc.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with torch.inference_mode():  # usable inside Lightning's validate/test loops
        cls(model, "features")(x, target=[0, 1])
    # After an exception in the model: no hook left, flags restored.
    bad = GapNet().train()
    bad.fc.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        cls(bad, "features")(x, target=[0, 1])
    assert bad.training and not bad.features._forward_hooks


def test_docs_list_every_registered_method() -> None:
    # the docs' methods table is generated from the registry (docs/hooks.py, checked row by
    # row in tests/test_docs.py); the classes of every method are named on the landing pages
    from pathlib import Path

    from lightning_cam.engine.cam import CAM_CLASSES

    docs = Path(__file__).resolve().parents[2] / "docs"
    assert "<!-- methods-table -->" in (docs / "methods.md").read_text()
    for name, m in METHODS.items():
        assert getattr(lc, m.class_name) is CAM_CLASSES[m.class_name], name


@pytest.mark.parametrize("name", ["cam", "scorecam", "ablationcam", "smoothgradcam++",
                                  "shapleycam", "finercam"])
def test_explain_scores_refuses_class_only_methods_up_front(name: str) -> None:
    model = GapNet().eval()
    calls: list[int] = []
    model.fc.register_forward_hook(lambda *_: calls.append(1))
    explainer = lc.Explainer(model, "features", methods=("gradcam", name))
    with pytest.raises(ValueError, match=re.escape(f"['{name}'] explain classes only")):
        explainer.explain_scores(torch.rand(1, 3, 6, 6), lambda out: out[0, :2])
    assert calls == []  # refused before any forward
    assert METHODS[name].needs_class_target
    ok = lc.Explainer(model, "features", methods=("eigencam", "layercam"))
    x = torch.rand(1, 3, 6, 6)
    out, _ = ok.explain_scores(x, lambda out: out[0, :2])
    assert out.cams["eigencam"]["features"].shape == (2, 6, 6)
    # Eigen-CAM is class agnostic: both scores get the image's own map
    eigen = lc.EigenCAM(model, "features")(x, upsample=False)
    torch.testing.assert_close(out.cams["eigencam"]["features"], eigen.expand(2, 6, 6))
    for k in range(2):
        ref = reference_gradcam(model, model.features, x, lambda o, k=k: o[:, k], layercam=True)
        torch.testing.assert_close(out.cams["layercam"]["features"][k], ref[0],
                                   rtol=1e-4, atol=1e-5)


def test_replay_split_follows_a_replaced_submodule() -> None:
    model = LinearScoreNet()
    first = split_after(model, "conv")
    assert first is not None and split_after(model, "conv") is first  # cached
    model.conv = nn.Conv2d(1, 2, 1)  # a new structure: a new split, never the stale one
    second = split_after(model, "conv")
    assert second is not None and second is not first


class MisTraced(nn.Module):
    """fx reads ``hasattr(proxy, "logits")`` as true: its split would be wrong for tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        if not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
            out = out.logits
        return self.fc(out.mean(dim=(2, 3)))


def test_a_wrong_split_is_caught_and_replaced_by_full_forwards(capfd: Any) -> None:
    torch.manual_seed(0)
    model = MisTraced().eval()
    x = torch.randn(2, 3, 6, 6)
    got = lc.AblationCAM(model, "features")(x, target=[0, 1])
    assert capfd.readouterr().err == ""  # fx's failing trace is not printed
    ref = Traceable().eval()  # the same network, split cleanly
    ref.load_state_dict(model.state_dict())
    assert split_after(ref, "features") is not None
    torch.testing.assert_close(got, lc.AblationCAM(ref, "features")(x, target=[0, 1]))


class Traceable(MisTraced):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))
