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

from collections.abc import Callable, Sequence

import torch

from lightning_cam.methods.core import LayerPass, chunk_size, spatial_dims
from lightning_cam.methods.gradient import first_component, gradcam_weights, orient
from lightning_cam.methods.kernel_pca import top_kernel_component

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
    In float32 (as sklearn from float32 activations), by
    :func:`~lightning_cam.methods.kernel_pca.top_kernel_component`: the top eigenpair of ``K_c``
    only (Lanczos with the centring applied to its vectors on CPU; the kernel's upper triangle
    by BLAS ``syrk``), never the whole spectrum.

    Sign: as :func:`~lightning_cam.methods.activation.eigencam_map` — the map correlates
    positively with ``sum_k A^k`` (``sign="peak"``: the largest magnitude positive, sklearn's
    ``svd_flip`` rule that pytorch-grad-cam inherits).

    Args:
        job: The layer's pass (activations only).
        kernel: One of :data:`~lightning_cam.methods.kernel_pca.KPCA_KERNELS`.
        gamma: Of the ``rbf`` / ``poly`` / ``sigmoid`` kernels (``None``: ``1 / channels``).
        sign: ``"correlate"`` or ``"peak"``.

    Returns:
        ``(B, *spatial)`` map (ReLU'd by the shared step).
    """
    a = job.activations
    b, spatial = a.shape[0], a.shape[2:]
    x = a.float().reshape(b, a.shape[1], -1).transpose(1, 2)  # (B, N, K)
    x = x - x.mean(dim=1, keepdim=True)
    val, vec = top_kernel_component(x, kernel, gamma)  # of K_c
    proj = vec.float().mul_(val.float().clamp_(min=0).sqrt_()[:, None])
    ref = a.float().sum(dim=1).reshape(b, -1) if sign == "correlate" else None
    return orient(proj, ref, sign).reshape(b, *spatial)


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


# --------------------------------------------------------------------------- replayed gradients
def _replayed(
    job: LayerPass,
    method: str,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    hessian: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``g = d score / dA`` (and ``H A = d(g · A) / dA`` with ``hessian``) from the network
    after the layer, replayed on the forward's activations with gradients, ``max_batch`` images
    at a time. ``score(logits (N, num_classes), ids (N,)) -> (N,)``."""
    ids = job.require_class_ids(method)
    a0 = job.activations
    b = a0.shape[0]
    g_all = torch.zeros_like(a0, dtype=torch.float32)
    h_all = torch.zeros_like(g_all) if hessian else None
    step = chunk_size(job.max_batch, a0[0])
    with torch.inference_mode(False), torch.enable_grad():
        for i in range(0, b, step):
            rows = torch.arange(i, min(b, i + step), device=a0.device)
            a = a0[rows].detach().clone().requires_grad_(True)
            logits = job.replay(a, rows, None)
            s = score(logits, ids[rows].to(logits.device))
            (g,) = torch.autograd.grad(s.sum(), a, create_graph=hessian, allow_unused=True)
            if g is None:
                raise ValueError(f"The class scores do not depend on layer {job.layer!r}.")
            g_all[rows] = g.detach().float()
            if h_all is not None and g.requires_grad:
                # H A: the gradient of g · A with A held fixed, i.e. d/dA (g(A) · v), v = A.
                (h,) = torch.autograd.grad(g, a, grad_outputs=a.detach(), allow_unused=True)
                if h is not None:
                    h_all[rows] = h.detach().float()
    return g_all, h_all


def _class_score(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, ids[:, None])[:, 0]


def rest_score(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """ReST, the residual softmax target (Cai, arXiv 2501.06261): ``y^c + log softmax(y)_c``
    (``y^c - CE(y, c)``), pre- and post-softmax together."""
    return _class_score(logits, ids) + _class_score(logits.log_softmax(dim=1), ids)


SHAPLEY_SCORES = ("logit", "rest")


def shapleycam_weights(job: LayerPass, score: str = "logit") -> torch.Tensor:
    """Shapley-CAM (Cai, "CAMs as Shapley Value-based Explainers", arXiv 2501.06261, 2025).

    The second-order Taylor approximation of the score's Shapley values gives the weights::

        w_k = mean_ij (g - 1/2 H A)^k_ij,   L = ReLU(sum_k w_k A^k)

    with ``g = dy/dA`` and ``H A`` the Hessian-vector product ``d(g · A)/dA`` (``A`` fixed as
    the vector), as pytorch-grad-cam's ``ShapleyCAM``. Both come from the network *after* the
    layer, replayed on the forward's activations with gradients (split off with ``torch.fx``
    where it can be, else full forwards with the layer's output replaced); no engine backward
    is used. Where that network is piecewise linear in ``A`` (ReLU, max-pooling, linear) ``H A``
    vanishes and the map is Grad-CAM's; softmax, attention, GELU / SiLU, or the ReST score
    (``score="rest"``: ``y^c + log softmax(y)_c``, the paper's utility) make it differ.

    Args:
        job: The layer's pass (class ids and the ``replay`` tool).
        score: ``"logit"`` (the pre-softmax class score, as every method here) or ``"rest"``.

    Returns:
        ``(B, K, 1, ..., 1)`` weights.
    """
    if score not in SHAPLEY_SCORES:
        raise ValueError(f"score must be one of {list(SHAPLEY_SCORES)}, got {score!r}")
    fn = rest_score if score == "rest" else _class_score
    g, h = _replayed(job, "shapleycam", fn, hessian=True)
    assert h is not None
    return (g - 0.5 * h).mean(dim=spatial_dims(g), keepdim=True)


#: Finer-CAM's defaults: comparison strength and the similarity ranks compared against.
FINER_ALPHA, FINER_RANKS = 1.0, (1, 2, 3)


def check_ranks(ranks: Sequence[int]) -> tuple[int, ...]:
    """Finer-CAM's comparison ranks, validated: positive ints (rank 0 is the target)."""
    out = tuple(ranks)
    if not out or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in out):
        raise ValueError(
            f"ranks must be positive ints (0 is the target itself), got {ranks!r}"
        )
    return out


def finer_scores(
    logits: torch.Tensor, ids: torch.Tensor, alpha: float = FINER_ALPHA,
    ranks: Sequence[int] = FINER_RANKS,
) -> torch.Tensor:
    """Finer-CAM's score (Zhang, Gu et al., CVPR 2025) of classes ``ids`` ``(N,)``.

    The comparison classes ``j`` of target ``t`` are those at ``ranks`` when the classes are
    sorted by ``|y^j - y^t|`` (rank 0: the target itself; ranks past the number of classes
    dropped), and::

        S = sum_j p_j (y^t - alpha y^j) / sum_j p_j,   p = softmax(y)

    (pytorch-grad-cam's ``FinerWeightedTarget``; ``p`` is differentiated too). With no
    comparison class left (a single class), ``S = y^t``.

    Args:
        logits: ``(N, num_classes)`` class scores.
        ids: ``(N,)`` target classes.
        alpha: Comparison strength (0: the class score alone).
        ranks: Similarity ranks of the comparison classes (positive ints).
    """
    c = logits.shape[1]
    keep = [r for r in check_ranks(ranks) if r < c]
    yt = logits.gather(1, ids[:, None])
    if not keep:
        return yt[:, 0]
    dist = (logits.detach() - yt.detach()).abs()
    dist = dist.scatter(1, ids[:, None], -1.0)  # the target first, even against a tie
    order = dist.argsort(dim=1, stable=True)
    comp = order[:, keep]  # (N, R)
    p = logits.softmax(dim=1).gather(1, comp)
    yj = logits.gather(1, comp)
    return (p * (yt - alpha * yj)).sum(dim=1) / p.sum(dim=1)


def finercam_weights(
    job: LayerPass, alpha: float = FINER_ALPHA, ranks: Sequence[int] = FINER_RANKS
) -> torch.Tensor:
    """Finer-CAM (Zhang, Gu et al., "Finer-CAM: Spotting the Difference Reveals Finer Details
    for Visual Explanation", CVPR 2025).

    Grad-CAM of the target class *against its most similar classes*: ``w_k = mean_ij dS/dA^k``
    with ``S`` :func:`finer_scores` (``sum_j p_j (y^t - alpha y^j) / sum_j p_j`` over the classes
    of similarity ranks 1, 2, 3), ``L = ReLU(sum_k w_k A^k)``. The gradient comes from the
    network after the layer, replayed with gradients; the same map is Grad-CAM with the public
    target ``lightning_cam.engine.targets.FinerTarget``.

    Args:
        job: The layer's pass (class ids: the targets ``t``; and the ``replay`` tool).
        alpha: Comparison strength.
        ranks: Similarity ranks of the comparison classes.

    Returns:
        ``(B, K, 1, ..., 1)`` weights.
    """
    g, _ = _replayed(job, "finercam", lambda y, t: finer_scores(y, t, alpha, ranks))
    return gradcam_weights(job.activations, g)
