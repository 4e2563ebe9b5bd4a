"""Pictures of explanations: colormaps, overlays, gradient images, grids, labels and boxes.

Every function returns a new ``uint8`` RGB image of shape ``(H, W, 3)`` (numpy) and never
modifies its input. Inputs may be numpy arrays ``(H, W, C)`` / ``(H, W)`` or torch tensors
``(C, H, W)`` / ``(H, W)`` on any device; colours are RGB triples throughout (OpenCV's BGR stays
inside this module). Text is drawn with ``cv2.putText``: OpenCV 4 draws ASCII only (other
characters show as ``?``), OpenCV 5 draws unicode.

Example:
    >>> import numpy as np
    >>> image = np.zeros((64, 64, 3), dtype=np.uint8)
    >>> cam = np.random.rand(7, 7)
    >>> tile = draw_label(overlay(image, cam, alpha=0.5), "gradcam")
    >>> make_grid([image, tile], padding=2).shape
    (68, 134, 3)
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence
from typing import Literal, TypeAlias

import cv2
import numpy as np
import torch

from lightning_cam.tools import image_io
from lightning_cam.tools.image_io import load_image, write_atomic

ArrayLike: TypeAlias = np.ndarray | torch.Tensor
Color: TypeAlias = tuple[int, int, int]

__all__ = [
    "COLORMAPS",
    "annotate_sheet",
    "colorize",
    "draw_boxes",
    "draw_label",
    "gradients_to_image",
    "load_image",
    "make_grid",
    "overlay",
    "save_image",
    "to_chw_tensor",
    "to_hwc",
    "to_uint8_image",
    "write_atomic",
]

_COLORMAP_NAMES = (
    "jet", "turbo", "viridis", "inferno", "magma", "plasma", "hot", "parula", "cividis",
    "rainbow", "hsv", "bone", "cool", "autumn", "spring", "summer", "winter", "ocean", "pink",
    "twilight", "twilight_shifted", "deepgreen",
)  # fmt: skip

COLORMAPS: dict[str, int] = {
    name: getattr(cv2, f"COLORMAP_{name.upper()}")
    for name in _COLORMAP_NAMES
    if hasattr(cv2, f"COLORMAP_{name.upper()}")
}
"""Colormap name -> OpenCV colormap id (those this OpenCV build has). ``"jet"`` is the default,
as in the original Grad-CAM.pytorch tool; ``"turbo"`` and ``"viridis"`` are perceptually
better choices."""

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_FONT_SCALE = 0.3  # below this Hershey text is no longer legible
# OpenCV 5 draws unicode text; the Hershey fonts of OpenCV 4 draw ASCII only.
_ELLIPSIS = "\u2026" if int(cv2.__version__.split(".")[0]) >= 5 else "..."

# Sasha Trubetskoy's 20 distinct colours (RGB), most distinct first.
_PALETTE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128),
    (250, 190, 212), (170, 110, 40), (128, 0, 0), (170, 255, 195), (128, 128, 0),
    (220, 190, 255), (0, 0, 128), (255, 215, 180), (128, 128, 128), (255, 250, 200),
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------


def _to_numpy(x: object, name: str) -> np.ndarray:
    """A numpy view/copy of a tensor or array; half precision tensors become float32."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return t.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _hwc(x: object, name: str) -> np.ndarray:
    """``(H, W, C)`` numpy array with ``C`` in {1, 3, 4}: torch is ``(C, H, W)``, numpy ``HWC``.

    A leading batch dimension of size 1 is dropped. The dtype is kept.
    """
    is_tensor = isinstance(x, torch.Tensor)
    arr = _to_numpy(x, name)
    shape = tuple(arr.shape)
    if arr.ndim == 4 and shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3 and is_tensor:
        if arr.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"{name}: a torch tensor must be (C, H, W) or (H, W) with C in 1, 3 or 4, "
                f"got shape {shape}"
            )
        arr = arr.transpose(1, 2, 0)
    elif arr.ndim == 3:
        if arr.shape[2] not in (1, 3, 4):
            hint = (
                "; it looks channel-first: use to_hwc() or pass a torch tensor"
                if arr.shape[0] in (1, 3, 4)
                else ""
            )
            raise ValueError(
                f"{name}: a numpy array must be (H, W, C) or (H, W) with C in 1, 3 or 4, "
                f"got shape {shape}{hint}"
            )
    else:
        layout = "(C, H, W)" if is_tensor else "(H, W, C)"
        raise ValueError(f"{name} must be {layout} or (H, W), got shape {shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold integers or floats, got dtype {arr.dtype}")
    return arr


def _finite(x: np.ndarray) -> np.ndarray:
    """Float64 copy with NaN -> 0 and +-inf -> the largest / smallest finite value."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if finite.all():
        return x.copy()
    hi = float(x[finite].max()) if finite.any() else 0.0
    lo = float(x[finite].min()) if finite.any() else 0.0
    return np.nan_to_num(x, nan=0.0, posinf=hi, neginf=lo)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 0.0:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def _unit_to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _rgb(arr: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` uint8 -> contiguous ``(H, W, 3)``: grey repeated, alpha dropped."""
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _per_channel(value: object, channels: int, name: str) -> np.ndarray:
    v = np.asarray(_to_numpy(value, name) if isinstance(value, torch.Tensor) else value)
    v = v.astype(np.float64).reshape(-1)
    if v.size not in (1, channels):
        raise ValueError(
            f"{name} must be a number or have one value per channel ({channels}), "
            f"got {v.size} values: {v.tolist()}"
        )
    return v


def to_uint8_image(
    image: ArrayLike,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> np.ndarray:
    """Convert an image tensor or array to a displayable ``uint8`` RGB image.

    Rules, in order:

    * with ``mean`` and/or ``std``: undo the normalisation, ``x * std + mean`` (missing ones are
      0 and 1), clip to ``[0, 1]`` and scale by 255;
    * ``uint8`` passes through (copied); other integers within ``[0, 255]`` are cast;
    * floats already within ``[0, 1]`` are scaled by 255;
    * anything else is min-max normalised over the whole image (a constant image gives black).

    NaN counts as 0. Grey images become 3 channels; a 4th (alpha) channel is dropped.

    Args:
        image: torch ``(C, H, W)`` / ``(1, C, H, W)`` / ``(H, W)``, or numpy ``(H, W, C)`` /
            ``(H, W)``, with ``C`` in 1, 3 or 4.
        mean: per-channel mean (or one number) used to normalise the image.
        std: per-channel standard deviation (or one number) used to normalise the image.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB array (a new array, never a view of ``image``).

    Raises:
        TypeError: ``image`` is not an array/tensor of numbers, or ``mean``/``std`` are given
            for a ``uint8`` image (already in display range).
        ValueError: bad shape, or ``mean``/``std`` with the wrong number of values.

    Example:
        >>> import torch
        >>> x = (torch.rand(3, 8, 8) - 0.45) / 0.22
        >>> to_uint8_image(x, mean=[0.45] * 3, std=[0.22] * 3).shape
        (8, 8, 3)
    """
    arr = _hwc(image, "image")
    if mean is not None or std is not None:
        if arr.dtype == np.uint8:
            raise TypeError(
                "mean/std were given but the image is uint8, i.e. already in display range; "
                "pass the normalised float image, or leave mean/std out"
            )
        c = arr.shape[2]
        m = _per_channel(0.0 if mean is None else mean, c, "mean")
        s = _per_channel(1.0 if std is None else std, c, "std")
        out = _unit_to_uint8(_finite(arr) * s + m)
    elif arr.dtype == np.uint8:
        out = arr.copy()
    elif np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
        out = arr.astype(np.uint8)
    else:
        x = _finite(arr)
        out = _unit_to_uint8(x if x.min() >= 0.0 and x.max() <= 1.0 else _minmax(x))
    return _rgb(out)


def to_hwc(image: ArrayLike) -> np.ndarray:
    """Channel-first ``(C, H, W)`` to channel-last ``(H, W, C)`` numpy, dtype and values kept.

    Args:
        image: torch tensor or numpy array ``(C, H, W)``, ``(1, C, H, W)`` or ``(H, W)``
            (which gives ``(H, W, 1)``), with ``C`` in 1, 3 or 4.

    Returns:
        ``(H, W, C)`` numpy array (on the CPU).

    Raises:
        TypeError: ``image`` is neither a numpy array nor a torch tensor.
        ValueError: ``image`` is not channel-first.

    Example:
        >>> import torch
        >>> to_hwc(torch.zeros(3, 4, 5, dtype=torch.uint8)).shape
        (4, 5, 3)
    """
    arr = _to_numpy(image, "image")
    shape = tuple(arr.shape)
    if arr.ndim == 4 and shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        return np.ascontiguousarray(arr[:, :, None])
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"image must be channel-first (C, H, W) with C in 1, 3 or 4, or (H, W); "
            f"got shape {shape}"
        )
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def to_chw_tensor(image_uint8: ArrayLike) -> torch.Tensor:
    """An image as a ``uint8`` ``(3, H, W)`` tensor, e.g. for TensorBoard's ``add_image``.

    Args:
        image_uint8: any image :func:`to_uint8_image` accepts (usually ``(H, W, 3)`` uint8).

    Returns:
        ``(3, H, W)`` ``torch.uint8`` CPU tensor (``dataformats="CHW"``).

    Raises:
        TypeError, ValueError: as :func:`to_uint8_image`.

    Example:
        >>> import numpy as np
        >>> to_chw_tensor(np.zeros((4, 5, 3), dtype=np.uint8)).shape
        torch.Size([3, 4, 5])
    """
    return torch.from_numpy(to_uint8_image(image_uint8)).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------
# heatmaps
# --------------------------------------------------------------------------------------------


def _colormap_id(colormap: str) -> int:
    if not isinstance(colormap, str):
        raise TypeError(f"colormap must be a name (str), got {type(colormap).__name__}")
    key = colormap.lower()
    if key not in COLORMAPS:
        near = difflib.get_close_matches(key, COLORMAPS, n=3)
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
        raise ValueError(
            f"unknown colormap {colormap!r}; expected one of {sorted(COLORMAPS)}{hint}"
        )
    return COLORMAPS[key]


def _cam_2d(cam: object) -> np.ndarray:
    """A map as a 2-D numpy array; singleton leading/trailing dims are dropped."""
    arr = _to_numpy(cam, "cam")
    shape = tuple(arr.shape)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"cam must be a non-empty 2-D map (H, W), got shape {shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"cam must hold numbers, got dtype {arr.dtype}")
    return arr


def _cam_levels(cam: np.ndarray) -> np.ndarray:
    """2-D map -> uint8 levels: uint8 is used as is, anything else is clipped to [0, 1]."""
    if cam.dtype == np.uint8:
        return np.ascontiguousarray(cam)
    return _unit_to_uint8(_finite(cam))


def colorize(cam: ArrayLike, colormap: str = "jet") -> np.ndarray:
    """Colour a 2-D map with a colormap.

    Args:
        cam: ``(H, W)`` map (``(1, H, W)`` is accepted), float in ``[0, 1]`` (values outside are
            clipped, NaN counts as 0), or ``uint8`` levels 0..255; numpy or torch, any device.
        colormap: a name in :data:`COLORMAPS` (case-insensitive).

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB heatmap.

    Raises:
        TypeError: ``cam`` is not an array/tensor of numbers, or ``colormap`` is not a string.
        ValueError: ``cam`` is not 2-D, or the colormap is unknown.

    Example:
        >>> import numpy as np
        >>> colorize(np.ones((2, 2)))[0, 0].tolist()  # jet's dark red
        [128, 0, 0]
    """
    cmap = _colormap_id(colormap)
    bgr = cv2.applyColorMap(_cam_levels(_cam_2d(cam)), cmap)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    if img.shape[:2] == (height, width):
        return img
    shrink = height <= img.shape[0] and width <= img.shape[1]
    out = cv2.resize(
        img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    return out.reshape(height, width, *img.shape[2:])


def _check_unit(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def overlay(
    image: ArrayLike, cam: ArrayLike, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a coloured map over an image: ``(1 - alpha) * image + alpha * colorize(cam)``.

    The map is resized bilinearly to the image size when the sizes differ.

    Args:
        image: any image :func:`to_uint8_image` accepts (un-normalise it first if needed).
        cam: 2-D map as for :func:`colorize`, any size.
        alpha: weight of the heatmap in ``[0, 1]``; 0 gives the image, 1 the heatmap.
        colormap: a name in :data:`COLORMAPS`.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB image of the size of ``image``.

    Raises:
        TypeError, ValueError: bad image, map, ``alpha`` or colormap.

    Example:
        >>> import numpy as np
        >>> overlay(np.zeros((32, 32, 3), np.uint8), np.random.rand(7, 7), alpha=0.4).shape
        (32, 32, 3)
    """
    a = _check_unit(alpha, "alpha")
    img = to_uint8_image(image)
    h, w = img.shape[:2]
    levels = _cam_2d(cam)
    if levels.shape != (h, w):
        levels = levels.astype(np.float32) / (255.0 if levels.dtype == np.uint8 else 1.0)
        levels = np.asarray(
            cv2.resize(_finite(levels).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        )
    heat = colorize(levels, colormap)
    out = (1.0 - a) * img.astype(np.float32) + a * heat.astype(np.float32)
    return np.round(out).clip(0, 255).astype(np.uint8)


def gradients_to_image(grad: ArrayLike, mode: Literal["std", "minmax"] = "std") -> np.ndarray:
    """Turn input gradients (guided backprop, guided Grad-CAM) into a displayable image.

    * ``"std"``: ``((x - mean) / std) * 0.1 + 0.5``, clipped to ``[0, 1]``, with the mean and
      std over the whole image — the common deprocessing. Scale-free: gradients of 1e-10 (random
      weights) show as well as gradients of 1; a constant gradient is flat grey.
    * ``"minmax"``: ``(x - min) / (max - min)`` over the whole image, as the original tool's
      ``norm_image``; a constant gradient is black.

    NaN counts as 0, so the result never contains garbage.

    Args:
        grad: torch ``(C, H, W)`` / ``(1, C, H, W)`` or numpy ``(H, W, C)``; ``(H, W)`` too.
        mode: ``"std"`` or ``"minmax"``.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB image.

    Raises:
        TypeError: ``grad`` is not an array/tensor of numbers.
        ValueError: bad shape or unknown ``mode``.

    Example:
        >>> import torch
        >>> gradients_to_image(torch.zeros(3, 4, 4))[0, 0].tolist()
        [128, 128, 128]
    """
    if mode not in ("std", "minmax"):
        raise ValueError(f"mode must be 'std' or 'minmax', got {mode!r}")
    x = _finite(_hwc(grad, "grad"))
    if mode == "std":
        x = x.astype(np.float64)
        x = x - x.mean()
        std = x.std()
        x = (x / std if std > 0 else np.zeros_like(x)) * 0.1 + 0.5
    else:
        x = _minmax(x)
    return _rgb(_unit_to_uint8(x))


# --------------------------------------------------------------------------------------------
# text, boxes, grids
# --------------------------------------------------------------------------------------------


def _color(value: object, name: str) -> Color:
    try:
        c = tuple(int(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        c = ()
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise ValueError(f"{name} must be an RGB triple of ints in [0, 255], got {value!r}")
    return c  # type: ignore[return-value]


def _auto_font_scale(height: int, width: int) -> float:
    """Font scale for an image: ~8 px text on a 64 px tile, ~23 px on a 512 px image."""
    return float(np.clip(min(height, width) / 480.0, 0.35, 3.0))


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 1.6)))


def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int, int]:
    (w, h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    return w, h, baseline


def _fit_text(text: str, max_width: int, scale: float, thickness: int) -> tuple[str, float]:
    """Shrink (down to the legible minimum), then truncate with an ellipsis until ``text`` fits."""
    w, _, _ = _text_size(text, scale, thickness)
    if w <= max_width:
        return text, scale
    floor = min(scale, _MIN_FONT_SCALE)
    for _ in range(4):
        scale = max(floor, scale * 0.98 * max_width / max(w, 1))
        w = _text_size(text, scale, thickness)[0]
        if w <= max_width:
            return text, scale
        if scale == floor:
            break
    lo, hi = 0, len(text)  # longest prefix that fits with the ellipsis
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _text_size(text[:mid].rstrip() + _ELLIPSIS, scale, thickness)[0] <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return (text[:lo].rstrip() + _ELLIPSIS if lo else ""), scale


def _put_text(
    img: np.ndarray,
    text: str,
    origin: tuple[int, int],
    scale: float,
    thickness: int,
    color: Color,
    outline: Color | None = None,
) -> None:
    if outline is not None:  # the text shifted around in the outline colour (font-agnostic)
        d = max(1, int(round(scale)))
        x, y = origin
        for dx, dy in ((-d, -d), (0, -d), (d, -d), (-d, 0), (d, 0), (-d, d), (0, d), (d, d)):
            cv2.putText(img, text, (x + dx, y + dy), _FONT, scale, outline, thickness, cv2.LINE_AA)
    cv2.putText(img, text, origin, _FONT, scale, color, thickness, cv2.LINE_AA)


def _contrast(color: Color) -> Color:
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_label(
    image: ArrayLike,
    text: str,
    position: Literal["top", "bottom"] = "top",
    font_scale: float | None = None,
    color: Color = (255, 255, 255),
    background: Color | None = (0, 0, 0),
) -> np.ndarray:
    """Write a line of text on a filled strip across the top or bottom of an image.

    The font scale follows the image size (legible on 64 px tiles and on 512 px images); text
    too long for the width is shrunk down to a legible minimum and then cut with an ellipsis.

    Args:
        image: any image :func:`to_uint8_image` accepts.
        text: the label (ASCII with OpenCV 4; other characters show as ``?``).
        position: ``"top"`` or ``"bottom"``.
        font_scale: OpenCV font scale; ``None`` chooses one from the image size.
        color: RGB text colour.
        background: RGB strip colour, or ``None`` for no strip (the text gets a dark outline).

    Returns:
        A new ``(H, W, 3)`` ``uint8`` RGB image; ``image`` is not modified.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: bad ``position``, ``font_scale`` or colour.

    Example:
        >>> import numpy as np
        >>> draw_label(np.zeros((64, 64, 3), np.uint8), "resnet50").shape
        (64, 64, 3)
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if position not in ("top", "bottom"):
        raise ValueError(f"position must be 'top' or 'bottom', got {position!r}")
    fg = _color(color, "color")
    bg = None if background is None else _color(background, "background")
    img = to_uint8_image(image)
    h, w = img.shape[:2]
    if font_scale is None:
        scale = _auto_font_scale(h, w)
    elif (
        isinstance(font_scale, bool)
        or not isinstance(font_scale, (int, float))
        or not (math.isfinite(font_scale) and font_scale > 0)
    ):
        raise ValueError(f"font_scale must be a positive number or None, got {font_scale!r}")
    else:
        scale = float(font_scale)
    thickness = _thickness(scale)
    margin = max(2, int(round(4 * scale)))
    line, scale = _fit_text(text, w - 2 * margin, scale, thickness)
    if not line:
        return img
    _, th, baseline = _text_size(line, scale, thickness)
    strip = th + baseline + 2 * margin
    y0 = 0 if position == "top" else max(0, h - strip)
    if bg is not None:
        cv2.rectangle(img, (0, y0), (w - 1, min(h, y0 + strip) - 1), bg, thickness=cv2.FILLED)
    outline = None if bg is not None else _contrast(fg)
    _put_text(img, line, (margin, y0 + margin + th), scale, thickness, fg, outline)
    return img


def _label_colors(n: int, labels: Sequence[str] | None) -> list[Color]:
    if labels is None:
        return [_PALETTE[i % len(_PALETTE)] for i in range(n)]
    order: dict[str, int] = {}
    for label in labels:
        order.setdefault(label, len(order))
    return [_PALETTE[order[label] % len(_PALETTE)] for label in labels]


def _check_boxes(boxes: ArrayLike) -> np.ndarray:
    """``boxes`` as a float64 ``(N, 4)`` array of valid ``x1, y1, x2, y2`` boxes."""
    b = _to_numpy(boxes, "boxes").astype(np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as x1, y1, x2, y2; got shape {tuple(b.shape)}")
    if not np.isfinite(b).all():
        raise ValueError(f"boxes must be finite, got {b[~np.isfinite(b).all(axis=1)].tolist()}")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        raise ValueError(
            f"boxes must be x1, y1, x2, y2 with x1 <= x2 and y1 <= y2 (not x, y, w, h); "
            f"got {b[bad].tolist()}"
        )
    return b


def _box_captions(
    labels: Sequence[str] | None, scores: ArrayLike | Sequence[float] | None, n: int
) -> tuple[list[str] | None, list[float] | None]:
    """Checked ``labels`` (as strings) and ``scores`` (as floats) for ``n`` boxes."""
    label_list: list[str] | None = None
    if labels is not None:
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of strings, one per box, not a str")
        label_list = [str(label) for label in labels]
        if len(label_list) != n:
            raise ValueError(f"labels must have one entry per box ({n}), got {len(label_list)}")
    score_list: list[float] | None = None
    if scores is not None:
        s = _to_numpy(scores, "scores") if isinstance(scores, torch.Tensor) else scores
        score_list = [float(v) for v in np.asarray(s, dtype=np.float64).reshape(-1)]
        if len(score_list) != n:
            raise ValueError(f"scores must have one entry per box ({n}), got {len(score_list)}")
    return label_list, score_list


def _box_colors(
    color: Color | Sequence[Color] | None, n: int, labels: list[str] | None
) -> list[Color]:
    """One colour per box from :func:`draw_boxes`'s ``color`` argument."""
    if color is None:
        return _label_colors(n, labels)
    if len(color) == 3 and all(isinstance(v, (int, np.integer)) for v in color):
        return [_color(color, "color")] * n
    colors = [_color(c, f"color[{i}]") for i, c in enumerate(color)]
    if len(colors) != n:
        raise ValueError(f"color must be one RGB triple or one per box ({n}), got {len(colors)}")
    return colors


def _box_thickness(thickness: int | None, h: int, w: int) -> int:
    """The checked line width, or one chosen from the image size when ``None``."""
    if thickness is None:
        return max(1, int(round(min(h, w) / 200)))
    if isinstance(thickness, bool) or not isinstance(thickness, (int, np.integer)) or thickness < 1:
        raise ValueError(f"thickness must be a positive int or None, got {thickness!r}")
    return int(thickness)


def _draw_captions(
    img: np.ndarray,
    clipped: np.ndarray,
    labels: list[str] | None,
    score_list: list[float] | None,
    colors: list[Color],
) -> None:
    """Draw ``"label 0.87"`` captions above (else just inside) the clipped boxes, in place."""
    h, w = img.shape[:2]
    scale = max(_MIN_FONT_SCALE, 0.8 * _auto_font_scale(h, w))
    text_thickness = _thickness(scale)
    margin = max(1, int(round(3 * scale)))
    for i, (x1, y1, _x2, _y2) in enumerate(clipped.tolist()):
        parts = [] if labels is None else [labels[i]]
        if score_list is not None:
            parts.append(f"{score_list[i]:.2f}")
        if not parts:
            continue
        text, fscale = _fit_text(" ".join(parts), w - 2 * margin, scale, text_thickness)
        if not text:
            continue
        tw, th, baseline = _text_size(text, fscale, text_thickness)
        box_h = th + baseline + 2 * margin
        top = y1 - box_h if y1 - box_h >= 0 else y1  # above the box, else just inside it
        left = min(x1, max(0, w - (tw + 2 * margin)))
        cv2.rectangle(
            img, (left, top), (left + tw + 2 * margin - 1, top + box_h - 1), colors[i], cv2.FILLED
        )
        _put_text(img, text, (left + margin, top + margin + th), fscale, text_thickness,
                  _contrast(colors[i]))  # fmt: skip


def draw_boxes(
    image: ArrayLike,
    boxes: ArrayLike,
    labels: Sequence[str] | None = None,
    scores: ArrayLike | Sequence[float] | None = None,
    color: Color | Sequence[Color] | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw boxes with optional ``"label 0.87"`` captions above them.

    Args:
        image: any image :func:`to_uint8_image` accepts.
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels, numpy or torch; boxes are
            clipped to the image.
        labels: ``N`` label strings, or ``None``.
        scores: ``N`` scores (numpy, torch or a sequence), or ``None``.
        color: one RGB colour for all boxes, ``N`` colours, or ``None``: a distinct colour per
            label (in order of first appearance; per box when there are no labels).
        thickness: line width in pixels; ``None`` chooses one from the image size.

    Returns:
        A new ``(H, W, 3)`` ``uint8`` RGB image; ``image`` is not modified.

    Raises:
        TypeError: bad argument types.
        ValueError: ``boxes`` not ``(N, 4)``, not finite or with ``x2 < x1`` / ``y2 < y1``;
            ``labels``/``scores``/colours of the wrong length; bad ``thickness``.

    Example:
        >>> import numpy as np
        >>> img = draw_boxes(np.zeros((64, 64, 3), np.uint8), np.array([[8, 8, 40, 40]]),
        ...                  labels=["cat"], scores=[0.9])
        >>> img.shape
        (64, 64, 3)
    """
    img = to_uint8_image(image)
    h, w = img.shape[:2]
    b = _check_boxes(boxes)
    n = len(b)
    labels, score_list = _box_captions(labels, scores, n)
    colors = _box_colors(color, n, labels)
    thickness = _box_thickness(thickness, h, w)
    clipped = np.round(b).astype(np.int64)
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w - 1)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h - 1)
    for i, (x1, y1, x2, y2) in enumerate(clipped.tolist()):
        cv2.rectangle(img, (x1, y1), (x2, y2), colors[i], int(thickness))
    # captions after all boxes, so that no box line crosses a caption
    _draw_captions(img, clipped, labels, score_list, colors)
    return img


def _pad_color(pad_value: int | Sequence[int], name: str = "pad_value") -> Color:
    if isinstance(pad_value, (int, np.integer)) and not isinstance(pad_value, bool):
        if not 0 <= pad_value <= 255:
            raise ValueError(f"{name} must be in [0, 255] or an RGB triple, got {pad_value!r}")
        return (int(pad_value),) * 3  # type: ignore[return-value]
    return _color(pad_value, name)


def _tiles(images: Sequence[ArrayLike], name: str) -> list[np.ndarray]:
    if isinstance(images, (np.ndarray, torch.Tensor)) or not isinstance(images, Sequence):
        raise TypeError(f"{name} must be a list of images, got {type(images).__name__}")
    tiles = [to_uint8_image(im) for im in images]
    if tiles:
        h, w = tiles[0].shape[:2]
        tiles = [_resize(t, h, w) for t in tiles]
    return tiles


def make_grid(
    images: Sequence[ArrayLike],
    ncol: int | None = None,
    padding: int = 2,
    pad_value: int | Sequence[int] = 255,
) -> np.ndarray:
    """Lay images out in a grid, row by row.

    All images are resized to the size of the first. The grid has ``padding`` pixels around and
    between the tiles, so its size is ``(nrow * (h + padding) + padding,
    ncol * (w + padding) + padding)`` with ``nrow = ceil(n / ncol)``; empty cells are filled
    with ``pad_value``.

    Args:
        images: non-empty list of images (anything :func:`to_uint8_image` accepts).
        ncol: tiles per row; ``None`` gives ``ceil(sqrt(n))``; more than ``n`` means ``n``.
        padding: pixels between and around tiles (>= 0).
        pad_value: grey level or RGB triple of the padding.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB grid.

    Raises:
        TypeError: ``images`` is not a list.
        ValueError: empty list, bad ``ncol``, ``padding`` or ``pad_value``.

    Example:
        >>> import numpy as np
        >>> make_grid([np.zeros((10, 20, 3), np.uint8)] * 5, ncol=2, padding=1).shape
        (34, 43, 3)
    """
    tiles = _tiles(images, "images")
    n = len(tiles)
    if n == 0:
        raise ValueError("images must contain at least one image, got an empty list")
    if ncol is None:
        ncol = math.ceil(math.sqrt(n))
    elif isinstance(ncol, bool) or not isinstance(ncol, (int, np.integer)) or ncol < 1:
        raise ValueError(f"ncol must be a positive int or None, got {ncol!r}")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    fill = _pad_color(pad_value)
    ncol = min(int(ncol), n)
    nrow = math.ceil(n / ncol)
    h, w = tiles[0].shape[:2]
    p = int(padding)
    grid = np.empty((nrow * (h + p) + p, ncol * (w + p) + p, 3), dtype=np.uint8)
    grid[:] = fill
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncol)
        y, x = p + r * (h + p), p + c * (w + p)
        grid[y : y + h, x : x + w] = tile
    return grid


def annotate_sheet(
    rows: Sequence[Sequence[ArrayLike]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """A labelled table of images: one header row of column labels, one column of row labels.

    Typical use is a comparison sheet: rows are networks, columns are outputs (heatmap, overlay,
    guided backprop, ...). Every image is resized to the size of the first; rows may be of
    different lengths (missing cells stay white). Labels are black on white, shrunk or cut with an
    ellipsis to fit a column (a row label gets at most one tile width).

    Args:
        rows: list of rows, each a list of images (anything :func:`to_uint8_image` accepts).
        row_labels: one label per row, or ``None`` for no label column.
        col_labels: one label per column (the longest row), or ``None`` for no header.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB sheet.

    Raises:
        TypeError: ``rows`` is not a list of lists, or a label is not a string.
        ValueError: no image at all, or labels of the wrong length.

    Example:
        >>> import numpy as np
        >>> tile = np.zeros((64, 64, 3), np.uint8)
        >>> sheet = annotate_sheet([[tile, tile], [tile, tile]], ["resnet18", "vgg16"],
        ...                        ["overlay", "guided"])
        >>> sheet.shape[0] > 128 and sheet.shape[1] > 128
        True
    """
    if isinstance(rows, (np.ndarray, torch.Tensor)) or not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a list of lists of images, got {type(rows).__name__}")
    flat = [im for row in rows for im in _check_row(row)]
    tiles = _tiles(flat, "rows")
    if not tiles:
        raise ValueError("rows must contain at least one image")
    nrows, ncols = len(rows), max(len(row) for row in rows)
    row_labels = _check_labels(row_labels, nrows, "row_labels", "rows")
    col_labels = _check_labels(col_labels, ncols, "col_labels", "columns (the longest row)")

    h, w = tiles[0].shape[:2]
    pad = max(2, min(h, w) // 64)
    scale = float(np.clip(min(h, w) / 400.0, 0.4, 3.0))  # headers a bit larger than in-tile labels
    thickness = _thickness(scale)
    margin = max(3, int(round(6 * scale)))
    _, text_h, baseline = _text_size("Hg", scale, thickness)
    line_h = text_h + baseline
    black: Color = (0, 0, 0)

    fitted_rows: list[tuple[str, float]] = []
    label_w = 0
    if row_labels is not None:
        fitted_rows = [_fit_text(t, w, scale, thickness) for t in row_labels]
        widths = [_text_size(t, s, thickness)[0] for t, s in fitted_rows if t]
        label_w = (max(widths) if widths else 0) + 2 * margin
    header_h = line_h + 2 * margin if col_labels is not None else 0

    x0 = pad + (label_w + pad if row_labels is not None else 0)
    y0 = pad + (header_h + pad if col_labels is not None else 0)
    sheet = np.full((y0 + nrows * (h + pad), x0 + ncols * (w + pad), 3), 255, dtype=np.uint8)
    _paste_tiles(sheet, [len(row) for row in rows], tiles, x0, y0, pad)
    if col_labels is not None:
        for c, label in enumerate(col_labels):
            text, s = _fit_text(label, w - 2 * margin, scale, thickness)
            if text:
                tw, th, _ = _text_size(text, s, thickness)
                x = x0 + c * (w + pad) + (w - tw) // 2
                _put_text(sheet, text, (x, pad + margin + th), s, thickness, black)
    for r, (text, s) in enumerate(fitted_rows):
        if text:
            _, th, bl = _text_size(text, s, thickness)
            y = y0 + r * (h + pad) + (h + th - bl) // 2
            _put_text(sheet, text, (pad + margin, y), s, thickness, black)
    return sheet


def _paste_tiles(
    sheet: np.ndarray, lengths: list[int], tiles: list[np.ndarray], x0: int, y0: int, pad: int
) -> None:
    """Paste ``tiles`` (row-major, ``lengths[r]`` in row ``r``) into ``sheet`` from ``(x0, y0)``."""
    h, w = tiles[0].shape[:2]
    k = 0
    for r, length in enumerate(lengths):
        for c in range(length):
            y, x = y0 + r * (h + pad), x0 + c * (w + pad)
            sheet[y : y + h, x : x + w] = tiles[k]
            k += 1


def _check_row(row: object) -> Sequence[ArrayLike]:
    if isinstance(row, (np.ndarray, torch.Tensor, str)) or not isinstance(row, Sequence):
        raise TypeError(f"each row must be a list of images, got {type(row).__name__}")
    return row


def _check_labels(labels: Sequence[str] | None, n: int, name: str, what: str) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {labels!r}")
    if len(labels) != n:
        raise ValueError(f"{name} must have one label per {what} ({n}), got {len(labels)}")
    bad = [label for label in labels if not isinstance(label, str)]
    if bad:
        raise TypeError(f"{name} must be strings, got {bad!r}")
    return list(labels)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def save_image(path: str | os.PathLike[str], image_uint8: ArrayLike, quality: int = 95) -> None:
    """Write an RGB image to ``.jpg``/``.png`` (also ``.jpeg``, ``.bmp``, ``.tif(f)``, ``.webp``).

    The image is converted with :func:`to_uint8_image` and written by
    :func:`lightning_cam.tools.image_io.save_image`: atomically (encoded in memory, written to a
    temporary file in the same directory, moved into place with ``os.replace``; on any failure
    the temporary file is deleted), so ``path`` is either the complete new image or untouched.
    The directory must exist.

    Args:
        path: destination file; its extension picks the format.
        image_uint8: ``(H, W, 3)`` ``uint8`` RGB image (anything :func:`to_uint8_image` accepts).
        quality: 0..100, for ``.jpg`` and ``.webp`` (``.webp`` at 100 is lossless); ignored by
            the lossless formats.

    Raises:
        ValueError: unknown extension or ``quality`` out of range.
        OSError: the file cannot be written (the message names ``path``).

    Example:
        >>> import numpy as np, tempfile, os
        >>> save_image(os.path.join(tempfile.mkdtemp(), "x.png"), np.zeros((4, 4, 3), np.uint8))
    """
    image_io.save_image(path, to_uint8_image(image_uint8), quality)
