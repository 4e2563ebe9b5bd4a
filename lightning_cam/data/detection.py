"""Synthetic shapes for detection: several objects per image, with boxes, labels and masks.

The objects are drawn like :class:`~lightning_cam.data.shapes.ShapesDataset`'s (circle, square,
triangle, star at a random size, rotation and colour, over the same textured background and
distractors), but an image holds ``min_objects`` to ``max_objects`` of them, placed without
overlap. Targets follow torchvision's detection convention: ``boxes`` ``(N, 4)`` as
``(x1, y1, x2, y2)`` in pixels, ``labels`` ``(N,)`` in ``1..len(classes)`` with ``0`` reserved for
the background, so ``class_names[label]`` is the name and ``num_classes`` (background included)
is what torchvision's ``num_classes`` expects.

Samples are a pure function of ``(seed, index)``.

Example:
    >>> ds = ShapesDetectionDataset(num_samples=4, image_size=128, seed=0)
    >>> image, target = ds[0]
    >>> image.shape, target["boxes"].shape[1], ds.class_names[0], ds.num_classes
    (torch.Size([3, 128, 128]), 4, '__background__', 5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_cam.data.common import (
    SCALE,
    SHIFT,
    SplitsDataModule,
    shape_polygon,
    to_fixed_point,
)
from lightning_cam.data.shapes import CLASSES, ShapesDataset

BACKGROUND = "__background__"

Target = dict[str, torch.Tensor]


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """Collate ``(image, target)`` samples into ``(list of images, list of target dicts)``.

    This is the batch format of torchvision's detection models (images may differ in size).
    """
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


class ShapesDetectionDataset(Dataset):
    """Synthetic images with several shapes each, as ``(image, target)`` detection samples.

    Args:
        num_samples: Number of samples.
        image_size: Side ``S`` of the square images, at least 64.
        seed: Sample ``i`` is a pure function of ``(seed, i)``.
        min_objects: Fewest objects per image (>= 1).
        max_objects: Most objects per image (fewer when they do not fit without overlap).
        clutter: Add small distractors that are none of the shapes.
        classes: Shape classes, a subset of :data:`~lightning_cam.data.shapes.CLASSES`; label
            ``i + 1`` is ``classes[i]``.
        masks: Also return the instance masks (``target["masks"]``, uint8 ``(N, S, S)``).
        min_size: Smallest object size (circumscribed diameter), as a fraction of ``S``.
        max_size: Largest object size, as a fraction of ``S``.

    Each sample is ``(image, target)``: ``image`` float32 ``(3, S, S)`` in ``[0, 1]``;
    ``target`` a dict with ``"boxes"`` float32 ``(N, 4)`` (tight pixel-edge boxes around the
    masks), ``"labels"`` int64 ``(N,)``, ``"image_id"`` int64 scalar, and ``"masks"`` when asked.

    Raises:
        ValueError: On bad sizes, counts or class names.
    """

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: int = 128,
        seed: int = 0,
        min_objects: int = 1,
        max_objects: int = 3,
        clutter: bool = True,
        classes: Sequence[str] = CLASSES,
        masks: bool = False,
        min_size: float = 0.18,
        max_size: float = 0.34,
    ) -> None:
        if not isinstance(image_size, int) or image_size < 64:
            raise ValueError(f"image_size must be an int >= 64, got {image_size!r}")
        if not isinstance(min_objects, int) or min_objects < 1:
            raise ValueError(f"min_objects must be an int >= 1, got {min_objects!r}")
        if not isinstance(max_objects, int) or max_objects < min_objects:
            raise ValueError(
                f"max_objects must be an int >= min_objects ({min_objects}), got {max_objects!r}"
            )
        if not 0.05 <= min_size <= max_size <= 0.6:
            raise ValueError(
                f"need 0.05 <= min_size <= max_size <= 0.6, got min_size={min_size!r}, "
                f"max_size={max_size!r}"
            )
        # The single-object dataset validates num_samples and classes, and draws backgrounds.
        self._shapes = ShapesDataset(
            num_samples, image_size=image_size, seed=seed, clutter=clutter, classes=classes
        )
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = int(seed)
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.clutter = bool(clutter)
        self.classes = tuple(classes)
        self.masks = bool(masks)
        self.min_size = float(min_size)
        self.max_size = float(max_size)

    @property
    def class_names(self) -> list[str]:
        """Names indexed by label: ``"__background__"`` then the shape classes."""
        return [BACKGROUND, *self.classes]

    @property
    def num_classes(self) -> int:
        """Number of labels, background included (torchvision's ``num_classes``)."""
        return len(self.classes) + 1

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        image, labels, masks = self.render(index)
        mask_t = torch.from_numpy(masks)
        boxes = torch.stack([ShapesDataset.mask_to_box(m) for m in mask_t])
        target: Target = {
            "boxes": boxes,
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
        if self.masks:
            target["masks"] = mask_t.to(torch.uint8)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), target

    # ------------------------------------------------------------------ rendering
    def _layout(self, rng: np.random.Generator) -> list[tuple[str, float, float, float, float]]:
        """Objects ``(shape, cx, cy, r, angle)`` whose circles do not overlap."""
        s = self.image_size
        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        placed: list[tuple[str, float, float, float, float]] = []
        for _ in range(count):
            for _attempt in range(30):
                r = rng.uniform(self.min_size, self.max_size) * s / 2
                shape = self.classes[int(rng.integers(len(self.classes)))]
                r_draw = r * {"star": 1.12, "triangle": 1.1}.get(shape, 1.0)
                cx, cy = rng.uniform(r_draw + 1, s - 2 - r_draw, size=2)
                if all(
                    math.hypot(cx - px, cy - py) > r_draw + pr + 2 for _, px, py, pr, _ in placed
                ):
                    placed.append((shape, float(cx), float(cy), float(r_draw),
                                   float(rng.uniform(0, 2 * math.pi))))
                    break
        return placed

    def render(self, index: int) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Draw sample ``index``.

        Returns:
            ``(image, labels, masks)``: float32 ``(S, S, 3)`` in ``[0, 1]``, the labels (in
            ``1..len(classes)``) and bool masks ``(N, S, S)``.
        """
        rng = np.random.default_rng([self.seed, index, 17])
        s = self.image_size
        image = self._shapes._background(rng)
        if self.clutter:
            self._shapes._distractors(rng, image)
        labels: list[int] = []
        masks: list[np.ndarray] = []
        gx, gy = self._shapes._grid
        for shape, cx, cy, r, angle in self._layout(rng):
            alpha = np.zeros((s, s), np.uint8)
            if shape == "circle":
                cv2.circle(alpha, (round(cx * SCALE), round(cy * SCALE)), round(r * SCALE),
                           255, thickness=-1, lineType=cv2.LINE_AA, shift=SHIFT)
            else:
                cv2.fillPoly(alpha, to_fixed_point(shape_polygon(shape, cx, cy, r, angle)), 255,  # type: ignore[call-overload]
                             lineType=cv2.LINE_AA, shift=SHIFT)
            mask = alpha >= 128
            if not mask.any():  # pragma: no cover - objects are at least 11 px wide
                continue
            a = (alpha.astype(np.float32) / 255.0)[..., None]
            bg = image[mask].mean(axis=0)
            colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            for _ in range(16):
                if np.linalg.norm(colour - bg) >= 0.45:
                    break
                colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            else:
                colour = np.where(bg > 0.5, 0.05, 0.95).astype(np.float32)
            t = rng.uniform(0, 2 * math.pi)
            shade = 1.0 + 0.12 * ((gx - cx / s) * math.cos(t) + (gy - cy / s) * math.sin(t)) / 0.25
            obj = np.clip(colour[None, None, :] * shade[..., None], 0.0, 1.0)
            image = image * (1.0 - a) + obj * a
            labels.append(self.classes.index(shape) + 1)
            masks.append(mask)
        image += rng.uniform(0.015, 0.04) * rng.standard_normal(image.shape, dtype=np.float32)
        return (
            np.clip(image, 0.0, 1.0).astype(np.float32),
            labels,
            np.stack(masks) if masks else np.zeros((0, s, s), bool),
        )


class ShapesDetectionDataModule(SplitsDataModule):
    """Train / val / test splits of :class:`ShapesDetectionDataset` with disjoint seeds.

    Batches are ``(list of images, list of target dicts)`` (:func:`collate_detection`), the
    format torchvision's detection models take; ``predict_dataloader`` serves the test split.

    Args:
        num_train: Number of training samples.
        num_val: Number of validation samples.
        num_test: Number of test (and predict) samples.
        image_size: Side of the square images.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes.
        seed: Base seed of the splits.
        min_objects: Fewest objects per image.
        max_objects: Most objects per image.
        clutter: Draw distractors.
        masks: Also return instance masks.

    Example:
        >>> dm = ShapesDetectionDataModule(num_train=16, num_val=8, num_test=8, batch_size=4)
        >>> dm.setup("fit")
        >>> images, targets = next(iter(dm.train_dataloader()))
        >>> len(images), sorted(targets[0])
        (4, ['boxes', 'image_id', 'labels'])
    """

    collate_fn = staticmethod(collate_detection)

    def __init__(
        self,
        num_train: int = 1000,
        num_val: int = 100,
        num_test: int = 100,
        image_size: int = 128,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        min_objects: int = 1,
        max_objects: int = 3,
        clutter: bool = True,
        masks: bool = False,
    ) -> None:
        super().__init__()
        self._check_sizes(num_train, num_val, num_test, batch_size, num_workers)
        self.save_hyperparameters()
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._kwargs: dict[str, Any] = dict(
            image_size=image_size, min_objects=min_objects, max_objects=max_objects,
            clutter=clutter, masks=masks,
        )
        self._datasets: dict[str, ShapesDetectionDataset] = {}
        ShapesDetectionDataset(1, **self._kwargs)  # validates the arguments up front

    @property
    def class_names(self) -> list[str]:
        """Names indexed by label, ``"__background__"`` first."""
        return [BACKGROUND, *CLASSES]

    @property
    def num_classes(self) -> int:
        """Number of labels, background included."""
        return len(CLASSES) + 1

    def split_seed(self, split: str) -> int:
        """The dataset seed of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        entropy = [int(self.seed), self.SPLITS.index(split) + 1, 1709]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def dataset(self, split: str) -> ShapesDetectionDataset:
        """The (cached) dataset of ``split``."""
        if split not in self._datasets:
            seed = self.split_seed(split)
            self._datasets[split] = ShapesDetectionDataset(
                self.sizes[split], seed=seed, **self._kwargs
            )
        return self._datasets[split]
