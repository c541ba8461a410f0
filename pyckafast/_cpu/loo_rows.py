"""Host passes that give the per-row sums of the leave-one-out formulas
(:mod:`pyckafast._core.leave_one_out`).

Linear: one pass over row chunks after the terms. The three quadratic forms of every row
(x~' C_xx x~, x~' C_xy y~, y~' C_yy y~) are sums over the canonical coordinates of the row
(:func:`canonical_bases`), so each chunk costs one p x p and one q x q GEMM, as many flops as
the terms pass. Each chunk is shifted in the input dtype by the mean rounded to it (as the
terms' own pass shifts; a Numba kernel that also makes the row norms in float64), multiplied in
that dtype, and reduced per row in float64 by a second kernel while the chunk is in cache, the
rounding of the mean corrected in float64; chunks run on the thread budget. O(n) output,
O(chunk p) scratch.

RBF: two passes over tiles of K and L (float64, from centred data): the first the row sums, the
second the products with them; every other sum is a row sum of the same tiles. O(n + tile^2).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from numba import njit

from .._core.leave_one_out import KernelRows, LinearRows
from .._core.terms import LinearTerms
from .._core.threads import get_num_threads, single_threaded_blas

__all__ = ["linear_rows", "rbf_rows"]

# A chunk of rows and its GEMM result stay in L2 between the GEMM and the row forms.
_CHUNK_BYTES = 1 << 20


def linear_rows(x: np.ndarray, y: np.ndarray, terms: LinearTerms, debiased: bool,
                rows: int | None = None) -> LinearRows:
    """Per-row sums of the linear leave-one-out formulas from the data and their terms;
    ``rows`` per chunk (default: about 1 MB of one side's rows)."""
    c = terms.centred()
    n = x.shape[0]
    dtype = np.result_type(x.dtype, y.dtype, np.float32)
    rows = rows or max(256, _CHUNK_BYTES // (dtype.itemsize * max(x.shape[1], y.shape[1])))
    with single_threaded_blas():  # LAPACK's threads cost more than they save at p x p
        basis = canonical_bases(c.xx, c.yy, c.xy)
    t = c.norms
    frame_x = _Frame(c.shift_x, c.scale_x, dtype)
    frame_y = _Frame(c.shift_y, c.scale_y, dtype)
    # x~ = u - dx with u the rows shifted in the GEMM dtype and dx the rounding of the mean to
    # that dtype (tiny): the canonical coordinates T'x~ = T'u - T'dx take it as a float64
    # constant, the norms |x~|^2 = |u|^2 - 2 u.dx + |dx|^2 and x~.qx = u.qx - dx.qx as more
    # columns of the GEMM.
    dx, dy = frame_x.residual, frame_y.residual
    extra_x = [dx] + ([t.qx, t.rx] if debiased else [])
    extra_y = [dy] + ([t.qy, t.ry] if debiased else [])
    wx = np.column_stack([basis.tx] + extra_x).astype(dtype)
    wy = np.column_stack([basis.ty] + extra_y).astype(dtype)
    rx, ry = basis.tx.shape[1], basis.ty.shape[1]
    cx, cy = basis.tx.T @ dx, basis.ty.T @ dy
    keys = ("a", "b", "kxy", "kxx", "kyy") + (("x_qx", "x_rx", "y_qy", "y_ry") if debiased else ())
    out = {key: np.empty(n) for key in keys}
    local = threading.local()

    def chunk(lo: int) -> None:
        hi = min(lo + rows, n)
        if not hasattr(local, "u"):  # per worker: no page faults of fresh buffers per chunk
            local.u, local.v = (np.empty((rows, a.shape[1]), dtype) for a in (x, y))
            local.g, local.h = (np.empty((rows, w.shape[1]), dtype) for w in (wx, wy))
        m = hi - lo
        u, v, g, h = local.u[:m], local.v[:m], local.g[:m], local.h[:m]
        qu, qv = frame_x.shift_into(x[lo:hi], u), frame_y.shift_into(y[lo:hi], v)
        np.matmul(u, wx, out=g)
        np.matmul(v, wy, out=h)
        _row_forms(g, h, cx, cy, basis.sv, out["kxx"][lo:hi], out["kyy"][lo:hi],
                   out["kxy"][lo:hi])
        out["a"][lo:hi] = qu - 2 * g[:, rx] + dx @ dx
        out["b"][lo:hi] = qv - 2 * h[:, ry] + dy @ dy
        if debiased:
            out["x_qx"][lo:hi] = g[:, rx + 1] - dx @ t.qx
            out["x_rx"][lo:hi] = g[:, rx + 2] - dx @ t.rx
            out["y_qy"][lo:hi] = h[:, ry + 1] - dy @ t.qy
            out["y_ry"][lo:hi] = h[:, ry + 2] - dy @ t.ry

    starts = range(0, n, rows)
    workers = max(1, min(get_num_threads(), len(starts)))
    # One BLAS thread per worker: the workers are the parallelism.
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


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _row_forms(g, h, cx, cy, sv, kxx, kyy, kxy):
    """Per row, from the canonical coordinates alpha = g[:, :r] - cx, beta = h[:, :s] - cy (in
    float64): kxx = |alpha|^2, kyy = |beta|^2, kxy = sum_k sv_k alpha_k beta_k."""
    for i in range(g.shape[0]):
        sxx, syy, sxy = 0.0, 0.0, 0.0
        for j in range(cx.size):
            a = np.float64(g[i, j]) - cx[j]
            sxx += a * a
        for j in range(cy.size):
            b = np.float64(h[i, j]) - cy[j]
            syy += b * b
        for j in range(sv.size):
            sxy += sv[j] * (np.float64(g[i, j]) - cx[j]) * (np.float64(h[i, j]) - cy[j])
        kxx[i], kyy[i], kxy[i] = sxx, syy, sxy


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _shift_rows(a, shift, out):
    """out = a - shift (in the dtype of out); return the float64 squared norms of its rows."""
    q = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        s = 0.0
        for j in range(a.shape[1]):
            d = a[i, j] - shift[j]
            out[i, j] = d
            s += np.float64(d) * np.float64(d)
        q[i] = s
    return q


class CanonicalBases(NamedTuple):
    """``x' C_xx x = |T_x' x|^2``, ``y' C_yy y = |T_y' y|^2`` and
    ``x' C_xy y = sum_k sv_k (T_x' x)_k (T_y' y)_k`` for x, y in the ranges of C_xx, C_yy."""

    tx: np.ndarray  # (p, r)
    ty: np.ndarray  # (q, s)
    sv: np.ndarray  # (min(r, s),)


def canonical_bases(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray) -> CanonicalBases:
    """Canonical correlation bases of the centred moments (C_xx = A A', C_yy = B B' on their
    ranges, A^+ C_xy B^+' = U S V'; T_x = A U, T_y = B V): the three quadratic forms of the
    leave-one-out per row from p + q coordinates, i.e. one p x p and one q x q GEMM per row
    instead of p x (p + q) and q x q.

    Directions with eigenvalue below ``max(p, q) * eps * lambda_max`` (float64 rounding of the
    eigensolver) are dropped: the centred rows lie in the ranges of C_xx and C_yy, and their
    components along such directions contribute below that rounding."""
    (ax, ix), (ay, iy) = _factor(cxx), _factor(cyy)
    r, s = ax.shape[1], ay.shape[1]
    if min(r, s) == 0:
        return CanonicalBases(ax, ay, np.zeros(0))
    u, sv, vt = np.linalg.svd(ix.T @ cxy @ iy)
    return CanonicalBases(ax @ u, ay @ vt.T, sv)


def _factor(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, A^+') with C = A A' on the range of C (A = Q L^(1/2) over the kept eigenvalues)."""
    w, q = np.linalg.eigh(c)
    keep = w > max(c.shape[0], 1) * np.finfo(np.float64).eps * max(float(w[-1]), 0.0)
    root = np.sqrt(w[keep])
    return q[:, keep] * root, q[:, keep] / root


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

    def shift_into(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out = a * scale - s``; returns the float64 squared norms of its rows."""
        a = np.asarray(a)
        if self.scale != 1.0 or a.dtype != self.dtype:
            a = (np.asarray(a, dtype=np.float64) * self.scale).astype(self.dtype)
        return _shift_rows(a, self.shift, out)


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
