"""ROAD (noisy linear imputation, MoRF / LeRF), average gain and raw scores: numbers by hand,
on a model whose answer is known, and equal to pytorch-grad-cam's and Quantus's on the same maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightning_cam import metrics as M
from lightning_cam.metrics.imputation import noisy_linear_imputation
from tests.optional import require


def _impute(image: torch.Tensor, removed: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
    return noisy_linear_imputation(image[None], removed[None], noise=noise)[0]


def test_imputation_by_hand() -> None:
    img = torch.arange(9.0).view(1, 3, 3)
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True
    out = _impute(img, torch.cat([centre, corner]))
    edges, diagonals = 1 + 3 + 5 + 7, 0 + 2 + 6 + 8
    assert out[0, 0, 1, 1].item() == pytest.approx(edges / 6 + diagonals / 12)
    # a corner has 3 neighbours: weights 1/6, 1/6 (edges) and 1/12 (diagonal), sum 5/12
    assert out[1, 0, 0, 0].item() == pytest.approx((1 / 6 + 3 / 6 + 4 / 12) / (5 / 12))
    # everything else untouched, mask by mask
    keep = ~torch.cat([centre, corner])[:, None]
    assert torch.equal(out[keep.expand_as(out)], img.expand(2, 1, 3, 3)[keep.expand_as(out)])


def test_imputation_solves_the_coupled_system() -> None:
    """Two neighbouring removed pixels of a row [a, x, y, b]: x = (a + y) / 2, y = (x + b) / 2,
    so x = (2a + b) / 3 and y = (a + 2b) / 3, per channel."""
    img = torch.tensor([[[3.0, 0.0, 0.0, 9.0]], [[-1.0, 5.0, 5.0, 2.0]]])  # (C=2, 1, 4)
    removed = torch.tensor([[[False, True, True, False]]])
    out = _impute(img, removed)[0]
    for c in range(2):
        a, b = img[c, 0, 0].item(), img[c, 0, 3].item()
        assert out[c, 0, 1].item() == pytest.approx((2 * a + b) / 3)
        assert out[c, 0, 2].item() == pytest.approx((a + 2 * b) / 3)


def test_imputation_batched_equals_one_by_one_and_noise_is_seeded() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 7, 9, generator=g)
    removed = torch.rand(2, 3, 7, 9, generator=g) > 0.4
    both = noisy_linear_imputation(images, removed, noise=0.0)
    for b in range(2):
        for s in range(3):
            one = noisy_linear_imputation(images[b : b + 1], removed[b : b + 1, s : s + 1], 0.0)
            torch.testing.assert_close(both[b, s], one[0, 0], atol=1e-6, rtol=0)
    noisy = noisy_linear_imputation(images, removed, 0.5, torch.Generator().manual_seed(3))
    again = noisy_linear_imputation(images, removed, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(noisy, again)
    delta = (noisy - both)[removed[:, :, None].expand_as(both)]
    assert delta.std().item() == pytest.approx(0.5, rel=0.15)
    assert torch.equal(noisy[~removed[:, :, None].expand_as(both)],
                       both[~removed[:, :, None].expand_as(both)])
    with pytest.raises(ValueError, match="every pixel"):
        noisy_linear_imputation(images, torch.ones(2, 1, 7, 9, dtype=torch.bool))


def test_imputation_equals_pytorch_grad_cam_and_quantus() -> None:
    require("pytorch_grad_cam", "pip install grad-cam")
    quantus = require("quantus", "pip install quantus")
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 11, 13, generator=g)
    removed = torch.rand(11, 13, generator=g) > 0.5
    ours = _impute(img, removed[None])[0]
    pgc = NoisyLinearImputer(noise=0.0)(img, (~removed).float())
    torch.testing.assert_close(ours, pgc, atol=1e-5, rtol=0)
    idx = np.flatnonzero(removed.numpy().ravel())
    qu = quantus.functions.perturb_func.noisy_linear_imputation(img.numpy(), idx, noise=0.0)
    np.testing.assert_allclose(ours.numpy(), qu, atol=1e-5)


def test_road_masks_counts_order_and_ties() -> None:
    maps = torch.tensor([[[0.5, 0.5, 0.1, 0.9, 0.0]]])  # N = 5, ties at 0.5 in raster order
    masks = M.road_masks(maps, [40, 60])
    morf, lerf = masks[0, :2, 0].int().tolist(), masks[0, 2:, 0].int().tolist()
    assert morf == [[1, 0, 0, 1, 0], [1, 1, 0, 1, 0]]  # floor(2), floor(3) most salient
    assert lerf == [[0, 0, 1, 0, 1], [0, 1, 1, 0, 1]]  # the tie's later pixel ranks lower
    with pytest.raises(ValueError, match=r"\(0, 100\)"):
        M.road_masks(maps, [100])
    with pytest.raises(ValueError, match="empty"):
        M.road_masks(maps, [])


class _LeftHalf(nn.Module):
    """Logits ``[1, 10 * mean of the left half]``: only the left half matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = x[:, :, :, : x.shape[3] // 2].mean(dim=(1, 2, 3))
        return torch.stack([torch.ones_like(left), 10 * left], dim=1)


def _known_case() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.zeros(1, 1, 10, 10)
    images[..., :5] = 1.0  # the evidence: a bright left half on a dark background
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(100, generator=g).float().view(1, 10, 10) / 100
    maps = torch.where(torch.arange(10) < 5, 0.5 + order / 2, order / 2)  # left half on top
    return images, maps


def test_road_where_the_answer_is_known() -> None:
    """Removing the left half (MoRF 50 %) imputes it from the dark pixels around it: exactly 0
    (a harmonic function with a zero boundary), logits [1, 0]; removing the right half (LeRF
    50 %) leaves the logits as they were. The reversed map swaps the two."""
    images, maps = _known_case()
    model = _LeftHalf()
    curves = M.road(model, images, maps, class_ids=1, percentages=[50], noise=0.0)
    p_full, p_gone = torch.sigmoid(torch.tensor(9.0)), torch.sigmoid(torch.tensor(-1.0))
    assert curves.score == "probability" and curves.percentages == (50.0,)
    torch.testing.assert_close(curves.original, p_full[None])
    torch.testing.assert_close(curves.morf, p_gone.view(1, 1))
    torch.testing.assert_close(curves.lerf, p_full.view(1, 1))
    assert curves.morf_kept.tolist() == [[False]] and curves.lerf_kept.tolist() == [[True]]
    raw = M.road(model, images, maps, class_ids=1, percentages=[50], noise=0.0, raw_scores=True)
    assert raw.score == "logit"
    torch.testing.assert_close(raw.morf, torch.zeros(1, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(raw.lerf, torch.full((1, 1), 10.0))
    torch.testing.assert_close(raw.combined(), torch.tensor([5.0]), atol=1e-5, rtol=0)
    rev = M.road(model, images, 1 - maps, class_ids=1, percentages=[50], noise=0.0)
    torch.testing.assert_close(rev.morf, curves.lerf)
    torch.testing.assert_close(rev.lerf, curves.morf)


def test_road_scores_are_the_model_on_the_imputed_images() -> None:
    """An independent composition: road_masks -> imputation -> the model's softmax."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 6, 3))
    images, maps = torch.rand(3, 3, 10, 8), torch.rand(3, 10, 8)
    curves = M.road(model, images, maps, None, [20, 70], noise=0.05, seed=4, batch_size=4)
    masks = M.road_masks(maps, [20, 70])
    imputed = noisy_linear_imputation(images, masks, 0.05, torch.Generator().manual_seed(4))
    with torch.no_grad():
        ids = model(images).argmax(1)
        probs = model(imputed.flatten(0, 1)).softmax(1).view(3, 4, 3)
    want = probs.gather(2, ids.view(3, 1, 1).expand(3, 4, 1))[..., 0]
    torch.testing.assert_close(curves.morf, want[:, :2])
    torch.testing.assert_close(curves.lerf, want[:, 2:])
    assert torch.equal(curves.lerf_kept, probs.argmax(2)[:, 2:] == ids[:, None])
    assert model.training  # the model was borrowed and given back as it was


def _cnn(channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


def test_road_equals_pytorch_grad_cam() -> None:
    """Same maps (no ties), 10 x 10 images (N a multiple of 100: the same pixels removed), noise
    0: pytorch-grad-cam's differences to the original score are ours, for softmax and raw
    targets, MoRF, LeRF and ROADCombined."""
    require("pytorch_grad_cam", "pip install grad-cam")
    from pytorch_grad_cam.metrics.road import (
        ROADCombined,
        ROADLeastRelevantFirst,
        ROADMostRelevantFirst,
    )
    from pytorch_grad_cam.utils.model_targets import (
        ClassifierOutputSoftmaxTarget,
        ClassifierOutputTarget,
    )

    model = _cnn()
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 10, 10, generator=g)
    maps = torch.rand(2, 10, 10, generator=g)
    ids = [2, 0]
    cams = maps.numpy()
    for raw, target in ((False, ClassifierOutputSoftmaxTarget), (True, ClassifierOutputTarget)):
        targets = [target(c) for c in ids]
        ours = M.road(model, images, maps, ids, [30, 80], noise=0.0, raw_scores=raw)
        for k, p in enumerate((30, 80)):
            morf = ROADMostRelevantFirst(percentile=100 - p)
            lerf = ROADLeastRelevantFirst(percentile=100 - p)
            for metric in (morf, lerf):
                metric.perturbation.imputer.noise = 0.0
            got_m = morf(images, cams, targets, model)
            got_l = lerf(images, cams, targets, model)
            np.testing.assert_allclose(got_m, (ours.morf[:, k] - ours.original).numpy(),
                                       atol=1e-5)
            np.testing.assert_allclose(got_l, (ours.lerf[:, k] - ours.original).numpy(),
                                       atol=1e-5)
    combined = ROADCombined(percentiles=[20, 50, 80])
    for averager in (combined.morf_averager, combined.lerf_averager):
        make = averager.imputer

        def quiet(percentile: int, make=make):  # type: ignore[no-untyped-def]
            metric = make(percentile)
            metric.perturbation.imputer.noise = 0.0
            return metric

        averager.imputer = quiet
    got = combined(images, cams, [ClassifierOutputSoftmaxTarget(c) for c in ids], model)
    ours = M.road(model, images, maps, ids, [20, 50, 80], noise=0.0)
    np.testing.assert_allclose(got, ours.combined().numpy(), atol=1e-5)


def test_road_equals_quantus() -> None:
    """Quantus's ROAD (MoRF only) returns, per percentage, the share of images whose predicted
    class is still the label: our morf_kept's mean, on the same maps (no ties). One channel:
    Quantus 0.6 ranks the channel-broadcast map (C H W entries) and then indexes the H W pixels
    with those ranks, an IndexError on colour images."""
    quantus = require("quantus", "pip install quantus")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 3)).eval()
    model[1].weight.data *= 30  # every pixel moves the prediction
    g = torch.Generator().manual_seed(5)
    images = torch.rand(6, 1, 10, 10, generator=g)
    maps = torch.rand(6, 10, 10, generator=g)
    with torch.no_grad():
        labels = model(images).argmax(1)
    percentages = [10, 40, 70, 90]
    metric = quantus.ROAD(percentages=percentages, noise=0.0, disable_warnings=True,
                          display_progressbar=False)
    got = metric(model=model, x_batch=images.numpy(), y_batch=labels.numpy(),
                 a_batch=maps[:, None].numpy(), device="cpu")
    ours = M.road(model, images, maps, labels, percentages, noise=0.0)
    assert list(got) == percentages
    np.testing.assert_allclose([got[p] for p in percentages],
                               ours.morf_kept.float().mean(0).numpy())
    assert 0 < ours.morf_kept.float().mean() < 1  # the comparison is not all-or-nothing


def test_average_gain_by_hand() -> None:
    """Logits [0, -2 m] (m the image mean): halving the image raises p1 from sigmoid(-2m) to
    sigmoid(-m): gain = (O - Y) / (1 - Y); class 0 loses instead: its drop, no gain."""

    class Model(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([torch.zeros_like(m), -2 * m], dim=1)

    images = torch.full((1, 1, 4, 4), 1.5)
    maps = torch.full((1, 4, 4), 0.5)
    y, o = float(torch.sigmoid(torch.tensor(-3.0))), float(torch.sigmoid(torch.tensor(-1.5)))
    want = 100 * (o - y) / (1 - y)
    drop, inc, gain = M.average_drop_increase_gain(Model(), images, maps, 1)
    assert drop.item() == 0.0 and inc.tolist() == [True]
    assert gain.item() == pytest.approx(want, rel=1e-5) and want > 10
    assert M.average_gain(Model(), images, maps, 1).item() == pytest.approx(want, rel=1e-5)
    drop, inc, gain = M.average_drop_increase_gain(Model(), images, maps, 0)
    assert gain.item() == 0.0 and inc.tolist() == [False]
    # (Y0 - O0) / Y0 with Y0 = 1 - y, O0 = 1 - o: two classes, class 0's drop is class 1's gain
    assert drop.item() == pytest.approx(want, rel=1e-4)


def test_deletion_raw_scores_by_hand() -> None:
    """One step: AUC = (s(image) + s(zeros)) / 2, with s the class's logit."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 2))
    images, maps = torch.rand(2, 2, 3, 3), torch.rand(2, 3, 3)
    dele, ins = M.deletion_insertion_auc(model, images, maps, 1, steps=1, raw_scores=True)
    with torch.no_grad():
        full, zero = model(images)[:, 1], model(torch.zeros_like(images))[:, 1]
    torch.testing.assert_close(dele, (full + zero) / 2)
    torch.testing.assert_close(ins, (zero + full) / 2)


def test_every_metric_says_its_score() -> None:
    for name, spec in M.METRICS.items():
        if spec.needs == "ground_truth":
            assert spec.score == "none"
        else:
            assert spec.score == ("logit" if name.endswith("_logit") else "probability")
    assert M.SCORES["road_lerf_logit"] == "logit" and M.SCORES["road_morf"] == "probability"
    assert "softmax" in M.score_note(["road_morf"]) and M.score_note(["pointing_game"]) == ""


def test_image_metrics_dispatch_the_new_names() -> None:
    model = _cnn()
    g = torch.Generator().manual_seed(7)
    images, maps = torch.rand(2, 3, 10, 10, generator=g), torch.rand(2, 10, 10, generator=g)
    ids = torch.tensor([1, 2])
    names = ["road_morf", "road_lerf", "road_combined", "road_morf_logit", "road_lerf_logit",
             "road_combined_logit", "average_gain", "deletion_auc_logit", "insertion_auc_logit"]
    got = M.image_metrics(names, model, images, maps, ids, None, None, tolerance=0.0,
                          deletion_steps=3, road_percentages=[25, 75])
    assert list(got) == names
    for raw, suffix in ((False, ""), (True, "_logit")):
        c = M.road(model, images, maps, ids, [25, 75], raw_scores=raw)
        torch.testing.assert_close(got[f"road_morf{suffix}"], c.morf.mean(1))
        torch.testing.assert_close(got[f"road_lerf{suffix}"], c.lerf.mean(1))
        torch.testing.assert_close(got[f"road_combined{suffix}"], c.combined())
    torch.testing.assert_close(got["average_gain"],
                               M.average_drop_increase_gain(model, images, maps, ids)[2])
    dele, ins = M.deletion_insertion_auc(model, images, maps, ids, steps=3, raw_scores=True)
    torch.testing.assert_close(got["deletion_auc_logit"], dele)
    torch.testing.assert_close(got["insertion_auc_logit"], ins)


def test_road_refuses_bad_arguments() -> None:
    model = _cnn()
    images, maps = torch.rand(1, 3, 10, 10), torch.rand(1, 10, 10)
    with pytest.raises(ValueError, match="noise"):
        M.road(model, images, maps, 0, noise=-1.0)
    with pytest.raises(ValueError, match=r"\(0, 100\)"):
        M.road(model, images, maps, 0, percentages=[0])
    with pytest.raises(ValueError, match="upsample"):
        M.road(model, images, maps[:, :5], 0)
