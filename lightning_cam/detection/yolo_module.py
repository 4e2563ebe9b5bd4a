"""An ultralytics YOLO detection model as a LightningModule, for the synthetic shapes detection
data (needs ``ultralytics`` and Lightning; import it from here).

Example:
    >>> import os; os.environ.setdefault("YOLO_OFFLINE", "1")
    '1'
    >>> from lightning_cam.detection.yolo_module import ShapesYOLO
    >>> module = ShapesYOLO(width=0.125)
    >>> type(module.model).__name__, module.class_names[:2]
    ('DetectionModel', ['__background__', '1'])
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_cam.detection.metrics import detection_scores
from lightning_cam.detection.yolo import YOLOExplainer, load_yolo, yolo_targets

__all__ = ["ShapesYOLO"]

Batch = tuple[Sequence[torch.Tensor], Sequence[dict[str, torch.Tensor]]]


def _config(cfg: str, width: float | None) -> Any:
    """The model config (a dict when ``width`` overrides the scale's width multiple)."""
    if width is None:
        return cfg
    from ultralytics.nn.tasks import guess_model_scale, yaml_model_load

    d = copy.deepcopy(yaml_model_load(cfg))
    scale = d.get("scale") or guess_model_scale(cfg) or "n"
    depth, _, max_channels = d["scales"][scale]
    d["scales"] = {scale: [depth, float(width), max_channels]}
    d["scale"] = scale
    return d


class ShapesYOLO(pl.LightningModule):
    """A random-init YOLO ``DetectionModel`` trained with ultralytics' own loss.

    Batches are ``(list of (3, H, W) images, list of target dicts)`` as
    :class:`~lightning_cam.data.detection.ShapesDetectionDataModule` gives them (labels from 1,
    0 the background). The YOLO model has ``num_classes`` classes, the background one never a
    target, so its class indices are the data's labels (explanations, metrics and
    ``class_names`` read the same numbers). Validation logs ``val/map50`` and
    ``val/recall50`` of the detections :class:`~lightning_cam.detection.yolo.YOLOExplainer`'s
    NMS keeps (score >= 0.05).

    Args:
        cfg: An ultralytics detection config (``"yolov8n.yaml"``, ``"yolo11n.yaml"``).
        num_classes: Number of labels, background included.
        class_names: Names indexed by label, background first.
        width: Overrides the config's width multiple (``0.125``: a quarter of ``n``'s channels,
            trainable on a CPU in minutes); ``None``: the config's.
        lr: AdamW learning rate (linear warm-up, cosine decay).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps.
    """

    def __init__(
        self,
        cfg: str = "yolov8n.yaml",
        num_classes: int = 5,
        class_names: list[str] | None = None,
        width: float | None = None,
        lr: float = 2e-3,
        weight_decay: float = 5e-4,
        warmup_steps: int = 50,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names must have num_classes={num_classes} entries, got "
                             f"{len(class_names)}")
        self.save_hyperparameters()
        from ultralytics.cfg import get_cfg

        model: Any = load_yolo(_config(cfg, width), num_classes=num_classes)
        model.args = get_cfg()  # the loss gains (box, cls, dfl) of ultralytics' defaults
        model.names = dict(enumerate(self.class_names))
        self.model = model.train()  # a LightningModule starts in training mode
        self._preds: list[dict[str, torch.Tensor]] = []
        self._targets: list[dict[str, torch.Tensor]] = []

    @property
    def class_names(self) -> list[str]:
        """Names indexed by label (``class_names``, else ``"__background__"``, ``"1"``, ...)."""
        names = self.hparams.get("class_names")
        if names:
            return list(names)
        return ["__background__", *(str(i) for i in range(1, self.hparams["num_classes"]))]

    def forward(self, images: torch.Tensor) -> Any:
        """The model's output for ``(B, 3, H, W)`` images (eval: raw predictions)."""
        return self.model(images)

    def _loss(self, batch: Batch) -> torch.Tensor:
        images, targets = batch
        x = torch.stack(list(images))
        parts = yolo_targets(targets, (int(x.shape[-2]), int(x.shape[-1])))
        loss, _ = self.model.loss({"img": x, **{k: v.to(x.device) for k, v in parts.items()}})
        return loss.sum() / x.shape[0]

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """ultralytics' detection loss (box + class + DFL), per image."""
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Collects the NMS-kept detections for ``val/map50`` and ``val/recall50``."""
        images, targets = batch
        explainer = YOLOExplainer(self.model, methods="gradcam", score_threshold=0.05, top_k=20,
                                  imgsz=max(int(images[0].shape[-2]), int(images[0].shape[-1])))
        for image, target in zip(images, targets, strict=True):
            det = explainer.detect(image)
            self._preds.append({k: v.cpu() for k, v in det.items()})
            self._targets.append({k: v.detach().cpu() for k, v in target.items()})

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, torch.Tensor]]:
        """The NMS-kept detections (score >= 0.05) of a ``(images, targets)`` batch or a list
        of images, one dict of ``boxes``, ``scores``, ``labels`` per image."""
        images = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(
            batch[1], (list, tuple)) else batch
        side = max(max(int(im.shape[-2]), int(im.shape[-1])) for im in images)
        explainer = YOLOExplainer(self.model, methods="gradcam", score_threshold=0.05, top_k=20,
                                  imgsz=side)
        return [explainer.detect(image) for image in images]

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        if self._preds:
            scores = detection_scores(self._preds, self._targets)
            self.log("val/map50", scores["map"], prog_bar=True)
            self.log("val/recall50", scores["recall"], prog_bar=True)
        self._preds, self._targets = [], []

    def configure_optimizers(self) -> Any:
        """AdamW, linear warm-up then cosine decay (per step)."""
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"],
                                      weight_decay=self.hparams["weight_decay"])
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer else 1000
        warm = min(self.hparams["warmup_steps"], max(1, total // 5))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + torch.cos(torch.tensor(t * torch.pi)).item())

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
