"""Exact, mergeable sufficient statistics ("terms") that every backend produces.

Linear terms are raw moments of the rows *shifted* by a fixed vector s (x -> x - s); CKA is
translation invariant, and shifting by a vector close to the mean before accumulating keeps the
moments free of the catastrophic cancellation of ``X'X - n mu mu'`` on raw float32 data.
Changing the shift is exact algebra (:meth:`LinearTerms.reshift`), so terms computed with any
shifts merge by re-expressing one in the other's shift and adding. Chunks, streams, GPU blocks
and Dask partitions are all just producers of these terms; :mod:`pyckafast._core.combine` turns
them into HSIC/CKA.

Kernel terms (:class:`KernelTerms`) are the pair sums of two n x n kernel matrices K and L and
their row sums, accumulated tile by tile without ever holding K or L.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

__all__ = ["RowNormTerms", "LinearTerms", "KernelTerms"]


@dataclass(frozen=True)
class RowNormTerms:
    """Weighted moments of the shifted squared row norms q_i = |x_i|^2, r_i = |y_i|^2.

    They are what debiased (unbiased-HSIC) linear CKA needs beyond the biased moments.
    """

    sum_q: float
    sum_r: float
    sum_qq: float
    sum_rr: float
    sum_qr: float
    qx: np.ndarray  # sum_i q_i x_i, shape (p1,)
    rx: np.ndarray  # sum_i r_i x_i, shape (p1,)
    qy: np.ndarray  # sum_i q_i y_i, shape (p2,)
    ry: np.ndarray  # sum_i r_i y_i, shape (p2,)

    def __add__(self, other: RowNormTerms) -> RowNormTerms:
        return RowNormTerms(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class LinearTerms:
    """Float64 moments of the rows of x and y, each shifted by ``shift_x`` / ``shift_y``.

    ``eps`` is the machine epsilon of the least precise input seen; it sets the threshold below
    which a representation counts as having zero variance.
    """

    n: int
    shift_x: np.ndarray
    shift_y: np.ndarray
    sum_x: np.ndarray
    sum_y: np.ndarray
    xx: np.ndarray
    yy: np.ndarray
    xy: np.ndarray
    norms: RowNormTerms | None
    eps: float
    # Powers of two the rows were multiplied by before the shift (rows = x * scale_x - shift_x):
    # data of extreme magnitude are brought near 1 so that no product overflows or underflows.
    # Exact, and CKA does not change; HSIC values are scaled back in ``_core.combine``.
    scale_x: float = 1.0
    scale_y: float = 1.0

    def rescale(self, scale_x: float, scale_y: float) -> LinearTerms:
        """The same terms for rows multiplied by other powers of two (exact, barring
        over/underflow of terms far below the others)."""
        fx, fy = scale_x / self.scale_x, scale_y / self.scale_y
        if fx == 1.0 and fy == 1.0:
            return self
        t = self.norms
        norms = None if t is None else RowNormTerms(
            sum_q=t.sum_q * fx**2, sum_r=t.sum_r * fy**2, sum_qq=t.sum_qq * fx**4,
            sum_rr=t.sum_rr * fy**4, sum_qr=t.sum_qr * fx**2 * fy**2, qx=t.qx * fx**3,
            rx=t.rx * fy**2 * fx, qy=t.qy * fx**2 * fy, ry=t.ry * fy**3,
        )
        return replace(
            self, shift_x=self.shift_x * fx, shift_y=self.shift_y * fy, sum_x=self.sum_x * fx,
            sum_y=self.sum_y * fy, xx=self.xx * fx**2, yy=self.yy * fy**2,
            xy=self.xy * (fx * fy), norms=norms, scale_x=scale_x, scale_y=scale_y,
        )

    def reshift(self, shift_x: np.ndarray, shift_y: np.ndarray) -> LinearTerms:
        """The same terms expressed for rows shifted by new vectors (exact algebra)."""
        dx = self.shift_x - shift_x  # x_new = x_old + dx
        dy = self.shift_y - shift_y
        n, sx, sy = self.n, self.sum_x, self.sum_y
        xy = self.xy + np.outer(sx, dy) + np.outer(dx, sy) + n * np.outer(dx, dy)
        norms = None if self.norms is None else self._reshift_norms(dx, dy)
        return replace(
            self,
            shift_x=np.array(shift_x, dtype=np.float64),
            shift_y=np.array(shift_y, dtype=np.float64),
            sum_x=sx + n * dx,
            sum_y=sy + n * dy,
            xx=_reshift_gram(self.xx, sx, dx, n),
            yy=_reshift_gram(self.yy, sy, dy, n),
            xy=xy,
            norms=norms,
        )

    def _reshift_norms(self, dx: np.ndarray, dy: np.ndarray) -> RowNormTerms:
        # With t_i = dx.x_i and u_i = dy.y_i: q'_i = q_i + 2 t_i + c and r'_i = r_i + 2 u_i + e.
        t = self.norms
        n, sx, sy = self.n, self.sum_x, self.sum_y
        c, e = float(dx @ dx), float(dy @ dy)
        st, su = float(dx @ sx), float(dy @ sy)
        xx_dx, yy_dy = self.xx @ dx, self.yy @ dy
        xy_dy, yx_dx = self.xy @ dy, self.xy.T @ dx
        sum_qr = (
            t.sum_qr + 2 * float(dy @ t.qy) + e * t.sum_q + 2 * float(dx @ t.rx)
            + 4 * float(dx @ xy_dy) + 2 * e * st + c * t.sum_r + 2 * c * su + n * c * e
        )
        return RowNormTerms(
            sum_q=t.sum_q + 2 * st + n * c,
            sum_r=t.sum_r + 2 * su + n * e,
            sum_qq=_reshift_sum_sq(t.sum_qq, t.sum_q, t.qx, xx_dx, dx, st, c, n),
            sum_rr=_reshift_sum_sq(t.sum_rr, t.sum_r, t.ry, yy_dy, dy, su, e, n),
            sum_qr=sum_qr,
            qx=t.qx + t.sum_q * dx + 2 * xx_dx + 2 * st * dx + c * sx + n * c * dx,
            rx=t.rx + t.sum_r * dx + 2 * xy_dy + 2 * su * dx + e * sx + n * e * dx,
            qy=t.qy + t.sum_q * dy + 2 * yx_dx + 2 * st * dy + c * sy + n * c * dy,
            ry=t.ry + t.sum_r * dy + 2 * yy_dy + 2 * su * dy + e * sy + n * e * dy,
        )

    def centred(self) -> LinearTerms:
        """The terms of the centred rows (shift = column means): sum_x = sum_y = 0 up to rounding."""
        return self.reshift(self.shift_x + self.sum_x / self.n, self.shift_y + self.sum_y / self.n)

    def merge(self, other: LinearTerms) -> LinearTerms:
        """Terms of the union of both sample sets, expressed in the shift of the one with more
        samples (so a stream settles on the shift of its bulk, not of its first batch)."""
        if self.sum_x.shape != other.sum_x.shape or self.sum_y.shape != other.sum_y.shape:
            raise ValueError(
                "cannot merge terms of different widths: "
                f"x has {self.sum_x.size} vs {other.sum_x.size} features, "
                f"y has {self.sum_y.size} vs {other.sum_y.size}."
            )
        if (self.norms is None) != (other.norms is None):
            raise ValueError("cannot merge terms with and without the debiased row-norm terms.")
        # The smaller scale (the larger data) is common: rescaling toward it cannot overflow.
        scale_x, scale_y = min(self.scale_x, other.scale_x), min(self.scale_y, other.scale_y)
        bulk, rest = (self, other) if self.n >= other.n else (other, self)
        a, o = bulk.rescale(scale_x, scale_y), rest.rescale(scale_x, scale_y)
        if not (np.array_equal(o.shift_x, a.shift_x) and np.array_equal(o.shift_y, a.shift_y)):
            o = o.reshift(a.shift_x, a.shift_y)  # the outer products only when the shifts differ
        return replace(
            a,
            n=a.n + o.n,
            sum_x=a.sum_x + o.sum_x,
            sum_y=a.sum_y + o.sum_y,
            xx=a.xx + o.xx,
            yy=a.yy + o.yy,
            xy=a.xy + o.xy,
            norms=None if a.norms is None else a.norms + o.norms,
            eps=max(a.eps, o.eps),
        )


def _reshift_gram(m: np.ndarray, s: np.ndarray, d: np.ndarray, n: int) -> np.ndarray:
    """sum_i (x_i + d)(x_i + d)' from m = sum_i x_i x_i' and s = sum_i x_i."""
    sd = np.outer(s, d)
    return m + sd + sd.T + n * np.outer(d, d)


def _reshift_sum_sq(
    sum_qq: float, sum_q: float, qx: np.ndarray, m_d: np.ndarray, d: np.ndarray,
    st: float, c: float, n: int,
) -> float:
    """sum_i (q_i + 2 t_i + c)^2 with t_i = d.x_i, from the old moments."""
    return (
        sum_qq + 4 * float(d @ qx) + 2 * c * sum_q + 4 * float(d @ m_d)
        + 4 * c * st + n * c * c
    )


@dataclass(frozen=True)
class KernelTerms:
    """Pair sums of two n x n kernel matrices K and L, accumulated without holding them.

    ``s_kl = sum_ij K_ij L_ij`` (and ``s_kk``, ``s_ll``), ``row_k = K 1`` and ``row_l = L 1``.
    ``diag_k`` / ``diag_l`` hold the diagonals, or are None when the diagonal is zero. Producers
    may pass K - c 11' for any constant c: biased and unbiased HSIC are both unchanged by it.
    A constant diagonal may instead be given as ``const_diag_k`` / ``const_diag_l``: then the
    sums hold the off-diagonal entries only and the matrix is that plus ``const_diag_k * I``
    (the RBF producers: off-diagonal entries 2^m K - c, diagonal 2^m - c, see
    :mod:`pyckafast._core.rbf_entry`), so the unbiased estimator never subtracts a large
    diagonal from the sums. Partial terms over disjoint sets of (i, j) pairs merge by addition.
    """

    n: int
    s_kl: float
    s_kk: float
    s_ll: float
    row_k: np.ndarray
    row_l: np.ndarray
    diag_k: np.ndarray | None = None
    diag_l: np.ndarray | None = None
    eps: float = float(np.finfo(np.float64).eps)  # of the dtype the entries were computed in
    # The matrices held are K * 2^-log2_k and L * 2^-log2_l (linear Grams of data of extreme
    # magnitude are computed on rows scaled by a power of two); HSIC is scaled back in combine.
    log2_k: int = 0
    log2_l: int = 0
    const_diag_k: float = 0.0  # a constant diagonal not included in the sums (see above)
    const_diag_l: float = 0.0

    def __add__(self, other: KernelTerms) -> KernelTerms:
        if self.n != other.n:
            raise ValueError(f"cannot add kernel terms of n={self.n} and n={other.n}.")
        if (self.log2_k, self.log2_l) != (other.log2_k, other.log2_l):
            raise ValueError("cannot add kernel terms of differently scaled kernels: "
                             f"{(self.log2_k, self.log2_l)} and {(other.log2_k, other.log2_l)}.")
        if (self.const_diag_k, self.const_diag_l) != (other.const_diag_k, other.const_diag_l):
            raise ValueError("cannot add kernel terms with different constant diagonals.")
        return KernelTerms(
            n=self.n,
            s_kl=self.s_kl + other.s_kl,
            s_kk=self.s_kk + other.s_kk,
            s_ll=self.s_ll + other.s_ll,
            row_k=self.row_k + other.row_k,
            row_l=self.row_l + other.row_l,
            diag_k=_add_optional(self.diag_k, other.diag_k),
            diag_l=_add_optional(self.diag_l, other.diag_l),
            eps=max(self.eps, other.eps),
            log2_k=self.log2_k,
            log2_l=self.log2_l,
            const_diag_k=self.const_diag_k,
            const_diag_l=self.const_diag_l,
        )


def _add_optional(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a + b
