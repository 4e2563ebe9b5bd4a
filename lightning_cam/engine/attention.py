"""The attention maps of a ViT and the gradients of class scores with respect to them.

For the attention methods (LeGrad): one forward of the borrowed model with every block's
attention probabilities ``P^l`` ``(B, heads, N, N)`` kept in the graph, then, per block ``l``,
``d s^l / d P^l`` where ``s^l`` is the class score the model's own final norm and head give to
block ``l``'s tokens. Where the attention is read is the model family's record
(:class:`~lightning_cam.engine.families.AttentionParts`): torchvision's
``nn.MultiheadAttention`` is recomputed from its weights (and checked against its own output),
timm's ``Attention`` runs its unfused path (``fused_attn`` off) and ``P`` is the input of its
``attn_drop``. Hooks and flags live for the call only, undone in ``finally``; parameter
``.grad`` is never written (``torch.autograd.grad``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_cam.engine.families import AttentionParts, Family, recognise
from lightning_cam.engine.targets import class_logits, extract_logits
from lightning_cam.engine.wrappers import eager_forward, unwrap

__all__ = ["attention_gradients", "attention_parts"]


def attention_parts(model: nn.Module, method: str = "legrad") -> tuple[Family, AttentionParts]:
    """The family and attention parts of ``model``, or a ValueError saying which models work."""
    fam = recognise(unwrap(model))
    parts = fam.attention_parts() if fam is not None else None
    if fam is None or parts is None or fam.patch_size is None:
        what = f"a {fam.name}" if fam is not None else f"{type(unwrap(model)).__name__}"
        raise ValueError(
            f"method {method!r} differentiates a ViT's attention maps, and {what} has none that "
            "lightning-cam reads: it explains torchvision's VisionTransformer and timm's ViT / "
            "DeiT. For other models use a CAM (e.g. 'gradcam' at a layer) or an input "
            "attribution ('integrated_gradients')."
        )
    return fam, parts


def _mha_probs(m: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.MultiheadAttention`` self-attention recomputed: ``(output (B, N, E), P (B, h, N, N))``.
    """
    if not m.batch_first or not m._qkv_same_embed_dim or m.bias_k is not None:
        raise ValueError(
            "legrad reads batch-first self-attention with one in-projection "
            "(torchvision's ViT); this nn.MultiheadAttention is configured otherwise."
        )
    b, n, e = x.shape
    h = m.num_heads
    q, k, v = F.linear(x, m.in_proj_weight, m.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, h, e // h).transpose(1, 2) for t in (q, k, v))
    p = (q @ k.transpose(-2, -1) / math.sqrt(e // h)).softmax(dim=-1)
    out = (p @ v).transpose(1, 2).reshape(b, n, e)
    return m.out_proj(out), p


@contextmanager
def _kept(parts: AttentionParts) -> Iterator[tuple[list[list[torch.Tensor]], list[Any]]]:
    """Hooks that keep each block's attention probabilities and output tokens for one forward."""
    probs: list[list[torch.Tensor]] = [[] for _ in parts.blocks]
    tokens: list[Any] = [None for _ in parts.blocks]
    with ExitStack() as stack:
        for i, (block, attn) in enumerate(zip(parts.blocks, parts.attentions, strict=True)):
            def keep_tokens(_m: nn.Module, _i: Any, out: Any, i: int = i) -> None:
                tokens[i] = out

            stack.callback(block.register_forward_hook(keep_tokens).remove)
            if parts.style == "mha":
                def recompute(m: Any, args: Any, kwargs: Any, out: Any, i: int = i) -> Any:
                    x = args[0] if args else kwargs["query"]
                    new, p = _mha_probs(m, x)
                    ref = out[0] if isinstance(out, tuple) else out
                    if not torch.allclose(new, ref, rtol=1e-3, atol=1e-4 * (1 + float(
                            ref.detach().abs().max()))):
                        raise ValueError(
                            "legrad recomputed an attention layer and got another output "
                            "(a mask or a custom attention?): its maps would not be the model's."
                        )
                    probs[i].append(p)
                    return (new, *out[1:]) if isinstance(out, tuple) else new

                stack.callback(attn.register_forward_hook(recompute, with_kwargs=True).remove)
            else:
                if not hasattr(attn, "fused_attn") or not hasattr(attn, "attn_drop"):
                    raise ValueError(
                        f"legrad reads timm's Attention (fused_attn, attn_drop); "
                        f"{type(attn).__name__} has another structure."
                    )
                timm_attn: Any = attn
                fused = timm_attn.fused_attn
                timm_attn.fused_attn = False  # its unfused path materialises P
                stack.callback(setattr, timm_attn, "fused_attn", fused)

                def keep_probs(_m: nn.Module, args: Any, i: int = i) -> None:
                    probs[i].append(args[0])

                drop: nn.Module = timm_attn.attn_drop
                stack.callback(drop.register_forward_pre_hook(keep_probs).remove)
        yield probs, tokens


def attention_gradients(
    model: nn.Module, images: torch.Tensor, ids: torch.Tensor, method: str = "legrad"
) -> tuple[list[torch.Tensor], int, tuple[int, int]]:
    """``d s^l / d P^l`` for every block ``l`` of a ViT, with its token layout.

    Args:
        model: The (borrowed, eval-mode) model; its ViT is found by :func:`recognise`.
        images: ``(B, C, H, W)``.
        ids: ``(B,)`` the explained classes: ``s^l = head(tokens^l)[b, ids[b]]``.

    Returns:
        ``(grads, prefix, (gh, gw))``: per block ``(B, heads, N, N)`` float32 gradients, the
        number of prefix tokens (class, distillation, registers) and the patch grid.
    """
    fam, parts = attention_parts(model, method)
    ph, pw = fam.patch_size  # type: ignore[misc]
    grid = (images.shape[-2] // ph, images.shape[-1] // pw)
    x = images.detach().clone().requires_grad_(True)  # the graph exists even if all is frozen
    with torch.enable_grad(), _kept(parts) as (probs, tokens):
        eager_forward(model)(x)
        if any(len(p) != 1 for p in probs) or any(t is None for t in tokens):
            raise ValueError(f"{method!r}: every attention block must run once per forward.")
        grads = []
        for p, t in zip(probs, tokens, strict=True):
            s = class_logits(extract_logits(parts.head(t))).gather(1, ids[:, None].to(x.device))
            (g,) = torch.autograd.grad(s.sum(), p[0], retain_graph=True, allow_unused=True)
            grads.append(torch.zeros_like(p[0]) if g is None else g.detach().float())
    n = grads[0].shape[-1] - fam.num_prefix_tokens
    if n != grid[0] * grid[1]:
        raise ValueError(
            f"{method!r}: {n} patch tokens do not fill the {grid[0]} x {grid[1]} patch grid of "
            f"a {tuple(images.shape[-2:])} input (patch {ph} x {pw})."
        )
    return grads, fam.num_prefix_tokens, grid
