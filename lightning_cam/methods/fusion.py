"""Multi-layer fusion: one map from the maps of several layers of the same pass.

Example:
    >>> import torch
    >>> maps = [torch.rand(2, 7, 7), torch.rand(2, 14, 14)]
    >>> fuse_maps(maps, "max", (28, 28)).shape
    torch.Size([2, 28, 28])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lightning_cam.methods.core import normalize_maps, upsample

#: Accepted ``fuse=`` modes.
FUSE_MODES = ("mean", "max", "product")


def check_fuse(fuse: str | None) -> str | None:
    """Validate a ``fuse`` argument (``None`` or one of :data:`FUSE_MODES`)."""
    if fuse is None:
        return None
    if not isinstance(fuse, str) or fuse.lower() not in FUSE_MODES:
        raise ValueError(f"fuse must be None or one of {list(FUSE_MODES)}, got {fuse!r}")
    return fuse.lower()


def fuse_maps(
    raw: Sequence[torch.Tensor],
    mode: str,
    size: tuple[int, ...],
    scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Fuse un-normalised, ReLU'd maps of several layers into one ``(B, *size)`` map in [0, 1].

    Each map is scaled (``scale``, default min-max to [0, 1]; Layer-CAM's ``tanh(2 M / max M)``),
    resized to ``size`` (bilinear), then combined element-wise: ``mean``, ``max`` or
    ``product`` (a position counts only where every layer agrees: RefineCAM, Domeniconi et al.,
    2026, as pytorch-grad-cam's ``RefineCAM``, which also re-normalises each map after resizing
    it), and min-max normalised.

    Args:
        raw: One ``(B, h_l, w_l)`` map per layer.
        mode: One of :data:`FUSE_MODES`.
        size: Output spatial size.
        scale: Per-layer scaling before the combination.
    """
    mode = check_fuse(mode) or "mean"
    if not raw:
        raise ValueError("fuse_maps needs at least one map")
    scaled = [upsample((scale or normalize_maps)(m), size) for m in raw]
    stack = torch.stack(scaled)
    if mode == "mean":
        out = stack.mean(dim=0)
    elif mode == "max":
        out = stack.amax(dim=0)
    else:
        out = stack.prod(dim=0)
    return normalize_maps(out)
