"""The segmentation task: images ``(B, C, H, W)`` in, per-pixel class logits out. Signals and
volumes are refused at the first batch, with the fix: their segmentation maps come from
:class:`~lightning_cam.engine.targets.SegmentationTarget`, which takes ``(B, K, L)`` and
``(B, K, D, H, W)`` outputs, outside the callback.

**Which modules** (:meth:`SegmentationTask.applies`; decided without a forward pass, at setup):
a LightningModule with ``cam_task = "segmentation"`` (e.g.
:class:`~lightning_cam.models.ShapesSegmenter`), or one that is or holds a torchvision
segmentation model (FCN / DeepLabV3 / LRASPP). Its output must be logits ``(B, K, H, W)`` or a
dict with ``"out"`` (checked by a probe forward at the first batch).

**Binary segmentation**: one-channel logits ``(B, 1, H, W)`` have two classes, ``1`` (the
positive class, predicted where the logit is ``> 0``; its score the logit summed over those
pixels) and ``0`` (the negative decision), see
:class:`~lightning_cam.engine.targets.SegmentationTarget`.

**Probes**: images and their true masks, class indices ``(B, H, W)`` (or ``(B, 1, H, W)``) at
``mask_key`` of dict batches (or the second item of ``(x, mask)`` tuples): integer masks, float
masks holding whole numbers (``0.0`` / ``1.0`` binary masks), and for binary models bool
masks. Labels in ``ignore_index`` (default ``255``) and negative labels are void pixels.

**Checked at the first batch** (the sanity check's or the first training batch, before
training time is spent; masks of training batches when they read as masks): the output
(per-pixel logits at the image size), the layers and the methods (one probe explanation of
every requested method on one image; methods that explain classes only are refused at
setup), and the masks (shape, dtype, labels within ``0..K-1`` of the model's ``K`` logits,
``0..1`` for binary ones, or void). What cannot work raises ``MisconfigurationException``
with the fix.

**Maps**: for each probe image, one map per class present in its *true* mask, except the
module's ``background_class`` (``0`` unless the module says otherwise; ``None`` keeps every
class) and the void labels. Each map is
:func:`~lightning_cam.explain_segmentation`'s: the class logits summed over the *predicted*
mask of that class (one forward, one batched backward for all probes and classes); a class
that the model predicts nowhere in an image (argmax; ``logit > 0`` for binary models) has an
all-zero map and is labelled "not predicted" (a pointing-game miss). A predicted class whose
map is zero is labelled by its name alone.

**Logged**: ``{method}/{layer}/overlay`` (and ``/heatmap``), a grid with a row per probe image
and a tile per explained class, labelled with the class name; ``{method}/{layer}/
pointing_game`` (and ``energy_pointing_game``) against the true mask of each explained class,
averaged over every (image, class) pair of the ``metrics_num_samples`` probes.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import render
from lightning_cam.callbacks.options import check_no_target, misconf
from lightning_cam.callbacks.task import TaskStrategy
from lightning_cam.engine import Explanation, borrowed
from lightning_cam.engine.layers import default_layer
from lightning_cam.engine.targets import segmentation_prediction
from lightning_cam.tools import viz

#: The default void label (``ignore_index``): VOC's and torchvision's.
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
        #: The model's predicted class per pixel of the probes ``(N, H, W)``, last presented.
        self.last_prediction: torch.Tensor | None = None
        #: The model's logits channels ``K`` (``1``: binary), known after the first batch.
        self.num_logits: int | None = None
        self._checked: Any = None  # weakref to the module the model-level checks ran on
        self._batch_checked = False

    @classmethod
    def applies(cls, pl_module: Any) -> bool:
        return is_segmentation_module(pl_module)

    def setup(self, trainer: Any, pl_module: Any) -> None:
        """Refuse unknown layer names and the methods that explain classes only."""
        from lightning_cam.methods import METHODS

        check_no_target(self.options.target, "segmentation model",
                        "each probe's predicted classes over their predicted masks")
        self.check_layer_names(pl_module)
        refused = [m for m in self.options.methods if METHODS[m].needs_class_target]
        if refused:
            usable = [m for m in METHODS if not METHODS[m].needs_class_target]
            raise misconf(
                "methods",
                list(self.options.methods),
                f"methods that explain a region's score (the segmentation task of "
                f"{type(pl_module).__name__}): {', '.join(map(repr, refused))} explain classes "
                f"only (they re-score other inputs or read a classifier's weights); use any of "
                f"{', '.join(usable)}",
            )
        self._checked = None
        self._batch_checked = False

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

    def _void(self, values: torch.Tensor) -> torch.Tensor:
        """Which of the label ``values`` are void (``ignore_index`` or negative)."""
        void = values < 0
        for v in self.options.ignore_index:
            void |= values == v
        return void

    def _parts(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their true masks as class indices ``(B, H, W)`` (long)."""
        parts = self.callback.extract(batch)
        images, mask = parts["image"], parts["mask"]
        if mask is None and isinstance(batch, (tuple, list)):
            mask = parts["label"]
        assert isinstance(images, torch.Tensor)
        if isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]  # (B, 1, H, W) binary masks
        binary = self.num_logits == 1
        soft = (
            isinstance(mask, torch.Tensor)
            and mask.is_floating_point()
            and not bool(torch.equal(mask, mask.round()))
        )
        if (
            not isinstance(mask, torch.Tensor)
            or mask.dim() != 3
            or soft
            or (mask.dtype == torch.bool and not binary)
            or mask.is_complex()
            or tuple(mask.shape) != (images.shape[0], *images.shape[-2:])
        ):
            got = f"{tuple(mask.shape)} {mask.dtype}" if isinstance(mask, torch.Tensor) else mask
            why = " (soft masks? give class indices)" if soft else ""
            raise MisconfigurationException(
                f"{self._who()}: {type(self.callback.task).__name__} needs true masks of "
                f"integer class indices (B, H, W) = {(images.shape[0], *images.shape[-2:])} at "
                f"mask_key={self.options.mask_key!r} of dict batches (or the second item of "
                f"(x, mask) tuples); got {got}{why}. Float masks must hold whole numbers, bool "
                "masks are taken for one-channel binary models only. Put the class-index masks "
                "in the batches (e.g. in on_after_batch_transfer) or set mask_key."
            )
        return images, mask.long()

    def capture(self, batch: Any) -> list[dict[str, torch.Tensor]]:
        images, mask = self._parts(batch)
        return [{"image": images[i], "mask": mask[i]} for i in range(images.shape[0])]

    def assemble(self, samples: list[Any]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([s[k] for s in samples]) for k in ("image", "mask")}

    def check(self, trainer: Any, pl_module: Any, batch: Any, validation: bool) -> None:
        """See :meth:`TaskStrategy.check`: the output and the explanation (layers, methods)
        once per module, the masks of the first validation batch."""
        try:
            images = self.callback.extract(batch)["image"]
        except MisconfigurationException:
            if validation:
                raise
            return
        assert isinstance(images, torch.Tensor)
        x = images[:2].detach().float()
        if self._checked is None or self._checked() is not pl_module:
            self._check_model(pl_module, x)
            self._checked = weakref.ref(pl_module)
        if self._batch_checked:
            return
        try:
            _, mask = self._parts(batch)
        except MisconfigurationException:
            if validation:
                raise
            return  # a training batch of another layout: checked at the first validation
        # the first training batch's masks too, when they read as masks: refused at step 0
        labels = torch.unique(mask)
        k = max(2, int(self.num_logits or 2))
        bad = labels[~self._void(labels) & (labels >= k)]
        if bad.numel():
            void = self.options.ignore_index
            raise MisconfigurationException(
                f"{self._who()}: the true masks (mask_key={self.options.mask_key!r}) hold labels "
                f"{bad.tolist()[:8]}, outside the class ids 0..{k - 1} of the model's "
                f"{self.num_logits} logit channel(s) and not void (ignore_index={void!r}). If "
                f"they mark void pixels, pass ignore_index={sorted({*void, *bad.tolist()[:8]})!r};"
                " else fix the masks or mask_key."
            )
        self._batch_checked = validation

    def _check_model(self, pl_module: Any, x: torch.Tensor) -> None:
        from lightning_cam.engine.cam import explain_segmentation

        if x.dim() != 4:
            kind = {3: "signals (B, C, L)", 5: "volumes or videos (B, C, D, H, W)"}.get(
                x.dim(), f"{x.dim()}-D tensors")
            raise MisconfigurationException(
                f"{self._who()}: the segmentation callback draws 2-D images, but the inputs "
                f"are {tuple(x.shape)} ({kind}). Explain N-D segmentation outside the callback: "
                "lc.explain(model, x, layer, target=lc.SegmentationTarget(class_id, mask)) or "
                "lc.explain_segmentation(model, x, classes), drawn with "
                "lightning_cam.tools.viz_nd; or drop cam_task = 'segmentation'."
            )
        device = getattr(pl_module, "device", torch.device("cpu"))
        with borrowed(pl_module), torch.inference_mode(False), torch.no_grad():
            out = _logits(pl_module(x.to(device)))
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or any(
            o > i for o, i in zip(out.shape[-2:], x.shape[-2:], strict=True)
        ):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise MisconfigurationException(
                f"{self._who()}: the segmentation module's output is {got} for images "
                f"{tuple(x.shape)}; expected per-pixel logits (B, K, h, w) at the image size "
                "or a coarser grid (SegFormer's 1/4; or a dict with 'out'). Return them from "
                "forward(), or drop cam_task = 'segmentation' to explain it as a classifier."
            )
        self.num_logits = int(out.shape[1])
        layers = list(self.options.layer) if self.options.layer else None
        # the explained class over every pixel: a region the model reaches whatever it predicts
        c = 1 if self.num_logits <= 2 else int(out.shape[1]) - 1

        def explain(images: torch.Tensor, methods: Sequence[str], guided: bool) -> Explanation:
            with torch.inference_mode(False), torch.random.fork_rng(
                devices=[device] if device.type == "cuda" else []
            ):
                return explain_segmentation(
                    pl_module, images.to(device), [c], layer=layers,
                    mask=torch.ones(images.shape[-2:]), methods=list(methods), upsample=False,
                    reshape_transform=self.options.reshape_transform,
                )[c]

        if layers is None:
            try:
                with borrowed(pl_module), torch.inference_mode(False):
                    layers = [default_layer(pl_module, x[:1].to(device))]
            except ValueError as err:
                raise MisconfigurationException(
                    f"{self._who()}: no default layer for {type(pl_module).__name__}: {err}. "
                    "Pass layer= (a dotted name from pl_module.named_modules())."
                ) from err
        self.check_methods(x[:1], layers, explain, False)

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
        labels = torch.unique(mask)
        return [int(c) for c in labels[~self._void(labels)].tolist() if c != background]

    def compute(self, trainer: Any, pl_module: Any, probes: Any, plan: Any) -> Any:
        from lightning_cam.engine.cam import explain_segmentation

        methods, layers = plan
        classes = sorted({c for m in probes["mask"] for c in self.classes(pl_module, m)})
        if not classes:
            return {}, None
        device = getattr(pl_module, "device", torch.device("cpu"))
        images = probes["image"].float().to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            maps = explain_segmentation(
                pl_module,
                images,
                classes,
                layer=list(layers) if layers else None,
                methods=list(methods),
                reshape_transform=self.options.reshape_transform,
            )
            # what the model predicts (the tiles' captions), not what the maps look like
            with borrowed(pl_module), torch.inference_mode(False), torch.no_grad():
                logits = _logits(pl_module(images))
                if tuple(logits.shape[-2:]) != tuple(images.shape[-2:]):
                    # coarser logits (SegFormer): upsampled as its post-processing does
                    logits = torch.nn.functional.interpolate(
                        logits.float(), size=images.shape[-2:], mode="bilinear",
                        align_corners=False,
                    )
                predicted = segmentation_prediction(logits).cpu()
        return maps, predicted

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
        result, predicted = result
        self.last_result, self.last_prediction = result, predicted
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
                        # the model's prediction, not the map: a predicted class's map may
                        # be zero (ReLU'd away) and still be a real answer
                        shown_class = bool((predicted[i] == c).any())
                        rows[i].append(
                            viz.draw_label(
                                tile, nm(c) if shown_class else f"{nm(c)}: not predicted"
                            )
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
                local = [m for m in opts.metrics if M.METRICS[m].needs == "ground_truth"]
                values = M.image_metrics(
                    local, None, None, maps, None, truth, None, tolerance=tolerance
                )  # the one dispatch (lightning_cam.metrics); no model query here
                for name, v in values.items():
                    value = float(v.float().mean())
                    if math.isfinite(value):
                        scalars[f"{tag}/{name}"] = value
        return pictures, scalars
