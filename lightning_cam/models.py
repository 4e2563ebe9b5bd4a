"""Classifiers for the embedded default: a compact CNN, or any torchvision classification model.

Example:
    >>> import torch
    >>> model = ShapesClassifier()
    >>> model(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

# Inputs are images in [0, 1]; the model normalises them (ImageNet statistics, as torchvision's
# models expect), so datasets and explanation overlays can stay in [0, 1].
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def classification_model_names() -> list[str]:
    """Names accepted by ``ShapesClassifier(backbone=...)``: ``"simple"`` + torchvision's."""
    return ["simple", *torchvision.models.list_models(module=torchvision.models)]


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def simple_backbone(widths: tuple[int, ...] = (16, 32, 64, 128)) -> nn.Sequential:
    """A compact CNN: conv-BN-ReLU blocks, max-pooling after all but the last.

    With four blocks, a ``(B, 3, 64, 64)`` input gives an ``(B, widths[-1], 8, 8)`` feature map.
    """
    blocks = [
        _block(c_in, c_out, pool=i < len(widths) - 1)
        for i, (c_in, c_out) in enumerate(zip((3, *widths[:-1]), widths, strict=True))
    ]
    return nn.Sequential(*blocks)


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: weight decay on weights, none on norms and biases (1-D)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class _ShapesModule(pl.LightningModule):
    """What the shapes models share: ImageNet input normalisation inside the model (images in
    ``[0, 1]`` go in) and the class names of the hyperparameters."""

    def _register_normalisation(self) -> None:
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.get_buffer("mean")) / self.get_buffer("std")

    @property
    def class_names(self) -> list[str]:
        """The class names (``class_names`` argument, else ``"0"``, ``"1"``, ...)."""
        names = self.hparams.get("class_names")
        return list(names) if names else [str(i) for i in range(self.hparams["num_classes"])]


class ShapesClassifier(_ShapesModule):
    """An image classifier as a LightningModule, for the shapes data (or any dict batches).

    ``backbone="simple"`` builds a compact CNN, ``self.backbone`` (four conv-BN-ReLU blocks of
    16, 32, 64 and 128 channels, max-pooling after the first three: an ``8 x 8`` feature map for
    ``64 x 64`` inputs, the natural Grad-CAM layer), followed by ``self.head`` (global max pool
    + linear). Global *max* pooling (Oquab et al., CVPR 2015) learns the one-small-object shapes
    task several times faster than average pooling, which dilutes the object with background;
    Grad-CAM on ``self.backbone`` still equals CAM up to scale (the pooled gradient of channel
    ``k`` sums to the class weight ``w_ck`` either way). Any other name builds that torchvision
    classification model with ``weights=None`` as ``self.backbone`` (``self.head`` is then the
    identity). Images in ``[0, 1]`` are normalised inside :meth:`forward` (ImageNet statistics).

    Batches are dicts with ``"image"`` ``(B, 3, H, W)`` and ``"label"`` ``(B,)``, as
    :class:`~lightning_cam.data.ShapesDataModule` gives them. Logs ``train/loss``,
    ``train/acc``, ``val/loss``, ``val/acc`` (progress bar), ``test/loss`` and ``test/acc``;
    :meth:`predict_step` returns class probabilities. AdamW with a one-cycle schedule.

    Args:
        backbone: ``"simple"`` or a torchvision classification model name (``"resnet18"``...).
        num_classes: Number of classes.
        lr: Peak learning rate of the one-cycle schedule.
        weight_decay: AdamW weight decay.
        class_names: Optional class names, indexed by label (stored in the hyperparameters
            for explanation tools and loggers).

    Raises:
        ValueError: On an unknown backbone name (with close matches), a ``num_classes`` below
            2, a non-positive ``lr``, a negative ``weight_decay`` or ``class_names`` of the
            wrong length.

    Example:
        >>> import torch
        >>> from pytorch_lightning import Trainer
        >>> from lightning_cam.data import ShapesDataModule
        >>> model = ShapesClassifier(class_names=["circle", "square", "triangle", "star"])
        >>> dm = ShapesDataModule(num_train=64, num_val=32, num_test=32, batch_size=32)
        >>> trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False,
        ...                   enable_checkpointing=False, enable_progress_bar=False,
        ...                   enable_model_summary=False)
        >>> trainer.fit(model, dm)
        >>> round(model(torch.rand(1, 3, 64, 64)).softmax(-1).sum().item(), 4)
        1.0
    """

    def __init__(
        self,
        backbone: str = "simple",
        num_classes: int = 4,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names must have num_classes={num_classes} entries, got "
                f"{len(class_names)}: {list(class_names)}"
            )
        self.save_hyperparameters()
        self.backbone, self.head = self._build(backbone, num_classes)
        self._register_normalisation()

    @staticmethod
    def _build(name: str, num_classes: int) -> tuple[nn.Module, nn.Module]:
        if name == "simple":
            features = simple_backbone()
            last_conv = [m for m in features.modules() if isinstance(m, nn.Conv2d)][-1]
            width = last_conv.out_channels
            head = nn.Sequential(
                nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)
            )
            return features, head
        valid = classification_model_names()
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown backbone {name!r}.{hint} Valid names: {', '.join(valid)}")
        kwargs: dict[str, Any] = {}
        if name in ("inception_v3", "googlenet"):
            kwargs["aux_logits"] = False  # one output, whatever the mode
            kwargs["init_weights"] = True
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return model, nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of images ``(B, 3, H, W)`` in ``[0, 1]``."""
        out = self.backbone(self._normalise(images))
        if not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
            out = out.logits  # torchvision's Inception/GoogLeNet named tuples
        return self.head(out)

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(dim=1) == labels).float().mean()
        on_step = stage == "train"
        n = images.shape[0]
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, batch_size=n)
        self.log(
            f"{stage}/acc", acc, on_step=False, on_epoch=True, batch_size=n, prog_bar=stage == "val"
        )
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Cross-entropy on a dict batch; logs ``train/loss`` and ``train/acc``."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Logs ``val/loss`` and ``val/acc``."""
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Logs ``test/loss`` and ``test/acc``."""
        return self._shared_step(batch, "test")

    def predict_step(
        self, batch: dict[str, torch.Tensor] | torch.Tensor, batch_idx: int
    ) -> torch.Tensor:
        """Class probabilities ``(B, num_classes)`` of a dict batch or an image tensor."""
        images = batch["image"] if isinstance(batch, dict) else batch
        return self(images).softmax(dim=-1)

    def configure_optimizers(self) -> Any:
        """AdamW (no decay on norms and biases) with a one-cycle schedule stepped per batch."""
        optimizer = torch.optim.AdamW(
            decay_groups(self, self.hparams["weight_decay"]), lr=self.hparams["lr"]
        )
        total = self.trainer.estimated_stepping_batches
        # No max_epochs/max_steps, or too few steps for both one-cycle phases (OneCycleLR divides
        # by ``pct_start * total - 1``): a constant learning rate.
        if not math.isfinite(total) or total < 10:
            return optimizer
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams["lr"], total_steps=max(int(total), 1), pct_start=0.25
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class ShapesSegmenter(_ShapesModule):
    """A tiny FCN-style segmenter for the synthetic shapes: the compact CNN of
    :func:`simple_backbone` (three blocks: 16 x 16 features at 64 x 64), a 1 x 1 convolution
    to per-class logits and a bilinear upsampling to the input size.

    Classes: ``0`` is the background, ``1 + label`` the shape (``num_classes = 1 + shapes``).
    :meth:`on_after_batch_transfer` turns the shapes batches' bool object ``"mask"`` into this
    integer class-index mask ``(B, H, W)`` (so the CAM callbacks, which read ``mask_key``, see
    class indices). The background's pixels weigh ``background_weight`` in the cross-entropy
    (they are most pixels; unweighted, a short training predicts background everywhere).
    ``cam_task = "segmentation"`` tells the CAM callbacks to explain it as a
    segmentation model (:class:`~lightning_cam.callbacks.segmentation.SegmentationTask`).

    Example:
        >>> import torch
        >>> ShapesSegmenter()(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 5, 64, 64])
    """

    cam_task = "segmentation"
    #: The background class: not explained by the CAM callbacks.
    background_class = 0

    def __init__(
        self,
        num_classes: int = 5,
        widths: tuple[int, ...] = (16, 32, 64),
        lr: float = 1e-2,
        class_names: list[str] | None = None,
        background_weight: float = 0.2,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names for num_classes={num_classes}; give "
                "one name per class, the background first."
            )
        self.save_hyperparameters()
        self.backbone = simple_backbone(tuple(widths))
        self.head = nn.Conv2d(widths[-1], num_classes, 1)
        self._register_normalisation()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits ``(B, num_classes, H, W)`` of images in ``[0, 1]``."""
        logits = self.head(self.backbone(self._normalise(images)))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Shapes dict batches: the bool object mask becomes the class-index mask."""
        if isinstance(batch, dict) and "mask" in batch and batch["mask"].dtype == torch.bool:
            labels = batch["label"].view(-1, 1, 1) + 1
            batch = {**batch, "mask": torch.where(batch["mask"], labels, 0).long()}
        return batch

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["image"])
        weight = torch.ones(logits.shape[1], device=logits.device)
        weight[self.background_class] = self.hparams["background_weight"]
        loss = F.cross_entropy(logits, batch["mask"], weight=weight)
        n = logits.shape[0]
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, batch_size=n)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Per-pixel cross-entropy; logs ``train/loss``."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Logs ``val/loss``."""
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        """Adam at ``lr``."""
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_GLOBAL_MAX = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}


def nd_backbone(
    spatial_dims: int, in_channels: int = 1, widths: tuple[int, ...] = (8, 16, 32)
) -> nn.Sequential:
    """The compact CNN of :func:`simple_backbone` for inputs of ``spatial_dims`` spatial axes
    (``(B, C, L)``, ``(B, C, H, W)`` or ``(B, C, D, H, W)``): conv-BN-ReLU blocks, max-pooling
    after all but the last.

    Example:
        >>> nd_backbone(3)(torch.rand(2, 1, 24, 24, 24)).shape
        torch.Size([2, 32, 6, 6, 6])
    """
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    blocks: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip((in_channels, *widths[:-1]), widths, strict=True)):
        layers: list[nn.Module] = [
            _CONV[spatial_dims](c_in, c_out, 3, padding=1, bias=False),
            _NORM[spatial_dims](c_out),
            nn.ReLU(inplace=True),
        ]
        if i < len(widths) - 1:
            layers.append(_MAXPOOL[spatial_dims](2))
        blocks.append(nn.Sequential(*layers))
    return nn.Sequential(*blocks)


class NDClassifier(_ShapesModule):
    """A compact classifier of signals ``(B, C, L)``, images or volumes ``(B, C, D, H, W)`` as
    a LightningModule: ``self.backbone`` (:func:`nd_backbone`, the natural Grad-CAM layer)
    followed by ``self.head`` (global max pool + linear), for the embedded 3-D shapes
    (:class:`~lightning_cam.data.Shapes3DDataModule`) and signals
    (:class:`~lightning_cam.data.SignalsDataModule`). Inputs go in as the datasets give them
    (no normalisation inside). Batches, logged values, optimiser and schedule are those of
    :class:`ShapesClassifier`.

    Args:
        spatial_dims: 1 (signals), 2 (images) or 3 (volumes, videos).
        in_channels: Input channels.
        num_classes: Number of classes.
        widths: Channels of the backbone's blocks.
        lr: Peak learning rate of the one-cycle schedule.
        weight_decay: AdamW weight decay.
        class_names: Optional class names, indexed by label.

    Raises:
        ValueError: On a bad ``spatial_dims``, ``num_classes`` below 2, a non-positive ``lr``,
            a negative ``weight_decay`` or ``class_names`` of the wrong length.

    Example:
        >>> NDClassifier(spatial_dims=1)(torch.rand(2, 1, 256)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 3,
        widths: tuple[int, ...] = (8, 16, 32),
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names must have num_classes={num_classes} entries, got "
                f"{len(class_names)}: {list(class_names)}"
            )
        self.save_hyperparameters()
        widths = tuple(int(w) for w in widths)
        self.backbone = nd_backbone(spatial_dims, in_channels, widths)
        self.head = nn.Sequential(
            _GLOBAL_MAX[spatial_dims](1), nn.Flatten(), nn.Linear(widths[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of inputs ``(B, C, *spatial)``."""
        return self.head(self.backbone(x))

    _shared_step = ShapesClassifier._shared_step
    training_step = ShapesClassifier.training_step
    validation_step = ShapesClassifier.validation_step
    test_step = ShapesClassifier.test_step
    predict_step = ShapesClassifier.predict_step
    configure_optimizers = ShapesClassifier.configure_optimizers
