"""Explanation-quality metrics, against hand-computed values."""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable

import pytest
import torch
from torch import nn

from lightning_cam.metrics import (
    average_drop,
    average_drop_increase,
    blur,
    boxes_to_masks,
    deletion_insertion_auc,
    energy_pointing_game,
    increase_in_confidence,
    pointing_game,
    saliency_ranks,
)


class MeanProbModel(nn.Module):
    """Two classes with ``p0 = 0.1 + 0.8 * scale * mean(x)``: logits ``(log p0, log(1 - p0))``.

    The softmax of these logits is exactly ``(p0, 1 - p0)``, so every probability in the tests
    is a hand-computable linear function of the mean pixel value. The dropout makes a forward in
    training mode visibly different (the metrics must run in eval mode).
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.inner = nn.Sequential(nn.Dropout(0.5), nn.Identity())
        self.calls: list[int] = []
        self.seen_training: list[bool] = []
        self.seen_grad: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        self.seen_training.append(self.inner[0].training)
        self.seen_grad.append(torch.is_grad_enabled())
        p = 0.1 + 0.8 * self.scale * self.inner(x).flatten(1).mean(dim=1)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def p0(mean: float) -> float:
    return 0.1 + 0.8 * mean


# --------------------------------------------------------------------------------------------
# boxes_to_masks
# --------------------------------------------------------------------------------------------


def test_boxes_to_masks_fractional_edges_pixel_centre_rule() -> None:
    # Column centres 0.5 1.5 2.5 3.5: 0.4 <= c < 2.6 -> cols 0, 1, 2.
    # Row centres: 1.5 <= c < 3.5 -> rows 1, 2 (3.5 itself is excluded: half-open box).
    masks = boxes_to_masks(torch.tensor([[0.4, 1.5, 2.6, 3.5]]), 4, 4)
    expected = torch.tensor(
        [[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool
    )
    assert masks.dtype == torch.bool
    assert torch.equal(masks[0], expected)


def test_boxes_to_masks_integer_and_degenerate_boxes() -> None:
    boxes = torch.tensor(
        [
            [1, 1, 3, 2],  # rows 1, cols 1..2
            [0, 0, 4, 3],  # whole image
            [2, 0, 2, 3],  # zero width: empty
            [0.5, 0.5, 1.5, 1.5],  # only pixel (0, 0): its centre is on the closed edge
            [-5, -5, 1, 10],  # clipped to column 0
        ]
    )
    masks = boxes_to_masks(boxes, 3, 4)
    assert masks.shape == (5, 3, 4)
    assert masks[0].nonzero().tolist() == [[1, 1], [1, 2]]
    assert masks[1].all()
    assert not masks[2].any()
    assert masks[3].nonzero().tolist() == [[0, 0]]
    assert masks[4].nonzero().tolist() == [[0, 0], [1, 0], [2, 0]]


def test_boxes_to_masks_rejects_bad_boxes() -> None:
    with pytest.raises(ValueError, match=r"\(B, 4\).*\(2, 3\)"):
        boxes_to_masks(torch.zeros(2, 3), 4, 4)
    with pytest.raises(ValueError, match=r"x1 <= x2.*box 0 is \[3.0, 0.0, 1.0, 2.0\]"):
        boxes_to_masks(torch.tensor([[3.0, 0.0, 1.0, 2.0]]), 4, 4)
    with pytest.raises(ValueError, match="finite"):
        boxes_to_masks(torch.tensor([[0.0, 0.0, math.nan, 2.0]]), 4, 4)
    with pytest.raises(ValueError, match="height must be a positive int, got 0"):
        boxes_to_masks(torch.zeros(1, 4), 0, 4)


# --------------------------------------------------------------------------------------------
# pointing game
# --------------------------------------------------------------------------------------------


def _map_with_peak(row: int, col: int, size: int = 4) -> torch.Tensor:
    maps = torch.full((1, size, size), 0.1)
    maps[0, row, col] = 0.9
    return maps


def test_pointing_game_hit_and_miss() -> None:
    maps = _map_with_peak(1, 2).repeat(2, 1, 1)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 0:2, 2:4] = True  # contains (1, 2)
    masks[1, 2:4, 0:2] = True  # does not
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0]
    # {0, 1} integer masks are accepted and mean the same.
    assert pointing_game(maps, masks.long()).tolist() == [1.0, 0.0]
    # Boxes: (x1, y1, x2, y2) = (2, 0, 4, 2) is masks[0]; (0, 2, 2, 4) is masks[1].
    boxes = torch.tensor([[2.0, 0.0, 4.0, 2.0], [0.0, 2.0, 2.0, 4.0]])
    assert pointing_game(maps, boxes=boxes).tolist() == [1.0, 0.0]


def test_pointing_game_tolerance_distance_one_and_diagonal() -> None:
    maps = _map_with_peak(0, 0).repeat(2, 1, 1)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 0, 1] = True  # distance 1 from the peak
    masks[1, 1, 1] = True  # distance sqrt(2)
    assert pointing_game(maps, masks).tolist() == [0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=1).tolist() == [1.0, 0.0]
    assert pointing_game(maps, masks, tolerance=1.5).tolist() == [1.0, 1.0]


def test_pointing_game_tolerance_15_at_224() -> None:
    maps = _map_with_peak(100, 100, size=224)
    near = torch.tensor([[115.0, 0.0, 224.0, 224.0]])  # first object column 115: distance 15
    far = torch.tensor([[116.0, 0.0, 224.0, 224.0]])  # distance 16
    assert pointing_game(maps, boxes=near, tolerance=15).item() == 1.0
    assert pointing_game(maps, boxes=far, tolerance=15).item() == 0.0


def test_pointing_game_ties_and_all_zero() -> None:
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0] = maps[0, 3, 3] = 1.0  # two maxima, one on the object
    maps[1, 0, 0] = maps[1, 0, 1] = 1.0  # two maxima, none on the object
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, 2:, 2:] = True
    masks[2] = True  # all-zero map with a full object: still a miss
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0, 0.0]
    # An empty object is a miss as well.
    assert pointing_game(maps[:1], torch.zeros(1, 4, 4, dtype=torch.bool)).tolist() == [0.0]


def test_pointing_game_validation() -> None:
    maps = torch.rand(2, 4, 4)
    masks = torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="exactly one of masks= or boxes=.*neither"):
        pointing_game(maps)
    with pytest.raises(ValueError, match="exactly one of masks= or boxes=.*both"):
        pointing_game(maps, masks, boxes=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"masks shape \(2, 4, 5\).*maps shape \(2, 4, 4\)"):
        pointing_game(maps, torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="0 and 1, found the value 2"):
        pointing_game(maps, masks.long() * 2)
    with pytest.raises(ValueError, match=r"boxes shape \(3, 4\).*maps shape \(2, 4, 4\)"):
        pointing_game(maps, boxes=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="tolerance.*-1"):
        pointing_game(maps, masks, tolerance=-1)
    with pytest.raises(ValueError, match="non-negative"):
        pointing_game(maps - 1, masks)
    with pytest.raises(ValueError, match=r"\(B, H, W\).*squeeze"):
        pointing_game(maps[:, None], masks)


# --------------------------------------------------------------------------------------------
# energy-based pointing game
# --------------------------------------------------------------------------------------------


def test_energy_pointing_game_exact_fraction() -> None:
    maps = (torch.arange(16.0) / 15).view(1, 4, 4)  # mass (0 + 1 + ... + 15) / 15 = 120 / 15
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # values (0 + 1 + 4 + 5) / 15
    assert energy_pointing_game(maps, masks).item() == pytest.approx(10 / 120, abs=1e-7)
    # The same region as a box (0, 0, 2, 2), and the complement.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert energy_pointing_game(maps, boxes=boxes).item() == pytest.approx(10 / 120, abs=1e-7)
    assert energy_pointing_game(maps, ~masks).item() == pytest.approx(110 / 120, abs=1e-7)


def test_energy_pointing_game_all_zero_and_full() -> None:
    maps = torch.zeros(2, 3, 3)
    maps[1] = 0.5
    masks = torch.ones(2, 3, 3)
    assert energy_pointing_game(maps, masks).tolist() == [0.0, 1.0]


# --------------------------------------------------------------------------------------------
# average drop / increase in confidence
# --------------------------------------------------------------------------------------------


def _drop_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float], list[bool]]:
    images = torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.8), torch.ones(1, 2, 2)])
    maps = torch.stack([torch.full((2, 2), 0.5), torch.full((2, 2), 0.25), torch.full((2, 2), 0.5)])
    class_ids = torch.tensor([0, 0, 1])
    # Y, O by hand: class 0 -> p0(mean), class 1 -> 1 - p0(mean).
    y = [p0(1.0), p0(0.8), 1 - p0(1.0)]  # 0.9, 0.74, 0.1
    o = [p0(0.5), p0(0.2), 1 - p0(0.5)]  # 0.5, 0.26, 0.5
    drops = [max(0.0, yi - oi) / yi * 100 for yi, oi in zip(y, o, strict=True)]  # 44.44, 64.86, 0
    increases = [oi > yi for yi, oi in zip(y, o, strict=True)]  # F, F, T
    return images, maps, class_ids, drops, increases


@pytest.mark.parametrize("batch_size", [None, 1, 4])
def test_average_drop_increase_hand_computed(batch_size: int | None) -> None:
    images, maps, class_ids, drops, increases = _drop_case()
    model = MeanProbModel()
    drop, increase = average_drop_increase(model, images, maps, class_ids, batch_size=batch_size)
    assert drop.shape == (3,) and increase.dtype == torch.bool
    assert drop.tolist() == pytest.approx(drops, abs=1e-4)
    assert increase.tolist() == increases
    expected_calls = [6] if batch_size is None else {1: [1] * 6, 4: [4, 2]}[batch_size]
    assert model.calls == expected_calls


def test_average_drop_and_increase_scalars() -> None:
    images, maps, class_ids, drops, _ = _drop_case()
    model = MeanProbModel()
    assert average_drop(model, images, maps, class_ids).item() == pytest.approx(
        sum(drops) / 3, abs=1e-4
    )
    assert increase_in_confidence(model, images, maps, class_ids).item() == pytest.approx(100 / 3)


def test_average_drop_predicted_class_and_logits_attribute() -> None:
    images, maps, _, drops, _ = _drop_case()
    Output = namedtuple("Output", ["logits", "aux"])

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = MeanProbModel()

        def forward(self, x: torch.Tensor) -> Output:
            return Output(self.net(x), None)

    # Predicted classes on the unmodified images: p0 = 0.9, 0.74, 0.9 -> class 0 everywhere.
    drop, _ = average_drop_increase(Wrapped(), images, maps, class_ids=None)
    y3, o3 = p0(1.0), p0(0.5)
    assert drop.tolist() == pytest.approx(drops[:2] + [(y3 - o3) / y3 * 100], abs=1e-4)


def test_average_drop_validation() -> None:
    model = MeanProbModel()
    images, maps = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match=r"maps shape \(2, 4, 4\).*images shape \(2, 1, 4, 5\)"):
        average_drop_increase(model, torch.rand(2, 1, 4, 5), maps, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\].*maximum of 2"):
        average_drop_increase(model, images, maps * 0 + 2, 0)
    with pytest.raises(ValueError, match=r"\[0, 2\).*got 5"):
        average_drop_increase(model, images, maps, 5)
    with pytest.raises(ValueError, match=r"shape \(2,\).*\(3,\)"):
        average_drop_increase(model, images, maps, [0, 1, 0])
    with pytest.raises(ValueError, match="batch_size must be a positive int or None, got 0"):
        average_drop_increase(model, images, maps, 0, batch_size=0)


# --------------------------------------------------------------------------------------------
# deletion / insertion
# --------------------------------------------------------------------------------------------

# One 2x2 image; the ranking by saliency is (0,0), (1,0), then the tie (0,1), (1,1) in raster order.
_IMAGE = torch.tensor([[[[0.8, 0.4], [0.0, 0.4]]]])
_MAP = torch.tensor([[[0.9, 0.1], [0.5, 0.1]]])


def test_saliency_ranks_descending_with_stable_ties() -> None:
    assert saliency_ranks(_MAP).tolist() == [[[0, 2], [1, 3]]]
    assert saliency_ranks(torch.zeros(1, 2, 3)).tolist() == [[[0, 1, 2], [3, 4, 5]]]


def test_deletion_insertion_auc_hand_computed() -> None:
    model = MeanProbModel()
    dele, ins = deletion_insertion_auc(model, _IMAGE, _MAP, class_ids=0, steps=4)
    # Deletion, kept sums 1.6, 0.8, 0.8, 0.4, 0 -> means .4 .2 .2 .1 0 -> p .42 .26 .26 .18 .10
    del_p = [0.42, 0.26, 0.26, 0.18, 0.10]
    # Insertion, inserted sums 0, 0.8, 0.8, 1.2, 1.6 -> p .10 .26 .26 .34 .42
    ins_p = [0.10, 0.26, 0.26, 0.34, 0.42]
    trap = lambda p: 0.25 * (p[0] / 2 + sum(p[1:-1]) + p[-1] / 2)  # noqa: E731
    assert trap(del_p) == pytest.approx(0.24) and trap(ins_p) == pytest.approx(0.28)
    assert dele.tolist() == pytest.approx([0.24], abs=1e-6)
    assert ins.tolist() == pytest.approx([0.28], abs=1e-6)
    assert model.calls == [10]  # (steps + 1) per curve, one forward


def test_deletion_auc_steps_not_dividing_pixels_uses_true_fractions() -> None:
    # steps=3 on 4 pixels: n_k = floor(4k/3) = 0, 1, 2, 4 -> fractions 0, .25, .5, 1.
    dele, _ = deletion_insertion_auc(MeanProbModel(), _IMAGE, _MAP, class_ids=0, steps=3)
    expected = 0.25 * (0.42 + 0.26) / 2 + 0.25 * (0.26 + 0.26) / 2 + 0.5 * (0.26 + 0.10) / 2
    assert dele.item() == pytest.approx(expected, abs=1e-6)


def test_deletion_auc_constant_map_uses_raster_order() -> None:
    # Order (0,0), (0,1), (1,0), (1,1): kept sums 1.6, .8, .4, .4, 0 -> p .42 .26 .18 .18 .10
    dele, _ = deletion_insertion_auc(MeanProbModel(), _IMAGE, torch.zeros(1, 2, 2), 0, steps=4)
    assert dele.item() == pytest.approx(0.25 * (0.21 + 0.26 + 0.18 + 0.18 + 0.05), abs=1e-6)


def test_deletion_insertion_blur_baseline_on_constant_image() -> None:
    images = torch.full((1, 2, 5, 5), 0.5)
    assert torch.allclose(blur(images), images)
    dele, ins = deletion_insertion_auc(
        MeanProbModel(), images, torch.rand(1, 5, 5), 0, steps=5, baseline="blur"
    )
    # Blurring a constant image changes nothing: p = p0(0.5) = 0.5 along both curves.
    assert dele.item() == pytest.approx(0.5, abs=1e-6)
    assert ins.item() == pytest.approx(0.5, abs=1e-6)


def test_deletion_insertion_batching_and_cost() -> None:
    images = torch.rand(3, 2, 4, 4)
    maps = torch.rand(3, 4, 4)
    full = MeanProbModel()
    chunked = MeanProbModel()
    ref = deletion_insertion_auc(full, images, maps, [0, 1, 0], steps=4)
    out = deletion_insertion_auc(chunked, images, maps, [0, 1, 0], steps=4, batch_size=7)
    assert full.calls == [30]  # 3 images x 2 curves x (4 + 1) steps
    assert chunked.calls == [7, 7, 7, 7, 2]
    for a, b in zip(ref, out, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # Class 1 has p = 1 - p0: both AUCs are 1 - those of class 0 (image 1 asked for class 1).
    ref0 = deletion_insertion_auc(full, images, maps, 0, steps=4)
    assert ref[0][1].item() == pytest.approx(1 - ref0[0][1].item(), abs=1e-6)
    assert ref[1][1].item() == pytest.approx(1 - ref0[1][1].item(), abs=1e-6)


def test_deletion_insertion_validation() -> None:
    model = MeanProbModel()
    images, maps = torch.rand(1, 1, 2, 2), torch.rand(1, 2, 2)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        deletion_insertion_auc(model, images, maps, 0, steps=0)
    with pytest.raises(ValueError, match="baseline must be 'zero' or 'blur', got 'mean'"):
        deletion_insertion_auc(model, images, maps, 0, baseline="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"maps shape \(1, 3, 2\).*images shape \(1, 1, 2, 2\)"):
        deletion_insertion_auc(model, images, torch.rand(1, 3, 2), 0)
    assert model.calls == []


# --------------------------------------------------------------------------------------------
# the model is borrowed
# --------------------------------------------------------------------------------------------

_CALLS: dict[str, Callable[[nn.Module], object]] = {
    "average_drop_increase": lambda m: average_drop_increase(
        m, torch.rand(2, 1, 3, 3), torch.rand(2, 3, 3), 0, batch_size=1
    ),
    "deletion_insertion_auc": lambda m: deletion_insertion_auc(
        m, torch.rand(2, 1, 3, 3), torch.rand(2, 3, 3), 0, steps=2, batch_size=2
    ),
}


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize("name", sorted(_CALLS))
@pytest.mark.parametrize("fail", [False, True])
def test_model_flags_and_grads_restored(name: str, fail: bool) -> None:
    model = MeanProbModel()
    model.train()
    model.inner[1].eval()  # mixed flags must come back per submodule
    flags = [m.training for m in model.modules()]
    sentinel = torch.full((), 3.0)
    model.scale.grad = sentinel

    if fail:
        original = model.forward

        def failing(x: torch.Tensor) -> torch.Tensor:
            if len(model.calls) >= 1:
                raise _Boom("injected")
            return original(x)

        model.forward = failing  # type: ignore[method-assign]
        with pytest.raises(_Boom):
            _CALLS[name](model)
    else:
        _CALLS[name](model)

    assert model.calls, "the model was never called"
    assert not any(model.seen_training), "the model ran in training mode"
    assert not any(model.seen_grad), "the model ran with grad enabled"
    assert [m.training for m in model.modules()] == flags
    assert model.scale.grad is sentinel and sentinel.item() == 3.0
    assert model.scale.requires_grad
    assert torch.is_grad_enabled()
