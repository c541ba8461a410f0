"""Exact permutation moments of ``T = tr(A P B P')`` and the Pearson type III tail.

A and B are symmetric, doubly centred n x n matrices (row sums zero): the centred Grams H K H
and H L H of biased CKA, or the U-centred Grams of debiased CKA (zero diagonal, zero row sums;
Szekely & Rizzo 2014), whose inner product is n(n-3) times the unbiased HSIC. P is a uniformly
random permutation matrix (the samples of y shuffled). Linear CKA is Escoufier's RV
coefficient, and the moments are those of Kazi-Aoual et al. (1995) as written by Bilodeau &
Guetsop Nangue (2017), used by Josse, Pages & Husson (2008) for the RV test.

Every formula needs only eight numbers of each matrix (:class:`Invariants`); none needs the
matrix itself, so the producers compute them from feature-space sums or one fused pass.

To avoid cancelling the large squared mean against the second raw moment, both matrices are
first made trace-free: ``A0 = A - tr(A)/(n-1) H``. Since ``tr(H P B P') = tr B`` for every P,
``T - E[T] = tr(A0 P B0 P')``; with ``tr A0 = 0`` the raw moment formulas give the central
moments directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["Invariants", "NullMoments", "null_moments", "pearson3_upper", "gamma_q", "gamma_p"]


@dataclass(frozen=True)
class Invariants:
    """The sums of a symmetric doubly centred n x n matrix A (diagonal d) that the first three
    permutation moments need.

    ``trace = tr A``; ``frob = sum_ij a_ij^2``; ``diag2c = sum_i (d_i - mean d)^2`` and
    ``diag3c = sum_i (d_i - mean d)^3`` (central, so that no large mean cancels later);
    ``trace3 = tr A^3``; ``cube = sum_ij a_ij^3``; ``diag_sq = sum_i d_i (A^2)_ii``;
    ``diag_form = d' A d``. The last five are None when only two moments are known.
    """

    n: int
    trace: float
    frob: float
    diag2c: float
    trace3: float | None = None
    diag3c: float | None = None
    cube: float | None = None
    diag_sq: float | None = None
    diag_form: float | None = None

    @property
    def has_third(self) -> bool:
        """Whether the sums of the third moment are known."""
        return self.trace3 is not None

    def trace_free(self) -> Invariants:
        """The invariants of ``A0 = A - tr(A)/(n-1) H`` (tr A0 = 0, see the module notes)."""
        n, t = self.n, self.trace
        tau = t / (n - 1)
        frob = max(self.frob - t * t / (n - 1), 0.0)
        if not self.has_third:
            return replace(self, trace=0.0, frob=frob)
        s2 = self.diag2c  # diag(A0) = d - mean(d): its central sums do not change
        dbar = t / n
        h3 = n * (1 - 1 / n) ** 3 - (n - 1) / n ** 2  # sum_ij h_ij^3
        cube = math.fsum((self.cube, -3 * tau * (_raw_diag2(self) - self.frob / n),
                          3 * tau * tau * (1 - 2 / n) * t, -tau ** 3 * h3))
        trace3 = math.fsum((self.trace3, -3 * tau * self.frob, 3 * tau * tau * t,
                            -tau ** 3 * (n - 1)))
        diag_sq = math.fsum((self.diag_sq, -dbar * self.frob, -2 * tau * s2))
        return Invariants(n, 0.0, frob, s2, trace3, self.diag3c, cube, diag_sq,
                          self.diag_form - tau * s2)


def _raw_diag2(a: Invariants) -> float:
    """sum_i d_i^2 from its central form."""
    return a.diag2c + a.trace ** 2 / a.n


@dataclass(frozen=True)
class NullMoments:
    """Mean, variance and skewness of ``T = tr(A P B P')`` over all permutations P
    (skewness None when the third-moment sums are not known)."""

    mean: float
    var: float
    skew: float | None


def null_moments(a: Invariants, b: Invariants) -> NullMoments:
    """The exact first two (three, when both sides have the sums) permutation moments of
    ``tr(A P B P')``; needs n >= 4 (n >= 6 for the third)."""
    n = a.n
    if b.n != n:
        raise ValueError(f"the two matrices must have the same n; got {a.n} and {b.n}.")
    mean = a.trace * b.trace / (n - 1)
    a0, b0 = a.trace_free(), b.trace_free()
    var = max(_second(a0, b0, n), 0.0)
    if not (a.has_third and b.has_third) or n < 6:
        return NullMoments(mean, var, None)
    mu3 = _third(a0, b0, n)
    skew = mu3 / var ** 1.5 if var > 0 else 0.0
    return NullMoments(mean, var, skew)


def _second(a: Invariants, b: Invariants, n: int) -> float:
    """E[T^2] of trace-free A, B (Kazi-Aoual et al. 1995, with tr A = tr B = 0)."""
    s = (a.diag2c, b.diag2c)
    f = (a.frob, b.frob)
    p = _prod
    return math.fsum((
        p(s) / n,
        (p(s) + 2 * p(_lin(f, s, 1, -1)) + 4 * p(s)) / (n * (n - 1)),
        (4 * p(_lin(s, f, 2, -1)) + 2 * p((2 * s[0], 2 * s[1]))) / (n * (n - 1) * (n - 2)),
        p(_lin(f, s, 2, -6)) / (n * (n - 1) * (n - 2) * (n - 3)),
    ))


def _third(a: Invariants, b: Invariants, n: int) -> float:
    """E[T^3] of trace-free A, B: the six falling-factorial groups of Kazi-Aoual et al. (1995)
    (in the arrangement of Bilodeau & Guetsop Nangue 2017), each a sum over the ways the six
    indices of a triple product can coincide; every T (= tr A) term vanishes here."""
    def terms(m: Invariants) -> dict[str, float]:
        return {"T2": m.frob, "S2": m.diag2c, "T3": m.trace3, "S3": m.diag3c, "U": m.cube,
                "R": m.diag_sq, "B": m.diag_form}

    ta, tb = terms(a), terms(b)

    def p(f) -> float:
        return f(ta) * f(tb)

    ff = [n]
    for k in range(1, 6):
        ff.append(ff[-1] * (n - k))  # n, n(n-1), ..., n(n-1)...(n-5)
    groups = (
        p(lambda m: m["S3"]),
        4 * p(lambda m: -m["S3"] + m["U"]) + 3 * p(lambda m: -m["S3"]) + 6 * p(lambda m: -m["S3"])
        + 12 * p(lambda m: -m["S3"] + m["R"]) + 6 * p(lambda m: -m["S3"] + m["B"]),
        3 * p(lambda m: 2 * m["S3"]) + p(lambda m: 2 * m["S3"])
        + 12 * p(lambda m: 2 * m["S3"] - m["B"]) + 12 * p(lambda m: 2 * m["S3"] - m["R"])
        + 24 * p(lambda m: 2 * m["S3"] - m["R"] - m["B"]) + 6 * p(lambda m: 2 * m["S3"] - 2 * m["R"])
        + 24 * p(lambda m: 2 * m["S3"] - m["U"] - m["R"])
        + 8 * p(lambda m: m["T3"] + 2 * m["S3"] - 3 * m["R"]),
        12 * p(lambda m: -6 * m["S3"] + 2 * m["R"] + 2 * m["B"])
        + 6 * p(lambda m: -6 * m["S3"] + 2 * m["U"] + 4 * m["R"])
        + 3 * p(lambda m: -6 * m["S3"] + 2 * m["B"])
        + 12 * p(lambda m: -6 * m["S3"] + 3 * m["R"] + 2 * m["B"])
        + 8 * p(lambda m: -6 * m["S3"] + 2 * m["U"] + 3 * m["R"])
        + 24 * p(lambda m: -m["T3"] - 6 * m["S3"] + m["U"] + 5 * m["R"] + m["B"]),
        12 * p(lambda m: 2 * m["T3"] + 24 * m["S3"] - 4 * m["U"] - 16 * m["R"] - 4 * m["B"])
        + 3 * p(lambda m: 24 * m["S3"] - 8 * m["R"] - 8 * m["B"]),
        p(lambda m: -8 * m["T3"] - 120 * m["S3"] + 16 * m["U"] + 72 * m["R"] + 24 * m["B"]),
    )
    return math.fsum(g / f for g, f in zip(groups, ff))


def _prod(pair) -> float:
    return pair[0] * pair[1]


def _lin(u, v, cu: float, cv: float) -> tuple[float, float]:
    return cu * u[0] + cv * v[0], cu * u[1] + cv * v[1]


# --- Pearson type III tail ------------------------------------------------------------------

def pearson3_upper(z: float, skew: float) -> float:
    """P(Z >= z) for the Pearson type III law of mean 0, variance 1 and skewness ``skew``.

    With k = 4 / skew^2, Z = sign(skew) (G - k) / sqrt(k) for G ~ Gamma(k, 1); skew = 0 is the
    standard normal. Values of |skew| below 1e-6 use the normal law (k > 4e12, beyond what
    the gamma tail can resolve in float64)."""
    if math.isnan(z) or math.isnan(skew):
        return math.nan
    if abs(skew) < 1e-6:
        return 0.5 * math.erfc(z / math.sqrt(2.0))
    k = 4.0 / (skew * skew)
    if skew > 0:
        g = k + z * math.sqrt(k)
        return 1.0 if g <= 0 else gamma_q(k, g)
    g = k - z * math.sqrt(k)
    return 0.0 if g <= 0 else gamma_p(k, g)


_TINY = 1e-300


def gamma_p(a: float, x: float) -> float:
    """The regularized lower incomplete gamma function P(a, x) (a > 0, x >= 0).

    Series for x < a + 1, Lentz's continued fraction otherwise (Numerical Recipes, 6.2); each
    converges to float64 rounding.

    Examples
    --------
    >>> from pyckafast._core.permutation_moments import gamma_p
    >>> round(gamma_p(1.0, 2.0), 12)  # 1 - exp(-2)
    0.864664716763
    """
    _check_gamma_args(a, x)
    if x == 0:
        return 0.0
    return _series(a, x) if x < a + 1 else 1.0 - _continued_fraction(a, x)


def gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) = 1 - P(a, x).

    Examples
    --------
    >>> from pyckafast._core.permutation_moments import gamma_q
    >>> round(gamma_q(3.0, 1.0), 12)  # exp(-1) (1 + 1 + 1/2)
    0.919698602929
    """
    _check_gamma_args(a, x)
    if x == 0:
        return 1.0
    return 1.0 - _series(a, x) if x < a + 1 else _continued_fraction(a, x)


def _check_gamma_args(a: float, x: float) -> None:
    if not (a > 0 and x >= 0) or math.isinf(a):
        raise ValueError(f"the incomplete gamma function needs a > 0 and x >= 0; got a={a}, x={x}.")


def _log_prefactor(a: float, x: float) -> float:
    return a * math.log(x) - x - math.lgamma(a)


def _max_iterations(a: float) -> int:
    # Both expansions need O(sqrt(a)) terms near x = a.
    return 1000 + int(50 * math.sqrt(a))


def _series(a: float, x: float) -> float:
    term = total = 1.0 / a
    denom = a
    for _ in range(_max_iterations(a)):
        denom += 1.0
        term *= x / denom
        total += term
        if abs(term) < abs(total) * 1e-17:
            break
    return total * math.exp(_log_prefactor(a, x))


def _continued_fraction(a: float, x: float) -> float:
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _max_iterations(a)):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(_log_prefactor(a, x)) * h
