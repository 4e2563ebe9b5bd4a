"""Grad-CAM and Grad-CAM++ against hand-computed maps and the papers' identities."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_cam as lc
from lightning_cam.methods import gradcampp_weights, method_name, normalize_maps
from tests.reference import class_score, minmax, reference_gradcam


class LinearScoreNet(nn.Module):
    """x (1, 1, 2, 2) -> conv (2 channels, A known by hand) -> logits_c = sum_k,ij V[c,k] A_k,ij.

    With x = [[1, 2], [3, 4]]: A_0 = x, A_1 = 5 - x = [[4, 3], [2, 1]].
    dy^c / dA_k = V[c, k] everywhere.
    """

    def __init__(self, power: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 5.0]))
        self.register_buffer("V", torch.tensor([[1.0, -0.5], [-1.0, 1.0]]))
        self.power = power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        return torch.einsum("bkij,ck->bc", a.pow(self.power), self.V)


X = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)


def test_gradcam_hand_computed() -> None:
    # w = mean(g) = V[0] = [1, -0.5]; map = ReLU(A_0 - 0.5 A_1) = ReLU([[-1, .5], [2, 3.5]])
    # normalised by 3.5: [[0, 1/7], [4/7, 1]]
    cam = lc.GradCAM(LinearScoreNet(), "conv")(X, target=0, upsample=False)
    expected = torch.tensor([[[0.0, 1 / 7], [4 / 7, 1.0]]])
    torch.testing.assert_close(cam, expected)
    # class 1: w = [-1, 1]: map = ReLU(A_1 - A_0) = ReLU([[3, 1], [-1, -3]]) -> [[1, 1/3], [0, 0]]
    cam1 = lc.GradCAM(LinearScoreNet(), "conv")(X, target=1, upsample=False)
    torch.testing.assert_close(cam1, torch.tensor([[[1.0, 1 / 3], [0.0, 0.0]]]))


def test_gradcampp_hand_computed() -> None:
    # class 0: channel 0 has g = 1: alpha = 1 / (2 + sum(A_0) * 1) = 1/12, w_0 = 4 * 1/12 = 1/3.
    # channel 1 has g = -0.5 < 0: ReLU(g) = 0, w_1 = 0.  map = A_0 / 3 -> (A_0 - 1) / 3.
    cam = lc.GradCAMPlusPlus(LinearScoreNet(), "conv")(X, target=0, upsample=False)
    torch.testing.assert_close(cam, torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]]]))


def _numpy_gradcampp(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Independent, loop-based eq. 19 of the Grad-CAM++ paper for one sample (K, h, w)."""
    k_, h_, w_ = a.shape
    weights = np.zeros(k_)
    for k in range(k_):
        s = a[k].sum()
        for i in range(h_):
            for j in range(w_):
                den = 2 * g[k, i, j] ** 2 + s * g[k, i, j] ** 3
                alpha = g[k, i, j] ** 2 / den if den != 0 else 0.0
                weights[k] += alpha * max(g[k, i, j], 0.0)
    cam = np.maximum((weights[:, None, None] * a).sum(0), 0)
    rng = cam.max() - cam.min()
    return (cam - cam.min()) / rng if rng > 0 else np.zeros_like(cam)


def test_gradcampp_spatially_varying_gradients() -> None:
    # y = sum V A^2: g = 2 V A varies over space; compare with the loop formulation.
    model = LinearScoreNet(power=2)
    cam = lc.GradCAMPlusPlus(model, "conv")(X, target=1, upsample=False)[0].numpy()
    a = model.conv(X)[0].detach().numpy().astype(np.float64)
    g = 2 * model.V[1].numpy()[:, None, None] * a
    np.testing.assert_allclose(cam, _numpy_gradcampp(a, g), rtol=1e-5, atol=1e-6)


def test_gradcampp_zero_denominator_gives_zero_alpha() -> None:
    a = torch.zeros(1, 1, 2, 2)
    g = torch.zeros(1, 1, 2, 2)
    w = gradcampp_weights(a, g)
    assert torch.equal(w, torch.zeros(1, 1, 1, 1))


class GapNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_gradcam_equals_cam_on_gap_models() -> None:
    """Grad-CAM paper, sec. 3.1: on conv -> GAP -> linear, Grad-CAM is CAM up to scale."""
    model = GapNet().eval()
    x = torch.randn(3, 3, 9, 9)
    target = [0, 3, 4]
    cam = lc.GradCAM(model, "features")(x, target=target, upsample=False)
    feats = model.features(x).detach()
    ref = torch.einsum("bkij,bk->bij", feats, model.fc.weight[target].detach()).relu()
    torch.testing.assert_close(cam, normalize_maps(ref), rtol=1e-5, atol=1e-5)


def test_normalize_all_zero_stays_zero() -> None:
    out = normalize_maps(torch.zeros(2, 3, 3))
    assert torch.equal(out, torch.zeros(2, 3, 3))
    assert not torch.isnan(out).any()


def test_normalize_in_place_is_the_same_maps() -> None:
    torch.manual_seed(0)
    cam = torch.randn(6, 5, 7)
    cam[1] = 2.0  # constant: all zero
    cam[2, 0, 0] = float("nan")
    cam[3, 1, 1] = float("inf")
    cam[4, 2, 2] = -float("inf")
    expected = normalize_maps(cam.clone())
    out = cam.clone()
    assert normalize_maps(out, inplace=True).data_ptr() == out.data_ptr()
    assert torch.equal(out.nan_to_num(-1.0), expected.nan_to_num(-1.0))
    assert torch.isnan(out[2:5]).all() and (out[1] == 0).all()
    assert out[0].min() == 0 and out[0].max() == 1
    with pytest.raises(ValueError, match="contiguous floating-point"):
        normalize_maps(torch.ones(2, 3, 3, dtype=torch.long), inplace=True)
    with pytest.raises(ValueError, match="contiguous floating-point"):
        normalize_maps(torch.rand(2, 4, 4)[:, :, :3], inplace=True)


def test_all_zero_map_from_model_is_zero_not_nan() -> None:
    # Class 0 with a negative-only contribution: V = [-1, -1] on positive A -> ReLU kills all.
    model = LinearScoreNet()
    with torch.no_grad():
        model.V.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    cam = lc.GradCAM(model, "conv")(X, target=0)
    assert torch.equal(cam, torch.zeros_like(cam))


def test_upsampled_map_is_bilinear_resize_then_normalised() -> None:
    model = GapNet().eval()
    x = torch.randn(2, 3, 8, 8)
    small = lc.GradCAM(model, "features.0")(x, upsample=False)
    big = lc.GradCAM(model, "features.0")(x)
    assert small.shape == (2, 8, 8) and big.shape == (2, 8, 8)
    torch.testing.assert_close(small, big)
    # A stride-2 layer: the 4x4 map really is resized to 8x8 -- bilinearly, before the scaling.
    strided = StridedGapNet().eval()
    small = lc.GradCAM(strided, "features")(x, target=[1, 2], upsample=False)
    big = lc.GradCAM(strided, "features")(x, target=[1, 2])
    assert small.shape == (2, 4, 4) and big.shape == (2, 8, 8)
    feats = strided.features(x).detach()
    raw = torch.einsum("bkij,bk->bij", feats, strided.fc.weight[[1, 2]].detach()).relu()
    torch.testing.assert_close(small, minmax(raw), rtol=1e-5, atol=1e-5)
    bilinear = F.interpolate(raw[:, None], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(big, minmax(bilinear[:, 0]), rtol=1e-5, atol=1e-5)
    nearest = F.interpolate(small[:, None], size=(8, 8), mode="nearest")[:, 0]
    assert (big - nearest).abs().max() > 0.05  # not a blocky nearest-neighbour copy


class StridedGapNet(nn.Module):
    """conv (stride 2, so an 8x8 input gives a 4x4 map) -> ReLU -> GAP -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_layercam_equals_positive_weight_cam_on_gap_models() -> None:
    """Layer-CAM: ReLU(sum_k ReLU(g_k) A_k); behind GAP + linear g_k = w_k / (h w) everywhere,
    so the map is CAM with only the positive fc weights, and differs from Grad-CAM's."""
    model = GapNet().eval()
    x = torch.randn(2, 3, 6, 6)
    target = [1, 4]
    got = lc.LayerCAM(model, "features")(x, target=target, upsample=False)
    feats = model.features(x).detach()
    w = model.fc.weight[target].detach()
    want = minmax(torch.einsum("bkij,bk->bij", feats, w.relu()).relu())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    ref = reference_gradcam(model, model.features, x, class_score(target), layercam=True)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    gradcam = lc.GradCAM(model, "features")(x, target=target, upsample=False)
    assert (got - gradcam).abs().max() > 1e-3  # the negative weights do count for Grad-CAM


def test_method_names() -> None:
    assert method_name("Grad-CAM++") == "gradcam++"
    assert method_name("GradCAM") == "gradcam"
    assert method_name("Score-CAM") == "scorecam"  # issue 14: every method of the field
    with pytest.raises(ValueError, match="Unknown method 'fullgrad'"):
        method_name("fullgrad")


class RedDetector(nn.Module):
    """1x1 conv picking the red (class 0) / green (class 1) channel -> ReLU -> GAP -> identity."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.ReLU())
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.copy_(torch.eye(3)[:2].view(2, 3, 1, 1))
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("cls", ["GradCAM", "GradCAMPlusPlus", "LayerCAM", "XGradCAM"])
def test_map_peaks_on_the_object_of_a_synthetic_image(cls: str) -> None:
    """A red square on black and a dim green one elsewhere: class 0's map is exactly the red
    square (its argmax inside it), class 1's the green one."""
    x = torch.zeros(1, 3, 16, 16)
    x[0, 0, 10:14, 4:8] = 1.0  # red square
    x[0, 1, 2:5, 9:12] = 0.5  # green square
    model = RedDetector().eval()
    cam = getattr(lc, cls)(model, "features")
    red = cam(x, target=0)[0]
    green = cam(x, target=1)[0]
    want_red = torch.zeros(16, 16)
    want_red[10:14, 4:8] = 1.0
    want_green = torch.zeros(16, 16)
    want_green[2:5, 9:12] = 1.0
    torch.testing.assert_close(red, want_red)
    torch.testing.assert_close(green, want_green)
    row, col = divmod(int(red.argmax()), 16)
    assert 10 <= row < 14 and 4 <= col < 8
