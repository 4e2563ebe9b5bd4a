"""Public explainers: one class per registered method, guided backprop, guided Grad-CAM, and
``explain``.

The CAM classes (``GradCAM``, ``GradCAMPlusPlus``, ``HiResCAM``, ``LayerCAM``, ``ScoreCAM``
...) are generated from :data:`lightning_cam.methods.METHODS`: a registered method gets its class
here, with no other code. Each class is a thin front of :class:`lightning_cam.engine.Explainer`;
all share one engine, so they behave alike: eval mode during the call and every flag restored
afterwards, no hook kept between calls, ``param.grad`` never written, usable under
``torch.no_grad()`` and ``torch.inference_mode()``.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(weights=None)
    >>> with GradCAM(model, layer="layer4") as cam:
    ...     maps = cam(torch.rand(2, 3, 64, 64), target=[3, 7])
    >>> maps.shape, float(maps.max()) <= 1.0
    (torch.Size([2, 64, 64]), True)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_cam.engine.explainer import Explainer, Explanation
from lightning_cam.engine.layers import LayerSpec
from lightning_cam.engine.layouts import ReshapeTransform
from lightning_cam.engine.targets import MaskSpec, TargetSpec, segmentation_scores
from lightning_cam.methods import METHODS, Method, method_name


def _single_or_dict(maps: dict[str, torch.Tensor], several: bool) -> Any:
    return maps if several else next(iter(maps.values()))


class _BaseCAM:
    """Base of the generated public classes: one registered method, any layers.

    Subclasses are made from :data:`lightning_cam.methods.METHODS` (one per method, named by its
    ``class_name``); they differ only in ``method``.
    """

    method = "gradcam"

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec = None,
        max_batch: int | None = None,
        fuse: str | None = None,
        reshape_transform: ReshapeTransform = "auto",
        normalize: bool = True,
    ) -> None:
        self.model = model
        self._several = isinstance(layer, Sequence) and not isinstance(layer, str)
        self._fuse = fuse
        self._engine = Explainer(
            model,
            layer,
            methods=(self.method,),
            max_batch=max_batch,
            fuse=fuse,
            reshape_transform=reshape_transform,
            normalize=normalize,
        )

    @property
    def layers(self) -> list[str] | None:
        """Dotted names of the explained layers (``None`` until the default is found)."""
        return self._engine.layers

    def cam(
        self, images: torch.Tensor, target: TargetSpec = None, upsample: bool = True
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Compute the maps for a batch.

        Args:
            images: ``(B, C, H, W)`` floating-point images, as the model expects them (or
                signals ``(B, C, L)``, volumes / videos ``(B, C, D, H, W)``: maps of their
                spatial shape, see docs/inputs-nd.md).
            target: ``None`` (each sample's predicted class), an integer class id (any integer
                type, e.g. ``numpy.int64`` or a 0-d tensor such as ``logits.argmax()``),
                per-sample class ids (list / tuple of integers, 1-D integer numpy array or
                tensor), or a callable ``output -> (B,)`` scores (gradient and activation
                methods; perturbation methods and CAM need classes).
            upsample: ``True``: maps ``(B, H, W)`` at the image size (bilinear; linear for
                signals, trilinear for volumes). ``False``: at the layer's resolution
                ``(B, h, w)``.

        Returns:
            Float32 maps in [0, 1] (min-max per sample; an all-zero map stays zero), or the
            method's raw map (after its ReLU where it has one) with ``normalize=False``, on the
            images' device; a dict keyed by dotted layer name when several layers were given,
            or the fused map when ``fuse`` was given.

        Samples with non-finite values get NaN maps, with one
        :class:`~lightning_cam.engine.explainer.NonFiniteWarning` per call naming them.

        Raises:
            ValueError: Images not 3-D, 4-D or 5-D, target of the wrong length or out of
                range, a layer of another spatial rank than the images, a layer
                that is never reached, whose output is not spatial or 1 x 1, or that the scores
                do not depend on.
            TypeError: A target of another type (e.g. ``"2"``, ``2.0``); a layer inside a
                TorchScript module.
        """
        out = self._engine(images, target=target, upsample=upsample)
        if self._fuse is not None:
            return out.fused[self.method]
        return _single_or_dict(out.cams[self.method], self._several)

    __call__ = cam

    def __enter__(self) -> _BaseCAM:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def close(self) -> None:
        """No-op: hooks live for one call only (kept for API symmetry)."""


_KIND_TEXT = {
    "gradient": "Gradient method: one forward and one backward to the layer (shared with every "
    "other gradient method in :func:`explain`).",
    "activation": "Activation method: one forward, no backward at all.",
    "perturbation": "Perturbation method: the forward, then extra forward passes, batched, "
    "at most ``max_batch`` inputs each (``None``: a memory-bounded size).",
    "attribution": "Input attribution, computed by captum (optional: ``pip install captum``): "
    "no layer (``layer`` only names the map; the map is the input's, ``(B, H, W)``), class "
    "targets only, extra forward and backward passes of at most ``max_batch`` inputs each.",
}


_GENERIC_EXAMPLE = """    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                       nn.Flatten(), nn.Linear(8, 5))
    >>> {cls}(model, layer="1")(torch.rand(2, 3, 32, 32), target=3).shape
    torch.Size([2, 32, 32])"""


def _class_doc(m: Method) -> str:
    formula = inspect.getdoc(m.compute) or ""
    body = formula.split("\n\n", 1)[1] if "\n\n" in formula else ""
    body = body.split("\nArgs:", 1)[0].split("\nReturns:", 1)[0].strip()
    return f"""{m.title} ({m.paper}).

{body}

{_KIND_TEXT[m.kind]} Registered as ``{m.name!r}`` in
:data:`lightning_cam.methods.METHODS`; the formula's details are in
:func:`{m.compute.__module__}.{m.compute.__name__}`.

Args:
    model: Any image model.
    layer: Dotted name, module, list of either, or ``None`` for the default layer (the last
        module whose output is a spatial feature map).
    max_batch: Images per forward/backward pass (``None``: all); bounds peak memory.
    fuse: ``None``, or ``"mean"`` / ``"max"`` / ``"product"``: fuse the maps of several layers
        into one.
    reshape_transform: How to read the layer's output as ``(B, C, h, w)``: ``"auto"`` (default:
        ViT tokens, Swin channels-last maps... of recognised models), ``"tokens"``,
        ``"channels_last"``, ``"channels_first"`` or a callable; see
        :mod:`lightning_cam.engine.layouts`.
    normalize: ``True``: maps min-max normalised to [0, 1] per image. ``False``: the method's
        raw map (after its ReLU where it has one, e.g. ``ReLU(sum_k w_k A^k)``), comparable
        across images, classes and checkpoints (fused maps stay in [0, 1]).

Example:
{m.doc_example or _GENERIC_EXAMPLE.format(cls=m.class_name)}
"""


def _make_class(m: Method) -> type[_BaseCAM]:
    cls = type(m.class_name, (_BaseCAM,), {"method": m.name, "__doc__": _class_doc(m)})
    cls.__module__ = __name__
    return cls


#: The public class of every registered method, by class name (``"GradCAM"``, ``"ScoreCAM"`` ...).
CAM_CLASSES: dict[str, type[_BaseCAM]] = {
    m.class_name: _make_class(m) for m in METHODS.values()
}
globals().update(CAM_CLASSES)

if TYPE_CHECKING:
    # What the generation above makes, spelt out for IDEs and type checkers (which do not run
    # it). tests/engine/test_cam.py checks that this list is the registry's, name for name.
    class GradCAM(_BaseCAM): ...
    class GradCAMPlusPlus(_BaseCAM): ...
    class HiResCAM(_BaseCAM): ...
    class GradCAMElementWise(_BaseCAM): ...
    class XGradCAM(_BaseCAM): ...
    class LayerCAM(_BaseCAM): ...
    class EigenGradCAM(_BaseCAM): ...
    class EigenCAM(_BaseCAM): ...
    class CAM(_BaseCAM): ...
    class ScoreCAM(_BaseCAM): ...
    class AblationCAM(_BaseCAM): ...
    class SmoothGradCAMPlusPlus(_BaseCAM): ...
    class FEM(_BaseCAM): ...
    class KPCACAM(_BaseCAM): ...
    class SegEigenCAM(_BaseCAM): ...
    class ShapleyCAM(_BaseCAM): ...
    class FinerCAM(_BaseCAM): ...
    class IntegratedGradients(_BaseCAM): ...
    class SmoothGrad(_BaseCAM): ...
    class VarGrad(_BaseCAM): ...
    class Occlusion(_BaseCAM): ...
    class GradientShap(_BaseCAM): ...
    class DeepLift(_BaseCAM): ...
    class Saliency(_BaseCAM): ...
    class LeGrad(_BaseCAM): ...


def __getattr__(name: str) -> Any:
    # Only reached for names that are not generated (the generated ones are module globals);
    # declared so that static type checkers accept ``from lightning_cam.engine.cam import GradCAM``.
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GuidedBackprop:
    """Guided backpropagation (Springenberg et al., ICLR 2015 workshop).

    Gradients of the class score w.r.t. the input in which every ReLU passes only positive
    gradients where its input was positive. Covers ``nn.ReLU``, ``F.relu``/``torch.relu``,
    ``ReLU6`` and in-place variants; GELU, SiLU and Hardswish follow the positive-gradient rule
    ``f'(x) * max(grad, 0)``; a model with none of these gates is refused (see
    :mod:`lightning_cam.engine.guided`).

    The backward to the input keeps every activation of the network: ``max_batch=n`` explains
    ``n`` images per pass to bound peak memory (same results; see :class:`Explainer`).

    The guided rule needs the ReLUs to run as Python calls them: a ``torch.compile`` /
    ``DataParallel`` wrapper is looked through (its eager module runs), non-reentrant activation
    checkpoints are supported, and TorchScript or compiled submodules and reentrant checkpoints
    are refused with the reason, never answered with the plain gradient.

    Example:
        >>> import torch, torchvision
        >>> gb = GuidedBackprop(torchvision.models.mobilenet_v2(weights=None))
        >>> gb(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(self, model: nn.Module, max_batch: int | None = None) -> None:
        self.model = model
        self._engine = Explainer(
            model, layer=None, methods=(), guided_backprop=True, max_batch=max_batch
        )

    def __call__(self, images: torch.Tensor, target: TargetSpec = None) -> torch.Tensor:
        """Return guided gradients ``(B, C, H, W)`` (float32) of the target scores."""
        out = self._engine(images, target=target)
        assert out.guided is not None
        return out.guided

    def __enter__(self) -> GuidedBackprop:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class GuidedGradCAM:
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017): guided backprop times the upsampled CAM.

    Args:
        model: Any image model.
        layer: As for :class:`GradCAM`.
        method: Any registered method (``"gradcam"``, ``"gradcam++"``, ``"layercam"`` ...).
        max_batch: Images per forward/backward pass (``None``: all); bounds peak memory.
        reshape_transform: As for :class:`GradCAM`.
        normalize: As for :class:`GradCAM`: ``False`` multiplies by the raw map.

    Example:
        >>> import torch, torchvision
        >>> ggc = GuidedGradCAM(torchvision.models.resnet18(weights=None), "layer4")
        >>> ggc(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec = None,
        method: str = "gradcam",
        max_batch: int | None = None,
        reshape_transform: ReshapeTransform = "auto",
        normalize: bool = True,
    ) -> None:
        self.model = model
        self.method = method_name(method)
        self._several = isinstance(layer, Sequence) and not isinstance(layer, str)
        self._engine = Explainer(
            model,
            layer,
            methods=(self.method,),
            guided_gradcam=True,
            max_batch=max_batch,
            reshape_transform=reshape_transform,
            normalize=normalize,
        )

    def __call__(
        self, images: torch.Tensor, target: TargetSpec = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Return guided Grad-CAM ``(B, C, H, W)`` (a dict per layer for several layers)."""
        out = self._engine(images, target=target)
        return _single_or_dict(out.guided_cams[self.method], self._several)

    def __enter__(self) -> GuidedGradCAM:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def explain(
    model: nn.Module,
    images: torch.Tensor,
    layer: LayerSpec = None,
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    target: TargetSpec = None,
    guided_backprop: bool = False,
    guided_gradcam: bool = False,
    upsample: bool = True,
    max_batch: int | None = None,
    fuse: str | None = None,
    reshape_transform: ReshapeTransform = "auto",
    normalize: bool = True,
) -> Explanation:
    """Several explanations of the same images from one forward pass.

    Any mix of registered methods for one or more layers: all gradient methods come from the
    same activations and gradients (one forward, one backward); activation methods need no
    backward; perturbation methods add their own batched forwards. Guided backprop and guided
    Grad-CAM add one guided backward over the same forward.

    Args:
        model: Any image model.
        images: ``(B, C, H, W)`` (or ``(B, C, L)``, ``(B, C, D, H, W)``).
        layer: Dotted name, module, list of either, or ``None`` (default layer).
        methods: Names from :data:`lightning_cam.methods.METHODS` (any accepted spelling).
        target: As for :meth:`GradCAM.cam`.
        guided_backprop: Also return guided backprop gradients.
        guided_gradcam: Also return guided Grad-CAM per method and layer.
        upsample: Maps at the image size (else the layer's).
        max_batch: Images per forward/backward pass (``None``: all); bounds peak memory.
        fuse: ``None``, or ``"mean"`` / ``"max"`` / ``"product"``: also fuse each method's maps
            of the layers into one, ``fused[method]``.
        reshape_transform: As for :class:`GradCAM` (see :mod:`lightning_cam.engine.layouts`).
        normalize: ``True``: maps in [0, 1] per image. ``False``: each method's raw map (after
            its ReLU where it has one); see :class:`~lightning_cam.engine.Explainer`.

    Returns:
        An :class:`~lightning_cam.engine.Explanation` with ``cams[method][layer]``, ``fused``,
        ``guided``, ``guided_cams[method][layer]``, ``scores``, ``class_ids`` and ``logits``.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(weights=None)
        >>> out = explain(model, torch.rand(2, 3, 64, 64), "layer4", guided_gradcam=True)
        >>> sorted(out.cams), out.guided_cams["gradcam++"]["layer4"].shape
        (['gradcam', 'gradcam++'], torch.Size([2, 3, 64, 64]))
    """
    engine = Explainer(
        model,
        layer,
        methods=methods,
        guided_backprop=guided_backprop,
        guided_gradcam=guided_gradcam,
        max_batch=max_batch,
        fuse=fuse,
        reshape_transform=reshape_transform,
        normalize=normalize,
    )
    return engine(images, target=target, upsample=upsample)


def explain_segmentation(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int],
    layer: LayerSpec = None,
    mask: MaskSpec = None,
    methods: Sequence[str] = ("gradcam",),
    upsample: bool = True,
    reshape_transform: ReshapeTransform = "auto",
) -> dict[int, Explanation]:
    """Maps per requested class of a segmentation model, from one forward pass.

    Each class ``c`` is explained by :class:`~lightning_cam.engine.targets.SegmentationTarget`: its
    logits summed over a region (the predicted mask of ``c`` by default, or ``mask``). All
    classes of all images share one forward and one batched backward.

    Args:
        model: A segmentation model ``(B, 3, H, W) -> (B, K, H, W)`` logits, a dict with
            ``"out"`` (torchvision FCN / DeepLabV3 / LRASPP) or an object with ``.logits``;
            signals ``(B, C, L) -> (B, K, L)`` and volumes ``(B, C, D, H, W) -> (B, K, D, H,
            W)`` alike.
        images: ``(B, C, H, W)`` (``(B, C, L)``, ``(B, C, D, H, W)``).
        classes: Class ids to explain.
        layer: Layer(s); ``None``: the default (the backbone's last stage for torchvision's
            segmentation models).
        mask: ``None`` (each class's predicted mask) or a given ``(H, W)`` / ``(B, H, W)`` mask
            (of the output's spatial shape: ``(L,)`` / ``(B, L)``, ``(D, H, W)`` / ``(B, D, H,
            W)``).
        methods: CAM methods.
        upsample: Maps at the image size (else the layer's).
        reshape_transform: As for :class:`GradCAM`.

    Returns:
        ``{class_id: Explanation}``, each with ``cams[method][layer]`` ``(B, *S)`` and the
        scores ``(B,)``; a class predicted nowhere (default region) has all-zero maps.

    Example:
        >>> import torch, torchvision
        >>> seg = torchvision.models.segmentation.fcn_resnet50(
        ...     weights=None, weights_backbone=None, num_classes=3)
        >>> maps = explain_segmentation(seg, torch.rand(1, 3, 64, 64), classes=[0, 2])
        >>> sorted(maps), maps[2].layers, maps[2].cam().shape
        ([0, 2], ['backbone.layer4'], torch.Size([1, 64, 64]))
    """
    ids = [int(c) for c in classes]
    if not ids:
        raise ValueError("classes is empty; give at least one class id to explain.")
    engine = Explainer(model, layer, methods=methods, reshape_transform=reshape_transform)
    batch = images.shape[0] if isinstance(images, torch.Tensor) else 0
    index = torch.arange(batch).repeat_interleave(len(ids))
    result, _ = engine.explain_scores(
        images, segmentation_scores(ids, mask), batch_index=index, upsample=upsample
    )
    assert result.scores is not None
    out: dict[int, Explanation] = {}
    for k, c in enumerate(ids):
        rows = slice(k, None, len(ids))
        out[c] = Explanation(
            cams={m: {n: t[rows] for n, t in maps.items()} for m, maps in result.cams.items()},
            scores=result.scores[rows],
            class_ids=torch.full((batch,), c, dtype=torch.long),
            layers=list(result.layers),
        )
    return out
