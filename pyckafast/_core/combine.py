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

__all__ = ["HSICTriple", "linear_hsic", "kernel_hsic", "cka_from_hsic", "is_zero_variance",
           "gram_is_zero_variance"]


class HSICTriple(NamedTuple):
    """HSIC(x, y), HSIC(x, x), HSIC(y, y) under one estimator, plus zero-variance flags.

    The values are those of the kernels K * 2^-log2_k and L * 2^-log2_l: producers scale data of
    extreme magnitude by powers of two (exact), so that CKA, a ratio, never sees an overflow or
    underflow; :meth:`unscaled` gives the HSIC values of the kernels themselves.
    """

    xy: float
    xx: float
    yy: float
    zero_x: bool = False
    zero_y: bool = False
    log2_k: int = 0
    log2_l: int = 0

    def unscaled_xy(self) -> float:
        """HSIC(x, y) of the unscaled kernels (inf, with a RuntimeWarning, beyond float64)."""
        return _ldexp(self.xy, self.log2_k + self.log2_l, "HSIC(x, y)")

    def unscaled(self) -> HSICTriple:
        """The triple of the unscaled kernels (inf, with a RuntimeWarning, beyond float64)."""
        return self.rescaled(0, 0)

    def rescaled(self, log2_k: int, log2_l: int) -> HSICTriple:
        """The same HSIC values expressed for the kernels K * 2^-log2_k and L * 2^-log2_l."""
        k, l = self.log2_k - log2_k, self.log2_l - log2_l
        if k == 0 and l == 0:
            return self
        return self._replace(xy=_ldexp(self.xy, k + l, "HSIC(x, y)"),
                             xx=_ldexp(self.xx, 2 * k, "HSIC(x, x)"),
                             yy=_ldexp(self.yy, 2 * l, "HSIC(y, y)"), log2_k=log2_k,
                             log2_l=log2_l)


def _ldexp(value: float, exponent: int, name: str) -> float:
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        _warn(f"{name} = {value!r} * 2^{exponent} exceeds the float64 range; returning inf "
              "(CKA, a ratio, is not affected).")
        return math.copysign(math.inf, value)


def linear_hsic(terms: LinearTerms, debiased: bool) -> HSICTriple:
    """Linear-kernel HSIC triple from linear terms (biased or unbiased estimator)."""
    n = terms.n
    _check_n(n, debiased)
    c = terms.centred()
    # Centred against the shifted moments as accumulated (in the terms' own frame).
    zero_x = is_zero_variance(float(np.trace(c.xx)), float(np.trace(terms.xx)), terms.eps)
    zero_y = is_zero_variance(float(np.trace(c.yy)), float(np.trace(terms.yy)), terms.eps)
    fxy, fxx, fyy = _sq(c.xy), _sq(c.xx), _sq(c.yy)
    # K = X X' of rows multiplied by scale_x: the true K is 2^(-2 log2(scale_x)) times it.
    logs = (-2 * _log2(terms.scale_x), -2 * _log2(terms.scale_y))
    if not debiased:
        s = 1.0 / (n - 1) ** 2
        return HSICTriple(fxy * s, fxx * s, fyy * s, zero_x, zero_y, *logs)
    if c.norms is None:
        raise ValueError(
            "debiased=True needs the row-norm terms; these terms were accumulated without them "
            "(create the state with debiased=True)."
        )
    t = c.norms
    a, b = n / (n - 2), 1.0 / ((n - 1) * (n - 2))
    s = 1.0 / (n * (n - 3))
    hxy = _resolved((fxy, -a * t.sum_qr, b * t.sum_q * t.sum_r), terms.eps)
    hxx = _resolved((fxx, -a * t.sum_qq, b * t.sum_q ** 2), terms.eps)
    hyy = _resolved((fyy, -a * t.sum_rr, b * t.sum_r ** 2), terms.eps)
    return HSICTriple(hxy * s, hxx * s, hyy * s, zero_x, zero_y, *logs)


def kernel_hsic(terms: KernelTerms, debiased: bool) -> HSICTriple:
    """HSIC triple from kernel pair sums (any kernel), biased or unbiased estimator."""
    n = terms.n
    _check_n(n, debiased)
    k, l, eps = terms.row_k, terms.row_l, terms.eps
    dk, dl = terms.diag_k, terms.diag_l
    if not debiased:
        s = 1.0 / (n - 1) ** 2
        a, b = terms.const_diag_k, terms.const_diag_l
        tk, tl = _trace(dk), _trace(dl)
        return HSICTriple(
            _resolved(_biased(terms.s_kl, k, l, n) + _const_diag(a, b, tk, tl, k, l, n), eps) * s,
            _resolved(_biased(terms.s_kk, k, k, n) + _const_diag(a, a, tk, tk, k, k, n), eps) * s,
            _resolved(_biased(terms.s_ll, l, l, n) + _const_diag(b, b, tl, tl, l, l, n), eps) * s,
            log2_k=terms.log2_k, log2_l=terms.log2_l,
        )
    khat = k if dk is None else k - dk
    lhat = l if dl is None else l - dl
    s = 1.0 / (n * (n - 3))
    return HSICTriple(
        _resolved(_unbiased(terms.s_kl, _diag_dot(dk, dl), khat, lhat, n), eps) * s,
        _resolved(_unbiased(terms.s_kk, _diag_dot(dk, dk), khat, khat, n), eps) * s,
        _resolved(_unbiased(terms.s_ll, _diag_dot(dl, dl), lhat, lhat, n), eps) * s,
        log2_k=terms.log2_k, log2_l=terms.log2_l,
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
    # Two square roots: xx * yy overflows for the scaled kernels of very narrow bandwidths.
    return float(h.xy / (math.sqrt(h.xx) * math.sqrt(h.yy)))


def _biased(s_ab: float, a: np.ndarray, b: np.ndarray, n: int) -> tuple[float, ...]:
    # tr(K H L H) = S_KL - (2/n) k.l + (sum k)(sum l)/n^2
    return s_ab, -2.0 / n * float(a @ b), float(a.sum()) * float(b.sum()) / n ** 2


def _const_diag(a: float, b: float, trace_k: float, trace_l: float, k: np.ndarray,
                l: np.ndarray, n: int) -> tuple[float, ...]:
    # tr(H (K + aI) H (L + bI)) - tr(HKHL) = b tr(HK) + a tr(HL) + ab tr(H), tr(HK) = tr K - sum k/n
    if a == 0.0 and b == 0.0:
        return ()
    return (b * trace_k, -b * float(k.sum()) / n, a * trace_l, -a * float(l.sum()) / n,
            a * b * (n - 1))


def _trace(d: np.ndarray | None) -> float:
    return 0.0 if d is None else float(d.sum())


def _unbiased(s_ab: float, diag_ab: float, a: np.ndarray, b: np.ndarray,
              n: int) -> tuple[float, ...]:
    # sum K^L^ + (sum k^)(sum l^)/((n-1)(n-2)) - 2/(n-2) k^.l^, with sum K^L^ = S_KL - diag.diag
    return (s_ab, -diag_ab, float(a.sum()) * float(b.sum()) / ((n - 1) * (n - 2)),
            -2.0 / (n - 2) * float(a @ b))


# An HSIC value is the sum of a few large terms; when it is smaller than the rounding of those
# terms (this many eps of the input dtype times their magnitude) it is 0 to working precision,
# e.g. the exact unbiased HSIC(x, x) = 0 of x = [0, 1, 1, 1, 1], which otherwise comes out as
# +-1e-17 and turns debiased CKA into an arbitrary ratio of rounding errors.
_ROUNDING_EPS = 64


def _resolved(parts: tuple[float, ...], eps: float) -> float:
    """sum(parts), or exactly 0.0 when it is below the rounding error of its parts."""
    value = math.fsum(parts)
    magnitude = math.fsum(abs(p) for p in parts)
    return 0.0 if abs(value) <= _ROUNDING_EPS * eps * magnitude else value


def _diag_dot(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return 0.0 if a is None or b is None else float(a @ b)


def _log2(scale: float) -> int:
    """The exponent of a power of two."""
    mantissa, exponent = math.frexp(scale)
    if mantissa != 0.5:
        raise ValueError(f"a term scale must be a power of two; got {scale!r}.")
    return exponent - 1


def _sq(m: np.ndarray) -> float:
    return float(np.vdot(m, m))


def is_zero_variance(trace: float, second_moment: float, eps: float) -> bool:
    """True when the total variance ``trace`` (the sum of squared deviations from the mean) is
    below the rounding error of the sums it was computed from.

    ``second_moment`` is the sum of squares of the values the producer actually accumulated:
    the rows after their shift (and power-of-two scale), not the raw data. The variance is
    ``second_moment - n |mean - shift|^2``, and a float sum of squares is exact to about
    ``eps`` of its size, so a layer is constant only when its shifted values are (they are then
    equal, and the two parts cancel to rounding), never because its mean is large: float32 data
    of mean 1e6 and std 1 are shifted by a float32 value near the mean, exactly (Sterbenz), and
    their variance is then known to full precision. (A threshold of ``eps`` times the squared
    mean, as before, called every float32 layer with std below ~2e-6 |mean| constant.)
    """
    return trace <= _ROUNDING_EPS * eps * second_moment


def gram_is_zero_variance(trace_k: float, total_k: float, n: int, eps: float) -> bool:
    """:func:`is_zero_variance` for a linear Gram K = W W' of shifted rows w_i: its trace is
    their second moment and ``total_k`` (the sum of all entries, |sum_i w_i|^2) gives the
    variance ``tr(H K) = tr K - total_k / n``."""
    return is_zero_variance(trace_k - total_k / n, trace_k, eps)


def _check_n(n: int, debiased: bool) -> None:
    need, why = min_samples(debiased)
    if n < need:
        raise ValueError(f"x and y need at least {need} samples ({why}); got {n}.")


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=4)
