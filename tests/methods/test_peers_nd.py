"""3-D Grad-CAM and Grad-CAM++ against MONAI's ``monai.visualize`` and pytorch-grad-cam's 3-D
path, on the same MONAI network and volume.

As in tests/methods/test_peers.py: where a peer's convention differs, the test reproduces that
one convention with our numbers and asserts equality, so the rest is proven identical and the
difference is exactly the documented one (benchmarks/nd.md, "Conventions"):

* MONAI's default post-processing maps ``(min, max)`` to ``(1, 0)`` (its docstring: "this will
  flip magnitudes"): its map is ``1 - ours``; with an identity post-processing its upsampled raw
  map (trilinear, ``align_corners=False``, as ours) is our ``normalize=False`` map.
* MONAI's Grad-CAM++ sums ``A * g^3`` over positions in the denominator of alpha (the paper,
  eq. 19, and we: ``sum_ab A_ab * g_ij^3``), adds ``1e-7`` to it, and scales the ReLU'd gradient
  by ``exp(score)``. At the default layer of its DenseNet (``class_layers.relu``, right before
  the global pooling) the gradient is constant over positions, the two denominators are one,
  and the maps agree; at an inner layer MONAI's map equals its own formula on our activations
  and gradients. (Its ``exp(score)`` of shape ``(B,)`` does not broadcast against 3-D
  gradients for ``B > 1``: it is called one volume at a time.)
* MONAI's hooks stay on the model it is given (registered once, never removed): it gets a copy.
* pytorch-grad-cam min-max normalises the layer's map (``+ 1e-7``), resizes it with
  ``scipy.ndimage.zoom`` (cubic spline, corner-aligned) and normalises again: its map is that
  chain applied to our layer-resolution map.
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
from tests.optional import require


def _monai():
    return require("monai", "pip install monai")


def _pgc():
    return require("pytorch_grad_cam", "pip install grad-cam")


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[nn.Module, torch.Tensor, int]]:
    nets = _monai().networks.nets
    torch.manual_seed(0)
    model = nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=3, init_features=8,
                             growth_rate=8, block_config=(1, 2, 2, 1)).eval()
    with torch.no_grad():  # class 1's weights away from 0: MONAI's 1e-7 in alpha is negligible
        w = model.class_layers.out.weight
        w[1] = torch.sign(w[1]) * (1.0 + torch.rand(w.shape[1]))
    x = torch.randn(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    yield model, x, 1


def _monai_cam(kind: str, model: nn.Module, layer: str, x: torch.Tensor, c: int,
               **kw) -> torch.Tensor:
    """MONAI's map ``(B, 1, *spatial)`` of a copy of ``model`` (its hooks stay on it), one
    volume at a time."""
    cam = getattr(_monai().visualize, kind)(copy.deepcopy(model), target_layers=layer, **kw)
    return torch.cat([cam(x[i : i + 1], class_idx=c).detach() for i in range(x.shape[0])])


def _ours(model: nn.Module, x: torch.Tensor, layer: str, method: str, **kw) -> torch.Tensor:
    return lc.explain(model, x, layer, methods=[method], target=1, **kw).cam(method)


@pytest.mark.parametrize("layer", ["class_layers.relu", "features.denseblock3"])
def test_monai_gradcam_equals_ours_raw_and_flipped(setup, layer: str) -> None:
    model, x, c = setup
    raw = _monai_cam("GradCAM", model, layer, x, c, postprocessing=lambda t: t)
    ours_raw = _ours(model, x, layer, "gradcam", normalize=False)
    assert raw.shape == (2, 1, 64, 64, 64) and float(ours_raw.amax()) > 0
    torch.testing.assert_close(raw[:, 0], ours_raw, rtol=1e-4, atol=1e-5 * float(raw.amax()))
    flipped = _monai_cam("GradCAM", model, layer, x, c)  # its default post-processing: 1 - map
    ours = _ours(model, x, layer, "gradcam")
    torch.testing.assert_close(flipped[:, 0].float(), 1 - ours, rtol=0, atol=1e-5)


def test_monai_gradcampp_equals_ours_where_the_gradient_is_constant(setup) -> None:
    model, x, c = setup
    got = _monai_cam("GradCAMpp", model, "class_layers.relu", x, c,
                     postprocessing=lambda t: t)[:, 0]
    span = got.flatten(1).amax(1) - got.flatten(1).amin(1)
    got = (got - got.flatten(1).amin(1)[:, None, None, None]) / span[:, None, None, None]
    ours = _ours(model, x, "class_layers.relu", "gradcam++")
    torch.testing.assert_close(got, ours, rtol=0, atol=1e-5)


def test_monai_gradcampp_at_an_inner_layer_is_its_own_denominator(setup) -> None:
    model, x, c = setup
    layer = "features.denseblock3"
    got = _monai_cam("GradCAMpp", model, layer, x, c, postprocessing=lambda t: t)[:, 0]
    # MONAI's formula on activations and gradients taken by hand (hook + autograd).
    seen: list[torch.Tensor] = []
    module = model.get_submodule(layer)
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o))
    logits = model(x)
    handle.remove()
    a = seen[0]
    (g,) = torch.autograd.grad(logits[:, c].sum(), a)
    a = a.detach()
    dims = (2, 3, 4)
    den = 2 * g**2 + (a * g**3).sum(dims, keepdim=True)
    alpha = g**2 / (torch.where(den != 0, den, torch.ones_like(den)) + 1e-7)
    w = (alpha * F.relu(logits[:, c].detach().exp()[:, None, None, None, None] * g)).sum(
        dims, keepdim=True)
    monai_low = F.relu((w * a).sum(1, keepdim=True))
    monai_map = F.interpolate(monai_low, size=x.shape[2:], mode="trilinear")[:, 0]
    torch.testing.assert_close(got, monai_map, rtol=1e-4, atol=1e-6 * float(got.amax()))
    # ... and not ours: the denominators differ where the gradient varies over positions.
    ours = _ours(model, x, layer, "gradcam++")
    span = got.flatten(1).amax(1) - got.flatten(1).amin(1)
    norm = (got - got.flatten(1).amin(1)[:, None, None, None]) / span[:, None, None, None]
    assert float((norm - ours).abs().max()) > 1e-3


def _zoom_chain(low: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """pytorch-grad-cam's 3-D post-processing: min-max (+1e-7), scipy zoom, min-max again."""
    from scipy.ndimage import zoom

    out = []
    for m in low:
        m = m - m.min()
        m = m / (1e-7 + m.max())
        m = zoom(np.float32(m), [t / s for s, t in zip(m.shape, size, strict=True)])
        out.append(m)
    res = np.maximum(np.float32(out), 0)
    res = np.stack([(r - r.min()) / (1e-7 + (r - r.min()).max()) for r in res])
    return res


@pytest.mark.parametrize("layer", ["class_layers.relu", "features.denseblock3"])
def test_pytorch_grad_cam_3d_path_is_ours_through_its_zoom(setup, layer: str) -> None:
    model, x, c = setup
    pgc = _pgc()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = model.get_submodule(layer)
    with pgc.GradCAM(model=model, target_layers=[module]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * 2)
    low = _ours(model, x, layer, "gradcam", normalize=False, upsample=False).numpy()
    assert theirs.shape == (2, 64, 64, 64)
    np.testing.assert_allclose(theirs, _zoom_chain(low, (64, 64, 64)), atol=1e-5)
    # The interpolation is the difference: ours, trilinear with half-pixel centres, differs from
    # their corner-aligned cubic spline by a visible amount at this 16x upsampling.
    ours = _ours(model, x, layer, "gradcam").numpy()
    assert np.abs(theirs - ours).max() > 1e-3
