"""Layer x layer CKA maps: each representation's own terms are computed once."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._core import combine
from ._core.terms import LinearTerms, RowNormTerms
from ._core.validation import as_samples, check_finite_sums
from .rbf import Kernel, RBFOptions, Sigma, _check_tile, rbf_producer

__all__ = ["cka_matrix"]


def cka_matrix(
    xs: Sequence, ys: Sequence | None = None, *, kernel: Kernel = "linear",
    debiased: bool = False, sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: str = "kornblith", backend: str = "auto", tile: int | None = None,
) -> np.ndarray:
    """CKA between every representation in ``xs`` and every one in ``ys`` (a layer x layer map).

    Parameters
    ----------
    xs : sequence of array_like, each (n, p_i)
        Representations of the same n samples.
    ys : sequence of array_like, optional
        A second list (same n). None: ``xs`` against itself; the result is then symmetric with a
        unit diagonal (nan for a representation without variance) and only pairs i < j are
        computed.
    kernel : {"linear", "rbf"}, default "linear"
    debiased : bool, default False
        CKA from unbiased HSIC (Song et al. 2012) instead of the biased estimator.
    sigma, threshold, bandwidth, backend, tile
        As in :func:`rbf_cka` (``backend``/``tile`` apply to the RBF pass).

    Returns
    -------
    numpy.ndarray, shape (len(xs), len(ys))

    Notes
    -----
    Linear: every representation is centred once (float64) and keeps its Gram X~'X~ and row
    norms; each pair then costs one cross GEMM X~'Y~ (the same estimator as
    :func:`linear_cka`). RBF: each representation's bandwidth is found once; each pair is one
    tiled O(n)-memory pass (:func:`rbf_cka`).

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 8))
    >>> m = pyckafast.cka_matrix([x, 2 * x, np.tanh(x)])
    >>> m.shape, bool(np.allclose(m, m.T)), float(m[0, 1].round(12))
    ((3, 3), True, 1.0)
    """
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}.")
    symmetric = ys is None
    xs_ = _as_list(xs, "xs")
    ys_ = xs_ if symmetric else _as_list(ys, "ys")
    n = xs_[0].shape[0]
    for name, reps in (("xs", xs_), ("ys", ys_)):
        for i, r in enumerate(reps):
            if r.shape[0] != n:
                raise ValueError(
                    f"every representation needs the same number of samples; {name}[{i}] has "
                    f"{r.shape[0]}, xs[0] has {n}."
                )
    if n < (4 if debiased else 2):
        raise ValueError(f"x and y need at least {4 if debiased else 2} samples; got {n}.")
    if kernel == "linear":
        pair = _linear_pairs(xs_, ys_, symmetric, debiased)
    else:
        pair = _rbf_pairs(xs_, ys_, symmetric, debiased,
                          RBFOptions.of(sigma, threshold, bandwidth), backend, _check_tile(tile))
    out = np.empty((len(xs_), len(ys_)))
    for i in range(len(xs_)):
        for j in range(len(ys_)):
            if symmetric and j < i:
                out[i, j] = out[j, i]
            elif symmetric and i == j:
                out[i, j] = 1.0 if _has_variance(xs_[i]) else _nan_for(i)
            else:
                out[i, j] = combine.cka_from_hsic(pair(i, j))
    return out


def _as_list(reps, name: str) -> list[np.ndarray]:
    if isinstance(reps, np.ndarray) or not isinstance(reps, Sequence) or len(reps) == 0:
        raise TypeError(f"{name} must be a non-empty list of 2-D arrays; got {type(reps).__name__}.")
    return [as_samples(r, f"{name}[{i}]") for i, r in enumerate(reps)]


def _has_variance(a: np.ndarray) -> bool:
    return bool(np.any(a != a[:1]))


def _nan_for(i: int) -> float:
    warnings.warn(f"xs[{i}] has zero variance: its CKA with itself is undefined (nan).",
                  RuntimeWarning, stacklevel=3)
    return math.nan


@dataclass(frozen=True)
class _LinearRep:
    """A centred representation (float64) and its own moments, computed once."""

    c: np.ndarray
    gram: np.ndarray  # c'c
    q: np.ndarray  # row norms |c_i|^2
    qc: np.ndarray  # c'q
    eps: float

    @classmethod
    def of(cls, a: np.ndarray, name: str) -> _LinearRep:
        total = a.sum(axis=0, dtype=np.float64)
        check_finite_sums(total, name, 0, a.shape[0])
        c = a.astype(np.float64) - total / a.shape[0]
        q = np.einsum("ij,ij->i", c, c)
        return cls(c, c.T @ c, q, c.T @ q, float(np.finfo(a.dtype).eps))


def _linear_pairs(xs, ys, symmetric, debiased):
    rx = [_LinearRep.of(a, f"xs[{i}]") for i, a in enumerate(xs)]
    ry = rx if symmetric else [_LinearRep.of(a, f"ys[{i}]") for i, a in enumerate(ys)]

    def pair(i: int, j: int) -> combine.HSICTriple:
        a, b = rx[i], ry[j]
        norms = None
        if debiased:
            norms = RowNormTerms(
                sum_q=float(a.q.sum()), sum_r=float(b.q.sum()), sum_qq=float(a.q @ a.q),
                sum_rr=float(b.q @ b.q), sum_qr=float(a.q @ b.q), qx=a.qc, rx=a.c.T @ b.q,
                qy=b.c.T @ a.q, ry=b.qc,
            )
        terms = LinearTerms(
            n=a.c.shape[0], shift_x=np.zeros(a.c.shape[1]), shift_y=np.zeros(b.c.shape[1]),
            sum_x=a.c.sum(axis=0), sum_y=b.c.sum(axis=0), xx=a.gram, yy=b.gram, xy=a.c.T @ b.c,
            norms=norms, eps=max(a.eps, b.eps),
        )
        return combine.linear_hsic(terms, debiased)

    return pair


def _rbf_pairs(xs, ys, symmetric, debiased, options: RBFOptions, backend, tile):
    produce = rbf_producer(backend, "cpu")
    gx = [options.gamma(a, f"xs[{i}]", 0, tile, backend) for i, a in enumerate(xs)]
    gy = gx if symmetric else [options.gamma(a, f"ys[{i}]", 1, tile, backend) for i, a in enumerate(ys)]

    def pair(i: int, j: int) -> combine.HSICTriple:
        terms = produce(xs[i], ys[j], gamma_x=gx[i], gamma_y=gy[j], tile=tile)
        return combine.kernel_hsic(terms, debiased)

    return pair
