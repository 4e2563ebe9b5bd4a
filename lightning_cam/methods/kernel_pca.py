"""Kernel PCA's first component, for KPCA-CAM: kernel matrices of the positions' activation
vectors and the top eigenpair of the double-centred kernel, never the whole spectrum.

Where the time goes: forming the ``N x N`` kernel (a matrix product of ``N x C`` activations
with themselves, then the kernel function) and one eigenpair. On CPU, for maps of more than
:data:`EIGH_MAX` positions, the Gram matrix comes from BLAS ``syrk`` (its upper triangle only:
half the product), the kernel function and the double centring ``H K H`` (``H = I - 1 1^T /
N``; the row means from one ``symv``) are applied to that triangle in place, in row blocks (a
constant shift and scale of the kernel are left out: the centring removes the shift, the
eigenvalue takes the scale), and the eigenpair comes from a restarted Lanczos iteration whose
matrix-vector products are BLAS ``symv`` on the triangle. Centring the matrix, not the
vectors, keeps the products' rounding at the scale of the centred kernel (the uncentred one is
~N times larger: float32 Lanczos then stalls far from the answer). Lanczos is many small
vector operations: in numpy they cost about a microsecond each, in torch several. Smaller
maps: the whole kernel, centred in float64, and LAPACK's ``syevx`` for the one eigenpair;
tensors on other devices: ``torch.linalg.eigh``.

Example:
    >>> import torch
    >>> x = torch.randn(2, 300, 16)
    >>> val, vec = top_kernel_component(x - x.mean(1, keepdim=True))
    >>> val.shape, vec.shape
    (torch.Size([2]), torch.Size([2, 300]))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

#: Kernels of :func:`kernel_matrix` (sklearn's names; its defaults degree 3, coef0 1).
KPCA_KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")
#: Lanczos steps per restart; matrices up to ``EIGH_MAX`` rows use ``eigh`` (faster there).
LANCZOS_STEPS, EIGH_MAX = 48, 100
#: Lanczos checks its Ritz pair's residual every this many steps (and stops when it is small).
LANCZOS_CHECK = 4
#: Per dtype: Lanczos's residual relative to the eigenvalue (one that stalls, falling by less
#: than ``1 - STALL_RATIO`` between checks, is accepted up to ``STALL_FACTOR`` times it), and
#: with ``N * max|M|`` the rounding level of a kernel eigenvalue (below it: 0).
_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
STALL_RATIO, STALL_FACTOR = 0.9, 10.0
#: Rows per block when the kernel function is applied to the upper triangle only.
UPPER_BLOCK = 128


def _check_kernel(kernel: str) -> None:
    if kernel not in KPCA_KERNELS:
        raise ValueError(f"kernel must be one of {list(KPCA_KERNELS)}, got {kernel!r}")


def _apply_kernel(
    dot: torch.Tensor, kernel: str, g: float, degree: int, coef0: float,
    sq: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[float, float]:
    """Turn the Gram matrices ``dot`` ``(..., R, C)`` into ``M`` in place, elementwise (valid
    where ``dot`` is), with the kernel ``K = scale * M + shift``; returns ``(scale, shift)``.
    ``sq``: the squared norms of the rows' and the columns' samples (``rbf``, ``cosine``; by
    default ``dot``'s diagonal, for a square block on the diagonal)."""
    if kernel == "linear":
        return 1.0, 0.0
    if kernel == "sigmoid":  # tanh(y) = 2 sigmoid(2 y) - 1: torch's sigmoid is ~5 x faster on CPU
        dot.mul_(2 * g).add_(2 * coef0).sigmoid_()
        return 2.0, -1.0
    if kernel == "poly":
        dot.mul_(g).add_(coef0).pow_(degree)
        return 1.0, 0.0
    if sq is None:
        diag = dot.diagonal(dim1=-2, dim2=-1).clone()
        sq = diag, diag
    rows, cols = sq
    if kernel == "rbf":  # exp(-g |x_i - x_j|^2)
        dot.mul_(-2).add_(rows[..., :, None]).add_(cols[..., None, :]).clamp_(min=0)
        dot.mul_(-g).exp_()
        return 1.0, 0.0
    rn, cn = (v.clamp(min=0).sqrt() for v in sq)
    rn, cn = (torch.where(v > 0, v, torch.ones_like(v)) for v in (rn, cn))
    dot.div_(rn[..., :, None]).div_(cn[..., None, :])  # cosine
    return 1.0, 0.0


def _gamma(x: torch.Tensor, gamma: float | None) -> float:
    return 1.0 / x.shape[-1] if gamma is None else float(gamma)


def kernel_matrix(
    x: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None,
    degree: int = 3, coef0: float = 1.0,
) -> torch.Tensor:
    """Batched kernel matrices ``(B, N, N)`` of ``N`` samples ``x`` ``(B, N, K)``, as sklearn's
    ``pairwise_kernels`` (``gamma=None``: ``1 / K``)."""
    _check_kernel(kernel)
    m = x @ x.transpose(1, 2)
    scale, shift = _apply_kernel(m, kernel, _gamma(x, gamma), degree, coef0)
    return m.mul_(scale).add_(shift)


def _center(v: np.ndarray) -> np.ndarray:
    return v - v.sum() / v.shape[0]


def _unit(v: np.ndarray, tiny: float) -> np.ndarray:
    return v / max(math.sqrt(float(v @ v)), tiny)


def _lanczos_top(
    matvec: Callable[[np.ndarray], np.ndarray], n: int, dtype: np.dtype, steps: int,
    restarts: int, rel_tol: float, centred: bool,
) -> tuple[float, np.ndarray] | None:
    """Restarted Lanczos for the largest (algebraic) eigenpair of a symmetric operator
    (``centred``: one that maps the centred vectors, ``1^T v = 0``, to centred vectors, started
    from one), fully re-orthogonalised (classical Gram-Schmidt, two passes), Rayleigh-Ritz on
    ``Q^T M Q`` every :data:`LANCZOS_CHECK` steps, from a fixed start vector (deterministic).
    Converged when the residual ``|M v - theta v|`` is below ``rel_tol * |theta|``, or stalled
    below ``STALL_FACTOR`` times that (the rounding of the products reached: more steps would
    not help); ``None`` when neither after ``restarts``."""
    v = np.random.default_rng(0).standard_normal(n).astype(dtype)
    v = _center(v) if centred else v
    tiny = float(np.finfo(dtype).tiny)
    q_all, mq_all = np.zeros((steps, n), dtype), np.zeros((steps, n), dtype)
    last = math.inf
    for _ in range(restarts):
        q = _unit(v, tiny)
        for j in range(steps):
            q_all[j] = q
            w = mq_all[j] = matvec(q)
            basis = q_all[: j + 1]
            w = w - (basis @ w) @ basis  # fully re-orthogonalised, twice ("twice is enough":
            q = _unit(w - (basis @ w) @ basis, tiny)  # once, float32 loses orthogonality)
            if (j + 1) % LANCZOS_CHECK == 0 or j + 1 == steps:
                qs, mqs = q_all[: j + 1], mq_all[: j + 1]
                t = qs @ mqs.T
                tv, ty = np.linalg.eigh((t + t.T) / 2)
                theta, y = float(tv[-1]), ty[:, -1]
                v = y @ qs
                r = y @ mqs - theta * v
                res = math.sqrt(float(r @ r))
                goal = rel_tol * abs(theta)
                if res <= goal or (res <= STALL_FACTOR * goal and res > STALL_RATIO * last):
                    return theta, _unit(v, tiny)
                last = res
    return None


def _centre_upper(m: np.ndarray) -> None:
    """Double-centre, in place, the symmetric matrix whose upper triangle is ``m`` (Fortran
    order): ``M - r 1^T - 1 r^T + mean(r)``, ``r`` its row means (one ``symv``), on the upper
    triangle's row blocks only. Products with the centred matrix round to its own scale, not
    the (much larger) uncentred one's."""
    from scipy.linalg.blas import get_blas_funcs

    (symv,) = get_blas_funcs(("symv",), (m,))
    n = m.shape[0]
    r = symv(1.0 / n, m, np.ones(n, m.dtype))
    rows = torch.from_numpy(r - r.mean() / 2)  # r_i + r_j - mean(r), split between the two
    t = torch.from_numpy(m)
    for r0 in range(0, n, UPPER_BLOCK):
        r1 = r0 + UPPER_BLOCK
        t[r0:r1, r0:].sub_(rows[r0:r1, None]).sub_(rows[None, r0:])


def _symmetric_upper_top(
    m: np.ndarray, centred: bool, steps: int, restarts: int, tol: float | None
) -> tuple[float, np.ndarray]:
    """The top eigenpair of the symmetric matrix whose upper triangle is ``m`` (Fortran order,
    float32 / float64, overwritten; ``centred``: of ``H M H``): Lanczos on BLAS ``symv`` to a
    residual of ``tol * |theta|``, ``eigh`` in float64 when it does not converge."""
    from scipy.linalg.blas import get_blas_funcs

    (symv,) = get_blas_funcs(("symv",), (m,))
    if tol is None:
        tol = _TOL[torch.float64 if m.dtype == np.float64 else torch.float32]
    if centred:
        _centre_upper(m)
    found = _lanczos_top(lambda q: symv(1.0, m, q), m.shape[0], m.dtype, steps, restarts, tol,
                         centred)
    if found is not None:
        return found
    t = torch.from_numpy(m).double()
    vals, vecs = torch.linalg.eigh(t.triu() + t.triu(1).T)
    return float(vals[-1]), vecs[:, -1].numpy().astype(m.dtype)


def _double_centred(m: torch.Tensor) -> torch.Tensor:
    return m - m.mean(dim=-2, keepdim=True) - m.mean(dim=-1, keepdim=True) + m.mean(
        dim=(-2, -1), keepdim=True)


def _dense_top(m: torch.Tensor, centred: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The top eigenpair of each symmetric ``m`` ``(B, N, N)`` (``centred``: of ``H M H``) from
    a dense solver in float64: on CPU LAPACK's ``dsyevx`` for that one pair (~2 x faster than a
    whole ``eigh`` at 49 rows, 3 x at 100), the centring in numpy (whose small operations cost
    a fraction of torch's); elsewhere ``torch.linalg.eigh``."""
    if m.device.type != "cpu":
        vals, vecs = torch.linalg.eigh((_double_centred(m) if centred else m).double())
        return vals[:, -1].to(m.dtype), vecs[..., -1].to(m.dtype)
    from scipy.linalg.lapack import dsyevx

    a = m.detach().double().numpy()
    if centred:  # symmetric: the row means are the column means
        r = a.mean(axis=2)
        a = a - r[:, :, None] - r[:, None, :] + r.mean(axis=1)[:, None, None]
    n = a.shape[-1]
    vals, vecs = np.empty(len(a)), np.empty((len(a), n))
    for i, ai in enumerate(a):  # ai: C order, symmetric, so its Fortran view is itself
        w, z, _, _, info = dsyevx(ai.T, compute_v=1, range="I", il=n, iu=n)
        if info != 0:
            w, z = np.linalg.eigh(ai)
            w, z = w[-1:], z[:, -1:]
        vals[i], vecs[i] = w[0], z[:, 0]
    return torch.from_numpy(vals).to(m.dtype), torch.from_numpy(vecs).to(m.dtype)


def top_eigenpair(
    m: torch.Tensor, steps: int = LANCZOS_STEPS, restarts: int = 6, tol: float | None = None,
    centred: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest (algebraic) eigenvalue ``(B,)`` and a unit eigenvector ``(B, N)`` of each
    symmetric matrix of ``m`` ``(B, N, N)`` (``centred``: of ``H M H``, the double-centred
    matrix, ``H = I - 1 1^T / N``).

    Up to :data:`EIGH_MAX` rows (10 x 10 maps), or off the CPU: a dense ``eigh`` in float64.
    Larger, on CPU: restarted Lanczos per matrix (``steps`` matrix-vector products per restart
    at most), in ``m``'s dtype, to a residual of ``tol * |theta|`` (``None``: 1e-12 in float64,
    1e-6 in float32); a matrix not converged after ``restarts`` falls back to ``eigh``.
    """
    n = m.shape[-1]
    if n <= EIGH_MAX or m.device.type != "cpu" or m.dtype not in (torch.float32, torch.float64):
        return _dense_top(m, centred)
    pairs = [_symmetric_upper_top(np.array(mi.numpy(), order="F"), centred, steps, restarts, tol)
             for mi in m.detach()]
    return (torch.tensor([p[0] for p in pairs], dtype=m.dtype),
            torch.from_numpy(np.stack([p[1] for p in pairs])))


def _syrk_kernel(
    x: torch.Tensor, kernel: str, g: float, degree: int, coef0: float
) -> tuple[np.ndarray, float, float]:
    """One position set ``x`` ``(N, K)`` (CPU): the upper triangle of ``M`` (Fortran order, the
    lower triangle unused), the kernel's scale and a bound of ``M``'s entries."""
    from scipy.linalg.blas import get_blas_funcs

    a = x.numpy()
    if a.flags.f_contiguous:  # as kpcacam_map's transposed activations: no copy
        (syrk,) = get_blas_funcs(("syrk",), (a,))
        m = syrk(1.0, a)  # the upper triangle of x x^T
    else:
        (syrk,) = get_blas_funcs(("syrk",), (a.T,))
        m = syrk(1.0, np.ascontiguousarray(a).T, trans=1)
    t = torch.from_numpy(m)
    sq = t.diagonal().clone()
    scale = 1.0
    for r0 in range(0, len(sq), UPPER_BLOCK):  # the kernel on the upper triangle's row blocks
        r1 = r0 + UPPER_BLOCK
        scale, _ = _apply_kernel(t[r0:r1, r0:], kernel, g, degree, coef0, (sq[r0:r1], sq[r0:]))
    return m, scale, _entry_bound(t, kernel, g, coef0)


def _entry_bound(m: torch.Tensor, kernel: str, g: float, coef0: float) -> float:
    """A bound of ``|M_ij|`` without a pass over ``M``: the sigmoid's ``(0, 1)``; for the
    positive semi-definite kernels ``max_i M_ii`` (Cauchy-Schwarz)."""
    if kernel == "sigmoid":
        return 1.0
    if kernel != "poly" or (g >= 0 and coef0 >= 0):
        return float(m.diagonal().abs().max())
    return float(m.triu().abs().max())


def top_kernel_component(
    x: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None,
    degree: int = 3, coef0: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top eigenvalue ``(B,)`` and unit eigenvector ``(B, N)`` of the double-centred kernel
    matrix ``K_c = H K H`` of each set of ``N`` samples ``x`` ``(B, N, K)`` (float32 or float64;
    ``gamma=None``: ``1 / K``), as :func:`top_eigenpair` of ``kernel_matrix(x)`` computes it,
    with the kernel formed by ``syrk`` on CPU (see the module's docstring). An eigenvalue at
    the rounding level of the kernel's products (``|theta| <= tol * N * max|M|``, ``tol``
    1e-6 in float32, 1e-12 in float64) is returned as 0: positions all alike have no
    component, not a map of rounding noise.

    Raises:
        ValueError: An unknown kernel.
    """
    _check_kernel(kernel)
    g = _gamma(x, gamma)
    n, tol = x.shape[1], _TOL.get(x.dtype, _TOL[torch.float32])
    if n <= EIGH_MAX or x.device.type != "cpu" or x.dtype not in _TOL:
        m = x @ x.transpose(1, 2)
        scale, _ = _apply_kernel(m, kernel, g, degree, coef0)
        val, vec = _dense_top(m, True)
        floor = tol * n * m.abs().flatten(1).amax(1)
        return torch.where(val.abs() <= floor, 0.0, val) * scale, vec
    vals, vecs = [], []
    for xi in x.detach():
        upper, scale, bound = _syrk_kernel(xi, kernel, g, degree, coef0)
        theta, v = _symmetric_upper_top(upper, True, LANCZOS_STEPS, 6, tol)
        vals.append(0.0 if abs(theta) <= tol * n * bound else theta * scale)
        vecs.append(v)
    return torch.tensor(vals, dtype=x.dtype), torch.from_numpy(np.stack(vecs))
