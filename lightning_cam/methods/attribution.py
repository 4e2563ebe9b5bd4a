"""Input attributions of captum as registry methods (kind ``attribution``): Integrated
Gradients, SmoothGrad, VarGrad, Occlusion, GradientShap, DeepLift, Saliency.

Nothing is written again: each function calls captum (an optional dependency, imported when a
method runs: ``pip install captum``) on ``job.logits_model`` — the borrowed model in eval
mode, returning the class scores ``(N, num_classes)`` the class targets read (a single-logit
binary head as ``[-z, z]``) — with ``target = job.class_ids``.

**Channel reduction.** captum attributes every input element ``(B, C, H, W)``; the map is one
value per pixel, chosen by the meaning of the attribution's sign:

- Integrated Gradients, DeepLift, GradientShap, Occlusion satisfy completeness (their
  attributions sum to ``f(x) - f(baseline)``, Occlusion approximately): a pixel's contribution
  is the sum over its channels and its sign says *for* or *against* the class. The map is
  ``ReLU(sum_c a_c)`` (``reduce="positive"``): the evidence for the class, as a CAM's ReLU
  keeps, and what the deletion / insertion metrics measure.
- Saliency, SmoothGrad, VarGrad are gradients (or their variance), whose sign at a pixel is no
  evidence: the map is ``sum_c |a_c|`` (``reduce="abs"``; Simonyan et al. take
  ``max_c |a_c|``: ``reduce="max_abs"``).

Maps are ``(B, H, W)`` at the input's resolution, normalised like every map by the engine.
Memory: at most ``max_batch`` inputs (or a 64 MiB bound) per forward of captum's expanded
batches (IG's steps, the noise samples, the occluded copies). The random methods (SmoothGrad,
VarGrad, GradientShap) draw from a generator seeded with ``seed`` per image, so an image's map
does not depend on its batch, and the user's global RNG is left as it was.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from lightning_cam.methods.core import LayerPass
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    >>> job = LayerPass(torch.empty(0), images=torch.rand(2, 3, 2, 2),
    ...                 class_ids=torch.tensor([0, 2]), logits_model=net)
    >>> saliency_map(job).shape
    torch.Size([2, 2, 2])
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_cam.methods.core import LayerPass, chunk_size

#: Channel reductions of an attribution ``(B, C, H, W)`` to a map ``(B, H, W)``.
REDUCTIONS = ("positive", "abs", "max_abs")
#: Defaults: Integrated Gradients' steps (captum's), the noise samples and their standard
#: deviation as a fraction of the image's value range (Smilkov et al.: 10-20 %), GradientShap's
#: samples, the seed of the random methods.
IG_STEPS, NOISE_SAMPLES, NOISE_LEVEL, SHAP_SAMPLES, SEED = 50, 16, 0.15, 16, 0


def reduce_channels(attr: torch.Tensor, reduce: str) -> torch.Tensor:
    """``(B, C, *spatial)`` attributions -> ``(B, *spatial)`` map: ``"positive"``
    ``ReLU(sum_c a_c)``, ``"abs"`` ``sum_c |a_c|``, ``"max_abs"`` ``max_c |a_c|``."""
    a = attr.float()
    if reduce == "positive":
        return a.sum(dim=1).relu()
    if reduce == "abs":
        return a.abs().sum(dim=1)
    if reduce == "max_abs":
        return a.abs().amax(dim=1)
    raise ValueError(f"reduce must be one of {list(REDUCTIONS)}, got {reduce!r}")


def captum_attr() -> Any:
    """``captum.attr``, or an ImportError saying how to install it."""
    try:
        import captum.attr
    except ImportError as err:
        raise ImportError(
            "The attribution methods (integrated_gradients, smoothgrad, vargrad, occlusion, "
            "gradient_shap, deeplift, saliency) call captum, which is not installed: "
            "pip install 'captum>=0.7' (or lightning-cam[integrations])."
        ) from err
    return captum.attr


def _parts(job: LayerPass, method: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    if job.logits_model is None or job.images is None:
        raise ValueError(
            f"method {method!r} attributes the input: it needs the images and the model's "
            "class scores, which this surface does not provide."
        )
    ids = job.require_class_ids(method)
    x = job.images.detach().clone().requires_grad_(True)  # captum differentiates it
    return job.logits_model, x, ids.to(x.device)


def _groups(n: int, per_image: int, job: LayerPass) -> Iterator[slice]:
    """Row slices of ``n`` images so that ``rows * per_image`` inputs fit one forward."""
    step = max(1, chunk_size(job.max_batch, job.images[0]) // max(1, per_image))  # type: ignore[index]
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """torch's and numpy's global generators seeded with ``seed`` (captum draws GradientShap's
    points with ``np.random``), both restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(state)


def _per_image(
    x: torch.Tensor, ids: torch.Tensor, seed: int, fn: Callable[[torch.Tensor, torch.Tensor],
                                                                 torch.Tensor],
) -> torch.Tensor:
    """``fn(x[i:i+1], ids[i:i+1])`` per image, each from the generator seeded with ``seed``."""
    outs = []
    for i in range(x.shape[0]):
        with _seeded(seed, x.device):
            outs.append(fn(x[i : i + 1], ids[i : i + 1]))
    return torch.cat(outs)


def _sigma(x: torch.Tensor, level: float) -> float:
    """The noise's standard deviation: ``level`` times the image's value range."""
    return float(level * (x.detach().max() - x.detach().min()).clamp(min=1e-12))


def saliency_map(job: LayerPass, reduce: str = "abs") -> torch.Tensor:
    """Saliency (Simonyan et al., "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR workshops 2014), captum's ``Saliency``.

    ``a = |d y^c / d x|`` (``abs=True``); the map ``sum_c a_c`` (``reduce``, see
    :func:`reduce_channels`). For a linear model ``y = W x + b`` it is ``sum_c |W[c]|``.
    """
    model, x, ids = _parts(job, "saliency")
    sal = captum_attr().Saliency(model)
    out = [sal.attribute(x[s], target=ids[s], abs=True) for s in _groups(len(x), 1, job)]
    return reduce_channels(torch.cat(out), reduce)


def integrated_gradients_map(
    job: LayerPass, baseline: float = 0.0, n_steps: int = IG_STEPS, reduce: str = "positive"
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., "Axiomatic Attribution for Deep Networks",
    ICML 2017), captum's ``IntegratedGradients`` (Gauss-Legendre, ``n_steps`` points).

    ``a_i = (x_i - x'_i) * integral_0^1 d y^c(x' + t (x - x')) / d x_i dt`` from the constant
    baseline ``x' = baseline`` (0: the zero input, the mean colour of a normalised model);
    completeness: ``sum_i a_i = y^c(x) - y^c(x')``. Map: ``ReLU(sum_c a_c)``.
    """
    model, x, ids = _parts(job, "integrated_gradients")
    ig = captum_attr().IntegratedGradients(model)
    step = chunk_size(job.max_batch, x[0])
    out = [
        ig.attribute(x[s], baselines=baseline, target=ids[s], n_steps=n_steps,
                     internal_batch_size=step)
        for s in _groups(len(x), 1, job)
    ]
    return reduce_channels(torch.cat(out), reduce)


def _noise_tunnel(
    job: LayerPass, method: str, nt_type: str, samples: int, level: float, seed: int,
    reduce: str,
) -> torch.Tensor:
    model, x, ids = _parts(job, method)
    ca = captum_attr()
    nt = ca.NoiseTunnel(ca.Saliency(model))
    batch = max(1, chunk_size(job.max_batch, x[0]))

    def one(xi: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        return nt.attribute(
            xi, nt_type=nt_type, nt_samples=samples, nt_samples_batch_size=min(samples, batch),
            stdevs=_sigma(xi, level), target=ci, abs=False,
        )

    return reduce_channels(_per_image(x, ids, seed, one), reduce)


def smoothgrad_map(
    job: LayerPass, nt_samples: int = NOISE_SAMPLES, noise_level: float = NOISE_LEVEL,
    seed: int = SEED, reduce: str = "abs",
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., "SmoothGrad: removing noise by adding noise", arXiv
    1706.03825, 2017), captum's ``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"``.

    ``a = 1/n sum_k d y^c(x + e_k) / dx``, ``e_k ~ N(0, sigma^2)``, ``sigma = noise_level *
    (max x - min x)`` per image, ``n = nt_samples``; map ``sum_c |a_c|``.
    """
    return _noise_tunnel(job, "smoothgrad", "smoothgrad", nt_samples, noise_level, seed, reduce)


def vargrad_map(
    job: LayerPass, nt_samples: int = NOISE_SAMPLES, noise_level: float = NOISE_LEVEL,
    seed: int = SEED, reduce: str = "abs",
) -> torch.Tensor:
    """VarGrad (Adebayo et al., "Local Explanation Methods for Deep Neural Networks Lack
    Sensitivity to Parameter Values", ICLR workshops 2018), captum's ``NoiseTunnel(Saliency)``
    with ``nt_type="vargrad"``.

    ``a = Var_k d y^c(x + e_k) / dx`` (the noisy gradients' variance, SmoothGrad's noise);
    map ``sum_c a_c``.
    """
    return _noise_tunnel(job, "vargrad", "vargrad", nt_samples, noise_level, seed, reduce)


def occlusion_map(
    job: LayerPass, window: int | None = None, stride: int | None = None,
    baseline: float = 0.0, reduce: str = "positive",
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014), captum's ``Occlusion``.

    A ``window x window`` patch of all channels (default ``max(1, min(H, W) // 8)``) slides by
    ``stride`` (default half the window); each input element gets the mean of
    ``y^c(x) - y^c(x with the patch set to baseline)`` over the patches covering it. Map:
    ``ReLU(sum_c a_c)``.
    """
    model, x, ids = _parts(job, "occlusion")
    c, *spatial = x.shape[1:]
    w = max(1, min(spatial) // 8) if window is None else int(window)
    s = max(1, w // 2) if stride is None else int(stride)
    if w < 1 or s < 1:
        raise ValueError(f"occlusion window and stride must be >= 1, got {w} and {s}")
    occ = captum_attr().Occlusion(model)
    out = []
    for rows in _groups(len(x), 1, job):
        per = max(1, chunk_size(job.max_batch, x[0]) // (rows.stop - rows.start))
        out.append(occ.attribute(
            x[rows], sliding_window_shapes=(c, *(w,) * len(spatial)), strides=(c, *(s,) *
                                                                                len(spatial)),
            baselines=baseline, target=ids[rows], perturbations_per_eval=per,
        ))
    return reduce_channels(torch.cat(out), reduce)


def shap_baselines(x: torch.Tensor) -> torch.Tensor:
    """GradientShap's default baseline distribution for one image ``(1, C, H, W)``: the zero
    image and the image's per-channel mean colour, ``(2, C, H, W)``."""
    mean = x.mean(dim=tuple(range(2, x.dim())), keepdim=True).expand_as(x)
    return torch.cat([torch.zeros_like(x), mean])


def gradient_shap_map(
    job: LayerPass, n_samples: int = SHAP_SAMPLES, noise_level: float = 0.0,
    seed: int = SEED, reduce: str = "positive",
) -> torch.Tensor:
    """GradientShap (Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions",
    NeurIPS 2017), captum's ``GradientShap``.

    The expected gradients ``a = E[(x - x') * d y^c(x' + t (x - x')) / dx]`` over ``n_samples``
    draws of a baseline ``x'`` from :func:`shap_baselines` (zero image, mean colour) and
    ``t ~ U(0, 1)`` (input noise ``noise_level`` times the image's range, 0 by default).
    Map: ``ReLU(sum_c a_c)``. With ``n_samples`` above ``max_batch``, the samples are drawn in
    calls of ``max_batch`` (the same estimate of the expectation from other draws).
    """
    model, x, ids = _parts(job, "gradient_shap")
    gs = captum_attr().GradientShap(model)
    step = max(1, chunk_size(job.max_batch, x[0]))

    def one(xi: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        # captum draws all n_samples in one forward: more than max_batch are split into
        # calls of at most max_batch samples, averaged by their counts (the same expectation,
        # other draws of the same seeded stream).
        total = None
        for start in range(0, n_samples, step):
            k = min(step, n_samples - start)
            part = gs.attribute(xi, baselines=shap_baselines(xi), n_samples=k, target=ci,
                                stdevs=_sigma(xi, noise_level) if noise_level else 0.0) * k
            total = part if total is None else total + part
        assert total is not None
        return total / n_samples

    return reduce_channels(_per_image(x, ids, seed, one), reduce)


def _captum_marks(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, k) for m in model.modules() for k in ("input", "output") if k in vars(m)]


@contextlib.contextmanager
def _unpool_allowed() -> Iterator[None]:
    """captum's DeepLift max-pool rule calls ``max_unpool``, which torch has no deterministic
    kernel for: under ``torch.use_deterministic_algorithms(True)`` (Lightning's
    ``deterministic=True``) it would raise after the training time was spent. For that call the
    mode is ``warn_only`` (torch then warns once that the op may not be deterministic, on CUDA
    where overlapping windows race), restored after."""
    strict = (torch.are_deterministic_algorithms_enabled()
              and not torch.is_deterministic_algorithms_warn_only_enabled())
    if strict:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if strict:
            torch.use_deterministic_algorithms(True, warn_only=False)


def deeplift_map(job: LayerPass, baseline: float = 0.0, reduce: str = "positive") -> torch.Tensor:
    """DeepLift (Shrikumar et al., "Learning Important Features Through Propagating Activation
    Differences", ICML 2017), captum's ``DeepLift`` (Rescale rule).

    ``a_i = (x_i - x'_i) * m_i`` with the multipliers ``m`` back-propagated by the Rescale rule
    through the nonlinearity *modules* (``nn.ReLU``, ``nn.Sigmoid`` ... called once per forward;
    functional ``F.relu`` gets the plain gradient, as captum documents); completeness
    ``sum_i a_i = y^c(x) - y^c(x')`` on such models. Map: ``ReLU(sum_c a_c)``. captum's hooks
    and the ``input`` / ``output`` attributes it sets on modules are removed, also when the
    model raises.
    """
    model, x, ids = _parts(job, "deeplift")
    before = {(id(m), k) for m, k in _captum_marks(model)}
    dl = captum_attr().DeepLift(model)
    out = []
    try:
        with warnings.catch_warnings(), _unpool_allowed():
            warnings.filterwarnings("ignore", message=r"(?s).*hooks and attributes will be remov")
            warnings.filterwarnings("ignore", message=r"(?s).*inplace")
            for rows in _groups(len(x), 2, job):
                out.append(dl.attribute(x[rows], baselines=baseline, target=ids[rows]))
    except RuntimeError as err:
        if "used more than once" not in str(err):
            raise
        raise ValueError(
            "deeplift cannot explain this model: a nonlinearity module is called more than once "
            "per forward (e.g. the one nn.ReLU of each torchvision ResNet block), where "
            "captum's DeepLift has no Rescale multiplier. Use integrated_gradients or "
            "gradient_shap (the same completeness), or a model with one module per call."
        ) from err
    finally:
        for m, k in _captum_marks(model):
            if (id(m), k) not in before:
                delattr(m, k)
    return reduce_channels(torch.cat(out), reduce)
