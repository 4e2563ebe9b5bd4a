"""The engine: tensors in, maps out. No Lightning, no files.

``explainer`` (one forward, one batched backward, every method's maps), ``borrow`` (the model
borrowed: lock, eval mode, hooks for one forward), ``targets`` (what is differentiated),
``layers`` / ``layouts`` / ``families`` (which layer, and how its output becomes ``(B, C, ...)``),
``guided`` (guided backprop's gate rules), ``replay`` (re-running from a cached layer),
``wrappers`` (compiled / parallel / checkpointed models), ``cam`` (one class per method and
:func:`explain`).
"""

from lightning_cam.engine.borrow import LayerCapture, borrowed, model_lock
from lightning_cam.engine.explainer import (
    Explainer,
    Explanation,
    NonFiniteWarning,
    OutputWarning,
    concat_explanations,
)

__all__ = [
    "Explainer",
    "Explanation",
    "LayerCapture",
    "NonFiniteWarning",
    "OutputWarning",
    "borrowed",
    "concat_explanations",
    "model_lock",
]
