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
    out = np.empty(r.n)
    sums = float(r.a.sum()), float(r.b.sum())
    for lo in range(0, r.n, _BLOCK):  # blocks: the many temporaries stay in cache
        sl = slice(lo, lo + _BLOCK)
        out[sl] = _linear_loo_block(r, sl, sums, debiased)
    return out


_BLOCK = 1 << 14


def _linear_loo_block(r: LinearRows, sl: slice, sums: tuple[float, float],
                      debiased: bool) -> np.ndarray:
    n, c = r.n, r.n / (r.n - 1)
    a, b, kxy, kxx, kyy = r.a[sl], r.b[sl], r.kxy[sl], r.kxx[sl], r.kyy[sl]
    fxy = r.fxy - 2 * c * kxy + c * c * a * b
    fxx = r.fxx - 2 * c * kxx + c * c * a * a
    fyy = r.fyy - 2 * c * kyy + c * c * b * b
    if not debiased:
        return fxy / (np.sqrt(fxx) * np.sqrt(fyy))
    m, t = n - 1, 1.0 / (n - 1)
    sa, sb = sums
    w, z = m / (m - 2), 1.0 / ((m - 1) * (m - 2))
    kappa = -(1 + 4 * t + 6 * t * t + 3 * t ** 3)

    def h(f, k, s_uv, u, v, su, sv, y_qu, x_rv):
        # h = F - m/(m-2) sum_j u'_j v'_j + (sum u')(sum v') / ((m-1)(m-2)) over the m others
        # j != i, with u'_j = u_j + 2t x~_j.x~_i + t^2 u_i (the norms about the mean of the
        # others): sum_j u'_j v'_j = s_uv + 2t (y~_i.sum_j u_j y~_j + x~_i.sum_j v_j x~_j)
        # + t^2 (v_i su + u_i sv) + 4t^2 k_i + kappa u_i v_i, kappa collecting the j = i terms.
        pair = s_uv + 2 * t * (y_qu + x_rv) + t * t * (v * su + u * sv) + 4 * t * t * k
        pair += kappa * u * v
        return f - w * pair + z * (su - c * u) * (sv - c * v)

    x_qx, x_rx, y_qy, y_ry = r.x_qx[sl], r.x_rx[sl], r.y_qy[sl], r.y_ry[sl]
    hxy = h(fxy, kxy, r.sum_ab, a, b, sa, sb, y_qy, x_rx)
    hxx = h(fxx, kxx, r.sum_aa, a, a, sa, sa, x_qx, x_qx)
    hyy = h(fyy, kyy, r.sum_bb, b, b, sb, sb, y_ry, y_ry)
    return hxy / (np.sqrt(hxx) * np.sqrt(hyy))


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
