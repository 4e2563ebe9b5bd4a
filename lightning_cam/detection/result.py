"""What detection explainers return: :class:`DetectionResult`, and the keys of RoI-level maps.

Example:
    >>> import torch
    >>> r = DetectionResult(boxes=torch.tensor([[0.0, 0, 4, 4]]), labels=torch.tensor([1]),
    ...                     scores=torch.tensor([0.9]), class_names=["bg", "circle"])
    >>> r.label_names(), len(r)
    (['circle'], 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_cam.methods import method_name

__all__ = ["D2_ROI_LAYERS", "ROI_KEYS", "ROI_LAYER", "DetectionResult"]

#: Key of RoI-level maps in :attr:`DetectionResult.maps` for torchvision detectors (the module
#: whose output they explain).
ROI_LAYER = "roi_heads.box_roi_pool"

#: Keys of RoI-level maps in :attr:`DetectionResult.maps` for detectron2 models: the module whose
#: output is explained, ``roi_heads.res5`` (C4 heads, ``Res5ROIHeads``) or
#: ``roi_heads.box_pooler`` (FPN heads, ``StandardROIHeads``: the pooled features).
D2_ROI_LAYERS = ("roi_heads.res5", "roi_heads.box_pooler")

#: Every key of RoI-level maps (drawn with their proposal box).
ROI_KEYS = (ROI_LAYER, *D2_ROI_LAYERS)


@dataclass
class DetectionResult:
    """The detections of one image and their maps, in the original image's coordinates.

    Attributes:
        boxes: ``(K, 4)`` float32 ``(x1, y1, x2, y2)`` in pixels of the image as given.
        labels: ``(K,)`` int64 labels.
        scores: ``(K,)`` float32 scores (detached), decreasing.
        maps: ``maps[method][layer]``: ``(K, H, W)`` float32 in ``[0, 1]``, one map per
            detection, aligned with the image (``layer`` as named on the detector, or
            :data:`ROI_LAYER` for RoI-level maps).
        image_size: ``(H, W)`` of the image.
        layers: The layers explained (maps keys), in order.
        methods: The methods computed.
        class_names: Names indexed by label, when known.
        proposals: ``(K, 4)`` the proposal box of each detection (RoI-level maps only).
        attention_maps: Maps that are no CAM method's, by name: ``"cross_attention"``, the
            decoder cross-attention of each detection's query (DETR family, see
            :mod:`lightning_cam.detection.detr`), ``(K, H, W)`` in ``[0, 1]``.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)
    layers: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    proposals: torch.Tensor | None = None
    attention_maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def map(self, method: str | None = None, layer: str | None = None) -> torch.Tensor:
        """The ``(K, H, W)`` maps of one method (``None``: the first computed) and layer
        (``None``: the first layer); ``method`` may also name one of :attr:`attention_maps`."""
        if method in self.attention_maps and layer is None:
            return self.attention_maps[method]
        m = self.methods[0] if method is None and self.methods else method_name(method or "")
        if m not in self.maps:
            raise ValueError(f"method {method!r} was not computed; have {self.methods}")
        key = self.layers[0] if layer is None else layer
        if key not in self.maps[m]:
            raise ValueError(f"layer {layer!r} was not explained; have {self.layers}")
        return self.maps[m][key]

    def label_names(self) -> list[str]:
        """A name per detection: ``class_names[label]``, else ``"class <label>"``."""
        names = self.class_names or []
        return [
            names[i] if 0 <= i < len(names) else f"class {i}" for i in self.labels.tolist()
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready detections: index, box, label, name and score of each."""
        return {
            "image_size": list(self.image_size),
            "detections": [
                {
                    "index": k,
                    "box": [round(float(v), 2) for v in self.boxes[k].tolist()],
                    "label": int(self.labels[k]),
                    "class_name": name,
                    "score": round(float(self.scores[k]), 5),
                }
                for k, name in enumerate(self.label_names())
            ],
        }
