"""Exact linear CKA for any (n, p): the sample-space terms, one block pair of Gram tiles at a time.

For p much larger than n the feature form's p x p moments do not fit (p = 65,536 needs 100 GB)
and the n x n Grams of the in-memory sample form do not either once n is large. This pass runs
the block-pair scheduler of :mod:`pyckafast._core.pairs` with a linear entry: each block pair
(a, b), a <= b, gets the Gram tiles K_ab = X~_a X~_b' and L_ab = Y~_a Y~_b' from BLAS in the
input dtype (X~: rows shifted by the column means rounded to the input dtype, so float32 data
with a large mean keep their precision), and their pair sums and row sums go to float64
:class:`~pyckafast._core.terms.KernelTerms`. Memory beyond the inputs: the row sums and
diagonals (O(n)) and two centred blocks and their tiles (O(tile * p + tile^2)); the inputs are
read block by block, so memmaps larger than RAM work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._core.combine import gram_is_zero_variance
from .._core.dispatch import tile_rows
from .._core.pairs import PairTerms, PairTermsSum, block_bounds, centring_shift, reduce_pairs
from .._core.terms import KernelTerms
from . import pass_progress

__all__ = ["tiled_sample_terms"]

@dataclass(frozen=True)
class _Block:
    """Centred rows of x and y of one block, and where they sit."""

    bounds: tuple[int, int]
    x: np.ndarray
    y: np.ndarray


class _Loader:
    """Centred blocks written into reused buffers (block a and block b each have their own), so
    the pass allocates no memory per block pair."""

    def __init__(self, x, y, shift_x, shift_y, tile: int, scales: tuple[float, float]):
        self.x, self.y, self.shift_x, self.shift_y = x, y, shift_x, shift_y
        self.scales = scales
        self.buffers = {side: (np.empty((tile, x.shape[1]), x.dtype),
                               np.empty((tile, y.shape[1]), y.dtype)) for side in "ab"}

    def block(self, bounds: tuple[int, int], side: str) -> _Block:
        lo, hi = bounds
        bx, by = (buf[: hi - lo] for buf in self.buffers[side])
        np.subtract(self.x[lo:hi], self.shift_x, out=bx)
        np.subtract(self.y[lo:hi], self.shift_y, out=by)
        for block, scale in zip((bx, by), self.scales):
            if scale != 1.0:  # data of extreme magnitude (1e307): a power of two, exact
                np.multiply(block, scale, out=block)
        return _Block(bounds, bx, by)


def tiled_sample_terms(x: np.ndarray, y: np.ndarray, *, tile: int | None = None,
                       progress=None) -> tuple[KernelTerms, bool, bool]:
    """Kernel terms of the centred linear Grams K = X~X~', L = Y~Y~' over block pairs, and
    whether x and y have zero variance. ``progress(done, total)`` is called per block pair."""
    n = x.shape[0]
    shift_x, shift_y = centring_shift(x, "x", x.dtype), centring_shift(y, "y", y.dtype)
    rows = min(n, tile or tile_rows(x.shape[1], y.shape[1], max(x.itemsize, y.itemsize)))
    bounds = block_bounds(n, rows)
    from .tiled_map import _SPREAD_ROWS, head_scale, scale_log2  # (tiled_map imports linear)

    scales = (head_scale(x[:_SPREAD_ROWS], shift_x), head_scale(y[:_SPREAD_ROWS], shift_y))
    loader = _Loader(x, y, shift_x, shift_y, rows, scales)
    diag_k, diag_l = np.zeros(n), np.zeros(n)

    def body(a: _Block, b: _Block, diagonal: bool) -> PairTerms:
        # a.x @ a.x.T on one buffer lets NumPy call SYRK (half the flops) for diagonal tiles.
        k = a.x @ (a.x if diagonal else b.x).T
        l = a.y @ (a.y if diagonal else b.y).T
        if diagonal:
            lo, hi = a.bounds
            diag_k[lo:hi], diag_l[lo:hi] = np.diagonal(k), np.diagonal(l)
        return _pair_terms(k, l, diagonal)

    with pass_progress.counted(PairTermsSum(n), progress, bounds, None, desc="linear tiles") as into:
        off = reduce_pairs(body, bounds, load_a=lambda b: loader.block(b, "a"),
                           load_b=lambda b: loader.block(b, "b"), into=into)
    dtype_eps = max(float(np.finfo(x.dtype).eps), float(np.finfo(y.dtype).eps))
    terms = KernelTerms(
        n=n, s_kl=off.s_kl + float(diag_k @ diag_l), s_kk=off.s_kk + float(diag_k @ diag_k),
        s_ll=off.s_ll + float(diag_l @ diag_l), row_k=off.row_k_a + diag_k,
        row_l=off.row_l_a + diag_l, diag_k=diag_k, diag_l=diag_l, eps=dtype_eps,
        log2_k=scale_log2(scales[0]), log2_l=scale_log2(scales[1]),
    )
    zero_x = gram_is_zero_variance(float(diag_k.sum()), float(terms.row_k.sum()), n,
                                   float(np.finfo(x.dtype).eps))
    zero_y = gram_is_zero_variance(float(diag_l.sum()), float(terms.row_l.sum()), n,
                                   float(np.finfo(y.dtype).eps))
    return terms, zero_x, zero_y


def _pair_terms(k: np.ndarray, l: np.ndarray, diagonal: bool) -> PairTerms:
    """Float64 sums of one pair of Gram tiles over the pairs i != j (a diagonal tile: i < j,
    doubled, its column sums in its rows, as the scheduler's convention asks; the diagonal
    entries themselves are added by the caller)."""
    k64, l64 = k.astype(np.float64, copy=False), l.astype(np.float64, copy=False)
    s_kl, s_kk, s_ll = _vdot(k64, l64), _vdot(k64, k64), _vdot(l64, l64)
    row_k, row_l = k64.sum(axis=1), l64.sum(axis=1)
    if not diagonal:
        return PairTerms(s_kl, s_kk, s_ll, row_k, row_l, k64.sum(axis=0), l64.sum(axis=0))
    dk, dl = np.diagonal(k64), np.diagonal(l64)
    empty = np.zeros(0)
    return PairTerms(s_kl - float(dk @ dl), s_kk - float(dk @ dk), s_ll - float(dl @ dl),
                     row_k - dk, row_l - dl, empty, empty)


def _vdot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.vdot(a, b))


def _sq(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    return float(v @ v)
