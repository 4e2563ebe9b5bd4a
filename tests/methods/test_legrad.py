"""LeGrad against an independent computation: each block written out by hand from the module's
weights, its attention probabilities a leaf, the per-block score from the model's head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import lightning_cam as lc
from lightning_cam.methods import METHODS, normalize_maps, upsample
from tests.optional import require


def _tv_vit() -> nn.Module:
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=4,
    )
    nn.init.normal_(vit.heads.head.weight)  # torchvision zero-inits the head: no gradient
    return vit.eval()


def _relevance(g: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    return g.relu().mean(dim=(1, 2))[:, prefix:].reshape(-1, *grid)


def _by_hand_tv(vit: nn.Module, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Block by block: y = ln_1(t); P = softmax(q k^T / sqrt(d)) (a leaf); t' = t +
    out_proj(P v); t'' = t' + mlp(ln_2(t')); s = heads(ln(t'')[:, 0])[c]; ds/dP."""
    b = x.shape[0]
    t = vit._process_input(x)
    t = torch.cat([vit.class_token.expand(b, -1, -1), t], dim=1) + vit.encoder.pos_embedding
    maps = []
    for blk in vit.encoder.layers:
        att = blk.self_attention
        y = blk.ln_1(t)
        e, h = y.shape[-1], att.num_heads
        q, k, v = F.linear(y, att.in_proj_weight, att.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, -1, h, e // h).transpose(1, 2) for z in (q, k, v))
        p = (q @ k.transpose(-2, -1) / math.sqrt(e // h)).softmax(-1).detach().requires_grad_()
        mid = t + att.out_proj((p @ v).transpose(1, 2).reshape(b, -1, e))
        out = mid + blk.mlp(blk.ln_2(mid))
        s = vit.heads(vit.encoder.ln(out)[:, 0]).gather(1, ids[:, None]).sum()
        (g,) = torch.autograd.grad(s, p)
        maps.append(_relevance(g, 1, (4, 4)))
        t = out.detach()
    return torch.stack(maps).mean(0)


def test_legrad_on_a_torchvision_vit_equals_the_blocks_written_by_hand() -> None:
    vit, x, ids = _tv_vit(), torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    ours = lc.LeGrad(vit, normalize=False)(x, target=ids)
    ref = upsample(_by_hand_tv(vit, x, ids), (32, 32))
    assert float(ref.max()) > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)
    normed = lc.explain(vit, x, methods=["legrad"], target=ids).cams["legrad"]["input"]
    torch.testing.assert_close(normed, normalize_maps(ref), rtol=1e-4, atol=1e-5)
    # the last block only
    from lightning_cam.methods.attention import legrad_map
    from lightning_cam.methods.core import LayerPass

    assert METHODS["legrad"].compute is legrad_map
    with pytest.raises(ValueError, match="layers must be"):
        legrad_map(LayerPass(torch.empty(0), images=x, class_ids=ids), layers=0)


def test_legrad_on_a_timm_vit_equals_the_blocks_written_by_hand() -> None:
    timm = require("timm", "pip install timm")
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=4,
        class_token=True, global_pool="token",
    ).eval()
    x, ids = torch.rand(2, 3, 32, 32), torch.tensor([0, 2])
    fused = [b.attn.fused_attn for b in vit.blocks]
    ours = lc.LeGrad(vit, normalize=False)(x, target=ids)
    assert [b.attn.fused_attn for b in vit.blocks] == fused  # restored
    b = x.shape[0]
    t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    maps = []
    for blk in vit.blocks:
        a = blk.attn
        y = blk.norm1(t)
        qkv = a.qkv(y).reshape(b, -1, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        p = ((q * a.scale) @ k.transpose(-2, -1)).softmax(-1).detach().requires_grad_()
        o = a.proj(a.norm((p @ v).transpose(1, 2).reshape(b, -1, a.num_heads * a.head_dim)))
        mid = t + blk.ls1(o)
        out = mid + blk.ls2(blk.mlp(blk.norm2(mid)))
        s = vit.forward_head(vit.norm(out)).gather(1, ids[:, None]).sum()
        (g,) = torch.autograd.grad(s, p)
        maps.append(_relevance(g, vit.num_prefix_tokens, (4, 4)))
        t = out.detach()
    ref = upsample(torch.stack(maps).mean(0), (32, 32))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)


def test_legrad_refuses_models_without_attention_and_heads_it_cannot_reproduce() -> None:
    cnn = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    with pytest.raises(ValueError, match="attention maps.*torchvision's VisionTransformer"):
        lc.LeGrad(cnn)(torch.rand(1, 3, 32, 32), target=0)
    vit, x = _tv_vit(), torch.rand(2, 3, 32, 32)
    # a callable target scores each block's head output as it scores the model's
    by_callable = lc.LeGrad(vit, normalize=False)(x, target=lambda out: out[:, 2])
    torch.testing.assert_close(by_callable, lc.LeGrad(vit, normalize=False)(x, target=2))
    # a model that does more after the ViT's head: the blocks' scores would not be its own
    doubled = nn.Sequential(vit, nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="does more after its head"):
        lc.LeGrad(doubled)(x, target=0)


def test_legrad_is_harmless_also_when_the_model_raises() -> None:
    vit = _tv_vit().train()
    vit.conv_proj.weight.requires_grad_(False)
    x = torch.rand(2, 3, 32, 32)
    lc.LeGrad(vit)(x, target=[0, 1])
    assert vit.training and all(m.training for m in vit.modules())
    assert not vit.conv_proj.weight.requires_grad and vit.heads.head.weight.requires_grad
    assert all(p.grad is None for p in vit.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vit.modules())
    calls = []

    def boom(*_: object) -> None:
        calls.append(1)
        if len(calls) > 1:  # the engine's forward passes; LeGrad's raises
            raise RuntimeError("boom")

    handle = vit.encoder.ln.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        lc.LeGrad(vit)(x, target=[0, 1])
    handle.remove()
    assert vit.training and all(p.grad is None for p in vit.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vit.modules())
