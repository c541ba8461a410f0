"""The minibatch estimator's algebra (Nguyen et al. 2021), free of any backend.

Per batch of b samples, each layer's b x b Gram K (of its rows after a shift: the unbiased HSIC
of Song et al. 2012 does not change when every row is translated by the same vector) with its
diagonal set to zero, K~, gives every layer pair's unbiased HSIC from three small products:

    HSIC_1(K, L) = [tr(K~ L~) + (1'K~1)(1'L~1) / ((b-1)(b-2)) - 2/(b-2) 1'K~L~1] / (b(b-3))

with tr(K~ L~) = vec(K~) . vec(L~) and 1'K~L~1 = (K~1) . (L~1) (the Grams are symmetric). All
pairs' traces are one GEMM of the stacked vec(K~) (L x b^2), all pairs' row terms one GEMM of the
stacked row sums (L x b); or, for host Grams, one pass of the C++ extension over the Grams as
they are (``_ext.gram_products_*``), which gives the same products (:func:`hsic_from_products`).
The estimate sums each pair's HSIC over the batches and normalises:

    CKA_mb(i, j) = sum_b HSIC_1(K_i, L_j) / sqrt(sum_b HSIC_1(K_i, K_i) * sum_b HSIC_1(L_j, L_j))

The stacks may be NumPy, CuPy or torch arrays: only ``reshape``, ``@``, ``.T``, ``sum(1)`` and
``*`` are used on them, and the small results are handed to ``host`` (a callable giving NumPy).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

__all__ = ["batch_hsic_terms", "hsic_from_products", "unbiased_hsic", "BatchHSIC",
           "MinibatchSums", "cka_map", "pytorch_cka_map", "ZERO_VARIANCE"]

# A layer's summed HSIC_1(K, K) at or below this fraction of its summed tr(K~K~) / (b(b-3))
# is the rounding residue of a layer without variance. Rows are centred before the Gram, so for
# a layer with any spread the two are about equal (both estimate ||Cov||_F^2); for a constant
# layer the centred rows are equal up to rounding, its Gram's entries equal to a few ulps, and
# the ratio is about 1e-14 or below.
ZERO_VARIANCE = 1e-9


class BatchHSIC(NamedTuple):
    """One batch's values: HSIC_1 of every pair and of each layer with itself, and each layer's
    tr(K~K~) / (b(b-3)), the scale its self-HSIC is judged against."""

    xy: np.ndarray
    xx: np.ndarray
    yy: np.ndarray
    scale_x: np.ndarray
    scale_y: np.ndarray


def unbiased_hsic(b: int, trace, total_x, total_y, rows):
    """Song et al.'s unbiased HSIC from the zero-diagonal Grams' products (broadcasting:
    ``total_x`` along rows and ``total_y`` along columns of ``trace`` and ``rows``)."""
    return (trace + total_x * total_y / ((b - 1) * (b - 2)) - 2.0 / (b - 2) * rows) / (b * (b - 3))


def batch_hsic_terms(grams_a, grams_b=None, *, host: Callable = np.asarray) -> BatchHSIC:
    """Every pair's unbiased HSIC for one batch, from two stacks of zero-diagonal Grams.

    Parameters
    ----------
    grams_a : array, shape (La, b, b)
        Float64 Grams K~ of side a's layers for this batch, diagonals zero.
    grams_b : array, shape (Lb, b, b), optional
        The same for side b; None: side b is side a (a symmetric map, one GEMM fewer).
    host : callable, default numpy.asarray
        Brings a small (L x L or L x b) result to a NumPy array (e.g.
        ``lambda t: t.cpu().numpy()``).

    Returns
    -------
    BatchHSIC
        ``xy`` (La, Lb): HSIC_1(K_i, L_j); ``xx`` (La,), ``yy`` (Lb,): each layer's HSIC_1
        with itself; ``scale_x``, ``scale_y``: tr(K~K~) / (b(b-3)) per layer.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast._core.minibatch_terms import batch_hsic_terms
    >>> x = np.random.default_rng(0).normal(size=(16, 3))
    >>> k = x @ x.T
    >>> np.fill_diagonal(k, 0)
    >>> hxy, hxx, hyy, _, _ = batch_hsic_terms(k[None], (4 * k)[None])
    >>> bool(np.isclose(hxy[0, 0], 4 * hxx[0])) and bool(np.isclose(hyy[0], 16 * hxx[0]))
    True
    """
    b = int(grams_a.shape[-1])
    va = grams_a.reshape(grams_a.shape[0], -1)
    rows_a = host(grams_a.sum(1))  # (La, b) row sums K~1 (symmetric)
    if grams_b is None:
        trace = host(va @ va.T)
        return hsic_from_products(b, trace, np.diagonal(trace).copy(), rows_a)
    vb = grams_b.reshape(grams_b.shape[0], -1)
    # ||K~||^2 per layer as the diagonal of a tiny GEMM: (va * va).sum(1) would make a
    # temporary of every Gram (fresh pages on every batch).
    sq_a, sq_b = np.diagonal(host(va @ va.T)).copy(), np.diagonal(host(vb @ vb.T)).copy()
    return hsic_from_products(b, host(va @ vb.T), sq_a, rows_a, sq_b, host(grams_b.sum(1)))


def hsic_from_products(b: int, trace: np.ndarray, sq_a: np.ndarray, rows_a: np.ndarray,
                       sq_b: np.ndarray | None = None, rows_b: np.ndarray | None = None
                       ) -> BatchHSIC:
    """One batch's :class:`BatchHSIC` from the zero-diagonal Grams' products (float64 NumPy).

    Parameters
    ----------
    b : int
        The batch's samples (at least 4).
    trace : ndarray, shape (La, Lb)
        tr(K~_i L~_j) of every pair (symmetric map: (La, La), side a against itself).
    sq_a : ndarray, shape (La,)
        tr(K~_i K~_i) of side a's layers.
    rows_a : ndarray, shape (La, b)
        Their row sums K~_i 1.
    sq_b, rows_b : ndarray, optional
        The same for side b; None: a symmetric map (side b is side a).

    Returns
    -------
    BatchHSIC

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast._core.minibatch_terms import batch_hsic_terms, hsic_from_products
    >>> k = np.random.default_rng(1).normal(size=(6, 6))
    >>> k = k + k.T
    >>> np.fill_diagonal(k, 0)
    >>> sq = np.array([(k * k).sum()])
    >>> h = hsic_from_products(6, sq[:, None], sq, k.sum(1)[None])
    >>> bool(np.allclose(h.xy, batch_hsic_terms(k[None]).xy))
    True
    """
    if b < 4:
        raise ValueError(f"the unbiased HSIC needs batches of at least 4 samples; got {b}.")
    symmetric = sq_b is None
    if symmetric:
        sq_b, rows_b = sq_a, rows_a
    ta, tb = rows_a.sum(1), rows_b.sum(1)
    hxy = unbiased_hsic(b, trace, ta[:, None], tb[None, :], rows_a @ rows_b.T)
    hxx = np.diagonal(hxy).copy() if symmetric else unbiased_hsic(
        b, sq_a, ta, ta, (rows_a * rows_a).sum(1))
    hyy = hxx if symmetric else unbiased_hsic(b, sq_b, tb, tb, (rows_b * rows_b).sum(1))
    return BatchHSIC(hxy, hxx, hyy, sq_a / (b * (b - 3)), sq_b / (b * (b - 3)))


@dataclass
class MinibatchSums:
    """The running float64 sums of the per-batch HSIC values (all that the estimate keeps)."""

    hxy: np.ndarray | None = None
    hxx: np.ndarray | None = None
    hyy: np.ndarray | None = None
    scale_x: np.ndarray | None = None
    scale_y: np.ndarray | None = None
    batches: int = 0
    samples: list[int] = field(default_factory=list)

    def add(self, batch: BatchHSIC, b: int) -> None:
        """Add one batch's values (float64)."""
        parts = [np.array(v, dtype=np.float64) for v in batch]  # own copies
        names = ("hxy", "hxx", "hyy", "scale_x", "scale_y")
        if self.hxy is None:
            for name, v in zip(names, parts):
                setattr(self, name, v)
        else:
            for name, v in zip(names, parts):
                getattr(self, name).__iadd__(v)
        self.batches += 1
        self.samples.append(int(b))

    def totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sum hxy, sum hxx, sum hyy), with the self-HSIC of a layer without variance (see
        ``ZERO_VARIANCE``) and its pairs' HSIC set to exactly 0; ValueError before the first
        batch."""
        if self.hxy is None:
            raise ValueError("no batch was given: the minibatch estimate needs at least one "
                             "batch of samples (an exhausted iterator or an empty dataset?).")
        zero_x = self.hxx <= ZERO_VARIANCE * self.scale_x
        zero_y = self.hyy <= ZERO_VARIANCE * self.scale_y
        hxy = np.where(np.multiply.outer(zero_x, np.ones(len(zero_y), bool))
                       | np.multiply.outer(np.ones(len(zero_x), bool), zero_y), 0.0, self.hxy)
        return hxy, np.where(zero_x, 0.0, self.hxx), np.where(zero_y, 0.0, self.hyy)


def cka_map(hxy: np.ndarray, hxx: np.ndarray, hyy: np.ndarray, *, warn: bool = True
            ) -> np.ndarray:
    """sum hxy / sqrt(sum hxx sum hyy); nan (with a RuntimeWarning) where a layer's summed
    self-HSIC is not positive (a layer without variance in every batch: CKA is undefined)."""
    denom = np.sqrt(np.maximum(np.multiply.outer(hxx, hyy), 0.0))
    ok = np.multiply.outer(hxx > 0, hyy > 0)
    out = np.full(np.shape(hxy), np.nan)
    np.divide(hxy, denom, out=out, where=ok)
    if warn and not ok.all():
        bad_a = np.flatnonzero(~(hxx > 0)).tolist()
        bad_b = np.flatnonzero(~(hyy > 0)).tolist()
        warnings.warn(f"layers without variance (HSIC(x, x) <= 0 summed over the batches: side a "
                      f"{bad_a}, side b {bad_b}); their CKA is undefined and set to nan.",
                      RuntimeWarning, stacklevel=3)
    return out


def pytorch_cka_map(hxy: np.ndarray, hxx: np.ndarray, hyy: np.ndarray) -> np.ndarray:
    """pytorch-cka 1.1.3's normalisation (``CKA._compute_cka_matrix``): the denominator
    sqrt(max(hxx hyy, 0)), 1e-6 where that is 0, and the ratio clamped to [0, 1]."""
    denom = np.sqrt(np.maximum(np.multiply.outer(hxx, hyy), 0.0))
    denom = np.where(denom == 0, 1e-6, denom)
    return np.clip(hxy / denom, 0.0, 1.0)
