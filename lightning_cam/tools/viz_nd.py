"""Pictures of explanations of 1-D, 3-D and video inputs (2-D images are :mod:`viz`'s).

Which picture fits an input follows from its spatial rank (:func:`picture_kind`):

* a signal ``(C, L)`` with a map ``(L,)``: :func:`signal_band`, the signal plotted over the map
  as a translucent coloured background, with the map again as an opaque colour band under the
  plot (matplotlib, headless ``Agg``);
* a volume ``(C, D, H, W)`` with a map ``(D, H, W)``: :func:`volume_slices`, the three
  orthogonal slices (axial, coronal, sagittal) through the map's peak, and
  :func:`volume_montage`, evenly spaced slices along one axis;
* a video ``(C, T, H, W)`` with a map ``(T, H, W)``: :func:`video_frames` (one overlay per
  frame, ``(T, H, W, 3)``), :func:`video_strip` (evenly spaced frames side by side),
  :func:`encode_gif` / :func:`save_gif` (an animated GIF) and :func:`video_tensor` (the frames
  as TensorBoard's ``add_video`` takes them, ``(1, T, 3, H, W)``).

Guided backprop and guided Grad-CAM (input gradients of the input's shape) get the same
pictures, the gradient shown as an image normalised over the whole input as the 2-D guided
picture is (:func:`lightning_cam.tools.viz.gradients_to_image`): :func:`guided_slices` (a
volume), :func:`guided_frames` / :func:`guided_strip` (a video) and :func:`guided_signal` (a
signal with its gradient plotted per channel under it).

The input is shown on one scale for the whole volume or video (``mean``/``std`` undone, else as
is within ``[0, 1]``, else min-max over the whole input), and maps in ``[0, 1]`` keep their scale
across slices and frames: a faint slice looks faint. Every picture is a new ``uint8`` RGB array.

Example:
    >>> import torch
    >>> volume, cam = torch.rand(1, 12, 16, 20), torch.zeros(12, 16, 20)
    >>> cam[3, 4, 5] = 1.0
    >>> peak_index(cam)
    (3, 4, 5)
    >>> volume_slices(volume, cam, size=32).shape[0]
    36
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from lightning_cam.tools import viz
from lightning_cam.tools.viz import ArrayLike

__all__ = [
    "PLANES",
    "encode_gif",
    "guided_frames",
    "guided_signal",
    "guided_slices",
    "guided_strip",
    "peak_index",
    "picture_kind",
    "save_gif",
    "signal_band",
    "video_frames",
    "video_strip",
    "video_tensor",
    "volume_montage",
    "volume_slices",
]

#: The orthogonal planes of a ``(D, H, W)`` volume: the axis each one cuts, in order.
PLANES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}

_AXIS_LETTER = ("z", "y", "x")


def picture_kind(
    spatial_rank: int, third_axis: Literal["depth", "time"] = "depth"
) -> Literal["signal", "image", "volume", "video"]:
    """The picture for inputs of ``spatial_rank`` spatial axes: ``"signal"`` (1), ``"image"``
    (2), ``"volume"`` or ``"video"`` (3; ``third_axis`` says which the first axis is).

    Raises:
        ValueError: Another rank, or an unknown ``third_axis``.

    Example:
        >>> picture_kind(1), picture_kind(3, "time")
        ('signal', 'video')
    """
    if third_axis not in ("depth", "time"):
        raise ValueError(f"third_axis must be 'depth' or 'time', got {third_axis!r}")
    if spatial_rank == 1:
        return "signal"
    if spatial_rank == 2:
        return "image"
    if spatial_rank == 3:
        return "volume" if third_axis == "depth" else "video"
    raise ValueError(
        f"no picture for inputs of {spatial_rank} spatial axes: expected 1 (B, C, L), "
        "2 (B, C, H, W) or 3 (B, C, D, H, W) / (B, C, T, H, W)"
    )


# --------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------


def _numpy(x: object, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _map(cam: object, rank: int, what: str) -> np.ndarray:
    """A map as a float ``rank``-D array in ``[0, 1]`` (uint8 levels / 255; NaN -> 0)."""
    arr = _numpy(cam, "cam")
    shape = tuple(arr.shape)
    while arr.ndim > rank and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != rank or arr.size == 0:
        raise ValueError(f"cam must be a non-empty {what} map, got shape {shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"cam must hold numbers, got dtype {arr.dtype}")
    out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0)


def _display(
    x: object,
    spatial: int,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
) -> np.ndarray:
    """An input ``(C, *S)`` as float ``(*S, 3)`` in ``[0, 1]`` on one scale for the whole input.

    One channel is grey, three are RGB; with another number of channels (the modalities of an
    MRI, ...) the first channel is shown.
    """
    arr = _numpy(x, "input")
    shape = tuple(arr.shape)
    if arr.ndim == spatial:
        arr = arr[None]
    if arr.ndim != spatial + 1 or arr.size == 0:
        raise ValueError(
            f"the input must be channel-first (C, {spatial} spatial axes) or without the channel "
            f"axis, got shape {shape}"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"the input must hold numbers, got dtype {arr.dtype}")
    c = arr.shape[0]
    x64 = np.nan_to_num(arr.astype(np.float64))
    if mean is not None or std is not None:
        if arr.dtype == np.uint8:
            raise TypeError("mean/std were given but the input is uint8 (already display range)")
        bshape = (-1,) + (1,) * spatial
        m, s = (_per_channel(v, d, c, name) for v, d, name in ((mean, 0.0, "mean"),
                                                                (std, 1.0, "std")))  # fmt: skip
        x64 = x64 * s.reshape(bshape) + m.reshape(bshape)
    elif arr.dtype == np.uint8:
        x64 = x64 / 255.0
    elif x64.min() < 0.0 or x64.max() > 1.0:
        lo, hi = float(x64.min()), float(x64.max())
        x64 = (x64 - lo) / (hi - lo) if hi > lo else np.zeros_like(x64)
    x64 = np.clip(x64, 0.0, 1.0)
    rgb = x64 if c == 3 else np.repeat(x64[:1], 3, axis=0)
    return np.moveaxis(rgb, 0, -1).astype(np.float32)


def _per_channel(value: object, default: float, channels: int, name: str) -> np.ndarray:
    v = np.asarray(default if value is None else value, np.float64).ravel()
    if v.size not in (1, channels):
        raise ValueError(
            f"{name} has {v.size} values for an input of {channels} channel(s): give one value "
            f"or {channels}"
        )
    return np.broadcast_to(v, (channels,))


def _blend(image01: np.ndarray, cam01: np.ndarray, alpha: float, colormap: str) -> np.ndarray:
    """``(H, W, 3)`` in [0, 1] and a ``(H, W)`` map of the same size -> uint8 overlay (the map
    keeps its absolute level: no per-slice normalisation)."""
    heat = viz.colorize(cam01, colormap).astype(np.float32)
    out = (1.0 - alpha) * image01 * 255.0 + alpha * heat
    return np.round(out).clip(0, 255).astype(np.uint8)


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return float(alpha)


def _same_grid(display: np.ndarray, cam: np.ndarray, what: str) -> None:
    if display.shape[:-1] != cam.shape:
        raise ValueError(
            f"the map {cam.shape} and the {what} {display.shape[:-1]} must have the same "
            "spatial shape: upsample the map to the input (Explainer(..., upsample=True))"
        )


def _scale(tile: np.ndarray, height: int) -> np.ndarray:
    """``tile`` scaled to ``height`` rows, aspect kept (nearest: voxels stay crisp)."""
    import cv2

    h, w = tile.shape[:2]
    if h == height:
        return tile
    width = max(1, round(w * height / h))
    interp = cv2.INTER_NEAREST if height > h else cv2.INTER_AREA
    return cv2.resize(tile, (width, height), interpolation=interp)


def _row(tiles: Sequence[np.ndarray], padding: int = 2, fill: int = 255) -> np.ndarray:
    """Tiles of one height side by side with ``padding`` between and around them."""
    h = tiles[0].shape[0]
    width = sum(t.shape[1] for t in tiles) + padding * (len(tiles) + 1)
    out = np.full((h + 2 * padding, width, 3), fill, np.uint8)
    x = padding
    for t in tiles:
        out[padding : padding + h, x : x + t.shape[1]] = t
        x += t.shape[1] + padding
    return out


# --------------------------------------------------------------------------------------------
# volumes
# --------------------------------------------------------------------------------------------


def peak_index(cam: ArrayLike) -> tuple[int, ...]:
    """The index of a map's largest value (NaN ignored; the centre of a constant map; of a
    plateau of maxima, the one closest to its centroid).

    Example:
        >>> import numpy as np
        >>> peak_index(np.zeros((3, 5, 7)))
        (1, 2, 3)
    """
    arr = np.nan_to_num(_numpy(cam, "cam").astype(np.float64), nan=-np.inf)
    if arr.size == 0:
        raise ValueError("peak_index needs a non-empty map")
    if not np.isfinite(arr).any() or float(arr.max()) <= float(arr.min()):
        return tuple(s // 2 for s in arr.shape)
    # a plateau of maxima (a saturated map): the maximum closest to the plateau's centroid
    at = np.argwhere(arr == arr.max())
    best = at[int(np.argmin(((at - at.mean(0)) ** 2).sum(1)))]
    return tuple(int(i) for i in best)


def _cut(x: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(x, index, axis=axis)


def volume_slices(
    volume: ArrayLike,
    cam: ArrayLike,
    index: Sequence[int] | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
    size: int = 128,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    labels: bool = True,
) -> np.ndarray:
    """The axial, coronal and sagittal slices through ``index`` (the map's peak by default),
    each the volume with the map blended over it, side by side.

    The axial slice is ``volume[:, z]`` (``H x W``), the coronal ``volume[:, :, y]``
    (``D x W``), the sagittal ``volume[:, :, :, x]`` (``D x H``); each is scaled to ``size``
    rows, aspect kept, and labelled with its plane and index (``axial z=3``).

    Args:
        volume: ``(C, D, H, W)`` or ``(D, H, W)`` (numpy or torch), C = 1 (grey), 3 (RGB) or
            any other (the first channel is shown).
        cam: ``(D, H, W)`` map in ``[0, 1]`` of the volume's shape (uint8 levels accepted).
        index: ``(z, y, x)`` the slices go through; ``None``: :func:`peak_index` of ``cam``.
        alpha: Weight of the heatmap in ``[0, 1]`` (1: the heatmap alone).
        colormap: A name in :data:`lightning_cam.tools.viz.COLORMAPS`.
        size: Height of each slice picture in pixels.
        mean: Per-channel mean to undo (with ``std``), or ``None``.
        std: Per-channel standard deviation to undo, or ``None``.
        labels: Write the plane and index on each slice.

    Returns:
        ``(size + 4, W', 3)`` ``uint8`` RGB: the three slices with 2 px white padding.

    Raises:
        TypeError, ValueError: Bad shapes (the map and the volume must share ``(D, H, W)``),
            an index outside the volume, a bad ``alpha``, ``size`` or colormap.
    """
    a = _check_alpha(alpha)
    cam01 = _map(cam, 3, "(D, H, W)")
    disp = _display(volume, 3, mean, std)
    _same_grid(disp, cam01, "volume")
    at = _slice_index(cam01 if index is None else None, index, cam01.shape)
    return _orthogonal(
        lambda axis: _blend(_cut(disp, axis, at[axis]), _cut(cam01, axis, at[axis]), a,
                            colormap),
        at, size, labels,
    )  # fmt: skip


def _slice_index(
    peak_of: np.ndarray | None, index: Sequence[int] | None, shape: tuple[int, ...]
) -> tuple[int, ...]:
    """``index`` as ``(z, y, x)`` inside ``shape``, or :func:`peak_index` of ``peak_of``."""
    at = peak_index(peak_of) if peak_of is not None else tuple(int(i) for i in index or ())
    if len(at) != 3 or any(not 0 <= i < s for i, s in zip(at, shape, strict=True)):
        raise ValueError(f"index must be (z, y, x) inside {tuple(shape)}, got {index!r}")
    return at


def _orthogonal(
    tile_of: Callable[[int], np.ndarray], at: tuple[int, ...], size: int, labels: bool
) -> np.ndarray:
    """The axial, coronal and sagittal tiles (``tile_of(axis)``) scaled to ``size`` rows,
    labelled with their plane and index, side by side."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    tiles = []
    for plane, axis in PLANES.items():
        tile = _scale(tile_of(axis), size)
        if labels:
            tile = viz.draw_label(tile, f"{plane} {_AXIS_LETTER[axis]}={at[axis]}")
        tiles.append(tile)
    return _row(tiles)


def _spread(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices of ``range(n)`` (their cells' centres), all when ``k >= n``."""
    if k >= n:
        return list(range(n))
    return [int((i + 0.5) * n / k) for i in range(k)]


def volume_montage(
    volume: ArrayLike,
    cam: ArrayLike,
    axis: int | str = "axial",
    num_slices: int = 8,
    ncol: int = 4,
    alpha: float = 0.5,
    colormap: str = "jet",
    size: int = 96,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> np.ndarray:
    """``num_slices`` evenly spaced slices along ``axis``, the map blended over each, in a grid
    of ``ncol`` columns, each labelled with its index (``z=5``).

    Args:
        volume: ``(C, D, H, W)`` or ``(D, H, W)``, as for :func:`volume_slices`.
        cam: ``(D, H, W)`` map in ``[0, 1]`` of the volume's shape.
        axis: ``"axial"`` / ``"coronal"`` / ``"sagittal"`` or 0 / 1 / 2.
        num_slices: How many slices (all when the axis has fewer).
        ncol: Slices per row.
        alpha: Weight of the heatmap in ``[0, 1]``.
        colormap: A name in :data:`lightning_cam.tools.viz.COLORMAPS`.
        size: Height of each slice picture in pixels.
        mean: Per-channel mean to undo, or ``None``.
        std: Per-channel standard deviation to undo, or ``None``.

    Returns:
        ``(H', W', 3)`` ``uint8`` RGB grid.

    Raises:
        TypeError, ValueError: Bad shapes, axis, counts, ``alpha`` or colormap.

    Example:
        >>> import numpy as np
        >>> volume_montage(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), num_slices=4,
        ...                ncol=2, size=16).shape
        (38, 38, 3)
    """
    a = _check_alpha(alpha)
    ax = PLANES.get(axis, -1) if isinstance(axis, str) else axis
    if isinstance(ax, bool) or ax not in (0, 1, 2):
        raise ValueError(f"axis must be one of {list(PLANES)} or 0, 1, 2, got {axis!r}")
    for name, value in (("num_slices", num_slices), ("ncol", ncol), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    cam01 = _map(cam, 3, "(D, H, W)")
    disp = _display(volume, 3, mean, std)
    _same_grid(disp, cam01, "volume")
    tiles = []
    for i in _spread(cam01.shape[ax], num_slices):
        tile = _scale(_blend(_cut(disp, ax, i), _cut(cam01, ax, i), a, colormap), size)
        tiles.append(viz.draw_label(tile, f"{_AXIS_LETTER[ax]}={i}"))
    return viz.make_grid(tiles, ncol=ncol)


# --------------------------------------------------------------------------------------------
# videos
# --------------------------------------------------------------------------------------------


def video_frames(
    video: ArrayLike,
    cam: ArrayLike,
    alpha: float = 0.5,
    colormap: str = "jet",
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> np.ndarray:
    """One overlay per frame: the frames of ``video`` with the map blended over them.

    Args:
        video: ``(C, T, H, W)`` or ``(T, H, W)`` (numpy or torch), C = 1 or 3.
        cam: ``(T, H, W)`` map in ``[0, 1]`` of the video's shape.
        alpha: Weight of the heatmap in ``[0, 1]``.
        colormap: A name in :data:`lightning_cam.tools.viz.COLORMAPS`.
        mean: Per-channel mean to undo, or ``None``.
        std: Per-channel standard deviation to undo, or ``None``.

    Returns:
        ``(T, H, W, 3)`` ``uint8`` RGB frames.

    Raises:
        TypeError, ValueError: Bad shapes, ``alpha`` or colormap.

    Example:
        >>> import numpy as np
        >>> video_frames(np.zeros((3, 4, 8, 8)), np.ones((4, 8, 8))).shape
        (4, 8, 8, 3)
    """
    a = _check_alpha(alpha)
    cam01 = _map(cam, 3, "(T, H, W)")
    disp = _display(video, 3, mean, std)
    _same_grid(disp, cam01, "video")
    return np.stack([_blend(disp[t], cam01[t], a, colormap) for t in range(cam01.shape[0])])


def _frames(frames: ArrayLike) -> np.ndarray:
    arr = _numpy(frames, "frames")
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0:
        raise ValueError(
            f"frames must be uint8 (T, H, W, 3) with T >= 1 (video_frames gives them), got "
            f"{arr.dtype} {tuple(arr.shape)}"
        )
    return arr


def video_strip(
    frames: ArrayLike, num_frames: int = 8, size: int = 96, labels: bool = True
) -> np.ndarray:
    """``num_frames`` evenly spaced frames side by side, each labelled with its time index.

    Args:
        frames: ``(T, H, W, 3)`` ``uint8`` (:func:`video_frames`).
        num_frames: How many frames (all when the video has fewer).
        size: Height of each frame in pixels.
        labels: Write ``t=...`` on each frame.

    Returns:
        ``(size + 4, W', 3)`` ``uint8`` RGB.

    Example:
        >>> import numpy as np
        >>> video_strip(np.zeros((10, 8, 8, 3), np.uint8), num_frames=4, size=16).shape
        (20, 74, 3)
    """
    arr = _frames(frames)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    tiles = []
    for t in _spread(arr.shape[0], num_frames):
        tile = _scale(arr[t], size)
        tiles.append(viz.draw_label(tile, f"t={t}") if labels else tile)
    return _row(tiles)


def video_tensor(frames: ArrayLike) -> torch.Tensor:
    """Frames ``(T, H, W, 3)`` uint8 as ``(1, T, 3, H, W)`` uint8, the layout of TensorBoard's
    ``SummaryWriter.add_video`` (and, without the batch axis, ``wandb.Video``)."""
    arr = _frames(frames)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))[None]


def encode_gif(frames: ArrayLike, fps: float = 4.0) -> bytes:
    """An animated, looping GIF of ``frames`` ``(T, H, W, 3)`` uint8 at ``fps`` frames a second
    (Pillow; GIF stores 256 colours a frame)."""
    from PIL import Image

    arr = _frames(frames)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    images = [Image.fromarray(f) for f in arr]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:],
        duration=max(20, round(1000 / fps)), loop=0, disposal=1,
    )  # fmt: skip
    return buf.getvalue()


def save_gif(path: str | os.PathLike[str], frames: ArrayLike, fps: float = 4.0) -> None:
    """Write :func:`encode_gif` of ``frames`` to ``path`` (atomically; folders created)."""
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    viz.write_atomic(path, encode_gif(frames, fps))


# --------------------------------------------------------------------------------------------
# guided gradients (guided backprop, guided Grad-CAM)
# --------------------------------------------------------------------------------------------


def _gradient(gradient: object, spatial: int) -> np.ndarray:
    """A gradient ``(C, *S)`` (or ``(*S)``) as a float array of its own, channel first."""
    arr = _numpy(gradient, "gradient")
    shape = tuple(arr.shape)
    if arr.ndim == spatial:
        arr = arr[None]
    if arr.ndim != spatial + 1 or arr.size == 0:
        raise ValueError(
            f"the gradient must be channel-first (C, {spatial} spatial axes), as the input, "
            f"or without the channel axis, got shape {shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"the gradient must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _guided_rgb(gradient: object, spatial: int, mode: Literal["std", "minmax"]) -> np.ndarray:
    """A gradient ``(C, *S)`` as ``uint8`` ``(*S, 3)``, normalised over all its values at once
    by :func:`viz.gradients_to_image` (the 2-D guided picture's rule, one scale for every slice
    and frame); three channels are RGB, others grey of the first channel (normalised with the
    others), as the input is shown (:func:`volume_slices`)."""
    arr = _gradient(gradient, spatial)
    c, grid = arr.shape[0], arr.shape[1:]
    rows = int(np.prod(grid[:-1]))
    # the whole gradient as one image: gradients_to_image's mean/std (min/max) are global
    flat = arr.reshape(3 if c == 3 else 1, -1, grid[-1])
    picture = viz.gradients_to_image(torch.from_numpy(flat), mode)[:rows]
    return picture.reshape(*grid, 3)


def guided_slices(
    gradient: ArrayLike,
    index: Sequence[int] | None = None,
    size: int = 128,
    labels: bool = True,
    mode: Literal["std", "minmax"] = "std",
) -> np.ndarray:
    """A volume's guided gradient (guided backprop or guided Grad-CAM) as its axial, coronal
    and sagittal slices through ``index``, side by side, as :func:`volume_slices` draws the
    map (pass the map's :func:`peak_index` to cut the same slices).

    The gradient is normalised over the whole volume as the 2-D guided picture is
    (:func:`lightning_cam.tools.viz.gradients_to_image`; ``"std"``: ``0.5 + 0.1 (g - mean) /
    std``, grey where the gradient is its mean): a slice with little gradient looks flat.

    Args:
        gradient: ``(C, D, H, W)`` or ``(D, H, W)`` (numpy or torch), the input's shape; C = 3
            is RGB, other counts show the first channel.
        index: ``(z, y, x)`` the slices go through; ``None``: the peak of the gradient's
            magnitude ``sum_c |g_c|``.
        size: Height of each slice picture in pixels.
        labels: Write the plane and index on each slice.
        mode: ``"std"`` or ``"minmax"`` (:func:`~lightning_cam.tools.viz.gradients_to_image`).

    Returns:
        ``(size + 4, W', 3)`` ``uint8`` RGB.

    Raises:
        TypeError, ValueError: A bad shape, dtype, index, size or mode.

    Example:
        >>> import numpy as np
        >>> g = np.zeros((1, 4, 8, 8)); g[0, 1, 2, 3], g[0, 3, 0, 0] = 1.0, -1.0
        >>> picture = guided_slices(g, index=(1, 2, 3), size=8, labels=False)
        >>> int(picture[2 + 2, 2 + 3, 0]), int(picture[2, 2, 0])  # +1 white, 0 (the mean) grey
        (255, 128)
    """
    picture = _guided_rgb(gradient, 3, mode)
    grid = picture.shape[:3]
    magnitude = np.abs(_gradient(gradient, 3)).sum(0) if index is None else None
    at = _slice_index(magnitude, index, grid)
    return _orthogonal(lambda axis: _cut(picture, axis, at[axis]), at, size, labels)


def guided_frames(gradient: ArrayLike, mode: Literal["std", "minmax"] = "std") -> np.ndarray:
    """A video's guided gradient ``(C, T, H, W)`` as one picture per frame ``(T, H, W, 3)``
    ``uint8``, normalised over the whole clip as :func:`guided_slices` (for
    :func:`video_strip`, :func:`save_gif`, :func:`video_tensor`).

    Example:
        >>> import numpy as np
        >>> guided_frames(np.zeros((3, 4, 8, 8))).shape
        (4, 8, 8, 3)
    """
    return _guided_rgb(gradient, 3, mode)


def guided_strip(
    gradient: ArrayLike,
    num_frames: int = 8,
    size: int = 96,
    labels: bool = True,
    mode: Literal["std", "minmax"] = "std",
) -> np.ndarray:
    """``num_frames`` evenly spaced frames of a video's guided gradient side by side
    (:func:`video_strip` of :func:`guided_frames`), each labelled with its time index."""
    return video_strip(guided_frames(gradient, mode), num_frames=num_frames, size=size,
                       labels=labels)  # fmt: skip


# --------------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------------


def _signal(signal: object) -> np.ndarray:
    arr = _numpy(signal, "signal")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"signal must be (C, L) or (L,), got shape {tuple(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"signal must hold numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def signal_band(
    signal: ArrayLike,
    cam: ArrayLike,
    mask: ArrayLike | None = None,
    colormap: str = "jet",
    alpha: float = 0.35,
    width: int = 512,
    height: int = 160,
    title: str | None = None,
    max_channels: int = 8,
) -> np.ndarray:
    """A signal plotted over its map: the map as a translucent coloured background behind the
    curves and as an opaque colour band under the plot (sample ``i`` covers ``[i, i + 1)`` on
    the x axis in both), and the ground truth, when given, as a black bar under the band.

    Args:
        signal: ``(C, L)`` or ``(L,)``; one curve per channel (the first ``max_channels``).
        cam: ``(L,)`` map in ``[0, 1]`` (uint8 levels accepted).
        mask: Optional ``(L,)`` ground truth (truthy where the evidence is).
        colormap: A name in :data:`lightning_cam.tools.viz.COLORMAPS` (the same colours as the
            image overlays).
        alpha: Opacity of the background behind the curves (the band is opaque).
        width: Picture width in pixels.
        height: Picture height in pixels.
        title: Optional title (a caption: prediction, label).
        max_channels: Most curves drawn.

    Returns:
        ``(height, width, 3)`` ``uint8`` RGB.

    Raises:
        TypeError, ValueError: Bad shapes (map and mask of the signal's length), sizes,
            ``alpha`` or colormap.

    Example:
        >>> import numpy as np
        >>> t = np.linspace(0, 6.28, 100)
        >>> signal_band(np.sin(t), np.exp(-(t - 3) ** 2), width=200, height=100).shape
        (100, 200, 3)
    """
    a = _check_alpha(alpha)
    sig = _signal(signal)
    cam01 = _map(cam, 1, "(L,)")
    length = sig.shape[1]
    if cam01.shape[0] != length:
        raise ValueError(
            f"the map has {cam01.shape[0]} samples for a signal of {length}: upsample the map "
            "to the input (Explainer(..., upsample=True))"
        )
    truth = None
    if mask is not None:
        raw = _numpy(mask, "mask")
        truth = raw.reshape(-1).astype(bool)
        if truth.shape[0] != length:
            raise ValueError(f"mask must be ({length},), got shape {tuple(raw.shape)}")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 48:
            raise ValueError(f"{name} must be an int >= 48, got {value!r}")
    band = viz.colorize(cam01[None, :], colormap)  # (1, L, 3): the same colours as overlays
    return _plot(sig[:max_channels], band, truth, a, width, height, title)


def _plot(
    sig: np.ndarray,
    band: np.ndarray,
    truth: np.ndarray | None,
    alpha: float,
    width: int,
    height: int,
    title: str | None,
) -> np.ndarray:
    """Draw :func:`signal_band`'s figure with matplotlib's Agg canvas (no display, no pyplot
    state) and return its pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    rows = [6, 1] + ([0.5] if truth is not None else [])
    axes = fig.subplots(len(rows), 1, sharex=True, gridspec_kw={"height_ratios": rows,
                                                                 "hspace": 0.08})  # fmt: skip
    length = sig.shape[1]
    x = np.arange(length) + 0.5
    lo, hi = float(sig.min()), float(sig.max())
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax = axes[0]
    ax.imshow(band, extent=(0, length, lo - pad, hi + pad), aspect="auto", alpha=alpha,
              interpolation="nearest")  # fmt: skip
    for c in range(sig.shape[0]):
        ax.plot(x, sig[c], color="black" if sig.shape[0] == 1 else None, linewidth=1.0)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(0, length)
    ax.tick_params(labelsize=6, labelbottom=False)
    if title:
        ax.set_title(title, fontsize=7)
    axes[1].imshow(band, extent=(0, length, 0, 1), aspect="auto", interpolation="nearest")
    axes[1].set_yticks([])
    if truth is not None:
        strip = np.where(truth, 0, 255).astype(np.uint8)[None, :, None].repeat(3, axis=2)
        axes[2].imshow(strip, extent=(0, length, 0, 1), aspect="auto", interpolation="nearest")
        axes[2].set_yticks([])
    axes[-1].tick_params(labelsize=6)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.87 if title else 0.97, bottom=0.14)
    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[attr-defined]
    return np.ascontiguousarray(rgba[..., :3])


def _guided_curves(
    gradient: np.ndarray, mode: Literal["std", "minmax"]
) -> tuple[np.ndarray, float]:
    """The 2-D guided picture's normalisation (:func:`viz.gradients_to_image`) without its
    8-bit rounding, and the level a zero gradient gets: ``"std"``: ``(g - mean) / std`` over
    all channels, clipped to ``[-5, 5]`` (the image's ``0.5 + 0.1 z`` clipped to ``[0, 1]``);
    ``"minmax"``: ``(g - min) / (max - min)``. A constant gradient is all zero in both."""
    g = np.nan_to_num(gradient, nan=0.0)
    if mode == "std":
        mean, sd = float(g.mean()), float(g.std())
        if sd <= 0:
            return np.zeros_like(g), 0.0
        return np.clip((g - mean) / sd, -5.0, 5.0), float(np.clip(-mean / sd, -5.0, 5.0))
    lo, hi = float(g.min()), float(g.max())
    if hi <= lo:
        return np.zeros_like(g), 0.0
    return (g - lo) / (hi - lo), float(np.clip(-lo / (hi - lo), 0.0, 1.0))


def guided_signal(
    signal: ArrayLike,
    gradient: ArrayLike,
    width: int = 512,
    height: int = 200,
    title: str | None = None,
    max_channels: int = 8,
    mode: Literal["std", "minmax"] = "std",
) -> np.ndarray:
    """A signal with its guided gradient (guided backprop or guided Grad-CAM) plotted per
    channel under it, on a shared time axis (channel ``c`` has the same colour in both).

    The gradient is normalised over all channels as the 2-D guided picture is
    (:func:`lightning_cam.tools.viz.gradients_to_image`; ``"std"``: ``(g - mean) / std``,
    clipped to ``+-5``), and a dotted line marks where the gradient is zero.

    Args:
        signal: ``(C, L)`` or ``(L,)``.
        gradient: The input gradient, of the signal's shape.
        width: Picture width in pixels.
        height: Picture height in pixels.
        title: Optional title (a caption: prediction, label).
        max_channels: Most curves drawn in each panel.
        mode: ``"std"`` or ``"minmax"``.

    Returns:
        ``(height, width, 3)`` ``uint8`` RGB.

    Raises:
        TypeError, ValueError: A gradient of another shape, bad sizes or mode.

    Example:
        >>> import numpy as np
        >>> t = np.linspace(0, 6.28, 100)
        >>> guided_signal(np.sin(t), np.cos(t), width=200, height=100).shape
        (100, 200, 3)
    """
    if mode not in ("std", "minmax"):
        raise ValueError(f"mode must be 'std' or 'minmax', got {mode!r}")
    sig = _signal(signal)
    grad = _gradient(gradient, 1)
    if grad.shape != sig.shape:
        raise ValueError(
            f"the gradient {tuple(grad.shape)} must have the signal's shape {tuple(sig.shape)}"
        )
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 48:
            raise ValueError(f"{name} must be an int >= 48, got {value!r}")
    curves, level = _guided_curves(grad, mode)
    return _plot_guided(sig[:max_channels], curves[:max_channels], level, mode, width, height,
                        title)  # fmt: skip


def _plot_guided(
    sig: np.ndarray,
    curves: np.ndarray,
    zero: float,
    mode: str,
    width: int,
    height: int,
    title: str | None,
) -> np.ndarray:
    """Draw :func:`guided_signal`'s figure (matplotlib's Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2], "hspace": 0.1})
    length = sig.shape[1]
    x = np.arange(length) + 0.5
    one = sig.shape[0] == 1
    for ax, values, name in ((axes[0], sig, "signal"), (axes[1], curves, f"guided ({mode})")):
        for c in range(values.shape[0]):
            ax.plot(x, values[c], color=("black" if ax is axes[0] else "tab:red") if one
                    else f"C{c}", linewidth=1.0)  # fmt: skip
        ax.set_ylabel(name, fontsize=6)
        ax.tick_params(labelsize=6)
    axes[1].axhline(zero, color="grey", linestyle=":", linewidth=0.8)
    axes[0].tick_params(labelbottom=False)
    axes[0].set_xlim(0, length)
    if title:
        axes[0].set_title(title, fontsize=7)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.88 if title else 0.97, bottom=0.12)
    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[attr-defined]
    return np.ascontiguousarray(rgba[..., :3])
