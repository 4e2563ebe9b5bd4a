"""The batch parser of the callbacks and of ``CAMWriter``: images (and labels, masks, boxes, ids)
out of ``(x, y, ...)`` tuples / lists, dicts and bare image tensors.

Example:
    >>> import torch
    >>> parts = parse_batch((torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])), owner="CAMCallback")
    >>> parts["image"].shape, parts["label"].tolist(), parts["mask"]
    (torch.Size([2, 3, 8, 8]), [0, 1], None)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lightning_cam._compat import MisconfigurationException

#: The parts of a batch and their default dict keys.
BATCH_KEYS: dict[str, str] = {"label": "label", "mask": "mask", "box": "box"}


def parse_batch(
    batch: Any,
    *,
    image_key: str = "image",
    keys: Mapping[str, str | None] | None = None,
    owner: str = "CAMCallback",
) -> dict[str, Any]:
    """``{"image": (B, C, H, W), name: value or None for name in keys}`` of ``batch``.

    Dict batches: ``batch[image_key]`` and ``batch.get(key)`` per part (a ``None`` key: not
    read); tuples / lists: the first item is the images and a tensor second item the labels;
    a tensor: the images. Values are returned as found (callers drop what does not fit).

    Raises:
        MisconfigurationException: When ``image_key`` is not in a dict batch, or no
            ``(B, C, H, W)`` image tensor is found (naming ``owner`` and the layouts taken).
    """
    keys = dict(BATCH_KEYS if keys is None else keys)
    out: dict[str, Any] = dict.fromkeys(("image", *keys))
    if isinstance(batch, torch.Tensor):
        out["image"] = batch
    elif isinstance(batch, dict):
        if image_key not in batch:
            raise MisconfigurationException(
                f"image_key={image_key!r} is not in the batch (keys: "
                f"{sorted(map(str, batch))}); set image_key to the key of the images."
            )
        out["image"] = batch[image_key]
        for name, key in keys.items():
            out[name] = batch.get(key) if key else None
    elif isinstance(batch, (tuple, list)) and batch:
        out["image"] = batch[0]
        if "label" in keys and len(batch) > 1 and isinstance(batch[1], torch.Tensor):
            out["label"] = batch[1]
    img = out["image"]
    if not isinstance(img, torch.Tensor) or img.dim() not in (3, 4, 5):
        desc = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise MisconfigurationException(
            f"{owner} expects batches whose inputs are a tensor (B, C, H, W) (images), "
            f"(B, C, L) (signals) or (B, C, D, H, W) / (B, C, T, H, W) (volumes, videos); "
            f"found {desc} "
            f"in a {type(batch).__name__} batch. Batches may be (x, y, ...) tuples, tensors or "
            f"dicts with image_key={image_key!r}; override {owner}.extract() for other layouts."
        )
    return out
