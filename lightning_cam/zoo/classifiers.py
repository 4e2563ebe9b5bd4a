"""Classifier zoo: the seed networks, any torchvision classifier, and weight loading.

``build_classifier(name, weight_path)`` returns a ready-to-explain model (eval mode, on the
requested device) and a :class:`ClassifierMeta` with what the explainer needs to feed it: input
size, normalisation and, when known, the category names.

Weights come from, in this order:

- ``weight_path`` pointing to a ``state_dict`` file (``.pth``/``.pt``; also a dict that wraps one
  under ``"state_dict"`` / ``"model"`` / ``"model_state_dict"``; ``module.`` prefixes from
  ``DataParallel``/DDP and ``_orig_mod.`` from ``torch.compile`` are stripped). The number of
  classes is read from the file when it differs from ImageNet's 1000.
- ``weight_path`` pointing to a Lightning checkpoint of a lightning-cam LightningModule
  (:class:`lightning_cam.models.ShapesClassifier`): rebuilt from the checkpoint's
  hyper-parameters; class names come from them.
- Neither: torchvision's ``DEFAULT`` weights, from the local torch hub cache or downloaded when
  online. Offline with no cached copy, :class:`PretrainedWeightsUnavailableError` says how to pass
  a weight file instead. The loader is :data:`load_pretrained`, replaceable (tests simulate an
  offline machine by swapping it, or ``torch.hub.download_url_to_file``).

Files are read by :mod:`lightning_cam.zoo.weights` with ``torch.load(weights_only=True)``: tensors
and plain containers only, never arbitrary pickled objects.

Example:
    >>> import torch, torchvision
    >>> torch.save(torchvision.models.resnet18(weights=None).state_dict(), "/tmp/r18.pth")
    >>> model, meta = build_classifier("resnet18", weight_path="/tmp/r18.pth")
    >>> meta.input_size, meta.num_classes, meta.categories[0]
    (224, 1000, 'tench')
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_cam.zoo.meta import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_NUM_CLASSES,
    ClassifierMeta,
    UnknownNetworkError,
    resolve_device,
)
from lightning_cam.zoo.weights import (
    PretrainedWeightsUnavailableError,
    StateDictMismatchError,
    WeightFileError,
    WeightFileNotFoundError,
    check_fit,
    download_or_refuse,
    extract_state_dict,
    is_lightning_checkpoint,
    read_weight_file,
    state_shapes,
    strip_prefixes,
)

# The names these had before weight files moved to lightning_cam.zoo.weights.
_extract_state_dict = extract_state_dict
_strip_prefixes = strip_prefixes
_shapes = state_shapes
_check_fit = check_fit
_is_lightning_checkpoint = is_lightning_checkpoint

__all__ = [
    "ALIASES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SEED_NETWORKS",
    "ClassifierMeta",
    "PretrainedWeightsUnavailableError",
    "StateDictMismatchError",
    "UnknownNetworkError",
    "WeightFileError",
    "WeightFileNotFoundError",
    "build_classifier",
    "checkpoint_backbone",
    "load_pretrained",
    "network_names",
    "read_weight_file",
    "resolve_device",
    "resolve_network",
    "torchvision_classifiers",
]

#: The networks of the original Grad-CAM.pytorch tool (``--network all`` runs these).
SEED_NETWORKS: tuple[str, ...] = (
    "vgg16",
    "vgg19",
    "resnet50",
    "resnet101",
    "densenet121",
    "inception_v3",
    "mobilenet_v2",
    "shufflenet_v2",
)

#: Short names accepted besides torchvision's (the original tool's ``vgg``, ``resnet``, ...).
ALIASES: dict[str, str] = {
    "shufflenet_v2": "shufflenet_v2_x1_0",
    "vgg": "vgg16",
    "resnet": "resnet50",
    "densenet": "densenet121",
    "inception": "inception_v3",
    "mobilenet": "mobilenet_v2",
    "shufflenet": "shufflenet_v2_x1_0",
}


# torchvision's classifiers have an ImageNet head by default.
_TORCHVISION_NUM_CLASSES = TORCHVISION_NUM_CLASSES
# Builders whose random initialisation is slow (scipy-free truncated normal over every conv)
# and useless when weights are loaded right after.
_INIT_WEIGHTS_ARG = {"inception_v3", "googlenet"}
# Auxiliary classifiers: built only when the weight file has them.
_AUX_PREFIXES = {"inception_v3": ("AuxLogits.",), "googlenet": ("aux1.", "aux2.")}
# timm:<name> and hf:<folder> networks are built by lightning_cam.zoo.hubs.
_EXTERNAL_PREFIXES = ("timm:", "hf:")


# ----------------------------------------------------------------------------- names


def torchvision_classifiers() -> list[str]:
    """Names of all torchvision classification models (``torchvision.models.list_models``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def network_names() -> list[str]:
    """Every accepted network name: seed networks, aliases, then torchvision classifiers."""
    names = list(SEED_NETWORKS)
    for n in [*ALIASES, *torchvision_classifiers()]:
        if n not in names:
            names.append(n)
    return names


def resolve_network(name: str) -> str:
    """Return the torchvision builder name for ``name`` (case-insensitive, ``-`` = ``_``).

    Raises:
        UnknownNetworkError: With close matches and the list of valid names.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownNetworkError(f"Network name must be a non-empty string, got {name!r}.")
    if name.strip().lower().startswith(_EXTERNAL_PREFIXES):
        return name.strip()  # built by lightning_cam.zoo.hubs
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    available = torchvision_classifiers()
    if key in available:
        return key
    valid = network_names()
    close = difflib.get_close_matches(key, valid, n=4, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownNetworkError(
        f"Unknown network {name!r}.{hint} Seed networks: {', '.join(SEED_NETWORKS)}; "
        f"also any torchvision classifier: {', '.join(available)}."
    )


def default_input_size(arch: str) -> int:
    """The input side a torchvision classifier is meant for: 299 for Inception v3, else 224."""
    return 299 if arch == "inception_v3" else 224


# ----------------------------------------------------------------------------- weight files
# Reading and checking weight files is lightning_cam.zoo.weights' job (one loader for every zoo).


def checkpoint_backbone(path: str | os.PathLike[str]) -> str | None:
    """The backbone of a lightning-cam checkpoint (``ShapesClassifier``), else ``None``.

    Raises:
        WeightFileNotFoundError, WeightFileError: As :func:`read_weight_file`.
    """
    obj = read_weight_file(path)
    if isinstance(obj, Mapping) and is_lightning_checkpoint(obj):
        hparams = obj.get("hyper_parameters") or {}
        if isinstance(hparams, Mapping) and "backbone" in hparams and "num_classes" in hparams:
            return str(hparams["backbone"])
    return None


def _infer_num_classes(
    sd: Mapping[str, torch.Tensor], wanted: Mapping[str, tuple[int, ...]], default: int
) -> int | None:
    """The class count of a fine-tuned head: keys whose shape differs from the default head's
    only in the first dimension (``fc.weight`` ``(10, 2048)`` vs ``(1000, 2048)``)."""
    found = {
        int(v.shape[0])
        for k, v in sd.items()
        if k in wanted
        and v.dim() >= 1
        and wanted[k][:1] == (default,)
        and tuple(v.shape) != wanted[k]
        and tuple(v.shape[1:]) == wanted[k][1:]
    }
    return found.pop() if len(found) == 1 else None


# ----------------------------------------------------------------------------- building


def _construct(arch: str, meta_device: bool, **kwargs: Any) -> nn.Module:
    """Build a torchvision classifier without weights; on the meta device when it can be (no
    memory, no initialisation cost: everything is overwritten by the loaded weights)."""
    import torchvision

    if arch in _INIT_WEIGHTS_ARG:
        kwargs.setdefault("init_weights", False)
    if meta_device:
        try:
            with torch.device("meta"):
                return torchvision.models.get_model(arch, weights=None, **kwargs)
        except Exception:  # noqa: BLE001 - some builders compute on tensors (RegNet): go real
            pass
    return torchvision.models.get_model(arch, weights=None, **kwargs)


def _materialize(model: nn.Module, arch: str, device: torch.device, **kwargs: Any) -> nn.Module:
    """Turn a meta-device model into a real one with uninitialised storage on ``device``."""
    if not any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return model.to(device)
    persistent = set(model.state_dict())
    if any(n not in persistent for n, _ in model.named_buffers()):
        # Non-persistent buffers would stay uninitialised: build for real instead.
        return _construct(arch, meta_device=False, **kwargs).to(device)
    return model.to_empty(device=device)


def _imagenet_categories(arch: str) -> list[str] | None:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):  # pragma: no cover - every classifier has one
        return None
    categories = weights.meta.get("categories")
    return list(categories) if categories else None


def _pretrained_from_torchvision(arch: str, weights: Any) -> nn.Module:
    """Default :data:`load_pretrained`: ``torchvision.models.get_model(arch, weights=...)``,
    which reads the torch hub cache and downloads when the file is not there."""
    import torchvision

    return torchvision.models.get_model(arch, weights=weights, progress=False)


#: Loads torchvision's pretrained weights: ``(arch, weights_enum) -> model``. Replace it (e.g.
#: ``monkeypatch.setattr(zoo, "load_pretrained", ...)``) to use another source or to simulate
#: an offline machine; network errors (``OSError``, ``http.client.HTTPException``) it raises
#: become :class:`PretrainedWeightsUnavailableError`.
load_pretrained: Callable[[str, Any], nn.Module] = _pretrained_from_torchvision


def _build_pretrained(
    name: str, arch: str, num_classes: int | None, device: torch.device
) -> tuple[nn.Module, ClassifierMeta]:
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    categories = list(weights.meta.get("categories") or []) or None
    if num_classes is not None and categories is not None and num_classes != len(categories):
        raise ValueError(
            f"num_classes={num_classes} does not fit torchvision's pretrained {arch} "
            f"({len(categories)} classes); pass a weight file for a fine-tuned head."
        )
    model = download_or_refuse(
        load_pretrained, arch, weights, name,
        "--weight-path FILE on the command line (weight_path=FILE in Python), a state_dict saved "
        "with torch.save(model.state_dict(), FILE) or a Lightning checkpoint",
    )  # fmt: skip
    meta = ClassifierMeta(
        name=name,
        arch=arch,
        input_size=default_input_size(arch),
        num_classes=len(categories) if categories else _TORCHVISION_NUM_CLASSES,
        categories=categories,
        weights=f"torchvision:{weights}",
    )
    return model.to(device).eval(), meta


def _build_from_state_dict(
    name: str,
    arch: str,
    sd: dict[str, torch.Tensor],
    path: str,
    num_classes: int | None,
    device: torch.device,
) -> tuple[nn.Module, ClassifierMeta]:
    kwargs: dict[str, Any] = {}
    for prefix in _AUX_PREFIXES.get(arch, ()):
        if not any(k.startswith(prefix) or f".{prefix}" in k for k in sd):
            kwargs["aux_logits"] = False
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    skeleton = _construct(arch, meta_device=True, **kwargs)
    wanted = state_shapes(skeleton)
    sd = strip_prefixes(sd, set(wanted))
    if num_classes is None:
        inferred = _infer_num_classes(sd, wanted, _TORCHVISION_NUM_CLASSES)
        if inferred is not None:
            kwargs["num_classes"] = inferred
            skeleton = _construct(arch, meta_device=True, **kwargs)
            wanted = state_shapes(skeleton)
    check_fit(sd, wanted, name if name == arch else f"{name} ({arch})", path)
    model = _materialize(skeleton, arch, device, **kwargs)
    model.load_state_dict(sd, strict=False)
    with torch.no_grad():
        for key in wanted:  # only num_batches_tracked can be absent (files from before 0.4.1)
            if key not in sd:
                model.get_buffer(key).zero_()
    n_classes = int(kwargs.get("num_classes", _TORCHVISION_NUM_CLASSES))
    categories = _imagenet_categories(arch) if n_classes == _TORCHVISION_NUM_CLASSES else None
    if categories is not None and len(categories) != n_classes:  # pragma: no cover - defensive
        categories = None
    meta = ClassifierMeta(
        name=name,
        arch=arch,
        input_size=default_input_size(arch),
        num_classes=n_classes,
        categories=categories,
        weights=path,
    )
    return model.eval(), meta


def _build_from_lightning(
    name: str | None,
    ckpt: Mapping[str, Any],
    path: str,
    device: torch.device,
) -> tuple[nn.Module, ClassifierMeta] | None:
    """Rebuild a lightning-cam ``ShapesClassifier`` from its checkpoint; ``None`` when the
    checkpoint is not one (the caller then treats its state_dict as a plain one)."""
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if "backbone" not in hparams or "num_classes" not in hparams:
        return None
    import inspect

    try:
        from lightning_cam.models import ShapesClassifier
    except ImportError as err:  # pragma: no cover - models ship with the package
        raise WeightFileError(
            f"{path!r} is a lightning-cam checkpoint but lightning_cam.models cannot be "
            f"imported ({err})."
        ) from err
    backbone = str(hparams["backbone"])
    if name is not None and name.strip().lower() not in {backbone.lower(), "shapesclassifier"}:
        raise WeightFileError(
            f"{path!r} is a lightning-cam checkpoint of a ShapesClassifier with backbone "
            f"{backbone!r}, but network {name!r} was requested; omit the network (--network) or "
            f"pass {backbone!r}."
        )
    # LightningCLI adds keys such as ``_instantiator``: keep the constructor's arguments only.
    accepted = set(inspect.signature(ShapesClassifier.__init__).parameters) - {"self"}
    try:
        model = ShapesClassifier(**{k: v for k, v in hparams.items() if k in accepted})
    except (TypeError, ValueError) as err:
        raise WeightFileError(
            f"Cannot rebuild the ShapesClassifier of {path!r} from its hyper-parameters "
            f"({type(err).__name__}: {err})."
        ) from err
    sd = extract_state_dict(ckpt, path)
    check_fit(sd, state_shapes(model), f"ShapesClassifier(backbone={backbone!r})", path)
    model.load_state_dict(sd, strict=False)
    class_names = hparams.get("class_names")
    # The images it was trained on: the datamodule's size when the checkpoint records it, else
    # the shapes data's default (64). ShapesClassifier normalises inside forward: inputs stay
    # in [0, 1] (mean 0, std 1 here).
    data_hparams = ckpt.get("datamodule_hyper_parameters") or {}
    image_size = data_hparams.get("image_size") if isinstance(data_hparams, Mapping) else None
    meta = ClassifierMeta(
        name=name or backbone,
        arch="ShapesClassifier",
        input_size=int(image_size or 64),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        num_classes=int(hparams["num_classes"]),
        categories=list(class_names) if class_names else None,
        weights=path,
        extra={"backbone": backbone},
    )
    return model.to(device).eval(), meta


def build_classifier(
    name: str | None,
    weight_path: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, ClassifierMeta]:
    """Build a classifier by name and load its weights.

    Args:
        name: A seed network (``vgg16``, ``vgg19``, ``resnet50``, ``resnet101``,
            ``densenet121``, ``inception_v3``, ``mobilenet_v2``, ``shufflenet_v2``), an alias,
            any torchvision classifier name, ``timm:<name>`` or ``hf:<folder>`` (see
            :mod:`lightning_cam.zoo.hubs`). May be ``None`` when ``weight_path`` is a
            lightning-cam checkpoint (the checkpoint names its backbone).
        weight_path: A state_dict file or a Lightning checkpoint; ``None`` for torchvision's
            ``DEFAULT`` weights (local torch hub cache, or a download when online).
        num_classes: Head size; ``None`` reads it from the weight file (or 1000).
        device: Where to put the model.

    Returns:
        ``(model, meta)``: the model in eval mode on ``device`` and its
        :class:`ClassifierMeta`.

    Raises:
        UnknownNetworkError: Unknown name (the message lists valid names and close matches).
        WeightFileNotFoundError: ``weight_path`` does not exist.
        WeightFileError: Unreadable file, not a torch file, no state_dict in it.
        StateDictMismatchError: The state_dict does not fit the network (missing / unexpected
            keys, shape mismatches; counts and the first few names).
        PretrainedWeightsUnavailableError: No weight file, and torchvision's weights are neither
            cached nor downloadable.
        ValueError: Bad device or ``num_classes``.

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.mobilenet_v2(weights=None, num_classes=3)
        >>> torch.save({"state_dict": net.state_dict()}, "/tmp/mnv2.pt")
        >>> model, meta = build_classifier("mobilenet_v2", "/tmp/mnv2.pt")
        >>> meta.num_classes, meta.categories
        (3, None)
    """
    dev = resolve_device(device)
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if isinstance(name, str) and name.strip().lower().startswith(_EXTERNAL_PREFIXES):
        from lightning_cam.zoo.hubs import build_external  # timm:<name>, hf:<folder>

        return build_external(name, weight_path, num_classes, dev)
    if weight_path is None:
        if name is None:
            raise ValueError("Give a network name, a weight_path, or both.")
        arch = resolve_network(name)
        return _build_pretrained(name, arch, num_classes, dev)

    path = str(Path(weight_path).expanduser())
    obj = read_weight_file(path)  # memory-mapped: cheap even for a large file
    if isinstance(obj, Mapping) and is_lightning_checkpoint(obj):
        built = _build_from_lightning(name, obj, path, dev)
        if built is not None:
            return built
    if name is None:
        raise ValueError(
            f"{path!r} is not a lightning-cam checkpoint: give the network name it was saved "
            "from (--network)."
        )
    arch = resolve_network(name)
    sd = extract_state_dict(obj, path)
    return _build_from_state_dict(name, arch, sd, path, num_classes, dev)
