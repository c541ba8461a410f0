"""RBF bandwidths of data on a GPU: the exact selection of :mod:`pyckafast._core.bandwidth`, with
every pass over pairs of row blocks computed on the device (a distance tile is a GEMM; only
histogram counts and the few final candidates travel to the host).

The functions take the array module ``xp`` (``cupy`` on a GPU) or a centred side holding it; the
CPU tests run the very same code with ``xp=numpy`` against the CPU implementation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core import bandwidth as bw
from .._core.pairs import CentredSide, centre

__all__ = ["median_sq_distance", "gamma", "side_gamma", "exact_median"]


def _default_tile(dtype: np.dtype) -> int:
    # Larger than the CPU's tiles: a device GEMM needs more rows to run at full rate.
    return 4096 if dtype == np.float32 else 2048


def gamma(a, name: str, side: int, options: Any, tile: int | None, xp) -> float:
    """gamma = 1/(2 sigma^2) for one device array under ``options`` (an ``rbf.RBFOptions``)."""
    if options.sigma is not None:
        return bw.gamma_from_sigma(options.sigma[side])
    return side_gamma(options, _centred(a, name, xp), side, tile)


def side_gamma(options: Any, side: CentredSide, index: int, tile: int | None) -> float:
    """gamma of one centred device side under ``options`` (exact medians on the device)."""
    return bw.side_gamma(options, side, index, lambda s, rule: exact_median(s, rule, tile))


def median_sq_distance(a, rule: str, *, xp, tile: int | None = None, n_pairs: int = 100_000,
                       seed: int = 0) -> float:
    """The ``rule`` median squared distance between the rows of the device array ``a``."""
    return bw.median_of_side(_centred(a, "data", xp), rule, n_pairs=n_pairs, seed=seed,
                             exact=lambda s, r: exact_median(s, r, tile))


def exact_median(side: CentredSide, rule: str, tile: int | None = None) -> float:
    """The exact ``rule`` median of a centred device side, one device pass per selection step
    over the scheduler's block pairs (GEMM tiles, histograms with ``side.xp``)."""
    tile = int(tile or _default_tile(side.dtype))
    sample = bw.pair_sample(side) if bw.worth_sampling(side.n) else None
    return bw.exact_median(rule, side.n, 4.0 * side.max_sq_norm(), bw.side_reducer(side, tile),
                           side.dtype, bw.tile_pair_fns(side.xp), sample)


def _centred(a, name: str, xp) -> CentredSide:
    return centre(a, name, np.promote_types(a.dtype, np.float32), xp)
