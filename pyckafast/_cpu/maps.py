"""Layer x layer CKA maps of host data (the ``("matrix", "cpu")`` producer of
:data:`pyckafast._core.dispatch.PRODUCERS`): pairs routed between the one-pass feature map
(:mod:`pyckafast._cpu.linear_map`), the tiled sample-space map (:mod:`pyckafast._cpu.tiled_map`)
and, for RBF, the per-pair passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._core import combine
from .._core.inputs import Samples
from .._core.progress import Progress
from . import linear_map, tiled_map
from .producers import rbf_producer

__all__ = ["matrix_pairs", "RBF_TILED_DEPTH"]


def matrix_pairs(xs: list[Samples], ys: list[Samples], symmetric: bool, *, backend: str,
                 kernel: str, debiased: bool, options: Any = None,
                 tile: int | None = None, form: str = "auto",
                 progress: Progress = None) -> Callable[[int, int], combine.HSICTriple]:
    """The producer for host data: ``pair(i, j)`` -> the HSIC triple of xs[i] and ys[j]."""
    if kernel == "linear":
        return _linear_pairs(xs, ys, symmetric, debiased, form, tile, progress, backend)
    return _rbf_pairs(xs, ys, symmetric, debiased, options, backend, tile, form, progress)


def _linear_pairs(xs, ys, symmetric, debiased, form, tile, progress, backend):
    """Pairs with a wide layer (or all, ``form="tiles"``) from one tiled sample-space pass, the
    others from one chunked feature-space pass through ``backend``'s moment kernels (the one
    moment feed; the tiled pass is BLAS tiles)."""
    reps = xs if symmetric else [*xs, *ys]
    offset = 0 if symmetric else len(xs)
    wanted = [(i, offset + j) for i in range(len(xs)) for j in range(len(ys))
              if not symmetric or i < j]
    tiled, features = tiled_map.route_pairs(reps, wanted, form)
    data, names = [s.data for s in reps], [s.name for s in reps]
    triples: dict[tuple[int, int], combine.HSICTriple] = {}
    if features:
        terms = linear_map.map_terms(data, names, features, debiased, progress=progress,
                                     backend=backend)
        triples.update({pair: combine.linear_hsic(t, debiased) for pair, t in terms.items()})
    if tiled:
        kernel_terms, zero = tiled_map.tiled_map_terms(data, tiled, tile=tile, progress=progress,
                                                       names=names)
        triples.update({(i, j): combine.kernel_hsic(t, debiased)._replace(zero_x=zero[i],
                                                                          zero_y=zero[j])
                        for (i, j), t in kernel_terms.items()})
    return lambda i, j: triples[i, offset + j]


# RBF pairs deeper than this (p_i + p_j) run on BLAS tiles on every CPU backend (the fused
# kernels stop at 1024): sharing each layer's tiles across its pairs then saves GEMMs.
RBF_TILED_DEPTH = 1024


def _rbf_pairs(xs, ys, symmetric, debiased, options: Any, backend, tile, form="auto",
               progress=None):
    """Each representation's bandwidth once; the pairs of wide layers (``form="tiles"``: all)
    in one tiled pass in which every layer's kernel tile comes from its Gram tile once per
    block pair; the other pairs one pass each (the fused kernels for narrow layers)."""
    gx = [options.gamma(s.data, s.name, 0, tile, backend) for s in xs]
    gy = gx if symmetric else [options.gamma(s.data, s.name, 1, tile, backend) for s in ys]
    reps, offset = (xs, 0) if symmetric else ([*xs, *ys], len(xs))
    wanted = [(i, offset + j) for i in range(len(xs)) for j in range(len(ys))
              if not symmetric or i < j]
    deep = [] if form == "features" or backend == "numpy" else [
        (i, j) for i, j in wanted if form == "tiles" or reps[i].p + reps[j].p > RBF_TILED_DEPTH]
    tiled, _ = tiled_map.with_free_pairs(wanted, deep)
    terms = {}
    if tiled:
        terms, _ = tiled_map.tiled_map_terms(
            [s.data for s in reps], tiled, tile=tile, progress=progress, kernel="rbf",
            gammas=gx if symmetric else [*gx, *gy], names=[s.name for s in reps],
            options=options)
    produce = rbf_producer(backend, "cpu")

    def pair(i: int, j: int) -> combine.HSICTriple:
        if (i, offset + j) in terms:
            return combine.kernel_hsic(terms[i, offset + j], debiased)
        pair_terms = produce(xs[i].data, ys[j].data, gamma_x=gx[i], gamma_y=gy[j], tile=tile)
        return combine.kernel_hsic(pair_terms, debiased)

    return pair
