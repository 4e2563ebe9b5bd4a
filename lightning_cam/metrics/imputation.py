"""Noisy linear imputation (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022): the removal operator of ROAD.

Each removed pixel takes the weighted mean of its 8 neighbours, the neighbours that are removed
too being unknowns of the same equation system::

    x_i = sum_{j in N(i)} w_ij x_j / sum_{j in N(i)} w_ij      for every removed pixel i

with ``w = 1/6`` for the 4 edge neighbours, ``1/12`` for the 4 diagonal ones, and ``N(i)`` the
neighbours inside the image (known pixels enter with their values, removed ones as unknowns).
The sparse system ``D x - W_rr x = W_rk v`` (``D`` the diagonal of the weight sums) is solved
exactly, one channel per right-hand side, then ``noise * N(0, 1)`` is added to every imputed
value. The system is regular as long as one pixel of the image is kept: every connected set of
removed pixels then touches a known one, which makes ``D - W_rr`` strictly diagonally dominant
on one row of each block and irreducible, hence positive definite.

Batched: all the masks of one image (every percentage, MoRF and LeRF) form one block-diagonal
system, built with array operations (no Python loop over pixels or masks) and factorised once
(SuperLU, symmetric ordering: one block-diagonal solve is about 2 x faster than one per mask);
pytorch-grad-cam and Quantus build one ``lil_matrix`` per image and mask.
"""

from __future__ import annotations

import numpy as np
import torch

#: ``(row offset, column offset, weight)`` of the 8 neighbours (the paper's weights).
NEIGHBOUR_WEIGHTS: tuple[tuple[int, int, float], ...] = (
    (-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12),
    (0, -1, 1 / 6), (0, 1, 1 / 6),
    (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12),
)  # fmt: skip


def linear_system(
    image: np.ndarray, removed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The imputation's equations for one image ``(C, H, W)`` and ``S`` masks ``(S, H, W)``.

    Returns:
        ``(rows, cols, values, rhs)``: the ``M x M`` matrix in coordinate form (``M`` the removed
        pixels of all masks, in raster order mask by mask) and the right-hand sides ``(M, C)``.
    """
    s, h, w = removed.shape
    count = int(removed.sum())
    # Unknown id of each removed pixel, -1 for a kept pixel, -2 outside the image (padding).
    ids = np.full((s, h + 2, w + 2), -2, dtype=np.int64)
    inner = np.full((s, h, w), -1, dtype=np.int64)
    inner[removed] = np.arange(count)
    ids[:, 1:-1, 1:-1] = inner
    m, y, x = np.nonzero(removed)
    me = inner[m, y, x]
    diag = np.zeros(count)
    rhs = np.zeros((count, image.shape[0]))
    rows, cols, values = [me], [me], []
    for dy, dx, weight in NEIGHBOUR_WEIGHTS:
        other = ids[m, y + 1 + dy, x + 1 + dx]
        inside = other != -2
        diag[inside] += weight
        unknown = other >= 0
        rows.append(me[unknown])
        cols.append(other[unknown])
        values.append(np.full(int(unknown.sum()), -weight))
        known = other == -1
        rhs[me[known]] += weight * image[:, y[known] + dy, x[known] + dx].T
    values.insert(0, diag)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(values), rhs


def noisy_linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Impute the ``removed`` pixels of each image, once per mask (see the module docstring).

    Args:
        images: ``(B, C, H, W)`` float images (model inputs: ``noise`` is in their units).
        removed: ``(B, S, H, W)`` bool, ``True`` where a pixel is removed; ``S`` masks per image.
            Each mask keeps at least one pixel.
        noise: Standard deviation of the Gaussian noise added to the imputed values (the paper
            and its peers: ``0.01``); ``0`` for the plain linear imputation.
        generator: Source of the noise (a CPU generator), for reproducible values.

    Returns:
        ``(B, S, C, H, W)`` images, equal to ``images`` on the kept pixels, on ``images``' device
        and dtype.

    Raises:
        ValueError: Shapes that do not agree, a mask that removes every pixel, a negative noise.

    Example:
        >>> image = torch.tensor([[[0.0, 6.0, 0.0], [6.0, 9.0, 6.0], [0.0, 6.0, 0.0]]])[None]
        >>> removed = torch.zeros(1, 1, 3, 3, dtype=torch.bool); removed[0, 0, 1, 1] = True
        >>> noisy_linear_imputation(image, removed, noise=0.0)[0, 0, 0, 1, 1]  # 4 x 6 / 6
        tensor(4.)
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    if images.dim() != 4 or removed.dim() != 4 or removed.shape[0] != images.shape[0]:
        raise ValueError(
            f"expected images (B, C, H, W) and masks (B, S, H, W), got {tuple(images.shape)} "
            f"and {tuple(removed.shape)}"
        )
    if tuple(removed.shape[2:]) != tuple(images.shape[2:]):
        raise ValueError(
            f"masks {tuple(removed.shape)} and images {tuple(images.shape)} differ in size"
        )
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    removed = removed.bool().cpu()
    if bool(removed.flatten(2).all(dim=2).any()):
        raise ValueError("a mask removes every pixel: keep at least one (percentages < 100)")
    out = images.detach().cpu().double()[:, None].repeat(1, removed.shape[1], 1, 1, 1)
    for b in range(images.shape[0]):
        where = removed[b].numpy()
        if not where.any():
            continue
        rows, cols, values, rhs = linear_system(out[b, 0].numpy(), where)
        size = rhs.shape[0]
        matrix = csc_matrix((values, (rows, cols)), shape=(size, size))
        # Symmetric positive definite: a symmetric ordering (about 1.5 x faster than COLAMD).
        lu = splu(matrix, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
        solved = torch.from_numpy(lu.solve(rhs).reshape(size, -1))
        if noise > 0:
            solved = solved + noise * torch.randn(
                solved.shape, generator=generator, dtype=torch.float64
            )
        m, y, x = (torch.from_numpy(a) for a in np.nonzero(where))
        out[b, m, :, y, x] = solved
    return out.to(device=images.device, dtype=images.dtype)
