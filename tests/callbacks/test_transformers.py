"""The callbacks on transformer LightningModules: default layer, layouts, guided refusals."""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

import lightning_cam as lc
from lightning_cam._compat import MisconfigurationException
from tests.callbacks.helpers import image_events, loaders
from tests.transformer_helpers import nhwc, reference_gradcam, vit_tokens


class _Module(pl.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self(batch["image"]), batch["label"])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", nn.functional.cross_entropy(self(batch["image"]), batch["label"]))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _tiny_vit() -> nn.Module:
    return VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2,
                             hidden_dim=16, mlp_dim=32, num_classes=3)


def _tiny_swin() -> nn.Module:
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                           window_size=[2, 2], num_classes=3)


def _upsampled(ref: torch.Tensor, size: int = 16) -> torch.Tensor:
    """The reference at the image size, min-max normalised again (as the engine shows it)."""
    up = torch.nn.functional.interpolate(ref[:, None], size=(size, size), mode="bilinear",
                                         align_corners=False)[:, 0]
    flat = up.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))).view_as(up)


def _fit(tmp_path: Any, module: Any, cb: Any) -> None:
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), callbacks=[cb], accelerator="cpu", devices=1,
        max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="tb", version=0),
    )
    train, val = loaders(n_train=16, n_val=8)
    trainer.fit(module, train, val)


def test_callback_on_a_vit_default_layer_and_right_map(tmp_path: Any) -> None:
    torch.manual_seed(0)
    module = _Module(_tiny_vit())
    cb = lc.GradCAMCallback(num_samples=4, log_guided_gradcam=False, tile_size=16)
    _fit(tmp_path, module, cb)
    layer = "net.encoder.layers.encoder_layer_1.ln_1"
    assert sorted(image_events(os.path.join(str(tmp_path), "tb", "version_0"))) == [
        f"gradcam/{layer}/overlay"
    ]
    out = cb.last_explanation
    assert out is not None and out.layers == [layer]
    x = cb.probes["image"][:4]
    ids = out.class_ids[:4]
    ref = reference_gradcam(module.eval(), x, layer, vit_tokens(1, 4, 4), ids)
    torch.testing.assert_close(out.cams["gradcam"][layer][:4], _upsampled(ref), atol=1e-4,
                               rtol=1e-3)


def test_callback_on_a_swin_stage_with_guided_and_explicit_layout(tmp_path: Any) -> None:
    torch.manual_seed(0)
    module = _Module(_tiny_swin())
    cb = lc.GradCAMCallback(layer="net.features.3", num_samples=4, tile_size=16,
                            reshape_transform="channels_last", log_guided_gradcam=True)
    _fit(tmp_path, module, cb)
    out = cb.last_explanation
    assert out is not None and out.guided_cams  # asked for, GELU gates: guided Grad-CAM runs
    x = cb.probes["image"][:4]
    ref = reference_gradcam(module.eval(), x, "net.features.3", nhwc, out.class_ids[:4])
    assert ref.shape == (4, 2, 2)
    torch.testing.assert_close(out.cams["gradcam"]["net.features.3"][:4], _upsampled(ref),
                               atol=1e-4, rtol=1e-3)


def test_no_guided_pictures_by_default_for_attention_models(tmp_path: Any) -> None:
    """Guided backprop through attention is mostly the plain gradient: by default
    (``log_guided_gradcam=None``) a ViT gets no guided Grad-CAM pictures, said once; a CNN
    keeps them."""
    torch.manual_seed(0)
    cb = lc.GradCAMCallback(num_samples=4, tile_size=16)
    with pytest.warns(UserWarning, match="no guided Grad-CAM pictures"):
        _fit(tmp_path, _Module(_tiny_vit()), cb)
    tags = image_events(os.path.join(str(tmp_path), "tb", "version_0"))
    assert not [t for t in tags if t.endswith("guided_gradcam")] and tags
    assert cb.last_explanation is not None and not cb.last_explanation.guided_cams
    assert "guided_gradcam" in lc.GradCAMCallback().kinds  # a CNN's default


class _NoGates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))


def test_guided_pictures_of_a_gateless_model_refused_at_the_first_batch(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="net.conv", num_samples=2)  # guided Grad-CAM by default
    with pytest.raises(MisconfigurationException, match="has none"):
        _fit(tmp_path, _Module(_NoGates()), cb)


def test_reshape_transform_option_validated() -> None:
    with pytest.raises(MisconfigurationException, match="reshape_transform"):
        lc.GradCAMCallback(reshape_transform="sideways")
    from lightning_cam.engine import layouts

    cb = lc.GradCAMCallback(reshape_transform="lightning_cam.engine.layouts.channels_last")
    assert cb.options.reshape_transform is layouts.channels_last
    # The path it had before the third round still names the same function.
    old = lc.GradCAMCallback(reshape_transform="lightning_cam.layouts.channels_last")
    assert old.options.reshape_transform is layouts.channels_last
