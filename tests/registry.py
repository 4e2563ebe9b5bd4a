"""A method registered in :data:`lightning_cam.methods.METHODS` for one test: the tools must
pick it up with no edit (every surface reads the registry)."""

from __future__ import annotations

import pytest
import torch

from lightning_cam import methods

TEST_METHOD = "testcam"


def channel_sum_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Weight 1 for every channel: the map is ``ReLU(sum_k A^k)``, whatever the gradients."""
    del gradients
    return torch.ones_like(activations.mean(dim=tuple(range(2, activations.dim())), keepdim=True))


def register_test_method(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register :data:`TEST_METHOD` (undone after the test); returns its name."""
    monkeypatch.setitem(methods.METHODS, TEST_METHOD, channel_sum_weights)
    return TEST_METHOD
