"""Host passes that give the per-row sums of the leave-one-out formulas
(:mod:`pyckafast._core.leave_one_out`).

Linear: one pass over row chunks after the terms: each chunk is centred exactly (float64
``x * scale - mean``), rounded to the input dtype for the GEMMs ``X~_c [C_xx | C_xy]`` and
``Y~_c C_yy`` (as the terms' own pass runs its GEMMs), and reduced to row dot products; chunks
run on the thread budget. O(n) output, O(chunk p) scratch.

RBF: two passes over tiles of K and L (float64, from centred data): the first the row sums, the
second the products with them; every other sum is a row sum of the same tiles. O(n + tile^2).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._core.leave_one_out import KernelRows, LinearRows
from .._core.terms import LinearTerms
from .._core.threads import get_num_threads

__all__ = ["linear_rows", "rbf_rows"]

_ROWS = 32768


def linear_rows(x: np.ndarray, y: np.ndarray, terms: LinearTerms, debiased: bool) -> LinearRows:
    """Per-row sums of the linear leave-one-out formulas from the data and their terms."""
    c = terms.centred()
    n, p = x.shape
    dtype = np.result_type(x.dtype, y.dtype, np.float32)
    wx = np.hstack([c.xx, c.xy]).astype(dtype)
    wy = c.yy.astype(dtype)
    extra_x = extra_y = None
    if debiased:
        t = c.norms
        extra_x, extra_y = np.column_stack([t.qx, t.rx]), np.column_stack([t.qy, t.ry])
    keys = ("a", "b", "kxy", "kxx", "kyy", "x_qx", "x_rx", "y_qy", "y_ry")
    out = {k: np.empty(n) for k in keys[:5]}
    if debiased:
        out.update({k: np.empty(n) for k in keys[5:]})

    def chunk(lo: int) -> None:
        hi = min(lo + _ROWS, n)
        x64 = np.asarray(x[lo:hi], dtype=np.float64) * c.scale_x - c.shift_x
        y64 = np.asarray(y[lo:hi], dtype=np.float64) * c.scale_y - c.shift_y
        out["a"][lo:hi] = np.einsum("ij,ij->i", x64, x64)
        out["b"][lo:hi] = np.einsum("ij,ij->i", y64, y64)
        xc, yc = x64.astype(dtype, copy=False), y64.astype(dtype, copy=False)
        gx, gy = xc @ wx, yc @ wy
        out["kxx"][lo:hi] = np.einsum("ij,ij->i", gx[:, :p], xc)
        out["kxy"][lo:hi] = np.einsum("ij,ij->i", gx[:, p:], yc)
        out["kyy"][lo:hi] = np.einsum("ij,ij->i", gy, yc)
        if debiased:
            ex, ey = x64 @ extra_x, y64 @ extra_y
            out["x_qx"][lo:hi], out["x_rx"][lo:hi] = ex[:, 0], ex[:, 1]
            out["y_qy"][lo:hi], out["y_ry"][lo:hi] = ey[:, 0], ey[:, 1]

    starts = range(0, n, _ROWS)
    workers = max(1, min(get_num_threads(), len(starts)))
    if workers == 1:
        for lo in starts:
            chunk(lo)
    else:
        with ThreadPoolExecutor(workers) as pool:
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
