"""A tiny LightningModule and data for callback tests (dict or tuple batches)."""

from __future__ import annotations

import glob
import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


def make_module_cls(namespace: str = "pytorch_lightning") -> type:
    import importlib

    L = importlib.import_module(namespace)

    class TinyModule(L.LightningModule):
        def __init__(self, num_classes: int = 3, dict_batches: bool = True) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1),
                nn.ReLU(),
            )
            self.head = nn.Linear(8, num_classes)
            self.dict_batches = dict_batches

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(x).mean(dim=(2, 3)))

        def _split(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if isinstance(batch, dict):
                return batch["image"], batch["label"]
            return batch[0], batch[1]

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = self._split(batch)
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            x, y = self._split(batch)
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self.validation_step(batch, batch_idx)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    return TinyModule


class BlobData(Dataset):
    """Bright square on noise; label = quadrant of the square; mask and box given."""

    def __init__(
        self,
        n: int = 32,
        size: int = 16,
        seed: int = 0,
        dict_batches: bool = True,
        offset: float = 0.0,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            img = torch.rand(3, size, size, generator=g) * 0.2 + offset
            q = int(torch.randint(0, 3, (1,), generator=g))
            r0, c0 = (2, 2) if q == 0 else ((2, size // 2) if q == 1 else (size // 2, 2))
            mask = torch.zeros(size, size, dtype=torch.bool)
            mask[r0 : r0 + size // 3, c0 : c0 + size // 3] = True
            img[:, mask] += 0.8
            box = torch.tensor([c0, r0, c0 + size // 3, r0 + size // 3], dtype=torch.float32)
            self.items.append((img, q, mask, box))
        self.dict_batches = dict_batches

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        img, q, mask, box = self.items[i]
        if self.dict_batches:
            return {"image": img, "label": torch.tensor(q), "mask": mask, "box": box}
        return img, torch.tensor(q)


def loaders(
    dict_batches: bool = True,
    n_train: int = 32,
    n_val: int = 16,
    batch_size: int = 8,
    val_seed: int = 1,
    val_offset: float = 0.0,
) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(
        BlobData(n_train, seed=0, dict_batches=dict_batches),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(
        BlobData(n_val, seed=val_seed, dict_batches=dict_batches, offset=val_offset),
        batch_size=batch_size,
    )
    return train, val


def read_events(log_dir: str) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no event files under {log_dir}"
    accs = []
    for f in files:
        acc = EventAccumulator(f, size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        accs.append(acc)
    return accs


def image_events(log_dir: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for acc in read_events(log_dir):
        for tag in acc.Tags()["images"]:
            out.setdefault(tag, []).extend(acc.Images(tag))
    return out


def scalar_events(log_dir: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for acc in read_events(log_dir):
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(acc.Scalars(tag))
    return out


def make_output_module_cls(output: str = "tuple", namespace: str = "pytorch_lightning") -> type:
    """TinyModule whose ``forward`` returns ``(logits, features)`` (``"tuple"``), a dict without
    ``"logits"`` (``"dict"``: ``{"scores": logits, "embedding": (B, 8)}``), or logits of images
    it converts itself from uint8 (``"uint8"``: ``x.float() / 255``)."""
    base = make_module_cls(namespace)

    class OutputModule(base):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> Any:
            if output == "uint8":
                x = x.float() / 255
            feats = self.backbone(x)
            logits = self.head(feats.mean(dim=(2, 3)))
            if output == "tuple":
                return logits, feats
            if output == "dict":
                return {"scores": logits, "embedding": feats.mean(dim=(2, 3))}
            return logits

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            out = self(x)
            return logits_of(out)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = self._split(batch)
            return nn.functional.cross_entropy(self.logits(x), y)

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            x, y = self._split(batch)
            self.log("val_loss", nn.functional.cross_entropy(self.logits(x), y))

    return OutputModule


def logits_of(output: Any) -> torch.Tensor:
    """The logits of the OutputModule's outputs (an ``output_transform`` by dotted path)."""
    if isinstance(output, tuple):
        return output[0]
    if isinstance(output, dict):
        return output["scores"]
    return output


def make_trainer(root: Any, callbacks: list[Any], **kw: Any) -> Any:
    """A quiet CPU ``pytorch_lightning.Trainer`` logging to TensorBoard at ``{root}/tb/version_0``
    unless ``logger`` is given."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    kw.setdefault("logger", TensorBoardLogger(str(root), name="tb", version=0))
    kw.setdefault("max_epochs", 1)
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        default_root_dir=str(root),
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        **kw,
    )


def tb_dir(root: Any) -> str:
    return os.path.join(str(root), "tb", "version_0")


def decode(event: Any) -> Any:
    """An image event's picture as an RGB uint8 array."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    return img[..., ::-1]
