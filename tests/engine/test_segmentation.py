"""Segmentation: the region target, maps per class, torchvision FCN / DeepLabV3 / LRASPP."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.cam import explain_segmentation
from lightning_cam.engine.layers import default_layer
from lightning_cam.engine.targets import SegmentationTarget, extract_segmentation_logits


def _reference(
    model: nn.Module, x: torch.Tensor, layer: str, c: int, region: torch.Tensor | None
) -> torch.Tensor:
    """Grad-CAM at ``layer`` of ``sum(logits[:, c] * region)`` (region: predicted mask)."""
    module = dict(model.named_modules())[layer]
    store: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: store.append(o))
    try:
        logits = model(x)["out"]
    finally:
        handle.remove()
    if region is None:
        region = (logits.argmax(1) == c).float()
    score = (logits[:, c] * region).sum()
    (g,) = torch.autograd.grad(score, store[0])
    cam = torch.relu((g.mean((2, 3), keepdim=True) * store[0].detach()).sum(1))
    flat = cam.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    rng = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return torch.where(hi > lo, (flat - lo) / rng, torch.zeros_like(flat)).view_as(cam)


def _segmenter(name: str) -> nn.Module:
    model = torchvision.models.get_model(
        name, weights=None, weights_backbone=None, num_classes=4
    ).eval()
    # Random heads predict one class everywhere: spread the classes over the image.
    with torch.no_grad():
        last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
        nn.init.normal_(last.weight, std=1.0)
    return model


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("fcn_resnet50", "backbone.layer4"),
        ("deeplabv3_mobilenet_v3_large", "backbone.16"),
        ("lraspp_mobilenet_v3_large", "backbone.16"),
    ],
)
def test_maps_per_class_match_reference(name: str, layer: str) -> None:
    model = _segmenter(name)
    x = torch.rand(2, 3, 64, 64)
    assert default_layer(model, x) == layer
    with torch.no_grad():
        predicted = model(x)["out"].argmax(1)
    present = sorted({int(c) for c in predicted.unique()})
    assert present, "no class predicted"
    classes = present[:2]
    maps = explain_segmentation(model, x, classes, upsample=False)
    assert sorted(maps) == classes
    for c in classes:
        got = maps[c].cams["gradcam"][layer]
        ref = _reference(model, x, layer, c, None)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
        region = (predicted == c).float()
        logits = model(x)["out"].detach()
        torch.testing.assert_close(
            maps[c].scores, (logits[:, c] * region).flatten(1).sum(1), atol=1e-3, rtol=1e-4
        )


def test_given_mask_and_absent_class() -> None:
    model = _segmenter("fcn_resnet50")
    x = torch.rand(1, 3, 64, 64)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[8:30, 20:50] = True
    maps = explain_segmentation(model, x, [1], mask=mask, upsample=False)
    ref = _reference(model, x, "backbone.layer4", 1, mask.float()[None])
    torch.testing.assert_close(maps[1].cams["gradcam"]["backbone.layer4"], ref, atol=1e-5,
                               rtol=1e-4)
    # The same through the plain target: explain(target=SegmentationTarget(...)).
    out = lc.explain(model, x, methods=("gradcam",), target=SegmentationTarget(1, mask),
                     upsample=False)
    torch.testing.assert_close(out.cams["gradcam"]["backbone.layer4"], ref, atol=1e-5, rtol=1e-4)
    # A class predicted nowhere: an empty region, an all-zero map (not an error).
    with torch.no_grad():
        [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1].bias[3] = -1e4
        assert 3 not in set(model(x)["out"].argmax(1).unique().tolist())
    absent = 3
    zero = explain_segmentation(model, x, [absent])[absent]
    assert float(zero.cam().abs().max()) == 0.0 and float(zero.scores.abs().max()) == 0.0


def test_segmentation_target_checks_and_outputs() -> None:
    logits = torch.randn(2, 3, 4, 4)
    region = logits.argmax(1) == 2
    expected = (logits[:, 2] * region).flatten(1).sum(1)
    for output in (logits, {"out": logits}, SimpleNamespace(logits=logits)):
        torch.testing.assert_close(SegmentationTarget(2)(output), expected)
    # An image-size mask for logits at a lower resolution is resized (nearest).
    big = torch.ones(2, 8, 8)
    torch.testing.assert_close(SegmentationTarget([0, 1], big)(logits),
                               torch.stack([logits[0, 0].sum(), logits[1, 1].sum()]))
    with pytest.raises(ValueError, match=r"mask must be \(H, W\) or \(B, H, W\) with B = 2"):
        SegmentationTarget(0, torch.ones(3, 4, 4))(logits)
    with pytest.raises(ValueError, match="class id 5 is out of range"):
        SegmentationTarget(5)(logits)
    with pytest.raises(TypeError, match="needs class_ids"):
        SegmentationTarget(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"segmentation logits \(B, K, L\), \(B, K, H, W\)"):
        extract_segmentation_logits(torch.randn(2, 3))
    with pytest.raises(ValueError, match="classes is empty"):
        explain_segmentation(nn.Conv2d(3, 2, 1), torch.rand(1, 3, 4, 4), [])


def test_segmentation_target_with_per_image_parts_is_split_by_max_batch() -> None:
    """Per-image ids and (B, H, W) masks are sliced with the batch: split by max_batch, the maps
    equal the whole batch's and the hand-computed ones. One 1x1 conv head on a feature conv:
    d score / d A_k,ij = W_ck M_ij, so Grad-CAM = relu(mean(M) * sum_k W_ck A_k), min-max
    normalised per image."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 1)).eval()
    x = torch.rand(3, 3, 6, 6)
    ids = [0, 2, 1]
    masks = torch.zeros(3, 6, 6)
    masks[0, :3] = 1.0
    masks[1, :, 2:] = 1.0
    masks[2, 1:5, 1:5] = 1.0
    with torch.no_grad():
        a = model[0](x)
        w = model[1].weight[:, :, 0, 0]  # (K, C)
        raw = torch.relu(
            torch.stack([masks[b].mean() * torch.einsum("k,khw->hw", w[c], a[b])
                         for b, c in enumerate(ids)])
        )
        flat = raw.flatten(1)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        expected = ((flat - lo) / (hi - lo)).view_as(raw)
    maps = []
    for max_batch in (None, 1, 2):
        explainer = lc.Explainer(model, "0", methods=["gradcam"], max_batch=max_batch)
        out = explainer(x, target=SegmentationTarget(ids, masks), upsample=False)
        maps.append(out.cams["gradcam"]["0"])
        torch.testing.assert_close(
            out.scores, torch.stack([(model(x)[b, c] * masks[b]).sum() for b, c in
                                     enumerate(ids)]).detach(), rtol=1e-5, atol=1e-5)
    for got in maps:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # an int id and an (H, W) mask apply to every chunk as they are
    whole = SegmentationTarget(1, masks[2])
    part = whole.batch_slice(1, 3)
    assert part.class_ids == 1 and part.mask is whole.mask
    assert SegmentationTarget(torch.tensor(ids), masks).batch_slice(1, 3).class_ids.tolist() == [
        2, 1
    ]


def test_one_channel_binary_logits_have_a_positive_and_a_negative_class() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])  # (1, 1, 2, 2)
    # class 1: the positive logit over the pixels predicted positive (> 0): 2 + 0.5
    torch.testing.assert_close(SegmentationTarget(1)(logits), torch.tensor([2.5]))
    # class 0, the negative decision: -logit over the pixels predicted negative: 1 + 3
    torch.testing.assert_close(SegmentationTarget(0)(logits), torch.tensor([4.0]))
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(SegmentationTarget(1, mask)(logits), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="class id 2 is out of range"):
        SegmentationTarget(2)(logits)
    from lightning_cam.engine.targets import segmentation_prediction

    assert segmentation_prediction(logits).tolist() == [[[1, 0], [1, 0]]]
