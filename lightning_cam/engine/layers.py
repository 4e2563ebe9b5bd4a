"""Layer lookup by dotted name, the default target layer, and errors that help.

A *layer* is given as a dotted module name (``"layer4"``, ``"features.29"``,
``"backbone.layer4"``), as the module object itself, or as a list of either. ``None`` asks for
the default layer: the last module on the forward path whose output is a spatial feature map
``(B, C, h, w)`` with ``h * w > 1`` (pooling, dropout and identity modules that merely pass such
a map along are skipped, so a container that ends with a pooling layer is still chosen).

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(weights=None).eval()
    >>> default_layer(model, torch.rand(1, 3, 64, 64))
    'layer4'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
from torch import nn

from lightning_cam.engine.families import recognise
from lightning_cam.engine.wrappers import unwrap

LayerSpec = Union[str, nn.Module, Sequence[Union[str, nn.Module]], None]

# Modules that pass a feature map along without learning anything of their own. The default layer
# never stops at one of them: the module that produced their input (or the container that holds
# both) is the better choice, and for an adaptive pool that keeps the size it is the same map.
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.Flatten,
)


def _model_name(model: nn.Module) -> str:
    return type(model).__name__


def close_layer_names(model: nn.Module, name: str, n: int = 5) -> list[str]:
    """Return the dotted module names of ``model`` closest to ``name`` (for error messages)."""
    names = [k for k, _ in model.named_modules(remove_duplicate=False) if k]
    matches = difflib.get_close_matches(name, names, n=n, cutoff=0.4)
    if not matches:
        # Fall back to names sharing the last component, then to the top-level children.
        last = name.rsplit(".", 1)[-1]
        matches = [k for k in names if k.rsplit(".", 1)[-1] == last][:n]
    if not matches:
        matches = [k for k, _ in model.named_children()][:n]
    return matches


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule of ``model`` with dotted name ``name``.

    Every name the module tree answers to is accepted, also the aliases of a submodule
    registered under several names (``self.cam_layer = self.backbone.layer4``), which
    ``named_modules()`` lists once. For a model wrapped by ``torch.compile``, ``DataParallel`` or
    DDP, names inside the wrapped module work with and without the wrapper's prefix
    (``"_orig_mod.layer4"`` or ``"layer4"``; ``"module.layer4"`` or ``"layer4"``).

    Args:
        model: The model.
        name: A dotted module name as listed by ``model.named_modules()``.

    Returns:
        The module.

    Raises:
        ValueError: If no module has that name; the message lists the closest names.
    """
    if not isinstance(name, str):
        raise TypeError(f"layer name must be a str, got {type(name).__name__}")
    if name:
        for root in (model, unwrap(model)):
            modules = dict(root.named_modules(remove_duplicate=False))
            if name in modules and name != "":
                return modules[name]
    hint = close_layer_names(model, name)
    raise ValueError(
        f"Unknown layer {name!r} in {_model_name(model)}. "
        f"Closest layer names: {', '.join(hint) if hint else '(none)'}. "
        "Pass a dotted name from model.named_modules() (e.g. 'layer4' or 'features.29'), "
        "the module itself, or None for the default layer."
    )


def layer_name(model: nn.Module, module: nn.Module) -> str:
    """Return the dotted name of ``module`` inside ``model``.

    Raises:
        ValueError: If ``module`` is not a submodule of ``model``.
    """
    for name, m in model.named_modules():
        if m is module and name:
            return name
    raise ValueError(
        f"The module {type(module).__name__} passed as layer is not a submodule of "
        f"{_model_name(model)}; pass one of its submodules or a dotted name."
    )


def resolve_layers(model: nn.Module, layer: LayerSpec) -> list[str] | None:
    """Normalise a layer specification to a list of dotted names.

    Args:
        model: The model.
        layer: A dotted name, a module, a list of either, or ``None``.

    Returns:
        The dotted names (duplicates removed, order kept), or ``None`` for the default layer.

    Raises:
        ValueError: Unknown names, foreign modules, or an empty list.
        TypeError: Anything else.
    """
    if layer is None:
        return None
    items: list[Any]
    if isinstance(layer, (str, nn.Module)):
        items = [layer]
    elif isinstance(layer, Sequence):
        items = list(layer)
        if not items:
            raise ValueError("layer is an empty list; give at least one layer name, or None.")
    else:
        raise TypeError(
            f"layer must be a dotted name, a module, a list of them or None; "
            f"got {type(layer).__name__}"
        )
    names: list[str] = []
    for item in items:
        if isinstance(item, str):
            get_layer(model, item)
            name = item
        elif isinstance(item, nn.Module):
            name = layer_name(model, item)
        else:
            raise TypeError(
                f"each layer must be a dotted name or a module, got {type(item).__name__}"
            )
        if name not in names:
            names.append(name)
    return names


# ----------------------------------------------------------------------------- families


def family_default_layer(model: nn.Module) -> str | None:
    """The default layer of a recognised model family (its record's ``default_layer`` rule in
    :data:`lightning_cam.engine.families.FAMILIES`), else ``None``."""
    family = recognise(model)
    return family.default_layer() if family is not None else None


_MAP_OF_RANK = {1: "(B, C, l)", 2: "(B, C, h, w)", 3: "(B, C, d, h, w)"}


def _is_spatial(out: Any, rank: int = 2) -> bool:
    """A feature map of the input's spatial ``rank`` with more than one position."""
    return (
        isinstance(out, torch.Tensor) and out.dim() == rank + 2 and out.shape[2:].numel() > 1
    )


def default_layer(
    model: nn.Module, images: torch.Tensor, forward: Callable[..., Any] | None = None
) -> str:
    """Find the default target layer with one probe forward pass.

    The default is the last module (in order of completion during the forward pass) whose output
    is a spatial feature map ``(B, C, h, w)`` with ``h * w > 1`` (for signals ``(B, C, L)`` and
    volumes / videos ``(B, C, D, H, W)``: a map of the input's rank, ``(B, C, l)`` /
    ``(B, C, d, h, w)`` with more than one position), skipping pooling, dropout,
    identity and flatten modules. For torchvision classifiers this gives ``layer4`` (ResNets),
    ``features`` (VGG, DenseNet, MobileNet v2), ``Mixed_7c`` (Inception v3) and ``conv5``
    (ShuffleNet v2): the last convolutional stage, as in the original Grad-CAM.

    The probe runs without autograd on the first image only, in the model's current mode; the
    caller (the engine) puts the model in eval mode first and restores it.

    The choice depends on the input size (a small input can shrink the last stages to 1 x 1);
    the engine resolves it for every input size it meets.

    Args:
        model: The model.
        images: A batch ``(B, C, H, W)`` (or ``(B, C, L)``, ``(B, C, D, H, W)``); only
            ``images[:1]`` is used.
        forward: What to call with the images instead of ``model`` (e.g. its eager forward,
            see :func:`lightning_cam.engine.wrappers.eager_forward`).

    Returns:
        The dotted name of the default layer.

    Raises:
        ValueError: If no module produces a spatial feature map.
    """
    family = family_default_layer(model)
    if family is not None:
        return family
    names = {m: n for n, m in model.named_modules() if n}
    order: list[str] = []
    rank = images.dim() - 2

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(module, _PASS_THROUGH):
            return
        if _is_spatial(out, rank):
            order.append(names[module])

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            (forward if forward is not None else model)(images[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError(
            f"No layer of {_model_name(model)} outputs a spatial feature map "
            f"{_MAP_OF_RANK.get(rank, '(B, C, *spatial)')} with more than one position for "
            f"input {tuple(images.shape[1:])}, so there is no map to explain "
            "(e.g. an MLP on flattened inputs); class activation maps need a convolutional or "
            "token layer (tokens: pass that layer and reshape_transform='tokens'), or a larger "
            "input if the last stages shrink to 1 x 1."
        )
    return order[-1]
