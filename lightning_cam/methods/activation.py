"""Activation methods: maps from the layer's activations alone, no backward at all.

Example:
    >>> import torch
    >>> from lightning_cam.methods.core import LayerPass
    >>> eigencam_map(LayerPass(torch.rand(2, 8, 7, 7))).shape
    torch.Size([2, 7, 7])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_cam.methods.core import LayerPass, spatial_dims
from lightning_cam.methods.gradient import first_component


def eigencam_map(job: LayerPass, sign: str = "correlate") -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020).

    ``L = ReLU(A_c @ v_1)``: each position's activation vector, centred over the positions, is
    projected on the first right singular vector ``v_1`` of ``A_c`` (``h*w`` x ``K``). Class
    agnostic: the target does not enter.

    Sign convention: a singular vector's sign is arbitrary (LAPACK's choice, which
    pytorch-grad-cam keeps, so its map is sometimes the ReLU of the negated projection). Here the
    sign makes the projection correlate positively with the channel-summed activations
    ``sum_k A^k`` — the map is high where the layer is active. ``sign="peak"``: Seg-Eigen-CAM's
    rule instead (Chung & Ying 2025, eq. 13: flip where ``|min| > |max|``).

    Returns:
        ``(B, *spatial)`` map (ReLU'd by the shared step).
    """
    return first_component(job.activations, sign=sign)


def classifier_weights(job: LayerPass) -> tuple[torch.Tensor, str]:
    """The ``(num_classes, K)`` weights of the linear layer that makes the logits from the
    global average of ``job.activations``, checked on the forward's own numbers.

    Raises:
        ValueError: When no ``nn.Linear`` of the model turns ``mean_ij A`` into the logits.
    """
    a, model, logits = job.activations, job.model, job.logits
    k = a.shape[1]
    tried: list[str] = []
    if model is not None and logits is not None:
        pooled = a.float().mean(dim=spatial_dims(a))
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        for name, lin in reversed(linears):
            if lin.in_features != k or lin.out_features != logits.shape[1]:
                continue
            tried.append(name)
            # float32 whatever the model ran in (bf16 / fp16 autocast): the check compares
            # with the model's own, coarser logits at their precision.
            with torch.no_grad(), torch.autocast(device_type=a.device.type, enabled=False):
                w = lin.weight.detach().float()
                bias = lin.bias.detach().float() if lin.bias is not None else None
                ref = F.linear(pooled, w, bias)
            eps = torch.finfo(logits.dtype).eps if logits.is_floating_point() else 0.0
            rtol = max(1e-4, 4 * eps)
            tol = rtol * max(1.0, float(logits.abs().max()))
            if torch.allclose(ref, logits.float(), rtol=rtol, atol=tol):
                return w, name
    detail = (
        f"the linear layer(s) {tried} with {k} inputs do not reproduce the logits from the "
        "global average of its output"
        if tried
        else f"no nn.Linear({k}, num_classes) follows it"
        if model is not None and logits is not None
        else "the model's output has no class logits"
    )
    raise ValueError(
        f"method 'cam' needs a model that ends in global average pooling + one linear layer "
        f"right after the explained layer {job.layer!r}, but {detail}. Choose the last "
        "convolutional block before the pooling (e.g. 'layer4' of a ResNet) or use 'gradcam', "
        "which equals CAM on such models and works on any head."
    )


def cam_weights(job: LayerPass) -> torch.Tensor:
    """CAM (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016).

    For a model ending in ``logits = W · GAP(A) + b``: ``M_c = sum_k W[c, k] A^k`` (eq. 2), min-max
    normalised as the paper shows it — *no* ReLU (negative evidence is the map's low end, not
    clipped; Grad-CAM, which adds the ReLU, equals ``ReLU(M_c)`` on such models). The head is
    found and *checked* (the model's own logits must equal ``W · mean_ij A + b`` on this
    batch), so a model with another head is refused instead of explained wrongly.

    Returns:
        ``(B, K, 1, ..., 1)`` weights ``W[c_b]``.

    Raises:
        ValueError: Not a GAP + linear head after the layer, or a non-class target.
    """
    ids = job.require_class_ids("cam")
    w, _ = classifier_weights(job)
    if w.shape[0] == 1:  # a binary head: classes 0 / 1 score -z / z (targets.class_logits)
        w = torch.cat([-w, w])
    return w[ids.to(w.device)].view(*ids.shape, -1, *([1] * (job.activations.dim() - 2)))
