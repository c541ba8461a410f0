"""RBF bandwidths of data on a GPU: the exact selection of :mod:`pyckafast._core.bandwidth`, with
every pass over pairs of row blocks computed on the device (a distance tile is a GEMM; only
histogram counts and the few final candidates travel to the host).

The functions take the array module ``xp`` (``cupy`` on a GPU); the CPU tests run the very same
code with ``xp=numpy`` against the CPU implementation.
"""

from __future__ import annotations

import numpy as np

from .._core import bandwidth as bw
from .._core.bandwidth import Candidates, Histogram

__all__ = ["median_sq_distance", "gamma"]

_BINS = 1 << 14


def gamma(a, name: str, side: int, options, tile: int | None, xp) -> float:
    """gamma = 1/(2 sigma^2) for one side under ``options`` (a :class:`kernel.RBFOptions`)."""
    if options.sigma is not None:
        return bw.gamma_from_sigma(options.sigma[side])
    median = median_sq_distance(a, options.bandwidth, xp=xp, tile=tile,
                                n_pairs=options.n_pairs, seed=options.seed)
    return bw.gamma_from_median(median, options.threshold, name, options.bandwidth)


def median_sq_distance(a, rule: str, *, xp, tile: int | None = None, n_pairs: int = 100_000,
                       seed: int = 0) -> float:
    """The ``rule`` median squared distance between the rows of the device array ``a``."""
    if rule == "sampled":
        return bw.median_over_pairs(a, *bw.sampled_pairs(a.shape[0], n_pairs, seed), xp=xp)
    dtype = np.promote_types(a.dtype, np.float32)
    shift = a.mean(axis=0, dtype=np.float64).astype(dtype)
    centred_norms = _sq_norms(xp, a - shift)
    upper = 4.0 * float(centred_norms.max())  # |x_i - x_j| <= |x_i - m| + |x_j - m|
    tile = int(tile or (4096 if dtype == np.float32 else 2048))
    reducer = bw.block_pair_reducer(a, shift, dtype, tile, xp)
    fns = (lambda a_, b_, d, lo, hi: _histogram(xp, a_, b_, d, lo, hi),
           lambda a_, b_, d, lo, hi: _candidates(xp, a_, b_, d, lo, hi))
    return bw.exact_median(rule, a.shape[0], upper, reducer, dtype, pair_fns=fns)


def _sq_norms(xp, a):
    return (a.astype(np.float64) ** 2).sum(axis=1)


def _pair_d2(xp, a, b, diagonal: bool):
    """The squared distances of a block pair as a flat float64 device array (i < j if diagonal)."""
    g = a @ a.T if diagonal else a @ b.T
    na = _sq_norms(xp, a)
    nb = na if diagonal else _sq_norms(xp, b)
    d2 = xp.maximum(na[:, None] + nb[None, :] - 2.0 * g.astype(np.float64), 0.0)
    if diagonal:
        return d2[xp.triu_indices(d2.shape[0], 1)]
    return d2.ravel()


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _histogram(xp, a, b, diagonal: bool, lo: float, hi: float) -> Histogram:
    d2 = _pair_d2(xp, a, b, diagonal)
    inside = d2[(d2 >= lo) & (d2 <= hi)]
    counts = xp.histogram(inside, bins=_BINS, range=(lo, hi))[0]
    return Histogram(int(xp.count_nonzero(d2 < lo)), _host(counts).astype(np.int64))


def _candidates(xp, a, b, diagonal: bool, lo: float, hi: float) -> Candidates:
    d2 = _pair_d2(xp, a, b, diagonal)
    return Candidates(int(xp.count_nonzero(d2 < lo)), _host(d2[(d2 >= lo) & (d2 <= hi)]))
