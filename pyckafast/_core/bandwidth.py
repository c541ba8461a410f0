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
binned at once); otherwise BLAS tiles binned by the backend's tile histogram (Numba, or NumPy
for the numpy backend). The block pairs are those of :mod:`pyckafast._core.pairs`, over the rows
of a side centred once per call (:class:`~pyckafast._core.pairs.CentredSide`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dispatch
from .pairs import (CentredSide, block_bounds, centre, compute_dtype, default_tile, reduce_pairs,
                    sq_norms)

__all__ = ["RULES", "Histogram", "Candidates", "tile_histogram", "tile_pair_fns",
           "select_pair_ranks", "rank_selection", "median_selection", "run_selection",
           "run_selections", "reducer_passes", "pair_sample", "sample_size", "worth_sampling", "median_ranks", "median_sq_distance", "exact_median",
           "exact_median_in_memory", "side_reducer", "side_gamma", "median_of_side",
           "sampled_pairs", "median_over_pairs", "gamma_from_sigma", "gamma_from_median"]

RULES = ("kornblith", "offdiag", "sampled")
_BINS = 1 << 14
_MAX_CANDIDATES = 1 << 21
_MAX_PASSES = 8
_SAMPLE_PAIRS = 1 << 12  # random pairs whose distances guess the first window
_SAMPLE_PAIRS_LARGE = 1 << 16  # ... when there are more than 2^31 pairs
_MAX_SAMPLE_PAIRS = 1 << 18  # the most pairs sampled to make the selection one candidate pass
_DIRECT_SHARE = 0.5  # a guessed window expected to hold at most this share of the candidate
                     # budget goes straight to the candidate pass
_SAMPLE_Z = 6.0  # binomial standard deviations of the guess either side of a rank
_DIRECT_CANDIDATES = 4  # up to this many times _MAX_CANDIDATES pairs, a guess goes straight to
                        # the candidate pass (its values stay few even if the guess is poor)

# reduce_pairs(fn) -> sum of fn(a_block, b_block, diagonal) over the upper triangle of block
# pairs of the centred data (diagonal=True: b_block is a_block, pairs i < j only).
PairReducer = Callable[[Callable[[Any, Any, bool], Any]], Any]
# (histogram, candidates) of one block pair: fn(a_block, b_block, diagonal, lo, hi).
PairFns = tuple[Callable[..., "Histogram"], Callable[..., "Candidates"]]
# A backend's tile histogram: (g, na, nb, diagonal, lo, hi, bins) -> (count below lo, counts).
TileHistogram = Callable[..., tuple[int, Any]]


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


# ---- one block pair's squared distances ----------------------------------------------------------
def _tile_dots(xp: Any, a: Any, b: Any, diagonal: bool) -> tuple[Any, Any, Any]:
    """Dot products (a GEMM in the rows' dtype) and squared norms of a block pair."""
    g = a @ a.T if diagonal else a @ b.T
    na = sq_norms(xp, a)
    return g, na, na if diagonal else sq_norms(xp, b)


def _tile_sq_distances(xp: Any, g: Any, na: Any, nb: Any, diagonal: bool) -> Any:
    """max(0, |a_i|^2 + |b_j|^2 - 2 a_i.b_j) in float64, flat (pairs i < j only if diagonal)."""
    na, nb = na.astype(np.float64), nb.astype(np.float64)
    d2 = xp.maximum(na[:, None] + nb[None, :] - 2.0 * g.astype(np.float64), 0.0)
    return d2[xp.triu_indices(d2.shape[0], 1)] if diagonal else d2.ravel()


def tile_histogram(xp: Any, g: Any, na: Any, nb: Any, diagonal: bool, lo: float, hi: float,
                   bins: int) -> tuple[int, Any]:
    """The array-module twin of the compiled tile histograms: (count below ``lo``, counts of
    ``bins`` equal bins over [lo, hi], bin floor((v - lo) * bins / (hi - lo)), the last bin
    closed); values above ``hi`` are not counted. NumPy's is the numpy backend's; CuPy's the
    GPU's."""
    d2 = _tile_sq_distances(xp, g, na, nb, diagonal)
    inside = d2[(d2 >= lo) & (d2 <= hi)]
    below = int(xp.count_nonzero(d2 < lo))
    if inside.size == 0:  # some array modules' bincount cannot take an empty input
        return below, xp.zeros(bins, np.int64)
    scale = bins / (hi - lo) if hi > lo else 0.0
    index = xp.minimum(((inside - lo) * scale).astype(np.int64), bins - 1)
    return below, xp.bincount(index, minlength=bins)


def tile_pair_fns(xp: Any, histogram: TileHistogram | None = None) -> PairFns:
    """(histogram, candidates) over block pairs of centred rows of module ``xp``: dot-product
    tiles, binned by ``histogram`` (a backend's tile histogram; default :func:`tile_histogram`)."""
    def pair_histogram(a, b, diagonal: bool, lo: float, hi: float) -> Histogram:
        dots = _tile_dots(xp, a, b, diagonal)
        if histogram is None:
            below, counts = tile_histogram(xp, *dots, diagonal, lo, hi, _BINS)
        else:
            below, counts = histogram(*dots, diagonal, lo, hi, _BINS)
        return Histogram(int(below), _host(counts).astype(np.int64))

    def pair_candidates(a, b, diagonal: bool, lo: float, hi: float) -> Candidates:
        d2 = _tile_sq_distances(xp, *_tile_dots(xp, a, b, diagonal), diagonal)
        return Candidates(int(xp.count_nonzero(d2 < lo)), _host(d2[(d2 >= lo) & (d2 <= hi)]))

    return pair_histogram, pair_candidates


def _host(a: Any) -> np.ndarray:
    return np.asarray(a.get() if hasattr(a, "get") else a)


def side_reducer(side: CentredSide, tile: int) -> PairReducer:
    """A ``reduce_pairs`` over the upper triangle of ``tile``-row blocks of a centred side."""
    bounds = block_bounds(side.n, tile)
    return lambda body: reduce_pairs(body, bounds, load_a=side.block)


# A selection pass request: (kind, lo, hi), kind "histogram" or "candidates"; the answer is the
# pass's Histogram or Candidates over every pair (None: candidates that overflowed a device buffer).
PassRequest = tuple[str, float, float]


def select_pair_ranks(
    ranks: Sequence[int], *, n: int, upper: float, reduce_pairs: PairReducer, pair_fns: PairFns,
    sample: np.ndarray | None = None,
) -> list[float]:
    """The values of the given 0-based ranks among the n(n-1)/2 pair squared distances.

    ``upper`` bounds every squared distance (e.g. (2 max_i |x_i|)^2 of the centred rows).
    ``pair_fns`` are the per-block-pair histogram and candidate functions (:func:`tile_pair_fns`
    of the backend, or one pass over the whole set). ``sample``: sorted squared distances of
    random pairs (:func:`pair_sample`), a guess of where the ranks lie that saves passes; the
    passes check it (the counts below and inside the window must hold the ranks) and start
    again from the full range when it missed, so the result never depends on it.
    """
    return run_selection(rank_selection(ranks, n=n, upper=upper, sample=sample),
                         reducer_passes(reduce_pairs, pair_fns))


def reducer_passes(reduce_pairs: PairReducer, pair_fns: PairFns) -> Callable[[PassRequest], Any]:
    """One selection pass per request, as a sum over ``reduce_pairs``'s block pairs."""
    histogram, candidates = pair_fns

    def one_pass(request: PassRequest):
        kind, lo, hi = request
        fn = histogram if kind == "histogram" else candidates
        return reduce_pairs(lambda a, b, d: fn(a, b, d, lo, hi))

    return one_pass


def run_selection(steps: Generator[PassRequest, Any, Any], one_pass: Callable[[PassRequest], Any]):
    """Drive a selection generator (:func:`rank_selection`, :func:`median_selection`) with
    ``one_pass(request)``; returns what the generator returns."""
    answer = None
    try:
        while True:
            answer = one_pass(steps.send(answer))
    except StopIteration as stop:
        return stop.value


def run_selections(steps: Sequence[Generator[PassRequest, Any, Any]],
                   passes: Callable[[list[PassRequest | None]], list[Any]]) -> list[Any]:
    """Drive several selections in lockstep: every round, ``passes`` gets each one's request
    (None for the finished ones) and answers them all in one pass over the pairs (e.g. x and y
    in one kernel launch); returns what each generator returned."""
    done: list[Any] = [None] * len(steps)
    finished = [False] * len(steps)
    requests: list[PassRequest | None] = [None] * len(steps)
    answers: list[Any] = [None] * len(steps)
    while True:
        for k, gen in enumerate(steps):
            if finished[k]:
                requests[k] = None
                continue
            try:
                requests[k] = gen.send(answers[k])
            except StopIteration as stop:
                finished[k], requests[k], done[k] = True, None, stop.value
        if all(finished):
            return done
        answers = passes(list(requests))


def rank_selection(ranks: Sequence[int], *, n: int, upper: float,
                   sample: np.ndarray | None = None) -> Generator[PassRequest, Any, list[float]]:
    """The selection of :func:`select_pair_ranks` as a generator of pass requests."""
    total = n * (n - 1) // 2
    # Margin: the GEMM-based distances of float32 tiles carry relative errors near 1e-6.
    full = (0.0, float(upper) * (1 + 1e-3) + 1e-300)
    guess = _guess_window(sample, ranks, total, full)
    if guess is not None and _expected_inside(sample, *guess, total) <= _DIRECT_SHARE * _DIRECT_CANDIDATES * _MAX_CANDIDATES:
        cand = yield ("candidates", *guess)
        found = _rank_values(cand, ranks)
        if found is not None:  # one pass
            return found
        guess = None
    lo, hi = guess or full
    for _ in range(_MAX_PASSES):
        hist = yield ("histogram", lo, hi)
        if not hist.below <= min(ranks) < max(ranks) + 1 <= hist.below + int(hist.counts.sum()):
            lo, hi = full  # a guessed window that missed: start over from every pair
            continue
        narrow_lo, narrow_hi, narrow_inside = _narrow(hist, ranks, lo, hi)  # free: counts known
        if narrow_inside <= _MAX_CANDIDATES:
            lo, hi = narrow_lo, narrow_hi
            break
        if hi - lo <= 64 * np.finfo(np.float64).eps * abs(hi):
            return [0.5 * (lo + hi)] * len(ranks)  # many ties: every wanted rank is this value
        lo, hi = narrow_lo, narrow_hi
    found = _rank_values((yield ("candidates", lo, hi)), ranks)
    if found is None:
        raise RuntimeError(
            "exact median selection lost its rank: the tiles' distances differ between "
            "passes (non-deterministic GEMMs?); use bandwidth='sampled' or an explicit sigma."
        )
    return found


def _rank_values(cand: Candidates | None, ranks: Sequence[int]) -> list[float] | None:
    """The ranks' values among candidates, or None when the window did not hold them all (or
    the candidates overflowed)."""
    if cand is None:
        return None
    ks = [int(r) - cand.below for r in ranks]
    if not all(0 <= k < cand.values.size for k in ks):
        return None
    values = np.partition(cand.values, ks)  # selection, not a sort: O(candidates)
    return [float(values[k]) for k in ks]


def _guess_window(sample: np.ndarray | None, ranks: Sequence[int], total: int,
                  full: tuple[float, float]) -> tuple[float, float] | None:
    """A window [lo, hi] holding the ranks with near certainty, from a sorted random sample of
    pair values: the sample quantiles _SAMPLE_Z binomial standard deviations either side."""
    if sample is None or sample.size < 64 or total <= 0:
        return None
    m = sample.size
    lows, highs = [], []
    for r in ranks:
        q = (int(r) + 0.5) / total
        spread = _SAMPLE_Z * math.sqrt(m * q * (1 - q)) + 2
        k_lo, k_hi = math.floor(m * q - spread), math.ceil(m * q + spread)
        lows.append(full[0] if k_lo < 0 else float(sample[k_lo]))
        highs.append(full[1] if k_hi >= m else float(sample[k_hi]))
    lo, hi = min(lows), max(highs)
    if not hi > lo:
        return None  # ties at the ranks: the histogram passes handle them
    pad = 1e-3 * (hi - lo) + 8 * np.finfo(np.float32).eps * hi  # float32 tiles' rounding
    return max(full[0], lo - pad), min(full[1], hi + pad)


def pair_sample(side: CentredSide, size: int | None = None, seed: int = 0) -> np.ndarray:
    """Sorted squared distances of ``size`` (default :func:`sample_size`) seeded random pairs of
    a centred side (the guess of :func:`select_pair_ranks`; computed in the side's dtype: a
    guess needs no float64)."""
    n = side.n
    size = size or sample_size(n) or _SAMPLE_PAIRS
    i, j = sampled_pairs(n, size, seed)
    rows = side.rows
    index = (lambda k: k) if isinstance(rows, np.ndarray) else side.xp.asarray
    out = []
    for lo in range(0, size, 8192):
        diff = rows[index(i[lo:lo + 8192])] - rows[index(j[lo:lo + 8192])]
        out.append(_host(side.xp.einsum("ij,ij->i", diff, diff)).astype(np.float64))
    return np.sort(np.concatenate(out))


def _expected_inside(sample: np.ndarray, lo: float, hi: float, total: int) -> float:
    """The pairs a window should hold, from the sample's share inside it."""
    share = (np.searchsorted(sample, hi, "right") - np.searchsorted(sample, lo, "left")) / sample.size
    return float(share * total)


def sample_size(n: int) -> int | None:
    """Random pairs whose distances guess the first window, or None where a guess saves no pass.

    The guessed window holds about total * Z / sqrt(size) pairs (Z binomial deviations either
    side of the median's rank). With few enough, one candidate pass selects the ranks at once:
    the size is chosen for that when at most _MAX_SAMPLE_PAIRS do it. Beyond, a guess pays only
    when a full-range histogram would need a second narrowing (very many pairs); in between the
    full-range pass narrows to the candidates at once and, on the CPU, a narrow window's
    histogram pass costs more than a full one (its in-window test is a branch per value)."""
    total = n * (n - 1) // 2
    if total < 8 * _SAMPLE_PAIRS:
        return None
    budget = _DIRECT_SHARE * _DIRECT_CANDIDATES * _MAX_CANDIDATES
    if total <= budget:
        return _SAMPLE_PAIRS
    need = math.ceil((1.5 * _SAMPLE_Z * total / budget) ** 2)  # 1.5: the window's padding
    if need <= _MAX_SAMPLE_PAIRS:
        return max(_SAMPLE_PAIRS, need)
    return _SAMPLE_PAIRS_LARGE if total >= 1 << 31 else None


def worth_sampling(n: int) -> bool:
    """Whether :func:`sample_size` finds a guess worth its sample."""
    return sample_size(n) is not None


def _narrow(hist: Histogram, ranks: Sequence[int], lo: float,
            hi: float) -> tuple[float, float, int]:
    """The window of the bins holding every wanted rank, padded by a few ulps so that a value on
    an edge stays inside whichever way the next pass rounds it, and the count in those bins."""
    cum = np.cumsum(hist.counts)
    bins = [int(np.searchsorted(cum, int(r) - hist.below, side="right")) for r in ranks]
    first, last = min(bins), min(max(bins), cum.size - 1)
    inside = int(cum[last] - (cum[first - 1] if first > 0 else 0))
    width = (hi - lo) / hist.counts.size
    new_lo, new_hi = lo + first * width, lo + (last + 1) * width
    pad = 8 * np.finfo(np.float64).eps * max(abs(new_hi), width)
    return max(lo, new_lo - pad), min(hi, new_hi + pad), inside


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


def median_sq_distance(a: np.ndarray | CentredSide, rule: str, *, tile: int | None = None,
                       n_pairs: int = 100_000, seed: int = 0, ops: Any = None) -> float:
    """The median squared distance between the rows of ``a`` under ``rule`` (see module doc), in
    memory on the CPU; ``a`` is a host array (centred here, named "data" in messages) or an
    already prepared :class:`~pyckafast._core.pairs.CentredSide`. ``ops`` is the resolved CPU
    backend (default: "auto")."""
    ops = ops or dispatch.resolve("auto", "rbf_tile", "cpu")
    side = a if isinstance(a, CentredSide) else centre(a, "data", compute_dtype(ops, a.dtype))
    return median_of_side(side, rule, n_pairs=n_pairs, seed=seed,
                          exact=lambda s, r: exact_median_in_memory(s, r, ops=ops, tile=tile))


def median_of_side(side: CentredSide, rule: str, *, n_pairs: int, seed: int,
                   exact: Callable[[CentredSide, str], float]) -> float:
    """The ``rule`` median of a centred side: ``exact(side, rule)`` for the exact rules (the
    driver's passes), the seeded random pairs for "sampled" (the same pairs on every device)."""
    if rule == "sampled":
        return median_over_pairs(side.rows, *sampled_pairs(side.n, n_pairs, seed), xp=side.xp)
    median_ranks(rule, side.n)  # raises on an unknown rule before any pass
    return exact(side, rule)


def side_gamma(options: Any, side: CentredSide, index: int,
               exact: Callable[[CentredSide, str], float]) -> float:
    """gamma = 1/(2 sigma^2) of one input under ``options`` (an ``RBFOptions``: ``sigma`` pair or
    ``threshold``, ``bandwidth`` rule, ``n_pairs``, ``seed``); ``index`` 0 for x, 1 for y."""
    if options.sigma is not None:
        return gamma_from_sigma(options.sigma[index])
    if side.max_sq_norm() == 0.0:
        # Every sample is the same point: K is all ones whatever the bandwidth, HSIC(x, x) = 0,
        # and CKA is nan with a RuntimeWarning, as for linear CKA (no median to raise about).
        return 1.0
    median = median_of_side(side, options.bandwidth, n_pairs=options.n_pairs, seed=options.seed,
                            exact=exact)
    return gamma_from_median(median, options.threshold, side.name, options.bandwidth)


def exact_median_in_memory(side: CentredSide, rule: str, *, ops: Any,
                           tile: int | None = None) -> float:
    """The exact ``rule`` median of a host side: each selection pass is one call of backend
    ``ops`` over the whole set when :func:`~pyckafast._core.dispatch.fused_median_passes` says
    so, else a pass over ``tile``-row blocks binned by the backend's tile histogram."""
    upper = 4.0 * side.max_sq_norm()
    sample = pair_sample(side) if worth_sampling(side.n) else None
    if dispatch.fused_median_passes(ops, side.depth):
        reduce_whole, fns = _whole_set_passes(side, tile, ops)
        return exact_median(rule, side.n, upper, reduce_whole, side.dtype, fns, sample)
    reducer = side_reducer(side, int(tile or default_tile(side.dtype.itemsize)))
    return exact_median(rule, side.n, upper, reducer, side.dtype,
                        tile_pair_fns(np, ops.d2_histogram), sample)


def _whole_set_passes(side: CentredSide, tile: int | None, ops: Any) -> tuple[PairReducer, PairFns]:
    """(reduce_pairs, pair_fns) that run each selection pass over all pairs of the side as one
    call of ``ops.d2_pass_kernel`` (the set against itself is a single diagonal "block pair"; the
    kernel centres the rows by the side's shift as it packs them)."""
    rows = side.rows_as(side.dtype)
    block = int(tile or ops.fused_block(side.depth, side.dtype.itemsize))
    run = ops.d2_pass_kernel(side.dtype)

    def histogram(_a, _b, _diagonal, lo: float, hi: float) -> Histogram:
        below, counts = run(rows, side.shift, lo, hi, _BINS, block)
        return Histogram(int(below), counts)

    def candidates(_a, _b, _diagonal, lo: float, hi: float) -> Candidates:
        below, values = run(rows, side.shift, lo, hi, 0, block)
        return Candidates(int(below), values)

    def whole_set(fn):
        return fn(None, None, True)

    return whole_set, (histogram, candidates)


def exact_median(rule: str, n: int, upper: float, reduce_pairs: PairReducer, dtype: np.dtype,
                 pair_fns: PairFns, sample: np.ndarray | None = None) -> float:
    """The exact ``rule`` median of the pair squared distances that ``reduce_pairs`` visits
    (``sample``: see :func:`select_pair_ranks`)."""
    return run_selection(median_selection(rule, n, upper, dtype, sample),
                         reducer_passes(reduce_pairs, pair_fns))


def median_selection(rule: str, n: int, upper: float, dtype: np.dtype,
                     sample: np.ndarray | None = None) -> Generator[PassRequest, Any, float]:
    """:func:`exact_median` as a generator of pass requests (see :func:`run_selections`)."""
    ranks = median_ranks(rule, n)
    real = sorted({r for r in ranks if r >= 0})
    found = yield from rank_selection(real, n=n, upper=upper, sample=sample)
    values = dict(zip(real, found))
    median = 0.5 * sum(values.get(r, 0.0) for r in ranks)
    # Identical points come out of |a|^2 + |b|^2 - 2a.b as rounding noise, not 0: a median at
    # that level means "at least half of the pairs are equal", i.e. 0.
    noise = 8 * np.finfo(np.promote_types(dtype, np.float32)).eps * upper
    return 0.0 if median <= noise else median


def sampled_pairs(n: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_pairs`` random pairs (i, j), i != j, of the "sampled" rule (same on every device)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_pairs)
    j = rng.integers(0, n - 1, size=n_pairs)
    j += j >= i  # uniform over j != i
    return i, j


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
