"""Synthetic 1-D signals: the embedded time-series dataset, with ground-truth masks.

Every signal holds exactly one event -- a ``burst`` (a fast oscillation under a smooth
envelope), a ``pulse`` (a flat-topped step up or down) or a ``spikes`` train (three sharp
spikes) -- at a random position, width and amplitude, over a slowly wandering baseline with
noise, optionally with a few single-sample glitches that are none of the events. The label is
the event; the mask says which samples it covers, so an explanation can be scored
(pointing game) against it.

Samples are a pure function of ``(seed, index)``, as in :mod:`lightning_cam.data.shapes`.

Example:
    >>> ds = SignalsDataset(num_samples=6, length=128, seed=0)
    >>> s = ds[1]
    >>> s["image"].shape, s["mask"].shape, ds.class_names[s["label"]]
    (torch.Size([1, 128]), torch.Size([128]), 'pulse')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_cam.data.common import SplitsDataModule

CLASSES_1D: tuple[str, ...] = ("burst", "pulse", "spikes")


class SignalsDataset(Dataset):
    """Synthetic one-event signals ``(1, L)`` with an event label and a sample mask.

    Args:
        num_samples: Number of samples (the length of the dataset).
        length: Samples ``L`` per signal, at least 64.
        seed: Seed of the dataset; sample ``i`` is a pure function of ``(seed, i)``.
        clutter: Add 1-3 single-sample glitches that are not any of the events.
        classes: The events to draw, a subset of :data:`CLASSES_1D` in any order; the label
            is the position in this sequence, cycling with the index.

    Each sample is a dict (the key ``"image"`` is the callbacks' default ``image_key``):

    - ``"image"``: float32 ``(1, L)``, the signal (about ``[-2, 2]``);
    - ``"label"``: int64 scalar, index into ``classes``;
    - ``"mask"``: bool ``(L,)``, the samples the event covers.

    Raises:
        ValueError: On a non-positive ``num_samples``, too short a ``length`` or unknown or
            repeated class names.
    """

    def __init__(
        self,
        num_samples: int = 1024,
        length: int = 256,
        seed: int = 0,
        clutter: bool = True,
        classes: Sequence[str] = CLASSES_1D,
    ) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if not isinstance(length, int) or length < 64:
            raise ValueError(f"length must be an int >= 64, got {length!r}")
        classes = tuple(classes) if not isinstance(classes, str) else (classes,)
        if not classes or any(c not in CLASSES_1D for c in classes) or len(set(classes)) != len(
            classes
        ):
            raise ValueError(f"classes must be distinct names from {CLASSES_1D}, got {classes}")
        self.num_samples = num_samples
        self.length = length
        self.seed = int(seed)
        self.clutter = bool(clutter)
        self.classes = classes

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
        signal, label, mask = self.render(index)
        return {
            "image": torch.from_numpy(signal)[None],
            "label": torch.tensor(label, dtype=torch.int64),
            "mask": torch.from_numpy(mask),
        }

    @staticmethod
    def event(kind: str, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The event ``kind`` on ``u`` in ``[0, 1]`` across its support (zero outside)."""
        inside = (u >= 0) & (u <= 1)
        if kind == "burst":
            cycles = rng.uniform(4.0, 7.0)
            wave = np.sin(2 * math.pi * cycles * u) * np.sin(math.pi * np.clip(u, 0, 1)) ** 2
            return np.where(inside, wave, 0.0)
        if kind == "pulse":
            edge = np.clip(np.minimum(u, 1 - u) / 0.1, 0.0, 1.0)  # flat top, ramps at the ends
            return np.where(inside, edge * rng.choice([-1.0, 1.0]), 0.0)
        out = np.zeros_like(u)  # spikes: three narrow spikes at 1/6, 1/2 and 5/6
        for c in (1 / 6, 1 / 2, 5 / 6):
            out += np.exp(-(((u - c) / 0.03) ** 2))
        return np.where(inside, out, 0.0)

    def render(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Draw sample ``index``: ``(signal (L,) float32, label, mask (L,) bool)``."""
        rng = np.random.default_rng([self.seed, index])
        label = index % len(self.classes)
        n = self.length
        t = np.arange(n, dtype=np.float64) + 0.5
        baseline = sum(
            rng.uniform(0.1, 0.3) * np.sin(2 * math.pi * t / rng.uniform(0.6, 2.0) / n
                                           + rng.uniform(0, 2 * math.pi))
            for _ in range(2)
        )  # fmt: skip
        signal = baseline + rng.uniform(0.05, 0.12) * rng.standard_normal(n)
        if self.clutter:
            for _ in range(int(rng.integers(1, 4))):
                signal[int(rng.integers(0, n))] += rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.4)
        width = rng.uniform(0.1, 0.18) * n
        start = rng.uniform(1, n - width - 1)
        u = (t - start) / width
        amplitude = rng.uniform(0.9, 1.6)
        signal = signal + amplitude * self.event(self.classes[label], u, rng)
        mask = (u >= 0) & (u <= 1)
        return signal.astype(np.float32), label, mask


class SignalsDataModule(SplitsDataModule):
    """Train / val / test splits of :class:`SignalsDataset` with disjoint seeds.

    Args:
        num_train: Number of training samples.
        num_val: Number of validation samples.
        num_test: Number of test (and predict) samples.
        length: Samples per signal.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: Base seed of the three splits.
        clutter: Add glitches (see :class:`SignalsDataset`).

    Example:
        >>> dm = SignalsDataModule(num_train=8, num_val=4, num_test=4, batch_size=4)
        >>> dm.setup("fit")
        >>> next(iter(dm.val_dataloader()))["image"].shape
        torch.Size([4, 1, 256])
    """

    CLASSES = CLASSES_1D

    def __init__(
        self,
        num_train: int = 1024,
        num_val: int = 256,
        num_test: int = 256,
        length: int = 256,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        clutter: bool = True,
    ) -> None:
        super().__init__()
        self._check_sizes(num_train, num_val, num_test, batch_size, num_workers)
        self.save_hyperparameters()
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.length = length
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.clutter = clutter
        self._datasets: dict[str, SignalsDataset] = {}
        SignalsDataset(1, length=length)  # validates length up front

    def dataset(self, split: str) -> SignalsDataset:
        """The (cached) dataset of ``split``."""
        if split not in self._datasets:
            seed = self.split_seed(split)  # validates split
            self._datasets[split] = SignalsDataset(
                self.sizes[split], length=self.length, seed=seed, clutter=self.clutter
            )
        return self._datasets[split]
