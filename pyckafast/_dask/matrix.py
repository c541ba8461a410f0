"""Layer x layer CKA maps of Dask arrays chunked by rows (the ``("matrix", "dask")`` producer).

Pairs are routed as in memory (:func:`pyckafast._cpu.tiled_map.route_pairs`):

* **narrow layers** (their p x p moments fit and cost less than n x n Grams): every row chunk
  produces, on the worker that holds it, the exact :class:`~pyckafast._core.terms.LinearTerms`
  of every wanted pair (:func:`pyckafast._cpu.linear_map.map_terms` over that chunk: each
  layer's own moments once per chunk, shifted by the chunk's first rows' mean, float64 sums);
  the chunks' terms merge pairwise in a tree (``LinearTerms.merge`` re-expresses one shift in
  the other exactly), so only O(sum of p_i p_j) floats per chunk travel;
* **wide layers**: the tiled chunk-pair pass :func:`pyckafast._dask.map.tiled_map_terms`
  (every layer's Gram tile once per block pair, O(L (n + tile^2)) per task);
* **RBF** (``kernel="rbf"``): each layer's bandwidth by the exact Dask selection
  (:mod:`pyckafast._dask.rbf`, equal to the in-memory one), then every pair from one tiled
  chunk-pair pass with RBF tiles.

Nothing is read before the passes run (the inputs stay lazy until then); the narrow pass and
the layers' variance flags are one ``dask.compute``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate

import numpy as np

from .._core import bandwidth as bw
from .._core import combine, dispatch
from .._core.inputs import Samples, check_finite_sums
from .._core.progress import Progress
from .._core.terms import LinearTerms
from .._cpu import linear_map, tiled_map
from .map import _aligned, tiled_map_terms

__all__ = ["matrix_pairs", "MapPairs"]

Pair = tuple[int, int]


class MapPairs:
    """``pair(i, j)`` -> the HSIC triple of xs[i] and ys[j]; ``has_variance(i)`` for the unit
    diagonal of a symmetric map, from the same computation (no second pass over the data)."""

    def __init__(self, triples: dict[Pair, combine.HSICTriple], offset: int,
                 variance: list[bool]):
        self._triples, self._offset, self._variance = triples, offset, variance

    def __call__(self, i: int, j: int) -> combine.HSICTriple:
        return self._triples[i, self._offset + j]

    def has_variance(self, i: int) -> bool:
        return self._variance[i]


def matrix_pairs(xs: list[Samples], ys: list[Samples], symmetric: bool, *, backend: str,
                 kernel: str, debiased: bool, options=None, tile: int | None = None,
                 form: str = "auto", progress: Progress = None) -> MapPairs:
    """The producer for Dask inputs (see :data:`pyckafast._core.dispatch.PRODUCERS`).

    ``progress``: tasks of each Dask computation (:func:`pyckafast._core.passes.dask_progress`).
    """
    import dask

    from .._core.passes import dask_progress

    reps, offset = (xs, 0) if symmetric else ([*xs, *ys], len(xs))
    wanted = [(i, offset + j) for i in range(len(xs)) for j in range(len(ys))
              if not symmetric or i < j]
    names = [s.name for s in reps]
    arrays = _aligned([s.data for s in reps], names)
    with dask_progress(progress, desc="dask CKA map"):
        if kernel == "rbf":
            gammas = [layer_gamma(a, name, options, 0 if r < len(xs) or symmetric else 1,
                                  tile, backend) for r, (a, name) in enumerate(zip(arrays, names))]
            tiled, features = list(wanted), []
        else:
            gammas = None
            tiled, features = tiled_map.route_pairs(reps, wanted, form)
        triples: dict[Pair, combine.HSICTriple] = {}
        if tiled:
            terms, zero = tiled_map_terms(arrays, tiled, tile=tile, kernel=kernel,
                                          gammas=gammas, names=names, options=options)
            for (i, j), t in terms.items():  # as in memory: linear tiles flag constant layers
                triple = combine.kernel_hsic(t, debiased)
                triples[i, j] = triple if gammas else triple._replace(zero_x=zero[i],
                                                                      zero_y=zero[j])
        narrow = linear_map_terms(arrays, names, features, debiased) if features else None
        variance = [_varies(a) for a in arrays[:len(xs)]] if symmetric else []
        narrow, variance = dask.compute(narrow, variance)
    if narrow:
        triples.update({pair: combine.linear_hsic(t, debiased) for pair, t in narrow.items()})
    return MapPairs(triples, offset, [bool(v) for v in variance])


def linear_map_terms(arrays: Sequence, names: Sequence[str], pairs: Sequence[Pair],
                     debiased: bool):
    """A ``dask.delayed`` of the exact :class:`LinearTerms` of every pair (indices into
    ``arrays``, row-aligned 2-D Dask arrays with one column chunk): one task per row chunk,
    merged in a tree. Only the arrays in ``pairs`` are read."""
    import dask

    from .producers import _tree

    used = sorted({r for pair in pairs for r in pair})
    slot = {r: k for k, r in enumerate(used)}
    local = [(slot[i], slot[j]) for i, j in pairs]
    blocks = [list(arrays[r].to_delayed().ravel()) for r in used]
    sizes = [int(c) for c in arrays[used[0]].chunks[0]]
    starts = [0, *accumulate(sizes[:-1])]
    task = dask.delayed(_chunk_map_terms, pure=True)
    parts = [task([b[k] for b in blocks], [names[r] for r in used], local, bool(debiased), start)
             for k, start in enumerate(starts)]
    merged = _tree(parts, dask.delayed(_merge_maps, pure=True))
    return dask.delayed(_renamed, pure=True)(merged, dict(zip(local, pairs)))


def _renamed(terms: dict[Pair, LinearTerms], back: dict[Pair, Pair]) -> dict[Pair, LinearTerms]:
    return {back[key]: t for key, t in terms.items()}


def _chunk_map_terms(chunks: list, names: list[str], pairs: list[Pair], debiased: bool,
                     start: int) -> dict[Pair, LinearTerms]:
    """One task: the terms of every pair over one row chunk (each chunk checked finite first,
    so a NaN is reported at its global rows)."""
    chunks = [np.asarray(c) for c in chunks]
    for c, name in zip(chunks, names):
        if not np.all(np.isfinite(c.sum(axis=0, dtype=np.float64))):
            bad = ~np.isfinite(c).all(axis=1)
            if bad.any():
                raise ValueError(f"{name} must contain only finite values; found NaN or Inf in "
                                 f"row {start + int(np.argmax(bad))}.")
            check_finite_sums(np.array([np.inf]), name, start, start + c.shape[0])  # overflow
    return linear_map.map_terms(chunks, names, pairs, debiased)


def _merge_maps(a: dict[Pair, LinearTerms], b: dict[Pair, LinearTerms]
                ) -> dict[Pair, LinearTerms]:
    return {pair: t.merge(b[pair]) for pair, t in a.items()}


def _varies(a):
    """A lazy flag: whether any row of ``a`` differs from its first."""
    return (a != a[:1]).any()


def layer_gamma(a, name: str, options, side: int, tile: int | None, backend: str) -> float:
    """One Dask layer's RBF gamma, equal to :meth:`pyckafast.rbf.RBFOptions.gamma` of its rows
    in memory (the exact selection of :mod:`pyckafast._dask.rbf` over its chunk pairs)."""
    from . import rbf as dask_rbf

    if options.sigma is not None:
        return bw.gamma_from_sigma(options.sigma[side])
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    a = dask_rbf._coarse_rows(a)
    blocks = list(a.to_delayed().ravel())
    sizes = [int(c) for c in a.chunks[0]]
    (chunks,) = dask_rbf._centred_chunks((a,), (blocks,), (name,), sizes, ops)
    gamma = dask_rbf._gamma(blocks, chunks, name, sizes, options.bandwidth, options.threshold,
                            tile, options.n_pairs, options.seed, ops)
    # the selection ran on rows times 2^log2 (data of extreme magnitude): distances 4^log2 x
    return math.ldexp(gamma, 2 * chunks.log2)
