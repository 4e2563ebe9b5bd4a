"""Synthetic shapes: the embedded default dataset, with ground-truth boxes and masks.

Every image holds exactly one object -- a circle, square, triangle or star -- at a random
position, size, rotation and colour, over a textured background (a smooth colour gradient,
faint stripes and pixel noise), optionally with small distractors (thin lines, arcs and small
elongated blobs) that are none of the shapes. The label is the shape; colour and background are
drawn independently of it, so a classifier has to look at the object's silhouette, and the box
and mask that come with every sample say where it should look.

Samples are generated on the fly and are a pure function of ``(seed, index)``: any worker, any
order, any epoch gives the same sample.

Example:
    >>> ds = ShapesDataset(num_samples=8, seed=0)
    >>> sample = ds[3]
    >>> sample["image"].shape, sample["label"].item(), ds.class_names[sample["label"]]
    (torch.Size([3, 64, 64]), 3, 'star')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star")

class ShapesDataset(Dataset):
    """Synthetic one-object images with a shape label, a box and a mask.

    Args:
        num_samples: Number of samples (the length of the dataset).
        image_size: Height and width ``S`` of the square images, at least 32.
        seed: Seed of the dataset; sample ``i`` is a pure function of ``(seed, i)``.
        clutter: Add small distractors (thin lines, arcs, small elongated blobs) that are not
            any of the shapes.
        classes: The shape classes to draw, a subset of :data:`CLASSES` in any order; the label
            is the position in this sequence. Labels cycle through the classes with the index,
            so every class has ``num_samples // len(classes)`` or one more samples.
        cache: Keep each sample once rendered (as 8-bit pixels, about ``4 * S * S`` bytes a
            sample: 16 KiB at 64 px), so later epochs skip the rendering. Each DataLoader
            worker process keeps its own cache. Cached or not, a sample is the same.

    Each sample is a dict:

    - ``"image"``: float32 ``(3, S, S)`` in ``[0, 1]``, multiples of ``1/255`` (8-bit pixels,
      like a decoded PNG, so saving and reloading an image is lossless);
    - ``"label"``: int64 scalar, index into ``classes``;
    - ``"box"``: float32 ``(4,)``, ``(x0, y0, x1, y1)`` in pixel-edge coordinates: the object
      covers the pixel columns ``x0 <= x < x1`` and rows ``y0 <= y < y1``, i.e. the box is
      ``mask[y0:y1, x0:x1]`` exactly (tight around the mask);
    - ``"mask"``: bool ``(S, S)``, the pixels the object covers (at least half).

    Raises:
        ValueError: On a non-positive ``num_samples``, too small an ``image_size`` or unknown
            or repeated class names.

    Example:
        >>> ds = ShapesDataset(num_samples=4, image_size=64, seed=1, clutter=False)
        >>> s = ds[0]
        >>> s["image"].dtype, s["mask"].shape, s["box"].tolist() == ShapesDataset.mask_to_box(
        ...     s["mask"]).tolist()
        (torch.float32, torch.Size([64, 64]), True)
    """

    def __init__(
        self,
        num_samples: int = 2000,
        image_size: int = 64,
        seed: int = 0,
        clutter: bool = True,
        classes: Sequence[str] = CLASSES,
        cache: bool = True,
    ) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
        if isinstance(classes, str):
            raise ValueError(f"classes must be a sequence of names from {CLASSES}, got a string")
        classes = tuple(classes)
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or not classes or len(set(classes)) != len(classes):
            raise ValueError(
                f"classes must be distinct names from {CLASSES}, got {list(classes)}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = int(seed)
        self.clutter = bool(clutter)
        self.classes = classes
        self.cache = bool(cache)
        self._cache: dict[int, tuple[np.ndarray, int, np.ndarray]] = {}
        yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
        self._grid = (xx / (image_size - 1), yy / (image_size - 1))

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
        if index in self._cache:
            pixels, label, mask = self._cache[index]
        else:
            pixels, label, mask = self.render(index)
            if self.cache:
                self._cache[index] = (pixels, label, mask)
        mask_t = torch.from_numpy(mask.copy())
        return {
            "image": torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0),
            "label": torch.tensor(label, dtype=torch.int64),
            "box": self.mask_to_box(mask_t),
            "mask": mask_t,
        }

    @staticmethod
    def mask_to_box(mask: torch.Tensor) -> torch.Tensor:
        """Tight pixel-edge box ``(x0, y0, x1, y1)`` float32 around a non-empty ``(H, W)`` mask."""
        ys = torch.nonzero(mask.any(dim=1)).flatten()
        xs = torch.nonzero(mask.any(dim=0)).flatten()
        if len(xs) == 0:
            raise ValueError("mask_to_box needs a non-empty mask")
        return torch.tensor(
            [xs[0].item(), ys[0].item(), xs[-1].item() + 1, ys[-1].item() + 1], dtype=torch.float32
        )

    # ------------------------------------------------------------------ rendering
    def render(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Draw sample ``index`` (no caching, no index check).

        Returns:
            ``(pixels, label, mask)``: uint8 ``(S, S, 3)`` RGB pixels (HWC), the label, and the
            bool ``(S, S)`` mask.
        """
        rng = np.random.default_rng([self.seed, index])
        label = index % len(self.classes)
        s = self.image_size
        image = self._background(rng)
        if self.clutter:
            self._distractors(rng, image)

        # Object geometry: circumradius from a size of 25-45 % of the side.
        size = rng.uniform(0.25, 0.45) * s
        r = size / 2
        shape = self.classes[label]
        # Stars and triangles fill less of their circle; keep them as visible as the others.
        r *= {"star": 1.12, "triangle": 1.1}.get(shape, 1.0)
        cx, cy = rng.uniform(r + 1, s - 2 - r, size=2)
        angle = rng.uniform(0, 2 * math.pi)

        alpha = np.zeros((s, s), np.uint8)
        if shape == "circle":
            cv2.circle(
                alpha,
                (round(cx * SCALE), round(cy * SCALE)),
                round(r * SCALE),
                255,
                thickness=-1,
                lineType=cv2.LINE_AA,
                shift=SHIFT,
            )
        else:
            cv2.fillPoly(
                alpha,
                list(to_fixed_point(shape_polygon(shape, cx, cy, r, angle))),  # one (N, 2) polygon
                255,
                lineType=cv2.LINE_AA,
                shift=SHIFT,
            )
        mask = alpha >= 128
        a = (alpha.astype(np.float32) / 255.0)[..., None]

        # Colour: random, but far enough from the background it sits on.
        bg = image[mask].mean(axis=0)
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        for _ in range(16):
            if np.linalg.norm(colour - bg) >= 0.45:
                break
            colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        else:
            colour = np.where(bg > 0.5, 0.05, 0.95).astype(np.float32)
        # Gentle shading across the object, so it is not a flat stencil.
        gx, gy = self._grid
        t = rng.uniform(0, 2 * math.pi)
        shade = 1.0 + 0.12 * ((gx - cx / s) * math.cos(t) + (gy - cy / s) * math.sin(t)) / 0.25
        obj = np.clip(colour[None, None, :] * shade[..., None], 0.0, 1.0)
        image = image * (1.0 - a) + obj * a

        image += rng.uniform(0.015, 0.04) * rng.standard_normal(image.shape, dtype=np.float32)
        pixels = np.clip(image * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
        return pixels, label, mask

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """A smooth two-colour gradient at a random angle plus faint stripes, ``(S, S, 3)``."""
        gx, gy = self._grid
        c0, c1 = rng.uniform(0.1, 0.9, size=(2, 3)).astype(np.float32)
        t = rng.uniform(0, 2 * math.pi)
        u = (gx - 0.5) * math.cos(t) + (gy - 0.5) * math.sin(t)  # in [-0.71, 0.71]
        u = np.clip(u / 1.42 + 0.5, 0.0, 1.0)[..., None]
        image = c0 * (1.0 - u) + c1 * u
        # Faint stripes: a sinusoid of random period, direction and phase, in grey.
        period = rng.uniform(4.0, 12.0) / self.image_size
        ts = rng.uniform(0, math.pi)
        v = gx * math.cos(ts) + gy * math.sin(ts)
        stripes = rng.uniform(0.02, 0.06) * np.sin(2 * math.pi * v / period + rng.uniform(0, 6.3))
        return (image + stripes[..., None]).astype(np.float32)

    def _distractors(self, rng: np.random.Generator, image: np.ndarray) -> None:
        """Draw 2-5 thin lines, arcs or small elongated blobs into ``image`` (in place)."""
        s = self.image_size
        k = s / 64
        layer = np.zeros((s, s), np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            kind = rng.integers(3)
            x, y = rng.uniform(0, s, size=2)
            if kind == 0:  # thin line segment
                length, t = rng.uniform(6, 22) * k, rng.uniform(0, math.pi)
                p0 = (x - 0.5 * length * math.cos(t), y - 0.5 * length * math.sin(t))
                p1 = (x + 0.5 * length * math.cos(t), y + 0.5 * length * math.sin(t))
                cv2.line(
                    layer,
                    tuple(int(round(v * SCALE)) for v in p0),
                    tuple(int(round(v * SCALE)) for v in p1),
                    255,
                    1,
                    cv2.LINE_AA,
                    SHIFT,
                )
            elif kind == 1:  # open arc (at most half a circle), thin
                rad = rng.uniform(3, 8) * k
                start = rng.uniform(0, 360)
                cv2.ellipse(
                    layer,
                    (round(x * SCALE), round(y * SCALE)),
                    (round(rad * SCALE), round(rad * SCALE)),
                    0.0,
                    start,
                    start + rng.uniform(60, 180),
                    255,
                    1,
                    cv2.LINE_AA,
                    SHIFT,
                )
            else:  # small elongated blob (aspect >= 2.5)
                minor = rng.uniform(0.8, 1.6) * k
                major = minor * rng.uniform(2.5, 4.0)
                cv2.ellipse(
                    layer,
                    (round(x * SCALE), round(y * SCALE)),
                    (round(major * SCALE), round(minor * SCALE)),
                    rng.uniform(0, 180),
                    0,
                    360,
                    255,
                    -1,
                    cv2.LINE_AA,
                    SHIFT,
                )
            colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            x0, y0, w, h = cv2.boundingRect(layer)  # blend only where the item was drawn
            if w and h:
                win = np.s_[y0 : y0 + h, x0 : x0 + w]
                a = (layer[win].astype(np.float32) / 255.0)[..., None]
                image[win] = image[win] * (1.0 - a) + a * colour
                layer[win] = 0


class ShapesDataModule(SplitsDataModule):
    """Train / val / test splits of :class:`ShapesDataset` with disjoint seeds.

    The split seeds are derived from ``seed`` and the split's name, so the three splits never
    share a sample; ``predict_dataloader`` serves the test split.

    Args:
        num_train: Number of training samples.
        num_val: Number of validation samples.
        num_test: Number of test (and predict) samples.
        image_size: Side of the square images.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: Base seed of the three splits.
        clutter: Draw distractors (see :class:`ShapesDataset`).
        predict_split: The split ``predict_dataloader`` serves (``"train"``, ``"val"`` or
            ``"test"``), e.g. ``"val"`` to explain the validation set with ``trainer.predict``.

    Raises:
        ValueError: On a non-positive size or batch size, a negative ``num_workers`` or an
            unknown ``predict_split``.

    Example:
        >>> dm = ShapesDataModule(num_train=64, num_val=16, num_test=16, batch_size=8)
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch["image"].shape, batch["box"].shape, dm.num_classes
        (torch.Size([8, 3, 64, 64]), torch.Size([8, 4]), 4)
    """

    CLASSES = CLASSES

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 400,
        num_test: int = 400,
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        clutter: bool = True,
        predict_split: str = "test",
    ) -> None:
        super().__init__()
        self._check_sizes(num_train, num_val, num_test, batch_size, num_workers)
        if predict_split not in self.SPLITS:
            raise ValueError(f"predict_split must be one of {self.SPLITS}, got {predict_split!r}")
        self.predict_split = predict_split
        self.save_hyperparameters()
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.clutter = clutter
        self._datasets: dict[str, ShapesDataset] = {}
        ShapesDataset(1, image_size=image_size)  # validates image_size up front

    def split_seed(self, split: str) -> int:
        """The dataset seed of ``split`` (one of ``"train"``, ``"val"``, ``"test"``)."""
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        entropy = [int(self.seed), self.SPLITS.index(split) + 1]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def dataset(self, split: str) -> ShapesDataset:
        """The (cached) dataset of ``split``."""
        if split not in self._datasets:
            seed = self.split_seed(split)  # validates split
            n = {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]
            self._datasets[split] = ShapesDataset(
                n, image_size=self.image_size, seed=seed, clutter=self.clutter
            )
        return self._datasets[split]
