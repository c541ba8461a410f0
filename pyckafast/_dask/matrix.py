"""Layer x layer CKA maps of Dask arrays chunked by rows (the ``("matrix", "dask")`` producer).

Pairs are routed as in memory (:func:`pyckafast._cpu.tiled_map.route_pairs`):

* **narrow layers** (their p x p moments fit and cost less than n x n Grams): every row chunk
  produces, on the worker that holds it, float64 sums of the layers' rows shifted by one shift
  per layer (as the in-memory map, :mod:`pyckafast._cpu.linear_map`): each layer's own moments
  once per chunk, the cross products of every wanted pair; the chunks' sums add in a tree and
  become the exact :class:`~pyckafast._core.terms.LinearTerms` of every pair, so only each
  layer's p^2 and each pair's p_i p_j floats per chunk travel;
* **wide layers**: the tiled chunk-pair pass :func:`pyckafast._dask.map.tiled_map_terms`
  (every layer's Gram tile once per block pair, O(L (n + tile^2)) per task);
* **RBF** (``kernel="rbf"``): each layer's bandwidth by the exact Dask selection
  (:mod:`pyckafast._dask.rbf`, equal to the in-memory one), then every pair from one tiled
  chunk-pair pass with RBF tiles.

Nothing is read before the passes run (the inputs stay lazy until then); the narrow pass and
the layers' variance flags are one ``dask.compute``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import numpy as np

from .._core import combine
from .._core.inputs import Samples, check_finite_sums, float_dtype
from .._core.progress import Progress
from .._core.terms import LinearTerms, RowNormTerms
from .._cpu import linear_map, tiled_map
from .._cpu.linear import first_chunk_mean
from . import rbf as dask_rbf
from .map import aligned, tiled_map_terms

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
    arrays = aligned([s.data for s in reps], names)
    with dask_progress(progress, desc="dask CKA map"):
        if kernel == "rbf":
            gammas = [dask_rbf.layer_gamma(a, name, options, 0 if r < len(xs) or symmetric else 1,
                                           tile, backend)
                      for r, (a, name) in enumerate(zip(arrays, names))]
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


# Rows whose mean (rounded to the dtype) is a layer's shift for all its chunks, as in memory.
_SHIFT_ROWS = 1024


def linear_map_terms(arrays: Sequence, names: Sequence[str], pairs: Sequence[Pair],
                     debiased: bool):
    """A ``dask.delayed`` of the exact :class:`LinearTerms` of every pair (indices into
    ``arrays``, row-aligned 2-D Dask arrays with one column chunk). Only the arrays in ``pairs``
    are read.

    Every layer has one shift (its first rows' mean rounded to its dtype, a task of the same
    graph), so the chunks' float64 sums add exactly: one task per row chunk gives each layer's
    own moments once and the cross products of every pair, and a tree adds them. The pairs are
    grouped as in memory (:func:`pyckafast._cpu.linear_map.passes`), one tree per group, so no
    task holds more cross products than the in-memory pass does.
    """
    import dask

    from .producers import _tree

    used = sorted({r for pair in pairs for r in pair})
    slot = {r: k for k, r in enumerate(used)}
    dtypes = [float_dtype(arrays[r].dtype, names[r]) for r in used]
    n = int(arrays[used[0]].shape[0])
    heads = [arrays[r][:min(n, _SHIFT_ROWS)] for r in used]
    shifts = [dask.delayed(_shift, pure=True)(h, d) for h, d in zip(heads, dtypes)]
    blocks = [list(arrays[r].to_delayed().ravel()) for r in used]
    sizes = [int(c) for c in arrays[used[0]].chunks[0]]
    starts = [0, *accumulate(sizes[:-1])]
    groups = linear_map.passes([arrays[r].shape[1] for r in used],
                               [(slot[i], slot[j]) for i, j in pairs])
    task = dask.delayed(_chunk_sums, pure=True)
    add = dask.delayed(_added, pure=True)
    trees = [_tree([task([b[k] for b in blocks], shifts, dtypes, [names[r] for r in used],
                         group, g == 0, bool(debiased), start)
                    for k, start in enumerate(starts)], add)
             for g, group in enumerate(groups)]
    eps = [float(np.finfo(d).eps) for d in dtypes]
    return dask.delayed(_pair_terms, pure=True)(trees, shifts, eps, n, used, pairs)


def _shift(head: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return first_chunk_mean(np.asarray(head).astype(dtype, copy=False), _SHIFT_ROWS)


def _chunk_sums(chunks: list, shifts: list[np.ndarray], dtypes: list[np.dtype],
                names: list[str], pairs: list[Pair], with_own: bool, debiased: bool,
                start: int) -> dict:
    """One task: float64 sums of one row chunk of every layer (shifted; GEMMs in the input
    dtype, as in memory): ``own`` per layer (first group only) and ``cross`` per pair. Each
    chunk is checked finite, a NaN reported at its global row."""
    needed = sorted({i for pair in pairs for i in pair} | (set(range(len(chunks))) if with_own
                                                         else set()))
    centred, q = {}, {}
    for i in needed:
        raw = np.asarray(chunks[i]).astype(dtypes[i], copy=False)
        c = np.subtract(raw, shifts[i], out=np.empty(raw.shape, gemm_dtype(dtypes[i])))
        sums = c.sum(axis=0, dtype=np.float64)
        if not np.all(np.isfinite(sums)):
            bad = ~np.isfinite(raw).all(axis=1)
            if bad.any():
                raise ValueError(f"{names[i]} must contain only finite values; found NaN or Inf "
                                 f"in row {start + int(np.argmax(bad))}.")
            check_finite_sums(sums, names[i], start, start + c.shape[0])  # overflow
        centred[i] = (c, sums)
        if debiased:
            q[i] = np.einsum("ij,ij->i", c, c, dtype=np.float64)
    own = {}
    if with_own:
        for i, (c, sums) in centred.items():
            own[i] = {"sum": sums, "gram": np.asarray(c.T @ c, dtype=np.float64)}
            if debiased:
                own[i].update(sum_q=float(q[i].sum()), sum_qq=float(q[i] @ q[i]), qb=q[i] @ c)
    cross = {}
    for i, j in pairs:
        ci, cj = centred[i][0], centred[j][0]
        cross[i, j] = {"xy": np.asarray(ci.T @ cj, dtype=np.float64)}
        if debiased:
            cross[i, j].update(rx=q[j] @ ci, qy=q[i] @ cj, sum_qr=float(q[i] @ q[j]))
    return {"own": own, "cross": cross}


def _added(a, b):
    """Two chunks' sums added (nested dicts of float64 arrays and floats; same keys)."""
    if isinstance(a, dict):
        return {k: _added(v, b[k]) for k, v in a.items()}
    return a + b


def _pair_terms(trees: list[dict], shifts: list[np.ndarray], eps: list[float], n: int,
                used: list[int], pairs: Sequence[Pair]) -> dict[Pair, LinearTerms]:
    """The :class:`LinearTerms` of every pair (indexed like the map) from the summed groups."""
    own = trees[0]["own"]
    cross = {pair: c for tree in trees for pair, c in tree["cross"].items()}
    slot = {r: k for k, r in enumerate(used)}
    out = {}
    for i, j in pairs:
        a, b = slot[i], slot[j]
        oa, ob, c = own[a], own[b], cross[a, b]
        norms = None if "qb" not in oa else RowNormTerms(
            sum_q=oa["sum_q"], sum_r=ob["sum_q"], sum_qq=oa["sum_qq"], sum_rr=ob["sum_qq"],
            sum_qr=c["sum_qr"], qx=oa["qb"], rx=c["rx"], qy=c["qy"], ry=ob["qb"])
        out[i, j] = LinearTerms(n=n, shift_x=shifts[a], shift_y=shifts[b], sum_x=oa["sum"],
                                sum_y=ob["sum"], xx=oa["gram"], yy=ob["gram"], xy=c["xy"],
                                norms=norms, eps=max(eps[a], eps[b]))
    return out


def _varies(a):
    """A lazy flag: whether any row of ``a`` differs from its first."""
    return (a != a[:1]).any()


def gemm_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of a chunk's GEMMs: float32 for float32 data (as the in-memory map), else
    float64; the sums are float64 either way."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)
