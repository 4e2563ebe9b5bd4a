"""Signals (B, C, L) and volumes / videos (B, C, D, H, W) through the engine.

Numbers, not shapes: Grad-CAM of 1-D and 3-D one-conv models computed by hand (upsampling
included, by separable ``numpy.interp``, independent of torch's linear / trilinear modes); every
registered method on a 1-D and a 3-D model equal to the same method on the 2-D model they embed
(a 3-D model whose kernels have depth 1 on a depth-1 volume *is* a 2-D model, a 1-D model on
``L`` samples is a 2-D model on a ``1 x L`` image; the 2-D path is checked against the peers in
tests/methods); guided backprop of 1-D and 3-D models by hand and by the same embedding; the
refusals that keep an N-D map from being silently wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lightning_cam as lc
from lightning_cam.methods import METHODS

# ----------------------------------------------------------------------------- by hand


def _interp_axis(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear resize of one axis with half-pixel centres (align_corners=False), by numpy."""
    n = values.shape[axis]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    return np.apply_along_axis(lambda v: np.interp(src, np.arange(n), v), axis, values)


def _resize(m: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Separable linear / bilinear / trilinear resize of ``m`` ``(*spatial)`` to ``size``."""
    for axis, s in enumerate(size):
        m = _interp_axis(m, s, axis)
    return m


def _one_conv(conv: nn.Module, pool: nn.Module, weights: list[list[float]]) -> nn.Sequential:
    """conv (1 x ... x 1, two channels: x and 5 - x) -> ReLU -> global pool -> linear."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight.view(2, -1)[:, 0] = torch.tensor([1.0, -1.0])
        conv.bias.copy_(torch.tensor([0.0, 5.0]))
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weights))
        lin.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), lin).eval()


def test_gradcam_of_a_signal_by_hand() -> None:
    # A = [x, 5 - x] on x = 1..4 (all positive, so the ReLU passes them); y_0 = mean A_0 +
    # 2 mean A_1: Grad-CAM weights (1/4, 2/4), map ReLU(x/4 + (5 - x)/2) = 2.5 - x/4.
    model = _one_conv(nn.Conv1d(1, 2, 1), nn.AdaptiveAvgPool1d(1), [[1.0, 2.0], [0.0, 1.0]])
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    raw = lc.GradCAM(model, layer="1", normalize=False)(x, target=0)
    torch.testing.assert_close(raw, torch.tensor([[2.25, 2.0, 1.75, 1.5]]))
    norm = lc.GradCAM(model, layer="1")(x, target=0)
    torch.testing.assert_close(norm, torch.tensor([[1.0, 2 / 3, 1 / 3, 0.0]]))


def test_gradcam_of_a_strided_signal_is_linearly_upsampled() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
        nn.Flatten(), nn.Linear(4, 3),
    ).eval()
    x = torch.randn(2, 2, 13)
    acts = torch.relu(model[0](x)).detach()  # (2, 4, 7)
    w = model[4].weight.detach() / acts.shape[-1]  # d y_c / d A_k(l) = W[c, k] / L
    maps = torch.relu(torch.einsum("ck,bkl->cbl", w, acts))
    c = int(maps.flatten(1).amax(1).argmax())  # the class with the most evidence
    low = maps[c].numpy()
    want = np.stack([_resize(m, (13,)) for m in low])
    got = lc.GradCAM(model, layer="1", normalize=False)(x, target=c)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    assert got.shape == (2, 13) and want.max() > 0


def test_gradcam_of_a_volume_by_hand_trilinear() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv3d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
        nn.Flatten(), nn.Linear(3, 2),
    ).eval()
    x = torch.randn(2, 1, 6, 8, 10)
    # By hand: activations, d y / d A = W[c, k] / (d h w), weighted sum, ReLU, trilinear resize.
    acts = torch.relu(model[0](x)).detach()  # (2, 3, 3, 4, 5)
    w = model[4].weight.detach()[0] / acts[0, 0].numel()
    low = torch.relu((w[None, :, None, None, None] * acts).sum(1)).numpy()
    want = np.stack([_resize(m, (6, 8, 10)) for m in low])
    got = lc.explain(model, x, "1", methods=["gradcam"], target=0, normalize=False)
    np.testing.assert_allclose(got.cam("gradcam").numpy(), want, rtol=1e-5, atol=1e-6)
    # Normalised: min-max per volume; at the layer's resolution with upsample=False.
    flat = want.reshape(2, -1)
    span = flat.max(1, keepdims=True) - flat.min(1, keepdims=True)
    norm = ((flat - flat.min(1, keepdims=True)) / span).reshape(want.shape)
    np.testing.assert_allclose(lc.GradCAM(model, "1")(x, target=0).numpy(), norm, atol=1e-5)
    small = lc.GradCAM(model, "1", normalize=False)(x, target=0, upsample=False)
    np.testing.assert_allclose(small.numpy(), low, rtol=1e-5, atol=1e-6)


def test_video_gradcam_by_hand_with_a_temporal_stride_of_its_own() -> None:
    # (B, C, T, H, W): time stride 1, space stride 2: the map is resized per axis.
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv3d(3, 4, (3, 3, 3), stride=(1, 2, 2), padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 5),
    ).eval()
    clip = torch.rand(1, 3, 4, 12, 12)
    a = model[0](clip).relu().detach().requires_grad_(True)
    score = model[4](a.mean(dim=(2, 3, 4)))[:, 3].sum()
    (g,) = torch.autograd.grad(score, a)  # an independent backward, by hand
    low = torch.relu((g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1)).detach().numpy()
    want = _resize(low[0], (4, 12, 12))[None]
    got = lc.GradCAM(model, "1", normalize=False)(clip, target=3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- every method


class Net2d(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> GAP -> linear, with kernel (kh, kw)."""

    def __init__(self, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, kernel, stride=2, padding=(kernel[0] // 2, kernel[1] // 2))
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act2(self.conv2(self.act1(self.conv1(x))))).flatten(1))


def _embedded(net2d: Net2d, rank: int) -> nn.Module:
    """The same network on signals (rank 1: kernels (1, k) become k) or on depth-1 volumes
    (rank 3: kernels (kh, kw) become (1, kh, kw))."""
    conv = nn.Conv1d if rank == 1 else nn.Conv3d
    pool = nn.AdaptiveAvgPool1d(1) if rank == 1 else nn.AdaptiveAvgPool3d(1)
    out = Net2d((1, 3))
    for name in ("conv1", "conv2"):
        c2: nn.Conv2d = getattr(net2d, name)
        kernel = c2.kernel_size[1] if rank == 1 else (1, *c2.kernel_size)
        stride = c2.stride[1] if rank == 1 else (1, *c2.stride)
        padding = c2.padding[1] if rank == 1 else (0, *c2.padding)
        c = conv(c2.in_channels, c2.out_channels, kernel, stride=stride, padding=padding)
        with torch.no_grad():
            w = c2.weight[:, :, 0] if rank == 1 else c2.weight[:, :, None]
            c.weight.copy_(w)
            c.bias.copy_(c2.bias)
        setattr(out, name, c)
    out.pool = pool
    out.fc.load_state_dict(net2d.fc.state_dict())
    return out.eval()


@pytest.mark.parametrize("rank", [1, 3])
def test_every_registry_method_equals_the_2d_model_it_embeds(rank: int) -> None:
    torch.manual_seed(3)
    net2d = Net2d((1, 3) if rank == 1 else (3, 3)).eval()
    model = _embedded(net2d, rank)
    x2 = torch.randn(2, 2, 1, 15) if rank == 1 else torch.randn(2, 2, 9, 11)
    x = x2[:, :, 0] if rank == 1 else x2[:, :, None]
    for layer in ("act2", ["act1", "act2"]):
        # CAM reads the head after its layer: only the last one has it. LeGrad needs a ViT.
        methods = [m for m in METHODS if (m != "cam" or layer == "act2") and m != "legrad"]
        kw = dict(layer=layer, methods=methods, target=[1, 2], normalize=False)
        ref = lc.explain(net2d, x2, **kw, fuse="mean" if isinstance(layer, list) else None)
        got = lc.explain(model, x, **kw, fuse="mean" if isinstance(layer, list) else None)
        for m in methods:
            for n, want in ref.cams[m].items():
                want = want[:, 0] if rank == 1 else want[:, None]
                assert got.cams[m][n].shape == x.shape[:1] + x.shape[2:], (m, n)
                torch.testing.assert_close(got.cams[m][n], want, rtol=1e-4, atol=1e-5,
                                           msg=f"{m} {n}")
            if ref.fused:
                want = ref.fused[m][:, 0] if rank == 1 else ref.fused[m][:, None]
                torch.testing.assert_close(got.fused[m], want, rtol=1e-4, atol=1e-5)
    # At the layer's own resolution too.
    ref = lc.explain(net2d, x2, "act2", methods=["gradcam", "scorecam"], upsample=False)
    got = lc.explain(model, x, "act2", methods=["gradcam", "scorecam"], upsample=False)
    for m in ("gradcam", "scorecam"):
        want = ref.cam(m)[:, 0] if rank == 1 else ref.cam(m)[:, None]
        torch.testing.assert_close(got.cam(m), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 3])
def test_guided_backprop_and_guided_gradcam_equal_the_embedded_2d_model(rank: int) -> None:
    torch.manual_seed(4)
    net2d = Net2d((1, 3) if rank == 1 else (3, 3)).eval()
    model = _embedded(net2d, rank)
    x2 = torch.randn(2, 2, 1, 15) if rank == 1 else torch.randn(2, 2, 9, 11)
    x = x2[:, :, 0] if rank == 1 else x2[:, :, None]
    ref = lc.explain(net2d, x2, "act2", methods=["gradcam"], target=0, guided_gradcam=True)
    got = lc.explain(model, x, "act2", methods=["gradcam"], target=0, guided_gradcam=True)
    squeeze = (lambda t: t[:, :, 0]) if rank == 1 else (lambda t: t[:, :, None])
    assert ref.guided is not None and got.guided is not None
    torch.testing.assert_close(got.guided, squeeze(ref.guided), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        got.guided_cams["gradcam"]["act2"], squeeze(ref.guided_cams["gradcam"]["act2"]),
        rtol=1e-4, atol=1e-6,
    )
    assert float(got.guided.abs().max()) > 0


@pytest.mark.parametrize("rank", [1, 3])
def test_guided_backprop_by_hand(rank: int) -> None:
    # x -> 1x..x1 conv (2 channels: x, 5 - x... with a sign so some inputs are negative) ->
    # ReLU -> mean -> linear. Guided: the ReLU passes grad where its input > 0 and grad > 0.
    conv = nn.Conv1d(1, 2, 1) if rank == 1 else nn.Conv3d(1, 2, 1)
    pool = nn.AdaptiveAvgPool1d(1) if rank == 1 else nn.AdaptiveAvgPool3d(1)
    model = _one_conv(conv, pool, [[1.0, -2.0], [0.5, 1.0]])
    x = torch.linspace(-2, 7, 12).view(1, 1, 12) if rank == 1 else torch.linspace(
        -2, 7, 24).view(1, 1, 2, 3, 4)
    gb = lc.GuidedBackprop(model)(x, target=0)
    pre = torch.stack([x[:, 0], 5 - x[:, 0]], dim=1)  # the conv's output
    n = x[0, 0].numel()
    upstream = torch.tensor([1.0, -2.0]).view(1, 2, *([1] * rank)) / n  # d y_0 / d ReLU out
    passed = torch.where((pre > 0) & (upstream > 0), upstream, torch.zeros(()))
    want = (passed * torch.tensor([1.0, -1.0]).view(1, 2, *([1] * rank))).sum(1, keepdim=True)
    torch.testing.assert_close(gb, want)
    assert gb.shape == x.shape and float(gb.abs().sum()) > 0


# ----------------------------------------------------------------------------- other surfaces


def test_engine_targets_on_volumes() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    x = torch.randn(2, 1, 4, 6, 6)
    a = model[1](model[0](x)).detach()

    def by_hand(weights: torch.Tensor) -> torch.Tensor:
        """Grad-CAM for a score whose gradient w.r.t. the pooled features is ``weights``."""
        w = weights / a[0, 0].numel()
        return torch.relu((w[:, :, None, None, None] * a).sum(1))

    lin = model[4].weight.detach()
    # Regression on output 2, decreasing: the score is -y_2.
    reg = lc.explain(model, x, "1", ["gradcam"], target=lc.RegressionTarget(2, "decrease"),
                     normalize=False)
    torch.testing.assert_close(reg.cam(), by_hand(-lin[2].expand(2, -1)), rtol=1e-5, atol=1e-6)
    # Embedding similarity to a concept vector: d cos(e, r) / d e through the linear layer.
    ref = torch.randn(3)
    emb = lc.explain(model, x, "1", ["gradcam"], target=lc.EmbeddingTarget(ref),
                     normalize=False)
    e = model(x).detach().requires_grad_(True)
    (ge,) = torch.autograd.grad(torch.cosine_similarity(e, ref[None], dim=1).sum(), e)
    torch.testing.assert_close(emb.cam(), by_hand(ge @ lin), rtol=1e-5, atol=1e-6)
    # Multi-label: one map per given label, from one batched backward.
    ml = lc.explain_multilabel(model, x, labels=[[0, 2], [1]], layer="1", methods=["gradcam"])
    assert ml.explanation.cam().shape == (3, 4, 6, 6)
    one = lc.explain(model, x[:1], "1", ["gradcam"], target=2).cam()
    torch.testing.assert_close(ml.explanation.cam()[1:2], one, rtol=1e-5, atol=1e-6)


def test_binary_head_on_signals() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        nn.Linear(4, 1),
    ).eval()
    x = torch.randn(2, 1, 16)
    pos = lc.explain(model, x, "1", ["hirescam"], target=lc.targets.BinaryTarget(),
                     normalize=False).cam("hirescam")
    neg = lc.explain(model, x, "1", ["hirescam"], target=lc.targets.BinaryTarget(True),
                     normalize=False).cam("hirescam")
    a = model[1](model[0](x)).detach()
    contrib = (model[4].weight.detach()[0][None, :, None] * a).sum(1) / 16  # HiRes: g * A
    torch.testing.assert_close(pos, torch.relu(contrib), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(neg, torch.relu(-contrib), rtol=1e-5, atol=1e-6)


def test_default_layers_follow_the_inputs_rank() -> None:
    torch.manual_seed(7)
    model3d = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    assert lc.GradCAM(model3d)(torch.rand(1, 1, 4, 4, 4), target=0).shape == (1, 4, 4, 4)
    assert lc.default_layer(model3d, torch.rand(1, 1, 4, 4, 4)) == "1"

    class Hybrid(nn.Module):
        """A Conv1d front end feeding a (B, L, D) sequence layer: the generic rule (the last
        3-D output) would pick the sequence and read it as (B, C, L); the 1-D CNN record
        picks the ReLU'd convolution."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 8, 3, padding=1)
            self.act = nn.ReLU()
            self.mix = nn.Linear(8, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.mix(self.act(self.conv(x)).transpose(1, 2)).mean(1))

    x = torch.rand(2, 1, 30)
    assert lc.default_layer(Hybrid(), x) == "act"
    assert lc.GradCAM(Hybrid())(x, target=1).shape == (2, 30)

    class Eca2d(nn.Module):
        """A 2-D network with a Conv1d inside (ECA-style channel attention): no 1-D CNN."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.eca = nn.Sequential(nn.Conv1d(1, 1, 3, padding=1))
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.conv(x).relu()
            w = self.eca(a.mean((2, 3))[:, None])[:, 0].sigmoid()
            return self.fc((a * w[..., None, None]).mean((2, 3)))

    assert lc.engine.families.recognise(Eca2d()) is None
    assert lc.default_layer(Eca2d(), torch.rand(1, 3, 8, 8)) == "conv"


# ----------------------------------------------------------------------------- refusals


class Spectrogram(nn.Module):
    """A waveform model whose layers are 2-D: its maps cannot be laid over the waveform."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = x.unfold(-1, 8, 4)  # (B, 1, frames, 8)
        return self.fc(torch.relu(self.conv(spec)).mean(dim=(2, 3)))


def test_a_layer_of_another_rank_than_the_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"1 spatial dimension\(s\)|2 spatial dimension"):
        lc.GradCAM(Spectrogram(), "conv")(torch.rand(2, 1, 64), target=0)


def test_a_single_image_without_its_batch_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match=r"add the batch dimension \(images\[None\]\)"):
        lc.GradCAM(model, "2")(torch.rand(3, 16, 16), target=0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()  # runs unbatched, no error
    with pytest.raises(ValueError, match="not the batch"):
        lc.GradCAM(plain, "1")(torch.rand(3, 16, 16), target=lambda out: out.sum((1, 2))[:3])


def test_other_ranks_are_refused_with_the_accepted_shapes() -> None:
    model = nn.Sequential(nn.Conv1d(1, 2, 1))
    for bad in (torch.rand(2, 5), torch.rand(1, 1, 2, 2, 2, 2)):
        with pytest.raises(ValueError, match=r"\(B, C, L\).*\(B, C, H, W\).*\(B, C, D, H, W\)"):
            lc.GradCAM(model, "0")(bad)


def test_channels_last_looking_signal_layers_are_refused() -> None:
    class SeqNet(nn.Module):
        """Conv1d, then a Linear on (B, L, C): a channels-last (B, 100, 64) output."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 64, 3, padding=1)
            self.mix = nn.Linear(64, 64)
            self.fc = nn.Linear(64, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.mix(self.conv(x).transpose(1, 2))  # (B, 100, 64)
            return self.fc(t.mean(1))

    x = torch.rand(2, 1, 100)
    with pytest.raises(ValueError, match="channels-last"):
        lc.GradCAM(SeqNet(), "mix")(x, target=0)
    ok = lc.GradCAM(SeqNet(), "mix", reshape_transform="channels_last")(x, target=0)
    assert ok.shape == (2, 100)


# ----------------------------------------------------------------------------- segmentation


def _segmenter(rank: int) -> tuple[nn.Module, str, torch.Tensor]:
    """A 1-D conv segmenter ``(B, 2, L) -> (B, 3, L)`` or a tiny MONAI 3-D U-Net ``(B, 1, D, H,
    W) -> (B, 3, D, H, W)``, the layer explained and an input."""
    torch.manual_seed(7)
    if rank == 1:
        model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 3, 1))
        with torch.no_grad():  # positive class weights: Grad-CAM >= 0 and nonzero, not clipped
            model[2].weight.abs_()
        return model.eval(), "1", torch.randn(2, 2, 16)
    from monai.networks.nets import UNet

    model = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
                 num_res_units=0)  # fmt: skip
    return model.eval(), "model.1.submodule", torch.randn(2, 1, 8, 8, 8)


def _gradcam_by_hooks(model: nn.Module, layer: str, x: torch.Tensor, score: object) -> torch.Tensor:
    """Grad-CAM of ``score(logits) -> (B,)`` from a forward hook on ``layer``: weights the mean
    gradient over the layer's spatial axes, ``relu(sum_k w_k A_k)`` (no normalisation)."""
    captured: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (a,) = captured
    (grad,) = torch.autograd.grad(score(logits).sum(), a)  # type: ignore[operator]
    weights = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
    return torch.relu((weights * a).sum(1)).detach()


@pytest.mark.parametrize("rank", [1, 3])
def test_segmentation_target_of_signals_and_volumes_by_hand(rank: int) -> None:
    model, layer, x = _segmenter(rank)
    spatial = tuple(x.shape[2:])
    g = torch.Generator().manual_seed(3)
    per_sample = torch.rand(x.shape[0], *spatial, generator=g) > 0.5  # (B, L) / (B, D, H, W)
    shared = torch.rand(*spatial, generator=g) > 0.3  # (L,) / (D, H, W)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (x.shape[0], 3, *spatial)
    for c, mask in ((2, per_sample), (1, shared), (0, None)):
        region = (logits.argmax(1) == c) if mask is None else mask.expand(x.shape[0], *spatial)
        # the docstring's score: the class's logits summed over the region, by hand
        want = torch.stack([logits[b, c][region[b]].sum() for b in range(x.shape[0])])
        target = lc.SegmentationTarget(c, mask)
        torch.testing.assert_close(target(logits), want)

        def score(out: torch.Tensor, c: int = c, region: torch.Tensor = region) -> torch.Tensor:
            return (out[:, c] * region).flatten(1).sum(1)

        ref = _gradcam_by_hooks(model, layer, x, score)
        assert bool((ref.flatten(1).amax(1) > 0).all()), c  # a map for every sample
        for max_batch in (None, 1):  # split: a (B, L) mask is cut per sample, not read as (H, W)
            got = lc.explain(model, x, layer, ["gradcam"], target=lc.SegmentationTarget(c, mask),
                             normalize=False, upsample=False, max_batch=max_batch)  # fmt: skip
            torch.testing.assert_close(got.cam(), ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got.scores, want, rtol=1e-5, atol=1e-5)


def test_explain_segmentation_of_a_volume_equals_one_target_per_class() -> None:
    model, layer, x = _segmenter(3)
    maps = lc.explain_segmentation(model, x, classes=[0, 2], layer=layer)
    for c in (0, 2):
        one = lc.explain(model, x, layer, ["gradcam"], target=lc.SegmentationTarget(c))
        assert maps[c].cam().shape == (2, 8, 8, 8)
        torch.testing.assert_close(maps[c].cam(), one.cam(), rtol=1e-5, atol=1e-5)


def test_segmentation_target_refuses_a_mask_of_another_rank() -> None:
    logits = torch.zeros(2, 3, 4, 4, 4)
    with pytest.raises(ValueError, match=r"\(D, H, W\) or \(B, D, H, W\)"):
        lc.SegmentationTarget(1, mask=torch.ones(4, 4))(logits)
    with pytest.raises(TypeError, match=r"\(B, K, L\)"):
        lc.SegmentationTarget(1)(torch.zeros(2, 3, 4, 4, 4, 4))
