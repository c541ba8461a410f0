"""Host passes that give the per-row sums of the leave-one-out formulas
(:mod:`pyckafast._core.leave_one_out`).

Linear: one pass over row chunks after the terms: each chunk is shifted in the input dtype by
the mean rounded to it (as the terms' own pass shifts), runs the GEMMs ``U_c [C_xx | C_xy]``
and ``V_c C_yy`` in that dtype, and is reduced to row dot products, the rounding of the mean
corrected in float64; chunks run on the thread budget. O(n) output, O(chunk p) scratch.

RBF: two passes over tiles of K and L (float64, from centred data): the first the row sums, the
second the products with them; every other sum is a row sum of the same tiles. O(n + tile^2).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._core.leave_one_out import KernelRows, LinearRows
from .._core.terms import LinearTerms
from .._core.threads import get_num_threads, single_threaded_blas

__all__ = ["linear_rows", "rbf_rows"]

_ROWS = 32768


def linear_rows(x: np.ndarray, y: np.ndarray, terms: LinearTerms, debiased: bool) -> LinearRows:
    """Per-row sums of the linear leave-one-out formulas from the data and their terms."""
    c = terms.centred()
    n, p = x.shape
    dtype = np.result_type(x.dtype, y.dtype, np.float32)
    wx = np.hstack([c.xx, c.xy]).astype(dtype)
    wy = c.yy.astype(dtype)
    t = c.norms
    keys = ("a", "b", "kxy", "kxx", "kyy", "x_qx", "x_rx", "y_qy", "y_ry")
    out = {k: np.empty(n) for k in keys[:5]}
    if debiased:
        out.update({k: np.empty(n) for k in keys[5:]})

    frame_x = _Frame(c.shift_x, c.scale_x, dtype)
    frame_y = _Frame(c.shift_y, c.scale_y, dtype)
    # x~ = u - dx with u the rows shifted in the GEMM dtype: the corrections of dx, dy (tiny:
    # the rounding of the mean to that dtype) are matrix-vector products, exact in float64.
    dx, dy = frame_x.residual, frame_y.residual
    cxx_dx, cxy_dy, cyx_dx, cyy_dy = c.xx @ dx, c.xy @ dy, c.xy.T @ dx, c.yy @ dy
    vx = np.column_stack([dx, cxx_dx, cxy_dy] + ([t.qx, t.rx] if debiased else []))
    vy = np.column_stack([dy, cyx_dx, cyy_dy] + ([t.qy, t.ry] if debiased else []))
    const_xx, const_yy, const_xy = dx @ cxx_dx, dy @ cyy_dy, dx @ cxy_dy
    vx32, vy32 = vx.astype(dtype), vy.astype(dtype)

    def chunk(lo: int) -> None:
        hi = min(lo + _ROWS, n)
        u, v = frame_x.rows(x[lo:hi]), frame_y.rows(y[lo:hi])
        gx, gy = u @ wx, v @ wy
        mx, my = (u @ vx32).T, (v @ vy32).T  # rows: u.dx, u.Cxx dx, u.Cxy dy, ...
        out["a"][lo:hi] = _rowdot(u, u) - 2 * mx[0] + dx @ dx
        out["b"][lo:hi] = _rowdot(v, v) - 2 * my[0] + dy @ dy
        out["kxx"][lo:hi] = _rowdot(gx[:, :p], u) - 2 * mx[1] + const_xx
        out["kxy"][lo:hi] = _rowdot(gx[:, p:], v) - mx[2] - my[1] + const_xy
        out["kyy"][lo:hi] = _rowdot(gy, v) - 2 * my[2] + const_yy
        if debiased:
            out["x_qx"][lo:hi] = mx[3] - dx @ t.qx
            out["x_rx"][lo:hi] = mx[4] - dx @ t.rx
            out["y_qy"][lo:hi] = my[3] - dy @ t.qy
            out["y_ry"][lo:hi] = my[4] - dy @ t.ry

    starts = range(0, n, _ROWS)
    workers = max(1, min(get_num_threads(), len(starts)))
    if workers == 1:
        for lo in starts:
            chunk(lo)
    else:  # one BLAS thread per worker: the workers are the parallelism
        with single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
            list(pool.map(chunk, starts))
    a, b = out["a"], out["b"]
    return LinearRows(
        n=n, a=a, b=b, kxy=out["kxy"], kxx=out["kxx"], kyy=out["kyy"],
        fxy=float(np.vdot(c.xy, c.xy)), fxx=float(np.vdot(c.xx, c.xx)),
        fyy=float(np.vdot(c.yy, c.yy)), x_qx=out.get("x_qx"), x_rx=out.get("x_rx"),
        y_qy=out.get("y_qy"), y_ry=out.get("y_ry"), sum_ab=float(a @ b), sum_aa=float(a @ a),
        sum_bb=float(b @ b),
    )


def rbf_rows(x: np.ndarray, y: np.ndarray, gamma_x: float, gamma_y: float, *, debiased: bool,
             tile: int = 1024, report=None) -> KernelRows:
    """Row sums of the RBF kernels (with diagonal 1, or zeroed for the unbiased estimator)
    over tiles, minus a constant near the typical entry (both estimators are invariant to it,
    on every subset of samples, and it keeps wide bandwidths from cancelling)."""
    xs, ys = _centred(x), _centred(y)
    n = xs.shape[0]
    blocks = [(lo, min(lo + tile, n)) for lo in range(0, n, tile)]
    cx, cy = _typical(xs, gamma_x, tile), _typical(ys, gamma_y, tile)
    diag_k = np.zeros(n) if debiased else np.full(n, 1.0 - cx)
    diag_l = np.zeros(n) if debiased else np.full(n, 1.0 - cy)

    def tiles():
        for i0, i1 in blocks:
            for j0, j1 in blocks:
                k = _kernel(xs, i0, i1, j0, j1, gamma_x) - cx
                l = _kernel(ys, i0, i1, j0, j1, gamma_y) - cy
                if i0 == j0:
                    np.fill_diagonal(k, diag_k[i0])
                    np.fill_diagonal(l, diag_l[i0])
                yield (i0, i1, j0, j1), k, l

    k_sum, l_sum = np.zeros(n), np.zeros(n)
    total, done = 2 * len(blocks) ** 2, 0
    for (i0, i1, j0, j1), k, l in tiles():
        k_sum[i0:i1] += k.sum(axis=1)
        l_sum[i0:i1] += l.sum(axis=1)
        done += 1
        if report is not None:
            report(done, total)
    sums = {name: np.zeros(n) for name in ("kl", "kk", "ll", "k_l", "l_k", "k_k", "l_l")}
    for (i0, i1, j0, j1), k, l in tiles():
        sl = slice(i0, i1)
        sums["kl"][sl] += np.einsum("ij,ij->i", k, l)
        sums["kk"][sl] += np.einsum("ij,ij->i", k, k)
        sums["ll"][sl] += np.einsum("ij,ij->i", l, l)
        sums["k_l"][sl] += k @ l_sum[j0:j1]
        sums["l_k"][sl] += l @ k_sum[j0:j1]
        sums["k_k"][sl] += k @ k_sum[j0:j1]
        sums["l_l"][sl] += l @ l_sum[j0:j1]
        done += 1
        if report is not None:
            report(done, total)
    return KernelRows(k=k_sum, l=l_sum, dk=diag_k, dl=diag_l, **sums)


class _Frame:
    """Rows ``a * scale - shift`` presented in the GEMM dtype as ``u = a * scale - s`` with s
    the shift rounded to that dtype: the subtraction of two floats of that dtype is correctly
    rounded, so u carries the precision of the centred value, not of the large mean; the
    float64 ``residual = shift - s`` is corrected for by the caller."""

    def __init__(self, shift: np.ndarray, scale: float, dtype: np.dtype):
        self.dtype, self.scale = dtype, scale
        self.shift = shift.astype(dtype)
        self.residual = shift - self.shift.astype(np.float64)

    def rows(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        if self.scale != 1.0 or a.dtype != self.dtype:
            a = (np.asarray(a, dtype=np.float64) * self.scale).astype(self.dtype)
        return np.subtract(a, self.shift, dtype=self.dtype)


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b).astype(np.float64, copy=False)


def _centred(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a - a.mean(axis=0)


def _kernel(a: np.ndarray, i0: int, i1: int, j0: int, j1: int, gamma: float) -> np.ndarray:
    u, v = a[i0:i1], a[j0:j1]
    d2 = (np.einsum("ij,ij->i", u, u)[:, None] + np.einsum("ij,ij->i", v, v)[None, :]
          - 2.0 * (u @ v.T))
    return np.exp(-gamma * np.maximum(d2, 0.0))


def _typical(a: np.ndarray, gamma: float, tile: int) -> float:
    """The mean off-diagonal entry of the first tile: a constant near the typical entry."""
    m = min(tile, a.shape[0])
    k = _kernel(a, 0, m, 0, m, gamma)
    return float((k.sum() - m) / max(m * (m - 1), 1))
