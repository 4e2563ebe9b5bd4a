"""Benchmarks: lightning-cam side by side with pytorch-grad-cam, captum and torchcam, on CPU.

Every implementation gets the same model (torchvision, ``weights=None``, eval mode; a deep copy
per library object so that one library's persistent hooks never run inside another's timing),
the same target layer, the same seeded inputs and the same per-sample class ids. Cases are timed
in one process, in interleaved rounds (A B C ... A B C ...) after warm-up rounds; each case
reports its median, its inter-quartile range, its ratio to a plain no-grad forward pass (the
physical floor) and, for the peers, how many times slower than lightning-cam they are on the same
method. A correctness column gives the largest difference between each peer's normalised maps and
ours. ``--memory`` adds the peak resident memory above the model-and-input baseline, one
subprocess per measurement.

Run (from the repository root)::

    pip install -e ".[bench]"          # grad-cam, captum, torchcam, psutil
    python benchmarks/run.py                       # full: resnet50 + mobilenet_v2, batch 8, 224 px
    python benchmarks/run.py --memory              # ... plus peak memory (subprocesses)
    python benchmarks/run.py --quick               # a fast smoke configuration
    python benchmarks/run.py --profile ours.gradcam  # torch.profiler tables of one case vs floor

The markdown is written to ``--out`` (default ``benchmarks/results.md``) and printed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("lightning_cam") is None:  # run from a checkout, not installed
    sys.path.insert(0, str(REPO))

from lightning_cam.methods import METHODS  # noqa: E402  (after the path set-up above)

#: Every registered gradient method (one forward + one backward shared by all of them).
GRADIENT = tuple(n for n, m in METHODS.items() if m.needs_backward)
#: Methods timed per model in the main table (perturbation methods: their own section).
SINGLE_PASS = tuple(n for n, m in METHODS.items() if not m.extra_passes)

# Target layer per model; the same for every implementation.
LAYERS = {
    "resnet18": "layer4",
    "resnet50": "layer4",
    "mobilenet_v2": "features",
    "vgg16": "features",
    "densenet121": "features",
    # Transformers: the layers the libraries recommend (and lightning-cam's defaults).
    "vit_b_16": "encoder.layers.encoder_layer_11.ln_1",
    "swin_t": "features.7",
}


def _pgc_reshape(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """pytorch-grad-cam's ``reshape_transform`` recipes (its ViT and Swin tutorials), for
    torchvision's ViT (tokens: class token dropped, 16 x 16 patches) and Swin (channels-last)."""
    if ctx.name.startswith("vit_"):
        h, w = ctx.size[0] // 16, ctx.size[1] // 16

        def vit(t: torch.Tensor) -> torch.Tensor:
            return t[:, 1:, :].reshape(t.size(0), h, w, t.size(2)).transpose(2, 3).transpose(1, 2)

        return vit
    if ctx.name.startswith("swin_"):
        return lambda t: t.transpose(2, 3).transpose(1, 2)
    return None

METHOD_TITLES = {
    "floor_nograd": "floor: forward, no grad",
    "floor_grad": "floor: forward + autograd.grad to the layer",
    "floor_2bwd": "floor: forward + 2 backwards to the input",
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "both": "Grad-CAM + Grad-CAM++",
    **{n: m.title for n, m in METHODS.items()},
    "allgrad": f"all {len(GRADIENT)} gradient methods, one call",
    "gbp": "guided backprop",
    "ggc": "guided Grad-CAM",
}
GUIDED = ("gbp", "ggc")
OURS = "lightning-cam"
OURS_MB = "lightning-cam, max_batch=1"  # the memory-bounded mode: one image per pass
PEERS = ("pytorch-grad-cam", "captum", "torchcam")
PEER_PACKAGES = {"pytorch-grad-cam": "grad-cam", "captum": "captum", "torchcam": "torchcam"}


# --------------------------------------------------------------------------- context and cases
@dataclass
class Context:
    """One model's benchmark inputs, shared by every case.

    Attributes:
        name: Model name (torchvision).
        model: The reference model (eval mode); cases take deep copies via :meth:`model_for`.
        layer: Dotted name of the target layer.
        x: Inputs ``(B, 3, S, S)``.
        ids: Class id per sample.
    """

    name: str
    model: nn.Module
    layer: str
    x: torch.Tensor
    ids: list[int]
    _copies: dict[str, nn.Module] = field(default_factory=dict)
    cleanup: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def ids_t(self) -> torch.Tensor:
        return torch.tensor(self.ids, dtype=torch.long)

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.x.shape[2]), int(self.x.shape[3]))

    def model_for(self, owner: str) -> nn.Module:
        """A deep copy of the model owned by ``owner`` (created once)."""
        if owner not in self._copies:
            self._copies[owner] = copy.deepcopy(self.model).eval()
        return self._copies[owner]

    def close(self) -> None:
        for fn in self.cleanup:
            with contextlib.suppress(Exception):
                fn()
        self.cleanup.clear()
        self._copies.clear()


def make_context(name: str, batch: int, size: int, layer: str | None = None) -> Context:
    """Build a seeded torchvision model (``weights=None``), seeded inputs and fixed targets."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    if name.startswith("vit_"):  # torchvision zero-initialises ViT's head: no gradient at all
        nn.init.normal_(model.heads.head.weight, std=0.02)
    return context_for(model, name, batch, size, layer)


def context_for(
    model: nn.Module, name: str, batch: int, size: int, layer: str | None = None
) -> Context:
    """A :class:`Context` for any classifier (also used by the smoke test on a tiny model)."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(batch, 3, size, size, generator=gen)
    with torch.no_grad():
        num_classes = int(model.eval()(x[:1]).shape[1])
    ids = [(211 * i + 7) % num_classes for i in range(batch)]
    if layer is None:
        layer = LAYERS.get(name)
    if layer is None:
        from lightning_cam import default_layer

        layer = default_layer(model, x)
    return Context(name=name, model=model, layer=layer, x=x, ids=ids)


Runner = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    """One timed call.

    Attributes:
        key: Unique id, ``impl.method`` (``ours.gradcam``, ``pgc.gbp`` ...).
        method: Key of :data:`METHOD_TITLES`.
        impl: ``floor``, ``lightning-cam`` or a peer name.
        call: What is called, for the table.
        setup: ``ctx -> runner``; runs outside the timed region (constructs the peer objects
            once, as their documentation does).
        maps: ``output -> {method: tensor}`` for the correctness column: CAMs ``(B, h, w)``,
            guided gradients ``(B, 3, H, W)``.
        module: Import name the case needs (skipped when missing).
    """

    key: str
    method: str
    impl: str
    call: str
    setup: Callable[[Context], Runner]
    maps: Callable[[Any], dict[str, torch.Tensor]] | None = None
    module: str | None = None


def _layer(ctx: Context, model: nn.Module) -> nn.Module:
    return model.get_submodule(ctx.layer)


def _scores(out: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return out.gather(1, ids[:, None]).sum()


# Floors -------------------------------------------------------------------------------------
def _floor_nograd(ctx: Context) -> Runner:
    model = ctx.model_for("floor")

    def run() -> Any:
        with torch.no_grad():
            return model(ctx.x)

    return run


def _floor_grad(ctx: Context) -> Runner:
    model, ids = ctx.model_for("floor"), ctx.ids_t
    layer = _layer(ctx, model)

    def run() -> Any:
        acts: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: acts.append(out))
        try:
            out = model(ctx.x)
        finally:
            handle.remove()
        return torch.autograd.grad(_scores(out, ids), acts[0])[0]

    return run


def _floor_2bwd(ctx: Context) -> Runner:
    model, ids = ctx.model_for("floor"), ctx.ids_t

    def run() -> Any:
        x = ctx.x.detach().requires_grad_(True)
        score = _scores(model(x), ids)
        torch.autograd.grad(score, x, retain_graph=True)
        return torch.autograd.grad(score, x)[0]

    return run


# lightning-cam ------------------------------------------------------------------------------
def _ours(kind: str) -> Callable[[Context], Runner]:
    def setup(ctx: Context) -> Runner:
        import lightning_cam as lc

        model, ids = ctx.model_for(OURS), ctx.ids_t
        if kind == "both":
            return lambda: lc.explain(
                model, ctx.x, ctx.layer, methods=("gradcam", "gradcam++"), target=ids
            )
        if kind == "allgrad":
            return lambda: lc.explain(model, ctx.x, ctx.layer, methods=GRADIENT, target=ids)
        if kind in METHODS:  # the class generated from the registry
            cam = getattr(lc, METHODS[kind].class_name)(model, ctx.layer)
            return lambda: cam(ctx.x, ids)
        obj: Any = {
            "gradcam": lambda: lc.GradCAM(model, ctx.layer),
            "gradcam++": lambda: lc.GradCAMPlusPlus(model, ctx.layer),
            "gbp": lambda: lc.GuidedBackprop(model),
            "ggc": lambda: lc.GuidedGradCAM(model, ctx.layer, "gradcam"),
            "gbp.mb1": lambda: lc.GuidedBackprop(model, max_batch=1),
            "ggc.mb1": lambda: lc.GuidedGradCAM(model, ctx.layer, "gradcam", max_batch=1),
        }[kind]()
        return lambda: obj(ctx.x, ids)

    return setup


def _ours_maps(kind: str) -> Callable[[Any], dict[str, torch.Tensor]]:
    if kind in ("both", "allgrad"):
        names = ("gradcam", "gradcam++") if kind == "both" else GRADIENT
        return lambda out: {m: out.cams[m][out.layers[0]] for m in names}
    return lambda out: {kind: out}


# pytorch-grad-cam ---------------------------------------------------------------------------
def _pgc_targets(ctx: Context) -> list[Any]:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(c) for c in ctx.ids]


def _pgc_cam(cls_name: str) -> Callable[[Context], Runner]:
    def setup(ctx: Context) -> Runner:
        import pytorch_grad_cam

        model = ctx.model_for(f"pgc.{cls_name}")
        cam = getattr(pytorch_grad_cam, cls_name)(
            model=model, target_layers=[_layer(ctx, model)], reshape_transform=_pgc_reshape(ctx)
        )
        ctx.cleanup.append(cam.activations_and_grads.release)

        def run() -> Any:
            out = cam(input_tensor=ctx.x, targets=_pgc_targets(ctx))
            # It keeps the last output (and, for methods without a backward, the whole
            # forward's graph) until the next call: drop it, or ten peer objects hold GBs.
            cam.outputs = None
            return out

        return run

    return setup


def _pgc_guided(ctx: Context, gb: Any) -> np.ndarray:
    # One image per call: GuidedBackpropReLUModel differentiates output[0, target_category].
    # A fresh clone per call, since it sets requires_grad on its input and accumulates .grad.
    x = ctx.x
    return np.stack([gb(x[i : i + 1].clone(), target_category=c) for i, c in enumerate(ctx.ids)])


def _pgc_gbp(ctx: Context) -> Runner:
    from pytorch_grad_cam import GuidedBackpropReLUModel

    gb = GuidedBackpropReLUModel(model=ctx.model_for("pgc.gbp"), device=None)
    return lambda: _pgc_guided(ctx, gb)


def _pgc_ggc(ctx: Context) -> Runner:
    # As in pytorch-grad-cam's README: a GradCAM and a GuidedBackpropReLUModel on the same model,
    # guided Grad-CAM = cv2.merge([cam] * 3) * gb (deprocess_image, a display step, left out).
    from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel

    model = ctx.model_for("pgc.ggc")
    cam = GradCAM(model=model, target_layers=[_layer(ctx, model)])
    ctx.cleanup.append(cam.activations_and_grads.release)
    gb = GuidedBackpropReLUModel(model=model, device=None)

    def run() -> Any:
        masks = cam(input_tensor=ctx.x, targets=_pgc_targets(ctx))
        return masks[..., None] * _pgc_guided(ctx, gb)

    return run


def _hwc(out: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(out)).permute(0, 3, 1, 2)


# captum -------------------------------------------------------------------------------------
def _captum_gradcam(ctx: Context) -> Runner:
    from captum.attr import LayerAttribution, LayerGradCam

    model = ctx.model_for("captum")
    lgc, ids = LayerGradCam(model, _layer(ctx, model)), ctx.ids_t

    def run() -> Any:
        attr = lgc.attribute(ctx.x, target=ids, relu_attributions=True)
        return LayerAttribution.interpolate(attr, ctx.size, interpolate_mode="bilinear")

    return run


def _captum_gbp(ctx: Context) -> Runner:
    from captum.attr import GuidedBackprop

    gbp, ids = GuidedBackprop(ctx.model_for("captum")), ctx.ids_t
    return lambda: gbp.attribute(ctx.x, target=ids)


def _captum_ggc(ctx: Context) -> Runner:
    from captum.attr import GuidedGradCam

    model = ctx.model_for("captum")
    ggc, ids = GuidedGradCam(model, _layer(ctx, model)), ctx.ids_t
    # captum's default interpolate_mode is "nearest"; bilinear, as the paper and everyone else.
    return lambda: ggc.attribute(ctx.x, target=ids, interpolate_mode="bilinear")


# torchcam -----------------------------------------------------------------------------------
def _torchcam(cls_name: str, no_grad: bool = False) -> Callable[[Context], Runner]:
    def setup(ctx: Context) -> Runner:
        import torchcam.methods

        model = ctx.model_for(f"torchcam.{cls_name}")
        # The extractor's hooks stay on the model until remove_hooks(); the forward must run
        # with it attached, so construction is outside the timed region, the forward inside.
        extractor = getattr(torchcam.methods, cls_name)(model, target_layer=ctx.layer)
        ctx.cleanup.append(extractor.remove_hooks)

        def run() -> Any:
            with torch.no_grad() if no_grad else contextlib.nullcontext():
                scores = model(ctx.x)  # CAM: documented under inference mode, no graph
            (cam,) = extractor(class_idx=list(ctx.ids), scores=scores)
            # Its hooks keep the activations (and so the forward's graph) until the next call.
            extractor.reset_hooks()
            return F.interpolate(cam[:, None], ctx.size, mode="bilinear", align_corners=False)

        return run

    return setup


def _numpy_map(method: str, out: np.ndarray) -> dict[str, torch.Tensor]:
    return {method: torch.from_numpy(out)}


def _first_channel(method: str) -> Callable[[Any], dict[str, torch.Tensor]]:
    return lambda out: {method: torch.as_tensor(out)[:, 0]}


CASES: list[Case] = [
    Case("floor.nograd", "floor_nograd", "floor", "`with torch.no_grad(): model(x)`",
         _floor_nograd),
    Case("floor.grad", "floor_grad", "floor", "forward + `autograd.grad(score, layer_out)`",
         _floor_grad),
    Case("floor.2bwd", "floor_2bwd", "floor", "forward + 2x `autograd.grad(score, x)`",
         _floor_2bwd),
    Case("ours.gradcam", "gradcam", OURS, "`GradCAM(model, layer)(x, ids)`", _ours("gradcam"),
         _ours_maps("gradcam")),
    Case("ours.gradcam++", "gradcam++", OURS, "`GradCAMPlusPlus(model, layer)(x, ids)`",
         _ours("gradcam++"), _ours_maps("gradcam++")),
    Case("ours.both", "both", OURS, "`explain(model, x, layer, ('gradcam', 'gradcam++'))`",
         _ours("both"), _ours_maps("both")),
    Case("ours.gbp", "gbp", OURS, "`GuidedBackprop(model)(x, ids)`", _ours("gbp"),
         _ours_maps("gbp")),
    Case("ours.ggc", "ggc", OURS, "`GuidedGradCAM(model, layer)(x, ids)`", _ours("ggc"),
         _ours_maps("ggc")),
    Case("ours.gbp.mb1", "gbp", OURS_MB, "`GuidedBackprop(model, max_batch=1)(x, ids)`",
         _ours("gbp.mb1"), _ours_maps("gbp")),
    Case("ours.ggc.mb1", "ggc", OURS_MB, "`GuidedGradCAM(model, layer, max_batch=1)(x, ids)`",
         _ours("ggc.mb1"), _ours_maps("ggc")),
    Case("pgc.gradcam", "gradcam", "pytorch-grad-cam", "`GradCAM(model, [layer])(x, targets)`",
         _pgc_cam("GradCAM"), lambda out: {"gradcam": torch.from_numpy(out)},
         "pytorch_grad_cam"),
    Case("pgc.gradcam++", "gradcam++", "pytorch-grad-cam",
         "`GradCAMPlusPlus(model, [layer])(x, targets)`", _pgc_cam("GradCAMPlusPlus"),
         lambda out: {"gradcam++": torch.from_numpy(out)}, "pytorch_grad_cam"),
    Case("pgc.gbp", "gbp", "pytorch-grad-cam", "`GuidedBackpropReLUModel(model)` per image",
         _pgc_gbp, lambda out: {"gbp": _hwc(out)}, "pytorch_grad_cam"),
    Case("pgc.ggc", "ggc", "pytorch-grad-cam", "README: `GradCAM` mask x guided backprop",
         _pgc_ggc, lambda out: {"ggc": _hwc(out)}, "pytorch_grad_cam"),
    Case("captum.gradcam", "gradcam", "captum",
         "`LayerGradCam(relu_attributions=True)` + `interpolate`", _captum_gradcam,
         _first_channel("gradcam"), "captum"),
    Case("captum.gbp", "gbp", "captum", "`GuidedBackprop(model).attribute`", _captum_gbp,
         lambda out: {"gbp": out}, "captum"),
    Case("captum.ggc", "ggc", "captum", "`GuidedGradCam(model, layer).attribute`", _captum_ggc,
         lambda out: {"ggc": out}, "captum"),
    Case("torchcam.gradcam", "gradcam", "torchcam", "`GradCAM(model, layer)`; forward + call",
         _torchcam("GradCAM"), _first_channel("gradcam"), "torchcam"),
    Case("torchcam.gradcam++", "gradcam++", "torchcam", "`GradCAMpp(model, layer)`; forward + call",
         _torchcam("GradCAMpp"), _first_channel("gradcam++"), "torchcam"),
]
# Every other single-pass method of the registry, and all gradient methods from one call.
_INSERT = next(i for i, c in enumerate(CASES) if c.key == "ours.both") + 1
CASES[_INSERT:_INSERT] = [
    *(Case(f"ours.{n}", n, OURS, f"`{METHODS[n].class_name}(model, layer)(x, ids)`", _ours(n),
           _ours_maps(n)) for n in SINGLE_PASS if n not in ("gradcam", "gradcam++")),
    Case("ours.allgrad", "allgrad", OURS, "`explain(model, x, layer, methods=<all gradient>)`",
         _ours("allgrad"), _ours_maps("allgrad")),
]
# Their peers: pytorch-grad-cam and torchcam classes of the same method.
_PGC_CLASSES = {"hirescam": "HiResCAM", "gradcam-elementwise": "GradCAMElementWise",
                "xgradcam": "XGradCAM", "layercam": "LayerCAM", "eigengradcam": "EigenGradCAM",
                "eigencam": "EigenCAM"}
_TORCHCAM_CLASSES = {"xgradcam": "XGradCAM", "layercam": "LayerCAM", "cam": "CAM"}
CASES += [
    *(Case(f"pgc.{n}", n, "pytorch-grad-cam", f"`{c}(model, [layer])(x, targets)`", _pgc_cam(c),
           functools.partial(_numpy_map, n), "pytorch_grad_cam")
      for n, c in _PGC_CLASSES.items()),
    *(Case(f"torchcam.{n}", n, "torchcam", f"`{c}(model, layer)`; forward + call"
           + (" (forward under no_grad)" if n == "cam" else ""), _torchcam(c, n == "cam"),
           _first_channel(n), "torchcam") for n, c in _TORCHCAM_CLASSES.items()),
]
CASE_BY_KEY = {c.key: c for c in CASES}
REFERENCE = {"gbp": "ours.gbp", "ggc": "ours.ggc", **{n: f"ours.{n}" for n in SINGLE_PASS}}

# Why a peer's maps differ from ours (shown under the table for the peers measured).
NOTES = {
    "pgc.gradcam": "pytorch-grad-cam min-max normalises at the layer's resolution (eps 1e-7), "
    "resizes with `cv2.resize` (INTER_LINEAR) and normalises again; it runs `loss.backward()`, "
    "so it also computes (and leaves in `.grad`) every parameter gradient.",
    "pgc.gradcam++": "pytorch-grad-cam's Grad-CAM++ adds eps 1e-6 to alpha's denominator and sets "
    "alpha to 0 where the gradient is 0: the same eq. 19 up to rounding.",
    "pgc.gbp": "pytorch-grad-cam's `GuidedBackpropReLUModel` swaps `nn.ReLU` modules only "
    "(`ReLU6`, `F.relu` keep their ordinary gradient: on mobilenet_v2, whose activations are all "
    "`ReLU6`, its result is the plain input gradient), explains one image per call "
    "(`output[0, target]`: B calls of batch 1, hence its small peak memory and its time), "
    "computes every parameter gradient, and puts the modules back as new non-inplace "
    "`nn.ReLU()`.",
    "pgc.ggc": "pytorch-grad-cam guided Grad-CAM = its Grad-CAM mask x its guided backprop: "
    "inherits both notes above.",
    "captum.gradcam": "captum returns the un-normalised map at the layer's resolution (ReLU only "
    "with `relu_attributions=True`); normalised here for the comparison.",
    "captum.gbp": "captum's `GuidedBackprop` hooks the backward of `nn.ReLU` modules only "
    "(`ReLU6`/`F.relu` not guided: on mobilenet_v2 it returns the plain input gradient).",
    "captum.ggc": "captum multiplies guided backprop by the *raw* (not min-max normalised) CAM, "
    "default `interpolate_mode='nearest'` (we pass 'bilinear'); products compared after "
    "dividing each sample by its max |value|, so they differ where a map's minimum is not 0; "
    "inherits the `nn.ReLU`-only guided backprop.",
    "torchcam.gradcam": "torchcam normalises at the layer's resolution (eps 1e-8); upsampled "
    "(bilinear) in the timed call, as the others return input-sized maps.",
    **{f"pgc.{n}": "pytorch-grad-cam: the same formula; min-max with eps 1e-7 at the layer's "
       "resolution, `cv2.resize`, min-max again (as for Grad-CAM)." for n in
       ("hirescam", "gradcam-elementwise", "layercam")},
    "pgc.xgradcam": "pytorch-grad-cam adds eps 1e-7 to sum(A) (we divide exactly, 0 for a channel "
    "whose activations sum to 0); otherwise as for Grad-CAM. The eps matters where channel sums "
    "are tiny: in the untrained mobilenet_v2, 2,357 of the 2,560 (image, channel) sums at "
    "`features` are below 1e-5, which changes those weights by up to ~75 % and the map by up to "
    "0.17 (0.54 after its double min-max and cv2 resize).",
    "pgc.eigencam": "pytorch-grad-cam keeps LAPACK's arbitrary sign of the first singular vector: "
    "on a sample where it disagrees with our convention (projection correlated with sum_k A^k) "
    "its map is the ReLU of the *negated* projection (differences up to 1); elsewhere equal. "
    "NumPy SVD per sample (`full_matrices=True`).",
    "pgc.eigengradcam": "as for Eigen-CAM, on g*A (our sign: correlated with sum_k g*A, the "
    "HiRes-CAM map).",
    "torchcam.xgradcam": "torchcam adds eps 1e-8 to sum(A) and to the min-max denominator (see "
    "`pgc.xgradcam` for why an eps is felt on untrained mobilenet_v2).",
    "torchcam.layercam": "torchcam: the same formula, eps 1e-8 in the min-max.",
    "torchcam.cam": "torchcam: the same (no ReLU, as the CAM paper); eps 1e-8 in the min-max; "
    "finds the linear layer by type (refuses models with several), where we check that the "
    "layer's pooled output reproduces the logits.",
    "torchcam.gradcam++": "torchcam 0.5's `GradCAMpp` divides `alpha[mask]` in place, which "
    "divides a copy (boolean indexing copies): its weights are sum(g^2 * relu(g)), not eq. 19's "
    "alpha-weighted sum; its denominator would also sum A*g^3 over the map instead of "
    "sum(A) * g^3.",
}


# --------------------------------------------------------------------------- correctness
def _minmax(t: torch.Tensor) -> torch.Tensor:
    flat = t.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    rng = flat.max(dim=1, keepdim=True).values - lo
    safe = torch.where(rng > 0, rng, torch.ones_like(rng))
    return torch.where(rng > 0, (flat - lo) / safe, torch.zeros_like(flat)).view_as(t)


def normalise_map(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CAMs ``(B, h, w)`` -> bilinear to ``size`` (align_corners=False) -> min-max per sample."""
    t = torch.as_tensor(t).detach().float()
    if tuple(t.shape[1:]) != tuple(size):
        t = F.interpolate(t[:, None], size, mode="bilinear", align_corners=False)[:, 0]
    return _minmax(t)


def normalise_guided(t: torch.Tensor) -> torch.Tensor:
    """Guided gradients ``(B, C, H, W)`` divided by each sample's max |value|."""
    t = torch.as_tensor(t).detach().float()
    peak = t.abs().flatten(1).max(dim=1).values.view(-1, *([1] * (t.dim() - 1)))
    return torch.where(peak > 0, t / torch.where(peak > 0, peak, torch.ones_like(peak)), 0.0)


def compare(method: str, ours: torch.Tensor, theirs: torch.Tensor, size: tuple[int, int]) -> dict:
    """Max and mean absolute difference after the common normalisation."""
    if method in GUIDED:
        diff = (normalise_guided(ours) - normalise_guided(theirs)).abs()
    else:
        diff = (normalise_map(ours, size) - normalise_map(theirs, size)).abs()
    return {"max": float(diff.max()), "mean": float(diff.mean())}


# --------------------------------------------------------------------------- timing
def available(case: Case) -> bool:
    return case.module is None or importlib.util.find_spec(case.module) is not None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the peers' warnings (captum: 'required_grads has been set automatically')."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _iqr(ts: list[float]) -> float:
    if len(ts) < 2:
        return 0.0
    q = statistics.quantiles(ts, n=4, method="inclusive")
    return q[2] - q[0]


def run_model(ctx: Context, cases: list[Case], reps: int, warmup: int) -> list[dict]:
    """Correctness pass (also the first warm-up round), warm-up, then interleaved timed rounds.

    Returns:
        One row per case: key, method, impl, call, times (s), median, iqr, diff.
    """
    rows: list[dict] = []
    runners: dict[str, Runner] = {}
    with quiet():
        for case in cases:
            row: dict[str, Any] = {"key": case.key, "method": case.method, "impl": case.impl,
                                   "call": case.call}
            rows.append(row)
            if not available(case):
                row["skip"] = f"`{case.module}` not installed"
                continue
            runners[case.key] = case.setup(ctx)
        # Round 1 (warm-up): outputs for the correctness column.
        maps: dict[str, dict[str, torch.Tensor]] = {}
        for row in rows:
            if row["key"] in runners:
                out = runners[row["key"]]()
                case = CASE_BY_KEY[row["key"]]
                if case.maps is not None:
                    maps[case.key] = {m: torch.as_tensor(v).detach() for m, v in
                                      case.maps(out).items()}
                del out
        for row in rows:
            if row["key"] not in maps:
                continue
            diffs = {}
            for m, theirs in maps[row["key"]].items():
                ref = REFERENCE[m]
                if ref != row["key"] and ref in maps:
                    diffs[m] = compare(m, maps[ref][m], theirs, ctx.size)
            if diffs:
                row["diff"] = diffs
        del maps
        for _ in range(max(warmup - 1, 0)):
            for fn in runners.values():
                fn()
        times: dict[str, list[float]] = {k: [] for k in runners}
        gc_on = gc.isenabled()
        gc.disable()
        try:
            for _ in range(reps):
                for key, fn in runners.items():
                    gc.collect()
                    t0 = time.perf_counter()
                    out = fn()
                    times[key].append(time.perf_counter() - t0)
                    del out
        finally:
            if gc_on:
                gc.enable()
    for row in rows:
        ts = times.get(row["key"])
        if ts:
            row.update(times=ts, median=statistics.median(ts), iqr=_iqr(ts))
    return rows


def profile_case(ctx: Context, key: str, rows: int = 18) -> str:
    """torch.profiler tables (self CPU time) of one call of ``key`` and of the no-grad floor."""
    from torch.profiler import ProfilerActivity, profile

    out = []
    fresh = Context(ctx.name, ctx.model, ctx.layer, ctx.x, ctx.ids)  # own copies, own hooks
    with quiet():
        for k in ("floor.nograd", key):
            fn = CASE_BY_KEY[k].setup(fresh)
            fn()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
            out.append(f"### profile: {ctx.name} {k}\n\n```\n{table}\n```\n")
    fresh.close()
    return "\n".join(out)


# --------------------------------------------------------------------------- peak memory
def _vm_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_child(model_name: str, key: str, batch: int, size: int, layer: str | None) -> dict:
    """In a fresh process: peak RSS of one call of ``key`` above the model+input baseline."""
    import resource

    ctx = make_context(model_name, batch, size, layer)
    with quiet():
        fn = CASE_BY_KEY[key].setup(ctx)
        gc.collect()
        base = _vm_kib("VmRSS") or 0
        exact = base > 0 and _reset_peak()
        fn()
    peak = _vm_kib("VmHWM") if exact else None
    if peak is None:  # not Linux: the process-lifetime maximum, an upper bound
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    how = "VmHWM reset after setup" if exact else "ru_maxrss since process start"
    return {"key": key, "base_mb": base / 1024, "peak_mb": peak / 1024,
            "extra_mb": max(peak - base, 0) / 1024, "how": how}


def measure_memory(args: argparse.Namespace, ctx_name: str, layer: str, keys: list[str]) -> dict:
    """One subprocess per case, ``--memory-jobs`` at a time, each with its share of the threads.

    Returns:
        ``{key: {"extra_mb": ..., ...} or {"error": ...}}``.
    """
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # Large blocks always mmap'ed and returned on free: RSS follows the live tensors.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    jobs = max(1, args.memory_jobs)
    threads = max(1, args.threads // jobs)

    def one(key: str) -> dict:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", key,
               "--models", ctx_name, "--layer", layer, "--batch", str(args.batch),
               "--size", str(args.size), "--threads", str(threads)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        except subprocess.TimeoutExpired:
            return {"error": "timed out"}
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode == 0 and last:
            return json.loads(last)
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}

    with ThreadPoolExecutor(jobs) as pool:
        results = dict(zip(keys, pool.map(one, keys), strict=True))
    for key, res in results.items():
        print(f"  memory {ctx_name} {key}: {res}", file=sys.stderr, flush=True)
    return results


# --------------------------------------------------------------------------- extra cases
@dataclass
class Section:
    """A markdown section of the report (callback overhead, detection)."""

    title: str
    body: str
    data: dict = field(default_factory=dict)


DETECTORS = {
    # name: (layer, constructor kwargs); random weights, every box kept (threshold 0).
    "fasterrcnn_mobilenet_v3_large_320_fpn": (None, {"box_score_thresh": 0.0}),
    "retinanet_resnet50_fpn": (
        "head.classification_head.conv.0",
        {"score_thresh": 0.0, "min_size": 320, "max_size": 320},
    ),
}


def case_detection(args: argparse.Namespace) -> Section:
    """Detector maps for K = 1 vs K = 10 detections of one image (target: K=10 <= 2 x K=1).

    Per detector (torchvision, ``weights=None, weights_backbone=None``, every box kept): a
    no-grad forward of the detector, and ``DetectionExplainer(top_k=1)`` / ``(top_k=10)`` with
    Grad-CAM + Grad-CAM++ on one seeded 320 x 320 image; interleaved rounds, medians. Faster
    R-CNN on its default layer (the backbone's last stage); RetinaNet on the first conv of its
    classification head, which is called once per FPN level.
    """
    title = "Detection: K = 1 vs K = 10 detections of one image"
    if importlib.util.find_spec("lightning_cam.detection") is None:
        return Section(title, "Not measured: `lightning_cam.detection` does not exist yet.",
                       {"measured": False})
    import torchvision

    from lightning_cam.detection import DetectionExplainer

    names = [n for n in args.detectors.split(",") if n] if args.detectors else []
    if not names:
        return Section(title, "Not measured: no detector selected (`--detectors`).",
                       {"measured": False})
    reps = max(1, args.reps // 2) if not args.quick else 1
    lines = [
        f"One seeded 320 x 320 image, random weights, score threshold 0; maps for Grad-CAM and "
        f"Grad-CAM++ (`DetectionExplainer(..., top_k=K)`); {args.warmup} warm-up and {reps} "
        "interleaved timed round(s); medians.",
        "",
        "| detector | layer | no-grad forward ms | K = 1 ms | K = 10 ms | K=10 / K=1 | "
        "K=1 / forward | detections |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    data: dict[str, Any] = {"measured": True}
    for name in names:
        if name not in DETECTORS:
            lines.append(f"| {name} | unknown detector (one of {sorted(DETECTORS)}) |||||||")
            continue
        layer, kwargs = DETECTORS[name]
        try:
            torch.manual_seed(0)
            det = torchvision.models.get_model(
                name, weights=None, weights_backbone=None, **kwargs).eval()
            image = torch.rand(3, 320, 320, generator=torch.Generator().manual_seed(0))
            ex = {k: DetectionExplainer(det, layer=layer, methods=("gradcam", "gradcam++"),
                                        score_threshold=0.0, top_k=k)
                  for k in (1, 10)}

            def forward(det: nn.Module = det, image: torch.Tensor = image) -> Any:
                with torch.no_grad():
                    return det([image])

            fns: dict[str, Runner] = {"fwd": forward, "k1": functools.partial(ex[1], image),
                                      "k10": functools.partial(ex[10], image)}
            with quiet():
                found = len(fns["k10"]())
                for _ in range(args.warmup - 1):
                    for fn in fns.values():
                        fn()
                ts: dict[str, list[float]] = {k: [] for k in fns}
                for _ in range(reps):
                    for k, fn in fns.items():
                        t0 = time.perf_counter()
                        fn()
                        ts[k].append(time.perf_counter() - t0)
        except Exception as exc:  # a failing adapter is a result
            lines.append(f"| {name} | failed: {type(exc).__name__}: {exc} |||||||")
            continue
        med = {k: statistics.median(v) for k, v in ts.items()}
        data[name] = {"median_s": med, "times": ts, "detections": found,
                      "layer": ex[1].layers[0]}
        lines.append(
            f"| {name} | `{ex[1].layers[0]}` | {_ms(med['fwd'])} | {_ms(med['k1'])} | "
            f"{_ms(med['k10'])} | {med['k10'] / med['k1']:.2f}"
            f"{'' if med['k10'] <= 2 * med['k1'] else ' (**target <= 2 missed**)'} | "
            f"{med['k1'] / med['fwd']:.2f} "
            f"| {found} |"
        )
    return Section(title, "\n".join(lines), data)


PERTURBATION = {
    # method: (model, layer); full and --quick sizes in case_perturbation.
    "ablationcam": ("resnet50", "layer4"),
    "scorecam": ("resnet18", "layer4"),
    "smoothgradcam++": ("resnet18", "layer4"),
}


def _time_interleaved(
    fns: dict[str, Runner], reps: int, once: set[str]
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """``reps`` interleaved rounds (``once``: keys timed in the first round only: slow peers).

    Returns:
        The times, and the outputs of the ``once`` keys' single call.
    """
    ts: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Any] = {}
    for r in range(reps):
        for k, fn in fns.items():
            if r and k in once:
                continue
            gc.collect()
            t0 = time.perf_counter()
            out = fn()
            ts[k].append(time.perf_counter() - t0)
            if k in once:
                outs[k] = out
            del out
    return ts, outs


def _perturbation_runners(
    method: str, model: nn.Module, layer: str, x: torch.Tensor, ids: list[int], size: int
) -> tuple[dict[str, Runner], str]:
    """The timed calls of one perturbation method: floor, ours, the peers."""
    import lightning_cam as lc
    from lightning_cam.methods.core import chunk_size
    from lightning_cam.methods.perturbation import SCORE_BATCH_MB

    have_pgc = importlib.util.find_spec("pytorch_grad_cam") is not None
    have_tc = importlib.util.find_spec("torchcam") is not None

    ours_cls = getattr(lc, METHODS[method].class_name)(model, layer)
    fns: dict[str, Runner] = {"ours": functools.partial(ours_cls, x, ids)}
    floor_note = ""
    if method == "ablationcam":

        def fwd(model: nn.Module = model) -> Any:
            with torch.no_grad():
                return model(x)

        fns = {"floor": fwd, **fns}
        floor_note = "floor: one no-grad forward"
        if have_pgc:
            from pytorch_grad_cam import AblationCAM
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            pm = copy.deepcopy(model)
            pcam = AblationCAM(pm, [pm.get_submodule(layer)])
            fns["pytorch-grad-cam"] = (
                lambda: pcam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in ids]))
    elif method == "scorecam":
        acts: list[torch.Tensor] = []
        h = model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: acts.append(o))
        with torch.no_grad():
            model(x)
        h.remove()
        a = acts[0]
        flat = a.flatten(2)
        live = int((flat.amax(2) > flat.amin(2)).sum())
        step = chunk_size(None, x[0], budget_mb=SCORE_BATCH_MB)
        masked = x.expand(live, *x.shape[1:]).contiguous()  # same cost as the masked inputs
        dead = live < a.shape[1]

        def floor(model: nn.Module = model, masked: torch.Tensor = masked) -> Any:
            with torch.no_grad():
                for i in range(0, masked.shape[0], step):
                    model(masked[i : i + step])
                if dead:
                    model(torch.zeros_like(x))

        fns = {"floor": floor, **fns}
        floor_note = (f"floor: {live} live channels of {a.shape[1]} -> {live} no-grad "
                      f"forwards in batches of {step}" + (" + 1 (dead)" if dead else ""))
        if have_pgc:
            from pytorch_grad_cam import ScoreCAM
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            pm = copy.deepcopy(model)
            scam = ScoreCAM(pm, [pm.get_submodule(layer)])
            fns["pytorch-grad-cam"] = (
                lambda: scam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in ids]))
        if have_tc:
            import torchcam.methods as tcm

            tm = copy.deepcopy(model)
            tsc = tcm.ScoreCAM(tm, layer, input_shape=(3, size, size))

            def tc_run(tm: nn.Module = tm, tsc: Any = tsc) -> Any:
                with torch.no_grad():
                    tm(x)
                return tsc(class_idx=ids)[0]

            fns["torchcam"] = tc_run
    else:  # smoothgradcam++
        def fwd_bwd(model: nn.Module = model) -> Any:
            xs = x.expand(4, *x.shape[1:]).clone().requires_grad_(True)
            return torch.autograd.grad(model(xs)[:, ids[0]].sum(), xs)

        fns = {"floor": fwd_bwd, **fns}
        floor_note = "floor: forward + backward to the input of the 4 noisy copies"
        if have_tc:
            import torchcam.methods as tcm

            tm = copy.deepcopy(model)
            sg = tcm.SmoothGradCAMpp(tm, layer, num_samples=4, std=0.3,
                                     input_shape=(3, size, size))

            def sg_run(tm: nn.Module = tm, sg: Any = sg) -> Any:
                return sg(class_idx=ids, scores=tm(x))[0]

            fns["torchcam"] = sg_run
    return fns, floor_note


def case_perturbation(args: argparse.Namespace) -> Section:
    """Perturbation methods against their floors and the peers, one image each.

    - Ablation-CAM (resnet50 ``layer4``): ours replays only the network after the layer (fx
      split: avgpool + fc); pytorch-grad-cam's ``AblationCAM`` re-runs the network up to the
      layer for every batch of 32 ablated channels. Target: >= 20 x faster, identical maps.
    - Score-CAM (resnet18 ``layer4``): floor = one no-grad forward per live channel (batched like
      ours; all dead channels share one forward of a zero image). Target: <= 1.10 x the floor,
      never slower than pytorch-grad-cam or torchcam.
    - Smooth Grad-CAM++ (resnet18 ``layer4``): 4 noisy samples, std 0.3, vs torchcam's
      ``SmoothGradCAMpp`` with the same settings (their noise and ours differ: time only).

    Class: each image's predicted class (a positive score, where Ablation-CAM's division by
    the score keeps its sign, so that the maps can be identical).
    """
    import torchvision

    from lightning_cam.methods.core import normalize_maps as nm

    title = "Perturbation methods: extra forward passes, batched"
    size = 64 if args.quick else 112
    reps = 1 if args.quick else 2
    lines = [
        f"One seeded {size} x {size} image per model, `weights=None`, its predicted class; "
        f"{reps} interleaved timed round(s) after a warm-up (the slow peers: one round, no "
        "warm-up); medians. *max abs diff*: against our maps, both bilinearly upsampled and "
        "min-max normalised.",
        "",
        "| method | model, layer | implementation | median ms | x floor | peer / ours | "
        "max abs diff vs ours |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    data: dict[str, Any] = {"measured": True}
    for method, (model_name, layer) in PERTURBATION.items():
        torch.manual_seed(0)
        model = torchvision.models.get_model(
            "resnet18" if args.quick else model_name, weights=None).eval()
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            ids = model(x).argmax(1).tolist()
        fns, floor_note = _perturbation_runners(method, model, layer, x, ids, size)
        slow = {k for k in fns if k == "pytorch-grad-cam" and method != "smoothgradcam++"}
        with quiet(), contextlib.redirect_stderr(open(os.devnull, "w")):  # noqa: SIM115
            outs = {k: fn() for k, fn in fns.items() if k not in slow}  # warm-up + maps
            ts, slow_outs = _time_interleaved(fns, reps, slow)
            outs.update(slow_outs)
        med = {k: statistics.median(v) for k, v in ts.items()}
        ref = nm(torch.as_tensor(outs["ours"]).float())
        row: dict[str, Any] = {"median_s": med, "times": ts, "layer": layer,
                               "model": model.__class__.__name__.lower()}
        for k in fns:
            diff = "—"
            if k not in ("ours", "floor"):
                theirs = torch.as_tensor(np.asarray(outs[k])).float()
                if theirs.dim() == 4:
                    theirs = theirs[:, 0]
                d = float((normalise_map(theirs, (size, size)) - ref).abs().max())
                row[f"diff_{k}"] = d
                diff = f"{d:.3g}"
            peer = f"{med[k] / med['ours']:.1f}" if k not in ("ours", "floor") else "—"
            shown = "resnet18" if args.quick else model_name
            lines.append(f"| {METHODS[method].title} | {shown} `{layer}` | "
                         f"{k if k != 'floor' else floor_note} | {_ms(med[k])} | "
                         f"{med[k] / med['floor']:.2f} | {peer} | {diff} |")
        data[method] = row
    notes = [
        "",
        "Targets (issue 14):",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    ab = data.get("ablationcam", {}).get("median_s", {})
    if "pytorch-grad-cam" in ab:
        v = ab["pytorch-grad-cam"] / ab["ours"]
        d = data["ablationcam"].get("diff_pytorch-grad-cam", float("nan"))
        ok = "yes" if v >= 20 and d < 1e-3 else "**no**"
        notes.append(f"| Ablation-CAM >= 20 x faster than pytorch-grad-cam, identical maps | "
                     f"{v:.1f} x, max abs diff {d:.2g} | {ok} |")
    sc = data.get("scorecam", {}).get("median_s", {})
    if sc:
        v = sc["ours"] / sc["floor"]
        peers = {k: sc[k] / sc["ours"] for k in ("pytorch-grad-cam", "torchcam") if k in sc}
        ok = "yes" if v <= 1.10 else "**no**"
        notes.append(f"| Score-CAM <= 1.10 x its floor | {v:.2f} x | {ok} |")
        if peers:
            notes.append("| Score-CAM never slower than a peer | "
                         + ", ".join(f"{k} {p:.2f} x slower" for k, p in peers.items())
                         + f" | {'yes' if all(p >= 1 for p in peers.values()) else '**no**'} |")
    notes += [
        "",
        "Why the peers' maps differ:",
        "",
        "- Ablation-CAM, pytorch-grad-cam: identical (it zeroes a channel when the layer's minimum "
        "is 0, as the paper; otherwise it sets min - 1e7). It divides the drop by the score y, "
        "we by |y|: where y < 0 its map is the ReLU of the *negated* evidence, ours is not; the "
        "images here are explained for their predicted class (y > 0). It replaces the layer by "
        "an `AblationLayer` and re-runs everything before it for each batch of 32 channels; we "
        "replay only the network after the layer (`torch.fx` split, checked against the "
        "forward's own logits; full forwards where a model cannot be split).",
        "- Score-CAM, pytorch-grad-cam: upsamples the activations with `UpsamplingBilinear2d` "
        "(`align_corners=True`) before the min-max (eps 1e-8); we use `align_corners=False`, as "
        "for every other map. With its convention our code gives its maps exactly "
        "(tests/methods/test_peers.py).",
        "- Score-CAM, torchcam: min-max at the layer's resolution, then upsamples (we follow the "
        "paper's order: upsample, then min-max), and subtracts the unmasked input's score (the "
        "same for every channel: cancels in the softmax). Its order reproduced, our code gives "
        "its maps exactly (tests); with a 2x2 or 4x4 layer the two orders agree to rounding, "
        "since the bilinear extremes sit in the clamped borders.",
        "- Smooth Grad-CAM++, torchcam: its noise and ours are different draws (ours: a seeded "
        "generator of its own; torchcam: the global RNG), so the maps differ by the noise. "
        "Beyond it: torchcam builds the final map from the *last noisy* forward's activations "
        "(the paper: the image's), weights with ReLU of the last sample's gradient instead of "
        "the average, and puts sum(g^3 A) + eps 1e-8 in alpha's denominator instead of "
        "sum(A) g^3 (equal only where the gradient is constant over the map).",
    ]
    return Section(title, "\n".join(lines + notes), data)


def _callbacks_from_config(path: Path) -> list[Any]:
    import yaml

    cfg = yaml.safe_load(path.read_text())
    out = []
    for spec in cfg.get("trainer", {}).get("callbacks", []) or []:
        module, _, name = spec["class_path"].rpartition(".")
        out.append(getattr(importlib.import_module(module), name)(**spec.get("init_args", {})))
    return out


def _timed_hooks(callback: Any, acc: list[float]) -> Any:
    """Wrap the callback's overridden hooks so that the time spent inside them adds to acc."""
    import pytorch_lightning as pl

    for name in dir(pl.Callback):
        if not (name.startswith("on_") or name in ("setup", "teardown")):
            continue
        if getattr(type(callback), name, None) is getattr(pl.Callback, name, None):
            continue
        hook = getattr(callback, name)

        def wrapped(*a: Any, _hook: Any = hook, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _hook(*a, **k)
            finally:
                acc[0] += time.perf_counter() - t0

        setattr(callback, name, wrapped)
    return callback


def _config_epochs(config: Path) -> int | str:
    try:
        import yaml

        return int(yaml.safe_load(config.read_text())["trainer"]["max_epochs"])
    except Exception:  # noqa: BLE001 - only a caption
        return "?"


def case_callback_overhead(args: argparse.Namespace) -> Section:
    """Wall time of a short fit on the default shapes data with vs without the CAM callbacks.

    Variants, interleaved per round: no callback; ``GradCAMCallback()`` with its defaults; the
    callbacks of ``configs/shapes.yaml`` (the default run). Same seeds, data, model and Trainer
    (TensorBoard logger, no checkpointing, no progress bar) for all. Reports median fit times,
    the overhead against no callback, and the time spent inside the callbacks' hooks (less noisy
    than a difference of two wall times).
    """
    title = "Callback overhead on the default shapes run"
    try:
        import pytorch_lightning as pl
        from pytorch_lightning.loggers import TensorBoardLogger

        from lightning_cam.callbacks import GradCAMCallback
        from lightning_cam.data import ShapesDataModule
        from lightning_cam.models import ShapesClassifier
    except Exception as exc:  # report whatever is missing
        return Section(title, f"Not measured: {type(exc).__name__}: {exc}", {"measured": False})

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    config = REPO / "configs" / "shapes.yaml"
    variants: dict[str, Callable[[], list[Any]]] = {
        "no callback": lambda: [],
        "`GradCAMCallback()` (defaults)": lambda: [GradCAMCallback()],
    }
    if config.exists():
        variants["`configs/shapes.yaml` callbacks"] = lambda: _callbacks_from_config(config)
    data_kw = (
        {"num_train": 256, "num_val": 64, "num_test": 16, "batch_size": 32}
        if args.quick
        else {}  # the defaults of the default run: 2000 train / 400 val, batch 32, 64 px
    )

    def fit(make: Callable[[], list[Any]], epochs: int, **dm_kw: Any) -> tuple[float, float]:
        pl.seed_everything(0, verbose=False)
        inside = [0.0]
        callbacks = [_timed_hooks(cb, inside) for cb in make()]
        with tempfile.TemporaryDirectory() as tmp:
            trainer = pl.Trainer(
                max_epochs=epochs, accelerator="cpu", devices=1, logger=TensorBoardLogger(tmp),
                callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, log_every_n_steps=10,
            )
            model = ShapesClassifier(class_names=["circle", "square", "triangle", "star"])
            t0 = time.perf_counter()
            trainer.fit(model, ShapesDataModule(**dm_kw))
            return time.perf_counter() - t0, inside[0]

    times: dict[str, list[float]] = {k: [] for k in variants}
    inside: dict[str, list[float]] = {k: [] for k in variants}
    try:
        with quiet():
            fit(variants[list(variants)[-1]], 1, num_train=64, num_val=64, batch_size=32)  # warm
            for _ in range(args.callback_rounds):
                for name, make in variants.items():
                    wall, hooks = fit(make, args.callback_epochs, **data_kw)
                    times[name].append(wall)
                    inside[name].append(hooks)
    except Exception as exc:  # a failed fit is a result
        return Section(title, f"Not measured: the fit failed: {type(exc).__name__}: {exc}",
                       {"measured": False})
    base = statistics.median(times["no callback"])
    lines = [
        f"{args.callback_epochs} epoch(s) of `ShapesClassifier()` on `ShapesDataModule("
        f"{', '.join(f'{k}={v}' for k, v in data_kw.items())})`"
        f"{' (the defaults of the default run)' if not data_kw else ''}, "
        f"{args.callback_rounds} interleaved round(s) after a small warm-up fit; medians. "
        f"The default run (`configs/shapes.yaml`) has {_config_epochs(config)} epochs"
        + (": a per-fit one-time cost is counted in full here, so these ratios overstate it."
           if args.callback_epochs < _config_epochs(config) else "."),
        "",
        "| variant | fit median s | IQR s | overhead vs none | time inside callback hooks |",
        "|---|---:|---:|---:|---:|",
    ]
    data: dict[str, Any] = {"measured": True, "variants": {}}
    for name in variants:
        med = statistics.median(times[name])
        hooks = statistics.median(inside[name])
        over = (med - base) / base
        data["variants"][name] = {"median_s": med, "overhead": over, "hooks_s": hooks,
                                  "hooks_frac": hooks / base, "times": times[name]}
        lines.append(
            f"| {name} | {med:.2f} | {_iqr(times[name]):.2f} | "
            f"{'—' if name == 'no callback' else f'{over:+.1%}'} | "
            f"{'—' if name == 'no callback' else f'{hooks:.2f} s ({hooks / base:.1%})'} |"
        )
    return Section(title, "\n".join(lines), data)


# --------------------------------------------------------------------------- report
def _ms(s: float | None) -> str:
    return "—" if s is None else f"{s * 1e3:,.0f}"


def _versions() -> str:
    def ver(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    import torchvision

    import lightning_cam

    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        git = f" (git {rev}{', uncommitted changes' if dirty else ''})" if rev else ""
    except (OSError, subprocess.SubprocessError):
        git = ""
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}",
             f"torchvision {torchvision.__version__}",
             f"lightning-cam {lightning_cam.__version__}{git}"]
    parts += [f"{p} {ver(PEER_PACKAGES[p])}" for p in PEERS]
    parts.append(f"pytorch-lightning {ver('pytorch-lightning')}")
    return ", ".join(parts)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def model_table(rows: list[dict], memory: dict | None) -> tuple[str, dict]:
    """The per-model markdown table and the target checks' numbers."""
    by = {r["key"]: r for r in rows}
    floor = by.get("floor.nograd", {}).get("median")
    ours = {r["method"]: r for r in rows if r["impl"] == OURS}
    head = ("| method | implementation | call | median ms | IQR ms | x no-grad fwd | "
            "peer / ours | max abs diff vs ours (mean) |")
    sep = "|---|---|---|---:|---:|---:|---:|---|"
    if memory is not None:
        head += " extra peak MB |"
        sep += "---:|"
    lines = [head, sep]

    def mem(key: str) -> str:
        if memory is None:
            return ""
        res = memory.get(key)
        if not res:
            return " — |"
        return f" {res['extra_mb']:,.0f} |" if "extra_mb" in res else " error |"

    for r in rows:
        title = METHOD_TITLES[r["method"]]
        if "skip" in r:
            lines.append(f"| {title} | {r['impl']} | {r['call']} | not run: {r['skip']} "
                         "| | | | |" + (" |" if memory is not None else ""))
            continue
        med = r.get("median")
        ratio = f"{med / floor:.2f}" if med and floor else "—"
        ref = ours.get(r["method"])
        peer = (f"{med / ref['median']:.2f}" if r["impl"] in PEERS and ref and ref.get("median")
                else "—")
        diff = "; ".join(
            f"{m}: {d['max']:.3g} ({d['mean']:.2g})" for m, d in r.get("diff", {}).items()
        ) or "—"
        lines.append(f"| {title} | {r['impl']} | {r['call']} | {_ms(med)} | {_ms(r.get('iqr'))} "
                     f"| {ratio} | {peer} | {diff} |" + mem(r["key"]))
    # Peers have no combined call: two calls, sum of their medians.
    both = ours.get("both")
    for impl in PEERS:
        pair = [r for r in rows if r["impl"] == impl and r["method"] in ("gradcam", "gradcam++")
                and r.get("median")]
        if len(pair) == 2 and both and both.get("median"):
            tot = sum(r["median"] for r in pair)
            lines.append(f"| {METHOD_TITLES['both']} | {impl} | two calls (sum of the medians) "
                         f"| {_ms(tot)} | — | {tot / floor:.2f} | {tot / both['median']:.2f} "
                         "| — |" + (" — |" if memory is not None else ""))
    return "\n".join(lines), _targets(rows, memory)


def _targets(rows: list[dict], memory: dict | None) -> dict:
    by: dict[str, float] = {r["key"]: r["median"] for r in rows if r.get("median")}
    t: dict[str, Any] = {}
    for name, (num, den) in {"gradcam_vs_floor": ("ours.gradcam", "floor.nograd"),
                             "both_vs_gradcam": ("ours.both", "ours.gradcam"),
                             "ggc_vs_fwd2bwd": ("ours.ggc", "floor.2bwd")}.items():
        if num in by and den in by:
            t[name] = by[num] / by[den]
    if "floor.nograd" in by:  # issue 14: every method against the no-grad forward
        floor = by["floor.nograd"]
        t["per_method_vs_floor"] = {n: by[f"ours.{n}"] / floor for n in SINGLE_PASS
                                    if f"ours.{n}" in by}
        if "ours.allgrad" in by:
            t["allgrad_vs_floor"] = by["ours.allgrad"] / floor
    ours = {r["method"]: r.get("median") for r in rows if r["impl"] == OURS}
    for impl in PEERS:
        ratios = {r["method"]: r["median"] / ours[r["method"]] for r in rows
                  if r["impl"] == impl and r.get("median") and ours.get(r["method"])}
        pair = [r["median"] for r in rows if r["impl"] == impl and r.get("median")
                and r["method"] in ("gradcam", "gradcam++")]
        if len(pair) == 2 and ours.get("both"):
            ratios["both"] = sum(pair) / ours["both"]
        if ratios:
            t[f"speedup_{impl}"] = ratios
    if memory:

        def vs_best_peer(refs: dict[str, str]) -> dict[str, tuple[float, str]]:
            """Per method: our extra peak memory (case ``refs[method]``) / the best peer's."""
            out: dict[str, tuple[float, str]] = {}
            for method, ref in refs.items():
                mine = memory.get(ref, {}).get("extra_mb")
                peers = [(memory[r["key"]]["extra_mb"], r["impl"]) for r in rows
                         if r["impl"] in PEERS and r["method"] == method
                         and "extra_mb" in memory.get(r["key"], {})]
                if mine is not None and peers:
                    best, who = min(peers)
                    out[method] = (mine / max(best, 1e-9), who)
            return out

        if fracs := vs_best_peer(REFERENCE):
            t["memory_vs_best_peer"] = fracs
        if bounded := vs_best_peer({"gbp": "ours.gbp.mb1", "ggc": "ours.ggc.mb1"}):
            t["memory_mb1_vs_best_peer"] = bounded
    if by.get("ours.gbp.mb1") and by.get("ours.gbp"):
        t["mb1_time_vs_batched"] = {
            m: by[f"ours.{m}.mb1"] / by[f"ours.{m}"] for m in ("gbp", "ggc")
            if by.get(f"ours.{m}.mb1") and by.get(f"ours.{m}")
        }
    return t


def targets_table(name: str, t: dict) -> str:
    def row(goal: str, value: str, ok: bool | None) -> str:
        return f"| {goal} | {value} | {'n/a' if ok is None else ('yes' if ok else '**no**')} |"

    lines = [f"Targets (issues 8 and 14), {name}:", "", "| target | measured | met |",
             "|---|---|---|"]
    if "gradcam_vs_floor" in t:
        v = t["gradcam_vs_floor"]
        lines.append(row("Grad-CAM <= 1.10 x no-grad forward", f"{v:.2f} x", v <= 1.10))
    if "both_vs_gradcam" in t:
        v = t["both_vs_gradcam"]
        lines.append(row("Grad-CAM + Grad-CAM++ <= 1.10 x Grad-CAM", f"{v:.2f} x", v <= 1.10))
    if "ggc_vs_fwd2bwd" in t:
        v = t["ggc_vs_fwd2bwd"]
        lines.append(row("guided Grad-CAM <= forward + 2 backwards", f"{v:.2f} x", v <= 1.0))
    short = {"gbp": "GBP", "ggc": "GGC", "both": "both",
             **{n: m.title for n, m in METHODS.items()}}
    per = t.get("per_method_vs_floor", {})
    grad = {n: v for n, v in per.items() if METHODS[n].needs_backward}
    if grad:
        worst = max(grad, key=grad.__getitem__)
        lines.append(row("each gradient method <= 1.10 x no-grad forward (issue 14)",
                         ", ".join(f"{short[n]} {v:.2f}" for n, v in grad.items())
                         + f" (worst: {short[worst]})", grad[worst] <= 1.10))
    if "allgrad_vs_floor" in t:
        v = t["allgrad_vs_floor"]
        lines.append(row(f"all {len(GRADIENT)} gradient methods, one call, <= 1.15 x",
                         f"{v:.2f} x", v <= 1.15))
    act = {n: v for n, v in per.items() if METHODS[n].kind == "activation"}
    if act:
        lines.append(row("Eigen-CAM and CAM <= 1.05 x no-grad forward",
                         ", ".join(f"{short[n]} {v:.2f} x" for n, v in act.items()),
                         all(v <= 1.05 for v in act.values())))
    for impl, need in (("pytorch-grad-cam", 2.5), ("captum", 1.0), ("torchcam", 1.0)):
        if f"speedup_{impl}" in t:
            ratios = t[f"speedup_{impl}"]
            goal = f"{'>= 2.5 x' if need > 1 else '>'} faster than {impl} (every case)"
            ok = all(v >= need if need > 1 else v > need for v in ratios.values())
            value = ", ".join(f"{short[m]} {v:.2f} x" for m, v in ratios.items())
            lines.append(row(goal, value, ok))
    if "memory_vs_best_peer" in t:
        fracs = t["memory_vs_best_peer"]
        value = ", ".join(f"{short[m]} {v:.2f} x ({who})" for m, (v, who) in fracs.items())
        lines.append(row("extra peak memory <= 0.5 x the best peer's", value,
                         all(v <= 0.5 for v, _ in fracs.values())))
    if "memory_mb1_vs_best_peer" in t:
        fracs = t["memory_mb1_vs_best_peer"]
        slow = t.get("mb1_time_vs_batched", {})
        value = ", ".join(
            f"{short[m]} {v:.2f} x ({who})"
            + (f", time {slow[m]:.2f} x batched" if m in slow else "")
            for m, (v, who) in fracs.items()
        )
        lines.append(row("same, guided with `max_batch=1` (memory-bounded mode)", value,
                         all(v <= 0.5 for v, _ in fracs.values())))
    return "\n".join(lines)


def render(args: argparse.Namespace, header: dict, parts: list[str]) -> str:
    cpus = header.get("cpus", os.cpu_count())
    lines = [
        "# lightning-cam benchmarks",
        "",
        f"- Date: {header['date']}",
        f"- Command: `{header['command']}`",
        f"- Machine: {header['cpu']}, {cpus} logical CPUs; "
        f"`torch.set_num_threads({args.threads})`; load average (1/5/15 min) "
        f"at start {header['load_start']}, at end {header.get('load_end', 'n/a')}"
        + (f"; the run took {header['wall_s'] / 60:.1f} min" if "wall_s" in header else ""),
        f"- Versions: {header['versions']}",
        *([f"- **Warning**: the machine was busy (1-min load average {header['load_1']:.1f} "
           f"on {cpus} CPUs at the start): timings are noisy; compare ratios within "
           "one run only."] if header["busy"] else []),
        f"- Setup: batch {args.batch}, {args.size}x{args.size}, seeded N(0, 1) inputs, fixed "
        "class id per sample, torchvision models with `weights=None` in eval mode, a deep copy "
        "per library object; peer objects constructed once outside the timed region (their "
        f"documented usage). {args.warmup} warm-up round(s) (the first one's outputs feed the "
        f"correctness column), then {args.reps} interleaved timed rounds; median and IQR.",
        "- Columns: *x no-grad fwd* = median / median of the no-grad forward; *peer / ours* = "
        "the peer's median / lightning-cam's for the same method (> 1: lightning-cam is "
        "faster); *max abs diff* = largest |difference| between the peer's maps and ours, both "
        "bilinearly upsampled to the input and min-max normalised per sample (guided outputs: "
        "divided by each sample's max |value|), mean in parentheses"
        + ("; *extra peak MB* = peak RSS (VmHWM, reset after setup) above the model + input "
           "(+ peer object) baseline during one call, in a fresh subprocess per cell "
           f"({args.memory_jobs} at a time, {max(1, args.threads // args.memory_jobs)} "
           "thread(s) each), with `MALLOC_MMAP_THRESHOLD_=65536` so that freed tensors leave "
           "the RSS." if args.memory else "."),
        "",
        *parts,
    ]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet50,mobilenet_v2",
                   help="comma-separated torchvision classifiers (default: %(default)s)")
    p.add_argument("--layer", default=None,
                   help="target layer for every model (default: per model, see LAYERS)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 8; quick 2)")
    p.add_argument("--size", type=int, default=None, help="image side (default 224; quick 112)")
    p.add_argument("--reps", type=int, default=None, help="timed rounds (default 5; quick 3)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds, >= 1 (default 1)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch.set_num_threads (default: all logical CPUs, %(default)s)")
    p.add_argument("--cases", default=None,
                   help="comma-separated case keys or prefixes (default: all): "
                   + ", ".join(c.key for c in CASES))
    p.add_argument("--memory", action="store_true", help="also measure peak memory")
    p.add_argument("--memory-jobs", type=int, default=os.cpu_count() or 1,
                   help="memory subprocesses at a time; each gets threads // jobs threads "
                   "(default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="smoke configuration: batch 2, 112 px, 3 reps, small callback fit")
    p.add_argument("--no-callback", action="store_true", help="skip the callback overhead case")
    p.add_argument("--no-perturbation", action="store_true",
                   help="skip the perturbation methods' section (Ablation-CAM, Score-CAM ...)")
    p.add_argument("--no-writer", action="store_true",
                   help="skip the CAMWriter case (benchmarks/writer.py)")
    p.add_argument("--no-recent", action="store_true",
                   help="skip the recent methods and attributions (benchmarks/recent.py, "
                        "benchmarks/attributions.py)")
    p.add_argument("--detectors", default=None,
                   help="comma-separated detectors for the K=1 vs K=10 case, '' to skip "
                   f"(default: all of {', '.join(DETECTORS)}; quick: the first)")
    p.add_argument("--callback-epochs", type=int, default=1)
    p.add_argument("--callback-rounds", type=int, default=None, help="default 2; quick 1")
    p.add_argument("--profile", default=None, metavar="CASE",
                   help="print torch.profiler tables of CASE and of the no-grad floor")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results.md"))
    p.add_argument("--json", default=None, help="also write the raw numbers here")
    p.add_argument("--render-json", default=None, metavar="PATH",
                   help="measure nothing: re-render the report of a --json file")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.batch = args.batch or (2 if quick else 8)
    args.size = args.size or (112 if quick else 224)
    args.reps = args.reps or (3 if quick else 5)
    args.warmup = max(args.warmup, 1)
    args.callback_rounds = args.callback_rounds or (1 if quick else 2)
    if args.detectors is None:
        args.detectors = next(iter(DETECTORS)) if quick else ",".join(DETECTORS)
    return args


def select_cases(spec: str | None) -> list[Case]:
    if not spec:
        return list(CASES)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    chosen = [c for c in CASES if any(c.key == w or c.key.startswith(w + ".") for w in wanted)]
    if not chosen:
        raise SystemExit(f"--cases {spec!r} matches none of {[c.key for c in CASES]}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        (name,) = args.models.split(",")
        res = memory_child(name, args.memory_child, args.batch, args.size, args.layer)
        print(json.dumps(res))
        return 0

    if args.render_json:
        raw = json.loads(Path(args.render_json).read_text())
    else:
        raw = measure(args)
    text = report(raw)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.json and not args.render_json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    print(text)
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run everything; return the raw numbers (what ``--json`` writes, ``report`` reads)."""
    start = time.perf_counter()
    load_1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ("python benchmarks/run.py " + shlex.join(sys.argv[1:])).strip(),
        "cpu": _cpu_model(), "cpus": os.cpu_count(), "load_start": _load(),
        "load_1": load_1, "busy": load_1 > 0.5, "versions": _versions(),
    }
    if header["busy"]:
        print(f"warning: 1-min load average {load_1:.1f}: timings will be noisy"
              + ("; with other processes running, --threads 1 avoids thread oversubscription"
                 if args.threads > 1 else ""), file=sys.stderr)
    cases = select_cases(args.cases)
    raw: dict[str, Any] = {"args": vars(args), "header": header, "models": {}, "sections": []}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        t0 = time.perf_counter()
        ctx = make_context(name, args.batch, args.size, args.layer)
        print(f"[{name}] layer {ctx.layer}, {len(cases)} cases ...", file=sys.stderr, flush=True)
        rows = run_model(ctx, cases, args.reps, args.warmup)
        if args.profile:
            print(profile_case(ctx, args.profile))
        ctx.close()
        memory = None
        if args.memory:
            keys = [r["key"] for r in rows if "skip" not in r]
            memory = measure_memory(args, name, ctx.layer, keys)
        raw["models"][name] = {"layer": ctx.layer, "rows": rows, "memory": memory,
                               "seconds": time.perf_counter() - t0}
        print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    sections = [case_detection(args)]
    print(f"[detection] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if not args.no_perturbation:
        t0 = time.perf_counter()
        sections.append(case_perturbation(args))
        print(f"[perturbation] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
    if not args.no_callback:
        t0 = time.perf_counter()
        sections.append(case_callback_overhead(args))
        print(f"[callback] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if not args.no_writer:  # CAMWriter on trainer.predict: benchmarks/writer.py
        t0 = time.perf_counter()
        spec = importlib.util.spec_from_file_location(
            "lightning_cam_benchmarks_writer", Path(__file__).with_name("writer.py"))
        assert spec is not None and spec.loader is not None
        writer_bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(writer_bench)
        case_writer = writer_bench.case_writer
        sections.append(Section(*case_writer(quick=args.quick, rounds=1 if args.quick else 3)))
        print(f"[writer] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if not args.no_recent:  # the methods of 2020-25 and captum's attributions (issue 23)
        t0 = time.perf_counter()
        for stem, title, argv in (
            ("recent", "The methods of 2020-25 against pytorch-grad-cam",
             ["--batch", "2", "--repeats", "1" if args.quick else "3"]),
            ("attributions", "captum's attributions through lightning-cam",
             ["--size", "64", "--batch", "2", "--repeats", "1" if args.quick else "3"]),
        ):
            spec = importlib.util.spec_from_file_location(
                f"lightning_cam_benchmarks_{stem}", Path(__file__).with_name(f"{stem}.py"))
            assert spec is not None and spec.loader is not None
            bench = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(bench)
            sections.append(Section(title, bench.main([*argv, "--threads", str(args.threads)])))
        print(f"[recent] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    raw["sections"] = [{"title": s.title, "body": s.body, "data": s.data} for s in sections]
    header["load_end"] = _load()
    header["wall_s"] = time.perf_counter() - start
    return raw


def report(raw: dict[str, Any]) -> str:
    """The markdown report of :func:`measure`'s raw numbers."""
    args = argparse.Namespace(**raw["args"])
    parts: list[str] = []
    for name, res in raw["models"].items():
        rows, memory = res["rows"], res["memory"]
        table, targets = model_table(rows, memory)
        notes = [f"- `{r['key']}`: {NOTES[r['key']]}" for r in rows
                 if r["key"] in NOTES and "skip" not in r]
        parts += [f"## {name} (layer `{res['layer']}`), batch {args.batch}, "
                  f"{args.size}x{args.size}", "", table, "", targets_table(name, targets), ""]
        if notes:
            parts += ["Why the peers' maps differ:", "", *notes, ""]
    for sec in raw["sections"]:
        parts += [f"## {sec['title']}", "", sec["body"], ""]
    quality = REPO / "benchmarks" / "quality.md"  # written by benchmarks/quality.py
    if quality.exists():
        parts += [quality.read_text().strip(), ""]
    return render(args, raw["header"], parts)


if __name__ == "__main__":
    sys.exit(main())
