"""The plain float64 reference backend: every per-chunk term computed by NumPy in float64."""

from __future__ import annotations

import numpy as np

from .._core.bandwidth import tile_histogram
from .._core.rbf_entry import kernel_args, shifted_exp
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


def rbf_tile(gx, gy, nxa, nya, nxb, nyb, kernel_x, kernel_y, diagonal):
    """Float64 reference of one RBF tile pair (see ``pyckafast._core.pairs.PairTerms``); the
    kernels are ``RbfKernel``s, (gamma, c, m) tuples or bare gammas (E = K - 1).

    A diagonal tile evaluates its pairs i < j only; they stand for (i, j) and (j, i), so the
    sums are doubled and the column sums go into the same rows (``row_*_b`` are zeros).
    """
    kernel_x, kernel_y = kernel_args(kernel_x), kernel_args(kernel_y)
    if diagonal:
        return _diagonal_tile(gx, gy, nxa, nya, kernel_x, kernel_y)
    e = _rbf_entries(gx, nxa[:, None], nxb[None, :], kernel_x)
    f = _rbf_entries(gy, nya[:, None], nyb[None, :], kernel_y)
    return (float(np.vdot(e, f)), float(np.vdot(e, e)), float(np.vdot(f, f)),
            e.sum(axis=1), f.sum(axis=1), e.sum(axis=0), f.sum(axis=0))


def _diagonal_tile(gx, gy, nx, ny, kernel_x, kernel_y):
    m = gx.shape[0]
    i, j = np.triu_indices(m, 1)
    e = _rbf_entries(gx[i, j], nx[i], nx[j], kernel_x)
    f = _rbf_entries(gy[i, j], ny[i], ny[j], kernel_y)
    row_k = np.bincount(i, e, m) + np.bincount(j, e, m)
    row_l = np.bincount(i, f, m) + np.bincount(j, f, m)
    return (2.0 * float(np.vdot(e, f)), 2.0 * float(np.vdot(e, e)), 2.0 * float(np.vdot(f, f)),
            row_k, row_l, np.zeros(m), np.zeros(m))


def _rbf_entries(g, na, nb, kernel):
    """E = 2^m exp(-gamma |a_i - b_j|^2) - c from dot products and squared norms, in float64."""
    gamma = kernel_args(kernel)[0]
    x = -gamma * np.maximum(np.asarray(na, np.float64) + nb - 2.0 * np.asarray(g, np.float64),
                            0.0)
    return shifted_exp(np, x, kernel)


def d2_histogram(g, na, nb, diagonal, lo, hi, nbins):
    """Counts of the squared distances of one tile (pairs i < j only for a diagonal tile): the
    NumPy twin of the Numba kernel (same bins), so this backend runs no compiled code."""
    return tile_histogram(np, g, na, nb, diagonal, lo, hi, nbins)
