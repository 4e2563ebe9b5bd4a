"""The segmentation task: images ``(B, C, H, W)`` in, per-pixel class logits out.

**Which modules** (:meth:`SegmentationTask.applies`; decided without a forward pass, at setup):
a LightningModule with ``cam_task = "segmentation"`` (e.g.
:class:`~lightning_cam.models.ShapesSegmenter`), or one that is or holds a torchvision
segmentation model (FCN / DeepLabV3 / LRASPP). Its output must be logits ``(B, K, H, W)`` or a
dict with ``"out"`` (checked by a probe forward at the first batch).

**Probes**: images and their true masks, integer class indices ``(B, H, W)`` at ``mask_key``
of dict batches (or the second item of ``(x, mask)`` tuples).

**Maps**: for each probe image, one map per class present in its *true* mask, except the
module's ``background_class`` (``0`` unless the module says otherwise; ``None`` keeps every
class) and the ignore value 255. Each map is
:func:`~lightning_cam.explain_segmentation`'s: the class logits summed over the *predicted*
mask of that class (one forward, one batched backward for all probes and classes); a class
predicted nowhere in an image has an all-zero map, labelled "not predicted" (a pointing-game
miss).

**Logged**: ``{method}/{layer}/overlay`` (and ``/heatmap``), a grid with a row per probe image
and a tile per explained class, labelled with the class name; ``{method}/{layer}/
pointing_game`` (and ``energy_pointing_game``) against the true mask of each explained class,
averaged over every (image, class) pair of the ``metrics_num_samples`` probes.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import render
from lightning_cam.callbacks.task import TaskStrategy
from lightning_cam.engine import Explanation
from lightning_cam.tools import viz

IGNORE_INDEX = 255


def is_segmentation_module(pl_module: Any) -> bool:
    """Whether ``pl_module`` is served by :class:`SegmentationTask` (see the module doc)."""
    if getattr(pl_module, "cam_task", None) == "segmentation":
        return True
    modules = pl_module.modules() if hasattr(pl_module, "modules") else []
    return any(
        type(m).__module__.startswith("torchvision.models.segmentation.") and hasattr(m, "backbone")
        for m in modules
    )


def _logits(output: Any) -> Any:
    if isinstance(output, dict) and "out" in output:
        return output["out"]
    return getattr(output, "logits", output)


class SegmentationTask(TaskStrategy):
    """Segmentation models: probes are dicts of stacked ``"image"`` and ``"mask"`` tensors,
    results ``{class_id: Explanation}`` over all probes (see the module docstring)."""

    name = "segmentation"
    state_name = "seg_probes"

    def __init__(self, callback: Any) -> None:
        super().__init__(callback)
        #: The last result presented (``{class_id: Explanation}`` over the probes).
        self.last_result: dict[int, Explanation] | None = None

    @classmethod
    def applies(cls, pl_module: Any) -> bool:
        return is_segmentation_module(pl_module)

    def _who(self) -> str:
        return type(self.callback).__name__

    def class_names(self, trainer: Any, pl_module: Any) -> list[str] | None:
        """``class_names`` of the options, else of the module or its hparams: indexed by the
        segmentation class (the datamodule's names are skipped: they may index the image
        labels, without the background)."""
        if self.options.class_names is not None:
            return self.options.class_names
        for obj in (pl_module, getattr(pl_module, "hparams", None)):
            names = (
                obj.get("class_names") if isinstance(obj, dict)
                else getattr(obj, "class_names", None)
            )
            if isinstance(names, (list, tuple)) and names:
                return [str(n) for n in names]
        return None

    def _parts(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        parts = self.callback.extract(batch)
        images, mask = parts["image"], parts["mask"]
        if mask is None and isinstance(batch, (tuple, list)):
            mask = parts["label"]
        assert isinstance(images, torch.Tensor)
        if (
            not isinstance(mask, torch.Tensor)
            or mask.dim() != 3
            or mask.is_floating_point()
            or mask.dtype == torch.bool
            or tuple(mask.shape) != (images.shape[0], *images.shape[-2:])
        ):
            got = f"{tuple(mask.shape)} {mask.dtype}" if isinstance(mask, torch.Tensor) else mask
            raise MisconfigurationException(
                f"{self._who()}: {type(self.callback.task).__name__} needs true masks of integer "
                f"class indices (B, H, W) = {(images.shape[0], *images.shape[-2:])} at "
                f"mask_key={self.options.mask_key!r} of dict batches (or the second item of "
                f"(x, mask) tuples); got {got}. Put the class-index masks in the batches "
                "(e.g. in on_after_batch_transfer) or set mask_key."
            )
        return images, mask

    def capture(self, batch: Any) -> list[dict[str, torch.Tensor]]:
        images, mask = self._parts(batch)
        return [{"image": images[i], "mask": mask[i]} for i in range(images.shape[0])]

    def assemble(self, samples: list[Any]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([s[k] for s in samples]) for k in ("image", "mask")}

    def check(self, trainer: Any, pl_module: Any, batch: Any, validation: bool) -> None:
        try:
            images, _ = self._parts(batch)
        except MisconfigurationException:
            if validation:
                raise
            return
        device = getattr(pl_module, "device", torch.device("cpu"))
        was = pl_module.training
        pl_module.eval()
        try:
            with torch.inference_mode(False), torch.no_grad():
                out = _logits(pl_module(images[:2].float().to(device)))
        finally:
            pl_module.train(was)
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or (
            tuple(out.shape[-2:]) != tuple(images.shape[-2:])
        ):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise MisconfigurationException(
                f"{self._who()}: the segmentation module's output is {got} for images "
                f"{tuple(images[:2].shape)}; expected per-pixel logits (B, K, H, W) at the image "
                "size (or a dict with 'out'). Return them from forward(), or drop cam_task = "
                "'segmentation' to explain it as a classifier."
            )

    def share_key(self) -> Hashable:
        o = self.options
        return (o.num_samples, o.metrics_num_samples, o.dataloader_idx)

    def plan(self, group: Sequence[Any], pl_module: Any, probes: Any) -> Hashable:
        methods: list[str] = []
        layers: list[str] = []
        for cb in group:
            methods += [m for m in cb.options.methods if m not in methods]
            for name in cb.options.layer or []:
                if name not in layers:
                    layers.append(name)
        return tuple(methods), tuple(layers) or None

    def classes(self, pl_module: Any, mask: torch.Tensor) -> list[int]:
        """The classes explained for one true mask ``(H, W)`` (see the module docstring)."""
        background = getattr(pl_module, "background_class", 0)
        return [
            int(c)
            for c in torch.unique(mask).tolist()
            if c != IGNORE_INDEX and c != background and c >= 0
        ]

    def compute(self, trainer: Any, pl_module: Any, probes: Any, plan: Any) -> Any:
        from lightning_cam.engine.cam import explain_segmentation

        methods, layers = plan
        classes = sorted({c for m in probes["mask"] for c in self.classes(pl_module, m)})
        if not classes:
            return {}
        device = getattr(pl_module, "device", torch.device("cpu"))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return explain_segmentation(
                pl_module,
                probes["image"].float().to(device),
                classes,
                layer=list(layers) if layers else None,
                methods=list(methods),
                reshape_transform=self.options.reshape_transform,
            )

    def pairs(self, pl_module: Any, probes: Any) -> list[tuple[int, int]]:
        """``(probe index, class id)`` of every explained map."""
        return [
            (i, c) for i, m in enumerate(probes["mask"]) for c in self.classes(pl_module, m)
        ]

    def present(
        self, trainer: Any, pl_module: Any, probes: Any, result: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        from lightning_cam import metrics as M

        opts = self.options
        self.last_result = result
        pictures: dict[str, np.ndarray] = {}
        scalars: dict[str, float] = {}
        if not result:
            return pictures, scalars
        first: Explanation = next(iter(result.values()))
        names = self.class_names(trainer, pl_module)

        def nm(c: int) -> str:
            return names[c] if names is not None and 0 <= c < len(names) else str(c)

        pairs = self.pairs(pl_module, probes)
        n = min(opts.num_samples, int(probes["image"].shape[0]))
        shown = render.display_images(probes["image"][:n], opts)
        tolerance = render.pointing_tolerance(opts, probes["image"])
        for method in opts.methods:
            for layer in first.layers:
                tag = f"{method}/{layer}"
                for kind in ("overlay", "heatmap"):
                    if kind not in opts.kinds:
                        continue
                    rows: list[list[np.ndarray]] = [[] for _ in range(n)]
                    for i, c in pairs:
                        if i >= n:
                            continue
                        cam = result[c].cams[method][layer][i].float().cpu().numpy()
                        tile = (
                            viz.overlay(shown[i], cam, alpha=opts.alpha, colormap=opts.colormap)
                            if kind == "overlay"
                            else viz.colorize(cam, colormap=opts.colormap)
                        )
                        tile = render.resize_tile(tile, opts.tile_size)
                        # an all-zero map: the class is predicted nowhere (empty region)
                        empty = not bool(np.any(cam))
                        rows[i].append(
                            viz.draw_label(tile, f"{nm(c)}: not predicted" if empty else nm(c))
                        )
                    for i in range(n):
                        if not rows[i]:
                            tile = render.resize_tile(shown[i], opts.tile_size)
                            rows[i].append(viz.draw_label(tile, "no class to explain"))
                    pictures[f"{tag}/{kind}"] = viz.annotate_sheet(
                        rows, row_labels=[f"image {i}" for i in range(n)]
                    )
                if not pairs:
                    continue
                maps = torch.stack(
                    [result[c].cams[method][layer][i] for i, c in pairs]
                ).float().cpu()
                truth = torch.stack([probes["mask"][i] == c for i, c in pairs]).cpu()
                if "pointing_game" in opts.metrics:
                    value = float(M.pointing_game(maps, masks=truth, tolerance=tolerance).mean())
                    if math.isfinite(value):
                        scalars[f"{tag}/pointing_game"] = value
                if "energy_pointing_game" in opts.metrics:
                    value = float(M.energy_pointing_game(maps, masks=truth).mean())
                    if math.isfinite(value):
                        scalars[f"{tag}/energy_pointing_game"] = value
        return pictures, scalars
