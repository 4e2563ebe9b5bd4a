"""The recent methods (methods/recent.py): hand-computed maps and pytorch-grad-cam's.

The peer comparisons use the network and inputs of ``tests/methods/test_peers.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_cam as lc
from lightning_cam.methods import METHODS, LayerPass, normalize_maps
from lightning_cam.methods.gradient import first_component
from lightning_cam.methods.recent import fem_weights, kpcacam_map, segeigencam_map
from tests.methods.test_peers import SIZE, Net, _ours, _pgc, _pgc_like, _pgc_maps


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[nn.Module, torch.Tensor, list[int]]]:
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    yield model, x, [int(i) for i in logits.argmax(dim=1)]


def _acts(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    a, _ = lc.Explainer(model, layer)._layer_gradients(layer, x, torch.zeros(len(x)).long())
    return a


# --------------------------------------------------------------------------- FEM
def test_fem_hand_computed() -> None:
    # 3 x 3 positions. Channel 0: one 9 (mean 1, std sqrt(8) = 2.83); channel 1 constant (std 0:
    # nothing exceeds the mean); channel 2: two 3s (mean 2/3, std 1.25).
    a = torch.zeros(1, 3, 3, 3)
    a[0, 0, 2, 2] = 9.0
    a[0, 1] = 1.0
    a[0, 2, 0, 0] = a[0, 2, 0, 1] = 3.0
    job = LayerPass(a)
    # k = 2: thresholds 6.66, 1, 3.16 -> only the 9 passes: w = (1/9, 0, 0).
    torch.testing.assert_close(fem_weights(job).flatten(), torch.tensor([1 / 9, 0, 0]))
    # k = 1: thresholds 3.83, 1, 1.91 -> w = (1/9, 0, 2/9); map = A_0 / 9 + 2 A_2 / 9.
    w = fem_weights(job, k=1.0)
    torch.testing.assert_close(w.flatten(), torch.tensor([1 / 9, 0, 2 / 9]))
    cam = normalize_maps(METHODS["fem"].layer_map(LayerPass(a)))
    want = torch.zeros(1, 3, 3)
    want[0, 2, 2] = 1.0
    torch.testing.assert_close(cam, want)


def test_fem_equals_pytorch_grad_cam(setup) -> None:
    model, x, ids = setup
    theirs = _pgc_maps("FEM", model, "features", x, ids)
    ours = _pgc_like(_ours("fem", model, "features", x, ids))
    # numpy's float32 mean / std against torch's (a position at the threshold could flip its
    # mask bit; none does here); pytorch-grad-cam's eps 1e-7 in the min-max.
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-4)


# --------------------------------------------------------------------------- Seg-Eigen-CAM
def test_segeigencam_hand_computed_sign_correction() -> None:
    # One channel, four positions: |g| A = (0, 4, 4, 4), centred (-3, 1, 1, 1): the component
    # is that vector up to sign; |min| = 3 > |max| = 1 flips it to (3, -1, -1, -1).
    a = torch.tensor([0.0, 2.0, 2.0, 4.0]).view(1, 1, 2, 2)
    g = torch.tensor([-1.0, 2.0, -2.0, 1.0]).view(1, 1, 2, 2)
    proj = segeigencam_map(a, g)
    torch.testing.assert_close(proj, torch.tensor([[[3.0, -1.0], [-1.0, -1.0]]]))
    # The Eigen methods' default rule (correlate with the channel sum) keeps (-3, 1, 1, 1).
    torch.testing.assert_close(
        first_component(g.abs() * a), torch.tensor([[[-3.0, 1.0], [1.0, 1.0]]])
    )
    assert METHODS["segeigencam"].kind == "gradient"


def test_segeigencam_equals_pytorch_grad_cam(setup) -> None:
    model, x, ids = setup
    theirs = _pgc_maps("SegEigenCAM", model, "features", x, ids)
    ours = _pgc_like(_ours("segeigencam", model, "features", x, ids))
    # The same sign rule (|max| vs |min|): equal whatever sign LAPACK's SVD returned.
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-4)


def test_eigencam_peak_sign_option_equals_pytorch_grad_cam_seg_projection(setup) -> None:
    _pgc()
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    model, x, _ = setup
    a = _acts(model, "features", x)
    theirs = torch.from_numpy(get_2d_projection_with_sign_correction(a.numpy()))
    from lightning_cam.methods.activation import eigencam_map

    torch.testing.assert_close(eigencam_map(LayerPass(a), sign="peak"), theirs,
                               rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="sign must be one of"):
        eigencam_map(LayerPass(a), sign="max")


# --------------------------------------------------------------------------- KPCA-CAM
def test_kpcacam_hand_computed_two_positions() -> None:
    # Positions (3, 1) and (1, 1): centred d = (1, 0) and -d, |d|^2 = 1, gamma = 1/2.
    # Sigmoid kernel [[p, q], [q, p]] with p = tanh(1.5), q = tanh(0.5); centred:
    # (p - q) / 2 [[1, -1], [-1, 1]], top eigenvalue p - q, eigenvector (1, -1)/sqrt 2:
    # component sqrt(p - q) (1, -1) / sqrt 2; positive where sum_k A is larger (position 0).
    a = torch.tensor([[3.0, 1.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    p, q = math.tanh(1.5), math.tanh(0.5)
    v = math.sqrt((p - q) / 2)
    torch.testing.assert_close(kpcacam_map(LayerPass(a)), torch.tensor([[[v, -v]]]))
    # Linear kernel: ordinary PCA, the component (|d|, -|d|) = (1, -1), as Eigen-CAM.
    torch.testing.assert_close(kpcacam_map(LayerPass(a), kernel="linear"),
                               torch.tensor([[[1.0, -1.0]]]))
    torch.testing.assert_close(first_component(a), torch.tensor([[[1.0, -1.0]]]))
    with pytest.raises(ValueError, match="kernel must be one of"):
        kpcacam_map(LayerPass(a), kernel="laplace")


def test_kpcacam_linear_kernel_is_eigencam(setup) -> None:
    model, x, _ = setup
    a = _acts(model, "features", x)
    torch.testing.assert_close(kpcacam_map(LayerPass(a), kernel="linear"), first_component(a),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("kernel", "gamma"), [("sigmoid", None), ("rbf", None),
                                               ("poly", 0.05), ("cosine", None)])
def test_kpcacam_equals_pytorch_grad_cam_kernel_pca(setup, kernel: str,
                                                    gamma: float | None) -> None:
    _pgc()
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    model, x, _ = setup
    a = _acts(model, "features", x)  # 10 x 10 = 100 positions: sklearn's dense eigh
    theirs = torch.from_numpy(get_2d_projection_kernel(a.numpy(), kernel, gamma))
    # sklearn's sign rule (svd_flip: the largest magnitude positive) is our sign="peak".
    ours = kpcacam_map(LayerPass(a), kernel=kernel, gamma=gamma, sign="peak")
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4 * scale)


def test_kpcacam_public_maps_against_pytorch_grad_cam(setup) -> None:
    model, x, ids = setup
    theirs = _pgc_maps("KPCA_CAM", model, "features", x, ids)
    mine = _pgc_like(_ours("kpcacam", model, "features", x, ids))
    a = _acts(model, "features", x)
    ours = kpcacam_map(LayerPass(a))
    peak = kpcacam_map(LayerPass(a), sign="peak")
    # Our sign correlates the map with sum_k A (Eigen-CAM's convention); sklearn's makes the
    # largest magnitude positive. Where the two rules agree the maps are equal; elsewhere
    # pytorch-grad-cam's map is the ReLU of the negated component.
    flipped = _pgc_like(normalize_maps(F.relu(-ours)))
    for i in range(len(x)):
        same = bool(torch.allclose(ours[i], peak[i]))
        want = mine[i] if same else flipped[i]
        torch.testing.assert_close(theirs[i], want, rtol=0, atol=2e-4)


def test_kpcacam_faster_than_pytorch_grad_cam(setup) -> None:
    """Measured, not asserted (timings vary): printed with ``-s``."""
    _pgc()
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    a = torch.rand(8, 64, 14, 14)
    t0 = time.perf_counter()
    kpcacam_map(LayerPass(a))
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    get_2d_projection_kernel(a.numpy())
    theirs = time.perf_counter() - t0
    print(f"KPCA-CAM 8 x 64 x 14 x 14: ours {ours * 1e3:.1f} ms, pytorch-grad-cam "
          f"{theirs * 1e3:.1f} ms")
