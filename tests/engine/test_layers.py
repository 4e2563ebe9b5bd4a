"""Layer lookup and the default layer (lightning_cam/engine/layers.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_cam.engine.layers import (
    close_layer_names,
    default_layer,
    family_default_layer,
    get_layer,
    layer_name,
    resolve_layers,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2)
        self.cam_layer = self.stage  # an alias: named_modules() lists it once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage(self.stem(x))).flatten(1))


def test_get_layer_aliases_and_close_names() -> None:
    net = Net()
    assert get_layer(net, "stage.0") is net.stage[0]
    assert get_layer(net, "cam_layer") is net.stage
    assert layer_name(net, net.stage[0]) == "stage.0"
    assert "stage.0" in close_layer_names(net, "stage.O")
    with pytest.raises(ValueError, match=r"Unknown layer 'stage.9'.*Closest layer names"):
        get_layer(net, "stage.9")
    with pytest.raises(ValueError, match="not a submodule"):
        layer_name(net, nn.Conv2d(1, 1, 1))


def test_resolve_layers_dedups_and_keeps_order() -> None:
    net = Net()
    assert resolve_layers(net, None) is None
    assert resolve_layers(net, ["stage", net.stem, "stage"]) == ["stage", "stem"]
    with pytest.raises(ValueError, match="empty list"):
        resolve_layers(net, [])
    with pytest.raises(TypeError):
        resolve_layers(net, 3)  # type: ignore[arg-type]


def test_default_layer_skips_pooling_and_is_the_last_spatial_map() -> None:
    """The stage ends with a max pool: the container is chosen (not the pool, not the 1x1 avg
    pool after it)."""
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.rand(1, 3, 8, 8)
    assert family_default_layer(net) is None
    assert default_layer(net, x) == "stage"
    # A 2x2 input: the stage's pool shrinks it to 1x1, so the stage's ReLU (2x2, the last
    # spatial map before the pool) is the default.
    assert default_layer(net, torch.rand(1, 3, 2, 2)) == "stage.1"


def test_default_layer_refuses_a_model_without_maps() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(ValueError, match="spatial feature map"):
        default_layer(mlp, torch.rand(1, 3, 2, 2))
