"""Our methods as Quantus's ``explain_func``: Quantus metrics (faithfulness, robustness,
randomisation ...) call them like their own explanation functions.

Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with
numpy arrays, also on models it has changed (a randomised copy for the randomisation tests,
perturbed inputs for the robustness tests); it expects attributions it can broadcast against
the inputs. Quantus itself is not imported here: the function only speaks numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

#: The keyword arguments :func:`quantus_explain_func` accepts (besides ``model``, ``inputs``,
#: ``targets``).
EXPLAIN_FUNC_KWARGS = ("method", "layer", "max_batch", "normalize", "reshape_transform",
                       "device")  # fmt: skip


def quantus_explain_func(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor | int | None,
    **kwargs: Any,
) -> np.ndarray:
    """Explain ``inputs`` with one of our methods, by registry name, the way Quantus asks.

    Pass it to any Quantus metric as ``explain_func`` and our arguments in
    ``explain_func_kwargs``: ``method`` (a name of :data:`lightning_cam.methods.METHODS`,
    default ``"gradcam"``), ``layer`` (dotted name; default: the model's default layer),
    ``max_batch``, ``normalize`` (default ``True``: maps in ``[0, 1]``), ``reshape_transform``
    and ``device`` (where the inputs go; default: the model's parameters' device).

    Args:
        model: The classifier Quantus evaluates (a randomised copy in the randomisation tests).
        inputs: ``(B, C, H, W)`` images (numpy or tensor).
        targets: ``(B,)`` class ids, one ``int``, or ``None`` for the predicted classes.
        **kwargs: The arguments above; any other name is refused.

    Returns:
        ``(B, 1, H, W)`` float32 numpy maps at the input size (Quantus broadcasts the channel).

    Raises:
        TypeError: An argument not in :data:`EXPLAIN_FUNC_KWARGS`.
        ValueError: An unknown method, or the method's own refusal (e.g. CAM on a model without
            a global-average-pooling head).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(4, 2))
        >>> a = quantus_explain_func(net, np.random.rand(2, 3, 8, 8).astype("float32"),
        ...                          np.array([0, 1]), method="gradcam++", layer="1")
        >>> a.shape, a.dtype
        ((2, 1, 8, 8), dtype('float32'))
    """
    from lightning_cam.engine.cam import explain
    from lightning_cam.methods import method_name

    unknown = sorted(set(kwargs) - set(EXPLAIN_FUNC_KWARGS))
    if unknown:
        raise TypeError(
            f"quantus_explain_func got unexpected explain_func_kwargs {unknown}: expected "
            f"names from {list(EXPLAIN_FUNC_KWARGS)}"
        )
    name = method_name(kwargs.get("method", "gradcam"))
    device = kwargs.get("device")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    images = torch.as_tensor(np.asarray(inputs) if not torch.is_tensor(inputs) else inputs)
    images = images.to(device=device, dtype=torch.float32)
    target: Any = None
    if targets is not None:
        target = torch.as_tensor(np.asarray(targets)).long().reshape(-1).to(device)
        if target.numel() == 1 and images.shape[0] != 1:
            target = target.expand(images.shape[0])
    out = explain(
        model,
        images,
        kwargs.get("layer"),
        methods=(name,),
        target=target,
        max_batch=kwargs.get("max_batch"),
        reshape_transform=kwargs.get("reshape_transform", "auto"),
        normalize=bool(kwargs.get("normalize", True)),
    )
    maps = next(iter(out.cams[name].values()))
    return maps.detach().float().cpu().numpy()[:, None]
