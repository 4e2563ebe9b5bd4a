"""Train a hand-written LightningModule with the CAM callbacks, in plain Python.

Run:
    python examples/train_with_callbacks.py --max-epochs 4
    tensorboard --logdir lightning_logs/example

Every validation epoch, TensorBoard gets Grad-CAM and Grad-CAM++ overlays, guided Grad-CAM and
the pointing game (the data carries ground-truth masks) for the same eight probe images.
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from lightning_cam import GradCAMCallback, GradCAMPlusPlusCallback
from lightning_cam.data import ShapesDataModule


class ShapeNet(pl.LightningModule):
    """A small CNN: ``features`` (conv blocks) -> global average pool -> ``classifier``."""

    def __init__(self, num_classes: int = 4, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(3, 24),
            nn.MaxPool2d(2),
            block(24, 48),
            nn.MaxPool2d(2),
            block(48, 96),
            nn.MaxPool2d(2),
            block(96, 128),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images).mean(dim=(2, 3)))

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        self.log(f"{stage}/loss", loss)
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> pl.Trainer:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--log-dir", default="lightning_logs")
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    data = ShapesDataModule(num_train=args.num_train, num_val=args.num_val, batch_size=64)
    callbacks = [
        GradCAMCallback(layer="features", num_samples=8, log_heatmap=True),
        GradCAMPlusPlusCallback(layer="features", num_samples=8),
    ]
    trainer = pl.Trainer(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        callbacks=callbacks,
        logger=TensorBoardLogger(args.log_dir, name="example"),
        enable_checkpointing=False,
    )
    trainer.fit(ShapeNet(num_classes=data.num_classes), data)
    return trainer


if __name__ == "__main__":
    main()
