"""The minibatch estimator's algebra (Nguyen et al. 2021), free of any backend.

Per batch of b samples, each layer's b x b Gram K (of its rows after a shift: the unbiased HSIC
of Song et al. 2012 does not change when every row is translated by the same vector) with its
diagonal set to zero, K~, gives every layer pair's unbiased HSIC from three small products:

    HSIC_1(K, L) = [tr(K~ L~) + (1'K~1)(1'L~1) / ((b-1)(b-2)) - 2/(b-2) 1'K~L~1] / (b(b-3))

with tr(K~ L~) = vec(K~) . vec(L~) and 1'K~L~1 = (K~1) . (L~1) (the Grams are symmetric). All
pairs' traces are one GEMM of the stacked vec(K~) (L x b^2), all pairs' row terms one GEMM of the
stacked row sums (L x b). The estimate sums each pair's HSIC over the batches and normalises:

    CKA_mb(i, j) = sum_b HSIC_1(K_i, L_j) / sqrt(sum_b HSIC_1(K_i, K_i) * sum_b HSIC_1(L_j, L_j))

The stacks may be NumPy, CuPy or torch arrays: only ``reshape``, ``@``, ``.T``, ``sum(1)`` and
``*`` are used on them, and the small results are handed to ``host`` (a callable giving NumPy).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["batch_hsic_terms", "unbiased_hsic", "MinibatchSums", "cka_map", "pytorch_cka_map"]


def unbiased_hsic(b: int, trace, total_x, total_y, rows):
    """Song et al.'s unbiased HSIC from the zero-diagonal Grams' products (broadcasting:
    ``total_x`` along rows and ``total_y`` along columns of ``trace`` and ``rows``)."""
    return (trace + total_x * total_y / ((b - 1) * (b - 2)) - 2.0 / (b - 2) * rows) / (b * (b - 3))


def batch_hsic_terms(grams_a, grams_b=None, *, host: Callable = np.asarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair's unbiased HSIC for one batch, from two stacks of zero-diagonal Grams.

    Parameters
    ----------
    grams_a : array, shape (La, b, b)
        Float64 Grams K~ of side a's layers for this batch, diagonals zero.
    grams_b : array, shape (Lb, b, b), optional
        The same for side b; None: side b is side a (a symmetric map, one GEMM fewer).
    host : callable, default numpy.asarray
        Brings a small (L x L or L) result to a NumPy array (e.g. ``lambda t: t.cpu().numpy()``).

    Returns
    -------
    hxy : ndarray, shape (La, Lb)
        HSIC_1(K_i, L_j).
    hxx : ndarray, shape (La,)
        HSIC_1(K_i, K_i).
    hyy : ndarray, shape (Lb,)
        HSIC_1(L_j, L_j).

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast._core.minibatch_terms import batch_hsic_terms
    >>> x = np.random.default_rng(0).normal(size=(16, 3))
    >>> k = x @ x.T
    >>> np.fill_diagonal(k, 0)
    >>> hxy, hxx, hyy = batch_hsic_terms(k[None], (4 * k)[None])
    >>> bool(np.isclose(hxy[0, 0], 4 * hxx[0])) and bool(np.isclose(hyy[0], 16 * hxx[0]))
    True
    """
    b = int(grams_a.shape[-1])
    if b < 4:
        raise ValueError(f"the unbiased HSIC needs batches of at least 4 samples; got {b}.")
    va = grams_a.reshape(grams_a.shape[0], -1)
    ra = grams_a.sum(1)                                  # (La, b) row sums K~1 (symmetric)
    if grams_b is None:
        trace, rows = host(va @ va.T), host(ra @ ra.T)
        total = rows_total = host(ra.sum(1))
        h = unbiased_hsic(b, trace, total[:, None], rows_total[None, :], rows)
        d = np.diagonal(h).copy()
        return h, d, d
    vb = grams_b.reshape(grams_b.shape[0], -1)
    rb = grams_b.sum(1)
    trace, rows = host(va @ vb.T), host(ra @ rb.T)
    ta, tb = host(ra.sum(1)), host(rb.sum(1))
    hxy = unbiased_hsic(b, trace, ta[:, None], tb[None, :], rows)
    hxx = unbiased_hsic(b, host((va * va).sum(1)), ta, ta, host((ra * ra).sum(1)))
    hyy = unbiased_hsic(b, host((vb * vb).sum(1)), tb, tb, host((rb * rb).sum(1)))
    return hxy, hxx, hyy


@dataclass
class MinibatchSums:
    """The running float64 sums of the per-batch HSIC values (all that the estimate keeps)."""

    hxy: np.ndarray | None = None
    hxx: np.ndarray | None = None
    hyy: np.ndarray | None = None
    batches: int = 0
    samples: list[int] = field(default_factory=list)

    def add(self, hxy: np.ndarray, hxx: np.ndarray, hyy: np.ndarray, b: int) -> None:
        """Add one batch's values (float64)."""
        parts = [np.array(v, dtype=np.float64) for v in (hxy, hxx, hyy)]  # own copies
        if self.hxy is None:
            self.hxy, self.hxx, self.hyy = parts
        else:
            self.hxy += parts[0]
            self.hxx += parts[1]
            self.hyy += parts[2]
        self.batches += 1
        self.samples.append(int(b))

    def totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sum hxy, sum hxx, sum hyy); ValueError before the first batch."""
        if self.hxy is None:
            raise ValueError("no batch was given: the minibatch estimate needs at least one "
                             "batch of samples (an exhausted iterator or an empty dataset?).")
        return self.hxy, self.hxx, self.hyy


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
