"""The CKA functions of Kornblith et al. (2019)'s reference colab, same names, same results.

Code written against the reference switches with one import::

    from pyckafast.compat.kornblith import cka, gram_linear, feature_space_linear_cka

Results agree with the reference to float64 rounding (tests check 1e-10). Where the call allows
it the fast engine runs instead: :func:`feature_space_linear_cka` streams through
:func:`pyckafast.linear_cka` (no n x n matrix), and :func:`cka` reduces the given Grams to
pair sums and row sums (``pyckafast._core.terms.KernelTerms``) without forming H K H. The Gram
functions and :func:`center_gram` return n x n matrices because that is what they are asked for.

Differences from the reference: inputs are validated (errors name the argument), and debiased
estimators with n < 4 raise instead of dividing by zero.
"""

from __future__ import annotations

import numpy as np

from .._core import combine
from .._core.terms import KernelTerms
from .._core.types import ArrayLike
from .._core.inputs import as_samples
from .._core.validation import check_positive_scalar
from ..linear import linear_cka

__all__ = ["gram_linear", "gram_rbf", "center_gram", "cka", "feature_space_linear_cka"]

# Rows of the Grams reduced at a time in cka(): bounds the temporary to a few MB.
_ROW_BLOCK = 512


def gram_linear(x: ArrayLike) -> np.ndarray:
    """Return the linear Gram matrix ``x x'`` of the rows of ``x``.

    Parameters
    ----------
    x : array_like
        Shape (n, p): one row per sample.

    Returns
    -------
    numpy.ndarray
        Shape (n, n): the inner products of every pair of rows.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.compat.kornblith import gram_linear
    >>> gram_linear(np.eye(2) * 2.0)
    array([[4., 0.],
           [0., 4.]])
    """
    x = as_samples(x, "x")
    return x.dot(x.T)


def gram_rbf(x: ArrayLike, threshold: float = 1.0) -> np.ndarray:
    """Return the RBF Gram matrix with the bandwidth rule of the reference.

    ``K_ij = exp(-d_ij / (2 threshold^2 median(d)))`` where d holds all n^2 squared distances,
    the n zeros of the diagonal included (Kornblith's convention).

    Parameters
    ----------
    x : array_like
        Shape (n, p): one row per sample.
    threshold : float, default 1.0
        The bandwidth as a fraction of the median distance (positive).

    Returns
    -------
    numpy.ndarray
        Shape (n, n), float64, with a unit diagonal.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.compat.kornblith import gram_rbf
    >>> k = gram_rbf(np.arange(8.0).reshape(4, 2))
    >>> k.shape, bool(np.allclose(np.diag(k), 1.0))
    ((4, 4), True)
    """
    x = as_samples(x, "x")
    threshold = check_positive_scalar(threshold, "threshold")
    # Centring first (distances are translation invariant) keeps |a|^2 + |b|^2 - 2ab accurate.
    x = x - x.mean(axis=0, dtype=np.float64)
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    np.maximum(sq_distances, 0.0, out=sq_distances)
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold ** 2 * sq_median_distance))


def center_gram(gram: ArrayLike, unbiased: bool = False) -> np.ndarray:
    """Centre a symmetric Gram matrix: ``H K H`` or, with ``unbiased``, its U-centred form.

    The U-centring (Szekely & Rizzo 2014) zeroes the diagonal and subtracts
    ``k^_i/(n-2) - sum(k^)/(2(n-1)(n-2))`` from every row and column, where k^ are the row sums
    of K with its diagonal zeroed; the inner product of two U-centred Grams over n(n-3) is the
    unbiased HSIC of Song et al. (2012).

    Parameters
    ----------
    gram : array_like
        A symmetric (n, n) Gram matrix; it is not modified.
    unbiased : bool, default False
        U-centre (needs n >= 3) instead of ``H K H``.

    Returns
    -------
    numpy.ndarray
        A new (n, n) float64 matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.compat.kornblith import center_gram
    >>> c = center_gram(np.ones((3, 3)) + np.eye(3))
    >>> bool(np.allclose(c.sum(axis=0), 0.0))
    True
    """
    gram = _square(gram, "gram")
    if not np.allclose(gram, gram.T):
        raise ValueError("gram must be a symmetric matrix; got a non-symmetric one.")
    gram = np.array(gram, dtype=np.float64)
    n = gram.shape[0]
    if unbiased:
        if n < 3:
            raise ValueError(f"unbiased centring needs n >= 3 (it divides by n - 2); got n={n}.")
        np.fill_diagonal(gram, 0)
        means = gram.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = gram.mean(axis=0)
        means -= means.mean() / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def cka(gram_x: ArrayLike, gram_y: ArrayLike, debiased: bool = False) -> float:
    """Return the CKA between two Gram matrices of the same n samples.

    Computed from pair sums and row sums of the Grams (``combine.kernel_hsic``), a block of rows
    at a time: no centred copies.

    Parameters
    ----------
    gram_x : array_like
        A symmetric (n, n) Gram matrix of the first representation.
    gram_y : array_like
        A symmetric (n, n) Gram matrix of the second, over the same samples.
    debiased : bool, default False
        False: biased HSIC (Kornblith et al. 2019); True: unbiased HSIC (Song et al. 2012),
        equal to the reference's U-centred Frobenius products.

    Returns
    -------
    float
        The CKA (in [0, 1] for positive semi-definite Grams and the biased estimator).

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.compat.kornblith import cka, gram_linear
    >>> x = np.random.default_rng(0).normal(size=(50, 3))
    >>> round(cka(gram_linear(x), gram_linear(2 * x)), 12)
    1.0
    """
    k, l = _square(gram_x, "gram_x"), _square(gram_y, "gram_y")
    if k.shape != l.shape:
        raise ValueError(f"gram_x and gram_y must have the same shape; got {k.shape} and {l.shape}.")
    for g, name in ((k, "gram_x"), (l, "gram_y")):
        if not np.allclose(g, g.T):
            raise ValueError(f"{name} must be a symmetric matrix; got a non-symmetric one.")
    triple = combine.kernel_hsic(_gram_terms(k, l), bool(debiased))
    return combine.cka_from_hsic(triple)


def feature_space_linear_cka(features_x: ArrayLike, features_y: ArrayLike,
                             debiased: bool = False) -> float:
    """Return the linear CKA of two feature matrices without n x n Grams.

    The computation is :func:`pyckafast.linear_cka`.

    Parameters
    ----------
    features_x : array_like
        Shape (n, p1): one row per sample.
    features_y : array_like
        Shape (n, p2), the same samples.
    debiased : bool, default False
        False: biased HSIC (Kornblith et al. 2019); True: unbiased HSIC (Song et al. 2012).

    Returns
    -------
    float
        The linear CKA.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.compat.kornblith import feature_space_linear_cka
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> round(feature_space_linear_cka(x, x @ np.diag([1.0, 2.0, 3.0, 4.0])), 3)
    0.849
    """
    return linear_cka(features_x, features_y, debiased=bool(debiased))


def _gram_terms(k: np.ndarray, l: np.ndarray) -> KernelTerms:
    """Pair sums of K - c and L - d, c and d the mean entries (HSIC is unchanged by a constant
    shift of every entry, and the sums of shifted entries do not cancel when K is far from 0)."""
    n = k.shape[0]
    c, d = float(k.mean(dtype=np.float64)), float(l.mean(dtype=np.float64))
    s_kl = s_kk = s_ll = 0.0
    row_k, row_l = np.empty(n), np.empty(n)
    for lo in range(0, n, _ROW_BLOCK):
        hi = min(lo + _ROW_BLOCK, n)
        bk = k[lo:hi].astype(np.float64) - c
        bl = l[lo:hi].astype(np.float64) - d
        s_kl += float(np.vdot(bk, bl))
        s_kk += float(np.vdot(bk, bk))
        s_ll += float(np.vdot(bl, bl))
        row_k[lo:hi], row_l[lo:hi] = bk.sum(axis=1), bl.sum(axis=1)
    diag_k = np.diagonal(k).astype(np.float64) - c
    diag_l = np.diagonal(l).astype(np.float64) - d
    return KernelTerms(n, s_kl, s_kk, s_ll, row_k, row_l, diag_k, diag_l)


def _square(gram, name: str) -> np.ndarray:
    g = np.asarray(gram)
    if g.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {g.dtype}.")
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"{name} must be a square n x n Gram matrix; got shape {g.shape}.")
    if g.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples; got shape {g.shape}.")
    return g
