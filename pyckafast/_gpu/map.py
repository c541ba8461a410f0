"""Layer x layer CKA maps on a GPU: wide linear layers through the tiled sample-space map.

Linear pairs are routed as on the host (:func:`pyckafast._cpu.tiled_map.route_pairs`): the pairs
with a wide layer (and the pairs of two layers their pass computes anyway) go through one tiled
pass on the device (:func:`~pyckafast._cpu.tiled_map.tiled_map_terms` with the engine's array
module: every layer's Gram tile once per block pair, cuBLAS in the input dtype, float64 sums on
the device); the others through the chunked GPU linear producer, pair by pair. RBF maps are the
per-pair GPU passes of :func:`pyckafast._gpu.producers.matrix_pairs`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from .._core import combine
from .._core.inputs import Samples
from .._core.progress import Progress
from .._cpu import tiled_map
from . import producers

__all__ = ["matrix_pairs"]


def matrix_pairs(xs: list[Samples], ys: list[Samples], symmetric: bool, *, ops: ModuleType,
                 kernel: str, debiased: bool, options=None, tile: int | None = None,
                 form: str = "auto", progress: Progress = None
                 ) -> Callable[[int, int], combine.HSICTriple]:
    """``pair(i, j)`` -> the HSIC triple of xs[i] and ys[j] on the GPU."""
    if kernel != "linear":
        return producers.matrix_pairs(xs, ys, symmetric, ops=ops, kernel=kernel,
                                      debiased=debiased, options=options, tile=tile)
    reps, offset = (xs, 0) if symmetric else ([*xs, *ys], len(xs))
    wanted = [(i, offset + j) for i in range(len(xs)) for j in range(len(ys))
              if not symmetric or i < j]
    tiled, features = tiled_map.route_pairs(reps, wanted, form)
    triples: dict[tuple[int, int], combine.HSICTriple] = {}
    if tiled:
        used = {r for pair in tiled for r in pair}
        device = [ops.device_array(s) if r in used else None for r, s in enumerate(reps)]
        terms, zero = tiled_map.tiled_map_terms(device, tiled, tile=tile, progress=progress,
                                                xp=ops.array_module(),
                                                names=[s.name for s in reps])
        triples.update({(i, j): combine.kernel_hsic(t, debiased)._replace(zero_x=zero[i],
                                                                          zero_y=zero[j])
                        for (i, j), t in terms.items()})

    def pair(i: int, j: int) -> combine.HSICTriple:
        key = (i, offset + j)
        if key in triples:
            return triples[key]
        return producers.linear_triple(reps[key[0]], reps[key[1]], ops=ops, debiased=debiased)

    return pair
