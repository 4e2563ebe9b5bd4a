from __future__ import annotations

import math

import pytest
import torch

from lightning_cam import metrics as M
from lightning_cam.predict.evaluation import (
    DatasetMeans,
    box_iou,
    image_metrics,
    localisation_boxes,
    localisation_error,
    masks_to_boxes,
)


def test_box_iou_by_hand() -> None:
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_localisation_box_is_the_largest_region_above_15_percent() -> None:
    m = torch.zeros(1, 10, 10)
    m[0, 1:3, 1:3] = 1.0  # 4 px, the peak
    m[0, 5:9, 4:9] = 0.2  # 20 px above 15 % of the peak: the largest region
    m[0, 0, 9] = 0.1  # below the threshold
    assert localisation_boxes(m) == [(4.0, 5.0, 9.0, 9.0)]
    # IoU with the true box: 20 / 20 -> no error; with the small blob's box -> error
    assert localisation_error(m, torch.tensor([[4.0, 5.0, 9.0, 9.0]])).tolist() == [0.0]
    assert localisation_error(m, torch.tensor([[1.0, 1.0, 3.0, 3.0]])).tolist() == [1.0]
    # an all-zero map localises nothing: an error
    zero = localisation_error(torch.zeros(1, 4, 4), torch.tensor([[0.0, 0, 4, 4]]))
    assert zero.tolist() == [1.0]


def test_iou_threshold_is_one_half() -> None:
    m = torch.zeros(1, 8, 8)
    m[0, 0:4, 0:4] = 1.0  # box (0, 0, 4, 4), area 16
    # true box (0, 0, 4, 8): IoU 16 / 32 = 0.5 -> not an error; (0, 0, 5, 8): 16 / 40 -> error
    assert localisation_error(m, torch.tensor([[0.0, 0, 4, 8]])).tolist() == [0.0]
    assert localisation_error(m, torch.tensor([[0.0, 0, 5, 8]])).tolist() == [1.0]


def test_masks_to_boxes() -> None:
    masks = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert masks_to_boxes(masks).tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]


def test_image_metrics_match_the_metric_functions() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    images = torch.rand(3, 3, 8, 8)
    maps = torch.rand(3, 8, 8)
    ids = torch.tensor([0, 2, 1])
    boxes = torch.tensor([[0.0, 0, 4, 4], [2.0, 2, 8, 8], [1.0, 0, 3, 8]])
    names = ["pointing_game", "energy_pointing_game", "localisation_error", "average_drop",
             "increase_in_confidence", "deletion_auc", "insertion_auc"]
    got = image_metrics(names, model, images, maps, ids, None, boxes, tolerance=1.0,
                        deletion_steps=4)
    assert list(got) == names
    torch.testing.assert_close(got["pointing_game"], M.pointing_game(maps, boxes=boxes,
                                                                      tolerance=1.0))
    torch.testing.assert_close(got["energy_pointing_game"],
                               M.energy_pointing_game(maps, boxes=boxes))
    drop, inc = M.average_drop_increase(model, images, maps, ids)
    torch.testing.assert_close(got["average_drop"], drop)
    torch.testing.assert_close(got["increase_in_confidence"], 100 * inc.float())
    dele, ins = M.deletion_insertion_auc(model, images, maps, ids, steps=4)
    torch.testing.assert_close(got["deletion_auc"], dele)
    torch.testing.assert_close(got["insertion_auc"], ins)


def test_localisation_metrics_without_ground_truth_are_nan() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    got = image_metrics(["pointing_game", "localisation_error"], model, torch.rand(2, 3, 4, 4),
                        torch.rand(2, 4, 4), torch.tensor([0, 1]), None, None, tolerance=0)
    assert all(math.isnan(v) for t in got.values() for v in t.tolist())


def test_dataset_means_skip_nan_and_add_prior_sums() -> None:
    m = DatasetMeans(["a", "b"])
    m.update({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([math.nan, 4.0])})
    m.add_sums({"a": 6.0}, {"a": 1.0})
    assert m.compute() == {"a": (3.0, 3), "b": (4.0, 1)}
    assert math.isnan(DatasetMeans(["c"]).compute()["c"][0])
