"""Gradient methods: weighting functions of the activations ``A`` and gradients ``g``.

All of them share one forward and one backward (``g = dy^c / dA``, ``y^c`` the pre-softmax
class score); each is a pure function of ``(A, g)``, both ``(B, K, *spatial)``, returning
weights that broadcast against ``A`` (:func:`~lightning_cam.methods.core.combine` then forms
``ReLU(sum_k w_k A^k)``) — or, for EigenGrad-CAM, the map itself.

Example:
    >>> import torch
    >>> A = torch.rand(2, 8, 7, 7); g = torch.randn(2, 8, 7, 7)
    >>> layercam_weights(A, g).shape
    torch.Size([2, 8, 7, 7])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_cam.methods.core import spatial_dims


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den != 0``, else 0 (no epsilon: exact where defined)."""
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


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
    return gradients.mean(dim=spatial_dims(gradients), keepdim=True)


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
    return gradcampp_from_moments(activations, gradients, gradients.pow(2), gradients.pow(3))


def gradcampp_from_moments(
    activations: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM++ weights from the first, second and third derivatives (eq. 19).

    ``alpha = g2 / (2 g2 + sum_ab A_ab g3)`` (0 where the denominator is 0),
    ``w_k = sum_ij alpha_ij ReLU(g1_ij)``. Grad-CAM++ uses ``g2 = g^2, g3 = g^3``; Smooth
    Grad-CAM++ their averages over noisy inputs.
    """
    dims = spatial_dims(g1)
    sum_a = activations.sum(dim=dims, keepdim=True)
    alpha = _safe_div(g2, 2 * g2 + sum_a * g3)
    return (alpha * F.relu(g1)).sum(dim=dims, keepdim=True)


def hirescam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """HiRes-CAM (Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations
    of convolutional neural networks", arXiv 2011.08891, 2020).

    ``L^c = ReLU(sum_k g^k ⊙ A^k)``: the gradient itself is the (element-wise) weight, no
    spatial averaging — on a model whose score is linear in ``A`` the map sums exactly to the
    score.

    Returns:
        ``(B, K, *spatial)`` element-wise weights ``g``.
    """
    del activations
    return gradients


def gradcam_elementwise_weights(
    activations: torch.Tensor, gradients: torch.Tensor
) -> torch.Tensor:
    """Element-wise Grad-CAM (pytorch-grad-cam's ``GradCAMElementWise``; the element-wise
    variant of Selvaraju et al., ICCV 2017).

    ``L^c = sum_k ReLU(g^k ⊙ A^k)``: each position's contributions are clipped before the sum
    over channels (HiRes-CAM clips after it). As a weight: ``g`` where ``g ⊙ A > 0``, else 0.

    Returns:
        ``(B, K, *spatial)`` element-wise weights.
    """
    return torch.where(gradients * activations > 0, gradients, torch.zeros_like(gradients))


def xgradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM channel weights (Fu et al., "Axiom-based Grad-CAM: Towards Accurate
    Visualization and Explanation of CNNs", BMVC 2020, eq. 13).

    ``w_k = sum_ij (A^k_ij / sum_ab A^k_ab) * g^k_ij`` (0 for a channel whose activations sum
    to 0; no epsilon).

    Returns:
        ``(B, K, 1, ..., 1)`` weights.
    """
    dims = spatial_dims(gradients)
    num = (gradients * activations).sum(dim=dims, keepdim=True)
    return _safe_div(num, activations.sum(dim=dims, keepdim=True))


def layercam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Layer-CAM element-wise weights (Jiang et al., "LayerCAM: Exploring Hierarchical Class
    Activation Maps for Localization", IEEE TIP 2021, eq. 5-6).

    ``w^k_ij = ReLU(g^k_ij)``, ``L^c = ReLU(sum_k w^k ⊙ A^k)``. With several layers the paper
    fuses shallow layers after scaling each map by ``tanh(2 M / max M)`` (eq. 9): registered as
    this method's ``fuse_scale``.

    Returns:
        ``(B, K, *spatial)`` element-wise weights.
    """
    del activations
    return F.relu(gradients)


def layercam_fuse_scale(cam: torch.Tensor) -> torch.Tensor:
    """Layer-CAM eq. 9: ``tanh(gamma * M / max(M))`` with ``gamma = 2``, per sample."""
    peak = cam.flatten(1).max(dim=1).values.view(-1, *([1] * (cam.dim() - 1)))
    return torch.tanh(2.0 * _safe_div(cam, peak.expand_as(cam)))


def first_component(
    x: torch.Tensor, sign_ref: torch.Tensor | None = None, sign: str = "correlate"
) -> torch.Tensor:
    """Projection of each position on the first principal component of the channels.

    ``X`` ``(B, K, *spatial)`` is read as ``N = h*w`` samples of ``K`` features, centred over
    the positions; the map is ``(X - mean) @ v_1`` with ``v_1`` the first right singular vector.
    The sign of a singular vector is arbitrary (LAPACK picks one); it is fixed by ``sign``
    (see :func:`orient`): ``"correlate"`` (default) makes the map correlate positively with
    ``sign_ref`` ``(B, *spatial)`` (default: ``sum_k X^k``); ``"peak"`` (Seg-Eigen-CAM's eq. 13)
    makes the largest magnitude positive.

    Returns:
        ``(B, *spatial)`` float32 projections (not ReLU'd).
    """
    b, k = x.shape[:2]
    spatial = x.shape[2:]
    m = x.float().reshape(b, k, -1).transpose(1, 2)  # (B, N, K)
    m = m - m.mean(dim=1, keepdim=True)
    n = m.shape[1]
    # The projection on v_1 is sigma_1 u_1: from the top eigenvector of the smaller Gram matrix
    # (N x N or K x K, in float64) instead of a full SVD, several times cheaper.
    m64 = m.double()
    if n <= k:
        vals, vecs = torch.linalg.eigh(m64 @ m64.transpose(1, 2))  # (B, N, N), ascending
        proj = (vecs[..., -1] * vals[:, -1:].clamp(min=0).sqrt()).float()
    else:
        _, vecs = torch.linalg.eigh(m64.transpose(1, 2) @ m64)  # (B, K, K)
        proj = (m64 @ vecs[..., -1:])[..., 0].float()
    ref = x.float().sum(dim=1) if sign_ref is None else sign_ref.float()
    return orient(proj, ref.reshape(b, -1), sign).reshape(b, *spatial)


#: Sign rules of :func:`orient` (and of the Eigen methods' ``sign=`` option).
SIGN_RULES = ("correlate", "peak")


def orient(proj: torch.Tensor, ref: torch.Tensor | None, sign: str = "correlate") -> torch.Tensor:
    """Fix the arbitrary sign of a principal-component projection ``proj`` ``(B, N)``.

    ``"correlate"``: the sign that makes ``proj`` correlate positively with ``ref`` ``(B, N)``;
    where they do not correlate (a constant reference), the ``"peak"`` rule. ``"peak"``
    (Chung & Ying, Seg-Eigen-CAM, eq. 13): flip where ``|min| > |max|``, so the largest
    magnitude is positive (sklearn's ``svd_flip`` rule, too).
    """
    if sign not in SIGN_RULES:
        raise ValueError(f"sign must be one of {list(SIGN_RULES)}, got {sign!r}")
    peak = proj.amax(dim=1, keepdim=True) + proj.amin(dim=1, keepdim=True)  # > 0: max wins
    if sign == "peak" or ref is None:
        key = peak
    else:
        ref = ref - ref.mean(dim=1, keepdim=True)
        corr = (proj * ref).sum(dim=1, keepdim=True)
        scale = proj.abs().sum(dim=1, keepdim=True) * ref.abs().amax(dim=1, keepdim=True)
        key = torch.where(corr.abs() <= 1e-6 * scale, peak, corr)
    return proj * torch.where(key < 0, -1.0, 1.0)


def eigengradcam_map(
    activations: torch.Tensor, gradients: torch.Tensor, sign: str = "correlate"
) -> torch.Tensor:
    """EigenGrad-CAM (pytorch-grad-cam's ``EigenGradCAM``; Eigen-CAM of Muhammad & Yeasin,
    IJCNN 2020, applied to ``g ⊙ A``).

    ``L^c = ReLU(P_1(g ⊙ A))``: the projection of ``g ⊙ A`` on its first principal component
    (see :func:`first_component`), its sign chosen to correlate positively with
    ``sum_k g^k ⊙ A^k`` (the HiRes-CAM map), so the map points at the class evidence
    (``sign="peak"``: Seg-Eigen-CAM's rule, the largest magnitude positive).

    Returns:
        ``(B, *spatial)`` map (ReLU'd by the shared step).
    """
    ga = gradients * activations
    return first_component(ga, ga.sum(dim=1), sign)
