"""An independent Grad-CAM with an explicit reshape, to check the engine's maps on transformers.

The reference hooks the layer with a plain forward hook, differentiates the class logits w.r.t.
its output with ``torch.autograd.grad``, and folds activations and gradients with a reshape the
test writes out itself (not lightning_cam.engine.layouts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import lightning_cam as lc


def logits_of(output: Any) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def reference_gradcam(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    to_bchw: Callable[[torch.Tensor], torch.Tensor],
    class_ids: torch.Tensor,
) -> torch.Tensor:
    """Grad-CAM ``(B, h, w)`` at ``layer``, min-max normalised, from scratch."""
    model.eval()
    module = dict(model.named_modules())[layer]
    store: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: store.append(o))
    try:
        with torch.enable_grad():
            out = logits_of(model(x))
            score = out.gather(1, class_ids[:, None]).sum()
            (grad,) = torch.autograd.grad(score, store[0])
    finally:
        handle.remove()
    a, g = to_bchw(store[0].detach()), to_bchw(grad)
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    flat = cam.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    rng = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    norm = torch.where(hi > lo, (flat - lo) / rng, torch.zeros_like(flat))
    return norm.view_as(cam)


def nonzero_classes(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    to_bchw: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample class ids whose reference map is not all zero (random weights can give an
    all-negative CAM for some classes), and that reference."""
    batch = x.shape[0]
    chosen = torch.zeros(batch, dtype=torch.long)
    found = torch.zeros(batch, dtype=torch.bool)
    for c in range(num_classes):
        ref = reference_gradcam(model, x, layer, to_bchw, torch.full((batch,), c))
        ok = (ref.flatten(1).max(1).values > 0) & (ref.flatten(1).min(1).values < 1) & ~found
        chosen[ok] = c
        found |= ok
        if bool(found.all()):
            break
    assert bool(found.all()), "no class with a non-trivial map; change the seed"
    return chosen, reference_gradcam(model, x, layer, to_bchw, chosen)


def check_against_reference(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None,
    to_bchw: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    expected_layer: str | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """The engine's map (default layer when ``layer`` is None) equals the reference."""
    name = expected_layer if layer is None else layer
    assert name is not None
    ids, ref = nonzero_classes(model, x, name, to_bchw, num_classes)
    out = lc.explain(
        model, x, layer=layer, methods=("gradcam",), target=ids, upsample=False, **kwargs
    )
    assert out.layers == [name]
    got = out.cams["gradcam"][name]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    return got


def vit_tokens(prefix: int, gh: int, gw: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The explicit reshape of a ViT's tokens: drop ``prefix``, fold row-major."""

    def fold(t: torch.Tensor) -> torch.Tensor:
        b, _, d = t.shape
        return t[:, prefix:, :].reshape(b, gh, gw, d).permute(0, 3, 1, 2)

    return fold


def nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)


def nchw(t: torch.Tensor) -> torch.Tensor:
    return t
