"""LeGrad on transformers' ViT / DeiT classifiers and CLIP vision towers, against an independent
computation: the model's own eager attention probabilities (``output_attentions``) and block
outputs (``output_hidden_states``), differentiated with plain autograd, while lightning-cam runs
the model as built (SDPA) and recomputes the attention from its projections."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.target_kinds import (
    CLIPImageEmbedder,
    EmbeddingTarget,
    TextSimilarityTarget,
    clip_text_embeddings,
)
from lightning_cam.methods import normalize_maps, upsample
from tests.optional import require

_TINY = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3,
             num_attention_heads=2, intermediate_size=32)


def _transformers() -> Any:
    return require("transformers", "pip install transformers")


def _hf_classifier(name: str = "ViT", cls: str = "ViTForImageClassification") -> nn.Module:
    tf = _transformers()
    torch.manual_seed(0)
    return getattr(tf, cls)(getattr(tf, f"{name}Config")(num_labels=4, **_TINY)).eval()


def _clip() -> nn.Module:
    tf = _transformers()
    torch.manual_seed(0)
    cfg = tf.CLIPConfig(
        text_config={
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "vocab_size": 50, "max_position_embeddings": 16,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
        },
        vision_config=_TINY, projection_dim=8,
    )
    return tf.CLIPModel(cfg).eval()


def _reference(
    model: nn.Module, x: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
    score: Callable[[torch.Tensor], torch.Tensor], prefix: int,
) -> torch.Tensor:
    """LeGrad from the eager model's returned attentions and hidden states: per block l,
    ``g = d score(head(x^l)) / d P^l``, ``E^l = mean_{heads, queries} ReLU(g)`` at the patch
    columns, the mean over blocks, upsampled bilinearly."""
    eager = copy.deepcopy(model)
    eager.config._attn_implementation = "eager"  # its modules share this config
    out = eager(x, output_attentions=True, output_hidden_states=True)
    attentions, hidden = out.attentions, out.hidden_states[-len(out.attentions):]
    maps = []
    for p, t in zip(attentions, hidden, strict=True):
        (g,) = torch.autograd.grad(score(head(t)).sum(), p, retain_graph=True)
        maps.append(g.relu().mean(dim=(1, 2))[:, prefix:].reshape(-1, 4, 4))
    return upsample(torch.stack(maps).mean(0), (32, 32)), out, eager


def _vit_head(vit: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    m: Any = vit
    base = getattr(m, m.base_model_prefix)
    if hasattr(m, "cls_classifier"):
        return lambda t: (m.cls_classifier(base.layernorm(t)[:, 0])
                          + m.distillation_classifier(base.layernorm(t)[:, 1])) / 2
    return lambda t: m.classifier(base.layernorm(t)[:, 0])


@pytest.mark.parametrize("name, cls, prefix", [
    ("ViT", "ViTForImageClassification", 1),
    ("DeiT", "DeiTForImageClassification", 2),
    ("DeiT", "DeiTForImageClassificationWithTeacher", 2),
])
def test_legrad_on_hf_vit_equals_autograd_on_its_returned_attentions(
    name: str, cls: str, prefix: int
) -> None:
    vit = _hf_classifier(name, cls)
    assert vit.config._attn_implementation != "eager"  # ours reads SDPA's model too
    x, ids = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    ref, out, eager = _reference(vit, x, _vit_head(vit), lambda o: o.gather(1, ids[:, None]),
                                 prefix)
    torch.testing.assert_close(_vit_head(eager)(out.hidden_states[-1]), out.logits)
    assert float(ref.amax()) > 0
    ours = lc.LeGrad(vit, normalize=False)(x, target=ids)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)
    on_eager = lc.LeGrad(eager, normalize=False)(x, target=ids)  # eager returns P: same maps
    torch.testing.assert_close(on_eager, ref, rtol=1e-4, atol=1e-7)
    normed = lc.explain(vit, x, methods=["legrad"], target=ids).cams["legrad"]["input"]
    torch.testing.assert_close(normed, normalize_maps(ref), rtol=1e-5, atol=1e-5)


def test_legrad_on_clip_scores_each_block_with_the_text_similarity() -> None:
    clip = _clip()
    text = clip_text_embeddings(clip, torch.tensor([[0, 5, 7, 1], [0, 9, 3, 1]]))
    scale = float(clip.logit_scale.detach().exp())
    target = TextSimilarityTarget(text, logit_scale=scale)  # one text per image
    x = torch.rand(2, 3, 32, 32)
    tower = clip.vision_model

    def head(t: torch.Tensor) -> torch.Tensor:
        return clip.visual_projection(tower.post_layernorm(t[:, 0]))

    def score(e: torch.Tensor) -> torch.Tensor:
        return scale * torch.nn.functional.cosine_similarity(e, text, dim=1)

    ref, out, _ = _reference(tower, x, head, score, 1)
    assert float(ref.amax()) > 0
    ours = lc.LeGrad(CLIPImageEmbedder(clip), normalize=False)(x, target=target)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)
    # CLIPVisionModel: the tower's pooled output, no projection
    tf = _transformers()
    vision = tf.CLIPVisionModel(clip.config.vision_config).eval()
    vision_tower = getattr(vision, "vision_model", vision)  # transformers >= 5: the tower itself
    vision_tower.load_state_dict(tower.state_dict())
    concept = torch.randn(16)
    ref_v, _, _ = _reference(
        vision_tower, x, lambda t: tower.post_layernorm(t[:, 0]),
        lambda e: torch.nn.functional.cosine_similarity(e, concept[None], dim=1), 1,
    )
    ours_v = lc.LeGrad(vision, normalize=False)(x, target=EmbeddingTarget(concept))
    torch.testing.assert_close(ours_v, ref_v, rtol=1e-4, atol=1e-7)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_legrad_on_hf_vit_is_harmless_also_when_the_model_raises() -> None:
    vit = _hf_classifier().train()
    frozen = vit.vit.embeddings.patch_embeddings.projection.weight.requires_grad_(False)
    impl, hooks, x = vit.config._attn_implementation, _hooks(vit), torch.rand(2, 3, 32, 32)
    lc.LeGrad(vit)(x, target=[0, 1])
    calls = []

    def boom(*_: object) -> None:
        calls.append(1)
        if len(calls) > 1:  # the engine's forward passes; LeGrad's raises
            raise RuntimeError("boom")

    handle = vit.vit.layernorm.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        lc.LeGrad(vit)(x, target=[0, 1])
    handle.remove()
    assert vit.training and all(m.training for m in vit.modules())
    assert not frozen.requires_grad and vit.classifier.weight.requires_grad
    assert all(p.grad is None for p in vit.parameters())
    assert _hooks(vit) == hooks and vit.config._attn_implementation == impl


def test_legrad_refuses_hf_models_it_cannot_read() -> None:
    tf = _transformers()
    swin = tf.SwinForImageClassification(tf.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1],
        window_size=2, num_labels=3)).eval()
    with pytest.raises(ValueError, match="a HF Swin has none.*transformers' ViT / DeiT"):
        lc.LeGrad(swin)(torch.rand(1, 3, 32, 32), target=0)
    bare = tf.ViTModel(tf.ViTConfig(**_TINY)).eval()
    with pytest.raises(ValueError, match="classification head.*ViTModel has none"):
        lc.LeGrad(bare)(torch.rand(1, 3, 32, 32), target=lambda o: o.pooler_output[:, 0])
    vit = _hf_classifier()
    with pytest.raises(ValueError, match="cannot read it"):  # a target of the model's output type
        lc.LeGrad(vit)(torch.rand(1, 3, 32, 32), target=lambda o: o.logits[:, 0])
