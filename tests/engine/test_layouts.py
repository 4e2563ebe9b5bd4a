"""Layouts, default layers and maps of torchvision's transformers and modern CNNs.

Every map is checked against an independent Grad-CAM with an explicit reshape
(tests/transformer_helpers.py), with random weights (no download).
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.layers import default_layer
from lightning_cam.engine.layouts import fold_tokens, layout_transform, recognise
from tests.transformer_helpers import check_against_reference, nchw, nhwc, vit_tokens


def _vit(name: str, image_size: int = 64, num_classes: int = 6) -> nn.Module:
    model = torchvision.models.get_model(
        name, weights=None, image_size=image_size, num_classes=num_classes
    )
    # torchvision zero-initialises the head: every gradient would be zero.
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def vit_b_16() -> nn.Module:
    torch.manual_seed(0)
    return _vit("vit_b_16")


@pytest.fixture(scope="module")
def swin_t() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.swin_t(weights=None, num_classes=6).eval()


# ----------------------------------------------------------------------------- ViT


def test_vit_b_16_default_layer_is_last_ln_1_and_map_is_right(vit_b_16: nn.Module) -> None:
    x = torch.rand(2, 3, 64, 64)
    assert default_layer(vit_b_16, x) == "encoder.layers.encoder_layer_11.ln_1"
    got = check_against_reference(
        vit_b_16, x, None, vit_tokens(1, 4, 4), 6,
        expected_layer="encoder.layers.encoder_layer_11.ln_1",
    )
    assert got.shape == (2, 4, 4)


def test_vit_encoder_block_is_folded_not_a_crash(vit_b_16: nn.Module) -> None:
    """An encoder block outputs (B, N, D): once a crash deep inside F.interpolate."""
    x = torch.rand(2, 3, 64, 64)
    check_against_reference(
        vit_b_16, x, "encoder.layers.encoder_layer_10", vit_tokens(1, 4, 4), 6
    )
    maps = lc.GradCAM(vit_b_16, "encoder.layers.encoder_layer_10")(x)
    assert maps.shape == (2, 64, 64)


def test_vit_tokens_and_callable_agree_with_auto(vit_b_16: nn.Module) -> None:
    x = torch.rand(1, 3, 64, 64)
    layer = "encoder.layers.encoder_layer_9.mlp"
    auto = lc.explain(vit_b_16, x, layer, methods=("gradcam",), target=2, upsample=False)
    for spec in ("tokens", vit_tokens(1, 4, 4)):
        other = lc.explain(
            vit_b_16, x, layer, methods=("gradcam",), target=2, upsample=False,
            reshape_transform=spec,
        )
        torch.testing.assert_close(other.cams["gradcam"][layer], auto.cams["gradcam"][layer])


def test_vit_wrong_layouts_refused_with_layer_shape_and_fix(vit_b_16: nn.Module) -> None:
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"encoder_layer_3'.*\(1, 17, 768\).*'auto'"):
        lc.GradCAM(vit_b_16, "encoder.layers.encoder_layer_3", reshape_transform="channels_last")(x)
    with pytest.raises(ValueError, match=r"must return \(B, C, h, w\)"):
        lc.GradCAM(vit_b_16, "encoder.ln", reshape_transform=lambda t: t)(x)
    with pytest.raises(ValueError, match="reshape_transform='nchw' is not a layout"):
        lc.GradCAM(vit_b_16, reshape_transform="nchw")
    # The patch embedding is a (B, C, h, w) conv output: read as it is.
    check_against_reference(vit_b_16, x, "conv_proj", nchw, 6)


def test_vit_b_32_map() -> None:
    torch.manual_seed(1)
    model = _vit("vit_b_32", image_size=64)
    x = torch.rand(2, 3, 64, 64)
    check_against_reference(
        model, x, None, vit_tokens(1, 2, 2), 6,
        expected_layer="encoder.layers.encoder_layer_11.ln_1",
    )


def test_vit_l_16_default_layer_and_layout_without_weights() -> None:
    """ViT-L/16 built on the meta device (no memory): family, default layer, layout."""
    with torch.device("meta"):
        model = torchvision.models.vit_l_16(weights=None)
    family = recognise(model)
    assert family is not None and family.name == "torchvision ViT"
    assert (family.patch_size, family.num_prefix_tokens) == ((16, 16), 1)
    assert default_layer(model, torch.empty(1, 3, 224, 224, device="meta")) == (
        "encoder.layers.encoder_layer_23.ln_1"
    )
    fold = layout_transform("auto", "x", (2, 197, 1024), (224, 224), family)
    assert fold is not None
    t = torch.arange(2 * 197 * 3.0).view(2, 197, 3)
    torch.testing.assert_close(fold(t), vit_tokens(1, 14, 14)(t))
    with pytest.raises(ValueError, match=r"1 prefix token\(s\) and 16x16 patches has 1 \+ 196"):
        layout_transform("auto", "x", (2, 200, 1024), (224, 224), family)


# ----------------------------------------------------------------------------- Swin


@pytest.mark.parametrize("layer", ["features", "features.7", "norm", "features.5.1"])
def test_swin_channels_last_layers_are_permuted_not_misread(swin_t: nn.Module, layer: str) -> None:
    """(B, h, w, C) outputs: once silently read as (B, C, h, w)."""
    x = torch.rand(2, 3, 64, 64)
    check_against_reference(swin_t, x, layer, nhwc, 6)


def test_swin_default_is_last_stage_and_permute_still_right(swin_t: nn.Module) -> None:
    x = torch.rand(2, 3, 64, 64)
    assert default_layer(swin_t, x) == "features.7"
    check_against_reference(swin_t, x, None, nhwc, 6, expected_layer="features.7")
    check_against_reference(swin_t, x, "permute", nchw, 6)
    check_against_reference(swin_t, x, "features.0.0", nchw, 6)  # the patch-embedding conv


def test_swin_inner_layers_are_channels_last_too(swin_t: nn.Module) -> None:
    x = torch.rand(1, 3, 64, 64)
    # Inside a block the MLP and the (padded, shifted) window attention see (B, h, w, C).
    check_against_reference(swin_t, x, "features.7.1.mlp", nhwc, 6)
    check_against_reference(swin_t, x, "features.7.0.attn", nhwc, 6)
    with pytest.raises(ValueError, match=r"'features.7' outputs \(1, 2, 2, 768\), not tokens"):
        lc.GradCAM(swin_t, "features.7", reshape_transform="tokens")(x)


def test_swin_v2_t() -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_v2_t(weights=None, num_classes=6).eval()
    x = torch.rand(1, 3, 64, 64)
    assert default_layer(model, x) == "features.7"
    check_against_reference(model, x, None, nhwc, 6, expected_layer="features.7")


def test_ambiguous_layout_refused_with_the_fix() -> None:
    with torch.device("meta"):
        model = torchvision.models.swin_t(weights=None)
    family = recognise(model)
    assert family is not None
    # (B, 7, 7, 7) for a 28 px input: (B, C, h, w) and (B, h, w, C) both fit.
    with pytest.raises(ValueError, match=r"'features.7' outputs \(2, 7, 7, 7\).*ambiguous.*"
                       r"'channels_first' or 'channels_last'"):
        layout_transform("auto", "features.7", (2, 7, 7, 7), (28, 28), family)
    assert layout_transform("channels_last", "features.7", (2, 7, 7, 7), (28, 28), family)


# ----------------------------------------------------------------------------- MaxViT, CNNs


def test_maxvit_default_block_and_partitions_refused() -> None:
    from torchvision.models.maxvit import MaxVit

    torch.manual_seed(0)
    model = MaxVit(
        input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16],
        block_layers=[1, 1], head_dim=4, stochastic_depth_prob=0.0, num_classes=5,
    ).eval()
    x = torch.rand(2, 3, 32, 32)
    assert default_layer(model, x) == "blocks.1"
    check_against_reference(model, x, None, nchw, 5, expected_layer="blocks.1")
    # (B, windows, tokens, C) = (2, 4, 4, 16) here: shaped like (B, h, w, C), but partitions.
    with pytest.raises(ValueError, match=r"attn_layer' outputs.*MaxViT.*partitions"):
        lc.GradCAM(model, "blocks.1.layers.0.layers.window_attention.attn_layer")(x)
    layer = "blocks.1.layers.0.layers.grid_attention.departition_op"
    check_against_reference(model, x, layer, nchw, 5)


def test_maxvit_t_is_recognised() -> None:
    with torch.device("meta"):
        model = torchvision.models.maxvit_t(weights=None)
    assert default_layer(model, torch.empty(1, 3, 224, 224, device="meta")) == "blocks.3"


def test_convnext_stage_and_channels_last_inner_layer() -> None:
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None, num_classes=6).eval()
    x = torch.rand(1, 3, 64, 64)
    assert default_layer(model, x) == "features"
    check_against_reference(model, x, None, nchw, 6, expected_layer="features")
    # Inside a CNBlock: Permute -> LayerNorm -> Linear on (B, h, w, C).
    check_against_reference(model, x, "features.5.8.block.3", nhwc, 6)


@pytest.mark.parametrize(
    ("name", "layer"), [("efficientnet_b0", "features"), ("regnet_y_400mf", "trunk_output")]
)
def test_cnn_families_default_layer_and_map(name: str, layer: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=6).eval()
    x = torch.rand(2, 3, 64, 64)
    assert default_layer(model, x) == layer
    check_against_reference(model, x, None, nchw, 6, expected_layer=layer)


# ----------------------------------------------------------------------------- unknown models


class _TokenNet(nn.Module):
    """A ViT-like model lightning-cam does not know: conv patches, 2 prefix tokens, mixing."""

    def __init__(self, prefix: int = 2, patch: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, patch, stride=patch)
        self.prefix = nn.Parameter(torch.randn(1, prefix, 8))
        self.n_prefix = prefix
        self.mix = nn.Linear(8, 8)
        self.block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.prefix.expand(len(t), -1, -1), t], 1)
        t = self.block(t + self.mix(t).mean(1, keepdim=True))
        return self.head(torch.tanh(t[:, self.n_prefix:]).mean(1) + t[:, 0])


class _ChannelsLastNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 4, stride=4)
        self.fc = nn.Linear(16, 24)
        self.head = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.fc(self.conv(x).permute(0, 2, 3, 1))
        return self.head(t.mean((1, 2)))


def test_unknown_token_model_refused_then_tokens_by_request() -> None:
    model = _TokenNet().eval()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"'block' outputs \(2, 66, 8\).*transform='tokens'"):
        lc.GradCAM(model, "block")(x)
    # 'tokens' without a known family: the smallest prefix leaving a grid of the input is 2.
    check_against_reference(model, x, "block", vit_tokens(2, 8, 8), 3, reshape_transform="tokens")
    check_against_reference(
        model, x, "block", vit_tokens(2, 8, 8), 3, reshape_transform=fold_tokens(2, (8, 8))
    )


def test_tokens_of_an_unknown_model_are_never_folded_on_a_guess() -> None:
    # 1 class + 4 register tokens + 3x3 patches = 14 tokens at 48 px. Read as 2 prefix tokens and
    # a 3x4 grid (floor and ceil mixed, stride 13), as the first guess used to, the picture is
    # not one; the only split at a stride dividing the input with fewer prefix tokens than
    # patches is the true one.
    model = _TokenNet(prefix=5, patch=16).eval()
    x = torch.rand(1, 3, 48, 48)
    check_against_reference(model, x, "block", vit_tokens(5, 3, 3), 3, reshape_transform="tokens")
    check_against_reference(
        model, x, "block", vit_tokens(5, 3, 3), 3, reshape_transform=fold_tokens(5, (3, 3))
    )
    # a count no split fits: 20 prefix tokens at 32 px (84 = 20 + 8x8) is refused, not guessed
    with pytest.raises(ValueError, match=r"84 tokens, and no prefix of 0-16 tokens leaves a grid"):
        lc.GradCAM(_TokenNet(prefix=20).eval(), "block", reshape_transform="tokens")(
            torch.rand(1, 3, 32, 32)
        )


def test_unknown_channels_last_output_refused_then_permuted_by_request() -> None:
    model = _ChannelsLastNet().eval()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"'fc' outputs \(2, 8, 8, 24\).*channels-last.*"
                       r"reshape_transform='channels_last'"):
        lc.GradCAM(model, "fc")(x)
    check_against_reference(model, x, "fc", nhwc, 3, reshape_transform="channels_last")
    check_against_reference(model, x, "conv", nchw, 3)  # (B, C, h, w) as always


def test_recognised_through_a_wrapper() -> None:
    torch.manual_seed(0)
    inner = _vit("vit_b_32", image_size=64)
    wrapper = nn.Sequential()
    wrapper.add_module("net", inner)
    x = torch.rand(1, 3, 64, 64)
    assert default_layer(wrapper, x) == "net.encoder.layers.encoder_layer_11.ln_1"
    check_against_reference(
        wrapper, x, None, vit_tokens(1, 2, 2), 6,
        expected_layer="net.encoder.layers.encoder_layer_11.ln_1",
    )


def test_hygiene_after_layout_refusal(swin_t: nn.Module) -> None:
    swin_t.train()
    with pytest.raises(ValueError):
        lc.GradCAM(swin_t, "features.7", reshape_transform="tokens")(torch.rand(1, 3, 64, 64))
    assert swin_t.training and all(m.training for m in swin_t.modules())
    assert not any(m._forward_hooks for m in swin_t.modules())
    assert all(p.grad is None for p in swin_t.parameters())
    swin_t.eval()


# ----------------------------------------------------------------------------- numbers


def test_fold_tokens_is_the_hand_permutation() -> None:
    """Token 1 + i * w + j of channel d lands at [d, i, j]: row-major, prefix dropped."""
    t = torch.randn(2, 2 + 3 * 4, 5)
    got = fold_tokens(2, (3, 4))(t)
    assert got.shape == (2, 5, 3, 4)
    for b in range(2):
        for d in range(5):
            for i in range(3):
                for j in range(4):
                    assert got[b, d, i, j] == t[b, 2 + i * 4 + j, d]


def test_layout_transforms_move_values_not_just_shapes(vit_b_16: nn.Module) -> None:
    fam = recognise(vit_b_16)
    tokens = torch.randn(2, 17, 768)
    fold = layout_transform("auto", "encoder.ln", tokens.shape, (64, 64), fam, batch=2)
    assert fold is not None
    expected = torch.stack([tokens[:, 1 + k, :] for k in range(16)], dim=-1).reshape(2, 768, 4, 4)
    assert torch.equal(fold(tokens), expected)
    nhwc_map = torch.randn(2, 4, 4, 3)
    last = layout_transform("channels_last", "x", nhwc_map.shape, (64, 64), None)
    assert last is not None
    assert torch.equal(last(nhwc_map)[:, 2], nhwc_map[..., 2])  # channel 2 is [..., 2]
    assert layout_transform("channels_first", "x", (2, 3, 4, 4), (64, 64), None) is None


def test_guessed_prefix_for_an_unknown_model() -> None:
    """'tokens' without a family: the smallest prefix that leaves a grid of the input's aspect
    (17 tokens, prime: 1 prefix token then 4 x 4 patches of a 32 x 32 input)."""
    t = torch.randn(1, 17, 3)
    fold = layout_transform("tokens", "x", t.shape, (32, 32), None)
    assert fold is not None
    torch.testing.assert_close(fold(t), t[:, 1:].reshape(1, 4, 4, 3).permute(0, 3, 1, 2))
