"""Dask helpers: row-aligned chunks, RBF chunk-pair tasks and exact medians over chunk pairs.

RBF terms: data centred by one global shift (computed first), then one task per pair of row
chunks (i <= j); inside a task the chunks are cut into tiles handed to
``pyckafast._cpu.rbf.rbf_block_pair`` (so a task's temporaries are tile^2, whatever the chunk
size). Pair sums add (off-diagonal pairs twice, by symmetry), row sums go to their rows.

Bandwidths: the exact selection of :mod:`pyckafast._core.bandwidth` (histogram passes, then the few
remaining candidates ranked exactly), each pass a Dask reduction over the same chunk pairs; the
"sampled" rule draws the same pairs as in memory. So Dask bandwidths equal in-memory ones.
"""

from __future__ import annotations

import math

import numpy as np

from .._core import dispatch, bandwidth as bw
from .._cpu.rbf import default_tile
from .._core.terms import KernelTerms
from .._core.validation import check_positive_scalar, float_dtype, min_samples

__all__ = ["aligned_blocks", "rbf_kernel_terms", "exact_median", "BANDWIDTHS"]

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


def _float_dtype(dx, dy) -> np.dtype:
    return np.promote_types(float_dtype(dx.dtype, "dx"), float_dtype(dy.dtype, "dy"))


def rbf_kernel_terms(dx, dy, *, sigma, threshold, bandwidth, debiased, backend, tile,
                     n_pairs, seed) -> KernelTerms:
    """Global kernel terms (of K - 1, L - 1) of the RBF kernels of dx and dy."""
    import dask
    import dask.array as da

    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"bandwidth must be one of {list(BANDWIDTHS)}; got {bandwidth!r}.")
    threshold = check_positive_scalar(threshold, "threshold")
    dx, dy = _as_2d(da.asarray(dx), "dx"), _as_2d(da.asarray(dy), "dy")
    blocks_x, blocks_y = aligned_blocks(dx, dy, min_n=min_samples(debiased)[0])
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    dtype = ops.gemm_dtype(_float_dtype(dx, dy))
    tile = int(tile or default_tile(dtype.itemsize))
    sizes = [int(c) for c in dx.chunks[0]]
    n = sum(sizes)
    sum_x, sum_y = dask.compute(dx.sum(axis=0, dtype=np.float64), dy.sum(axis=0, dtype=np.float64))
    for s, name in ((sum_x, "dx"), (sum_y, "dy")):
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{name} must contain only finite values; found NaN or Inf.")
    centre = dask.delayed(_centre, pure=True)
    cx = [centre(b, (sum_x / n).astype(dtype), dtype) for b in blocks_x]
    cy = [centre(b, (sum_y / n).astype(dtype), dtype) for b in blocks_y]
    if sigma is not None:
        gamma_x = gamma_y = 1.0 / (2.0 * check_positive_scalar(sigma, "sigma") ** 2)
    else:
        gamma_x = _gamma(cx, n, sizes, bandwidth, threshold, tile, n_pairs, seed, "dx")
        gamma_y = _gamma(cy, n, sizes, bandwidth, threshold, tile, n_pairs, seed, "dy")
    return _pair_reduction(cx, cy, sizes, gamma_x, gamma_y, backend, tile)


def _centre(block, shift, dtype):
    block = np.asarray(block)
    block = block[:, None] if block.ndim == 1 else block
    return np.ascontiguousarray(block.astype(dtype, copy=False) - shift)


def _gamma(blocks, n, sizes, rule, threshold, tile, n_pairs, seed, name) -> float:
    if rule == "sampled":
        median = _sampled_median(blocks, n, sizes, n_pairs, seed)
    else:
        median = exact_median(blocks, rule=rule, tile=tile)
    return bw.gamma_from_median(median, threshold, name, rule)


def _pairs(count: int):
    return [(i, j) for i in range(count) for j in range(i, count)]


# ---- RBF pair terms ------------------------------------------------------------------------------
def _pair_reduction(cx, cy, sizes, gamma_x, gamma_y, backend, tile) -> KernelTerms:
    import dask

    task = dask.delayed(_chunk_pair, pure=True)
    results = {
        (i, j): task(cx[i], cy[i], cx[j], cy[j], gamma_x, gamma_y, i == j, backend, tile)
        for i, j in _pairs(len(cx))
    }
    rows = dask.delayed(_block_rows, pure=True)
    per_block = [
        rows([results[(j, k)] for k in range(j, len(cx))], [results[(i, j)] for i in range(j)])
        for j in range(len(cx))
    ]
    total = dask.delayed(_sum_scalars, pure=True)(list(results.values()))
    per_block, sums = dask.compute(per_block, total)
    return KernelTerms(
        n=sum(sizes), s_kl=float(sums[0]), s_kk=float(sums[1]), s_ll=float(sums[2]),
        row_k=np.concatenate([r[0] for r in per_block]),
        row_l=np.concatenate([r[1] for r in per_block]),
    )


def _chunk_pair(xa, ya, xb, yb, gamma_x, gamma_y, diagonal, backend, tile):
    """(weighted sums, row sums of chunk a, row sums of chunk b) over the tiles of a chunk pair."""
    from .._cpu.rbf import rbf_block_pair

    sums = np.zeros(3)
    rows_a = [np.zeros(xa.shape[0]), np.zeros(xa.shape[0])]
    rows_b = [np.zeros(xb.shape[0]), np.zeros(xb.shape[0])]
    for (alo, ahi), (blo, bhi), same in _tile_pairs(xa.shape[0], xb.shape[0], diagonal, tile):
        p = rbf_block_pair(xa[alo:ahi], ya[alo:ahi], xb[blo:bhi], yb[blo:bhi], gamma_x=gamma_x,
                           gamma_y=gamma_y, diagonal=same, backend=backend)
        sums += (1.0 if same else 2.0) * np.array([p.s_kl, p.s_kk, p.s_ll])
        rows_a[0][alo:ahi] += p.row_k_a
        rows_a[1][alo:ahi] += p.row_l_a
        if not same:
            target = rows_a if diagonal else rows_b  # inside a diagonal chunk b's rows are a's
            target[0][blo:bhi] += p.row_k_b
            target[1][blo:bhi] += p.row_l_b
    return sums, rows_a, rows_b


def _tile_pairs(na: int, nb: int, diagonal: bool, tile: int):
    """Tile pairs of a chunk pair: ((a range), (b range), whether they are the same rows)."""
    ta = [(lo, min(lo + tile, na)) for lo in range(0, na, tile)]
    tb = ta if diagonal else [(lo, min(lo + tile, nb)) for lo in range(0, nb, tile)]
    for s, a in enumerate(ta):
        for t, b in enumerate(tb):
            if diagonal and t < s:
                continue
            yield a, b, diagonal and s == t


def _block_rows(as_a: list, as_b: list):
    """Row sums of one chunk: its rows as chunk a of pairs (j, k >= j) and as chunk b of (i < j, j)."""
    row_k = sum(r[1][0] for r in as_a) + sum(r[2][0] for r in as_b)
    row_l = sum(r[1][1] for r in as_a) + sum(r[2][1] for r in as_b)
    return row_k, row_l


def _sum_scalars(results: list) -> np.ndarray:
    return np.sum([r[0] for r in results], axis=0)


# ---- bandwidths ----------------------------------------------------------------------------------
def _dask_pair_reducer(blocks: list, tile: int):
    """A ``reduce_pairs`` for :func:`pyckafast._core.bandwidth.exact_median`: one task per chunk pair
    (i <= j), tiles inside it; the partial Histogram/Candidates add up on the client."""
    import functools
    import operator

    import dask

    def reduce_pairs(fn):
        task = dask.delayed(_reduce_chunk_pair, pure=True)
        parts = [task(fn, blocks[i], blocks[j], i == j, tile) for i, j in _pairs(len(blocks))]
        return functools.reduce(operator.add, dask.compute(parts)[0])

    return reduce_pairs


def _reduce_chunk_pair(fn, xa, xb, diagonal: bool, tile: int):
    total = None
    for (alo, ahi), (blo, bhi), same in _tile_pairs(xa.shape[0], xb.shape[0], diagonal, tile):
        part = fn(xa[alo:ahi], xa[blo:bhi] if same else xb[blo:bhi], same)
        total = part if total is None else total + part
    return total


def _max_sq_norm(block) -> float:
    return float(np.max(np.einsum("ij,ij->i", block, block), initial=0.0))


def exact_median(blocks: list, *, rule: str, tile: int) -> float:
    """The exact ``rule`` ("kornblith" or "offdiag") median squared distance between the rows of
    the centred ``blocks``: the selection of :mod:`pyckafast._core.bandwidth`, passes run as Dask
    tasks over chunk pairs, so it equals the in-memory value."""
    import dask

    norms = dask.compute([dask.delayed(_max_sq_norm)(b) for b in blocks])[0]
    n = int(sum(dask.compute([dask.delayed(len)(b) for b in blocks])[0]))
    dtype = np.result_type(*dask.compute([dask.delayed(lambda b: b.dtype)(blocks[0])])[0])
    return bw.exact_median(rule, n, 4.0 * max(norms), _dask_pair_reducer(blocks, tile), dtype)


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
