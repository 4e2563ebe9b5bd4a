"""The model-family records (lightning_cam/engine/families.py).

Every record recognises its own model (tiny configurations, random weights, no download), and a
record added to the registry is picked up by the layouts, the default layer and guided support
without any other edit.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.maxvit import MaxVit
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

import lightning_cam as lc
from lightning_cam.engine import families
from lightning_cam.engine.families import FAMILIES, Family, ModelFamily, recognise
from lightning_cam.engine.guided import guided_support
from lightning_cam.engine.layers import default_layer
from lightning_cam.engine.layouts import Family as LayoutsFamily
from lightning_cam.engine.layouts import layout_transform
from lightning_cam.engine.layouts import recognise as layouts_recognise
from tests.optional import require

_TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=3)


def _timm(name: str, **kwargs) -> nn.Module:
    timm = require("timm", "pip install timm")
    return timm.create_model(name, pretrained=False, **kwargs)


def _hf(config: str, model: str, **kwargs) -> nn.Module:
    transformers = require("transformers", "pip install transformers")
    return getattr(transformers, model)(getattr(transformers, config)(**kwargs))


_HF_VIT = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=32, num_labels=3)

# name -> (builder, patch size, prefix tokens, default layer (None: the generic rule) or a
# suffix it ends with ("...x"), input size)
_CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, int] | None, int, str | None, int]] = {
    "torchvision ViT": (
        lambda: VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=3),
        (8, 8), 1, "encoder.layers.encoder_layer_1.ln_1", 32,
    ),
    "torchvision Swin": (
        lambda: SwinTransformer([4, 4], 8, [1, 1], [1, 1], [2, 2], num_classes=3),
        (4, 4), 0, "features.3", 32,
    ),
    "torchvision MaxViT": (
        lambda: MaxVit((32, 32), 8, 2, [8, 16], [1, 1], 4, 0.0, num_classes=3),
        None, 0, "blocks.1", 32,
    ),
    "torchvision ConvNeXt": (
        lambda: ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=3),
        None, 0, None, 32,
    ),
    "torchvision segmentation": (
        lambda: torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=2
        ),
        None, 0, "backbone.16", 32,
    ),
    "timm DeiT": (
        lambda: _timm("deit_tiny_distilled_patch16_224", **_TINY_VIT),
        (8, 8), 2, "blocks.1.norm1", 32,
    ),
    "timm ViT": (
        lambda: _timm("vit_tiny_patch16_224", **_TINY_VIT), (8, 8), 1, "blocks.1.norm1", 32,
    ),
    "timm Swin": (
        lambda: _timm("swin_tiny_patch4_window7_224", img_size=32, embed_dim=8, depths=(1, 1),
                      num_heads=(1, 1), window_size=2, num_classes=3),
        (4, 4), 0, "layers.1", 32,
    ),
    "timm ConvNeXt": (
        lambda: _timm("convnext_atto", dims=(8, 16, 32, 64), depths=(1, 1, 1, 1),
                      num_classes=3),
        None, 0, None, 64,
    ),
    "HF ViT": (
        lambda: _hf("ViTConfig", "ViTForImageClassification", **_HF_VIT),
        (8, 8), 1, "...1.layernorm_before", 32,
    ),
    "HF DeiT": (
        lambda: _hf("DeiTConfig", "DeiTForImageClassificationWithTeacher", **_HF_VIT),
        (8, 8), 2, "...1.layernorm_before", 32,
    ),
    "HF Swin": (
        lambda: _hf("SwinConfig", "SwinForImageClassification", image_size=32, patch_size=4,
                    embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2, num_labels=3),
        (4, 4), 0, "swin.layernorm", 32,
    ),
    "HF ConvNeXt": (
        lambda: _hf("ConvNextConfig", "ConvNextForImageClassification",
                    hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=3),
        None, 0, None, 64,
    ),
    "HF CLIP": (
        lambda: _hf("CLIPVisionConfig", "CLIPVisionModel", hidden_size=16, intermediate_size=32,
                    num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        (8, 8), 1, "...encoder.layers.1.layer_norm1", 32,
    ),
}


def _monai(name: str, **kwargs) -> nn.Module:
    nets = require("monai", "pip install monai").networks.nets
    return getattr(nets, name)(**kwargs)


def _tiny_mvit() -> nn.Module:
    """torchvision's MViT v2 layout (class token, relative positions, residual pooling) in
    three blocks at 4 x 32 x 32: mvit_v2_s itself fixes 16 x 224 x 224."""
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    def block(i: int, o: int, heads: int, stride_q: list[int]) -> MSBlockConfig:
        return MSBlockConfig(heads, i, o, [3, 3, 3], [3, 3, 3], stride_q, [1, 2, 2])

    return MViT(
        (32, 32), 4, [block(8, 8, 1, [1, 1, 1]), block(8, 16, 2, [1, 2, 2]),
                      block(16, 16, 2, [1, 1, 1])],
        residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True,
        proj_after_attn=True, num_classes=3,
    )


def _s3d() -> nn.Module:
    model = torchvision.models.video.s3d(weights=None, num_classes=3)
    model.avgpool = nn.AdaptiveAvgPool3d(1)  # its (2, 7, 7) pool needs 16 x 224 x 224 inputs
    return model


def _cnn1d() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 3),
    )


# Volumes, videos and signals: the input's shape (C, *spatial) instead of a square size.
_CASES.update({
    "MONAI DenseNet": (
        lambda: _monai("DenseNet121", spatial_dims=3, in_channels=1, out_channels=2,
                       init_features=8, growth_rate=4, block_config=(1, 1, 1, 1)),
        None, 0, "class_layers.relu", (1, 64, 64, 64),
    ),
    "MONAI ResNet": (
        lambda: _monai("ResNet", block="basic", layers=[1, 1, 1, 1],
                       block_inplanes=[8, 16, 32, 64], spatial_dims=3, n_input_channels=1,
                       num_classes=2),
        None, 0, "layer4", (1, 32, 32, 32),
    ),
    "MONAI SENet": (
        lambda: _monai("SEResNet50", spatial_dims=3, in_channels=1, num_classes=2,
                       layers=(1, 1, 1, 1)),
        None, 0, "layer4", (1, 64, 64, 64),
    ),
    "torchvision video ResNet": (
        lambda: torchvision.models.video.r3d_18(weights=None, num_classes=3),
        None, 0, "layer4", (3, 8, 32, 32),
    ),
    "torchvision S3D": (_s3d, None, 0, "features", (3, 16, 64, 64)),
    "torchvision MViT": (
        _tiny_mvit, None, 1, "blocks.2.norm1", (3, 4, 32, 32),
    ),
    "1-D CNN": (_cnn1d, None, 0, "5", (2, 64)),
})


def test_every_record_has_a_case_and_names_are_unique() -> None:
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))
    assert set(names) == set(_CASES)


def test_layouts_keeps_its_names() -> None:
    assert LayoutsFamily is Family and layouts_recognise is recognise


@pytest.mark.parametrize("name", list(_CASES))
def test_each_record_recognises_its_model(name: str) -> None:
    torch.manual_seed(0)
    build, patch, prefix, layer, size = _CASES[name]
    model = build().eval()
    record = next(f for f in FAMILIES if f.name == name)
    fam = recognise(model)
    assert fam is not None and fam.name == name and fam.record is record
    assert (fam.root, fam.kind) == ("", record.kind)
    assert (fam.patch_size, fam.num_prefix_tokens) == (patch, prefix)
    # No other record claims the model.
    others = [f.name for f in FAMILIES if f is not record and f.recognise(model) is not None]
    assert others == []
    assert (guided_support(model) is None) == (record.guided_unsupported is None)
    x = torch.rand(1, 3, size, size) if isinstance(size, int) else torch.rand(1, *size)
    got = default_layer(model, x)
    if layer is None:
        assert fam.default_layer() is None  # the generic rule
    elif layer.startswith("..."):
        assert got == fam.default_layer() and got.endswith(layer[3:])
    else:
        assert got == fam.default_layer() == layer


def test_attention_families_refuse_guided_defaults_convnets_do_not() -> None:
    attention = {f.name for f in FAMILIES if f.guided_unsupported is not None}
    assert attention == {
        "torchvision ViT", "torchvision Swin", "torchvision MaxViT", "timm DeiT", "timm ViT",
        "timm Swin", "HF ViT", "HF DeiT", "HF Swin", "HF CLIP", "torchvision MViT",
    }
    assert all(f.kind == "convnet" for f in FAMILIES if f.name not in attention)
    # MViT's tokens are read through its own grids, not a 2-D patch size.
    assert {f.name for f in FAMILIES if f.token_grids is not None} == {"torchvision MViT"}


def test_recognised_inside_a_wrapper_with_its_root() -> None:
    wrapper = nn.Sequential()
    wrapper.add_module("net", _CASES["torchvision Swin"][0]().eval())
    fam = recognise(wrapper)
    assert fam is not None and fam.root == "net" and fam.default_layer() == "net.features.3"


# ----------------------------------------------------------------------------- a new record


class TokenNet(nn.Module):
    """A model no built-in record knows: a class token, then 4x4 patches of a 16x16 input."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.blocks = nn.Sequential(nn.Linear(6, 6), nn.GELU(), nn.Linear(6, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, 6)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)  # (B, 17, 6)
        return self.head(torch.relu(self.blocks(t)).mean(dim=1))


_TOKEN_NET = ModelFamily(
    "test TokenNet", "vit", lambda m: type(m) is TokenNet,
    patch_size=lambda m: (4, 4), num_prefix_tokens=1,
    default_layer=lambda m: "blocks.2", guided_unsupported="a test reason",
)


def test_a_new_record_is_picked_up_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)  # class 0's map has zeros and positives: the ReLU is exercised
    model, x = TokenNet().eval(), torch.rand(2, 3, 16, 16)
    assert recognise(model) is None and default_layer(model, x) == "embed"  # generic rule
    assert guided_support(model) is None
    monkeypatch.setattr(families, "FAMILIES", (*FAMILIES, _TOKEN_NET))

    fam = layouts_recognise(model)
    assert fam is not None and fam.name == "test TokenNet" and fam.record is _TOKEN_NET
    assert default_layer(model, x) == "blocks.2"
    assert guided_support(model) == "a test TokenNet: a test reason"
    fold = layout_transform("auto", "blocks.2", (2, 17, 6), (16, 16), fam, batch=2)
    assert fold is not None
    t = torch.randn(2, 17, 6)
    expected = t[:, 1:, :].reshape(2, 4, 4, 6).permute(0, 3, 1, 2)
    assert torch.equal(fold(t), expected)
    # End to end: the default layer's tokens are folded by the record's layout.
    acts: list[torch.Tensor] = []
    handle = model.blocks[2].register_forward_hook(lambda m, i, o: acts.append(o))
    cam = lc.GradCAM(model, normalize=False)(x, target=0, upsample=False)
    handle.remove()
    assert cam.shape == (2, 4, 4)
    a = acts[0].detach().requires_grad_(True)
    score = model.head(torch.relu(a).mean(dim=1))[:, 0].sum()
    (g,) = torch.autograd.grad(score, a)
    grid_a, grid_g = (v[:, 1:].reshape(2, 4, 4, 6).permute(0, 3, 1, 2) for v in (a, g))
    ref = torch.relu((grid_g.mean(dim=(2, 3), keepdim=True) * grid_a).sum(1))
    assert ref.amax() > 0  # a map, not zeros
    torch.testing.assert_close(cam, ref, atol=1e-6, rtol=1e-4)
