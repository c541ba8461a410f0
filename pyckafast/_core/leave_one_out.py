"""Exact leave-one-out CKA of every sample from per-row sums (backend-free algebra).

Linear kernels (centred frame, a_i = |x~_i|^2, b_i = |y~_i|^2, C.. the centred cross moments):
removing sample i moves the mean by -x~_i/(n-1), so the centred moments of the other n-1
samples are the rank-one downdate ``C_xy - n/(n-1) x~_i y~_i'``, and the squared norms of the
other rows become ``a_j + 2 x~_j.x~_i/(n-1) + a_i/(n-1)^2``. Everything then reduces to the
per-row numbers ``x~_i' C_xy y~_i`` (one O(n p q) GEMM pass) and a few dot products.

Kernel matrices: removing sample i removes row and column i, so each pair sum loses one row
sum of K o L (Hadamard product) and the row sums lose column i; the dot products of row sums
need ``(K l)_i`` and ``(L k)_i``. The biased estimator takes K with its diagonal, the unbiased
one K^ (diagonal zeroed); both formulas are those of :mod:`pyckafast._core.combine` applied to
the n-1 remaining samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LinearRows", "linear_loo", "KernelRows", "kernel_loo"]


@dataclass(frozen=True)
class LinearRows:
    """Per-row numbers of the linear leave-one-out formulas (all float64, length n).

    ``a, b``: squared norms of the centred rows; ``kxy = x~_i' C_xy y~_i``, ``kxx``, ``kyy``
    likewise; ``x_qx = x~_i . sum_j a_j x~_j``, ``x_rx = x~_i . sum_j b_j x~_j``, ``y_qy``,
    ``y_ry`` likewise (debiased only, else None). Scalars: the squared Frobenius norms of the
    centred cross moments and ``sum a_i b_i`` etc.
    """

    n: int
    a: np.ndarray
    b: np.ndarray
    kxy: np.ndarray
    kxx: np.ndarray
    kyy: np.ndarray
    fxy: float
    fxx: float
    fyy: float
    x_qx: np.ndarray | None = None
    x_rx: np.ndarray | None = None
    y_qy: np.ndarray | None = None
    y_ry: np.ndarray | None = None
    sum_ab: float = 0.0
    sum_aa: float = 0.0
    sum_bb: float = 0.0


def linear_loo(r: LinearRows, debiased: bool) -> np.ndarray:
    """CKA of the n-1 samples left when each sample is removed, for every sample."""
    n, c = r.n, r.n / (r.n - 1)
    fxy = r.fxy - 2 * c * r.kxy + c * c * r.a * r.b
    fxx = r.fxx - 2 * c * r.kxx + c * c * r.a * r.a
    fyy = r.fyy - 2 * c * r.kyy + c * c * r.b * r.b
    if not debiased:
        return fxy / (np.sqrt(fxx) * np.sqrt(fyy))
    m = n - 1
    sa, sb = float(r.a.sum()), float(r.b.sum())

    def h(f, s_uv, u, v, su, sv, u_dot_qv, v_dot_qu):
        # h = F - m/(m-2) sum_j u_j' v_j' + (sum u')(sum v') / ((m-1)(m-2)) over the m others.
        pair = _downdated_norm_products(n, s_uv, u, v, su, sv, u_dot_qv, v_dot_qu)
        return f - m / (m - 2) * pair + (su - c * u) * (sv - c * v) / ((m - 1) * (m - 2))

    hxy = h(fxy, r.sum_ab, r.a, r.b, sa, sb, r.y_qy, r.x_rx)
    hxx = h(fxx, r.sum_aa, r.a, r.a, sa, sa, r.x_qx, r.x_qx)
    hyy = h(fyy, r.sum_bb, r.b, r.b, sb, sb, r.y_ry, r.y_ry)
    # The cross term 4t^2 (k_i - a_i b_i) of the products needs the matching k.
    t = 1.0 / (n - 1)
    hxy -= m / (m - 2) * 4 * t * t * r.kxy
    hxx -= m / (m - 2) * 4 * t * t * r.kxx
    hyy -= m / (m - 2) * 4 * t * t * r.kyy
    return hxy / (np.sqrt(hxx) * np.sqrt(hyy))


def _downdated_norm_products(n, s_uv, u, v, su, sv, delta, gamma):
    """sum_{j != i} u'_j v'_j with u'_j = u_j + 2t x~_j.x~_i + t^2 u_i, t = 1/(n-1), for every
    i, except the term 4t^2 k_i (added by the caller). ``delta_i = y~_i . sum_j u_j y~_j``,
    ``gamma_i = x~_i . sum_j v_j x~_j``."""
    t = 1.0 / (n - 1)
    uv = u * v
    return ((s_uv - uv) + 2 * t * (delta - uv) + 2 * t * (gamma - uv)
            + t * t * (v * (su - u) + u * (sv - v)) - 4 * t * t * uv
            - 4 * t ** 3 * uv + (n - 1) * t ** 4 * uv)


@dataclass(frozen=True)
class KernelRows:
    """Row sums of one kernel pair (K and L as the estimator takes them).

    ``k, l``: row sums; ``dk, dl``: diagonals; ``kl, kk, ll``: row sums of K o L, K o K,
    L o L; ``k_l = K l``, ``l_k = L k``, ``k_k = K k``, ``l_l = L l``.
    """

    k: np.ndarray
    l: np.ndarray
    dk: np.ndarray
    dl: np.ndarray
    kl: np.ndarray
    kk: np.ndarray
    ll: np.ndarray
    k_l: np.ndarray
    l_k: np.ndarray
    k_k: np.ndarray
    l_l: np.ndarray


def kernel_loo(r: KernelRows, debiased: bool) -> np.ndarray:
    """Leave-one-out CKA of every sample from the row sums of one fused pass."""
    n = r.k.size
    m = n - 1

    def numerator(a, b, da, db, ab, a_b, b_a):
        s = float(ab.sum()) - 2 * ab + da * db
        dot = (float(a @ b) - a * b - (b_a - db * a) - (a_b - da * b) + (ab - da * db))
        sa, sb = float(a.sum()) - 2 * a + da, float(b.sum()) - 2 * b + db
        if debiased:
            return s + sa * sb / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * dot
        return s - 2.0 / m * dot + sa * sb / (m * m)

    nxy = numerator(r.k, r.l, r.dk, r.dl, r.kl, r.k_l, r.l_k)
    nxx = numerator(r.k, r.k, r.dk, r.dk, r.kk, r.k_k, r.k_k)
    nyy = numerator(r.l, r.l, r.dl, r.dl, r.ll, r.l_l, r.l_l)
    return nxy / (np.sqrt(nxx) * np.sqrt(nyy))
