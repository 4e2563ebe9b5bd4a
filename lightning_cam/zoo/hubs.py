"""Classifiers from timm and Hugging Face ``transformers``: ``timm:<name>`` and ``hf:<folder>``.

Network names with these prefixes are built here (through
:func:`lightning_cam.zoo.classifiers.build_classifier` and ``lightning-cam explain --network``):

- ``timm:<name>``: ``timm.create_model(name, pretrained=False)``; weights from ``weight_path``
  (a state_dict file, also nested under ``"state_dict"`` / ``"state_dict_ema"`` / ``"model"``,
  ``module.`` prefixes stripped; the head size is read from the file), else timm's pretrained
  weights through :data:`load_pretrained_timm` (the local Hugging Face cache, or a download).
  Input size and normalisation come from the model's ``pretrained_cfg``.
- ``hf:<folder>``: a folder written by ``save_pretrained`` (``config.json`` and the weights),
  loaded with ``AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)``.
  The model returns an output object whose ``.logits`` the targets read. Input size from
  ``config.image_size`` (else 224), normalisation from ``preprocessor_config.json`` when the
  folder has one (else ImageNet's), class names from ``config.id2label`` unless generic.

timm and transformers are optional: importing lightning_cam never needs them; asking for such a
network without the package raises an :class:`ImportError` saying what to install.

Example:
    >>> import torch, timm
    >>> net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    >>> torch.save(net.state_dict(), "/tmp/r10t.pth")
    >>> model, meta = build_external("timm:resnet10t", "/tmp/r10t.pth")
    >>> meta.name, meta.num_classes, meta.input_size
    ('timm-resnet10t', 3, 176)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_cam.zoo.meta import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassifierMeta,
    UnknownNetworkError,
    resolve_device,
)
from lightning_cam.zoo.weights import (
    PretrainedWeightsUnavailableError,
    WeightFileError,
    read_weight_file,
)

__all__ = ["PREFIXES", "build_external", "is_external", "load_pretrained_timm"]

#: Network name prefixes handled here.
PREFIXES: tuple[str, ...] = ("timm:", "hf:")

_NESTED = ("state_dict", "state_dict_ema", "model", "model_state_dict")


def is_external(name: object) -> bool:
    """Whether ``name`` is a ``timm:<name>`` or ``hf:<folder>`` network."""
    return isinstance(name, str) and name.strip().lower().startswith(PREFIXES)


def _file_name(prefix: str, rest: str) -> str:
    """A name usable in file names: ``timm-vit_tiny_patch16_224``, ``hf-my_vit``."""
    stem = Path(rest.rstrip("/\\")).name if prefix == "hf" else rest
    return f"{prefix}-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", stem)


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"Networks '{extra}:...' need the {module} package: pip install {module} "
            f"(or lightning-cam[{'timm' if extra == 'timm' else 'transformers'}])."
        ) from err


def _timm_pretrained(name: str, num_classes: int | None) -> nn.Module:
    timm = _require("timm", "timm")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(name, pretrained=True, **kwargs)  # type: ignore[no-any-return]


#: Loads timm's pretrained weights: ``(name, num_classes) -> model``. Replace it to use another
#: source or to simulate an offline machine; ``OSError`` and hub errors it raises become
#: :class:`~lightning_cam.zoo.classifiers.PretrainedWeightsUnavailableError`.
load_pretrained_timm: Callable[[str, int | None], nn.Module] = _timm_pretrained


def _state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    def is_sd(o: Any) -> bool:
        return isinstance(o, Mapping) and bool(o) and all(
            isinstance(v, torch.Tensor) for v in o.values()
        )

    if not is_sd(obj) and isinstance(obj, Mapping):
        obj = next((obj[k] for k in _NESTED if is_sd(obj.get(k))), obj)
    if not is_sd(obj):
        raise WeightFileError(
            f"No state_dict found in {path!r}: expected a dict of tensors "
            "(torch.save(model.state_dict(), path)), or one nested under 'state_dict'."
        )
    sd = dict(obj)
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _build_timm(
    name: str, weight_path: str | None, num_classes: int | None, device: torch.device
) -> tuple[nn.Module, ClassifierMeta]:
    timm = _require("timm", "timm")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise UnknownNetworkError(
            f"Unknown timm model {name!r}.{hint} List them with timm.list_models()."
        )
    if weight_path is None:
        try:
            model = load_pretrained_timm(name, num_classes)
        except (OSError, RuntimeError) as err:
            raise PretrainedWeightsUnavailableError(
                f"timm's pretrained weights for {name} are not in the local cache and could not "
                f"be downloaded ({str(err).strip().splitlines()[0][:160] if str(err) else err!r})."
                " Pass a weight file: --weight-path FILE (a state_dict saved with "
                "torch.save(model.state_dict(), FILE))."
            ) from err
        weights = f"timm:{name} (pretrained)"
    else:
        sd = _state_dict(read_weight_file(weight_path), weight_path)
        cfg = timm.models.get_pretrained_cfg(name)
        head = getattr(cfg, "classifier", None) if cfg is not None else None
        if isinstance(head, (list, tuple)):
            head = head[0]
        if num_classes is None and head and f"{head}.weight" in sd:
            num_classes = int(sd[f"{head}.weight"].shape[0])
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        model = timm.create_model(name, pretrained=False, **kwargs)
        wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        mismatched = [k for k, v in sd.items() if k in wanted and tuple(v.shape) != wanted[k]]
        if mismatched:
            k = mismatched[0]
            raise WeightFileError(
                f"The weights in {weight_path!r} do not fit timm:{name}: {len(mismatched)} shape "
                f"mismatch(es), e.g. {k} (file {list(sd[k].shape)} vs network "
                f"{list(wanted[k])}). Check --network and --weight-path."
            )
        result = model.load_state_dict(sd, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise WeightFileError(
                f"The weights in {weight_path!r} do not fit timm:{name}: "
                f"{len(result.missing_keys)} missing key(s) ({', '.join(result.missing_keys[:3])})"
                f", {len(result.unexpected_keys)} unexpected ("
                f"{', '.join(result.unexpected_keys[:3])}). Check --network and --weight-path."
            )
        weights = weight_path
    cfg_dict: dict[str, Any] = dict(getattr(model, "pretrained_cfg", {}) or {})
    size = cfg_dict.get("input_size", (3, 224, 224))
    meta = ClassifierMeta(
        name=_file_name("timm", name),
        arch=f"timm:{name}",
        input_size=int(size[-1]),
        mean=tuple(float(v) for v in cfg_dict.get("mean", IMAGENET_MEAN)),
        std=tuple(float(v) for v in cfg_dict.get("std", IMAGENET_STD)),
        num_classes=int(getattr(model, "num_classes", num_classes or 0)),
        categories=None,
        weights=weights,
    )
    return model.to(device).eval(), meta


def _build_hf(
    folder: str, weight_path: str | None, device: torch.device
) -> tuple[nn.Module, ClassifierMeta]:
    transformers = _require("transformers", "hf")
    path = Path(folder).expanduser()
    if weight_path is not None:
        raise ValueError(
            f"hf:{folder} loads its weights from the folder; drop --weight-path (or pass "
            "'default')."
        )
    if not (path / "config.json").is_file():
        raise WeightFileError(
            f"hf:{folder}: {str(path)!r} is not a folder written by save_pretrained (no "
            "config.json in it). Save the model with model.save_pretrained(folder)."
        )
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError) as err:
        raise WeightFileError(f"Cannot load hf:{folder}: {str(err).splitlines()[0]}") from err
    missing = list(info.get("missing_keys") or [])
    if missing:  # e.g. a bare ViTModel saved: its classification head would be random
        saved = ", ".join(getattr(model.config, "architectures", None) or []) or "unknown"
        raise WeightFileError(
            f"hf:{folder} has no trained weights for {len(missing)} parameter(s) of "
            f"{type(model).__name__} ({', '.join(missing[:3])}): the folder holds a {saved} "
            "without a classification head, which would be explained with a random head. Save "
            "an image classifier (e.g. ViTForImageClassification.save_pretrained(folder))."
        )
    config = model.config
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    proc = path / "preprocessor_config.json"
    if proc.is_file():
        data = json.loads(proc.read_text(encoding="utf-8"))
        mean = tuple(data.get("image_mean", mean))
        std = tuple(data.get("image_std", std))
    labels = [str(config.id2label[i]) for i in range(config.num_labels)] if getattr(
        config, "id2label", None
    ) else None
    if labels is not None and all(lab == f"LABEL_{i}" for i, lab in enumerate(labels)):
        labels = None
    image_size = getattr(config, "image_size", 224)
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[-1]
    meta = ClassifierMeta(
        name=_file_name("hf", folder),
        arch=f"hf:{type(model).__name__}",
        input_size=int(image_size),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        num_classes=int(config.num_labels),
        categories=labels,
        weights=str(path),
    )
    return model.to(device).eval(), meta


def build_external(
    name: str,
    weight_path: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, ClassifierMeta]:
    """Build a ``timm:<name>`` or ``hf:<folder>`` classifier (see the module docstring).

    Raises:
        UnknownNetworkError: Unknown timm model or prefix.
        WeightFileError: Weights that do not fit, a folder without ``config.json``.
        PretrainedWeightsUnavailableError: timm without a weight file, offline.
        ImportError: timm / transformers not installed.
    """
    dev = resolve_device(device)
    prefix, _, rest = name.strip().partition(":")
    rest = rest.strip()
    if not rest:
        raise UnknownNetworkError(
            f"Network {name!r} names no model: write timm:<model name> or hf:<folder>."
        )
    path = None if weight_path is None else str(Path(weight_path).expanduser())
    if prefix.lower() == "timm":
        return _build_timm(rest, path, num_classes, dev)
    if prefix.lower() == "hf":
        return _build_hf(rest, path, dev)
    raise UnknownNetworkError(f"Unknown network prefix in {name!r}; expected timm: or hf:.")
