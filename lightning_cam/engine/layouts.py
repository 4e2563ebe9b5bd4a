"""Layer layouts: turning a layer's output into the ``(B, C, h, w)`` map CAMs are made of.

Convolutional layers give ``(B, C, h, w)``. Transformers do not: a ViT block gives a sequence of
tokens ``(B, N, D)`` (prefix tokens — class, distillation, registers — then one token per patch),
torchvision's and timm's Swin stages give channels-last maps ``(B, h, w, C)``. Reading either as
``(B, C, h, w)`` gives a picture that looks like an explanation and is not, so the layout is
explicit: a *reshape transform* says how to read a layer's output (and its gradient, the same
way).

``reshape_transform`` is one of:

- a callable ``output -> (B, C, h, w)`` (applied to activations and gradients alike);
- ``"tokens"``: ``(B, N, D)``; drop the prefix tokens and fold the patch tokens, row-major, into
  the patch grid of the input (``(H / p, W / p)`` for patch size ``p``, or a coarser grid of a
  hierarchical model). The prefix count and patch size come from the model when it is
  recognised (below); for any other model the one split into 0 to 16 prefix tokens (fewer
  than the patches) and a grid ``(H / s, W / s)`` of the input at one stride ``s`` (one that
  divides the input if any fits, else rounded the same way on both axes) is taken, and a count
  that fits no such split, or more than one, is refused (pass :func:`fold_tokens` with the
  model's own counts);
- ``"channels_last"``: ``(B, h, w, C)``, permuted;
- ``"channels_first"``: ``(B, C, h, w)``, read as it is;
- ``"auto"`` (the default): decided per layer from what the model is and the output's shape:

  * **Recognised models** (:func:`recognise`; one record per family in
    :mod:`lightning_cam.engine.families`): torchvision ``VisionTransformer``,
    ``SwinTransformer`` (v1/v2), ``MaxVit``, ``ConvNeXt``; timm ``VisionTransformer`` and its
    relatives (DeiT with its distillation token, register models: anything with ``patch_embed``,
    ``num_prefix_tokens`` and ``blocks``), ``SwinTransformer`` (v1/v2), ``ConvNeXt``; Hugging
    Face ``transformers`` ViT, DeiT, Swin (v1/v2) and ConvNeXt (v1/v2) models. Token outputs
    ``(B, N, D)`` are folded with the model's own prefix count and patch size; ``N`` must match
    the grid the input size gives, else the layer is refused. A 4-D output is ``(B, C, h, w)``
    when its last two dimensions are the input's grid at some stride, ``(B, h, w, C)`` when its
    middle two are; when both or neither fit (``(B, 7, 7, 7)``, MaxViT's window partitions) it
    is refused.
  * **Any other model**: 4-D outputs are ``(B, C, h, w)`` as before, except that one whose
    middle two dimensions fit the input's grid while its last two do not is refused as
    channels-last-looking; token outputs ``(B, N, D)`` are refused (pass ``"tokens"``).

  Refusals are :class:`ValueError` s naming the layer, its output shape and the fix.

**Other spatial ranks** (signals ``(B, C, L)``, volumes and videos ``(B, C, D, H, W)`` /
``(B, C, T, H, W)``): a layer's map has the input's rank, ``(B, C, *spatial)``. ``"auto"`` reads
such an output as it is (a recognised plain convnet family — MONAI networks, torchvision video
ResNets and S3D — always; any other model, 1-D CNNs included, unless its middle dimensions fit
the input's grid while its last ones do not, which is refused as channels-last-looking); a 1-D
model's ``(B, C, L)`` output is a map, never tokens. Token outputs ``(B, N, D)`` of a volume or
video model are folded for families whose token grids are known (torchvision MViT: one class
token, then ``T' x H' x W'`` patches, the grid of its patch embedding or of a later pooling
stage); any other is refused. ``"channels_last"`` permutes ``(B, *spatial, C)``; ``"tokens"``
on a 1-D input folds ``(B, N, D)`` into ``(B, D, N - prefix)``.

Example:
    >>> import torch, torchvision
    >>> vit = torchvision.models.vit_b_16(weights=None, image_size=64)
    >>> recognise(vit).name, recognise(vit).num_prefix_tokens, recognise(vit).patch_size
    ('torchvision ViT', 1, (16, 16))
    >>> fold = layout_transform("auto", "encoder.ln", (2, 17, 768), (64, 64), recognise(vit))
    >>> fold(torch.zeros(2, 17, 768)).shape
    torch.Size([2, 768, 4, 4])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

import torch

from lightning_cam.engine.families import Family, recognise

__all__ = [
    "LAYOUTS",
    "Family",
    "axes_fit",
    "ReshapeTransform",
    "channels_last",
    "check_reshape_transform",
    "fold_tokens",
    "grid_fits",
    "layout_transform",
    "nd_layout",
    "recognise",
]

#: A layout: a named one or a callable ``output -> (B, C, h, w)``.
ReshapeTransform = Union[str, Callable[[torch.Tensor], torch.Tensor]]

#: The named layouts.
LAYOUTS: tuple[str, ...] = ("auto", "tokens", "channels_last", "channels_first")

_MAX_GUESSED_PREFIX = 16
_FIX = "or a callable output -> (B, C, h, w)"


# ----------------------------------------------------------------------------- grids


def _fits(n: int, size: int, stride: int) -> bool:
    return n in (size // stride, -(-size // stride))


def grid_fits(
    h: int, w: int, image_size: tuple[int, int], strides: Iterable[int] | None = None
) -> bool:
    """Whether ``(h, w)`` is the input's grid at one stride (floor or ceil), e.g. ``(7, 7)`` for
    224 px at stride 32. ``strides=None`` tries every integer stride."""
    big_h, big_w = image_size
    for s in strides if strides is not None else range(1, max(big_h, big_w) + 1):
        if _fits(h, big_h, s) and _fits(w, big_w, s):
            return True
    return False


def axes_fit(grid: Sequence[int], image_size: Sequence[int]) -> bool:
    """Whether every axis of ``grid`` is the input's axis at *some* stride of its own (floor or
    ceil): the check for volumes and videos, whose temporal and spatial strides differ.

    Example:
        >>> axes_fit((2, 4, 4), (16, 64, 64)), axes_fit((512, 2, 4), (16, 64, 64))
        (True, False)
    """
    if len(grid) != len(image_size):
        return False
    return all(
        any(_fits(int(n), int(size), s) for s in range(1, int(size) + 1))
        for n, size in zip(grid, image_size, strict=True)
    )


def _grids(
    n: int, image_size: tuple[int, int], strides: Iterable[int] | None
) -> list[tuple[int, int]]:
    """Grids ``(h, w)`` with ``h * w == n`` that fit the input; closest aspect first."""
    out = [(h, n // h) for h in range(1, n + 1) if n % h == 0]
    out = [g for g in out if grid_fits(g[0], g[1], image_size, strides)]
    aspect = image_size[0] / image_size[1]
    return sorted(out, key=lambda g: abs(g[0] / g[1] - aspect))


# ----------------------------------------------------------------------------- transforms


def fold_tokens(
    num_prefix_tokens: int, grid: tuple[int, ...]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(B, N, D) -> (B, D, *grid)``: drop the first ``num_prefix_tokens`` tokens, then fold the
    rest (row-major) into ``grid``: ``(h, w)`` for images, ``(t, h, w)`` for videos (MViT),
    ``(n,)`` for signals.

    Example:
        >>> fold_tokens(1, (2, 3))(torch.zeros(4, 7, 5)).shape
        torch.Size([4, 5, 2, 3])
        >>> fold_tokens(1, (2, 2, 3))(torch.zeros(4, 13, 5)).shape
        torch.Size([4, 5, 2, 2, 3])
    """
    dims = tuple(int(g) for g in grid)
    order = (0, len(dims) + 1, *range(1, len(dims) + 1))

    def fold(t: torch.Tensor) -> torch.Tensor:
        patches = t[:, num_prefix_tokens:, :]
        return patches.reshape(t.shape[0], *dims, t.shape[-1]).permute(*order)

    return fold


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """``(B, h, w, C) -> (B, C, h, w)`` (any rank: ``(B, *spatial, C) -> (B, C, *spatial)``)."""
    return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1))


def check_reshape_transform(value: Any, argument: str = "reshape_transform") -> ReshapeTransform:
    """Validate a ``reshape_transform`` argument (a layout name or a callable).

    Raises:
        ValueError: An unknown name (the message lists the valid ones).
        TypeError: Anything that is neither a string nor callable.
    """
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_")
        if key not in LAYOUTS:
            raise ValueError(
                f"{argument}={value!r} is not a layout; expected one of {', '.join(LAYOUTS)} "
                f"{_FIX}."
            )
        return key
    if callable(value):
        return value  # type: ignore[no-any-return]
    raise TypeError(
        f"{argument} must be one of {', '.join(LAYOUTS)} or a callable output -> (B, C, h, w), "
        f"got {type(value).__name__}"
    )


def _where(layer: str, shape: Sequence[int]) -> str:
    return f"Layer {layer!r} outputs {tuple(shape)}"


def _tokens(
    layer: str, shape: Sequence[int], image_size: tuple[int, int], family: Family | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    n = int(shape[1])
    hw = f"{image_size[0]}x{image_size[1]}"
    if family is not None and family.patch_size is not None:
        prefix = family.num_prefix_tokens
        grids = _grids(n - prefix, image_size, family.strides()) if n > prefix else []
        if grids:
            return fold_tokens(prefix, grids[0])
        ph, pw = family.patch_size
        expected = (image_size[0] // ph) * (image_size[1] // pw)
        raise ValueError(
            f"{_where(layer, shape)}: {n} tokens, but a {family.name} with {prefix} prefix "
            f"token(s) and {ph}x{pw} patches has {prefix} + {expected} tokens for a {hw} input "
            f"(or fewer at a coarser stage). The layer does not hold one token per patch of the "
            f"input: choose a block's output "
            "(see lightning_cam.engine.layers.default_layer) or pass "
            f"reshape_transform=callable output -> (B, C, h, w)."
        )
    splits: list[tuple[int, tuple[int, int]]] = []
    for divides in (True, False):  # strides that divide the input first, then rounded ones
        splits = [
            (prefix, grid)
            for prefix in range(min(_MAX_GUESSED_PREFIX, n - 1) + 1)
            for grid in _exact_grids(n - prefix, image_size, divides)
            if prefix < grid[0] * grid[1]  # prefix tokens are fewer than the patches
        ]
        if splits:
            break
    if len(splits) == 1:
        prefix, grid = splits[0]
        return fold_tokens(prefix, grid)
    fix = (
        "pass reshape_transform=lightning_cam.engine.layouts.fold_tokens(num_prefix_tokens, "
        f"(h, w)) with the model's own prefix count and patch grid {_FIX}."
    )
    if not splits:
        raise ValueError(
            f"{_where(layer, shape)}: {n} tokens, and no prefix of 0-{_MAX_GUESSED_PREFIX} "
            f"tokens leaves a grid of patches of the {hw} input (H/s x W/s at one stride s); "
            + fix
        )
    found = ", ".join(f"{p} prefix + {g[0]}x{g[1]} patches" for p, g in splits)
    raise ValueError(
        f"{_where(layer, shape)}: {n} tokens can be read several ways for the {hw} input "
        f"({found}) and the model is not one whose prefix count is known, so any fold would "
        "be a guess; " + fix
    )


def _exact_grids(
    n: int, image_size: tuple[int, int], divides: bool = False
) -> list[tuple[int, int]]:
    """The grids ``(h, w)`` of ``n`` patches that are the input at one stride ``s``, rounded the
    same way on both axes (``(H // s, W // s)`` or both rounded up): what a patch embedding of
    stride ``s`` gives. ``divides``: only strides that divide both sides."""
    big_h, big_w = image_size
    found: set[tuple[int, int]] = set()
    for stride in range(1, max(big_h, big_w) + 1):
        if divides and (big_h % stride or big_w % stride):
            continue
        for grid in ((big_h // stride, big_w // stride),
                     (-(-big_h // stride), -(-big_w // stride))):
            if grid[0] * grid[1] == n:
                found.add(grid)
    return sorted(found)


def layout_transform(
    spec: ReshapeTransform,
    layer: str,
    shape: Sequence[int],
    image_size: tuple[int, ...],
    family: Family | None,
    batch: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """How to read one layer's output as ``(B, C, h, w)``; ``None`` means "as it is".

    Args:
        spec: The ``reshape_transform`` (validated by :func:`check_reshape_transform`).
        layer: The layer's dotted name (for messages).
        shape: The shape of its output.
        image_size: ``(H, W)`` of the input images (``(L,)`` of signals, ``(D, H, W)`` of
            volumes and videos: see :func:`nd_layout`).
        family: :func:`recognise` of the model (``None``: not recognised).
        batch: The number of images; with ``"auto"``, an output of a recognised model whose
            first dimension differs (windows or heads folded into the batch) is refused.

    Returns:
        A function applied to activations and gradients alike, or ``None`` for the identity.

    Raises:
        ValueError: The layout does not fit the output, or ``"auto"`` cannot tell it (the
            message names the layer, its shape and the fix).
    """
    if callable(spec) and not isinstance(spec, str):
        return _checked_callable(spec, layer, len(image_size))
    if len(image_size) != 2:
        return nd_layout(spec, layer, shape, tuple(image_size), family, batch)
    if spec in ("tokens", "channels_last", "channels_first"):
        return _named(spec, layer, shape, image_size, family)
    if family is not None:
        _refuse_partitions(layer, shape, family, batch)
    if len(shape) == 3:
        return _auto_tokens(layer, shape, image_size, family)
    if len(shape) == 4:
        return _auto_map(layer, shape, image_size, family)
    return None


def _named(
    spec: str,
    layer: str,
    shape: Sequence[int],
    image_size: tuple[int, int],
    family: Family | None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``"tokens"``, ``"channels_last"`` or ``"channels_first"``, checked against the shape."""
    if spec == "tokens":
        if len(shape) != 3:
            raise ValueError(
                f"{_where(layer, shape)}, not tokens (B, N, D): reshape_transform='tokens' "
                f"does not apply; use 'auto', 'channels_last', 'channels_first' {_FIX}."
            )
        return _tokens(layer, shape, image_size, family)
    if len(shape) != 4:
        raise ValueError(
            f"{_where(layer, shape)}, not a 4-D map: reshape_transform={spec!r} does not "
            f"apply; use 'auto', 'tokens' {_FIX}."
        )
    return channels_last if spec == "channels_last" else None


def _refuse_partitions(
    layer: str, shape: Sequence[int], family: Family, batch: int | None
) -> None:
    """``"auto"`` in a recognised model: refuse partitions, heads or windows in the batch."""
    folded = batch is not None and len(shape) >= 3 and shape[0] != batch
    if family.partitions(layer) or folded:
        raise ValueError(
            f"{_where(layer, shape)} in a {family.name}: window or grid partitions (or heads) "
            f"folded into the tensor, not one map per image of the batch ({batch}). Choose a "
            f"block or stage output (the default layer is one) or pass "
            f"reshape_transform=callable output -> (B, C, h, w)."
        )


def _auto_tokens(
    layer: str, shape: Sequence[int], image_size: tuple[int, int], family: Family | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``"auto"`` on a sequence ``(B, N, D)``: folded for a family with a token layout."""
    if family is None:
        raise ValueError(
            f"{_where(layer, shape)}, a sequence (B, N, D) of a model lightning-cam does "
            f"not recognise, not a map (B, C, h, w). If these are a ViT's tokens pass "
            f"reshape_transform='tokens' (prefix tokens dropped, patches folded into the "
            f"input's grid) {_FIX}; or choose a convolutional layer."
        )
    if family.patch_size is None:
        raise ValueError(
            f"{_where(layer, shape)}: a sequence (B, N, D) inside a {family.name}, whose "
            f"token layout is not known; choose a stage output (B, C, h, w) or pass "
            f"reshape_transform='tokens' {_FIX}."
        )
    return _tokens(layer, shape, image_size, family)


def _auto_map(
    layer: str, shape: Sequence[int], image_size: tuple[int, int], family: Family | None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``"auto"`` on a 4-D output: ``(B, C, h, w)`` or ``(B, h, w, C)``, by which fits the grid."""
    strides = family.strides() if family is not None else None
    first = grid_fits(int(shape[2]), int(shape[3]), image_size, strides)
    last = grid_fits(int(shape[1]), int(shape[2]), image_size, strides)
    hw = f"{image_size[0]}x{image_size[1]}"
    if family is None:
        if last and not first:
            raise ValueError(
                f"{_where(layer, shape)}: its middle dimensions fit the {hw} input's grid "
                f"and its last two do not, so it looks channels-last (B, h, w, C). Pass "
                f"reshape_transform='channels_last', or 'channels_first' if it really is "
                f"(B, C, h, w) {_FIX}."
            )
        return None
    if first != last:
        return None if first else channels_last
    if first:
        raise ValueError(
            f"{_where(layer, shape)} in a {family.name}: both (B, C, h, w) and (B, h, w, C) "
            f"fit the {hw} input, so the layout is ambiguous. Pass "
            f"reshape_transform='channels_first' or 'channels_last' {_FIX}."
        )
    raise ValueError(
        f"{_where(layer, shape)} in a {family.name}: neither (B, C, h, w) nor "
        f"(B, h, w, C) fits the {hw} input's grid (window partitions, attention maps?). "
        f"Choose a block or stage output (the default layer is one) or pass "
        f"reshape_transform=callable output -> (B, C, h, w)."
    )


def _checked_callable(
    fn: Callable[[torch.Tensor], torch.Tensor], layer: str, rank: int = 2
) -> Callable[[torch.Tensor], torch.Tensor]:
    want = _MAP_SHAPES.get(rank, "(B, C, *spatial)")

    def apply(t: torch.Tensor) -> torch.Tensor:
        out = fn(t)
        if (
            not isinstance(out, torch.Tensor)
            or out.dim() != rank + 2
            or out.shape[0] != t.shape[0]
        ):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"reshape_transform turned the output {tuple(t.shape)} of layer {layer!r} into "
                f"{got}; it must return {want} with the same B ({t.shape[0]})."
            )
        return out

    return apply


# ----------------------------------------------------------------------------- other ranks

_MAP_SHAPES = {1: "(B, C, l)", 2: "(B, C, h, w)", 3: "(B, C, d, h, w)"}


def nd_layout(
    spec: ReshapeTransform,
    layer: str,
    shape: Sequence[int],
    image_size: tuple[int, ...],
    family: Family | None,
    batch: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """:func:`layout_transform` for signals ``(L,)`` and volumes / videos ``(D, H, W)``.

    A map has the input's rank, ``(B, C, *spatial)``; an output of another rank is returned as
    it is (``None``) and refused by the engine, which names both ranks.

    Example:
        >>> layout_transform("auto", "conv", (2, 16, 50), (100,), None) is None
        True
        >>> layout_transform("channels_last", "x", (2, 4, 4, 4, 8), (8, 8, 8), None)(
        ...     torch.zeros(2, 4, 4, 4, 8)).shape
        torch.Size([2, 8, 4, 4, 4])
    """
    rank = len(image_size)
    is_map = len(shape) == rank + 2
    if spec == "tokens":
        if len(shape) != 3:
            raise ValueError(
                f"{_where(layer, shape)}, not tokens (B, N, D): reshape_transform='tokens' "
                f"does not apply; use 'auto', 'channels_last', 'channels_first' or a callable "
                f"output -> {_MAP_SHAPES[rank]}."
            )
        return _nd_tokens(layer, shape, image_size, family)
    if spec in ("channels_last", "channels_first"):
        if not is_map:
            raise ValueError(
                f"{_where(layer, shape)}, not a {rank + 2}-D map of the {rank}-D input: "
                f"reshape_transform={spec!r} does not apply; use 'auto', 'tokens' or a callable "
                f"output -> {_MAP_SHAPES[rank]}."
            )
        return channels_last if spec == "channels_last" else None
    if family is not None:
        _refuse_partitions(layer, shape, family, batch)
    if is_map:
        if family is not None and family.maps_channels_first:
            return None
        first = axes_fit(shape[2:], image_size)
        last = axes_fit(shape[1:-1], image_size)
        if last and not first:
            raise ValueError(
                f"{_where(layer, shape)}: its middle dimensions fit the "
                f"{'x'.join(map(str, image_size))} input and its last ones do not, so it looks "
                f"channels-last (B, *spatial, C). Pass reshape_transform='channels_last', or "
                f"'channels_first' if it really is {_MAP_SHAPES[rank]}, or a callable."
            )
        return None
    if len(shape) == 3 and (family is not None and family.token_grids):
        return _nd_tokens(layer, shape, image_size, family)
    if len(shape) == 3:
        raise ValueError(
            f"{_where(layer, shape)}, a sequence (B, N, D) in a model of "
            f"{'x'.join(map(str, image_size))} inputs whose token layout lightning-cam does not "
            f"know; choose a convolutional layer {_MAP_SHAPES[rank]} or pass "
            "reshape_transform=lightning_cam.engine.layouts.fold_tokens(num_prefix_tokens, "
            "grid) with the model's own prefix count and token grid."
        )
    return None


def _nd_tokens(
    layer: str, shape: Sequence[int], image_size: tuple[int, ...], family: Family | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Tokens ``(B, N, D)`` of a signal, volume or video model, folded into the family's grid
    (or, for signals, ``N - prefix`` tokens at one stride of the length)."""
    n = int(shape[1])
    size = "x".join(map(str, image_size))
    if family is not None and family.token_grids:
        prefix = family.num_prefix_tokens
        found = [g for g in family.token_grids if math.prod(g) == n - prefix]
        if found:
            return fold_tokens(prefix, found[0])
        raise ValueError(
            f"{_where(layer, shape)}: {n} tokens, but a {family.name} has {prefix} prefix "
            f"token(s) and grids {list(family.token_grids)} ({size} input): the layer does not "
            "hold one token per patch. Choose a block's norm1 (the default layer) or pass "
            "reshape_transform=fold_tokens(num_prefix_tokens, grid)."
        )
    splits = [
        (p, (n - p,)) for p in range(min(_MAX_GUESSED_PREFIX, n - 1) + 1)
        if len(image_size) == 1 and image_size[0] % (n - p) == 0 and p < n - p
    ]
    if len(splits) == 1:
        return fold_tokens(*splits[0])
    raise ValueError(
        f"{_where(layer, shape)}: {n} tokens of a {size} input "
        + ("can be split several ways " if splits else "fit no known token grid ")
        + "into prefix tokens and patches; pass reshape_transform=lightning_cam.engine.layouts."
        "fold_tokens(num_prefix_tokens, grid) with the model's own counts."
    )
