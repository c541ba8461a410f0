"""The plain float64 reference backend: every per-chunk term computed by NumPy in float64."""

from __future__ import annotations

import numpy as np

from .._terms import RowNormTerms

GEMM_DTYPE = np.float64  # this backend upcasts every chunk; its GEMMs run in float64


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
