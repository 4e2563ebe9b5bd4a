"""Lightning callbacks that log CAM explanations to TensorBoard (or any image logger)."""

from lightning_cam.callbacks.base import (
    KINDS,
    METRICS,
    CAMCallback,
    GradCAMCallback,
    GradCAMPlusPlusCallback,
)

__all__ = ["KINDS", "METRICS", "CAMCallback", "GradCAMCallback", "GradCAMPlusPlusCallback"]
