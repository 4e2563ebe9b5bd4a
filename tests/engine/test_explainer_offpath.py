"""The engine off the paved path: threads, compiled / traced / checkpointed models, target types,
non-finite values, odd layers, wrappers, dtypes and layouts, calls in the middle of training.

Each case is right (compared with the plain eager model computing the same thing) or refused
with a message that says why and what to do.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint

import lightning_cam as lc
from lightning_cam.engine import NonFiniteWarning
from tests.reference import class_score, reference_gradcam


class Net(nn.Module):
    """conv-BN-ReLU x3 -> GAP -> linear; ``mode`` wraps ``block2`` in an activation checkpoint."""

    def __init__(self, num_classes: int = 5, mode: str = "none") -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block3 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        if self.mode == "none":
            h = self.block2(h)
        else:
            h = checkpoint(self.block2, h, use_reentrant=self.mode == "reentrant")
        h = self.block3(h)
        return self.fc(h.mean(dim=(2, 3)))


def _net(seed: int = 0, **kw: Any) -> Net:
    torch.manual_seed(seed)
    model = Net(**kw)
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _images(n: int = 3, size: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _all(model: nn.Module, x: torch.Tensor, layer: Any = "block2", **kw: Any) -> lc.Explanation:
    return lc.explain(model, x, layer, guided_gradcam=True, **kw)


def _assert_same_explanation(a: lc.Explanation, b: lc.Explanation, **tol: float) -> None:
    tol = tol or {"rtol": 1e-5, "atol": 1e-6}
    for m in a.cams:  # layers in the same order (names may differ: aliases, wrapper prefixes)
        for kind in ("cams", "guided_cams"):
            got, want = getattr(a, kind)[m], getattr(b, kind)[m]
            assert len(got) == len(want)
            for (name, x), y in zip(got.items(), want.values(), strict=True):
                torch.testing.assert_close(x, y, **tol, msg=f"{kind} {m} {name}")  # type: ignore[arg-type]
    torch.testing.assert_close(a.guided, b.guided, **tol)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------


def test_threads_on_one_model_are_serialised_and_change_nothing() -> None:
    model = _net().train()  # BN in train mode: a forward outside eval would move its stats
    buffers = [b.clone() for b in model.buffers()]
    inputs = [_images(4, 24 + 8 * s, seed=s) for s in range(4)]  # other sizes per thread
    expected = [_all(model, x, ["block1", "block2"]) for x in inputs]
    errors: list[BaseException] = []
    results: dict[tuple[int, int], lc.Explanation] = {}
    start = threading.Barrier(4)

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(6):
                results[t, i] = _all(model, inputs[(t + i) % 4], ["block1", "block2"])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for (t, i), got in results.items():
        _assert_same_explanation(got, expected[(t + i) % 4])
    assert all(m.training for m in model.modules())
    for a, b in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(a, b)  # running statistics untouched
    assert all(not m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------------------------------------
# Compiled and traced models
# ---------------------------------------------------------------------------------------------


def test_traced_model_is_refused_with_the_fix() -> None:
    model = _net()
    x = _images()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated
        traced = torch.jit.trace(model, x)
    with pytest.raises(TypeError, match=r"TorchScript .* Pass the eager module"):
        lc.GradCAM(traced, "block2")(x)
    with pytest.raises(TypeError, match=r"Guided backprop needs the eager model.*TorchScript"):
        lc.GuidedBackprop(traced)(x)
    # A traced part inside an eager model: CAMs of eager layers are fine, guided is refused.
    eager = lc.GradCAM(model, "block2")(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.block3 = torch.jit.trace(model.block3, torch.rand(1, 16, 12, 12))
    assert lc.GradCAM(model, "block2")(x).shape == (3, 12, 12)
    # ... and the same maps as before the tracing, and as plain autograd through the trace
    torch.testing.assert_close(lc.GradCAM(model, "block2")(x), eager, rtol=1e-5, atol=1e-6)
    pred = model(x).argmax(1).tolist()
    ref = reference_gradcam(model, model.block2, x, class_score(pred), size=(12, 12))
    torch.testing.assert_close(eager, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match=r"'block3' is a TorchScript module"):
        lc.GuidedGradCAM(model, "block2")(x)


def test_compiled_model_is_explained_eagerly() -> None:
    model = _net()
    x = _images()
    expected = _all(model, x)
    compiled = torch.compile(model)  # never compiled: the engine runs the eager module
    for layer in ("block2", "_orig_mod.block2"):
        _assert_same_explanation(_all(compiled, x, layer), expected)
    gb = lc.GuidedBackprop(compiled)(x, target=2)
    torch.testing.assert_close(gb, lc.GuidedBackprop(model)(x, target=2))


def test_lightning_style_compiled_forward_is_bypassed() -> None:
    model = _net()
    x = _images()
    expected = _all(model, x)
    model.forward = torch.compile(model.forward)  # what Lightning's from_compiled does
    _assert_same_explanation(_all(model, x), expected)


def test_model_compiled_in_place_is_explained_eagerly() -> None:
    model = _net()
    x = _images()
    expected = _all(model, x)
    model.compile()  # lazily: nothing is compiled by the engine's calls
    _assert_same_explanation(_all(model, x), expected)


def test_guided_backprop_refuses_compiled_submodules() -> None:
    model = _net()
    model.block3.compile()  # compiled in place, lazily
    with pytest.raises(TypeError, match=r"'block3' is compiled in place .* eager module"):
        lc.GuidedBackprop(model)(_images())


# ---------------------------------------------------------------------------------------------
# Activation checkpointing
# ---------------------------------------------------------------------------------------------


def test_densenet_memory_efficient_matches_the_plain_model() -> None:
    torch.manual_seed(0)
    plain = torchvision.models.densenet121(weights=None, num_classes=4).eval()
    efficient = torchvision.models.densenet121(
        weights=None, num_classes=4, memory_efficient=True
    ).eval()
    efficient.load_state_dict(plain.state_dict())
    x = _images(2, 64)
    for layer in ("features.denseblock3", None):
        _assert_same_explanation(
            _all(efficient, x, layer), _all(plain, x, layer), rtol=1e-4, atol=1e-6
        )


def test_non_reentrant_checkpoint_is_right_for_every_layer() -> None:
    x = _images()
    for layer in ("block1", "block2", "block2.0", "block3"):
        _assert_same_explanation(_all(_net(mode="non-reentrant"), x, layer), _all(_net(), x, layer))


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad=True")
def test_reentrant_checkpoint_is_explained_or_refused_with_the_reason() -> None:
    x = _images()
    model = _net(mode="reentrant")
    # After the segment: right.
    torch.testing.assert_close(lc.GradCAM(model, "block3")(x), lc.GradCAM(_net(), "block3")(x))
    with pytest.raises(ValueError, match=r"\['block2'\] run inside a reentrant activation"):
        lc.GradCAM(model, "block2")(x)
    with pytest.raises(ValueError, match=r"Between the layer\(s\) \['block1'\] and the output"):
        lc.GradCAM(model, "block1")(x)
    with pytest.raises(ValueError, match="use_reentrant=False"):
        lc.GuidedBackprop(model)(x)


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        np.array([1, 2, 0]),
        np.array([1, 2, 0], dtype=np.uint8),
        [np.int64(1), np.int32(2), 0],
        [torch.tensor(1), np.array(2), 0],
        torch.tensor([1, 2, 0], dtype=torch.int16),
        np.int64(2),
        np.array(2),
        torch.tensor(2),
        torch.tensor(2, dtype=torch.uint8),
    ],
    ids=repr,
)
def test_integer_targets_of_any_type(target: Any) -> None:
    model = _net()
    x = _images()
    as_list = [int(v) for v in target] if isinstance(target, list) else np.asarray(target).tolist()
    reference = _all(model, x, target=as_list)
    _assert_same_explanation(_all(model, x, target=target), reference)
    _assert_same_explanation(_all(model, x, target=target, max_batch=1), reference)
    _assert_same_explanation(_all(model, x, target=target, max_batch=2), reference)


def test_argmax_of_logits_is_a_target() -> None:
    model = _net()
    x = _images(1)
    target = model(x)[0].argmax()  # 0-d tensor
    assert torch.equal(lc.explain(model, x, "block2", target=target).class_ids, target[None])


@pytest.mark.parametrize(
    ("target", "exc", "match"),
    [
        ("2", TypeError, r"target must be None, an int .* got '2' \(str\)"),
        (2.0, TypeError, r"got 2.0 \(float\)"),
        (True, TypeError, "got the bool True"),
        (np.array([1.0, 2.0, 0.0]), TypeError, "numpy array of dtype float64"),
        (torch.tensor([1.0, 2.0, 0.0]), TypeError, "tensor of dtype torch.float32"),
        ([1, "2", 0], TypeError, r"list holding '2' \(str\)"),
        (np.array([[1, 2, 0]]), ValueError, r"must be 1-D, got shape \(1, 3\)"),
    ],
)
def test_other_targets_are_refused_with_our_message(target: Any, exc: type, match: str) -> None:
    for max_batch in (None, 1):
        with pytest.raises(exc, match=match):
            lc.GradCAM(_net(), "block2", max_batch=max_batch)(_images(), target=target)


# ---------------------------------------------------------------------------------------------
# Non-finite values
# ---------------------------------------------------------------------------------------------


def test_nan_pixel_gives_nan_maps_and_one_warning_naming_the_sample() -> None:
    model = _net()
    x = _images(3)
    clean = _all(model, x, target=1)
    x[1, 0, 4, 4] = float("nan")
    for max_batch in (None, 1):
        with pytest.warns(NonFiniteWarning, match=r"1 of 3 images \(index 1\)") as record:
            out = _all(model, x, target=1, max_batch=max_batch)
        assert len(record) == 1
        assert out.nonfinite.tolist() == [False, True, False]
        for maps in (out.cams["gradcam"], out.guided_cams["gradcam"]):
            assert torch.isnan(maps["block2"][1]).all()
            assert torch.isfinite(maps["block2"][[0, 2]]).all()
        assert torch.isnan(out.guided[1]).all()
        keep = [0, 2]
        torch.testing.assert_close(out.cams["gradcam"]["block2"][keep],
                                   clean.cams["gradcam"]["block2"][keep])
        torch.testing.assert_close(out.guided[keep], clean.guided[keep])


def test_finite_calls_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _all(_net(), _images())
    assert not out.nonfinite.any()


class HugeNet(nn.Module):
    """A layer whose activations are finite but so large that their sum overflows float32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.big = nn.Identity()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.big(F.relu(self.conv(x)) * 1e37 + 1e37)
        return self.fc((h * 1e-37).mean(dim=(2, 3)))


def test_finite_values_whose_sum_overflows_are_not_non_finite() -> None:
    # the finiteness check reads per-row sums first: an overflowing sum of finite values must
    # fall back to the exact check, not mark the sample
    torch.manual_seed(0)
    model, x = HugeNet().eval(), _images(2)
    assert not torch.isfinite(model.big(model.conv(x)).mul(1e37).add(1e37).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = lc.Explainer(model, "big", methods=("gradcam",))(x, target=1)
        scores, _ = lc.Explainer(model, "big", methods=("gradcam",)).explain_scores(
            x[:1], lambda o: o[0, :3])
    assert out.nonfinite.tolist() == [False, False]
    assert scores.nonfinite.tolist() == [False, False, False]
    assert torch.isfinite(out.cams["gradcam"]["big"]).all()


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


class Aliased(Net):
    def __init__(self) -> None:
        super().__init__()
        self.cam_layer = self.block2  # the same module under a second name


def test_aliased_submodule_is_accepted_under_every_name() -> None:
    torch.manual_seed(0)
    model = Aliased().eval()
    x = _images()
    expected = lc.GradCAM(model, "block2")(x)
    torch.testing.assert_close(lc.GradCAM(model, "cam_layer")(x), expected)
    torch.testing.assert_close(lc.GradCAM(model, "cam_layer.0")(x),
                               lc.GradCAM(model, "block2.0")(x))


def test_layer_with_a_1x1_output_is_refused() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"'avgpool' outputs shape \(1, 512, 1, 1\): a 1 x 1"):
        lc.GradCAM(model, "avgpool")(x)
    with pytest.raises(ValueError, match=r"'layer4' outputs shape \(1, 512, 1, 1\)"):
        lc.GradCAM(model, "layer4")(torch.rand(1, 3, 16, 16))


def test_default_layer_is_found_for_each_input_size() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    cam = lc.GradCAM(model)
    cam(torch.rand(1, 3, 8, 8))  # layer4 (and layer3) are 1 x 1 here
    assert cam.layers is not None and cam.layers != ["layer4"]
    big = torch.rand(1, 3, 96, 96)
    torch.testing.assert_close(cam(big), lc.GradCAM(model, "layer4")(big))
    assert cam.layers == ["layer4"]


# ---------------------------------------------------------------------------------------------
# More of the same kind: shared layers, in-place ops, wrappers, layouts, dtypes, hooks, training
# ---------------------------------------------------------------------------------------------


class Twice(nn.Module):
    """The same conv block used twice; an in-place ReLU after the layer."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 4)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(F.relu(self.stem(x)))
        h = F.relu(h, inplace=self.inplace)
        h = F.relu(self.shared(h), inplace=self.inplace)
        return self.fc(h.mean(dim=(2, 3)))


def test_layer_used_twice_sums_the_cams_of_both_calls() -> None:
    torch.manual_seed(0)
    model = Twice().eval()
    x = _images()
    # Independent computation: full graph, both outputs recorded, total derivatives.
    outs: list[torch.Tensor] = []
    handle = model.shared.register_forward_hook(lambda m, i, o: outs.append(o))
    score = model(x)[:, 1].sum()
    handle.remove()
    grads = torch.autograd.grad(score, outs)
    raw = sum(
        F.interpolate(
            F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True)),
            size=x.shape[2:], mode="bilinear", align_corners=False,
        )[:, 0]
        for a, g in zip(outs, grads, strict=True)
    )
    flat = raw.detach().flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    expected = ((flat - lo) / (hi - lo)).view_as(raw)
    torch.testing.assert_close(lc.GradCAM(model, "shared")(x, target=1), expected,
                               rtol=1e-5, atol=1e-6)


def test_in_place_ops_after_the_layer_change_nothing() -> None:
    torch.manual_seed(0)
    plain = Twice().eval()
    inplace = Twice(inplace=True).eval()
    inplace.load_state_dict(plain.state_dict())
    x = _images()
    _assert_same_explanation(_all(inplace, x, "shared"), _all(plain, x, "shared"))


def test_data_parallel_wrapper() -> None:
    model = _net()
    x = _images()
    expected = _all(model, x)
    wrapped = nn.DataParallel(model)
    for layer in ("module.block2", "block2"):
        _assert_same_explanation(_all(wrapped, x, layer), expected)


def test_channels_last_model_and_input() -> None:
    model = _net()
    x = _images()
    expected = _all(model, x)
    model = model.to(memory_format=torch.channels_last)
    _assert_same_explanation(_all(model, x.to(memory_format=torch.channels_last)), expected,
                             rtol=1e-4, atol=1e-5)


def test_float64_and_bfloat16_models() -> None:
    model = _net()
    x = _images()
    expected = _all(model, x, target=1)
    double = _all(_net().double(), x.double(), target=1)
    _assert_same_explanation(double, expected, rtol=1e-4, atol=1e-5)
    half = _all(_net().bfloat16(), x.bfloat16(), target=1)
    for out in (double, half):
        assert out.cams["gradcam"]["block2"].dtype == torch.float32
        assert out.guided is not None and out.guided.dtype == torch.float32
    got, ref = half.cams["gradcam"]["block2"], expected.cams["gradcam"]["block2"]
    assert torch.isfinite(got).all()
    assert (got - ref).abs().mean() < 0.05  # bf16 keeps ~3 significant digits


def test_inputs_that_require_grad_are_left_alone() -> None:
    model = _net()
    x = _images().requires_grad_(True)
    expected = _all(model, x.detach())
    _assert_same_explanation(_all(model, x), expected)
    assert x.requires_grad and x.grad is None and x.is_leaf


def test_users_hooks_stay_and_their_effect_is_explained() -> None:
    model = _net()
    x = _images()
    seen: list[tuple[int, ...]] = []
    model.block1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    model.block2.register_forward_hook(lambda m, i, o: o * 2.0)  # changes the output
    out = _all(model, x)
    assert seen and len(model.block1._forward_hooks) == len(model.block2._forward_hooks) == 1
    reference = _net()
    reference.block3[0].weight.data.mul_(2.0)  # same as doubling block2's output
    _assert_same_explanation(out, _all(reference, x), rtol=1e-4, atol=1e-5)


def test_between_backward_and_optimizer_step_nothing_changes() -> None:
    def run(explain_midway: bool) -> list[torch.Tensor]:
        model = _net().train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = _images(4, seed=3), torch.tensor([0, 1, 2, 3])
        for _ in range(2):
            opt.zero_grad()
            logits = model(x)
            if explain_midway:
                _all(model, x)  # between the training forward and its backward
            F.cross_entropy(logits, y).backward()
            if explain_midway:
                _all(model, x)  # between backward and step
            opt.step()
        return [t.detach().clone() for t in (*model.parameters(), *model.buffers())]

    for a, b in zip(run(True), run(False), strict=True):
        assert torch.equal(a, b)
