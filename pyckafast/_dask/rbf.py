"""Dask helpers: row-aligned chunks, RBF chunk-pair tasks and exact medians over chunk pairs.

Both O(n^2) passes run on the block-pair scheduler of :mod:`pyckafast._core.pairs`, over row
chunks: each input is centred once by one global shift (its column sums computed first), then
one task per pair of chunks (i <= j) runs the in-memory pass over that chunk pair (the set pair
of ``pyckafast._cpu.rbf.set_pair_terms``, or the tiles of a median pass), so a task's
temporaries are tile^2, whatever the chunk size. The chunk pairs' :class:`PairTerms` are
gathered and scattered into the global row sums by the same scatter as the tiles in memory.

Bandwidths: the exact selection of :mod:`pyckafast._core.bandwidth` (histogram passes, then the few
remaining candidates ranked exactly), each pass a Dask reduction over the same chunk pairs; the
"sampled" rule draws the same pairs as in memory. So Dask bandwidths equal in-memory ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .._core import dispatch, bandwidth as bw
from .._core.pairs import (Bounds, CentredSide, PairTerms, PairTermsSum, block_bounds,
                           bounds_of_sizes, compute_dtype, default_tile, reduce_pairs,
                           shift_from_sums)
from .._core.terms import KernelTerms
from .._core.validation import check_positive_scalar, float_dtype, min_samples
from .._core.rbf_entry import TYPICAL_PAIRS, RbfKernel, pass_dtype, peak_exponent
from .._cpu.rbf import kernel_terms, set_pair_terms

__all__ = ["aligned_blocks", "rbf_kernel_terms", "layer_gamma", "exact_median", "BANDWIDTHS"]

BANDWIDTHS = bw.RULES


def aligned_blocks(dx, dy, *, min_n: int):
    """(x blocks, y blocks) as lists of delayed numpy arrays with the same row chunks."""
    import dask.array as da

    dx, dy = _as_2d(da.asarray(dx), "dx"), _as_2d(da.asarray(dy), "dy")
    for a, name in ((dx, "dx"), (dy, "dy")):
        if any(math.isnan(c) for c in a.chunks[0]):
            raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first.")
    n = dx.shape[0]
    if dy.shape[0] != n:
        raise ValueError(f"dx and dy must have the same number of samples (rows); got {n} and {dy.shape[0]}.")
    if n < min_n:
        raise ValueError(f"dx and dy need at least {min_n} samples; got {n}.")
    dx = dx.rechunk({1: -1})
    dy = dy.rechunk({0: dx.chunks[0], 1: -1})
    return list(dx.to_delayed().ravel()), list(dy.to_delayed().ravel())


def _as_2d(a, name: str):
    float_dtype(a.dtype, name)  # the same dtype rule as in memory; raises TypeError
    if a.ndim == 1:
        return a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (n_samples, n_features); got shape {a.shape}.")
    return a


def rbf_kernel_terms(dx, dy, *, sigma, threshold, bandwidth, debiased, backend, tile,
                     n_pairs, seed, names: tuple[str, str] = ("dx", "dy")) -> KernelTerms:
    """Global kernel terms (of 2^m K - c, off the diagonal) of the RBF kernels of dx and dy
    (``names``: the arguments' names in messages)."""
    import dask.array as da

    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"bandwidth must be one of {list(BANDWIDTHS)}; got {bandwidth!r}.")
    threshold = check_positive_scalar(threshold, "threshold")
    dx, dy = _as_2d(da.asarray(dx), "dx"), _as_2d(da.asarray(dy), "dy")
    dx, dy = _coarse_rows(dx), _coarse_rows(dy)
    blocks_x, blocks_y = aligned_blocks(dx, dy, min_n=min_samples(debiased)[0])
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    sizes = [int(c) for c in dx.chunks[0]]
    chunks_x, chunks_y = _centred_chunks((dx, dy), (blocks_x, blocks_y), names, sizes, ops)
    n = sum(sizes)
    if sigma is not None:
        sigma = check_positive_scalar(sigma, "sigma")
        gamma_x, gamma_y = (bw.gamma_from_sigma(math.ldexp(sigma, c.log2))
                            for c in (chunks_x, chunks_y))
        u_x, u_y = (gamma * _sampled_median(c.rows, n, sizes, TYPICAL_PAIRS, 0)
                    for gamma, c in ((gamma_x, chunks_x), (gamma_y, chunks_y)))
    else:
        gamma_x, gamma_y = (
            _gamma(blocks, chunks, name, sizes, bandwidth, threshold, tile, n_pairs, seed, ops)
            for blocks, chunks, name in ((blocks_x, chunks_x, names[0]),
                                         (blocks_y, chunks_y, names[1])))
        u_x = u_y = 1.0 / (2.0 * threshold ** 2)  # gamma * median, the typical exponent
    dtype = pass_dtype(np.result_type(chunks_x.dtype, chunks_y.dtype), u_x, u_y)
    kx, ky = RbfKernel.of(gamma_x, u_x, dtype), RbfKernel.of(gamma_y, u_y, dtype)
    return _pair_reduction(chunks_x, chunks_y, sizes, kx, ky, dtype, ops, tile)


# Up to this many row chunks are kept as they are, whatever their size (a few small tasks).
_FEW_CHUNKS = 8


def _coarse_rows(a):
    """``a`` with row chunks of one CPU tile (:func:`default_tile` rows, or all rows) when it has
    more than :data:`_FEW_CHUNKS` chunks of fewer rows on average: every O(n^2) pass runs one
    task per chunk pair, so many tiny chunks cost (n / chunk)^2 / 2 tasks, each too small to
    amortise its overhead (the chunk pairs are then at most (n / tile + 1)^2 / 2)."""
    rows = default_tile(np.dtype(a.dtype).itemsize if a.dtype.kind == "f" else 8)
    n, chunks = a.shape[0], a.chunks[0]
    if any(math.isnan(c) for c in chunks) or len(chunks) <= max(_FEW_CHUNKS, math.ceil(n / rows)):
        return a
    return a.rechunk({0: min(n, rows)})


def _check_finite(a, total: np.ndarray, name: str) -> None:
    """Raise naming ``name`` and the first global row holding a NaN or Inf, if the column sums
    ``total`` of ``a`` are not finite (one more Dask pass, on the error path only)."""
    import dask
    import dask.array as da

    if np.all(np.isfinite(total)):
        return
    bad = ~da.isfinite(a).all(axis=1)
    anywhere, first = dask.compute(bad.any(), bad.argmax())
    where = (f"found NaN or Inf in row {int(first)}" if anywhere else
             "values so large that their sum overflows float64")
    raise ValueError(f"{name} must contain only finite values; {where}.")


def _centred_chunks(arrays, blocks, names, sizes, ops: ModuleType) -> list[_Chunks]:
    """Per input, its chunks as delayed :class:`CentredSide`s sharing the input's one shift
    (column sums of both inputs in one Dask computation, checked finite naming the input), the
    rows of data of extreme magnitude multiplied by 2^k (``_Chunks.log2``; exact)."""
    import dask

    sums = dask.compute(*[a.sum(axis=0, dtype=np.float64) for a in arrays])
    for a, total, name in zip(arrays, sums, names):
        _check_finite(a, total, name)
    shifts = [shift_from_sums(total, sum(sizes), name, compute_dtype(ops, float_dtype(a.dtype, name)))
              for a, total, name in zip(arrays, sums, names)]
    peaks = dask.compute(*[abs(a.astype(np.float64) - s.astype(np.float64)).max()
                           for a, s in zip(arrays, shifts)])
    out = []
    for chunks, name, shift, peak in zip(blocks, names, shifts, peaks):
        k = peak_exponent(float(peak), shift.dtype)
        if k:
            factor = shift.dtype.type(math.ldexp(1.0, k))
            chunks = [_delayed(np.multiply)(c, factor) for c in chunks]
            shift = shift * factor
        out.append(_Chunks.of(chunks, shift, shift.dtype, name, k))
    return out


@dataclass(frozen=True)
class _Chunks:
    """The row chunks of one input as delayed :class:`CentredSide`s (one shift for all)."""

    sides: list
    dtype: np.dtype
    log2: int = 0  # the rows were multiplied by 2^log2 (data of extreme magnitude)
    rows: list | None = None  # the (scaled) row chunks the sides hold

    @classmethod
    def of(cls, chunks: list, shift: np.ndarray, dtype: np.dtype, name: str,
           log2: int = 0) -> _Chunks:
        side = _delayed(CentredSide)
        return cls([side(chunk, shift, np.dtype(dtype), name) for chunk in chunks],
                   np.dtype(dtype), log2, list(chunks))


def _delayed(fn):
    import dask

    return dask.delayed(fn, pure=True)


def _gather(parts: list) -> list:
    """Compute the delayed parts of a chunk-pair pass together (one graph, in parallel)."""
    import dask

    return list(dask.compute(parts)[0])


def _by_bounds(bounds: list[Bounds], items: list):
    """The ``load`` of :func:`reduce_pairs` for chunks: chunk bounds -> that chunk's item."""
    return dict(zip(bounds, items)).__getitem__


def _gamma(blocks, chunks: _Chunks, name, sizes, rule, threshold, tile, n_pairs, seed,
           ops) -> float:
    if rule == "sampled":
        median = _sampled_median(chunks.rows, sum(sizes), sizes, n_pairs, seed)
    else:
        median = _exact_median_of_chunks(chunks, sizes, rule, tile, ops)
    return bw.gamma_from_median(median, threshold, name, rule)


def layer_gamma(a, name: str, options, side: int, tile: int | None, backend: str) -> float:
    """One Dask layer's RBF gamma, equal to :meth:`pyckafast.rbf.RBFOptions.gamma` of its rows
    in memory (the exact selection over its chunk pairs, or the sampled rule's pairs)."""
    if options.sigma is not None:
        return bw.gamma_from_sigma(options.sigma[side])
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    a = _coarse_rows(a)
    blocks = list(a.to_delayed().ravel())
    sizes = [int(c) for c in a.chunks[0]]
    (chunks,) = _centred_chunks((a,), (blocks,), (name,), sizes, ops)
    gamma = _gamma(blocks, chunks, name, sizes, options.bandwidth, options.threshold,
                            tile, options.n_pairs, options.seed, ops)
    # the selection ran on rows times 2^log2 (data of extreme magnitude): distances 4^log2 x
    return math.ldexp(gamma, 2 * chunks.log2)


# ---- RBF pair terms ------------------------------------------------------------------------------
def _pair_reduction(chunks_x: _Chunks, chunks_y: _Chunks, sizes, kx: RbfKernel, ky: RbfKernel,
                    dtype: np.dtype, ops, tile) -> KernelTerms:
    """One task per chunk pair (the in-memory set-pair pass), scattered into global row sums."""
    bounds = bounds_of_sizes(sizes)
    n = sum(sizes)
    task = _delayed(set_pair_terms)

    def body(a, b, diagonal: bool):
        return task(a, None if diagonal else b, kernel_x=kx, kernel_y=ky, ops=ops, tile=tile,
                    dtype=dtype)

    whole: PairTerms = reduce_pairs(body, bounds,
                                    load_a=_by_bounds(bounds, list(zip(chunks_x.sides,
                                                                       chunks_y.sides))),
                                    into=PairTermsSum(n), gather=_gather)
    return kernel_terms(n, whole, kx, ky)


# ---- bandwidths ----------------------------------------------------------------------------------
def _chunk_pair_reducer(sides: list, bounds: list[Bounds], tile: int) -> bw.PairReducer:
    """A ``reduce_pairs`` for :func:`pyckafast._core.bandwidth.exact_median`: one task per chunk
    pair (i <= j), tiles inside it; the partial Histogram/Candidates add up on the client."""
    task = _delayed(_reduce_chunk_pair)

    def reduce_chunk_pairs(fn):
        return reduce_pairs(lambda a, b, diagonal: task(fn, a, None if diagonal else b, tile),
                            bounds, load_a=_by_bounds(bounds, sides), gather=_gather)

    return reduce_chunk_pairs


def _reduce_chunk_pair(fn, a: CentredSide, b: CentredSide | None, tile: int):
    """``fn`` summed over the tile pairs of one chunk pair (``b`` None: a chunk against itself)."""
    return reduce_pairs(fn, block_bounds(a.n, tile), None if b is None else block_bounds(b.n, tile),
                        load_a=a.block, load_b=None if b is None else b.block)


def _exact_median_of_chunks(chunks: _Chunks, sizes: list[int], rule: str, tile: int | None,
                            ops: ModuleType) -> float:
    import dask

    norms = dask.compute([_delayed(CentredSide.max_sq_norm)(s) for s in chunks.sides])[0]
    tile = int(tile or default_tile(chunks.dtype.itemsize))
    reducer = _chunk_pair_reducer(chunks.sides, bounds_of_sizes(sizes), tile)
    return bw.exact_median(rule, sum(sizes), 4.0 * max(norms), reducer, chunks.dtype,
                           bw.tile_pair_fns(np, ops.d2_histogram))


def exact_median(blocks: list, *, rule: str, tile: int, backend: str = "auto") -> float:
    """The exact ``rule`` ("kornblith" or "offdiag") median squared distance between the rows of
    the already centred ``blocks`` (arrays or delayed arrays): the selection of
    :mod:`pyckafast._core.bandwidth`, passes run as Dask tasks over chunk pairs, so it equals
    the in-memory value."""
    import dask

    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    sizes, (dtype, depth) = dask.compute([_delayed(len)(b) for b in blocks],
                                         _delayed(lambda b: (b.dtype, b.shape[1]))(blocks[0]))
    dtype = compute_dtype(ops, dtype)
    chunks = _Chunks.of(blocks, np.zeros(depth, dtype), dtype, "data")
    return _exact_median_of_chunks(chunks, [int(m) for m in sizes], rule, tile, ops)


def _sampled_median(blocks, n, sizes, n_pairs, seed) -> float:
    """Median of the squared distances of the ``n_pairs`` random pairs of the in-memory rule."""
    import dask

    i, j = bw.sampled_pairs(n, n_pairs, seed)
    rows = np.unique(np.concatenate([i, j]))
    starts = np.cumsum([0, *sizes])
    take = dask.delayed(lambda block, idx: block[idx])
    picked = []
    for b, block in enumerate(blocks):
        local = rows[(rows >= starts[b]) & (rows < starts[b + 1])] - starts[b]
        if local.size:
            picked.append(take(block, local))
    data = np.concatenate(dask.compute(picked)[0])
    return bw.median_over_pairs(data, np.searchsorted(rows, i), np.searchsorted(rows, j))
