"""The registry of task strategies: the first class in :data:`TASKS` that applies to a
LightningModule serves it (classification applies to anything, so it comes last)."""

from __future__ import annotations

from typing import Any

from lightning_cam.callbacks.classification import ClassificationTask
from lightning_cam.callbacks.detection import DetectionTask
from lightning_cam.callbacks.segmentation import SegmentationTask
from lightning_cam.callbacks.task import TaskStrategy

#: Task strategy classes, most specific first.
TASKS: list[type[TaskStrategy]] = [DetectionTask, SegmentationTask, ClassificationTask]


def task_class(pl_module: Any) -> type[TaskStrategy]:
    """The first class of :data:`TASKS` that applies to ``pl_module``."""
    for cls in TASKS:
        if cls.applies(pl_module):
            return cls
    return ClassificationTask
