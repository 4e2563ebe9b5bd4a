"""Recent methods (2020-2025): FEM, KPCA-CAM, Seg-Eigen-CAM, Shapley-CAM, Finer-CAM.

Each is one function of the registry's signatures (see :mod:`lightning_cam.methods.core`):
FEM and KPCA-CAM read the activations only; Seg-Eigen-CAM is a map of ``(A, g)``; Shapley-CAM
and Finer-CAM differentiate the network after the layer again (its ``replay`` tool, with
gradients), so they explain class targets only.

Example:
    >>> import torch
    >>> from lightning_cam.methods.core import LayerPass
    >>> fem_weights(LayerPass(torch.rand(2, 8, 7, 7))).shape
    torch.Size([2, 8, 1, 1])
"""

from __future__ import annotations

import torch

from lightning_cam.methods.core import LayerPass, spatial_dims
from lightning_cam.methods.gradient import first_component, orient

#: FEM's default threshold: mean + k std per channel.
FEM_K = 2.0


def fem_weights(job: LayerPass, k: float = FEM_K) -> torch.Tensor:
    """FEM, the Feature Explanation Method (Fuad et al., "Features understanding in 3D CNNs for
    actions recognition in video", IPTA 2020). Gradient-free.

    Per channel, the ``k``-sigma rule keeps the strongly active positions and the share of them
    weighs the channel::

        M^k_ij = [A^k_ij > mean_ab A^k_ab + k * std_ab A^k_ab]   (std over positions, ddof 0)
        w_k    = mean_ij M^k_ij,   L = ReLU(sum_k w_k A^k)

    Args:
        job: The layer's pass (activations only).
        k: The threshold in standard deviations (2, as the paper and pytorch-grad-cam).

    Returns:
        ``(B, K, 1, ..., 1)`` weights.
    """
    a = job.activations.float()
    dims = spatial_dims(a)
    th = a.mean(dim=dims, keepdim=True) + k * a.std(dim=dims, keepdim=True, correction=0)
    return (a > th).float().mean(dim=dims, keepdim=True)


#: Kernels of :func:`kpcacam_map` (sklearn's names; its defaults degree 3, coef0 1).
KPCA_KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def kernel_matrix(
    x: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None,
    degree: int = 3, coef0: float = 1.0,
) -> torch.Tensor:
    """Batched kernel matrices ``(B, N, N)`` of ``N`` samples ``x`` ``(B, N, K)``, as sklearn's
    ``pairwise_kernels`` (``gamma=None``: ``1 / K``)."""
    if kernel not in KPCA_KERNELS:
        raise ValueError(f"kernel must be one of {list(KPCA_KERNELS)}, got {kernel!r}")
    g = 1.0 / x.shape[-1] if gamma is None else float(gamma)
    dot = x @ x.transpose(1, 2)
    if kernel == "linear":
        return dot
    if kernel == "sigmoid":
        return torch.tanh(g * dot + coef0)
    if kernel == "poly":
        return (g * dot + coef0) ** degree
    sq = dot.diagonal(dim1=1, dim2=2)
    if kernel == "rbf":
        return torch.exp(-g * (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp(min=0))
    norm = sq.clamp(min=0).sqrt()
    norm = torch.where(norm > 0, norm, torch.ones_like(norm))
    return dot / (norm[:, :, None] * norm[:, None, :])  # cosine


def kpcacam_map(
    job: LayerPass, kernel: str = "sigmoid", gamma: float | None = None, sign: str = "correlate"
) -> torch.Tensor:
    """KPCA-CAM (Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision
    Models using Kernel PCA", arXiv 2410.00267, 2024). Gradient-free, class agnostic.

    Eigen-CAM with kernel PCA: the ``N = h*w`` positions' activation vectors ``x_i`` (centred
    over the positions) give the kernel matrix ``K_ij = k(x_i, x_j)`` (default ``sigmoid``:
    ``tanh(gamma x_i·x_j + 1)``, ``gamma = 1 / channels``), centred in feature space
    ``K_c = K - 1_N K - K 1_N + 1_N K 1_N``; the map is the first kernel principal component
    ``L = ReLU(sqrt(lambda_1) alpha_1)`` (``alpha_1``: the top unit eigenvector of ``K_c``).
    Batched: one ``eigh`` of ``(B, N, N)`` in float64.

    Sign: as :func:`~lightning_cam.methods.activation.eigencam_map` — the map correlates
    positively with ``sum_k A^k`` (``sign="peak"``: the largest magnitude positive, sklearn's
    ``svd_flip`` rule that pytorch-grad-cam inherits).

    Args:
        job: The layer's pass (activations only).
        kernel: One of :data:`KPCA_KERNELS`.
        gamma: Of the ``rbf`` / ``poly`` / ``sigmoid`` kernels (``None``: ``1 / channels``).
        sign: ``"correlate"`` or ``"peak"``.

    Returns:
        ``(B, *spatial)`` map (ReLU'd by the shared step).
    """
    a = job.activations
    b, spatial = a.shape[0], a.shape[2:]
    x = a.double().reshape(b, a.shape[1], -1).transpose(1, 2)  # (B, N, K)
    x = x - x.mean(dim=1, keepdim=True)
    km = kernel_matrix(x, kernel, gamma)
    km = km - km.mean(dim=1, keepdim=True) - km.mean(dim=2, keepdim=True) + km.mean(
        dim=(1, 2), keepdim=True
    )
    vals, vecs = torch.linalg.eigh(km)  # ascending
    proj = (vecs[..., -1] * vals[:, -1:].clamp(min=0).sqrt()).float()
    return orient(proj, a.float().sum(dim=1).reshape(b, -1), sign).reshape(b, *spatial)


def segeigencam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Seg-Eigen-CAM (Chung & Ying, "Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for
    Semantic Segmentation Models", Applied Sciences 15(13) 7562, 2025).

    ``L = ReLU(P_1(|g| ⊙ A))`` (eq. 10-12): the projection of the absolute-gradient-weighted
    activations on their first principal component (centred over the positions, as
    :func:`~lightning_cam.methods.gradient.first_component`), its sign corrected by eq. 13:
    flipped where ``|min| > |max|``, so the largest magnitude is positive.

    Returns:
        ``(B, *spatial)`` map (ReLU'd by the shared step).
    """
    return first_component(gradients.abs() * activations, sign="peak")
