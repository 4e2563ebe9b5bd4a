"""Kernel PCA's top component (methods/kernel_pca.py): the ``syrk`` + Lanczos path on CPU
against a dense ``eigh`` of the whole double-centred kernel, for every kernel and dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_cam.methods import LayerPass, kernel_pca
from lightning_cam.methods.kernel_pca import (
    EIGH_MAX,
    KPCA_KERNELS,
    kernel_matrix,
    top_eigenpair,
    top_kernel_component,
)
from lightning_cam.methods.recent import kpcacam_map


def _dense_top(x: torch.Tensor, kernel: str, gamma: float | None) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
    """The independent computation: the whole kernel in float64, centred as sklearn's
    ``KernelCenterer``, all eigenpairs."""
    k = kernel_matrix(x.double(), kernel, gamma)
    n = k.shape[-1]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    vals, vecs = torch.linalg.eigh(h @ k @ h)
    return vals[:, -1], vecs[..., -1]


def _aligned(v: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return v * torch.sign((v * ref).sum(-1, keepdim=True))


def _structured(b: int, n: int, c: int, dtype: torch.dtype) -> torch.Tensor:
    """Activations with a clear top component (a blob of strong channels), centred."""
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(b, n, c, generator=g, dtype=dtype))
    x[:, : n // 5, : c // 4] += 2.0
    return x - x.mean(1, keepdim=True)


@pytest.mark.parametrize("kernel", KPCA_KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_syrk_lanczos_equals_dense_eigh(kernel: str, dtype: torch.dtype) -> None:
    x = _structured(2, 3 * EIGH_MAX // 2, 24, dtype)  # above EIGH_MAX: the syrk path
    gamma = 0.05 if kernel == "poly" else None
    val, vec = top_kernel_component(x, kernel, gamma)
    want_val, want_vec = _dense_top(x, kernel, gamma)
    assert val.dtype == dtype and vec.dtype == dtype and vec.shape == (2, x.shape[1])
    tol = 1e-4 if dtype == torch.float32 else 1e-8
    torch.testing.assert_close(val.double(), want_val, rtol=tol, atol=tol)
    torch.testing.assert_close(_aligned(vec.double(), want_vec), want_vec, rtol=0,
                               atol=10 * tol)


def test_small_maps_take_dense_eigh_and_agree() -> None:
    x = _structured(3, EIGH_MAX, 16, torch.float32)
    val, vec = top_kernel_component(x)
    want_val, want_vec = _dense_top(x, "sigmoid", None)
    torch.testing.assert_close(val.double(), want_val, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_aligned(vec.double(), want_vec), want_vec, rtol=0, atol=1e-5)


def test_lanczos_reads_the_upper_triangle_only_and_falls_back_to_eigh() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(150, 150, generator=g, dtype=torch.float64)
    m = a + a.T
    want = torch.linalg.eigh(m)
    upper = np.asfortranarray(m.numpy().copy())
    upper[np.tril_indices(150, -1)] = np.nan  # never read
    for restarts in (6, 0):  # converged Lanczos; none at all: the eigh fallback
        theta, v = kernel_pca._symmetric_upper_top(upper.copy(order="F"), False, 48, restarts,
                                                    None)
        assert abs(theta - float(want.eigenvalues[-1])) < 1e-8
        vt = torch.from_numpy(v)
        torch.testing.assert_close(_aligned(vt, want.eigenvectors[:, -1]),
                                   want.eigenvectors[:, -1])


def test_top_eigenpair_centred_equals_eigh_of_centred_matrix() -> None:
    g = torch.Generator().manual_seed(3)
    b = torch.randn(2, 200, 30, generator=g, dtype=torch.float64)
    m = b @ b.transpose(1, 2)
    h = torch.eye(200, dtype=torch.float64) - 1.0 / 200
    vals, vecs = torch.linalg.eigh(h @ m @ h)
    before = m.clone()
    theta, v = top_eigenpair(m, centred=True)
    assert torch.equal(m, before)  # centred on a copy
    torch.testing.assert_close(theta, vals[:, -1])
    torch.testing.assert_close(_aligned(v, vecs[..., -1]), vecs[..., -1])


def test_constant_positions_give_a_zero_component() -> None:
    for n in (EIGH_MAX, 2 * EIGH_MAX):  # eigh, syrk + Lanczos
        x = torch.full((1, n, 8), 0.5)  # every position alike: K_c = 0 (up to rounding)
        val, vec = top_kernel_component(x - x.mean(1, keepdim=True))
        assert float(val.abs().max()) == 0.0
        assert torch.isfinite(vec).all()
        a = torch.full((2, 8, 15, n // 15), 0.5)  # and the method's map: all zero
        assert float(kpcacam_map(LayerPass(a)).abs().max()) == 0.0


def test_unknown_kernel_refused() -> None:
    with pytest.raises(ValueError, match="kernel must be one of"):
        top_kernel_component(torch.zeros(1, 4, 2), "laplace")
