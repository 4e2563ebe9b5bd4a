"""Independent reference computations for the tests: plain hooks and autograd, no engine code."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map of ``(B, h, w)`` to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(1).double()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    rng = hi - lo
    out = torch.where(rng > 0, (flat - lo) / rng.clamp_min(1e-300), torch.zeros_like(flat))
    return out.view_as(maps).float()


def activations_and_grads(
    model: nn.Module,
    layer: nn.Module,
    x: torch.Tensor,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output ``A`` and ``d sum(score_fn(model(x))) / dA``, in eval mode."""
    store: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    was = model.training
    model.eval()
    try:
        out = model(x)
    finally:
        handle.remove()
        model.train(was)
    a = store["a"]
    (g,) = torch.autograd.grad(score_fn(out).sum(), a)
    return a.detach(), g.detach()


def reference_gradcam(
    model: nn.Module,
    layer: nn.Module,
    x: torch.Tensor,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    size: tuple[int, int] | None = None,
    layercam: bool = False,
) -> torch.Tensor:
    """Grad-CAM (or Layer-CAM: ``ReLU(sum_k ReLU(g_k) A_k)``) of ``(B, K, h, w)`` activations,
    bilinearly resized to ``size`` (align_corners=False), then min-max scaled."""
    a, g = activations_and_grads(model, layer, x, score_fn)
    weights = g.relu() if layercam else g.mean((2, 3), keepdim=True)
    raw = (weights * a).sum(1).relu()
    if size is not None and tuple(raw.shape[-2:]) != tuple(size):
        raw = F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(raw)


def class_score(target: int | list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``out -> out[b, target_b]`` for one class for all images or one per image."""

    def score(out: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(target).expand(out.shape[0]) if isinstance(target, int) else (
            torch.as_tensor(target)
        )
        return out.gather(1, t.view(-1, 1).long())[:, 0]

    return score
