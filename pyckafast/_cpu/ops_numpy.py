"""The plain float64 reference backend: every per-chunk term computed by NumPy in float64."""

from __future__ import annotations

import numpy as np

from .._core.terms import RowNormTerms

GEMM_DTYPE = np.float64  # this backend upcasts every chunk; its GEMMs run in float64


# The kernels release the GIL and keep no shared state: chunk-parallel passes may call them
# from several threads at once.
CHUNK_PARALLEL = True


def gemm_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(GEMM_DTYPE)


def linear_moments(x, y, shift_x, shift_y, out_x, out_y, debiased):
    """Write the shifted rows into ``out_x``/``out_y``; return (sum_x, sum_y, norms or None)."""
    np.subtract(x, shift_x, out=out_x)
    np.subtract(y, shift_y, out=out_y)
    sum_x, sum_y = out_x.sum(axis=0), out_y.sum(axis=0)
    if not debiased:
        return sum_x, sum_y, None
    q = np.einsum("ij,ij->i", out_x, out_x)
    r = np.einsum("ij,ij->i", out_y, out_y)
    norms = RowNormTerms(
        sum_q=float(q.sum()), sum_r=float(r.sum()),
        sum_qq=float(q @ q), sum_rr=float(r @ r), sum_qr=float(q @ r),
        qx=q @ out_x, rx=r @ out_x, qy=q @ out_y, ry=r @ out_y,
    )
    return sum_x, sum_y, norms


def rbf_tile(gx, gy, nxa, nya, nxb, nyb, gamma_x, gamma_y, diagonal):
    """Float64 reference of one RBF tile pair (see ``pyckafast._cpu.rbf.PairTerms``)."""
    e = _rbf_entries(gx, nxa, nxb, gamma_x, diagonal)
    f = _rbf_entries(gy, nya, nyb, gamma_y, diagonal)
    if diagonal:  # row_*_a already hold the full row sums
        row_k_b, row_l_b = np.zeros(e.shape[1]), np.zeros(f.shape[1])
    else:
        row_k_b, row_l_b = e.sum(axis=0), f.sum(axis=0)
    return (float(np.vdot(e, f)), float(np.vdot(e, e)), float(np.vdot(f, f)),
            e.sum(axis=1), f.sum(axis=1), row_k_b, row_l_b)


def _rbf_entries(g, na, nb, gamma, diagonal):
    d2 = np.maximum(na[:, None] + nb[None, :] - 2.0 * g, 0.0)
    e = np.expm1(-gamma * d2)
    if diagonal:
        np.fill_diagonal(e, 0.0)  # K_ii - 1 is exactly 0
    return e


def rbf_terms(x, y, *, gamma_x, gamma_y, tile=None):
    """Kernel terms of the RBF kernels over all pairs, float64 tiles."""
    from . import rbf as cpu_rbf

    return cpu_rbf.rbf_terms(x, y, gamma_x=gamma_x, gamma_y=gamma_y, tile=tile,
                                 backend="numpy")
