"""The :class:`~pyckafast._core.permutation_moments.Invariants` of each side, from the terms
the producers already make (two moments) or from a dense Gram (all three).

Biased CKA permutes ``tr(K~ P L~ P')`` with K~ = HKH; debiased CKA permutes the inner product
of the U-centred Grams (Szekely & Rizzo 2014): zero diagonal, zero row sums, and
``<A~, B~> = n(n-3) HSIC_u``. Either way the denominators of CKA do not change under the
permutation, so the null moments of CKA are those of the numerator divided by them.

All values are in the units of the held (possibly power-of-two scaled) kernels, the units of
:class:`~pyckafast._core.combine.HSICTriple`: CKA, a ratio, is the same in any units.
"""

from __future__ import annotations

import numpy as np

from .combine import HSICTriple
from .permutation_moments import Invariants
from .terms import KernelTerms, LinearTerms

__all__ = ["frob_from_triple", "linear_pair", "kernel_pair", "dense_invariants", "u_centred",
           "double_centred"]


def frob_from_triple(h: HSICTriple, n: int, debiased: bool) -> tuple[float, float, float]:
    """(<A, B>, |A|^2, |B|^2) of the permuted matrices from an HSIC triple."""
    f = n * (n - 3) if debiased else (n - 1) ** 2
    return h.xy * f, h.xx * f, h.yy * f


def linear_pair(terms: LinearTerms, h: HSICTriple, debiased: bool) -> tuple[Invariants, Invariants]:
    """Two-moment invariants of both sides from linear terms with row norms (any producer)."""
    n = terms.n
    _, fx, fy = frob_from_triple(h, n, debiased)
    if debiased:  # U-centred: zero diagonal, so trace and diagonal sums vanish
        return Invariants(n, 0.0, fx, 0.0), Invariants(n, 0.0, fy, 0.0)
    if terms.norms is None:
        raise ValueError("the permutation variance of biased CKA needs the row-norm terms "
                         "(sum of |x_i|^4); these terms were accumulated without them.")
    c = terms.centred()
    t = c.norms
    # Centred frame: a_i = |x~_i|^2 are the diagonal of X~X~'.
    side_x = Invariants(n, float(np.trace(c.xx)), fx, _central2(t.sum_q, t.sum_qq, n))
    side_y = Invariants(n, float(np.trace(c.yy)), fy, _central2(t.sum_r, t.sum_rr, n))
    return side_x, side_y


def _central2(s1: float, s2: float, n: int) -> float:
    return max(s2 - s1 * s1 / n, 0.0)


def kernel_pair(terms: KernelTerms, h: HSICTriple, debiased: bool) -> tuple[Invariants, Invariants]:
    """Two-moment invariants of both sides from the kernel pair sums of one fused pass."""
    n = terms.n
    _, fx, fy = frob_from_triple(h, n, debiased)
    if debiased:
        return Invariants(n, 0.0, fx, 0.0), Invariants(n, 0.0, fy, 0.0)
    kx = _centred_diagonal(terms.row_k, terms.diag_k, terms.const_diag_k, n)
    ky = _centred_diagonal(terms.row_l, terms.diag_l, terms.const_diag_l, n)
    return Invariants(n, kx[0], fx, kx[1]), Invariants(n, ky[0], fy, ky[1])


def _centred_diagonal(row: np.ndarray, diag: np.ndarray | None, const: float,
                      n: int) -> tuple[float, float]:
    """tr(HKH) and the central sum of squares of diag(HKH) from row sums and diagonal."""
    d = np.full(n, const) if diag is None else np.asarray(diag, dtype=np.float64) + const
    r = np.asarray(row, dtype=np.float64) + const
    # diag(HKH)_i = K_ii - 2 r_i / n + sum(r) / n^2; the constant drops out of the deviations.
    dev = (d - d.mean()) - 2.0 * (r - r.mean()) / n
    return float(d.sum() - r.sum() / n), float(dev @ dev)


def double_centred(k: np.ndarray) -> np.ndarray:
    """H K H of a dense symmetric matrix (float64)."""
    k = np.asarray(k, dtype=np.float64)
    r = k.mean(axis=1)
    return k - r[:, None] - r[None, :] + r.mean()


def u_centred(k: np.ndarray) -> np.ndarray:
    """The U-centred matrix of Szekely & Rizzo (2014): diagonal zeroed, then
    ``a_ij - a_i./(n-2) - a_.j/(n-2) + a../((n-1)(n-2))`` off the diagonal, 0 on it."""
    a = np.array(k, dtype=np.float64)
    n = a.shape[0]
    np.fill_diagonal(a, 0.0)
    r = a.sum(axis=1)
    out = a - r[:, None] / (n - 2) - r[None, :] / (n - 2) + r.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(out, 0.0)
    return out


def dense_invariants(a: np.ndarray) -> Invariants:
    """All eight invariants of a dense doubly centred symmetric matrix (O(n^3) time)."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    d = np.diag(a).copy()
    dc = d - d.mean()
    a2 = a @ a
    return Invariants(
        n=n, trace=float(d.sum()), frob=float(np.vdot(a, a)), diag2c=float(dc @ dc),
        trace3=float(np.vdot(a2, a)), diag3c=float(np.sum(dc ** 3)), cube=float(np.sum(a ** 3)),
        diag_sq=float(d @ np.diag(a2)), diag_form=float(d @ a @ d),
    )

