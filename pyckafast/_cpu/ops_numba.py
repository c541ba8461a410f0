"""Numba kernels: one fused, parallel pass per chunk that shifts the rows (in the input dtype,
so the GEMMs that follow run at full BLAS speed) and accumulates the non-GEMM terms in float64."""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .._core.terms import RowNormTerms
from .._core.threads import sync_numba


def unusable_reason() -> str | None:
    return None


def gemm_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(dtype)


@njit(cache=True, inline="always")
def _shift_row(src, shift, dst, i, colsum):
    """dst[i] = src[i] - shift (in the input dtype); colsum += dst[i]; return |dst[i]|^2."""
    q = 0.0
    for j in range(src.shape[1]):
        v = src[i, j] - shift[j]
        dst[i, j] = v
        w = np.float64(v)
        colsum[j] += w
        q += w * w
    return q


@njit(cache=True, inline="always")
def _weighted_row(dst, i, q, r, qsum, rsum):
    for j in range(dst.shape[1]):
        w = np.float64(dst[i, j])
        qsum[j] += q * w
        rsum[j] += r * w


@njit(parallel=True, cache=True, nogil=True)  # whole tiles: let other Python threads run
def _moments(x, y, sx, sy, ox, oy, debiased, nb):
    m, p1, p2 = x.shape[0], x.shape[1], y.shape[1]
    acc_x = np.zeros((nb, 3, p1))  # per block: column sums, sum q x, sum r x
    acc_y = np.zeros((nb, 3, p2))  # per block: column sums, sum q y, sum r y
    acc_s = np.zeros((nb, 5))  # per block: sum q, sum r, sum q^2, sum r^2, sum q r
    for b in prange(nb):
        for i in range(b * m // nb, (b + 1) * m // nb):
            q = _shift_row(x, sx, ox, i, acc_x[b, 0])
            r = _shift_row(y, sy, oy, i, acc_y[b, 0])
            if debiased:
                _weighted_row(ox, i, q, r, acc_x[b, 1], acc_x[b, 2])
                _weighted_row(oy, i, q, r, acc_y[b, 1], acc_y[b, 2])
                acc_s[b, 0] += q
                acc_s[b, 1] += r
                acc_s[b, 2] += q * q
                acc_s[b, 3] += r * r
                acc_s[b, 4] += q * r
    return acc_x.sum(axis=0), acc_y.sum(axis=0), acc_s.sum(axis=0)


def linear_moments(x, y, shift_x, shift_y, out_x, out_y, debiased):
    """Write the shifted rows into ``out_x``/``out_y``; return (sum_x, sum_y, norms or None)."""
    sx = shift_x.astype(out_x.dtype)
    sy = shift_y.astype(out_y.dtype)
    sync_numba()
    blocks = max(1, min(x.shape[0], 4 * numba.get_num_threads()))
    ax, ay, s = _moments(x, y, sx, sy, out_x, out_y, bool(debiased), blocks)
    if not debiased:
        return ax[0], ay[0], None
    norms = RowNormTerms(
        sum_q=float(s[0]), sum_r=float(s[1]), sum_qq=float(s[2]), sum_rr=float(s[3]),
        sum_qr=float(s[4]), qx=ax[1], rx=ax[2], qy=ay[1], ry=ay[2],
    )
    return ax[0], ay[0], norms


from .ops_numba_rbf import d2_histogram, rbf_tile  # noqa: E402,F401  (RBF operations)
