"""The registry of task strategies: the first class in :data:`TASKS` that applies to a
LightningModule and serves the callback's options serves it (classification applies to
anything, so it comes last; multi-label classification, ``target="labels"``, before it)."""

from __future__ import annotations

from typing import Any

from lightning_cam.callbacks.classification import ClassificationTask
from lightning_cam.callbacks.detection import DetectionTask
from lightning_cam.callbacks.multilabel import MultiLabelTask
from lightning_cam.callbacks.segmentation import SegmentationTask
from lightning_cam.callbacks.task import TaskStrategy

#: Task strategy classes, most specific first.
TASKS: list[type[TaskStrategy]] = [
    DetectionTask, SegmentationTask, MultiLabelTask, ClassificationTask,
]  # fmt: skip


def task_class(pl_module: Any, options: Any = None) -> type[TaskStrategy]:
    """The first class of :data:`TASKS` that applies to ``pl_module`` and serves ``options``
    (the callback's :class:`~lightning_cam.callbacks.options.CAMOptions`)."""
    for cls in TASKS:
        if cls.applies(pl_module) and cls.serves(options):
            return cls
    return ClassificationTask
