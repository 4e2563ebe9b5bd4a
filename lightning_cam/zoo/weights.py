"""Weight files: the one loader of lightning-cam's classifier and detector zoos.

* :func:`read_weight_file`: ``torch.load(weights_only=True)`` (tensors and plain containers
  only, never arbitrary pickled objects), memory-mapped, with errors that say what to do.
* :func:`extract_state_dict`: the state_dict in a file: the file itself, or nested under one of
  :data:`NESTED_KEYS` (``"state_dict"`` of a Lightning checkpoint, ``"model"``, ...).
* :func:`strip_prefixes`: wrapper prefixes removed (:data:`WRAPPER_PREFIXES`: DataParallel/DDP,
  ``torch.compile``), then a common leading component when that makes the keys fit the model
  (``model.`` / ``net.`` / ``detector.`` of a LightningModule holding the network).
* :func:`check_fit`: missing / unexpected keys and shape mismatches, all named, before loading.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 3)
    >>> torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}},
    ...            "/tmp/lin.ckpt")
    >>> sd = extract_state_dict(read_weight_file("/tmp/lin.ckpt"), "/tmp/lin.ckpt")
    >>> sorted(strip_prefixes(sd, set(net.state_dict())))
    ['bias', 'weight']
"""

from __future__ import annotations

import http.client
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "NESTED_KEYS",
    "WRAPPER_PREFIXES",
    "PretrainedWeightsUnavailableError",
    "StateDictMismatchError",
    "WeightFileError",
    "WeightFileNotFoundError",
    "check_fit",
    "download_or_refuse",
    "extract_state_dict",
    "is_lightning_checkpoint",
    "is_state_dict",
    "read_weight_file",
    "state_shapes",
    "strip_prefixes",
    "strip_wrapper_prefixes",
]

#: Prefixes added by wrappers around a model: DataParallel/DDP and torch.compile.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
#: Keys under which training scripts commonly nest the state_dict.
NESTED_KEYS: tuple[str, ...] = (
    "state_dict", "model_state_dict", "model", "net", "network", "weights"
)


class WeightFileError(ValueError):
    """A weight file that cannot be used: unreadable, not a torch file, no state_dict in it."""


class WeightFileNotFoundError(WeightFileError, FileNotFoundError):
    """The weight file does not exist."""


class StateDictMismatchError(WeightFileError):
    """A state_dict that does not fit the network.

    Attributes:
        missing: Keys the network needs that the file lacks.
        unexpected: Keys in the file the network does not have.
        mismatched: ``(key, file shape, network shape)`` for keys whose shapes differ.
    """

    def __init__(
        self,
        message: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


class PretrainedWeightsUnavailableError(RuntimeError):
    """torchvision's DEFAULT weights are neither cached locally nor downloadable (offline)."""


def download_or_refuse(
    load: Callable[..., nn.Module], arch: str, weights: Any, name: str, advice: str, **kwargs: Any
) -> nn.Module:
    """``load(arch, weights, **kwargs)`` (torchvision's DEFAULT ``weights``, from the torch cache
    or downloaded), or :class:`PretrainedWeightsUnavailableError` naming the cache file, why it
    failed, ``advice`` (the weight file to pass instead) and where to copy the file."""
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    try:
        return load(arch, weights, **kwargs)
    except (OSError, http.client.HTTPException) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PretrainedWeightsUnavailableError(
            f"torchvision's pretrained weights for {name} ({weights}) are not in the local torch "
            f"cache ({cache}) and could not be downloaded ({reason[:160]}). Pass a weight file "
            f"instead: {advice}; or copy {os.path.basename(weights.url)} into "
            f"{os.path.dirname(cache)}."
        ) from err



# ----------------------------------------------------------------------------- reading


def read_weight_file(path: str | os.PathLike[str]) -> Any:
    """Load a weight file with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        WeightFileNotFoundError: No such file.
        WeightFileError: A directory, not a PyTorch file, or a file holding pickled Python
            objects other than tensors and plain containers.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightFileNotFoundError(f"Weight file not found: {str(p)!r}.")
    if p.is_dir():
        raise WeightFileError(f"Weight path {str(p)!r} is a directory; pass the file itself.")
    try:
        try:
            # Memory-mapped: tensors are read when used (a second look at a file is free).
            return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(p, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise WeightFileError(
                f"Weight file {str(p)!r} holds pickled Python objects besides tensors (e.g. a "
                "whole model saved with torch.save(model)); weights are loaded with "
                "torch.load(weights_only=True) for safety. Save the weights with "
                "torch.save(model.state_dict(), path) instead."
            ) from err
        raise WeightFileError(_unreadable(p, err)) from err
    except Exception as err:  # noqa: BLE001 - any failure to parse means "not a torch file"
        raise WeightFileError(_unreadable(p, err)) from err


def _unreadable(p: Path, err: BaseException) -> str:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
    reason = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
    return (
        f"Cannot read weight file {str(p)!r}: not a PyTorch file saved with torch.save "
        f"({reason[:200]})."
    )



def is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def is_lightning_checkpoint(obj: Mapping[str, Any]) -> bool:
    return "state_dict" in obj and (
        "pytorch-lightning_version" in obj or "hyper_parameters" in obj
    )


def extract_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    if is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            if is_state_dict(obj.get(key)):
                return dict(obj[key])
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise WeightFileError(
            f"No state_dict found in {path!r}: expected a dict of tensors, or one nested under "
            f"{', '.join(repr(k) for k in NESTED_KEYS[:3])}; top-level keys: {keys}."
        )
    raise WeightFileError(
        f"No state_dict found in {path!r}: it holds a {type(obj).__name__}, expected a dict of "
        "tensors (torch.save(model.state_dict(), path))."
    )


def strip_wrapper_prefixes(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the :data:`WRAPPER_PREFIXES` every key has (repeatedly: ``module._orig_mod.``)."""
    sd = dict(sd)
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def strip_prefixes(sd: Mapping[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (:func:`strip_wrapper_prefixes`), then a common leading
    component if that makes (more) keys fit ``wanted``, the model's keys."""
    sd = strip_wrapper_prefixes(sd)

    def overlap(keys: Any) -> int:
        return len(wanted.intersection(keys))

    # A LightningModule that holds the network as ``self.model`` / ``self.net`` (a detector as
    # ``self.detector``) saves ``model.layer4...``: strip the first component when it makes
    # (more) keys fit.
    firsts = {k.split(".", 1)[0] for k in sd if "." in k}
    best, best_overlap = sd, overlap(sd)
    for first in firsts:
        prefix = first + "."
        candidate = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if overlap(candidate) > best_overlap:
            best, best_overlap = candidate, overlap(candidate)
    return best


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The shape of every entry of ``model.state_dict()``."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_fit(
    sd: Mapping[str, torch.Tensor],
    wanted: Mapping[str, tuple[int, ...]],
    what: str,
    path: str,
    hint: str = "Check --network (and --weight-path)",
) -> None:
    """Raise :class:`StateDictMismatchError` unless ``sd`` has exactly the keys and shapes of
    ``wanted`` (:func:`state_shapes`; only ``num_batches_tracked`` may be absent). The message
    counts and names the missing / unexpected / mismatched keys, then gives ``hint``."""
    missing = [k for k in wanted if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in wanted]
    mismatched = [
        (k, tuple(v.shape), wanted[k])
        for k, v in sd.items()
        if k in wanted and tuple(v.shape) != wanted[k]
    ]
    if not (missing or unexpected or mismatched):
        return

    def first(items: list[str], n: int = 4) -> str:
        more = f", ... (+{len(items) - n})" if len(items) > n else ""
        return ", ".join(items[:n]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {first(unexpected)}")
    if mismatched:
        shapes = [
            f"{k} (file {list(a)} vs network {list(b)})" for k, a, b in mismatched
        ]
        parts.append(f"{len(mismatched)} shape mismatch(es): {first(shapes, 3)}")
    raise StateDictMismatchError(
        f"The weights in {path!r} do not fit {what}: {'; '.join(parts)}. "
        f"{hint}, or that the file was saved from this architecture.",
        missing,
        unexpected,
        mismatched,
    )
