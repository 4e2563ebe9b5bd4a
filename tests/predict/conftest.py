from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_cam.data import ShapesDataset
from tests.optional import require


@pytest.fixture(autouse=True)
def _pyarrow() -> None:
    require("pyarrow", "pip install pyarrow (make test installs it)")


class TinyShapes(Dataset):
    """16 shapes images of 32 px as dicts (image, label, box, mask, id)."""

    def __init__(self, num: int = 10, with_id: bool = False) -> None:
        self.data = ShapesDataset(num, image_size=32, seed=5)
        self.with_id = with_id

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, object]:
        s = dict(self.data[i])
        if self.with_id:
            s["id"] = f"img{i:03d}"
        return s


def tiny_model() -> nn.Module:
    from lightning_cam.models import ShapesClassifier

    torch.manual_seed(0)
    return ShapesClassifier(num_classes=4)


def loader(num: int = 10, batch_size: int = 4, with_id: bool = False) -> DataLoader:
    return DataLoader(TinyShapes(num, with_id), batch_size=batch_size)


def trainer(callbacks: list, **kwargs: object):
    from pytorch_lightning import Trainer

    kwargs.setdefault("logger", False)
    return Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
