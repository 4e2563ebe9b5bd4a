"""Explain a classifier on image files: the original Grad-CAM.pytorch tool's six pictures, and
the same for any method of the registry (:data:`lightning_cam.methods.METHODS`).

For every image, one forward pass gives the maps of the chosen methods (default: Grad-CAM and
Grad-CAM++) and guided backprop (the engine's ``explain``); guided Grad-CAM is guided backprop
times the Grad-CAM map. The image is resized to the network's input size for the model, and
every map is brought back to the *original* image size (one bilinear upsampling from the layer's
resolution), so the pictures align with the image the user gave.

With the default methods, the six pictures per image, with the original tool's file names
(``{stem}-{network}-{key}.jpg``, see :data:`OUTPUT_KEYS`):

===============  ===========================================================
``heatmap``      Grad-CAM map, jet colours
``cam``          Grad-CAM overlaid on the image
``heatmap++``    Grad-CAM++ map, jet colours
``cam++``        Grad-CAM++ overlaid on the image
``gb``           guided backpropagation (gradients rendered as an image)
``cam_gb``       guided Grad-CAM (guided backprop times the Grad-CAM map)
===============  ===========================================================

Any other method ``m`` adds ``{m}-heatmap`` and ``{m}-cam`` (:func:`picture_keys`); ``gb`` and
``cam_gb`` come with every run.

Example:
    >>> import numpy as np, torch, torchvision
    >>> net = torchvision.models.resnet18(weights=None)
    >>> image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    >>> [r] = explain_classifier(net, {"noise": image}, image_size=64, network="resnet18")
    >>> r.gradcam.shape, r.guided_backprop.shape, sorted(r.pictures())[:2]
    ((90, 120), (90, 120, 3), ['cam', 'cam++'])
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_cam.engine.cam import explain
from lightning_cam.engine.layers import get_layer
from lightning_cam.engine.layouts import ReshapeTransform, check_reshape_transform
from lightning_cam.engine.target_spec import SpecScore, TargetChoice, parse_target_spec
from lightning_cam.engine.targets import class_probabilities
from lightning_cam.errors import one_line
from lightning_cam.methods import DEFAULT_METHODS, METHODS, method_name
from lightning_cam.tools import viz
from lightning_cam.tools.image_io import (
    IMAGE_EXTENSIONS,
    ImagesArg,
    ImageSource,
    collect_images,
    save_images,
)
from lightning_cam.zoo import (
    ClassifierMeta,
    build_classifier,
    resolve_device,
)

__all__ = [
    "DEFAULT_METHODS",
    "IMAGE_EXTENSIONS",
    "OUTPUT_KEYS",
    "ClassifierExplainer",
    "ClassifierExplanation",
    "ImageFailure",
    "ImageSource",
    "collect_images",
    "explain_classifier",
    "output_filename",
    "output_keys",
    "picture_keys",
]


#: What the original tool called its two pictures per method (every other method ``m`` has
#: ``{m}-heatmap`` and ``{m}-cam``).
_ORIGINAL_KEYS = {"gradcam": ("heatmap", "cam"), "gradcam++": ("heatmap++", "cam++")}

#: Pictures of every run besides the methods' own: guided backprop and guided Grad-CAM.
GUIDED_KEYS: tuple[str, ...] = ("gb", "cam_gb")


def picture_keys(method: str) -> tuple[str, str]:
    """The output keys of a method's heatmap and overlay: ``("heatmap", "cam")`` for Grad-CAM,
    ``("heatmap++", "cam++")`` for Grad-CAM++ (the original tool's names), else
    ``("{method}-heatmap", "{method}-cam")``."""
    m = method_name(method)
    return _ORIGINAL_KEYS.get(m, (f"{m}-heatmap", f"{m}-cam"))


def output_keys(methods: Sequence[str] = DEFAULT_METHODS) -> tuple[str, ...]:
    """Every picture of a run with ``methods``: each method's heatmap and overlay, then ``gb``
    and ``cam_gb``. The default methods give :data:`OUTPUT_KEYS`."""
    return (*(k for m in methods for k in picture_keys(m)), *GUIDED_KEYS)


#: The six pictures per image and network, in the original tool's order and naming.
OUTPUT_KEYS: tuple[str, ...] = output_keys(DEFAULT_METHODS)


def output_filename(stem: str, network: str, key: str) -> str:
    """The original tool's file name: ``{stem}-{network}-{key}.jpg``."""
    return f"{stem}-{network}-{key}.jpg"


# ----------------------------------------------------------------------------- results


@dataclass
class ClassifierExplanation:
    """The explanation of one image by one network, at the image's original size ``(H, W)``.

    Attributes:
        image: Name (stem) used in file names.
        source: The image file, or ``None`` for an in-memory image.
        network: Network name used in file names.
        layer: Dotted name of the explained layer.
        class_id: The explained class (``None`` for a ``binary`` / ``regression`` target).
        class_name: Its name when known, else ``None``.
        score: The class's logit (the differentiated score).
        probability: Its softmax probability (``None`` for a ``binary`` / ``regression``
            target).
        original: The image, ``(H, W, 3)`` uint8 RGB.
        maps: ``maps[method]``: the method's map ``(H, W)`` float32 in [0, 1], for every
            computed method (canonical names of :data:`lightning_cam.methods.METHODS`), in order.
        guided_backprop: Guided backprop gradients ``(H, W, 3)`` float32 (RGB).
        guided_gradcam: Guided Grad-CAM ``(H, W, 3)`` float32: ``guided_backprop`` times the
            Grad-CAM map.
        files: Written files by output key (:func:`output_keys`), empty when nothing was written.
        target: The target spec explained (:mod:`lightning_cam.engine.target_spec`).
        value: What a ``binary`` / ``regression`` target's score means: ``sigmoid(z)``, the
            positive class's probability, or the output's value; ``None`` for class targets.

    ``gradcam`` and ``gradcam_pp`` are ``maps["gradcam"]`` and ``maps["gradcam++"]``.
    """

    image: str
    source: str | None
    network: str
    layer: str
    class_id: int | None
    class_name: str | None
    score: float
    probability: float | None
    original: np.ndarray
    maps: dict[str, np.ndarray]
    guided_backprop: np.ndarray
    guided_gradcam: np.ndarray
    files: dict[str, str] = field(default_factory=dict)
    target: str | int = "pred"
    value: float | None = None

    @property
    def methods(self) -> list[str]:
        """The computed methods, in order."""
        return list(self.maps)

    def map(self, method: str) -> np.ndarray:
        """The ``(H, W)`` map of ``method`` (a name or alias of the registry).

        Raises:
            ValueError: An unknown method, or one that was not computed.
        """
        m = method_name(method)
        if m not in self.maps:
            raise ValueError(
                f"method {method!r} was not computed for {self.image!r}; computed: "
                f"{self.methods} (pass methods=[..., {m!r}])"
            )
        return self.maps[m]

    def _alias(self, method: str) -> np.ndarray:
        try:
            return self.map(method)
        except ValueError as err:  # an attribute: hasattr() says False
            raise AttributeError(str(err)) from None

    @property
    def gradcam(self) -> np.ndarray:
        """Grad-CAM map ``(H, W)``: ``maps["gradcam"]``."""
        return self._alias("gradcam")

    @property
    def gradcam_pp(self) -> np.ndarray:
        """Grad-CAM++ map ``(H, W)``: ``maps["gradcam++"]``."""
        return self._alias("gradcam++")

    def pictures(self, alpha: float = 0.5, colormap: str = "jet") -> dict[str, np.ndarray]:
        """Every picture as ``(H, W, 3)`` uint8 RGB, keyed by :func:`output_keys`: a heatmap and
        an overlay per method, guided backprop and guided Grad-CAM."""
        out: dict[str, np.ndarray] = {}
        for method, cam in self.maps.items():
            heatmap, overlay = picture_keys(method)
            out[heatmap] = viz.colorize(cam, colormap=colormap)
            out[overlay] = viz.overlay(self.original, cam, alpha=alpha, colormap=colormap)
        out["gb"] = viz.gradients_to_image(_unit_scale(self.guided_backprop))
        out["cam_gb"] = viz.gradients_to_image(_unit_scale(self.guided_gradcam))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays): image, network, layer, class, score (for a
        ``binary`` / ``regression`` target: the spec, the score and its ``value`` instead of
        the class), the files by output key, and ``methods``: each method's files
        (``{"heatmap": ..., "cam": ...}``)."""
        by_method = {}
        for method in self.maps:
            keys = dict(zip(("heatmap", "cam"), picture_keys(method), strict=True))
            by_method[method] = {k: self.files[v] for k, v in keys.items() if v in self.files}
        explained: dict[str, Any] = (
            {"class_id": self.class_id, "class_name": self.class_name, "score": self.score,
             "probability": self.probability}
            if self.class_id is not None
            else {"target": self.target, "score": self.score, "value": self.value}
        )
        return {
            "image": self.source if self.source is not None else self.image,
            "name": self.image,
            "network": self.network,
            "layer": self.layer,
            **explained,
            "size": [int(self.original.shape[0]), int(self.original.shape[1])],
            "files": dict(self.files),
            "methods": by_method,
        }


def _unit_scale(grad: np.ndarray) -> np.ndarray:
    """Divide by the largest magnitude: the picture should not depend on the gradients' scale
    (tiny for an untrained or saturated network, below any fixed epsilon)."""
    peak = float(np.abs(grad).max()) if grad.size else 0.0
    return grad / peak if np.isfinite(peak) and peak > 0 else grad


@dataclass
class ImageFailure:
    """An image that could not be explained (unreadable, not an image, a write error).

    Attributes:
        image: Name (stem).
        source: The file, or ``None``.
        network: The network.
        error: One-line reason.
    """

    image: str
    source: str | None
    network: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "image": self.source if self.source is not None else self.image,
            "network": self.network,
            "error": self.error,
        }


# ----------------------------------------------------------------------------- the explainer


def _check_methods(methods: str | Sequence[str]) -> list[str]:
    """Canonical method names, in order, without duplicates; at least one."""
    if isinstance(methods, str):
        methods = (methods,)
    names = list(dict.fromkeys(method_name(m) for m in methods))
    if not names:
        raise ValueError(
            f"methods is empty; give at least one of {list(METHODS)} (default: "
            f"{list(DEFAULT_METHODS)})"
        )
    return names


def _check_target(target: str | int | None, class_id: int | None) -> TargetChoice:
    """The target of ``target`` and ``class_id`` (its alias): they must agree when both are
    given; ``label`` / ``labels`` are refused (image files carry no labels)."""
    choice = parse_target_spec(target)
    if class_id is not None:  # checked by _check_class_id (type, range)
        if target is not None and choice.spec != class_id:
            raise ValueError(f"class_id={class_id!r} and target={target!r} disagree: give one")
        choice = TargetChoice("class", class_id=class_id)
    if choice.kind in ("label", "labels"):
        raise ValueError(
            f"target={choice.spec!r} needs labels, which image files do not carry: use 'pred', "
            "a class id, 'binary' or 'regression:<index>' (labels: lightning-cam explain --data "
            "on class folders; multi-label heads: lightning_cam.explain_multilabel)"
        )
    return choice


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


class ClassifierExplainer:
    """A classifier ready to explain image files: model, preprocessing, layer and target.

    Build it once, call :meth:`explain` / :meth:`iter_explain` on any number of images.

    Args:
        model_or_name: A network name for :func:`lightning_cam.zoo.build_classifier` (seed
            network, alias, torchvision classifier), or a model ``(B, 3, H, W) -> logits``.
        layer: Dotted layer name; ``None`` for the engine's default (last spatial feature map).
        class_id: Class to explain for every image; ``None`` for each image's predicted class
            (the same as ``target=class_id``).
        weight_path: Weight file for a named network (``None``: torchvision's DEFAULT weights).
        image_size: Square input side for the model; ``None``: the network's own (299 for
            Inception v3, else 224; a lightning-cam checkpoint's training size), 224 for a
            model object.
        device: Device for the computation: ``None`` means the CPU for a named network and
            the model's own device for a model object (which is never moved).
        class_names: Names indexed by class id (overrides the weights' categories).
        network: Name used in file names; defaults to the requested name (or the model's class
            name in lower case).
        mean: Normalisation mean (RGB, images in [0, 1]); default: the network's (ImageNet).
        std: Normalisation std; default: the network's (ImageNet).
        num_classes: Head size for a named network (``None``: read from the weights).
        methods: CAM methods, names or aliases of :data:`lightning_cam.methods.METHODS`
            (default: Grad-CAM and Grad-CAM++). Guided Grad-CAM always uses the Grad-CAM map
            (computed from the same pass when ``"gradcam"`` is not among them).
        reshape_transform: How the layer's output reads as ``(B, C, h, w)``: ``"auto"``
            (default: recognised from the model, ambiguous layouts refused), ``"tokens"``,
            ``"channels_last"``, ``"channels_first"``, or a callable ``output -> (B, C, h, w)``;
            see :mod:`lightning_cam.engine.layouts`.
        target: A target spec (:mod:`lightning_cam.engine.target_spec`): ``"pred"`` (the
            default), a class id, ``"binary"`` / ``"binary:negative"`` (a single-logit head) or
            ``"regression:<index>[:increase|decrease]"``; ``"label"`` and ``"labels"`` need
            labels the images do not have.

    Raises:
        ValueError: Unknown layer (with close names) or method (with the known ones), class id
            out of range, class names whose count does not match the head, bad sizes or
            device; and everything
            :func:`~lightning_cam.zoo.build_classifier` raises for a named network.
    """

    def __init__(
        self,
        model_or_name: nn.Module | str | None,
        layer: str | None = None,
        class_id: int | None = None,
        weight_path: str | os.PathLike[str] | None = None,
        image_size: int | None = None,
        device: str | torch.device | None = None,
        class_names: Sequence[str] | None = None,
        network: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_classes: int | None = None,
        methods: str | Sequence[str] = DEFAULT_METHODS,
        reshape_transform: ReshapeTransform = "auto",
        target: str | int | None = None,
    ) -> None:
        self.methods = _check_methods(methods)
        self.target = _check_target(target, class_id)
        self.reshape_transform = check_reshape_transform(reshape_transform)
        if isinstance(model_or_name, nn.Module):
            self._borrow_model(model_or_name, device, weight_path, network)
        elif isinstance(model_or_name, str) or (model_or_name is None and weight_path):
            self.device = resolve_device(device if device is not None else "cpu")
            self.model, self.meta = build_classifier(
                model_or_name, weight_path=weight_path, num_classes=num_classes, device=self.device
            )
        else:
            raise TypeError(
                "model_or_name must be a network name or a torch.nn.Module, got "
                f"{type(model_or_name).__name__}"
            )
        self.network = network or self.meta.name
        if any(c in self.network for c in "/\\") or not self.network.strip():
            raise ValueError(f"network name {self.network!r} cannot be used in file names")
        self._set_preprocessing(image_size, mean, std)
        num = self.meta.num_classes or None
        self.categories: list[str] | None = self._check_class_names(class_names, num)
        self.class_id = self._check_class_id(
            self.target.class_id if self.target.kind == "class" else None, num
        )
        if layer is not None:
            get_layer(self.model, layer)  # ValueError with the closest names
        self.layer = layer

    def _borrow_model(
        self,
        model: nn.Module,
        device: str | torch.device | None,
        weight_path: str | os.PathLike[str] | None,
        network: str | None,
    ) -> None:
        """Set ``device``, ``model`` and ``meta`` for a model object, which is never moved."""
        # The model is borrowed: it stays where it is, and the work happens there.
        own = _module_device(model)
        self.device = resolve_device(device) if device is not None else own
        if self.device.type != own.type or (
            self.device.index is not None and own.index is not None
            and self.device.index != own.index
        ):  # fmt: skip
            raise ValueError(
                f"The model is on {own} but device={str(device)!r}; move the model "
                "(model.to(device)) or leave device=None."
            )
        if weight_path is not None:
            raise ValueError(
                "weight_path is for a network given by name; load the weights into the "
                "model object yourself."
            )
        name = network or type(model).__name__.lower()
        self.model = model
        self.meta = ClassifierMeta(
            name=name,
            arch=type(model).__name__,
            input_size=224,
            num_classes=0,  # unknown: the engine checks class ids against the logits
            categories=None,
            weights="(model object)",
        )

    def _set_preprocessing(
        self,
        image_size: int | None,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        """Set ``image_size``, ``mean`` and ``std``: the given ones, else the network's."""
        self.image_size = (
            _positive_int(image_size, "image_size", 8)
            if image_size is not None
            else self.meta.input_size
        )
        self.mean = tuple(float(m) for m in (mean if mean is not None else self.meta.mean))
        self.std = tuple(float(s) for s in (std if std is not None else self.meta.std))
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(
                f"mean and std need 3 values (RGB), std > 0; got mean={self.mean}, "
                f"std={self.std}"
            )

    def _check_class_names(
        self, class_names: Sequence[str] | None, num: int | None
    ) -> list[str] | None:
        """``class_names`` as strings (checked against the head size ``num``), else the meta's."""
        if class_names is None:
            return self.meta.categories
        names = [str(c) for c in class_names]
        if num is not None and len(names) != num:
            raise ValueError(
                f"{len(names)} class names given but {self.network} has {num} classes."
            )
        return names

    def _check_class_id(self, class_id: int | None, num: int | None) -> int | None:
        """``class_id`` checked against the head size ``num`` (``None``: unknown), as an int."""
        if class_id is None:
            return None
        if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)):
            raise ValueError(f"class_id must be an int, got {class_id!r}")
        if class_id < 0 or (num is not None and class_id >= num):
            valid = f"0..{num - 1}" if num is not None else ">= 0"
            raise ValueError(
                f"class id {class_id} is out of range for {self.network} with "
                f"{num if num is not None else 'its'} classes (valid ids: {valid})."
            )
        return int(class_id)

    @property
    def reshape_transform_name(self) -> str:
        """The layout as text: its name, or the callable's ``module.qualname``."""
        rt = self.reshape_transform
        if isinstance(rt, str):
            return rt
        name = getattr(rt, "__qualname__", None) or type(rt).__qualname__
        return f"{getattr(rt, '__module__', None) or '?'}.{name}"

    # ------------------------------------------------------------------ preprocessing

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(3, S, S)`` normalised float tensor (resized, no crop:
        the whole image is seen, so maps map back onto the whole image)."""
        s = self.image_size
        h, w = image.shape[:2]
        interp = cv2.INTER_AREA if (h > s and w > s) else cv2.INTER_LINEAR
        resized = cv2.resize(image, (s, s), interpolation=interp)
        x = torch.from_numpy(resized).to(torch.float32).div_(255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std

    def class_name(self, class_id: int) -> str | None:
        """Name of a class id when categories are known."""
        if self.categories is not None and 0 <= class_id < len(self.categories):
            return self.categories[class_id]
        return None

    # ------------------------------------------------------------------ running

    def check(self) -> None:
        """Explain one grey image of the input size, writing nothing.

        Finds the default layer once and surfaces what would fail on every image (a layer that
        is not a spatial map or never reached, an input size the network cannot take, a class
        id out of range for a model object) before any file is written.

        Raises:
            ValueError, RuntimeError, TypeError: As :meth:`iter_explain` would on a batch.
        """
        s = self.image_size
        grey = np.full((s, s, 3), 128, np.uint8)
        self._explain_batch([(ImageSource("check", array=grey), grey)])

    def iter_explain(
        self,
        images: ImagesArg,
        batch_size: int = 8,
        output_dir: str | os.PathLike[str] | None = None,
        errors: Literal["raise", "report"] = "raise",
    ) -> Iterator[ClassifierExplanation | ImageFailure]:
        """Explain images batch by batch, yielding one result per image as it is done.

        Args:
            images: Files, folders, globs, arrays/tensors, or a list / ``{name: image}`` of them
                (see :func:`collect_images`).
            batch_size: Images per forward pass.
            output_dir: Write the pictures of each image there (all of an image's pictures or
                none), else nothing.
            errors: ``"raise"``: an unreadable image or a failed write raises. ``"report"``:
                yield an :class:`ImageFailure` for it and go on with the others.

        Yields:
            :class:`ClassifierExplanation` (or :class:`ImageFailure` with ``errors="report"``),
            in input order.

        Raises:
            ValueError, RuntimeError: Errors of the model or the engine (a layer never reached,
                an input size the network cannot take) are raised whatever ``errors`` says:
                they concern every image.
        """
        batch_size = _positive_int(batch_size, "batch_size")
        if errors not in ("raise", "report"):
            raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}")
        sources = collect_images(images)
        out_dir = Path(output_dir) if output_dir is not None else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            loaded: list[tuple[ImageSource, np.ndarray]] = []
            pending: dict[int, ImageFailure] = {}
            for i, src in enumerate(chunk):
                try:
                    loaded.append((src, src.load()))
                except (OSError, ValueError) as err:
                    if errors == "raise":
                        raise
                    pending[i] = self._failure(src, err)
            results = iter(self._explain_batch(loaded) if loaded else [])
            for i, src in enumerate(chunk):
                if i in pending:
                    yield pending[i]
                    continue
                result = next(results)
                if out_dir is not None:
                    try:
                        result.files = self.write(result, out_dir)
                    except (OSError, ValueError) as err:
                        if errors == "raise":
                            raise
                        yield self._failure(src, err)
                        continue
                yield result

    def explain(
        self,
        images: ImagesArg,
        batch_size: int = 8,
        output_dir: str | os.PathLike[str] | None = None,
        errors: Literal["raise", "report"] = "raise",
    ) -> list[ClassifierExplanation | ImageFailure]:
        """All results of :meth:`iter_explain` as a list."""
        return list(self.iter_explain(images, batch_size, output_dir, errors))

    __call__ = explain

    def _failure(self, src: ImageSource, err: BaseException) -> ImageFailure:
        return ImageFailure(
            image=src.name,
            source=str(src.path) if src.path is not None else None,
            network=self.network,
            error=one_line(err),
        )

    def _explain_batch(
        self, loaded: list[tuple[ImageSource, np.ndarray]]
    ) -> list[ClassifierExplanation]:
        x = torch.stack([self.preprocess(img) for _, img in loaded]).to(self.device)
        computed = list(dict.fromkeys([*self.methods, "gradcam"]))  # guided Grad-CAM needs it
        out = explain(
            self.model,
            x,
            layer=self.layer,
            methods=computed,
            target=self.class_id if self.target.per_class else SpecScore(self.target),
            guided_backprop=True,
            upsample=False,
            reshape_transform=self.reshape_transform,
        )
        layer = out.layers[0]
        if self.layer is None:
            self.layer = layer  # the default, found once: no probe pass for later batches
        assert out.guided is not None and out.scores is not None
        if out.logits is not None and out.logits.dim() == 2:
            why = self.target.refusal(int(out.logits.shape[1]))  # a class id of a (B, 1) head
            if why is not None:
                raise ValueError(why)
        if not self.target.per_class:
            values = self.target.explained_value(out.scores)
            probs = torch.full_like(out.scores, float("nan"))
        else:
            assert out.class_ids is not None
            probs = (
                class_probabilities(out.logits).gather(1, out.class_ids[:, None]).squeeze(1)
                if out.logits is not None else torch.full_like(out.scores, float("nan"))
            )
        results = []
        for i, (src, image) in enumerate(loaded):
            size = image.shape[:2]
            maps = {
                m: _resize(out.cams[m][layer][i][None], size)[0].clamp_(0, 1)
                for m in computed
            }
            cam = maps["gradcam"]
            gb = _resize(out.guided[i], size)
            cid = int(out.class_ids[i]) if out.class_ids is not None else None
            results.append(
                ClassifierExplanation(
                    image=src.name,
                    source=str(src.path) if src.path is not None else None,
                    network=self.network,
                    layer=layer,
                    class_id=cid,
                    class_name=self.class_name(cid) if cid is not None else None,
                    score=float(out.scores[i]),
                    probability=float(probs[i]) if cid is not None else None,
                    target=self.target.spec,
                    value=None if cid is not None else float(values[i]),
                    original=image,
                    maps={m: maps[m].numpy() for m in self.methods},
                    guided_backprop=gb.permute(1, 2, 0).contiguous().numpy(),
                    guided_gradcam=(gb * cam[None]).permute(1, 2, 0).contiguous().numpy(),
                )
            )
        return results

    def write(self, result: ClassifierExplanation, output_dir: str | os.PathLike[str]) -> dict[
        str, str
    ]:
        """Write the pictures of ``result`` into ``output_dir``: all of them or none (each to a
        temporary name first, then moved into place; on a failure, none is left).

        Returns:
            File names (relative to ``output_dir``) by output key.

        Raises:
            OSError, ValueError: A picture cannot be encoded or written (nothing is left).
        """
        out = Path(output_dir)
        pictures = result.pictures()
        files = {key: output_filename(result.image, result.network, key) for key in pictures}
        save_images({out / files[key]: picture for key, picture in pictures.items()})
        return files


def _module_device(model: nn.Module) -> torch.device:
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, h, w)`` -> ``(C, H, W)`` float32 on the CPU, bilinear (pixel centres aligned)."""
    t = t.detach().float()
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0]
    return t.cpu()


def explain_classifier(
    model_or_name: nn.Module | str,
    images: ImagesArg,
    layer: str | None = None,
    class_id: int | None = None,
    weight_path: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    network: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    errors: Literal["raise", "report"] = "raise",
    methods: str | Sequence[str] = DEFAULT_METHODS,
    reshape_transform: ReshapeTransform = "auto",
    target: str | int | None = None,
) -> list[ClassifierExplanation | ImageFailure]:
    """Explain a classifier on images: CAM maps (default: Grad-CAM and Grad-CAM++), guided
    backprop, guided Grad-CAM.

    A shortcut for ``ClassifierExplainer(...).explain(images, ...)``; see
    :class:`ClassifierExplainer` for the arguments.

    Args:
        model_or_name: Network name (``"resnet50"``, ``"shufflenet_v2"``, any torchvision
            classifier) or a model object.
        images: Files, folders, globs, arrays/tensors, or a list / ``{name: image}`` of them.
        layer: Dotted layer name (``None``: the default layer).
        class_id: Class to explain (``None``: each image's predicted class).
        target: A target spec instead (``"binary"``, ``"regression:1:decrease"``, ...; see
            :class:`ClassifierExplainer`).
        weight_path: Weights for a named network (``None``: torchvision's DEFAULT weights).
        image_size: Model input side (``None``: the network's own).
        batch_size: Images per forward pass.
        device: Device.
        output_dir: When given, write the pictures of each image there, all or none (default
            methods: ``{stem}-{network}-heatmap.jpg``, ``-cam.jpg``, ``-heatmap++.jpg``,
            ``-cam++.jpg``, ``-gb.jpg``, ``-cam_gb.jpg``).
        class_names: Names by class id.
        network: Name used in file names.
        mean: Normalisation mean (default: the network's).
        std: Normalisation std (default: the network's).
        errors: ``"raise"`` or ``"report"`` (failed images become :class:`ImageFailure`).
        methods: CAM methods of :data:`lightning_cam.methods.METHODS` (names or aliases); each
            method other than Grad-CAM / Grad-CAM++ writes ``{stem}-{network}-{method}-heatmap.jpg``
            and ``-{method}-cam.jpg``.
        reshape_transform: How the layer's output reads as ``(B, C, h, w)`` (``"auto"``,
            ``"tokens"``, ``"channels_last"``, ``"channels_first"`` or a callable); see
            :class:`ClassifierExplainer`.

    Returns:
        One :class:`ClassifierExplanation` per image (maps at the image's own size), in input
        order; :class:`ImageFailure` entries only with ``errors="report"``.

    Example:
        >>> import numpy as np, torchvision
        >>> net = torchvision.models.mobilenet_v2(weights=None)
        >>> img = np.zeros((50, 70, 3), np.uint8)
        >>> [r] = explain_classifier(net, [img], image_size=64, class_id=3)
        >>> r.class_id, r.gradcam.shape
        (3, (50, 70))
    """
    explainer = ClassifierExplainer(
        model_or_name,
        layer=layer,
        class_id=class_id,
        weight_path=weight_path,
        image_size=image_size,
        device=device,
        class_names=class_names,
        network=network,
        mean=mean,
        std=std,
        methods=methods,
        reshape_transform=reshape_transform,
        target=target,
    )
    return explainer.explain(images, batch_size=batch_size, output_dir=output_dir, errors=errors)

