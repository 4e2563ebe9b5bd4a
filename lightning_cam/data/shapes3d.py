"""Synthetic 3-D shapes: the embedded volume dataset, with ground-truth masks.

Every volume holds exactly one object -- a sphere, a cube or a cross (three orthogonal bars) --
at a random position, size and brightness, over a dim background (a smooth intensity gradient
and voxel noise), optionally with a few small blobs that are none of the shapes. The label is
the shape; brightness and background are drawn independently of it, so a classifier has to
look at the object's form, and the mask that comes with every sample says where it should look.

Samples are generated on the fly and are a pure function of ``(seed, index)``, as in
:mod:`lightning_cam.data.shapes`.

Example:
    >>> ds = Shapes3DDataset(num_samples=6, volume_size=24, seed=0)
    >>> s = ds[2]
    >>> s["image"].shape, s["mask"].shape, ds.class_names[s["label"]]
    (torch.Size([1, 24, 24, 24]), torch.Size([24, 24, 24]), 'cross')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_cam.data.common import SplitsDataModule

CLASSES_3D: tuple[str, ...] = ("sphere", "cube", "cross")


class Shapes3DDataset(Dataset):
    """Synthetic one-object volumes ``(1, S, S, S)`` with a shape label and a voxel mask.

    Args:
        num_samples: Number of samples (the length of the dataset).
        volume_size: Side ``S`` of the cubic volumes, at least 16.
        seed: Seed of the dataset; sample ``i`` is a pure function of ``(seed, i)``.
        clutter: Add 1-3 small blobs that are not any of the shapes.
        classes: The shapes to draw, a subset of :data:`CLASSES_3D` in any order; the label is
            the position in this sequence, cycling with the index.

    Each sample is a dict:

    - ``"image"``: float32 ``(1, S, S, S)`` in ``[0, 1]`` (axes ``D, H, W``: z, y, x);
    - ``"label"``: int64 scalar, index into ``classes``;
    - ``"mask"``: bool ``(S, S, S)``, the voxels the object covers.

    Raises:
        ValueError: On a non-positive ``num_samples``, too small a ``volume_size`` or unknown
            or repeated class names.
    """

    def __init__(
        self,
        num_samples: int = 512,
        volume_size: int = 24,
        seed: int = 0,
        clutter: bool = True,
        classes: Sequence[str] = CLASSES_3D,
    ) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if not isinstance(volume_size, int) or volume_size < 16:
            raise ValueError(f"volume_size must be an int >= 16, got {volume_size!r}")
        classes = tuple(classes) if not isinstance(classes, str) else (classes,)
        if not classes or any(c not in CLASSES_3D for c in classes) or len(set(classes)) != len(
            classes
        ):
            raise ValueError(f"classes must be distinct names from {CLASSES_3D}, got {classes}")
        self.num_samples = num_samples
        self.volume_size = volume_size
        self.seed = int(seed)
        self.clutter = bool(clutter)
        self.classes = classes
        s = volume_size
        self._grid = np.mgrid[0:s, 0:s, 0:s].astype(np.float32) + 0.5  # (3, S, S, S) centres

    @property
    def class_names(self) -> list[str]:
        """The class names, indexed by label."""
        return list(self.classes)

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        volume, label, mask = self.render(index)
        return {
            "image": torch.from_numpy(volume)[None],
            "label": torch.tensor(label, dtype=torch.int64),
            "mask": torch.from_numpy(mask),
        }

    def shape_mask(self, shape: str, centre: np.ndarray, radius: float) -> np.ndarray:
        """The bool ``(S, S, S)`` voxels of ``shape`` centred at ``centre`` (z, y, x) with
        half-size ``radius`` (a sphere's radius, a cube's half side, a cross's half length)."""
        d = np.abs(self._grid - centre.reshape(3, 1, 1, 1))
        if shape == "sphere":
            return np.sqrt((d**2).sum(0)) <= radius
        if shape == "cube":
            return d.max(0) <= radius * 0.8
        bar = radius * 0.3  # cross: three orthogonal bars of half-thickness 0.3 r
        inside = d <= radius
        thin = d <= bar
        return (
            (inside[0] & thin[1] & thin[2])
            | (thin[0] & inside[1] & thin[2])
            | (thin[0] & thin[1] & inside[2])
        )

    def render(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Draw sample ``index``: ``(volume (S, S, S) float32, label, mask (S, S, S) bool)``."""
        rng = np.random.default_rng([self.seed, index])
        label = index % len(self.classes)
        s = self.volume_size
        g = self._grid / s
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-9
        ramp = np.tensordot(direction, g - 0.5, axes=1)  # in about [-0.87, 0.87]
        volume = rng.uniform(0.08, 0.2) + rng.uniform(0.0, 0.08) * ramp
        if self.clutter:
            for _ in range(int(rng.integers(1, 4))):
                c = rng.uniform(2, s - 2, size=3)
                axes = rng.uniform(0.8, 1.6, size=3) * s / 24
                blob = (((self._grid - c.reshape(3, 1, 1, 1)) / axes.reshape(3, 1, 1, 1)) ** 2)
                volume = np.where(blob.sum(0) <= 1.0, rng.uniform(0.4, 0.9), volume)
        radius = rng.uniform(0.18, 0.28) * s
        centre = rng.uniform(radius + 1, s - radius - 1, size=3)
        mask = self.shape_mask(self.classes[label], centre, radius)
        volume = np.where(mask, rng.uniform(0.6, 1.0), volume)
        volume = volume + rng.uniform(0.01, 0.04) * rng.standard_normal(volume.shape)
        return np.clip(volume, 0.0, 1.0).astype(np.float32), label, mask


class Shapes3DDataModule(SplitsDataModule):
    """Train / val / test splits of :class:`Shapes3DDataset` with disjoint seeds.

    Args:
        num_train: Number of training samples.
        num_val: Number of validation samples.
        num_test: Number of test (and predict) samples.
        volume_size: Side of the cubic volumes.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: Base seed of the three splits.
        clutter: Draw distractor blobs (see :class:`Shapes3DDataset`).

    Example:
        >>> dm = Shapes3DDataModule(num_train=8, num_val=4, num_test=4, batch_size=4)
        >>> dm.setup("fit")
        >>> next(iter(dm.val_dataloader()))["image"].shape
        torch.Size([4, 1, 24, 24, 24])
    """

    CLASSES = CLASSES_3D

    def __init__(
        self,
        num_train: int = 384,
        num_val: int = 96,
        num_test: int = 96,
        volume_size: int = 24,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        clutter: bool = True,
    ) -> None:
        super().__init__()
        self._check_sizes(num_train, num_val, num_test, batch_size, num_workers)
        self.save_hyperparameters()
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.volume_size = volume_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.clutter = clutter
        self._datasets: dict[str, Shapes3DDataset] = {}
        Shapes3DDataset(1, volume_size=volume_size)  # validates volume_size up front

    def dataset(self, split: str) -> Shapes3DDataset:
        """The (cached) dataset of ``split``."""
        if split not in self._datasets:
            seed = self.split_seed(split)  # validates split
            self._datasets[split] = Shapes3DDataset(
                self.sizes[split], volume_size=self.volume_size, seed=seed, clutter=self.clutter
            )
        return self._datasets[split]
