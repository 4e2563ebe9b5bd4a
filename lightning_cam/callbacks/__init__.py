"""Lightning callbacks that log CAM explanations to TensorBoard, W&B, MLflow or PNG files.

Modules, one concern each: :mod:`~lightning_cam.callbacks.base` (the hook classes),
:mod:`~lightning_cam.callbacks.options` (checks shared with ``CAMWriter``),
:mod:`~lightning_cam.callbacks.batches` (the batch parser), :mod:`~lightning_cam.callbacks.probes`,
:mod:`~lightning_cam.callbacks.shared`, :mod:`~lightning_cam.callbacks.task` and
:mod:`~lightning_cam.callbacks.tasks` (classification, detection),
:mod:`~lightning_cam.callbacks.render`, :mod:`~lightning_cam.callbacks.sinks`.
"""

from lightning_cam.callbacks.base import (
    KINDS,
    METRICS,
    CAMCallback,
    GradCAMCallback,
    GradCAMPlusPlusCallback,
)
from lightning_cam.callbacks.options import CAMOptions
from lightning_cam.callbacks.sinks import SINKS, ImageSink
from lightning_cam.callbacks.task import TaskStrategy
from lightning_cam.callbacks.tasks import TASKS

__all__ = [
    "KINDS",
    "METRICS",
    "SINKS",
    "TASKS",
    "CAMCallback",
    "CAMOptions",
    "GradCAMCallback",
    "GradCAMPlusPlusCallback",
    "ImageSink",
    "TaskStrategy",
]
