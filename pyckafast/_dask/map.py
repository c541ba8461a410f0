"""The tiled layer map (:mod:`pyckafast._cpu.tiled_map`) over Dask arrays chunked by rows.

Every representation is shifted by its global column means (rounded to its dtype; one Dask
reduction for all of them), then one task per pair of row chunks (i <= j) runs the in-memory
set-pair pass over that chunk pair: every representation's tile once per block pair inside the
chunk pair, every wanted pair's sum of products from one GEMM of the tile stack. The chunk pairs
come from :func:`pyckafast._core.pairs.reduce_pairs`; the tasks return float64
:class:`~pyckafast._core.pairs.BlockSums` only (an L x L matrix and row sums of the chunk pair's
rows), which the one scatter of :mod:`pyckafast._core.pairs` adds into their rows; the result
equals the in-memory map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.inputs import float_dtype
from .._core.pairs import BlockSums, ScatteredSums, bounds_of_sizes, reduce_pairs, shift_from_sums
from .._core.terms import KernelTerms
from .._cpu.tiled_map import (_SPREAD_ROWS, Side, head_scale, map_tile_rows, pair_terms,
                              rbf_gammas, rbf_kernels, scale_log2, set_pair_sums)

__all__ = ["tiled_map_terms", "aligned"]

Pair = tuple[int, int]


def tiled_map_terms(reps: Sequence[Any], pairs: Sequence[Pair], *, tile: int | None = None,
                    kernel: str = "linear", gammas: Sequence[float] | None = None,
                    names: Sequence[str] | None = None, options: Any = None
                    ) -> tuple[dict[Pair, KernelTerms], list[bool]]:
    """Kernel terms of every wanted pair of Dask (or array_like) representations chunked by
    rows, as :func:`pyckafast._cpu.tiled_map.tiled_map_terms` gives them in memory.

    Row chunks of every representation are aligned to those of the first one read, and its
    columns made one chunk (a rechunk when needed). The work runs on the active Dask scheduler
    (any ``dask.distributed`` client). Only the representations in ``pairs`` are read. RBF
    kernels get their entry constants as in memory (``options``; the rows of the sampled pairs
    are computed once per representation when the typical distance is sampled).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from pyckafast._core import combine
    >>> x = np.random.default_rng(0).normal(size=(300, 40))
    >>> reps = [da.from_array(x, chunks=(70, 40)), da.from_array(np.tanh(x), chunks=(100, 40))]
    >>> terms, zero = tiled_map_terms(reps, [(0, 1)], tile=64)
    >>> 0.9 < combine.cka_from_hsic(combine.kernel_hsic(terms[0, 1], False)) < 1.0
    True
    """
    import dask
    import dask.array as da

    used = sorted({r for pair in pairs for r in pair})
    if not used:
        return {}, [False] * len(reps)
    names = list(names) if names is not None else [f"reps[{r}]" for r in range(len(reps))]
    gamma = rbf_gammas(kernel, gammas, used)
    arrays = aligned([da.asarray(reps[r]) for r in used], [names[r] for r in used])
    n = int(arrays[0].shape[0])
    dtypes = [float_dtype(a.dtype, names[r]) for a, r in zip(arrays, used)]
    kernels, wider = rbf_kernels(gamma, options, arrays, dtypes)
    totals = dask.compute(*[a.sum(axis=0, dtype=np.float64) for a in arrays])
    shifts = [shift_from_sums(t, n, names[r], d) for t, r, d in zip(totals, used, dtypes)]
    # one scale per representation for all chunks, from its first rows (as in memory)
    heads = dask.compute(*[a[:_SPREAD_ROWS] for a in arrays]) if kernel == "linear" else None
    scales = [head_scale(h, s) for h, s in zip(heads, shifts)] if heads else [1.0] * len(used)
    itemsize = max(np.dtype(w or d).itemsize for d, w in zip(dtypes, wider))  # as computed
    rows = tile or map_tile_rows([a.shape[1] for a in arrays], itemsize)
    blocks = [list(a.to_delayed().ravel()) for a in arrays]
    bounds = bounds_of_sizes([int(c) for c in arrays[0].chunks[0]])
    task = dask.delayed(_chunk_pair, pure=True)
    chunk = dict(zip(bounds, zip(*blocks))).__getitem__  # bounds -> that chunk of every array

    def body(chunks_a, chunks_b, diagonal: bool):
        return task(list(chunks_a), None if diagonal else list(chunks_b), shifts, scales,
                    [names[r] for r in used], rows, kernels, wider)

    sums = reduce_pairs(body, bounds, load_a=chunk, gather=lambda parts: dask.compute(parts)[0],
                        into=ScatteredSums((len(used), len(used)), (len(used),), n,
                                           keep_diagonal=kernel == "linear"))
    products, row_sums, diagonal = sums.sums, sums.rows_a, sums.diagonal
    eps = [float(np.finfo(d).eps) for d in dtypes]
    return pair_terms(products, row_sums, diagonal, eps,
                      [scale_log2(c) for c in scales], used, pairs, len(reps), kernels)


def aligned(arrays: list, names: list[str]) -> list:
    """2-D arrays with the row chunks of the first and one column chunk, checked."""
    out = []
    for a, name in zip(arrays, names):
        float_dtype(a.dtype, name)  # the in-memory dtype rule; raises TypeError
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"{name} must be 1-D or 2-D (n_samples, n_features); got shape "
                             f"{a.shape}.")
        if any(math.isnan(c) for c in a.chunks[0]):
            raise ValueError(f"{name} has unknown chunk sizes; call "
                             f"{name}.compute_chunk_sizes() first.")
        if out and a.shape[0] != out[0].shape[0]:
            raise ValueError(f"{name} must have the n = {out[0].shape[0]} rows of {names[0]}; "
                             f"got {a.shape[0]}.")
        out.append(a.rechunk({1: -1}) if not out else a.rechunk({0: out[0].chunks[0], 1: -1}))
    return out


def _chunk_pair(chunks_a: list, chunks_b: list | None, shifts: list[np.ndarray],
                scales: list[float], names: list[str], rows: int, kernels: list,
                dtypes: list) -> BlockSums:
    """One task: the set-pair sums of a chunk against itself (``chunks_b`` None) or of two
    chunks, as host float64 :class:`BlockSums` (two chunks: one direction, as the scatter of
    :mod:`pyckafast._core.pairs` takes an off-diagonal part)."""
    def sides(chunks):
        return [Side(np.asarray(c), name, np, s, c_, dtype=d) for c, name, s, c_, d in
                zip(chunks, names, shifts, scales, dtypes)]

    sides_a = sides(chunks_a)
    sides_b = None if chunks_b is None else sides(chunks_b)
    sums = set_pair_sums(sides_a, sides_b, rows, kernels)
    if chunks_b is None:
        return BlockSums(sums.products, sums.rows_a, None, sums.diagonal)
    # two sets' products count (a, b) and (b, a); halving is exact in binary floating point
    return BlockSums(0.5 * sums.products, sums.rows_a, sums.rows_b)
