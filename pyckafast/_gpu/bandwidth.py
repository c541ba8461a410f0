"""RBF bandwidths of data on a GPU: the exact selection of :mod:`pyckafast._core.bandwidth`, with
every pass over pairs of row blocks computed on the device (a distance tile is a GEMM; only
histogram counts and the few final candidates travel to the host).

The functions take the array module ``xp`` (``cupy`` on a GPU) or a centred side holding it; the
CPU tests run the very same code with ``xp=numpy`` against the CPU implementation.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._core import bandwidth as bw
from .._core.pairs import CentredSide, block_pairs, centre

__all__ = ["median_sq_distance", "gamma", "side_gamma", "side_gammas", "exact_median", "exact_medians"]


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
    """The exact ``rule`` median of a centred side, one pass per selection step over the
    scheduler's block pairs: on a GPU, launches of the fused distance-histogram kernel
    (:func:`exact_medians`; PYCKAFAST_GPU_MEDIAN=tiles selects the CuPy tiles below instead);
    with ``xp=numpy`` (CI) or "tiles", GEMM tiles binned with ``side.xp``."""
    if side.xp is not np and os.environ.get("PYCKAFAST_GPU_MEDIAN", "kernel") != "tiles":
        from .engine import CudaEngine

        return exact_medians(CudaEngine(), [side], rule, tile)[0]
    tile = int(tile or _default_tile(side.dtype))
    sample = bw.pair_sample(side) if bw.worth_sampling(side.n) else None
    return bw.exact_median(rule, side.n, 4.0 * side.max_sq_norm(), bw.side_reducer(side, tile),
                           side.dtype, bw.tile_pair_fns(side.xp), sample)


def _centred(a, name: str, xp) -> CentredSide:
    return centre(a, name, np.promote_types(a.dtype, np.float32), xp)


# ---- exact medians with the fused distance-histogram kernel (both sides in one launch) ----------
def side_gammas(engine, options: Any, side_x: CentredSide, side_y: CentredSide,
                tile: int | None = None) -> tuple[float, float]:
    """(gamma_x, gamma_y) under ``options``; the sides that need an exact median get it from
    :func:`exact_medians` (their passes share each kernel launch), the others as
    :func:`side_gamma` gives them."""
    sides = (side_x, side_y)
    exact = [k for k, s in enumerate(sides)
             if options.sigma is None and options.bandwidth != "sampled" and s.max_sq_norm() > 0]
    medians = dict(zip(exact, exact_medians(engine, [sides[k] for k in exact],
                                            options.bandwidth, tile))) if exact else {}

    def gamma_of(k: int) -> float:
        if k not in medians:
            return side_gamma(options, sides[k], k, tile)
        return bw.gamma_from_median(medians[k], options.threshold, sides[k].name,
                                    options.bandwidth)

    return gamma_of(0), gamma_of(1)


def exact_medians(engine, sides: list[CentredSide], rule: str, tile: int | None = None) -> list[float]:
    """The exact ``rule`` medians of one or two centred device sides of the same rows: every
    selection pass of both runs as one launch of the engine's ``d2_hist`` per block pair (the
    kernel csrc/cuda/d2_hist_cuda.cu), counts and candidates collected on the device."""
    n = sides[0].n
    if any(s.n != n for s in sides):
        raise ValueError(f"the sides must have the same rows; got {[s.n for s in sides]}.")
    dtype = np.result_type(*(s.dtype for s in sides))
    rows = int(tile or _device_tile(engine, n, dtype))
    passes = _DevicePasses(engine, sides, dtype, rows)
    steps = [bw.median_selection(rule, n, 4.0 * s.max_sq_norm(), s.dtype,
                                 bw.pair_sample(s) if bw.worth_sampling(n) else None)
             for s in sides]
    return bw.run_selections(steps, passes)


def _device_tile(engine, n: int, dtype: np.dtype) -> int:
    """Rows per block: whole tiles of the kernel, up to its grid limit."""
    unit = engine.rbf_rows_per_tile(dtype)
    return min(n, 65535 * unit, 128 * unit)  # 16384 float rows: few launches per pass


class _DevicePasses:
    """Answers the selections' pass requests on the device: the centred blocks and their norms
    are made once; a pass launches the kernel over every block pair a <= b for the requesting
    sides together and brings back only the counts (or the candidates)."""

    def __init__(self, engine, sides: list[CentredSide], dtype: np.dtype, rows: int):
        from .._core.pairs import block_bounds, sq_norms

        self.engine, self.xp, self.n = engine, engine.xp, sides[0].n
        self.bounds = block_bounds(self.n, rows)
        self.blocks = []  # per side: [(centred rows, norms)] per block
        for s in sides:
            blocks = []
            for b in self.bounds:
                rows_b = s.block(b, dtype)
                blocks.append((rows_b, sq_norms(self.xp, rows_b).astype(dtype, copy=False)))
            self.blocks.append(blocks)

    def __call__(self, requests: list) -> list:
        xp = self.xp
        active = [(k, r) for k, r in enumerate(requests) if r is not None]
        total = self.n * (self.n - 1) // 2
        outs = []
        for k, (kind, lo, hi) in active:
            bins = bw._BINS if kind == "histogram" else 0
            cap = 0 if bins else min(total, bw._DIRECT_CANDIDATES * bw._MAX_CANDIDATES)
            outs.append({"side": k, "lo": float(lo), "hi": float(hi), "bins": bins,
                         "below": xp.zeros(1, np.uint64), "counts": xp.zeros(max(bins, 1), np.uint64),
                         "values": xp.empty(max(cap, 1)), "capacity": cap,
                         "nvalues": xp.zeros(1, np.uint64)})
        index = {bounds: k for k, bounds in enumerate(self.bounds)}
        for a, b, diagonal in block_pairs(self.bounds):  # the upper triangle, as every pass
            launch = [{**o, "a": self.blocks[o["side"]][index[a]],
                       "b": self.blocks[o["side"]][index[b]]} for o in outs]
            self.engine.d2_hist(launch, same_block=diagonal)
        answers: list = [None] * len(requests)
        for o in outs:
            below = int(_host(o["below"])[0])
            if o["bins"]:
                answers[o["side"]] = bw.Histogram(below, _host(o["counts"]).astype(np.int64))
                continue
            count = int(_host(o["nvalues"])[0])
            answers[o["side"]] = (None if count > o["capacity"] else  # overflow: a missed guess
                                  bw.Candidates(below, _host(o["values"][:count])))
        return answers


def _host(a) -> np.ndarray:
    return np.asarray(a.get() if hasattr(a, "get") else a)
