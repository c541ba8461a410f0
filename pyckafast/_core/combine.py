"""The one backend-free place where terms become HSIC and CKA values.

Estimators (n samples):

* biased HSIC (Gretton et al. 2005): ``tr(K H L H) / (n - 1)^2``
* unbiased HSIC (Song et al. 2012), diagonals of K, L zeroed to K^, L^, row sums k^, l^:
  ``[sum K^L^ + (sum k^)(sum l^)/((n-1)(n-2)) - 2/(n-2) k^.l^] / (n(n-3))``
* CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); "debiased CKA" uses unbiased HSIC.

For linear kernels the feature-space forms of Kornblith et al. (2019) are used: with centred
X~, Y~ and a_i = |x~_i|^2, b_i = |y~_i|^2, ``tr(KHLH) = |X~'Y~|_F^2`` and
``n(n-3) HSIC_u = |X~'Y~|^2 - n/(n-2) sum a_i b_i + (sum a)(sum b)/((n-1)(n-2))``.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

from .terms import KernelTerms, LinearTerms
from .validation import min_samples

__all__ = ["HSICTriple", "linear_hsic", "kernel_hsic", "cka_from_hsic", "is_zero_variance"]


class HSICTriple(NamedTuple):
    """HSIC(x, y), HSIC(x, x), HSIC(y, y) under one estimator, plus zero-variance flags."""

    xy: float
    xx: float
    yy: float
    zero_x: bool = False
    zero_y: bool = False


def linear_hsic(terms: LinearTerms, debiased: bool) -> HSICTriple:
    """Linear-kernel HSIC triple from linear terms (biased or unbiased estimator)."""
    n = terms.n
    _check_n(n, debiased)
    c = terms.centred()
    zero_x = is_zero_variance(float(np.trace(c.xx)), _sq(c.shift_x), n, terms.eps)
    zero_y = is_zero_variance(float(np.trace(c.yy)), _sq(c.shift_y), n, terms.eps)
    fxy, fxx, fyy = _sq(c.xy), _sq(c.xx), _sq(c.yy)
    if not debiased:
        s = 1.0 / (n - 1) ** 2
        return HSICTriple(fxy * s, fxx * s, fyy * s, zero_x, zero_y)
    if c.norms is None:
        raise ValueError(
            "debiased=True needs the row-norm terms; these terms were accumulated without them "
            "(create the state with debiased=True)."
        )
    t = c.norms
    a, b = n / (n - 2), 1.0 / ((n - 1) * (n - 2))
    s = 1.0 / (n * (n - 3))
    hxy = fxy - a * t.sum_qr + b * t.sum_q * t.sum_r
    hxx = fxx - a * t.sum_qq + b * t.sum_q ** 2
    hyy = fyy - a * t.sum_rr + b * t.sum_r ** 2
    return HSICTriple(hxy * s, hxx * s, hyy * s, zero_x, zero_y)


def kernel_hsic(terms: KernelTerms, debiased: bool) -> HSICTriple:
    """HSIC triple from kernel pair sums (any kernel), biased or unbiased estimator."""
    n = terms.n
    _check_n(n, debiased)
    k, l = terms.row_k, terms.row_l
    if not debiased:
        s = 1.0 / (n - 1) ** 2
        return HSICTriple(
            _biased(terms.s_kl, k, l, n) * s,
            _biased(terms.s_kk, k, k, n) * s,
            _biased(terms.s_ll, l, l, n) * s,
        )
    dk, dl = terms.diag_k, terms.diag_l
    khat = k if dk is None else k - dk
    lhat = l if dl is None else l - dl
    s_kl = terms.s_kl - _diag_dot(dk, dl)
    s_kk = terms.s_kk - _diag_dot(dk, dk)
    s_ll = terms.s_ll - _diag_dot(dl, dl)
    s = 1.0 / (n * (n - 3))
    return HSICTriple(
        _unbiased(s_kl, khat, lhat, n) * s,
        _unbiased(s_kk, khat, khat, n) * s,
        _unbiased(s_ll, lhat, lhat, n) * s,
    )


def cka_from_hsic(h: HSICTriple) -> float:
    """CKA = HSIC(x, y) / sqrt(HSIC(x, x) HSIC(y, y)); nan with a RuntimeWarning if undefined."""
    for flag, value, name in ((h.zero_x, h.xx, "x"), (h.zero_y, h.yy, "y")):
        if flag:
            _warn(f"{name} has zero variance (every sample is the same point): CKA is undefined.")
            return math.nan
        if not value > 0:
            _warn(
                f"HSIC({name}, {name}) = {value:.3g} is not positive, so CKA is undefined "
                f"({name} has no variance the estimator can see; with debiased=True this can "
                "also happen for very small n)."
            )
            return math.nan
    return float(h.xy / math.sqrt(h.xx * h.yy))


def _biased(s_ab: float, a: np.ndarray, b: np.ndarray, n: int) -> float:
    # tr(K H L H) = S_KL - (2/n) k.l + (sum k)(sum l)/n^2
    return s_ab - 2.0 / n * float(a @ b) + float(a.sum()) * float(b.sum()) / n ** 2


def _unbiased(s_ab: float, a: np.ndarray, b: np.ndarray, n: int) -> float:
    return s_ab + float(a.sum()) * float(b.sum()) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a @ b)


def _diag_dot(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return 0.0 if a is None or b is None else float(a @ b)


def _sq(m: np.ndarray) -> float:
    return float(np.vdot(m, m))


def is_zero_variance(trace: float, mean_sq: float, n: int, eps: float) -> bool:
    """True when the total variance ``trace`` (sum of squared deviations from the mean, whose
    squared norm is ``mean_sq``) is indistinguishable from rounding of values of the data's size."""
    scale2 = mean_sq + trace / n
    return trace <= n * (16 * eps) ** 2 * scale2


def _check_n(n: int, debiased: bool) -> None:
    need, why = min_samples(debiased)
    if n < need:
        raise ValueError(f"x and y need at least {need} samples ({why}); got {n}.")


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=4)
