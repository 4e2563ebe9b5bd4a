"""The engine: default layers, batch consistency, hygiene (the model is borrowed), bad input."""

from collections import namedtuple
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.layers import default_layer
from tests.reference import class_score, minmax, reference_gradcam

# ---------------------------------------------------------------------------------------------
# Default layer for the seed networks
# ---------------------------------------------------------------------------------------------

SEED_DEFAULTS = {
    "vgg16": ("features", 64),
    "vgg19": ("features", 64),
    "resnet50": ("layer4", 64),
    "resnet101": ("layer4", 64),
    "densenet121": ("features", 64),
    "inception_v3": ("Mixed_7c", 299),
    "mobilenet_v2": ("features", 64),
    "shufflenet_v2_x1_0": ("conv5", 64),
}


@pytest.mark.parametrize("name", sorted(SEED_DEFAULTS))
def test_default_layer_of_seed_networks(name: str) -> None:
    expected, size = SEED_DEFAULTS[name]
    kwargs = {"init_weights": False} if name == "inception_v3" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    assert default_layer(model, torch.rand(1, 3, size, size)) == expected


def test_default_layer_is_used_and_reported() -> None:
    model = torchvision.models.resnet18(weights=None)
    cam = lc.GradCAM(model)
    x = torch.rand(1, 3, 64, 64)
    maps = cam(x)
    assert cam.layers == ["layer4"]
    assert maps.shape == (1, 64, 64)
    # the 2x2 layer4 map of the predicted class, bilinearly resized, then scaled
    pred = int(model.eval()(x).argmax(1))
    ref = reference_gradcam(model, model.layer4, x, class_score(pred), size=(64, 64))
    torch.testing.assert_close(maps, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """conv-BN-ReLU x2 -> GAP -> linear, with a dropout and a flag to raise mid-forward."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, num_classes)
        self.explode = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        h = self.block2(h)
        if self.explode:
            raise RuntimeError("boom inside the model")
        return self.fc(self.drop(h.mean(dim=(2, 3))))


def test_maps_shape_dtype_range_device() -> None:
    model = TinyNet()
    x = torch.rand(3, 3, 12, 10)
    maps = lc.GradCAM(model, "block2")(x)
    assert maps.shape == (3, 12, 10) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    small = lc.GradCAMPlusPlus(model, "block1.0")(x, upsample=False)
    assert small.shape == (3, 12, 10)
    # block2 -> GAP -> (eval: no dropout) fc: Grad-CAM is CAM with the predicted class's weights
    model.eval()
    with torch.no_grad():
        feats = model.block2(model.block1(x))
        pred = model(x).argmax(1)
        cam = torch.einsum("bkij,bk->bij", feats, model.fc.weight[pred]).relu()
    lo = cam.flatten(1).min(1).values.view(-1, 1, 1)
    hi = cam.flatten(1).max(1).values.view(-1, 1, 1)
    torch.testing.assert_close(maps, (cam - lo) / (hi - lo), rtol=1e-4, atol=1e-5)
    assert small.amax((1, 2)).tolist() == [1.0] * 3 and small.amin((1, 2)).tolist() == [0.0] * 3


def test_several_layers_give_a_dict() -> None:
    model = TinyNet()
    maps = lc.GradCAM(model, ["block1", "block2"])(torch.rand(2, 3, 8, 8))
    assert isinstance(maps, dict) and sorted(maps) == ["block1", "block2"]
    one = lc.GradCAM(model, "block1")(torch.rand(2, 3, 8, 8))
    assert isinstance(one, torch.Tensor)


def test_layer_as_module() -> None:
    model = TinyNet()
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(lc.GradCAM(model, model.block2)(x), lc.GradCAM(model, "block2")(x))


def test_explain_one_pass_equals_separate_calls() -> None:
    model = torchvision.models.resnet18(weights=None)
    x = torch.rand(2, 3, 64, 64)
    out = lc.explain(model, x, ["layer3", "layer4"], target=[3, 4], guided_backprop=True)
    for layer in ("layer3", "layer4"):
        torch.testing.assert_close(
            out.cams["gradcam"][layer], lc.GradCAM(model, layer)(x, target=[3, 4])
        )
        torch.testing.assert_close(
            out.cams["gradcam++"][layer], lc.GradCAMPlusPlus(model, layer)(x, target=[3, 4])
        )
    assert out.class_ids is not None and out.class_ids.tolist() == [3, 4]
    assert out.logits is not None and out.logits.shape == (2, 1000)
    assert out.scores is not None
    torch.testing.assert_close(out.scores, out.logits[[0, 1], [3, 4]])


def test_batch_consistency() -> None:
    model = torchvision.models.resnet18(weights=None)
    x = torch.rand(4, 3, 64, 64)
    for cls in (lc.GradCAM, lc.GradCAMPlusPlus):
        batch = cls(model, "layer4")(x)
        for i in range(4):
            alone = cls(model, "layer4")(x[i : i + 1])
            torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "target", [None, 7, [1, 2, 3, 4, 5], torch.tensor([5, 4, 3, 2, 1]), lambda out: out[:, 9]]
)
def test_max_batch_gives_the_same_results_in_chunks(target: Any) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(5, 3, 48, 48)
    kw = {"layer": ["layer3", "layer4"], "target": target, "guided_gradcam": True}
    whole = lc.explain(model, x, **kw)
    chunks = lc.explain(model, x, max_batch=2, **kw)  # 2 + 2 + 1
    for method in ("gradcam", "gradcam++"):
        for layer in ("layer3", "layer4"):
            torch.testing.assert_close(
                chunks.cams[method][layer], whole.cams[method][layer], rtol=1e-4, atol=1e-5
            )
            torch.testing.assert_close(
                chunks.guided_cams[method][layer], whole.guided_cams[method][layer],
                rtol=1e-4, atol=1e-6,
            )
    torch.testing.assert_close(chunks.guided, whole.guided, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(chunks.scores, whole.scores, rtol=1e-4, atol=1e-5)
    if whole.class_ids is not None:
        assert torch.equal(chunks.class_ids, whole.class_ids)
    gb = lc.GuidedBackprop(model, max_batch=1)(x, target=target)
    torch.testing.assert_close(gb, whole.guided, rtol=1e-4, atol=1e-6)


def test_max_batch_checks_its_value_and_the_whole_target_length() -> None:
    model = TinyNet()
    with pytest.raises(ValueError, match="max_batch must be None or an int >= 1, got 0"):
        lc.GradCAM(model, max_batch=0)
    with pytest.raises(ValueError, match="target has 3 class ids but the batch has 4 images"):
        lc.GradCAM(model, max_batch=2)(torch.rand(4, 3, 8, 8), target=[0, 1, 2])


def test_predicted_class_is_default_target() -> None:
    model = TinyNet()
    x = torch.rand(3, 3, 8, 8)
    out = lc.explain(model, x, "block2")
    model.eval()
    assert out.class_ids is not None
    assert out.class_ids.tolist() == model(x).argmax(1).tolist()


def test_callable_target() -> None:
    model = TinyNet()
    x = torch.rand(2, 3, 8, 8)
    via_callable = lc.GradCAM(model, "block2")(x, target=lambda out: out[:, 1] - out[:, 0])
    assert via_callable.shape == (2, 8, 8)
    ref = reference_gradcam(model, model.block2, x, lambda out: out[:, 1] - out[:, 0])
    torch.testing.assert_close(via_callable, ref, rtol=1e-4, atol=1e-5)
    # the score is linear in the logits: its map is CAM with the weight difference
    model.eval()
    with torch.no_grad():
        feats = model.block2(model.block1(x))
        diff = model.fc.weight[1] - model.fc.weight[0]
        cam = torch.einsum("bkij,k->bij", feats, diff).relu()
    torch.testing.assert_close(via_callable, minmax(cam), rtol=1e-4, atol=1e-5)


def test_tensor_target_and_mixed_precision() -> None:
    model = TinyNet()
    x = torch.rand(2, 3, 8, 8)
    ref = lc.GradCAM(model, "block2")(x, target=torch.tensor([1, 2]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = lc.GradCAM(model, "block2")(x, target=torch.tensor([1, 2]))
    assert bf.dtype == torch.float32
    assert (bf - ref).abs().max() < 0.1


def test_namedtuple_output_uses_logits() -> None:
    Out = namedtuple("Out", ["logits", "aux"])

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyNet()

        def forward(self, x: torch.Tensor) -> Any:
            y = self.net(x)
            return Out(y, y * 0)

    model = Wrapped()
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(
        lc.GradCAM(model, "net.block2")(x, target=1), lc.GradCAM(model.net, "block2")(x, target=1)
    )


def test_inception_v3_in_eval_mode() -> None:
    model = torchvision.models.inception_v3(weights=None, init_weights=False, aux_logits=True)
    maps = lc.GradCAM(model)(torch.rand(1, 3, 299, 299))
    assert maps.shape == (1, 299, 299)
    assert model.training  # restored


# ---------------------------------------------------------------------------------------------
# Hygiene: the model is borrowed
# ---------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[nn.Module, torch.Tensor], Any]] = {
    "gradcam": lambda m, x: lc.GradCAM(m, "block2")(x),
    "gradcam++": lambda m, x: lc.GradCAMPlusPlus(m, "block2")(x),
    "guided_backprop": lambda m, x: lc.GuidedBackprop(m)(x),
    "guided_gradcam": lambda m, x: lc.GuidedGradCAM(m, "block2")(x),
    "guided_gradcam++": lambda m, x: lc.GuidedGradCAM(m, "block2", method="gradcam++")(x),
    "explain_all": lambda m, x: lc.explain(m, x, ["block1", "block2"], guided_gradcam=True),
}


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
    }


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def _prepare(model: TinyNet) -> None:
    model.train()
    model.block1.eval()  # mixed flags
    model.block1[0].weight.requires_grad_(False)  # partly frozen
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.25)  # pre-filled gradients must survive


def _assert_same(before: dict[str, Any], model: nn.Module) -> None:
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for a, b in zip(after["grads"], before["grads"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in zip(
        after["params"] + after["buffers"], before["params"] + before["buffers"], strict=True
    ):
        assert torch.equal(a, b)
    assert _hooks(model) == 0


@pytest.mark.parametrize("method", sorted(RUNNERS))
def test_hygiene_after_success(method: str) -> None:
    model = TinyNet()
    _prepare(model)
    before = _snapshot(model)
    grad_mode = torch.is_grad_enabled()
    RUNNERS[method](model, torch.rand(2, 3, 8, 8))
    _assert_same(before, model)
    assert torch.is_grad_enabled() == grad_mode


@pytest.mark.parametrize("method", sorted(RUNNERS))
def test_hygiene_after_exception_in_model(method: str) -> None:
    model = TinyNet()
    _prepare(model)
    model.explode = True
    before = _snapshot(model)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="boom inside the model"):
            RUNNERS[method](model, torch.rand(2, 3, 8, 8))
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    _assert_same(before, model)


@pytest.mark.parametrize("method", sorted(RUNNERS))
def test_under_no_grad_inference_mode_and_frozen(method: str) -> None:
    model = TinyNet()
    x = torch.rand(2, 3, 8, 8)
    ref = RUNNERS[method](model, x)
    with torch.no_grad():
        under_no_grad = RUNNERS[method](model, x)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        xi = torch.rand(2, 3, 8, 8).copy_(x)  # an inference tensor
        under_inference = RUNNERS[method](model, xi)
        assert torch.is_inference_mode_enabled()
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = RUNNERS[method](model, x)
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    for other in (under_no_grad, under_inference, frozen):
        if isinstance(ref, lc.Explanation):
            ref_t, other_t = (
                ref.guided_cams["gradcam"]["block2"],
                other.guided_cams["gradcam"]["block2"],
            )
        else:
            ref_t, other_t = ref, other
        torch.testing.assert_close(other_t, ref_t)
    assert _hooks(model) == 0


def test_hygiene_after_bad_target() -> None:
    model = TinyNet()
    _prepare(model)
    before = _snapshot(model)
    with pytest.raises(ValueError):
        lc.GradCAM(model, "block2")(torch.rand(2, 3, 8, 8), target=99)
    _assert_same(before, model)


def test_engine_does_not_record_below_the_target_layer() -> None:
    """Near the floor: no autograd graph is built for the part before the first target layer."""
    model = TinyNet()
    seen: list[bool] = []
    model.block1.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    lc.GradCAM(model, "block2")(torch.rand(1, 3, 8, 8))
    assert seen == [False]


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_unknown_layer_lists_close_names() -> None:
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match=r"Unknown layer 'layer5'.*Closest layer names: layer\d"):
        lc.GradCAM(model, "layer5")


def test_layer_not_reached() -> None:
    class Branchy(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.unused = nn.Conv2d(3, 3, 1)

    with pytest.raises(ValueError, match="'unused' was never called during the forward pass"):
        lc.GradCAM(Branchy(), "unused")(torch.rand(1, 3, 8, 8))


def test_non_spatial_layer() -> None:
    with pytest.raises(ValueError, match=r"Layer 'fc' outputs shape \(1, 5\), not a spatial"):
        lc.GradCAM(TinyNet(), "fc")(torch.rand(1, 3, 8, 8))


def test_foreign_module_as_layer() -> None:
    with pytest.raises(ValueError, match="not a submodule"):
        lc.GradCAM(TinyNet(), nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize(
    ("images", "exc", "match"),
    [
        # A 3-D tensor is a batch of signals (B, C, L); for a 2-D model, one image unbatched.
        (torch.rand(3, 8, 8), ValueError, r"shape \(3, 8, 8\).*one image.*images\[None\]"),
        (torch.rand(8, 8), ValueError, r"got \(8, 8\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, "floating-point"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images(images: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        lc.GradCAM(TinyNet(), "block2")(images)


def test_bad_targets() -> None:
    cam = lc.GradCAM(TinyNet(num_classes=5), "block2")
    x = torch.rand(3, 3, 8, 8)
    with pytest.raises(
        ValueError, match=r"class id 5 is out of range .* 5 classes \(valid ids: 0..4\)"
    ):
        cam(x, target=5)
    with pytest.raises(ValueError, match="class id -1 is out of range"):
        cam(x, target=[0, -1, 2])
    with pytest.raises(ValueError, match="target has 2 class ids but the batch has 3 images"):
        cam(x, target=[0, 1])
    with pytest.raises(ValueError, match=r"one score per image, shape \(3,\); got \(3, 5\)"):
        cam(x, target=lambda out: out)
    with pytest.raises(TypeError, match="target must be None, an int"):
        cam(x, target=1.5)  # type: ignore[arg-type]


def test_tuple_output_without_logits_is_explained() -> None:
    class Pair(TinyNet):
        def forward(self, x: torch.Tensor) -> Any:
            y = super().forward(x)
            return (y, y)

    with pytest.raises(TypeError, match="Cannot find class logits.*target=callable"):
        lc.GradCAM(Pair(), "block2")(torch.rand(1, 3, 8, 8))
    pair, x = Pair(), torch.rand(1, 3, 8, 8)
    maps = lc.GradCAM(pair, "block2")(x, target=lambda o: o[0][:, 0])
    assert maps.shape == (1, 8, 8)
    ref = reference_gradcam(pair, pair.block2, x, lambda o: o[0][:, 0])
    torch.testing.assert_close(maps, ref, rtol=1e-4, atol=1e-5)
    plain = TinyNet()
    plain.load_state_dict(pair.state_dict())
    torch.testing.assert_close(maps, lc.GradCAM(plain, "block2")(x, target=0))


# ---------------------------------------------------------------------------------------------
# One map per score (detection-style targets)
# ---------------------------------------------------------------------------------------------


def test_explain_scores_matches_one_call_per_target() -> None:
    model = torchvision.models.resnet18(weights=None)
    x = torch.rand(2, 3, 64, 64)
    pairs = [(0, 3), (1, 7), (0, 9)]  # (image, class) for K = 3 scores

    def score_fn(out: torch.Tensor) -> torch.Tensor:
        return torch.stack([out[b, c] for b, c in pairs])

    engine = lc.Explainer(model, "layer4", methods=("gradcam", "gradcam++"), guided_gradcam=True)
    result, output = engine.explain_scores(x, score_fn, batch_index=[b for b, _ in pairs])
    assert output.shape == (2, 1000)
    assert result.cams["gradcam"]["layer4"].shape == (3, 64, 64)
    assert result.guided is not None and result.guided.shape == (3, 3, 64, 64)
    for k, (b, c) in enumerate(pairs):
        for method, cls in (("gradcam", lc.GradCAM), ("gradcam++", lc.GradCAMPlusPlus)):
            alone = cls(model, "layer4")(x[b : b + 1], target=c)[0]
            torch.testing.assert_close(
                result.cams[method]["layer4"][k], alone, rtol=1e-4, atol=1e-5
            )
        gb = lc.GuidedBackprop(model)(x[b : b + 1], target=c)[0]
        torch.testing.assert_close(result.guided[k], gb, rtol=1e-4, atol=1e-7)


def test_explain_scores_bad_index_and_empty() -> None:
    model = TinyNet()
    engine = lc.Explainer(model, "block2")
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="pass batch_index"):
        engine.explain_scores(x, lambda out: out[0, :3])
    with pytest.raises(ValueError, match=r"batch_index must hold 3 image indices in 0..1"):
        engine.explain_scores(x, lambda out: out[0, :3], batch_index=[0, 1, 2])
    result, _ = engine.explain_scores(x, lambda out: out[0, :0], batch_index=[])
    assert result.cams["gradcam"]["block2"].shape == (0, 8, 8)
    assert _hooks(model) == 0


def test_borrowed_restores_mixed_training_flags() -> None:
    """Only modules in training mode are switched, and exactly those are switched back."""
    from lightning_cam.engine import borrowed

    model = torchvision.models.resnet18(weights=None).eval()
    model.layer2.train()
    model.fc.train()
    before = {n: m.training for n, m in model.named_modules()}
    with borrowed(model):
        assert not any(m.training for m in model.modules())
    assert {n: m.training for n, m in model.named_modules()} == before
    with pytest.raises(RuntimeError, match="boom"), borrowed(model):
        raise RuntimeError("boom")
    assert {n: m.training for n, m in model.named_modules()} == before
