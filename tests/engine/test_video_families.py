"""Video and volume model families: MViT's token fold checked by hand, torchvision video ResNets
and MONAI networks (3-D and 2-D) recognised with their default layers.

Models are built with random weights at small inputs (``mvit_v2_s`` itself fixes 16 x 224 x 224,
so its fold runs on a three-block MViT of the same layout; its grids are read off the real
configuration without a forward).
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.families import recognise
from tests.engine.test_families import _tiny_mvit
from tests.engine.test_nd import _resize
from tests.optional import require


def _hand_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int,
                  fold=lambda t: t) -> np.ndarray:
    """Grad-CAM by hand: the layer's output captured by a hook, its gradient from an autograd
    backward of the class logit, ``fold`` to ``(B, C, t, h, w)``, then the formula and a
    numpy trilinear resize to the clip."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(out[:, target].sum(), seen[0])
    a, g = fold(seen[0].detach()), fold(g)
    low = torch.relu((g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1)).numpy()
    return np.stack([_resize(m, tuple(x.shape[2:])) for m in low])


def test_mvit_tokens_fold_into_its_own_grid_by_hand() -> None:
    torch.manual_seed(0)
    model = _tiny_mvit().eval()
    fam = recognise(model)
    assert fam is not None and fam.name == "torchvision MViT" and fam.num_prefix_tokens == 1
    assert fam.token_grids == ((2, 8, 8), (2, 4, 4))  # 4 x 32 x 32 at (2, 4, 4), then / (1, 2, 2)
    # The grid the last block really runs on, read from its call (thw is its argument).
    thw: list[tuple[int, int, int]] = []
    last = model.blocks[-1]
    handle = last.register_forward_pre_hook(lambda m, args: thw.append(args[1]))
    clip = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        model(clip)
    handle.remove()
    t, h, w = thw[0]
    assert (t, h, w) == (2, 4, 4)

    def fold(tokens: torch.Tensor) -> torch.Tensor:  # (B, 1 + t h w, C) -> (B, C, t, h, w)
        return tokens[:, 1:].reshape(tokens.shape[0], t, h, w, -1).permute(0, 4, 1, 2, 3)

    want = _hand_gradcam(model, last.norm1, clip, 2, fold)
    cam = lc.GradCAM(model, normalize=False)
    got = cam(clip, target=2)
    assert cam.layers == ["blocks.2.norm1"]
    assert want.max() > 0
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)


def test_mvit_v2_s_grids_from_its_own_configuration() -> None:
    model = torchvision.models.video.mvit_v2_s(weights=None)
    fam = recognise(model)
    assert fam is not None and fam.default_layer() == "blocks.15.norm1"
    # 16 x 224 x 224 through the (2, 4, 4) patch embedding, then the three (1, 2, 2) poolings.
    assert fam.token_grids == ((8, 56, 56), (8, 28, 28), (8, 14, 14), (8, 7, 7))


def test_video_resnets_recognised_and_explained_at_layer4() -> None:
    torch.manual_seed(1)
    video = torchvision.models.video
    for build in (video.r3d_18, video.mc3_18, video.r2plus1d_18):
        model = build(weights=None, num_classes=3).eval()
        fam = recognise(model)
        assert fam is not None and fam.name == "torchvision video ResNet"
        assert fam.default_layer() == "layer4"
    clip = torch.rand(1, 3, 8, 32, 32)
    want = _hand_gradcam(model, model.layer4, clip, 1)  # r(2+1)d: the last one built
    np.testing.assert_allclose(
        lc.GradCAM(model, normalize=False)(clip, target=1).numpy(), want, rtol=1e-4, atol=1e-6
    )


def test_monai_networks_recognised_in_2d() -> None:
    # 3-D: tests/engine/test_families.py (each record's case).
    nets = require("monai", "pip install monai").networks.nets
    built = {
        "MONAI DenseNet": nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=2,
                                           init_features=8, growth_rate=4,
                                           block_config=(1, 1, 1, 1)),
        "MONAI ResNet": nets.resnet10(spatial_dims=2, n_input_channels=1, num_classes=2),
        "MONAI SENet": nets.SEResNet50(spatial_dims=2, in_channels=1, num_classes=2,
                                       layers=(1, 1, 1, 1)),
    }
    for name, model in built.items():
        fam = recognise(model)
        assert fam is not None and fam.name == name, name
    # A user's subclass (another module) is the network's family too.
    sub = type("MyNet", (nets.DenseNet121,), {"__module__": "my_project.models"})
    fam = recognise(sub(spatial_dims=3, in_channels=1, out_channels=2, init_features=8,
                        growth_rate=4, block_config=(1, 1, 1, 1)))
    assert fam is not None and fam.default_layer() == "class_layers.relu"
    # 2-D: the default layer's map has the image's shape.
    model = built["MONAI ResNet"].eval()
    assert lc.GradCAM(model)(torch.rand(1, 1, 64, 64), target=1).shape == (1, 64, 64)
