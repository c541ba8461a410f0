"""Dask helpers: row-aligned chunks, RBF chunk-pair tasks and exact medians over chunk pairs.

RBF terms: data centred by one global shift (computed first), then one task per pair of row
chunks (i <= j); inside a task the chunks are cut into tiles handed to
``pyckafast._rbf_engine.rbf_block_pair`` (so a task's temporaries are tile^2, whatever the chunk
size). Pair sums add (off-diagonal pairs twice, by symmetry), row sums go to their rows.

Exact median of the n^2 squared distances: histogram passes over the same chunk pairs narrow an
interval [lo, hi] around the middle rank(s) until few values remain, which are then gathered
(as distinct values with counts, so ties cost nothing) and ranked exactly. Every pass recomputes
its own counts below the interval, so passes need not agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from . import _backends
from ._terms import KernelTerms
from ._validation import check_positive_scalar

__all__ = ["aligned_blocks", "rbf_kernel_terms", "exact_median", "BANDWIDTHS"]

BANDWIDTHS = ("kornblith", "nonzero", "sampled")
_BINS = 2048
_GATHER_CAP = 1 << 20  # values left inside the interval when they are gathered and ranked
_MAX_PASSES = 8  # 2048^8 bins: narrower than a float64 ulp, so ties end the loop


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
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (float, integer or bool); got dtype {a.dtype}.")
    if a.ndim == 1:
        return a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (n_samples, n_features); got shape {a.shape}.")
    return a


def _float_dtype(*dtypes) -> np.dtype:
    out = np.result_type(*dtypes)
    return np.dtype(np.float64) if out.kind != "f" or out.itemsize > 8 else out


def rbf_kernel_terms(dx, dy, *, sigma, threshold, bandwidth, debiased, backend, tile,
                     n_pairs, seed) -> KernelTerms:
    """Global kernel terms (of K - 1, L - 1) of the RBF kernels of dx and dy."""
    import dask
    import dask.array as da

    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"bandwidth must be one of {list(BANDWIDTHS)}; got {bandwidth!r}.")
    threshold = check_positive_scalar(threshold, "threshold")
    blocks_x, blocks_y = aligned_blocks(dx, dy, min_n=4 if debiased else 2)
    dx, dy = da.asarray(dx), da.asarray(dy)
    ops = _backends.resolve(backend, "rbf_tile", "cpu")
    dtype = ops.gemm_dtype(_float_dtype(dx.dtype, dy.dtype))
    tile = int(tile or 1024)
    sizes = [int(c) for c in _as_2d(dx, "dx").rechunk({1: -1}).chunks[0]]
    n = sum(sizes)
    sum_x, sum_y = dask.compute(_as_2d(dx, "dx").sum(axis=0, dtype=np.float64),
                                _as_2d(dy, "dy").sum(axis=0, dtype=np.float64))
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
        median = exact_median(blocks, tile=tile, nonzero=rule == "nonzero")
    if not median > 0:
        raise ValueError(
            f"the median squared distance of {name} is {median}: bandwidth {rule!r} is undefined "
            "(too many identical samples); pass sigma= explicitly."
        )
    return 1.0 / (2.0 * threshold ** 2 * median)


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
    from ._rbf_engine import rbf_block_pair

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
def _sq_dists(a: np.ndarray, b: np.ndarray, same: bool) -> np.ndarray:
    """Squared distances |a_i - b_j|^2 of centred rows, clamped at 0, exact zeros on a diagonal."""
    na, nb = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    d = (na[:, None] + nb[None, :] - 2.0 * (a @ b.T)).astype(np.float64)
    np.maximum(d, 0.0, out=d)
    if same:
        np.fill_diagonal(d, 0.0)
    return d


def _tile_dists(xa, xb, diagonal, tile, nonzero):
    """(distances, multiplicity) of every tile pair of a chunk pair; off-diagonal pairs count twice."""
    for (alo, ahi), (blo, bhi), same in _tile_pairs(xa.shape[0], xb.shape[0], diagonal, tile):
        d = _sq_dists(xa[alo:ahi], xb[blo:bhi], same).ravel()
        yield (d[d > 0] if nonzero else d), (1 if same else 2)


def _histogram(xa, xb, diagonal, lo, hi, tile, nonzero) -> np.ndarray:
    """Counts [below lo, _BINS bins over [lo, hi], above hi] of the chunk pair's distances."""
    edges = np.linspace(lo, hi, _BINS + 1)
    counts = np.zeros(_BINS + 2, np.int64)
    for d, weight in _tile_dists(xa, xb, diagonal, tile, nonzero):
        idx = np.searchsorted(edges, d, side="right")  # 0: below lo, 1.._BINS: bins, _BINS+1: above
        idx[d == hi] = _BINS
        counts += weight * np.bincount(idx, minlength=_BINS + 2)
    return counts


def _values_between(xa, xb, diagonal, lo, hi, tile, nonzero):
    """Distinct distances in [lo, hi] with their counts, and the count below lo."""
    values, counts, below = [], [], 0
    for d, weight in _tile_dists(xa, xb, diagonal, tile, nonzero):
        below += weight * int(np.count_nonzero(d < lo))
        v, c = np.unique(d[(d >= lo) & (d <= hi)], return_counts=True)
        values.append(v)
        counts.append(weight * c)
    return np.concatenate(values), np.concatenate(counts), below


def _max_sq_norm(block) -> float:
    return float(np.max(np.einsum("ij,ij->i", block, block), initial=0.0))


def exact_median(blocks: list, *, tile: int, nonzero: bool) -> float:
    """np.median of all n^2 squared distances between the rows of the centred ``blocks``
    (or of the non-zero ones), computed by histogram passes over the chunk pairs."""
    import dask

    pairs = _pairs(len(blocks))
    norms = dask.compute([dask.delayed(_max_sq_norm)(b) for b in blocks])[0]
    lo, hi = 0.0, 4.0 * max(norms) * (1 + 1e-6) + 1e-300  # |a - b|^2 <= (|a| + |b|)^2
    for _ in range(_MAX_PASSES):
        hist = dask.delayed(_histogram, pure=True)
        parts = [hist(blocks[i], blocks[j], i == j, lo, hi, tile, nonzero) for i, j in pairs]
        counts = np.sum(dask.compute(parts)[0], axis=0)
        total, below, inside = int(counts.sum()), int(counts[0]), counts[1:-1]
        if total == 0:
            return 0.0
        if inside.sum() <= _GATHER_CAP:
            break
        cum = below + np.cumsum(inside)
        ranks = ((total - 1) // 2, total // 2)
        b1, b2 = (int(np.searchsorted(cum, k, side="right")) for k in ranks)
        edges = np.linspace(lo, hi, _BINS + 1)
        new = float(edges[b1]), float(edges[min(b2 + 1, _BINS)])
        if new == (lo, hi):
            break
        lo, hi = new
    gather = dask.delayed(_values_between, pure=True)
    found = dask.compute([gather(blocks[i], blocks[j], i == j, lo, hi, tile, nonzero) for i, j in pairs])[0]
    return _rank_pair(found, total)


def _rank_pair(found: list, total: int) -> float:
    values = np.concatenate([f[0] for f in found])
    counts = np.concatenate([f[1] for f in found])
    below = sum(f[2] for f in found)
    uniq, inverse = np.unique(values, return_inverse=True)
    cum = below + np.cumsum(np.bincount(inverse, weights=counts, minlength=uniq.size).astype(np.int64))
    lo_rank, hi_rank = (total - 1) // 2, total // 2
    v1 = uniq[np.searchsorted(cum, lo_rank, side="right")]
    v2 = uniq[np.searchsorted(cum, hi_rank, side="right")]
    return float((v1 + v2) / 2.0)


def _sampled_median(blocks, n, sizes, n_pairs, seed) -> float:
    """Median of the squared distances of ``n_pairs`` random pairs i != j (``seed``)."""
    import dask

    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_pairs)
    j = rng.integers(0, n - 1, n_pairs)
    j += j >= i
    rows = np.unique(np.concatenate([i, j]))
    starts = np.cumsum([0, *sizes])
    take = dask.delayed(lambda block, idx: block[idx])
    picked = []
    for b, block in enumerate(blocks):
        local = rows[(rows >= starts[b]) & (rows < starts[b + 1])] - starts[b]
        if local.size:
            picked.append(take(block, local))
    data = np.concatenate(dask.compute(picked)[0])
    a, b = data[np.searchsorted(rows, i)], data[np.searchsorted(rows, j)]
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.median(np.einsum("ij,ij->i", diff, diff)))
