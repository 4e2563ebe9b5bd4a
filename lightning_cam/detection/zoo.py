"""torchvision detectors by name, with weights from a file or torchvision's DEFAULT weights.

``build_detector(name, weight_path=None)`` returns a detector in eval mode and a
:class:`DetectorMeta`. Weights come from, in this order:

- ``weight_path``: a ``state_dict`` file, read by :mod:`lightning_cam.zoo.weights` like the
  classifiers' (nested under ``"state_dict"`` / ``"model"`` / ..., ``module.`` / ``_orig_mod.``
  and a LightningModule's ``detector.`` prefixes stripped), or a Lightning checkpoint of
  :class:`~lightning_cam.detection.module.ShapesDetector` (rebuilt from its hyper-parameters).
  The number of classes is read from the file.
- Neither: torchvision's ``DEFAULT`` (COCO) weights, from the local torch hub cache or
  downloaded when online; offline without a cached copy,
  :class:`~lightning_cam.zoo.PretrainedWeightsUnavailableError` says what to do. The loader is
  :data:`load_pretrained`, replaceable (tests simulate an offline machine by swapping it).

Example:
    >>> import torch, torchvision
    >>> det = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
    ...                                    weights_backbone=None, num_classes=3)
    >>> torch.save(det.state_dict(), "/tmp/det.pth")
    >>> model, meta = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", "/tmp/det.pth")
    >>> meta.num_classes, meta.categories
    (3, None)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_cam.detection.architectures import (
    CUSTOM_DETECTORS,
    DETECTORS,
    make_detector,
    resolve_detector,
)
from lightning_cam.zoo.classifiers import resolve_device
from lightning_cam.zoo.weights import (
    StateDictMismatchError,
    check_fit,
    download_or_refuse,
    extract_state_dict,
    is_lightning_checkpoint,
    read_weight_file,
    state_shapes,
    strip_prefixes,
    strip_wrapper_prefixes,
)

__all__ = [
    "CUSTOM_DETECTORS",
    "DETECTORS",
    "DetectorMeta",
    "build_detector",
    "configure_detector",
    "coco_categories",
    "load_pretrained",
    "resolve_detector",
]

# Key of the classification weights in each family's state_dict, and output channels per class.
_CLS_KEYS = (
    ("roi_heads.box_predictor.cls_score.weight", 1),
    ("head.classification_head.cls_logits.weight", None),  # RetinaNet: A anchors; FCOS: 1
)


@dataclass
class DetectorMeta:
    """What :func:`build_detector` knows about the detector it built.

    Attributes:
        name: The torchvision builder name.
        num_classes: Number of labels, background included.
        categories: Names indexed by label (COCO's for torchvision's weights, a checkpoint's
            ``class_names``), else ``None``.
        weights: Where the weights came from (a path, or ``"torchvision:<Weights enum>"``).
    """

    name: str
    num_classes: int
    categories: list[str] | None = None
    weights: str = ""

    def class_name(self, label: int) -> str:
        """Name of ``label``; ``"class <label>"`` when unknown."""
        if self.categories is not None and 0 <= label < len(self.categories):
            return self.categories[label]
        return f"class {label}"


def coco_categories(name: str) -> list[str] | None:
    """COCO category names of torchvision's ``DEFAULT`` weights of ``name`` (no download)."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None
    cats = weights.meta.get("categories")
    return list(cats) if cats else None


def _pretrained_from_torchvision(name: str, weights: Any, **kwargs: Any) -> nn.Module:
    """Default :data:`load_pretrained`: torchvision's builder with ``weights`` (reads the torch
    hub cache, downloads when the file is not there)."""
    import torchvision

    return torchvision.models.get_model(name, weights=weights, progress=False, **kwargs)


#: Loads torchvision's pretrained detector: ``(name, weights_enum, **kwargs) -> model``. Replace
#: it to use another source or to simulate an offline machine; ``OSError`` /
#: ``http.client.HTTPException`` become :class:`PretrainedWeightsUnavailableError`.
load_pretrained: Callable[..., nn.Module] = _pretrained_from_torchvision


def _num_classes(name: str, sd: Mapping[str, torch.Tensor]) -> int | None:
    """The class count from the classification weights (under any leading prefix, such as a
    LightningModule's ``detector.``)."""
    for key, per in _CLS_KEYS:
        found = [k for k in sd if k == key or k.endswith("." + key)]
        if found:
            rows = int(sd[min(found, key=len)].shape[0])
            if per is None:
                per = 9 if name.startswith("retinanet") else 1
            return rows // per
    return None


def configure_detector(
    detector: nn.Module, score_threshold: float | None = None, top_k: int | None = None
) -> nn.Module:
    """Let the detector return every detection an explainer may ask for.

    Lowers the detector's own score threshold to ``score_threshold`` (never raises it) and raises
    its detections-per-image limit to ``top_k`` (never lowers it): Faster R-CNN's
    ``roi_heads.score_thresh`` / ``roi_heads.detections_per_img``, RetinaNet's and FCOS's
    ``score_thresh`` / ``detections_per_img``. Changes the detector in place and returns it.
    """
    owner: Any = getattr(detector, "roi_heads", detector)
    if score_threshold is not None and hasattr(owner, "score_thresh"):
        owner.score_thresh = min(float(owner.score_thresh), float(score_threshold))
    if top_k is not None and hasattr(owner, "detections_per_img"):
        owner.detections_per_img = max(int(owner.detections_per_img), int(top_k))
    return detector


def _transform_kwargs(min_size: int | None, max_size: int | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if min_size is not None:
        kwargs["min_size"] = int(min_size)
    if max_size is not None:
        kwargs["max_size"] = int(max_size)
    return kwargs


def build_detector(
    name: str | None = None,
    weight_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    min_size: int | None = None,
    max_size: int | None = None,
) -> tuple[nn.Module, DetectorMeta]:
    """Build a torchvision detector with weights, in eval mode on ``device``.

    Args:
        name: A name in :data:`DETECTORS`; ``None`` only with a ShapesDetector checkpoint (its
            own architecture).
        weight_path: A state_dict file or a ShapesDetector Lightning checkpoint; ``None`` for
            torchvision's DEFAULT (COCO) weights.
        device: Where to put the model.
        min_size: Override of the detector's input resize (shorter side), e.g. for speed.
        max_size: Override of the longer side's limit.

    Returns:
        ``(detector, meta)``.

    Raises:
        ValueError: Unknown name or device, unusable weight file (``WeightFileError``,
            ``StateDictMismatchError``).
        PretrainedWeightsUnavailableError: DEFAULT weights neither cached nor downloadable.
    """
    dev = resolve_device(device)
    arch = resolve_detector(name) if name is not None else None
    sizes = _transform_kwargs(min_size, max_size)
    if weight_path is None:
        if arch is None:
            raise ValueError("Name a detector (--model) or give a checkpoint (--weight-path).")
        model, meta = _pretrained_detector(arch, sizes)
    else:
        model, meta = _detector_from_file(arch, os.fspath(weight_path), sizes)
    return model.to(dev).eval(), meta


def _pretrained_detector(arch: str, sizes: dict[str, Any]) -> tuple[nn.Module, DetectorMeta]:
    """``arch`` with torchvision's DEFAULT weights (from the torch cache or downloaded)."""
    import torchvision

    if arch in CUSTOM_DETECTORS:
        raise ValueError(f"{arch} has no pretrained weights; pass --weight-path FILE")
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    model = download_or_refuse(
        load_pretrained, arch, weights, arch,
        "--weight-path FILE (a state_dict saved with torch.save(detector.state_dict(), FILE), or "
        "a ShapesDetector checkpoint)", **sizes,
    )  # fmt: skip
    cats = list(weights.meta.get("categories") or []) or None
    return model, DetectorMeta(arch, len(cats) if cats else 91, cats, f"torchvision:{weights}")


def _checkpoint_arch(arch: str | None, ckpt_arch: Any, path: str) -> str:
    """The architecture: the requested one, else the checkpoint's; they must agree."""
    if arch is None:
        if not ckpt_arch:
            raise ValueError(
                f"{path!r} is not a ShapesDetector checkpoint: name its architecture with --model."
            )
        return resolve_detector(str(ckpt_arch))
    if ckpt_arch and resolve_detector(str(ckpt_arch)) != arch:
        raise ValueError(
            f"{path!r} is a checkpoint of {ckpt_arch}, not {arch}; drop --model or fix it."
        )
    return arch


def _detector_from_file(
    arch: str | None, path: str, sizes: dict[str, Any]
) -> tuple[nn.Module, DetectorMeta]:
    """A detector with the weights of ``path`` (a state_dict or a ShapesDetector checkpoint)."""
    import torchvision

    obj = read_weight_file(path)
    hparams: Mapping[str, Any] = {}
    if isinstance(obj, Mapping) and is_lightning_checkpoint(obj):
        hparams = obj.get("hyper_parameters") or {}
    ckpt_arch = hparams.get("arch") if isinstance(hparams, Mapping) else None
    arch = _checkpoint_arch(arch, ckpt_arch, path)
    sd = strip_wrapper_prefixes(extract_state_dict(obj, path))
    num_classes = _num_classes(arch, sd)
    if num_classes is None:
        raise StateDictMismatchError(
            f"The weights in {path!r} have no classification head of {arch} "
            "(e.g. roi_heads.box_predictor.cls_score.weight); check --model.", [], [], [],
        )
    if ckpt_arch or arch in CUSTOM_DETECTORS:  # rebuilt as trained (anchors, box head...)
        import inspect

        params = inspect.signature(make_detector).parameters
        kwargs: dict[str, Any] = {k: v for k, v in hparams.items() if k in params}
        kwargs.update(arch=arch, num_classes=num_classes, **sizes)
        model = make_detector(**kwargs)
    else:
        model = torchvision.models.get_model(
            arch, weights=None, weights_backbone=None, num_classes=num_classes, **sizes
        )
    wanted = state_shapes(model)
    sd = strip_prefixes(sd, set(wanted))
    check_fit(sd, wanted, arch, path, hint="Check --model")
    model.load_state_dict(sd, strict=False)  # checked: only num_batches_tracked may be absent
    categories: list[str] | None = None
    names = hparams.get("class_names")
    if names and len(names) == num_classes:
        categories = [str(n) for n in names]
    elif num_classes == 91:
        categories = coco_categories(arch)
    return model, DetectorMeta(arch, num_classes, categories, path)
