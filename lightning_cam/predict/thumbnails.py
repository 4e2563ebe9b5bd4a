"""The pictures of the report, made once: an image thumbnail and one coloured map per method and
layer per image, under ``OUT/report/thumbs/``.

Every picture is recorded in ``thumbs/index.json`` with a signature of what it was made from
(the image file's path, size and modification time, or the pixels a loader returned; the
shard file's size and modification time, the row and the map key; the picture size). A rerun
makes only the pictures whose signature changed and removes those no image needs any more.

The map picture is the map resampled to the picture size as the writer's overlays are
(bilinear, then min-max normalised: :func:`lightning_cam.methods.upsample`,
:func:`~lightning_cam.methods.normalize_maps`) and coloured with jet; the page lays it over
the image with an adjustable opacity, so the blend is the page's, not baked in.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_cam.methods import normalize_maps, upsample
from lightning_cam.predict import storage
from lightning_cam.predict.audit import Audit

THUMBS_DIR = "thumbs"
INDEX_FILE = "index.json"
#: Part of every signature: a change of how pictures are drawn remakes them all.
DRAWING_VERSION = "1"


def short_hash(text: str, size: int = 8) -> str:
    """A short hex digest of ``text`` (picture file names)."""
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def picture_size(input_shape: Any, largest: int) -> tuple[int, int]:
    """``(height, width)`` of an image's pictures: the model input's (``"3x224x224"``),
    shrunk so that its longest side is at most ``largest`` (never enlarged)."""
    try:
        h, w = (int(v) for v in str(input_shape).split("x")[-2:])
    except ValueError:
        h = w = largest
    scale = min(1.0, largest / max(h, w, 1))
    return max(1, round(h * scale)), max(1, round(w * scale))


def map_picture(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A stored ``[0, 1]`` map ``(h, w)`` as the ``(H, W, 3)`` uint8 jet picture of ``size``."""
    from lightning_cam.tools import viz

    full = normalize_maps(upsample(torch.from_numpy(cam[None].astype(np.float32)), size))[0]
    return viz.colorize(full.numpy())


def image_picture(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB image resized (the whole image, as ``explain --data`` feeds the model) to
    ``size``."""
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = image.shape[0] >= h and image.shape[1] >= w
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (w, h), interpolation=interp))


class Thumbnails:
    """Makes the pictures of an :class:`~lightning_cam.predict.audit.Audit` (once).

    Args:
        audit: The folder read back.
        report_dir: ``OUT/report`` (the pictures go to its ``thumbs/``).
        largest: Longest side of the pictures in pixels.

    Attributes:
        made: Pictures written by :meth:`run`.
        reused: Pictures already there with the same signature.
        removed: Old pictures removed.
        failed: ``{image id: reason}`` of images that could not be read.
    """

    def __init__(self, audit: Audit, report_dir: Path, largest: int = 224) -> None:
        self.audit = audit
        self.folder = report_dir / THUMBS_DIR
        self.largest = int(largest)
        self.made = self.reused = self.removed = 0
        self.failed: dict[str, str] = {}
        self._old: dict[str, str] = {}
        self._new: dict[str, str] = {}

    def _load_index(self) -> None:
        try:
            old = json.loads((self.folder / INDEX_FILE).read_text(encoding="utf-8"))
            self._old = {str(k): str(v) for k, v in old.items()} if isinstance(old, dict) else {}
        except (OSError, ValueError):
            self._old = {}

    def _fresh(self, name: str, signature: str) -> bool:
        self._new[name] = signature
        if self._old.get(name) == signature and (self.folder / name).is_file():
            self.reused += 1
            return True
        return False

    def _save(self, name: str, picture: np.ndarray) -> None:
        from lightning_cam.tools import viz

        viz.save_image(self.folder / name, picture, quality=88)
        self.made += 1

    def run(self) -> dict[str, Any]:
        """Make what is missing or changed, remove what is stale; returns per image
        ``{"key", "image" (has an image picture), "maps" (has map pictures), "size"}`` columns."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._load_index()
        views = {f"{m}/{n}": short_hash(f"{m}/{n}", 4) for m, n in self.audit.views}
        keys, has_image, has_maps = [], [], []
        shapes = self.audit.column("input_shape")
        for i, image_id in enumerate(str(v) for v in self.audit.column("id")):
            key = short_hash(image_id)
            size = picture_size(shapes[i], self.largest)
            keys.append(key)
            has_image.append(self._image(i, image_id, key, size))
            has_maps.append(self._maps(i, key, size, views))
        self._prune()
        text = json.dumps(self._new, indent=0, sort_keys=True)
        storage.write_bytes_atomic(self.folder / INDEX_FILE, lambda f: f.write(text.encode()))
        return {"key": keys, "image": has_image, "maps": has_maps, "views": views}

    def _image(self, i: int, image_id: str, key: str, size: tuple[int, int]) -> bool:
        name = f"{key}.jpg"
        audit = self.audit
        if audit.images is None:
            return False
        if isinstance(audit.images, Path):
            path = audit.image_path(image_id)
            if path is None:
                return False
            st = path.stat()
            signature = f"{DRAWING_VERSION}|{path}|{st.st_size}|{st.st_mtime_ns}|{size}"
            if self._fresh(name, signature):
                return True
        try:
            image = audit.load_image(image_id)
        except (OSError, ValueError) as err:
            self._new.pop(name, None)
            self.failed[image_id] = str(err).strip().splitlines()[0] if str(err) else repr(err)
            return False
        if image is None:
            return False
        if not isinstance(audit.images, Path):  # a loader: the pixels are the signature
            digest = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
            signature = f"{DRAWING_VERSION}|px:{digest}|{image.shape}|{size}"
            if self._fresh(name, signature):
                return True
        self._save(name, image_picture(image, size))
        return True

    def _maps(self, i: int, key: str, size: tuple[int, int], views: dict[str, str]) -> bool:
        audit = self.audit
        if not audit.explained(i):
            return False
        shard, row = audit.column("shard")[i], audit.column("row")[i]
        stamp = audit.shard_stamp(shard)
        todo = []
        for (m, n) in audit.views:
            name = f"{key}-{views[f'{m}/{n}']}.png"
            signature = f"{DRAWING_VERSION}|{shard}|{stamp}|{row}|cam/{m}/{n}|{size}"
            if not self._fresh(name, signature):
                todo.append((m, n, name))
        for m, n, name in todo:
            cam = audit.map(i, m, n)
            if cam is None:
                return False
            self._save(name, map_picture(cam, size))
        return True

    def _prune(self) -> None:
        for p in self.folder.iterdir():
            if p.name != INDEX_FILE and p.name not in self._new and p.is_file():
                try:
                    os.unlink(p)
                    self.removed += 1
                except FileNotFoundError:
                    pass
