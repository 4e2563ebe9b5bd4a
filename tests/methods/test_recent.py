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


def test_kpcacam_large_map_lanczos_equals_sklearn_arpack(setup) -> None:
    _pgc()
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    model, x, _ = setup
    a = _acts(model, "features.1", x)  # 20 x 20 = 400 positions: our Lanczos, sklearn's ARPACK
    theirs = torch.from_numpy(get_2d_projection_kernel(a.numpy()))
    ours = kpcacam_map(LayerPass(a), sign="peak")
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4 * float(theirs.abs().max()))


def test_top_eigenpair_lanczos_equals_eigh() -> None:
    from lightning_cam.methods.kernel_pca import top_eigenpair

    g = torch.Generator().manual_seed(3)
    m = torch.randn(2, 300, 40, generator=g, dtype=torch.float64)
    m = m @ m.transpose(1, 2) - 5 * torch.eye(300, dtype=torch.float64)  # indefinite
    vals, vecs = torch.linalg.eigh(m)
    theta, v = top_eigenpair(m)
    torch.testing.assert_close(theta, vals[:, -1])
    torch.testing.assert_close(v * torch.sign((v * vecs[..., -1]).sum(1, keepdim=True)),
                               vecs[..., -1])


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


# --------------------------------------------------------------------------- Shapley-CAM
class QuadNet(nn.Module):
    """x (1, 1, 2, 2) -> A_0 = x, A_1 = 5 - x -> y_c = sum_ij sum_k V[c,k] A_k^2 + U[c,k] A_k:
    g = 2 V A + U and H A = 2 V A (the Hessian is diagonal, 2 V), so g - H A / 2 = V A + U."""

    def __init__(self, skip: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 5.0]))
        self.register_buffer("V", torch.tensor([[1.0, -0.5], [-1.0, 1.0]]))
        self.register_buffer("U", torch.tensor([[0.0, 3.0], [0.0, 0.0]]))
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        y = torch.einsum("bkij,ck->bc", a * a, self.V) + torch.einsum("bkij,ck->bc", a, self.U)
        # skip: the network after the layer reads the input too: no fx split, full replays.
        return y + 0.0 * x.sum() if self.skip else y


XQ = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)


@pytest.mark.parametrize("skip", [False, True])
def test_shapleycam_hand_computed(skip: bool) -> None:
    # Class 0: w = mean(V A + U) = (1 * 2.5, -0.5 * 2.5 + 3) = (2.5, 1.75):
    # 2.5 A_0 + 1.75 A_1 = [[9.5, 10.25], [11, 11.75]]. Grad-CAM: mean(2 V A + U) = (5, 0.5):
    # 5 A_0 + 0.5 A_1 = [[7, 11.5], [16, 20.5]].
    model = QuadNet(skip).eval()
    raw = lc.ShapleyCAM(model, "conv", normalize=False)(XQ, target=0, upsample=False)
    torch.testing.assert_close(raw, torch.tensor([[[9.5, 10.25], [11.0, 11.75]]]))
    grad = lc.GradCAM(model, "conv", normalize=False)(XQ, target=0, upsample=False)
    torch.testing.assert_close(grad, torch.tensor([[[7.0, 11.5], [16.0, 20.5]]]))


def test_shapleycam_is_gradcam_on_a_piecewise_linear_tail(setup) -> None:
    model, x, ids = setup  # after "features": conv, ReLU, mean, linear: H A = 0
    torch.testing.assert_close(_ours("shapleycam", model, "features", x, ids),
                               _ours("gradcam", model, "features", x, ids), rtol=0, atol=1e-6)
    assert METHODS["shapleycam"].needs_class_target
    with pytest.raises(ValueError, match="needs class targets"):
        lc.ShapleyCAM(model, "features")(x, target=lambda out: out[:, 0])


class SmoothNet(Net):
    """Net with a SiLU head: a smooth tail after "features", whose Hessian does not vanish."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(12, 16, 3, padding=1), nn.SiLU())


def _pgc_shapley(model: nn.Module, x: torch.Tensor, targets: list) -> torch.Tensor:
    pgc = _pgc()
    import copy

    m = copy.deepcopy(model)
    cam = pgc.ShapleyCAM(model=m, target_layers=[m.get_submodule("features")])
    try:
        return torch.from_numpy(cam(input_tensor=x.clone(), targets=targets))
    finally:
        cam.activations_and_grads.release()


def test_shapleycam_equals_pytorch_grad_cam(setup) -> None:
    _pgc()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

    from lightning_cam.methods import combine
    from lightning_cam.methods.recent import shapleycam_weights
    from tests.methods.test_peers import _job

    _, x, ids = setup
    torch.manual_seed(0)
    model = SmoothNet().eval()
    theirs = _pgc_shapley(model, x, [ClassifierOutputTarget(c) for c in ids])
    ours = _pgc_like(_ours("shapleycam", model, "features", x, ids))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-4)  # their min-max eps 1e-7
    # ... and differs from Grad-CAM there (H A != 0).
    assert float((ours - _pgc_like(_ours("gradcam", model, "features", x, ids))).abs().max()) > 1e-3
    # The paper's ReST utility (score="rest"), on both tails.
    for net in (model, setup[0]):
        theirs = _pgc_shapley(net, x, [ClassifierOutputReST(c) for c in ids])
        job = _job(net, "features", x, ids)
        mine = normalize_maps(combine(job.activations, shapleycam_weights(job, score="rest")))
        torch.testing.assert_close(_pgc_like(mine), theirs, rtol=0, atol=2e-4)
    with pytest.raises(ValueError, match="score must be one of"):
        shapleycam_weights(job, score="softmax")


# --------------------------------------------------------------------------- Finer-CAM
def test_finer_scores_hand_computed() -> None:
    from lightning_cam.engine.targets import FinerTarget
    from lightning_cam.methods.recent import finer_scores

    y = torch.tensor([[2.0, 1.0, -3.0, 1.5]])
    # Target 0: |y - 2| = (0, 1, 5, .5): ranks 1, 2 are classes 3 and 1.
    e = [math.exp(v) for v in (2.0, 1.0, -3.0, 1.5)]
    p3, p1 = e[3] / sum(e), e[1] / sum(e)
    want = (p3 * (2 - 1.5) + p1 * (2 - 1.0)) / (p3 + p1)
    torch.testing.assert_close(finer_scores(y, torch.tensor([0]), 1.0, (1, 2)),
                               torch.tensor([want]))
    # alpha 0.5, rank 1 only: y_0 - 0.5 y_3.
    torch.testing.assert_close(FinerTarget(0, alpha=0.5, ranks=(1,))(y), torch.tensor([1.25]))
    # Ranks past the classes are dropped; a single class leaves the class score.
    torch.testing.assert_close(finer_scores(y[:, :2], torch.tensor([1])), torch.tensor([-1.0]))
    torch.testing.assert_close(finer_scores(y[:, :1], torch.tensor([0])), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="ranks must be positive ints"):
        FinerTarget(ranks=(0, 1))


def test_finercam_hand_computed() -> None:
    from tests.methods.test_gradient_identities import LinearScoreNet, X

    # Two classes: rank 1 is the other class, S = y_0 - y_1 (p cancels), g = V[0] - V[1] =
    # (2, -1.5): ReLU(2 A_0 - 1.5 (5 - A_0)) = ReLU(3.5 A_0 - 7.5) = [[0, 0], [3, 6.5]].
    model = LinearScoreNet().eval()
    cam = lc.FinerCAM(model, "conv")(X, target=0, upsample=False)
    torch.testing.assert_close(cam, torch.tensor([[[0.0, 0.0], [3 / 6.5, 1.0]]]))


def test_finercam_equals_pytorch_grad_cam_and_gradcam_of_finer_target(setup) -> None:
    pgc = _pgc()
    import copy

    from lightning_cam.engine.targets import FinerTarget

    model, x, _ = setup
    m = copy.deepcopy(model)
    cam = pgc.FinerCAM(m, [m.get_submodule("features")])
    try:
        theirs = torch.from_numpy(cam(input_tensor=x.clone()))  # targets: the predicted classes
    finally:
        cam.base_cam.activations_and_grads.release()
    small = lc.FinerCAM(model, "features")(x, upsample=False)
    # Their eps 1e-9 in the score's denominator, 1e-7 in the min-max.
    torch.testing.assert_close(_pgc_like(small), theirs, rtol=0, atol=2e-4)
    # The public target with Grad-CAM (one engine backward) is the same map.
    via_target = lc.GradCAM(model, "features")(x, target=FinerTarget(), upsample=False)
    torch.testing.assert_close(via_target, small, rtol=0, atol=1e-6)


# ------------------------------------------------------------- RefineCAM = fuse="product"
def test_product_fusion_is_refinecam_of_pytorch_grad_cam() -> None:
    pgc = _pgc()
    import copy

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():  # logits x 1000: gradients ~1, so their Grad-CAM++ eps 1e-7 is moot
        model.fc.weight.mul_(1e3)
        model.fc.bias.mul_(1e3)
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ids = model(x).argmax(dim=1).tolist()
    layers = ["features.1", "features"]
    m = copy.deepcopy(model)
    cam = pgc.RefineCAM(m, [m.get_submodule(n) for n in layers])  # base: GradCAMPlusPlus
    try:
        theirs = torch.from_numpy(
            cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c) for c in ids])
        )
    finally:
        for base in cam.base_cam_per_layer:
            base.activations_and_grads.release()
    # RefineCAM: each layer's map min-max normalised, resized to the input, normalised again
    # (pytorch-grad-cam's finish), their product normalised. Ours with that convention:
    per = [_pgc_like(lc.GradCAMPlusPlus(model, n)(x, target=ids, upsample=False))
           for n in layers]
    torch.testing.assert_close(normalize_maps(per[0] * per[1]), theirs, rtol=0, atol=5e-4)
    # fuse="product" does not re-normalise a map after resizing it (bilinear upsampling can
    # lower its peak below 1): close, not equal.
    public = lc.GradCAMPlusPlus(model, layers, fuse="product")(x, target=ids)
    assert float((public - theirs).abs().max()) < 0.1


# --------------------------------------------------------------------------- every surface
NEW = ("fem", "kpcacam", "segeigencam", "shapleycam", "finercam")


def test_new_methods_in_one_explain_call_and_max_batch_independent() -> None:
    torch.manual_seed(0)
    model = SmoothNet().eval()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    out = lc.explain(model, x, layer="features", methods=("gradcam", *NEW), target=[0, 1, 2])
    one = lc.explain(model, x, layer="features", methods=NEW, target=[0, 1, 2], max_batch=1)
    for name in NEW:
        maps = out.cams[name]["features"]
        assert maps.shape == (3, SIZE, SIZE) and bool(torch.isfinite(maps).all()), name
        torch.testing.assert_close(one.cams[name]["features"], maps, rtol=0, atol=1e-5)
        assert getattr(lc, METHODS[name].class_name).method == name
    # Each image alone: the same map as in the batch (replayed gradients are per image).
    solo = lc.ShapleyCAM(model, "features")(x[1:2], target=1)
    torch.testing.assert_close(solo, out.cams["shapleycam"]["features"][1:2], rtol=0, atol=1e-5)
