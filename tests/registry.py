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
    """Register :data:`TEST_METHOD` (a gradient-kind method, weights
    :func:`channel_sum_weights`) for the duration of a test; returns its name."""
    method_cls = getattr(methods, "Method", None)
    if method_cls is None:  # a registry of bare weighting functions
        monkeypatch.setitem(methods.METHODS, TEST_METHOD, channel_sum_weights)
        return TEST_METHOD
    registries = [methods.METHODS, vars(methods).get("_ALIASES", {})]
    before = [dict(r) for r in registries]
    methods.register(method_cls(TEST_METHOD, "TestCAM", "gradient", "a method for tests",
                                channel_sum_weights, title="Test-CAM"))
    for registry, old in zip(registries, before, strict=True):
        for key in set(registry) - set(old):  # undone after the test by monkeypatch
            value = registry.pop(key)
            monkeypatch.setitem(registry, key, value)
    return TEST_METHOD
