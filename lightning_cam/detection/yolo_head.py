"""The YOLO model as the engine sees it, and the scores of kept detections recomputed from the
Detect head's inputs (no ultralytics import here).

:class:`YOLOAdapter` runs the model as it is and hands the engine its output and the Detect
head's three inputs, each passed (detached) through one ``neck`` identity: the engine captures
the three calls of ``neck`` as it captures the per-level calls of RetinaNet's shared head. The
whole model then runs without autograd recording.

:func:`head_scores` recomputes the class score of each kept detection from the head's input at
its own scale: ``sigmoid(cls_head[l](x_l)[c, i, j])``. The class branch is local (convolutions
with "same" padding, batch norm, pointwise activations), so the value at ``(i, j)`` only depends
on a window of ``x_l`` of radius ``R`` (the sum of the convolutions' radii): the branch runs on
that window (clipped to the map, so the branch's own zero padding is the model's at the border;
inside, the window reaches ``R`` beyond ``(i, j)``, as far as the padding's influence). The
recomputed scores are checked against the reported ones; a branch that is not local, or a
mismatch, runs on the whole map instead (the same value, by construction).

Example:
    >>> import torch
    >>> branch = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU(),
    ...                              torch.nn.Conv2d(8, 2, 1))
    >>> local_radius(branch)
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["YOLOAdapter", "anchor_positions", "head_inputs", "head_scores", "local_radius"]

#: Modules that act position by position (or are containers of such and of convolutions).
_POINTWISE = (
    nn.BatchNorm2d, nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.Hardswish, nn.GELU, nn.Identity,
    nn.Sigmoid, nn.Mish, nn.ReLU6,
)


def head_inputs(output: Any) -> list[torch.Tensor] | None:
    """The Detect head's inputs in the model's eval output (``preds["feats"]``, ultralytics
    >= 8.4; the one-to-many branch's for dual heads), else ``None``."""
    if not isinstance(output, (tuple, list)) or len(output) < 2:
        return None
    raw = output[1]
    if isinstance(raw, dict) and "one2many" in raw:
        raw = raw["one2many"]
    feats = raw.get("feats") if isinstance(raw, dict) else None
    if isinstance(feats, (list, tuple)) and all(isinstance(f, torch.Tensor) for f in feats):
        return list(feats)
    return None


class YOLOAdapter(nn.Module):
    """``x -> (model(x), neck calls)``: the model's output, and the head's inputs each through
    ``neck`` (detached: the engine makes each call's output a leaf); ``None`` when the output
    carries no head inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.neck = nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[Any, list[torch.Tensor] | None]:
        out = self.model(x)
        feats = head_inputs(out)
        return out, None if feats is None else [self.neck(f.detach()) for f in feats]


def local_radius(branch: nn.Module) -> int | None:
    """How far (in positions) the output of ``branch`` at a position sees: the sum of its
    convolutions' radii, when every convolution has stride 1 and "same" zero padding and every
    other module is pointwise; else ``None`` (not known to be local)."""
    radius = 0
    for m in branch.modules():
        if isinstance(m, nn.Conv2d):
            k, d = m.kernel_size, m.dilation
            same = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d, strict=True))
            if (tuple(m.stride) != (1, 1) or isinstance(m.padding, str)
                    or tuple(m.padding) != same or m.padding_mode != "zeros"
                    or any(ki % 2 == 0 for ki in k)):
                return None
            radius += max(same)
        elif not list(m.children()) and not isinstance(m, _POINTWISE):
            return None
    return radius


def anchor_positions(
    anchors: torch.Tensor, shapes: Sequence[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(level, row, col)`` of each anchor index: the head concatenates the levels' maps,
    each flattened row by row."""
    sizes = torch.tensor([h * w for h, w in shapes])
    ends = torch.cumsum(sizes, 0)
    a = anchors.cpu().long()
    level = torch.searchsorted(ends, a, right=True)
    local = a - (ends - sizes)[level]
    widths = torch.tensor([w for _, w in shapes])[level]
    return level, local // widths, local % widths


def _window_index(
    shape: tuple[int, int, int], size: tuple[int, int], corners: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Flat indices ``(n, C, hh, ww)`` into a ``(C, H, W)`` map of the ``hh x ww`` windows whose
    top-left corners are ``corners``."""
    c, h, w = shape
    hh, ww = size
    base = (torch.arange(c)[:, None, None] * (h * w) + torch.arange(hh)[None, :, None] * w
            + torch.arange(ww)[None, None, :])
    start = torch.tensor([i0 * w + j0 for i0, j0 in corners], dtype=torch.long)
    return base[None] + start[:, None, None, None]


def head_scores(
    branches: Sequence[nn.Module], radii: Sequence[int | None], feats: Sequence[torch.Tensor],
    anchors: torch.Tensor, labels: torch.Tensor,
) -> torch.Tensor:
    """``sigmoid(branches[l](feats[l])[0, c, i, j])`` ``(K,)`` of each detection (anchor,
    label), differentiable w.r.t. ``feats``: from the window of radius ``radii[l]`` around the
    position alone (see the module's docstring), or the whole map where ``radii[l]`` is
    ``None``.

    Each score ``s_k`` and its gradient ``G_k`` w.r.t. its window come from the branch run on a
    detached copy of the window and one small backward (the windows are separate leaves, so one
    backward of their sum gives each its own gradient); the score is returned as
    ``s_k + <G_k, w_k - w_k.detach()>`` (``w_k`` the window of ``feats``): the value ``s_k``
    exactly, the gradient ``G_k`` exactly, and the engine's batched backward over ``K`` scores
    runs through ``K`` dot products only, not ``K`` times through the branch. The windows of a
    level are read from it by one gather (:func:`torch.take`), whose backward writes each
    score's gradient of that level in one scatter.
    """
    shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]
    level, rows, cols = anchor_positions(anchors, shapes)
    # windows of one level and size go through the branch as one batch
    groups: dict[tuple[int, int, int], list[tuple[int, int, int, int, int, int]]] = {}
    for k in range(int(anchors.numel())):
        lv, i, j = int(level[k]), int(rows[k]), int(cols[k])
        h, w = shapes[lv]
        r = max(h, w) if radii[lv] is None else int(radii[lv])  # type: ignore[arg-type]
        i0, j0 = max(0, i - r), max(0, j - r)
        key = (lv, min(h, i + r + 1) - i0, min(w, j + r + 1) - j0)
        groups.setdefault(key, []).append((k, i0, j0, i - i0, j - j0, int(labels[k])))
    if not groups:
        return feats[0].new_zeros((0,))
    order: list[int] = []
    index: dict[tuple[int, int, int], torch.Tensor] = {}
    copies: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    for key, members in groups.items():
        lv, hh, ww = key
        f = feats[lv][0]
        idx = _window_index(tuple(f.shape), (hh, ww), [(m[1], m[2]) for m in members])  # type: ignore[arg-type]
        index[key] = idx.to(f.device)
        copy = torch.take(f.detach(), index[key]).requires_grad_(True)
        out = branches[lv](copy)
        cls, ii, jj = (torch.tensor([m[n] for m in members], device=out.device)
                       for n in (5, 3, 4))
        values.append(out[torch.arange(len(members), device=out.device), cls, ii, jj])
        order += [m[0] for m in members]
        copies.append(copy)
    scores = torch.sigmoid(torch.cat(values).float())
    grads = dict(zip(groups, torch.autograd.grad(scores.sum(), copies), strict=True))
    linear = _linear_terms(feats, index, grads)
    back = torch.argsort(torch.tensor(order, device=scores.device))
    return (scores.detach() + linear.float())[back]


def _linear_terms(
    feats: Sequence[torch.Tensor], index: dict[tuple[int, int, int], torch.Tensor],
    grads: dict[tuple[int, int, int], torch.Tensor],
) -> torch.Tensor:
    """``<G_k, w_k - w_k.detach()>`` of every window, in the groups' order: zero in value, the
    window's gradient ``G_k`` w.r.t. ``feats``; one gather per level."""
    parts: dict[tuple[int, int, int], torch.Tensor] = {}
    for lv in sorted({key[0] for key in index}):
        keys = [key for key in index if key[0] == lv]
        windows = torch.take(feats[lv][0], torch.cat([index[key].flatten() for key in keys]))
        prod = torch.cat([grads[key].flatten() for key in keys]) * (windows - windows.detach())
        sizes = [index[key].numel() for key in keys]
        for key, part in zip(keys, prod.split(sizes), strict=True):
            parts[key] = part.view(index[key].shape[0], -1).sum(1)
    return torch.cat([parts[key] for key in index])
