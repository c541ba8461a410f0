"""Exact, mergeable sufficient statistics ("terms") that every backend produces.

Linear terms are raw moments of the rows *shifted* by a fixed vector s (x -> x - s); CKA is
translation invariant, and shifting by a vector close to the mean before accumulating keeps the
moments free of the catastrophic cancellation of ``X'X - n mu mu'`` on raw float32 data.
Changing the shift is exact algebra (:meth:`LinearTerms.reshift`, which is the frame algebra of
:mod:`pyckafast._core.moments`, where the linear terms are defined), so terms computed with any
shifts merge by re-expressing one in the other's shift and adding. Chunks, streams, GPU blocks
and Dask partitions are all just producers of these terms; :mod:`pyckafast._core.combine` turns
them into HSIC/CKA.

Kernel terms (:class:`KernelTerms`) are the pair sums of two n x n kernel matrices K and L and
their row sums, accumulated tile by tile without ever holding K or L.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The linear terms live with the frame algebra that moves and merges them (one implementation).
from .moments import LinearTerms, RowNormTerms

__all__ = ["RowNormTerms", "LinearTerms", "KernelTerms"]


@dataclass(frozen=True)
class KernelTerms:
    """Pair sums of two n x n kernel matrices K and L, accumulated without holding them.

    ``s_kl = sum_ij K_ij L_ij`` (and ``s_kk``, ``s_ll``), ``row_k = K 1`` and ``row_l = L 1``.
    ``diag_k`` / ``diag_l`` hold the diagonals, or are None when the diagonal is zero. Producers
    may pass K - c 11' for any constant c: biased and unbiased HSIC are both unchanged by it.
    A constant diagonal may instead be given as ``const_diag_k`` / ``const_diag_l``: then the
    sums hold the off-diagonal entries only and the matrix is that plus ``const_diag_k * I``
    (the RBF producers: off-diagonal entries 2^m K - c, diagonal 2^m - c, see
    :mod:`pyckafast._core.rbf_entry`), so the unbiased estimator never subtracts a large
    diagonal from the sums. Partial terms over disjoint sets of (i, j) pairs merge by addition.
    """

    n: int
    s_kl: float
    s_kk: float
    s_ll: float
    row_k: np.ndarray
    row_l: np.ndarray
    diag_k: np.ndarray | None = None
    diag_l: np.ndarray | None = None
    eps: float = float(np.finfo(np.float64).eps)  # of the dtype the entries were computed in
    # The matrices held are K * 2^-log2_k and L * 2^-log2_l (linear Grams of data of extreme
    # magnitude are computed on rows scaled by a power of two); HSIC is scaled back in combine.
    log2_k: int = 0
    log2_l: int = 0
    const_diag_k: float = 0.0  # a constant diagonal not included in the sums (see above)
    const_diag_l: float = 0.0

    def __add__(self, other: KernelTerms) -> KernelTerms:
        if self.n != other.n:
            raise ValueError(f"cannot add kernel terms of n={self.n} and n={other.n}.")
        if (self.log2_k, self.log2_l) != (other.log2_k, other.log2_l):
            raise ValueError("cannot add kernel terms of differently scaled kernels: "
                             f"{(self.log2_k, self.log2_l)} and {(other.log2_k, other.log2_l)}.")
        if (self.const_diag_k, self.const_diag_l) != (other.const_diag_k, other.const_diag_l):
            raise ValueError("cannot add kernel terms with different constant diagonals.")
        return KernelTerms(
            n=self.n,
            s_kl=self.s_kl + other.s_kl,
            s_kk=self.s_kk + other.s_kk,
            s_ll=self.s_ll + other.s_ll,
            row_k=self.row_k + other.row_k,
            row_l=self.row_l + other.row_l,
            diag_k=_add_optional(self.diag_k, other.diag_k),
            diag_l=_add_optional(self.diag_l, other.diag_l),
            eps=max(self.eps, other.eps),
            log2_k=self.log2_k,
            log2_l=self.log2_l,
            const_diag_k=self.const_diag_k,
            const_diag_l=self.const_diag_l,
        )


def _add_optional(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a + b
