"""The metrics on signal maps (B, L) and volume / video maps (B, D, H, W).

Brute force where the definition is simple (the pointing game's distance rule, the energy
share, a deletion curve rebuilt voxel by voxel), and the 2-D embedding elsewhere: a 3-D model
whose kernels have depth 1 on depth-1 volumes, or a 1-D model on signals, is the 2-D model on
images, so each metric must give the 2-D numbers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from lightning_cam import metrics as M


def _brute_pointing(maps: torch.Tensor, masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """hit = some argmax position within ``tolerance`` (Euclidean, in samples / voxels) of an
    object position; an all-zero map misses."""
    hits = []
    for m, k in zip(maps, masks, strict=True):
        peaks = np.argwhere(m.numpy() == m.max().item())
        objs = np.argwhere(k.numpy())
        near = any(np.linalg.norm(p - q) <= tolerance for p in peaks for q in objs)
        hits.append(float(near and m.max() > 0))
    return torch.tensor(hits)


@pytest.mark.parametrize("shape", [(3, 17), (3, 5, 6, 7)])
def test_pointing_and_energy_games_by_brute_force(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(shape, generator=gen)
    masks = torch.rand(shape, generator=gen) > 0.85
    maps[2] = 0  # an all-zero map misses
    for tolerance in (0, 1, 1.5, 2.5):
        got = M.pointing_game(maps, masks, tolerance=tolerance)
        torch.testing.assert_close(got, _brute_pointing(maps, masks, tolerance))
    want = (maps * masks).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp(min=1e-30)
    want[2] = 0
    torch.testing.assert_close(M.energy_pointing_game(maps, masks), want)


def test_a_ball_not_a_disk_in_volumes() -> None:
    maps = torch.zeros(1, 5, 5, 5)
    maps[0, 2, 2, 2] = 1.0
    masks = torch.zeros(1, 5, 5, 5, dtype=torch.bool)
    masks[0, 3, 3, 3] = True  # sqrt(3) ~ 1.73 voxels from the peak
    assert M.pointing_game(maps, masks, tolerance=1.7).item() == 0.0
    assert M.pointing_game(maps, masks, tolerance=1.75).item() == 1.0


def test_boxes_and_the_localisation_error_are_2d_only() -> None:
    maps = torch.rand(2, 4, 6, 6)
    with pytest.raises(ValueError, match="masks of the maps' shape"):
        M.pointing_game(maps, boxes=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D boxes"):
        M.localisation_error(maps, torch.zeros(2, 4))
    out = M.image_metrics(["localisation_error", "pointing_game"], None, None, maps, None,
                          masks=maps > 0.5, boxes=None, tolerance=0)
    assert torch.isnan(out["localisation_error"]).all()
    assert out["pointing_game"].tolist() == [1.0, 1.0]


def test_pointing_tolerance_of_signals_and_volumes() -> None:
    assert M.pointing_tolerance(None, (2, 1, 448), rank=1) == 30.0
    assert M.pointing_tolerance(None, (2, 1, 16, 112, 224), rank=3) == 7.5
    assert M.pointing_tolerance(None, (2, 3, 112, 224)) == 7.5


# ----------------------------------------------------------------------------- model metrics


class Net2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, (3, 3), padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x))
        return self.fc(a.flatten(2).amax(2))


class NetNd(nn.Module):
    """Net2d on depth-1 volumes (kernel (1, 3, 3)) or on 1 x L images as signals (kernel 3)."""

    def __init__(self, net2d: Net2d, rank: int) -> None:
        super().__init__()
        conv = nn.Conv1d(2, 4, 3, padding=1) if rank == 1 else nn.Conv3d(
            2, 4, (1, 3, 3), padding=(0, 1, 1))
        with torch.no_grad():
            w = net2d.conv.weight
            conv.weight.copy_(w[:, :, 1] if rank == 1 else w[:, :, None])
            conv.bias.copy_(net2d.conv.bias)
        self.conv, self.fc = conv, net2d.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(2).amax(2))


@pytest.mark.parametrize("rank", [1, 3])
def test_faithfulness_metrics_equal_the_embedded_2d_model(rank: int) -> None:
    torch.manual_seed(0)
    net2d = Net2d().eval()
    if rank == 1:  # a 1 x L image: only the middle row of the 3 x 3 kernel sees it
        with torch.no_grad():
            net2d.conv.weight[:, :, 0] = 0
            net2d.conv.weight[:, :, 2] = 0
    model = NetNd(net2d, rank).eval()
    x2 = torch.rand(2, 2, 1, 24) if rank == 1 else torch.rand(2, 2, 6, 7)
    maps2 = torch.rand(2, *x2.shape[2:])
    nd = (lambda t, ax: t.squeeze(ax)) if rank == 1 else (lambda t, ax: t.unsqueeze(ax))
    x, maps = nd(x2, 2), nd(maps2, 1)
    torch.testing.assert_close(model(x), net2d(x2))
    for a, b in zip(M.average_drop_increase(model, x, maps, None),
                    M.average_drop_increase(net2d, x2, maps2, None), strict=True):
        torch.testing.assert_close(a, b)
    for baseline in ("zero", "blur"):
        got = M.deletion_insertion_auc(model, x, maps, [0, 2], steps=5, baseline=baseline)
        want = M.deletion_insertion_auc(net2d, x2, maps2, [0, 2], steps=5, baseline=baseline)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(M.blur(x), nd(M.blur(x2), 2))


def test_deletion_curve_of_a_volume_by_brute_force() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                          nn.Flatten(), nn.Linear(3, 2)).eval()
    x = torch.rand(1, 1, 2, 3, 4)
    maps = torch.rand(1, 2, 3, 4)
    steps, n = 4, 24
    order = sorted(itertools.product(range(2), range(3), range(4)),
                   key=lambda p: -float(maps[0][p]))  # distinct values: no ties
    probs_del, probs_ins = [], []
    for k in range(steps + 1):
        top = order[: k * n // steps]
        deleted, inserted = x.clone(), torch.zeros_like(x)
        for p in top:
            deleted[(0, 0, *p)] = 0
            inserted[(0, 0, *p)] = x[(0, 0, *p)]
        with torch.no_grad():
            probs_del.append(model(deleted).softmax(1)[0, 1].item())
            probs_ins.append(model(inserted).softmax(1)[0, 1].item())
    fractions = [k * n // steps / n for k in range(steps + 1)]
    dele, ins = M.deletion_insertion_auc(model, x, maps, 1, steps=steps)
    assert dele.item() == pytest.approx(np.trapezoid(probs_del, fractions), rel=1e-5)
    assert ins.item() == pytest.approx(np.trapezoid(probs_ins, fractions), rel=1e-5)
    # Average drop: the map-masked volume, by hand.
    with torch.no_grad():
        y = model(x).softmax(1)[0, 1].item()
        o = model(x * maps[:, None]).softmax(1)[0, 1].item()
    drop, inc = M.average_drop_increase(model, x, maps, 1)
    assert drop.item() == pytest.approx(max(0.0, y - o) / y * 100, rel=1e-4)
    assert bool(inc.item()) == (o > y)
