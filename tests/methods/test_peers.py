"""Every method against pytorch-grad-cam's and torchcam's implementation, same model and inputs.

Where a peer's convention differs (interpolation, an epsilon, the order of normalisation), the
test reproduces that one convention with our own code and asserts equality: the rest of the
pipeline is then proven identical, and the difference is exactly the documented one
(benchmarks/results.md, "Why the peers' maps differ").
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.replay import PassTools
from lightning_cam.methods import LayerPass, combine, normalize_maps
from lightning_cam.methods.perturbation import scorecam_weights, smoothgradcampp_weights
from tests.optional import require


class Net(nn.Module):
    """conv-ReLU blocks (``nn.ReLU`` modules only), global average pooling, one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Conv2d(12, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.features(x)).mean(dim=(2, 3)))


SIZE = 20


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[nn.Module, torch.Tensor, list[int]]]:
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    # Classes with a positive score (Ablation-CAM's division by y keeps its sign there).
    ids = [int(torch.nonzero(row > 0)[0]) for row in logits]
    yield model, x, ids


def _pgc():
    return require("pytorch_grad_cam", "pip install -e '.[bench]' installs pytorch-grad-cam")


def _torchcam():
    return require("torchcam.methods", "pip install -e '.[bench]' installs torchcam")


def _pgc_maps(cls_name: str, model: nn.Module, layer: str, x: torch.Tensor, ids: list[int],
              **kwargs: object) -> torch.Tensor:
    pgc = _pgc()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m = copy.deepcopy(model)
    cam = getattr(pgc, cls_name)(model=m, target_layers=[m.get_submodule(layer)], **kwargs)
    try:
        out = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c) for c in ids])
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(out)


def _pgc_like(small: torch.Tensor) -> torch.Tensor:
    """Our layer-resolution maps as pytorch-grad-cam finishes them: cv2.resize (INTER_LINEAR,
    half-pixel centres: F.interpolate bilinear, align_corners=False), min-max again."""
    up = F.interpolate(small[:, None], (SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(up)


def _ours(name: str, model: nn.Module, layer: str, x: torch.Tensor, ids: list[int]) -> torch.Tensor:
    cls = getattr(lc, lc.METHODS[name].class_name)
    return cls(model, layer)(x, target=ids, upsample=False)


# ------------------------------------------------------------------ pytorch-grad-cam, gradient
@pytest.mark.parametrize(
    ("name", "cls_name"),
    [("hirescam", "HiResCAM"), ("gradcam-elementwise", "GradCAMElementWise"),
     ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM"), ("gradcam", "GradCAM")],
)
def test_gradient_methods_equal_pytorch_grad_cam(setup, name: str, cls_name: str) -> None:
    model, x, ids = setup
    theirs = _pgc_maps(cls_name, model, "features", x, ids)
    ours = _pgc_like(_ours(name, model, "features", x, ids))
    # pytorch-grad-cam's eps (1e-7 in the min-max; XGrad-CAM: 1e-7 added to sum(A)).
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-4)


def _projection_sign_agnostic(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """Per sample +1 where pytorch-grad-cam's SVD sign agrees with our convention, else -1."""
    signs = []
    for o, t in zip(ours, theirs, strict=True):
        if torch.allclose(o, t, rtol=1e-3, atol=1e-4):
            signs.append(1.0)
        else:
            torch.testing.assert_close(o, -t, rtol=1e-3, atol=1e-4)
            signs.append(-1.0)
    return torch.tensor(signs)


@pytest.mark.parametrize(("name", "cls_name"), [("eigencam", "EigenCAM"),
                                                ("eigengradcam", "EigenGradCAM")])
def test_eigen_methods_equal_pytorch_grad_cam_up_to_its_sign(setup, name: str,
                                                             cls_name: str) -> None:
    _pgc()
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from lightning_cam.methods.gradient import first_component

    model, x, ids = setup
    explainer = lc.Explainer(model, "features")
    a, g = explainer._layer_gradients("features", x, torch.tensor(ids))
    data = a if name == "eigencam" else g * a
    ours = first_component(data, None if name == "eigencam" else data.sum(1))
    theirs = torch.from_numpy(get_2d_projection(data.numpy()))
    signs = _projection_sign_agnostic(ours, theirs)
    # The maps: equal where LAPACK's sign happened to match the convention; where it did not,
    # pytorch-grad-cam's map is the ReLU of the negated projection.
    maps = _pgc_maps(cls_name, model, "features", x, ids)
    mine = _pgc_like(_ours(name, model, "features", x, ids))
    flipped = _pgc_like(normalize_maps(F.relu(-ours)))
    for i, s in enumerate(signs):
        want = mine[i] if s > 0 else flipped[i]
        torch.testing.assert_close(maps[i], want, rtol=0, atol=2e-4)


# ------------------------------------------------------------------ perturbation methods
def _job(model: nn.Module, layer: str, x: torch.Tensor, ids: list[int]) -> LayerPass:
    acts: list[torch.Tensor] = []
    h = model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: acts.append(o))
    with torch.no_grad():
        logits = model(x)
    h.remove()
    a = acts[0].detach().float()
    explainer = lc.Explainer(model, layer)
    tools = PassTools(model, layer, x, a, logits,
                      lambda xs, cs: explainer._layer_gradients(layer, xs, cs))
    return LayerPass(a, None, layer, model, x, torch.tensor(ids), logits, None,
                     tools.forward_logits, tools.replay, tools.layer_gradients)


def test_ablationcam_identical_to_pytorch_grad_cam(setup) -> None:
    model, x, ids = setup  # "features" ends in a ReLU: pytorch-grad-cam zeroes, as the paper
    theirs = _pgc_maps("AblationCAM", model, "features", x, ids, batch_size=5)
    ours = _pgc_like(_ours("ablationcam", model, "features", x, ids))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-4)


def test_scorecam_equal_to_both_peers_conventions(setup) -> None:
    model, x, ids = setup
    job = _job(model, "features", x, ids)
    # pytorch-grad-cam: upsample with align_corners=True, then min-max (eps 1e-8).
    pgc = _pgc_maps("ScoreCAM", model, "features", x, ids)
    mine = normalize_maps(combine(job.activations, scorecam_weights(job, align_corners=True)))
    torch.testing.assert_close(_pgc_like(mine), pgc, rtol=0, atol=2e-4)
    # torchcam: min-max at the layer's resolution, then upsample; minus a baseline score that
    # is the same for every channel (cancels in the softmax).
    tc = _torchcam()
    m = copy.deepcopy(model)
    with tc.ScoreCAM(m, "features", batch_size=7, input_shape=(3, SIZE, SIZE)) as ext:
        with torch.no_grad():
            m(x)
        (theirs,) = ext(class_idx=ids)
    mine = normalize_maps(combine(job.activations, scorecam_weights(job, upsample_first=False)))
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-4)
    # Ours (the paper: upsample, then min-max; bilinear as every other map) is close to both.
    public = _ours("scorecam", model, "features", x, ids)
    assert float((public - theirs).abs().max()) < 0.1


# ------------------------------------------------------------------ torchcam
@pytest.mark.parametrize(("name", "cls_name"), [("xgradcam", "XGradCAM"),
                                                ("layercam", "LayerCAM"),
                                                ("gradcam", "GradCAM")])
def test_gradient_methods_equal_torchcam(setup, name: str, cls_name: str) -> None:
    tc = _torchcam()
    model, x, ids = setup
    m = copy.deepcopy(model)
    with getattr(tc, cls_name)(m, "features", input_shape=(3, SIZE, SIZE)) as ext:
        (theirs,) = ext(class_idx=ids, scores=m(x))
    # torchcam's eps 1e-8 in the min-max (raw maps of an untrained net peak near 1e-3) and
    # added to sum(A) in XGrad-CAM (felt by channels with small sums).
    torch.testing.assert_close(_ours(name, model, "features", x, ids), theirs.detach(),
                               rtol=0, atol=2e-4)


def test_cam_equal_to_torchcam(setup) -> None:
    tc = _torchcam()
    model, x, ids = setup
    m = copy.deepcopy(model)
    with tc.CAM(m, "head", "fc", input_shape=(3, SIZE, SIZE)) as ext:
        with torch.no_grad():
            m(x)
        (theirs,) = ext(class_idx=ids)
    torch.testing.assert_close(_ours("cam", model, "head", x, ids), theirs, rtol=0, atol=1e-5)


def test_layercam_fusion_equals_torchcam(setup) -> None:
    tc = _torchcam()
    model, x, ids = setup
    m = copy.deepcopy(model)
    layers = ["features.1", "features"]
    with tc.LayerCAM(m, layers, input_shape=(3, SIZE, SIZE)) as ext:
        cams = ext(class_idx=ids, scores=m(x))
        theirs = ext.fuse_cams([c.detach() for c in cams], (SIZE, SIZE))
    # torchcam: tanh(2 M) of the min-max normalised maps, resized, element-wise max. Ours:
    # tanh(2 M / max M) of the raw maps (eq. 9): the same where a map's minimum is 0.
    ours = lc.LayerCAM(model, layers, fuse="max")(x, target=ids)
    torch.testing.assert_close(ours, normalize_maps(theirs), rtol=0, atol=1e-4)


def test_smoothgradcampp_against_torchcam(setup) -> None:
    tc = _torchcam()
    model, x, ids = setup
    # At the layer before the pooling every gradient is constant over the map, where torchcam's
    # denominator sum(g^3 A) equals the paper's sum(A) g^3; with a tiny noise its maps (made of
    # the *last noisy* forward's activations) equal the clean ones up to that noise.
    m = copy.deepcopy(model)
    with tc.SmoothGradCAMpp(m, "head", num_samples=3, std=1e-4,
                            input_shape=(3, SIZE, SIZE)) as ext:
        (theirs,) = ext(class_idx=ids, scores=m(x))
    job = _job(model, "head", x, ids)
    mine = normalize_maps(combine(job.activations,
                                  smoothgradcampp_weights(job, num_samples=3, std=1e-4)))
    # torchcam adds eps 1e-8 to alpha's denominator 2 g^2 + ...: with g ~ 1e-3 here, ~1 %.
    torch.testing.assert_close(mine, theirs.detach(), rtol=0, atol=5e-3)
    np.testing.assert_array_less(-1e-6, mine.numpy())
