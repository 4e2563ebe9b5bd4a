"""The attention maps of a ViT and the gradients of scores with respect to them.

For the attention methods (LeGrad): one forward of the borrowed model with every block's
attention probabilities ``P^l`` ``(B, heads, N, N)`` kept in the graph, then, per block ``l``,
``d s^l / d P^l`` where ``s^l`` is the score (a class logit, or the call's target, e.g. CLIP's
image-text similarity) of what the model's own final norm and head give to block ``l``'s
tokens. Where the attention is read is the model family's record
(:class:`~lightning_cam.engine.families.AttentionParts`): torchvision's
``nn.MultiheadAttention`` is recomputed from its weights (and checked against its own output),
timm's ``Attention`` runs its unfused path (``fused_attn`` off) and ``P`` is the input of its
``attn_drop``; transformers' ViT / DeiT / CLIP attention is recomputed from its projections
(and checked), whatever its ``attn_implementation`` (eager, SDPA), which is left as it is.
Hooks and flags live for the call only, undone in ``finally``; parameter ``.grad`` is never
written (``torch.autograd.grad``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
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
            "lightning-cam reads: it explains torchvision's VisionTransformer, timm's ViT / "
            "DeiT, and transformers' ViT / DeiT classifiers and CLIP vision towers (CLIPModel "
            "in CLIPImageEmbedder, CLIPVisionModel). For other models use a CAM (e.g. 'gradcam' "
            "at a layer) or an input attribution ('integrated_gradients')."
        )
    return fam, parts


def _mha_probs(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.MultiheadAttention`` self-attention recomputed: ``(output (B, N, E), P (B, h, N, N))``.
    """
    mha: Any = m
    if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None:
        raise ValueError(
            "legrad reads batch-first self-attention with one in-projection "
            "(torchvision's ViT); this nn.MultiheadAttention is configured otherwise."
        )
    b, n, e = x.shape
    h = mha.num_heads
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, h, e // h).transpose(1, 2) for t in (q, k, v))
    p = (q @ k.transpose(-2, -1) / math.sqrt(e // h)).softmax(dim=-1)
    out = (p @ v).transpose(1, 2).reshape(b, n, e)
    return mha.out_proj(out), p


def _first(m: nn.Module, *paths: str) -> Any:
    """The first of the dotted attributes ``paths`` that ``m`` has, else ``None``."""
    for path in paths:
        found: Any = m
        for name in path.split("."):
            found = getattr(found, name, None)
        if found is not None:
            return found
    return None


def _hf_probs(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' self-attention (ViT / DeiT ``q_proj`` ... ``o_proj``, before 5 ``attention
    .query`` ... ``output.dense``; CLIP ``q_proj`` ... ``out_proj``) recomputed: ``(output
    (B, N, E), P (B, h, N, N))``, ``P = softmax(q k^T * scale)``."""
    q, k, v = (_first(m, f"{a}_proj", f"attention.{b}")
               for a, b in (("q", "query"), ("k", "key"), ("v", "value")))
    o = _first(m, "o_proj", "out_proj", "output.dense")
    heads = _first(m, "num_heads", "num_attention_heads", "attention.num_attention_heads")
    if any(not isinstance(f, nn.Linear) for f in (q, k, v, o)) or not isinstance(heads, int):
        raise ValueError(
            "legrad reads transformers' self-attention (query / key / value and output "
            f"projections, a number of heads); {type(m).__name__} has another structure."
        )
    b, n, _ = x.shape
    qh, kh, vh = (f(x).reshape(b, n, heads, -1).transpose(1, 2) for f in (q, k, v))
    scale = _first(m, "scaling", "scale")
    scale = float(scale) if isinstance(scale, (int, float)) else qh.shape[-1] ** -0.5
    p = ((qh @ kh.transpose(-2, -1)) * scale).softmax(dim=-1)
    return o((p @ vh).transpose(1, 2).reshape(b, n, -1)), p


_RECOMPUTED = {"mha": _mha_probs, "hf": _hf_probs}


def _keep_recomputed(
    stack: ExitStack, attn: nn.Module, style: str, kept: list[torch.Tensor]
) -> None:
    """Replace ``attn``'s output by its recomputation (checked against it), keep ``P``."""
    recompute = _RECOMPUTED[style]

    def hook(m: nn.Module, args: Any, kwargs: Any, out: Any) -> Any:
        x = args[0] if args else kwargs.get("query", kwargs.get("hidden_states"))
        new, p = recompute(m, x)
        ref = out[0] if isinstance(out, tuple) else out
        if new.shape != ref.shape or not torch.allclose(
                new, ref, rtol=1e-3, atol=1e-4 * (1 + float(ref.detach().abs().max()))):
            raise ValueError(
                "legrad recomputed an attention layer and got another output "
                "(a mask or a custom attention?): its maps would not be the model's."
            )
        kept.append(p)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    stack.callback(attn.register_forward_hook(hook, with_kwargs=True).remove)


def _keep_timm(stack: ExitStack, attn: nn.Module, kept: list[torch.Tensor]) -> None:
    """timm's ``Attention`` on its unfused path for the call; keep the input of ``attn_drop``."""
    if not hasattr(attn, "fused_attn") or not hasattr(attn, "attn_drop"):
        raise ValueError(
            f"legrad reads timm's Attention (fused_attn, attn_drop); "
            f"{type(attn).__name__} has another structure."
        )
    timm_attn: Any = attn
    fused = timm_attn.fused_attn
    timm_attn.fused_attn = False  # its unfused path materialises P
    stack.callback(setattr, timm_attn, "fused_attn", fused)

    def keep_probs(_m: nn.Module, args: Any) -> None:
        kept.append(args[0])

    drop: nn.Module = timm_attn.attn_drop
    stack.callback(drop.register_forward_pre_hook(keep_probs).remove)


@contextmanager
def _kept(parts: AttentionParts) -> Iterator[tuple[list[list[torch.Tensor]], list[Any]]]:
    """Hooks that keep each block's attention probabilities and output tokens for one forward."""
    probs: list[list[torch.Tensor]] = [[] for _ in parts.blocks]
    tokens: list[Any] = [None for _ in parts.blocks]
    with ExitStack() as stack:
        for i, (block, attn) in enumerate(zip(parts.blocks, parts.attentions, strict=True)):
            def keep_tokens(_m: nn.Module, _i: Any, out: Any, i: int = i) -> None:
                tokens[i] = out[0] if isinstance(out, tuple) else out  # transformers < 5: tuples

            stack.callback(block.register_forward_hook(keep_tokens).remove)
            if parts.style == "timm":
                _keep_timm(stack, attn, probs[i])
            else:
                _keep_recomputed(stack, attn, parts.style, probs[i])
        yield probs, tokens


#: What a block's score is read with: class ids ``(B,)`` (the head's class logits), or the
#: call's own target ``output -> (B,)`` (e.g. :class:`~lightning_cam.engine.target_kinds.
#: TextSimilarityTarget` on CLIP's image embedding).
Scoring = torch.Tensor | Callable[[Any], torch.Tensor]


def _score(target: Scoring, output: Any, method: str, where: str) -> torch.Tensor:
    """The scores ``(B,)`` that ``target`` gives to an output (the model's, or a block's)."""
    if isinstance(target, torch.Tensor):
        logits = class_logits(extract_logits(output))
        return logits.gather(1, target[:, None].to(logits.device))[:, 0]
    try:
        return target(output)
    except (TypeError, AttributeError, KeyError, IndexError) as err:
        raise ValueError(
            f"{method!r} scores {where} with the model's own final norm and head, whose output "
            f"is a {type(output).__name__}, and the target cannot read it ({err}); give a "
            "target that reads that output (class ids, or an embedding / text-similarity "
            "target on an image-embedding model)."
        ) from err


def _check_reproduced(model_scores: torch.Tensor, last: torch.Tensor, name: str,
                      method: str) -> None:
    """The head applied to the last block's tokens must give the model's own scores."""
    ref, got = model_scores.detach().float(), last.detach().float()
    tol = 1e-5 * (1 + float(ref.nan_to_num().abs().max())) if ref.numel() else 0.0
    if ref.shape != got.shape or not torch.allclose(got, ref, rtol=1e-4, atol=tol,
                                                    equal_nan=True):
        raise ValueError(
            f"{method!r} scores each block with {name}'s final norm and head, and on the last "
            f"block they give {got.flatten()[:4].tolist()}, not the model's scores "
            f"{ref.flatten()[:4].tolist()}: the model does more after its head (a wrapper?), "
            "so the blocks' scores would not be the model's. Explain the ViT itself."
        )


def attention_gradients(
    model: nn.Module, images: torch.Tensor, target: Scoring, method: str = "legrad"
) -> tuple[list[torch.Tensor], int, tuple[int, int]]:
    """``d s^l / d P^l`` for every block ``l`` of a ViT, with its token layout.

    Args:
        model: The (borrowed, eval-mode) model; its ViT is found by :func:`recognise`.
        images: ``(B, C, H, W)``.
        target: ``(B,)`` the explained classes (``s^l = head(tokens^l)[b, ids[b]]``), or a
            target ``output -> (B,)`` applied to the head's output (``s^l = target(
            head(tokens^l))``). Either way the head on the last block must give the model's
            own scores (else a ValueError: the model does more after the head).

    Returns:
        ``(grads, prefix, (gh, gw))``: per block ``(B, heads, N, N)`` float32 gradients, the
        number of prefix tokens (class, distillation, registers) and the patch grid.
    """
    fam, parts = attention_parts(model, method)
    ph, pw = fam.patch_size  # type: ignore[misc]
    grid = (images.shape[-2] // ph, images.shape[-1] // pw)
    x = images.detach().clone().requires_grad_(True)  # the graph exists even if all is frozen
    with torch.enable_grad(), _kept(parts) as (probs, tokens):
        output = eager_forward(model)(x)
        if any(len(p) != 1 for p in probs) or any(t is None for t in tokens):
            raise ValueError(f"{method!r}: every attention block must run once per forward.")
        scores = [_score(target, parts.head(t), method, "each block") for t in tokens]
        _check_reproduced(_score(target, output, method, "the model"), scores[-1], fam.name,
                          method)
        grads = []
        for p, s in zip(probs, scores, strict=True):
            (g,) = torch.autograd.grad(s.sum(), p[0], retain_graph=True, allow_unused=True)
            grads.append(torch.zeros_like(p[0]) if g is None else g.detach().float())
    n = grads[0].shape[-1] - fam.num_prefix_tokens
    if n != grid[0] * grid[1]:
        raise ValueError(
            f"{method!r}: {n} patch tokens do not fill the {grid[0]} x {grid[1]} patch grid of "
            f"a {tuple(images.shape[-2:])} input (patch {ph} x {pw})."
        )
    return grads, fam.num_prefix_tokens, grid
