"""Rendering for inputs that are not 2-D images: signals ``(B, C, L)``, volumes
``(B, C, D, H, W)`` and videos ``(B, C, T, H, W)``. The picture follows from the input's rank
(and ``third_axis`` for three spatial axes); pure presentation, as :mod:`render`.

Tags, for each method and layer and each of the kinds ``overlay`` / ``heatmap`` (the heatmap
is the map alone, ``alpha = 1``):

* signals: ``{method}/{layer}/{kind}``, the signal plots of the probes, one under the other;
* volumes: ``{method}/{layer}/{kind}_slices`` (one row of orthogonal slices through each
  probe's map peak) and ``{method}/{layer}/{kind}_montage`` (one row of axial slices each);
* videos: ``{method}/{layer}/{kind}_strip`` (one row of frames each) and
  ``{method}/{layer}/{kind}_video``: ``(T, H, W, 3)`` frames, the probes side by side, which
  the sinks log as videos (TensorBoard, W&B) or GIF files.

and for the guided kinds ``guided_backprop`` / ``guided_gradcam`` (the input gradient as an
image, normalised as the 2-D guided picture, :func:`lightning_cam.tools.viz.gradients_to_image`):

* signals: ``{method}/{layer}/{kind}``, each signal with its gradient plotted per channel
  under it (:func:`~lightning_cam.tools.viz_nd.guided_signal`);
* volumes: ``{method}/{layer}/{kind}_slices``, the gradient's orthogonal slices through the
  peak of the method's map, the slices of ``overlay_slices``
  (:func:`~lightning_cam.tools.viz_nd.guided_slices`);
* videos: ``{method}/{layer}/{kind}_strip``, frames of the gradient
  (:func:`~lightning_cam.tools.viz_nd.guided_strip`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lightning_cam.callbacks.options import CAMOptions
from lightning_cam.callbacks.render import resize_tile, tile_labels
from lightning_cam.engine import Explanation
from lightning_cam.tools import viz, viz_nd

#: The picture kinds of :func:`render_nd` drawn from the maps (the others are guided).
MAP_KINDS: tuple[str, ...] = ("heatmap", "overlay")


def spatial_kind(images: torch.Tensor, options: CAMOptions) -> str:
    """``"signal"``, ``"image"``, ``"volume"`` or ``"video"`` for probe inputs ``(B, C, *S)``."""
    return viz_nd.picture_kind(images.dim() - 2, options.third_axis)  # type: ignore[arg-type]


def _caption(picture: np.ndarray, text: str) -> np.ndarray:
    """``picture`` under a white strip with ``text`` (a probe's caption)."""
    if not text:
        return picture
    strip = np.full((18, picture.shape[1], 3), 255, np.uint8)
    strip = viz.draw_label(strip, text, background=(255, 255, 255), color=(0, 0, 0))
    return np.concatenate([strip, picture], axis=0)


def _stack(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Pictures one under the other (right-padded in white to the widest)."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
              for r in rows]  # fmt: skip
    return np.concatenate(padded, axis=0)


def _mask(probes: Mapping[str, torch.Tensor], i: int, shape: tuple[int, ...]) -> np.ndarray | None:
    masks = probes.get("mask")
    if masks is None or tuple(masks.shape[1:]) != shape:
        return None
    return masks[i].cpu().numpy().astype(bool)


def _signals(images: torch.Tensor, cams: torch.Tensor, probes: Mapping[str, torch.Tensor],
             captions: list[str], options: CAMOptions, alpha: float) -> np.ndarray:  # fmt: skip
    size = options.tile_size
    rows = [
        viz_nd.signal_band(
            images[i], cams[i], mask=_mask(probes, i, tuple(cams.shape[1:])),
            colormap=options.colormap, alpha=alpha, width=max(384, 4 * size),
            height=max(144, size), title=captions[i] or None,
        )  # fmt: skip
        for i in range(cams.shape[0])
    ]
    return _stack(rows)


def _volumes(images: torch.Tensor, cams: torch.Tensor, captions: list[str],
             options: CAMOptions, alpha: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    kw: dict[str, Any] = {"alpha": alpha, "colormap": options.colormap, "mean": options.mean,
                          "std": options.std}  # fmt: skip
    slices, montages = [], []
    for i in range(cams.shape[0]):
        slices.append(_caption(viz_nd.volume_slices(images[i], cams[i], size=options.tile_size,
                                                    **kw), captions[i]))  # fmt: skip
        montage = viz_nd.volume_montage(images[i], cams[i], num_slices=8, ncol=8,
                                        size=max(32, options.tile_size // 2), **kw)  # fmt: skip
        montages.append(_caption(montage, captions[i]))
    return _stack(slices), _stack(montages)


def _videos(images: torch.Tensor, cams: torch.Tensor, captions: list[str],
            options: CAMOptions, alpha: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    kw: dict[str, Any] = {"alpha": alpha, "colormap": options.colormap, "mean": options.mean,
                          "std": options.std}  # fmt: skip
    frames = [viz_nd.video_frames(images[i], cams[i], **kw) for i in range(cams.shape[0])]
    strip = _stack([_caption(viz_nd.video_strip(f, size=options.tile_size), captions[i])
                    for i, f in enumerate(frames)])  # fmt: skip
    ncol = min(len(frames), 4)
    video = np.stack([
        viz.make_grid([resize_tile(f[t], options.tile_size) for f in frames], ncol=ncol)
        for t in range(frames[0].shape[0])
    ])  # fmt: skip
    return strip, video


def _guided(result: Explanation, what: str, method: str, layer: str, n: int) -> torch.Tensor:
    """The first ``n`` input gradients of kind ``what`` (guided backprop, or guided Grad-CAM
    of ``method`` at ``layer``) ``(n, C, *S)``."""
    grads = result.guided if what == "guided_backprop" else (
        result.guided_cams.get(method, {}).get(layer))  # fmt: skip
    if grads is None:
        raise ValueError(f"log_{what}=True but the explanation holds no {what} gradients")
    return grads[:n].detach().float().cpu()


def _guided_pictures(kind: str, images: torch.Tensor, grads: torch.Tensor, cams: torch.Tensor,
                     captions: list[str], options: CAMOptions) -> np.ndarray:  # fmt: skip
    """One guided picture per probe (see the module docstring), one under the other."""
    size, rows = options.tile_size, []
    for i in range(grads.shape[0]):
        if kind == "signal":
            rows.append(viz_nd.guided_signal(
                images[i], grads[i], width=max(384, 4 * size), height=max(176, size),
                title=captions[i] or None,
            ))  # fmt: skip
            continue
        if kind == "volume":
            # the slices of overlay_slices: through the map's peak (the gradient's, without one)
            same = tuple(cams.shape[1:]) == tuple(grads.shape[2:])
            index = viz_nd.peak_index(cams[i]) if same else None
            picture = viz_nd.guided_slices(grads[i], index=index, size=size)
        else:
            picture = viz_nd.guided_strip(grads[i], size=size)
        rows.append(_caption(picture, captions[i]))
    return _stack(rows)


def render_nd(
    options: CAMOptions,
    probes: Mapping[str, torch.Tensor],
    result: Explanation,
    layers: Sequence[str],
    names: Sequence[str] | None,
) -> dict[str, np.ndarray]:
    """The pictures of signal, volume or video probes keyed by tag (see the module docstring):
    ``uint8`` ``(H, W, 3)`` images, and ``(T, H, W, 3)`` frames for the ``*_video`` tags."""
    images = probes["image"]
    kind = spatial_kind(images, options)
    n = min(options.num_samples, images.shape[0])
    x = images[:n].detach().cpu()
    x = x if x.dtype == torch.uint8 else x.float()
    captions = tile_labels(
        result, probes.get("label"), n, names, options.target != "pred", options.target
    )
    pictures: dict[str, np.ndarray] = {}
    for method in options.methods:
        for layer in layers:
            cams = result.cams[method][layer][:n].detach().float().cpu()
            for what in (k for k in options.kinds if k not in MAP_KINDS):
                tag = f"{method}/{layer}/{what}"
                grads = _guided(result, what, method, layer, n)
                suffix = {"signal": "", "volume": "_slices", "video": "_strip"}[kind]
                pictures[tag + suffix] = _guided_pictures(kind, x, grads, cams, captions,
                                                          options)  # fmt: skip
            for what in (k for k in options.kinds if k in MAP_KINDS):
                alpha = 1.0 if what == "heatmap" else options.alpha
                tag = f"{method}/{layer}/{what}"
                if kind == "signal":
                    pictures[tag] = _signals(x, cams, probes, captions, options,
                                             1.0 if what == "heatmap" else 0.35)  # fmt: skip
                elif kind == "volume":
                    pictures[f"{tag}_slices"], pictures[f"{tag}_montage"] = _volumes(
                        x, cams, captions, options, alpha
                    )
                else:
                    pictures[f"{tag}_strip"], pictures[f"{tag}_video"] = _videos(
                        x, cams, captions, options, alpha
                    )
    return pictures


def check_display(images: torch.Tensor, options: CAMOptions) -> None:
    """Draw a picture of the first probe with an empty map, so that an input the pictures
    cannot show (its mean/std of the wrong length, ...) is refused at the first batch.

    Raises:
        TypeError, ValueError: From the picture functions, naming the problem.
    """
    x = images[:1].detach().cpu()
    x = x if x.dtype == torch.uint8 else x.float()
    empty = torch.zeros(tuple(x.shape[2:]))
    kind = spatial_kind(x, options)
    kw: dict[str, Any] = {"colormap": options.colormap}
    if kind == "signal":
        viz_nd.signal_band(x[0], empty, width=192, height=96, **kw)
    elif kind == "volume":
        viz_nd.volume_slices(x[0], empty, size=16, mean=options.mean, std=options.std, **kw)
    elif kind == "video":
        viz_nd.video_frames(x[0, :, :1], empty[:1], mean=options.mean, std=options.std, **kw)
