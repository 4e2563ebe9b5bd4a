"""CAM methods as weighting functions, and the one shared combine step.

A method turns the activations ``A`` and the gradients ``g = dy^c / dA`` of a layer, both
``(B, K, *spatial)``, into weights that broadcast against ``A``. Everything after that — the
weighted sum over channels, ReLU, upsampling, normalisation — is :func:`combine`, shared by all
methods. Adding a method is one function and one entry in :data:`METHODS`.

Example:
    >>> import torch
    >>> A = torch.rand(2, 8, 7, 7); g = torch.randn(2, 8, 7, 7)
    >>> cam = combine(A, gradcam_weights(A, g))
    >>> cam.shape
    torch.Size([2, 7, 7])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

WeightFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _spatial_dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.dim()))


def gradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights (Selvaraju et al., ICCV 2017, eq. 1).

    ``w_k = (1 / Z) * sum_ij dy^c / dA^k_ij``: the spatial mean of the gradients.

    Args:
        activations: ``(B, K, *spatial)``; unused, kept for the common signature.
        gradients: ``(B, K, *spatial)``.

    Returns:
        ``(B, K, 1, ..., 1)`` weights.
    """
    del activations
    return gradients.mean(dim=_spatial_dims(gradients), keepdim=True)


def gradcampp_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights (Chattopadhyay et al., WACV 2018, eq. 19).

    With an exponential score ``S^c = exp(y^c)`` the higher derivatives reduce to powers of the
    first, giving the closed form::

        alpha^kc_ij = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab * g_ij^3)   (0 where the denominator is 0)
        w^c_k       = sum_ij alpha^kc_ij * ReLU(g_ij)

    where ``g = dy^c / dA^k``. The common factor ``exp(y^c)`` of the paper's eq. 19 is per sample
    and cancels in the normalised map, so it is left out.

    Args:
        activations: ``(B, K, *spatial)``.
        gradients: ``(B, K, *spatial)``.

    Returns:
        ``(B, K, 1, ..., 1)`` weights.
    """
    dims = _spatial_dims(gradients)
    g2 = gradients.pow(2)
    g3 = g2 * gradients
    sum_a = activations.sum(dim=dims, keepdim=True)
    denom = 2 * g2 + sum_a * g3
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    alpha = torch.where(denom != 0, g2 / safe, torch.zeros_like(denom))
    return (alpha * F.relu(gradients)).sum(dim=dims, keepdim=True)


#: Registry of weighting methods by name. Names are what users pass as ``method=``.
METHODS: dict[str, WeightFn] = {
    "gradcam": gradcam_weights,
    "gradcam++": gradcampp_weights,
}

_ALIASES = {
    "grad-cam": "gradcam",
    "grad_cam": "gradcam",
    "gradcampp": "gradcam++",
    "gradcamplusplus": "gradcam++",
    "grad-cam++": "gradcam++",
    "grad_cam++": "gradcam++",
    "gradcam_pp": "gradcam++",
    "gradcampp_": "gradcam++",
}


def method_name(method: str) -> str:
    """Return the canonical method name for ``method`` (case and common spellings tolerated).

    Raises:
        ValueError: For an unknown method; the message lists the known ones.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    key = method.lower()
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {sorted(METHODS)}.")
    return key


def normalize_maps(cam: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of ``(B, *spatial)`` to [0, 1].

    A constant map (all zero after the ReLU, say) becomes all zero, never NaN.
    """
    flat = cam.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    rng = hi - lo
    out = torch.where(rng > 0, (flat - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)), 0.0)
    return out.view_as(cam)


def combine(
    activations: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """The shared step: ``ReLU(sum_k w_k A^k)`` in float32, not normalised, not upsampled.

    Args:
        activations: ``(B, K, *spatial)``.
        weights: broadcastable to ``activations`` (``(B, K, 1, ..., 1)`` for channel weights).

    Returns:
        ``(B, *spatial)`` float32 map.
    """
    with torch.autocast(device_type=activations.device.type, enabled=False):
        return F.relu((weights.float() * activations.float()).sum(dim=1))


def upsample(cam: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinearly resize ``(B, h, w)`` maps to ``size`` (align_corners=False)."""
    if tuple(cam.shape[1:]) == tuple(size):
        return cam
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(cam[:, None], size=size, mode=mode, align_corners=False)[:, 0]
