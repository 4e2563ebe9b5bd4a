"""Pieces the synthetic datasets share: sub-pixel OpenCV drawing and the split data module.

Example:
    >>> import numpy as np
    >>> to_fixed_point(np.array([[1.0, 2.5]])).tolist()
    [[[16, 40]]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

__all__ = ["SCALE", "SHIFT", "SplitsDataModule", "shape_polygon", "to_fixed_point"]

SHIFT = 4  # fixed-point bits for sub-pixel drawing with OpenCV
SCALE = 1 << SHIFT


def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices ``(N, 2)`` (x, y) of a polygonal shape with circumradius ``r``."""
    if shape == "square":
        t = angle + np.arange(4) * (math.pi / 2)
        rad = np.full(4, r)
    elif shape == "triangle":
        t = angle + np.arange(3) * (2 * math.pi / 3)
        rad = np.full(3, r)
    elif shape == "star":
        t = angle + np.arange(10) * (math.pi / 5)
        rad = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
    else:  # pragma: no cover - guarded by ShapesDataset
        raise ValueError(f"not a polygonal shape: {shape!r}")
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], axis=1)


def to_fixed_point(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> OpenCV fixed-point int32 ``(1, N, 2)`` (pixel centres at .0)."""
    return np.round(points * SCALE).astype(np.int32).reshape(1, -1, 2)


class SplitsDataModule(pl.LightningDataModule):
    """Train / val / test splits of on-the-fly datasets: ``setup`` and the dataloaders.

    Subclasses define ``dataset(split)``, ``batch_size``, ``num_workers`` and optionally
    ``collate_fn``.
    """

    SPLITS = ("train", "val", "test")
    #: The class names, indexed by label (each data module's own).
    CLASSES: tuple[str, ...] = ()
    collate_fn: Any = None
    batch_size: int
    num_workers: int

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.CLASSES)

    @property
    def class_names(self) -> list[str]:
        """The class names, indexed by label."""
        return list(self.CLASSES)

    @staticmethod
    def _check_sizes(
        num_train: Any, num_val: Any, num_test: Any, batch_size: Any, num_workers: Any
    ) -> None:
        for name, value in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")

    def split_seed(self, split: str) -> int:
        """The dataset seed of ``split`` (one of ``"train"``, ``"val"``, ``"test"``), derived
        from the module's ``seed`` and the split's name: the splits never share a sample."""
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        entropy = [int(getattr(self, "seed", 0)), self.SPLITS.index(split) + 1]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def dataset(self, split: str) -> Dataset:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Create the datasets the stage needs (they render lazily, so this is cheap)."""
        needs = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": (getattr(self, "predict_split", "test"),),
        }.get(stage or "", self.SPLITS)
        for split in needs:
            self.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=type(self).collate_fn,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches in index order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test batches in index order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[Any]:
        """The ``predict_split`` split (default: test), in index order."""
        return self._loader(getattr(self, "predict_split", "test"), shuffle=False)
