"""Closed forms for linear CKA under subset translation (Davari et al. 2023, Theorem 1).

Set-up: X (n x p), a subset T of rows (``mask``), rho = |T|/n, X(c) = X + c 1_T v'. With
X~ the column-centred X, A = X~'X~, u = 1_T - rho 1, a = X~'u = s (mu_T - mu_S), s = n rho (1 - rho):

* exact value   CKA_lin(X, X(c)) = N(c) / (|A| D(c)),
  N(c) = |A|^2 + 2c v'Aa + c^2 |v|^2 |a|^2,
  D(c)^2 = |A|^2 + 4c v'Aa + c^2 (2|a|^2|v|^2 + 2(a'v)^2 + 2s v'Av) + 4c^3 s (a'v)|v|^2 + c^4 s^2 |v|^4;
* limit (c -> +-inf)  |a|^2 / (s |A|) = n rho (1 - rho) |mu_T - mu_S|^2 / |A| = CKA_lin(X, 1_T),
  independent of v and of the sign of c.

All are the *biased* (Kornblith et al. 2019) linear CKA, the estimator of
:func:`pyckafast.linear_cka` with ``debiased=False``. Cost: one p x p Gram, O(n p^2).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._core.types import ArrayLike
from .transforms import _data, check_direction, check_index, check_mask

__all__ = [
    "translation_limit", "translation_curve", "outlier_limit", "outlier_curve", "SubsetMoments",
    "subset_moments", "curve_from_moments", "limit_from_moments",
]


class SubsetMoments(NamedTuple):
    """The sufficient statistics of X, a subset T and a reference R for every closed form here.

    Without a reference, R = X (``cross is gram``, ``b is a``). Made by :func:`subset_moments`.

    Parameters
    ----------
    gram : numpy.ndarray, shape (p, p)
        A = X~'X~, the Gram of the column-centred X.
    gram_norm : float
        The Frobenius norm |A|_F.
    a : numpy.ndarray, shape (p,)
        X~'u = s (mu_T - mu_S), with u = 1_T - rho 1.
    s : float
        The scalar n rho (1 - rho) = u'u.
    cross : numpy.ndarray, shape (q, p)
        B = R~'X~.
    b : numpy.ndarray, shape (q,)
        R~'u.
    ref_norm : float
        The Frobenius norm |R~'R~|_F.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.theory import subset_moments
    >>> x = np.array([[0.0], [0.0], [2.0], [2.0]])
    >>> mom = subset_moments(x, np.array([False, False, True, True]))
    >>> mom.s, mom.a, mom.gram_norm
    (1.0, array([2.]), 4.0)
    """

    gram: np.ndarray  # A = X~'X~ (p x p)
    gram_norm: float  # |A|_F
    a: np.ndarray  # X~' u = s (mu_T - mu_S)
    s: float  # n rho (1 - rho) = u'u
    cross: np.ndarray  # B = R~'X~ (q x p)
    b: np.ndarray  # R~' u
    ref_norm: float  # |R~'R~|_F


def subset_moments(x: ArrayLike, mask: ArrayLike, reference: ArrayLike | None = None
                   ) -> SubsetMoments:
    """Compute A = X~'X~, a = X~'(1_T - rho 1), s = n rho (1 - rho) (and B, b for R) in float64.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation X (not constant).
    mask : array_like of bool, shape (n,)
        The subset T (proper, non-empty).
    reference : array_like, shape (n, q), optional
        A reference representation R of the same rows (default: X itself).

    Returns
    -------
    SubsetMoments
        The statistics every closed form of this module reads.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.theory import subset_moments, limit_from_moments
    >>> x = np.random.default_rng(0).normal(size=(50, 3))
    >>> mom = subset_moments(x, np.arange(50) < 10)
    >>> mom.gram.shape, mom.s
    ((3, 3), 8.0)
    """
    x = _data(x)
    m = check_mask(mask, x.shape[0])
    n = x.shape[0]
    xc = x - x.mean(axis=0)
    gram = xc.T @ xc
    norm = _nonzero_norm(gram, "x")
    k = int(m.sum())
    a = xc[m].sum(axis=0)  # sum over T of centred rows; the rho * sum(all centred rows) term is 0
    if reference is None:
        return SubsetMoments(gram, norm, a, k * (n - k) / n, gram, a, norm)
    r = _data(reference, "reference")
    if r.shape[0] != n:
        raise ValueError(f"reference must have the same number of rows as x ({n}); got {r.shape[0]}.")
    rc = r - r.mean(axis=0)
    ref_norm = _nonzero_norm(rc.T @ rc, "reference")
    return SubsetMoments(gram, norm, a, k * (n - k) / n, rc.T @ xc, rc[m].sum(axis=0), ref_norm)


def _nonzero_norm(gram: np.ndarray, name: str) -> float:
    norm = float(np.linalg.norm(gram))
    if norm == 0.0:
        raise ValueError(f"{name} has zero variance (all rows equal); CKA is undefined.")
    return norm


def translation_limit(x: ArrayLike, mask: ArrayLike, reference: ArrayLike | None = None) -> float:
    """Theorem 1: lim_{|c|->inf} linear CKA(X, X + c 1_T v'), for every direction v != 0.

    Equals ``n rho (1 - rho) |mu_T - mu_S|^2 / |X~'X~|_F``, the linear CKA between X and the
    subset indicator 1_T; zero iff the subset means coincide. With a ``reference`` R (same rows),
    the limit of CKA(R, X + c 1_T v') is CKA_lin(R, 1_T) = |R~'u|^2 / (s |R~'R~|).

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation X (not constant).
    mask : array_like of bool, shape (n,)
        The translated subset T (proper, non-empty).
    reference : array_like, shape (n, q), optional
        Take the limit of CKA(reference, X + c 1_T v') instead of CKA(X, X + c 1_T v').

    Returns
    -------
    float
        The limit, in [0, 1].

    Examples
    --------
    >>> import numpy as np, pyckafast
    >>> from pyckafast.theory import translation_limit
    >>> from pyckafast.transforms import two_cubes
    >>> x, labels = two_cubes(200, 5, seed=0)
    >>> lim = translation_limit(x, labels == 1)
    >>> abs(lim - pyckafast.linear_cka(x, labels.astype(float))) < 1e-12
    True
    """
    mom = subset_moments(x, mask, reference)
    return limit_from_moments(mom)


def limit_from_moments(mom: SubsetMoments) -> float:
    """Compute :func:`translation_limit` from precomputed :class:`SubsetMoments`.

    Parameters
    ----------
    mom : SubsetMoments
        The statistics of X, T (and R) from :func:`subset_moments`.

    Returns
    -------
    float
        The limit of linear CKA as the subset's translation grows without bound.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.theory import limit_from_moments, subset_moments, translation_limit
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> mask = np.arange(40) % 4 == 0
    >>> limit_from_moments(subset_moments(x, mask)) == translation_limit(x, mask)
    True
    """
    return float(mom.b @ mom.b) / (mom.s * mom.ref_norm)


def translation_curve(x: ArrayLike, mask: ArrayLike, direction: ArrayLike, c: float | ArrayLike,
                      reference: ArrayLike | None = None) -> np.ndarray | float:
    """Exact linear CKA(X, X + c 1_T v') for a scalar or array of c, from the closed form.

    Equal to brute-force :func:`pyckafast.linear_cka` of the translated data to float64 rounding,
    at the cost of one p x p Gram for all c together.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation X (not constant).
    mask : array_like of bool, shape (n,)
        The translated subset T (proper, non-empty).
    direction : array_like, shape (p,)
        Translation direction v (any non-zero length; c multiplies it as given).
    c : float or array_like
        Translation magnitudes; the result has the same shape.
    reference : array_like, shape (n, q), optional
        Compute CKA(reference, X + c 1_T v') instead of CKA(X, X + c 1_T v'): the numerator
        becomes ``|B|^2 + 2c b'Bv + c^2 |b|^2 |v|^2`` with B = R~'X~, b = R~'u, and |A| in the
        denominator becomes |R~'R~|.

    Returns
    -------
    float or numpy.ndarray
        The CKA for each c: a float for a scalar ``c``, else an array of the shape of ``c``.

    Examples
    --------
    >>> import numpy as np, pyckafast
    >>> from pyckafast.theory import translation_curve
    >>> from pyckafast.transforms import translate_subset, two_cubes, random_direction
    >>> x, labels = two_cubes(200, 5, seed=0)
    >>> v = random_direction(5, seed=1)
    >>> exact = translation_curve(x, labels == 1, v, [0.0, 3.0])
    >>> brute = pyckafast.linear_cka(x, translate_subset(x, labels == 1, v, 3.0))
    >>> float(exact[0]), bool(abs(exact[1] - brute) < 1e-12)
    (1.0, True)
    """
    mom = subset_moments(x, mask, reference)
    v = check_direction(direction, mom.gram.shape[0])
    return curve_from_moments(mom, v, c)


def curve_from_moments(mom: SubsetMoments, v: np.ndarray, c: float | ArrayLike
                       ) -> np.ndarray | float:
    """Compute :func:`translation_curve` from precomputed :class:`SubsetMoments`.

    The moments are reused across directions and magnitudes: each call costs O(p^2).

    Parameters
    ----------
    mom : SubsetMoments
        The statistics of X, T (and R) from :func:`subset_moments`.
    v : numpy.ndarray, shape (p,)
        Translation direction (non-zero; c multiplies it as given).
    c : float or array_like
        Translation magnitudes (finite).

    Returns
    -------
    float or numpy.ndarray
        The CKA for each c: a float for a scalar ``c``, else an array of the shape of ``c``.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.theory import curve_from_moments, subset_moments
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> mom = subset_moments(x, np.arange(40) < 5)
    >>> curve_from_moments(mom, np.ones(3), [0.0, 1e300]).round(6).tolist()[0]
    1.0
    """
    c_arr = np.asarray(c, dtype=np.float64)
    if not np.all(np.isfinite(c_arr)):
        raise ValueError("c must contain only finite values; got NaN or Inf.")
    a_norm2 = float(mom.gram_norm) ** 2
    vav_a = float(v @ (mom.gram @ mom.a))  # v'Aa
    vv = float(v @ v)
    aa = float(mom.a @ mom.a)
    av = float(mom.a @ v)
    vav = float(v @ mom.gram @ v)
    s = mom.s
    # CKA = num(c) / sqrt(den2(c)) with num of degree 2 and den2 of degree 4 in c. For |c| > 1
    # both are evaluated in t = 1/c (num / c^2 and den2 / c^4), so that c^4 never overflows and
    # the curve reaches the Theorem 1 limit instead of inf/inf = nan or 0.
    num_coef = (float(np.linalg.norm(mom.cross)) ** 2, 2 * float(mom.b @ (mom.cross @ v)),
                vv * float(mom.b @ mom.b))
    den_coef = (a_norm2, 4 * vav_a, 2 * aa * vv + 2 * av ** 2 + 2 * s * vav, 4 * s * av * vv,
                s ** 2 * vv ** 2)
    large = np.abs(c_arr) > 1.0
    with np.errstate(divide="ignore", under="ignore"):
        t = np.where(large, 1.0 / np.where(large, c_arr, 1.0), c_arr)
    num = np.where(large, _poly(num_coef[::-1], t), _poly(num_coef, t))
    den2 = np.where(large, _poly(den_coef[::-1], t), _poly(den_coef, t))
    out = num / (mom.ref_norm * np.sqrt(np.maximum(den2, 0.0)))
    return float(out) if out.ndim == 0 else out


def _poly(coef: tuple[float, ...], t: np.ndarray) -> np.ndarray:
    """coef[0] + coef[1] t + coef[2] t^2 + ... by Horner's rule."""
    out = np.zeros_like(t)
    for a in coef[::-1]:
        out = out * t + a
    return out


def outlier_limit(x: ArrayLike, index: int) -> float:
    """Compute lim_{|c|->inf} linear CKA(X, X with row ``index`` moved by c v).

    Theorem 1 with |T| = 1. Equals ``n/(n-1) |x_o - x_bar|^2 / |X~'X~|_F``, about
    ``tr(A) / ((n-1) |A|)`` for a typical row: it tends to 0 as n grows.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation X (not constant).
    index : int
        The row that moves (negative indices count from the end).

    Returns
    -------
    float
        The limit, the same for every direction v.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.theory import outlier_limit
    >>> x = np.random.default_rng(0).normal(size=(500, 10))
    >>> 0.0 < outlier_limit(x, 0) < 0.05
    True
    """
    x = _data(x)
    return translation_limit(x, _one_hot(x.shape[0], index))


def outlier_curve(x: ArrayLike, index: int, direction: ArrayLike, c: float | ArrayLike
                  ) -> np.ndarray | float:
    """Compute the exact linear CKA(X, X with row ``index`` moved by c v).

    :func:`translation_curve` with the one-row subset T = {index}.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation X (not constant).
    index : int
        The row that moves.
    direction : array_like, shape (p,)
        Direction v of the move (non-zero).
    c : float or array_like
        Magnitudes of the move; the result has the same shape.

    Returns
    -------
    float or numpy.ndarray
        The CKA for each c.

    Examples
    --------
    >>> import numpy as np, pyckafast
    >>> from pyckafast.theory import outlier_curve
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> moved = x.copy(); moved[3] += 50.0 * np.ones(4)
    >>> abs(outlier_curve(x, 3, np.ones(4), 50.0) - pyckafast.linear_cka(x, moved)) < 1e-12
    True
    """
    x = _data(x)
    return translation_curve(x, _one_hot(x.shape[0], index), direction, c)


def _one_hot(n: int, index: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[check_index(index, n)] = True
    return mask
