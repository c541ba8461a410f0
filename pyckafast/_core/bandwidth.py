"""RBF bandwidths from median squared distances, exact in O(n) memory.

Rules (sigma^2 = threshold^2 * median; gamma = 1 / (2 sigma^2)):

* ``"kornblith"``: median of all n^2 squared distances, the n diagonal zeros included
  (Kornblith et al. 2019 reference code; ``np.median`` semantics: the mean of the two middle
  values when the count is even).
* ``"offdiag"``: median of the n(n-1)/2 distinct pairs i < j (same averaging).
* ``"sampled"``: median of ``n_pairs`` random distinct pairs (seeded), for huge n.

The exact medians never hold the n x n distances: the k-th smallest of the n(n-1)/2 pair values
is found by histogram passes over tiles (count the values per bin, narrow the window to the bins
holding the wanted ranks, repeat), then the few values left in the window are collected and
selected exactly. Every pass is a sum over block pairs (:class:`Histogram` and
:class:`Candidates` add), so a Dask or GPU driver reuses it by supplying its own
``reduce_pairs``. In memory on the CPU, a pass is one call of the C++ extension when it is built
(``d2_pass``: the distances come from the fused RBF pass's register-tiled micro-kernel and are
binned at once); otherwise BLAS tiles and a Numba histogram.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import dispatch
from .._cpu.rbf import block_bounds, centring_shift, default_tile

__all__ = ["RULES", "Histogram", "Candidates", "pair_histogram", "pair_candidates",
           "select_pair_ranks", "median_ranks", "median_sq_distance", "exact_median",
           "local_pair_reducer", "block_pair_reducer", "sampled_pairs", "median_over_pairs", "gamma_from_sigma", "gamma_from_median"]

RULES = ("kornblith", "offdiag", "sampled")
_BINS = 1 << 14
_MAX_CANDIDATES = 1 << 21
_MAX_PASSES = 8

# reduce_pairs(fn) -> sum of fn(a_block, b_block, diagonal) over the upper triangle of block
# pairs of the centred data (diagonal=True: b_block is a_block, pairs i < j only).
PairReducer = Callable[[Callable[[np.ndarray, np.ndarray, bool], object]], object]


@dataclass(frozen=True)
class Histogram:
    below: int  # values < lo
    counts: np.ndarray  # per bin over [lo, hi]; values > hi are not counted

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(self.below + other.below, self.counts + other.counts)


@dataclass(frozen=True)
class Candidates:
    below: int  # values < lo
    values: np.ndarray  # the values in [lo, hi]

    def __add__(self, other: Candidates) -> Candidates:
        return Candidates(self.below + other.below, np.concatenate([self.values, other.values]))


def _tile_d2(a: np.ndarray, b: np.ndarray, diagonal: bool):
    g = a @ a.T if diagonal else a @ b.T
    na = np.einsum("ij,ij->i", a, a)
    nb = na if diagonal else np.einsum("ij,ij->i", b, b)
    return g, na, nb


def pair_histogram(a, b, diagonal: bool, lo: float, hi: float, bins: int = _BINS) -> Histogram:
    """Histogram of the squared distances between the rows of a and b (i < j if diagonal)."""
    from .._cpu.ops_numba_rbf import d2_histogram

    below, counts = d2_histogram(*_tile_d2(a, b, diagonal), diagonal, lo, hi, bins)
    return Histogram(int(below), counts)


def pair_candidates(a, b, diagonal: bool, lo: float, hi: float) -> Candidates:
    """The squared distances in [lo, hi] and the count below lo (i < j if diagonal)."""
    g, na, nb = _tile_d2(a, b, diagonal)
    d2 = np.maximum(na.astype(np.float64)[:, None] + nb.astype(np.float64)[None, :]
                    - 2.0 * g.astype(np.float64), 0.0)
    if diagonal:
        d2 = d2[np.triu_indices(d2.shape[0], 1)]
    return Candidates(int(np.count_nonzero(d2 < lo)), d2[(d2 >= lo) & (d2 <= hi)].ravel())


def local_pair_reducer(a: np.ndarray, tile: int | None = None) -> PairReducer:
    """A ``reduce_pairs`` over the in-memory array ``a``, centred by its mean, tile by tile."""
    dtype = np.promote_types(a.dtype, np.float32)
    tile = int(tile or default_tile(dtype.itemsize))
    return block_pair_reducer(a, centring_shift(a, "data", dtype), dtype, tile, np)


def block_pair_reducer(a, shift, dtype, tile: int, xp) -> PairReducer:
    """A ``reduce_pairs`` over the upper triangle of ``tile``-row blocks of ``a - shift``, for an
    array of module ``xp`` (NumPy here, CuPy for data on a GPU)."""
    bounds = block_bounds(a.shape[0], tile)

    def reduce_pairs(fn):
        total = None
        for ia, (alo, ahi) in enumerate(bounds):
            xa = xp.ascontiguousarray(a[alo:ahi] - shift, dtype=dtype)
            for blo, bhi in bounds[ia:]:
                diagonal = blo == alo
                xb = xa if diagonal else xp.ascontiguousarray(a[blo:bhi] - shift, dtype=dtype)
                part = fn(xa, xb, diagonal)
                total = part if total is None else total + part
        return total

    return reduce_pairs


def select_pair_ranks(
    ranks: Sequence[int], *, n: int, upper: float, reduce_pairs: PairReducer,
    pair_fns: tuple[Callable, Callable] = (pair_histogram, pair_candidates),
) -> list[float]:
    """The values of the given 0-based ranks among the n(n-1)/2 pair squared distances.

    ``upper`` bounds every squared distance (e.g. (2 max_i |x_i|)^2 of the centred rows).
    ``pair_fns`` are the per-block-pair histogram and candidate functions (the GPU driver
    passes device versions returning the same :class:`Histogram` / :class:`Candidates`).
    """
    histogram, candidates = pair_fns
    # Margin: the GEMM-based distances of float32 tiles carry relative errors near 1e-6.
    lo, hi = 0.0, float(upper) * (1 + 1e-3) + 1e-300
    for _ in range(_MAX_PASSES):
        hist = reduce_pairs(lambda a, b, d: histogram(a, b, d, lo, hi))
        if int(hist.counts.sum()) <= _MAX_CANDIDATES:
            break
        if hi - lo <= 64 * np.finfo(np.float64).eps * abs(hi):
            return [0.5 * (lo + hi)] * len(ranks)  # many ties: every wanted rank is this value
        lo, hi = _narrow(hist, ranks, lo, hi)
    cand = reduce_pairs(lambda a, b, d: candidates(a, b, d, lo, hi))
    values = np.sort(cand.values)
    out = []
    for r in ranks:
        k = int(r) - cand.below
        if not 0 <= k < values.size:
            raise RuntimeError(
                "exact median selection lost its rank: the tiles' distances differ between "
                "passes (non-deterministic GEMMs?); use bandwidth='sampled' or an explicit sigma."
            )
        out.append(float(values[k]))
    return out


def _narrow(hist: Histogram, ranks: Sequence[int], lo: float, hi: float) -> tuple[float, float]:
    """The window of the bins holding every wanted rank, padded by a few ulps so that a value on
    an edge stays inside whichever way the next pass rounds it."""
    cum = np.cumsum(hist.counts)
    bins = [int(np.searchsorted(cum, int(r) - hist.below, side="right")) for r in ranks]
    first, last = min(bins), min(max(bins), cum.size - 1)
    width = (hi - lo) / hist.counts.size
    new_lo, new_hi = lo + first * width, lo + (last + 1) * width
    pad = 8 * np.finfo(np.float64).eps * max(abs(new_hi), width)
    return max(lo, new_lo - pad), min(hi, new_hi + pad)


def median_ranks(rule: str, n: int) -> list[int]:
    """The two 0-based ranks among the n(n-1)/2 distinct pair values whose mean is the median
    under ``rule`` (np.median semantics); -1 stands for one of the kornblith rule's exact zeros."""
    if rule == "kornblith":  # sorted: n diagonal zeros, then every distinct pair twice
        total = n * n
        return [-1 if k < n else (k - n) // 2 for k in ((total - 1) // 2, total // 2)]
    if rule == "offdiag":
        total = n * (n - 1) // 2
        return [(total - 1) // 2, total // 2]
    raise ValueError(f"bandwidth must be one of {RULES}; got {rule!r}.")


def median_sq_distance(
    a: np.ndarray, rule: str, *, tile: int | None = None, n_pairs: int = 100_000, seed: int = 0,
    reduce_pairs: PairReducer | None = None, upper: float | None = None, ops=None,
) -> float:
    """The median squared distance between the rows of ``a`` under ``rule`` (see module doc).

    ``reduce_pairs`` (default: tiles of ``a`` in memory) and ``upper`` (a bound on every squared
    distance; default from the row norms of ``a``) let other drivers run the same selection.
    ``ops`` is the resolved CPU backend (default: "auto"); its fused pass runs the selection
    passes when :func:`pyckafast._core.dispatch.fused_median_passes` says so.
    """
    if rule == "sampled":
        return _sampled_median(a, n_pairs, seed)
    if upper is None:
        upper = 4.0 * _max_sq_norm(a)  # |x_i - x_j| <= |x_i - m| + |x_j - m|
    if reduce_pairs is None:
        fused = _fused_passes(a, tile, ops or dispatch.resolve("auto", "rbf_tile", "cpu"))
        if fused is not None:
            return exact_median(rule, a.shape[0], upper, fused[0], a.dtype, fused[1])
        reduce_pairs = local_pair_reducer(a, tile)
    return exact_median(rule, a.shape[0], upper, reduce_pairs, a.dtype)


def _fused_passes(a: np.ndarray, tile: int | None, ops):
    """(reduce_pairs, pair_fns) that run each selection pass over all pairs of ``a`` as one call
    of backend ``ops``, or None if it has no such pass or the rows are too wide for it."""
    if not dispatch.fused_median_passes(ops, a.shape[1]):
        return None
    dtype = np.promote_types(a.dtype, np.float32)
    rows = a.astype(dtype, copy=False)
    shift = centring_shift(rows, "data", dtype)
    block = int(tile or ops.fused_block(a.shape[1], dtype.itemsize))
    run = ops.d2_pass_kernel(dtype)

    def histogram(_a, _b, _diagonal, lo: float, hi: float) -> Histogram:
        below, counts = run(rows, shift, lo, hi, _BINS, block)
        return Histogram(int(below), counts)

    def candidates(_a, _b, _diagonal, lo: float, hi: float) -> Candidates:
        below, values = run(rows, shift, lo, hi, 0, block)
        return Candidates(int(below), values)

    def whole_set(fn):  # one "block pair": the set against itself, pairs i < j
        return fn(None, None, True)

    return whole_set, (histogram, candidates)


def exact_median(
    rule: str, n: int, upper: float, reduce_pairs: PairReducer, dtype: np.dtype,
    pair_fns: tuple[Callable, Callable] = (pair_histogram, pair_candidates),
) -> float:
    """The exact ``rule`` median of the pair squared distances that ``reduce_pairs`` visits."""
    ranks = median_ranks(rule, n)
    real = sorted({r for r in ranks if r >= 0})
    found = select_pair_ranks(real, n=n, upper=upper, reduce_pairs=reduce_pairs, pair_fns=pair_fns)
    values = dict(zip(real, found))
    median = 0.5 * sum(values.get(r, 0.0) for r in ranks)
    # Identical points come out of |a|^2 + |b|^2 - 2a.b as rounding noise, not 0: a median at
    # that level means "at least half of the pairs are equal", i.e. 0.
    noise = 8 * np.finfo(np.promote_types(dtype, np.float32)).eps * upper
    return 0.0 if median <= noise else median


def _max_sq_norm(a: np.ndarray) -> float:
    mean = a.mean(axis=0, dtype=np.float64)
    best = 0.0
    for lo in range(0, a.shape[0], 8192):
        c = a[lo:lo + 8192].astype(np.float64) - mean
        best = max(best, float(np.einsum("ij,ij->i", c, c).max()))
    return best


def sampled_pairs(n: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_pairs`` random pairs (i, j), i != j, of the "sampled" rule (same on every device)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_pairs)
    j = rng.integers(0, n - 1, size=n_pairs)
    j += j >= i  # uniform over j != i
    return i, j


def _sampled_median(a: np.ndarray, n_pairs: int, seed: int) -> float:
    return median_over_pairs(a, *sampled_pairs(a.shape[0], n_pairs, seed))


def median_over_pairs(a, i: np.ndarray, j: np.ndarray, xp=np) -> float:
    """Median of |a_i - a_j|^2 over the row-index pairs (i, j), in float64, 8192 pairs at a
    time; ``a`` is an array of module ``xp`` (NumPy, or CuPy for data on a GPU)."""
    d2 = xp.empty(len(i))
    for lo in range(0, len(i), 8192):
        rows_i, rows_j = xp.asarray(i[lo:lo + 8192]), xp.asarray(j[lo:lo + 8192])
        diff = a[rows_i].astype(np.float64) - a[rows_j]
        d2[lo:lo + 8192] = (diff * diff).sum(axis=1)
    return float(xp.median(d2))


def gamma_from_sigma(sigma: float) -> float:
    """gamma = 1 / (2 sigma^2) of K = exp(-gamma d^2)."""
    return 1.0 / (2.0 * sigma * sigma)


def gamma_from_median(median: float, threshold: float, name: str, rule: str) -> float:
    """gamma = 1 / (2 threshold^2 median); raises if the median is 0 (sigma would be 0)."""
    if not median > 0 or not math.isfinite(median):
        raise ValueError(
            f"the {rule!r} median squared distance between the samples of {name} is {median} "
            f"(at least half of the pairs are identical points), so the bandwidth sigma would "
            f"be 0; pass sigma= explicitly or use another bandwidth rule."
        )
    return 1.0 / (2.0 * threshold * threshold * median)
