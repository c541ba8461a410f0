"""Linear CKA maps: every representation's own moments once, the cross products of many pairs
per pass over the rows (the host feed of the moment state, :mod:`pyckafast._cpu.moments`).

The cross products of one pass are held together (the sum over its pairs of p_i p_j float64), so
pairs are grouped into passes of at most ``MAX_CROSS_BYTES``: maps of small-p layers take one pass
in all, wide layers one pass per pair (the own Grams come with the first pass only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._core import dispatch
from .._core.moments import pair_terms
from .._core.progress import Progress, progress_reporter
from .._core.terms import LinearTerms
from .._core.threads import get_num_threads
from .moments import batch_frames, chunk_rows, feed

__all__ = ["MAX_CROSS_BYTES", "passes", "map_terms"]

MAX_CROSS_BYTES = 256 * 2**20


def passes(widths: Sequence[int], pairs: Sequence[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """The pairs grouped into passes whose cross products hold at most ``MAX_CROSS_BYTES`` (a
    pair larger than that on its own is a pass of its own)."""
    groups: list[list[tuple[int, int]]] = [[]]
    held = 0
    for i, j in pairs:
        size = widths[i] * widths[j] * 8
        if groups[-1] and held + size > MAX_CROSS_BYTES:
            groups.append([])
            held = 0
        groups[-1].append((i, j))
        held += size
    return groups


def map_terms(reps: Sequence[np.ndarray], names: Sequence[str], pairs: Sequence[tuple[int, int]],
              debiased: bool, *, progress: Progress = None, backend: str = "auto"
              ) -> dict[tuple[int, int], LinearTerms]:
    """The linear terms of every pair (i, j) of ``reps`` (indices into ``reps``); ``progress``
    is reported after every chunk (rows done over all passes); ``backend`` names the moment
    kernels (``"auto"``: the fastest usable). Only the representations in
    ``pairs`` are read (a map whose wide layers go to the tiled pass makes no moments of them)."""
    needed = sorted({i for pair in pairs for i in pair})
    slot = {r: k for k, r in enumerate(needed)}
    data, names = [reps[r] for r in needed], [names[r] for r in needed]
    n, widths = data[0].shape[0], [a.shape[1] for a in data]
    itemsize = max(a.itemsize for a in data)
    ops = dispatch.resolve(backend, "linear_moments", "cpu")
    rows = chunk_rows(widths, itemsize)
    frames, spread = batch_frames(data, rows, None)
    workers = dispatch.linear_workers(ops, n, sum(widths), 0, rows, itemsize, get_num_threads())
    groups = passes(widths, [(slot[i], slot[j]) for i, j in pairs])
    terms: dict[tuple[int, int], LinearTerms] = {}
    with progress_reporter(progress, n * len(groups), desc="CKA map", unit="row") as report:
        own = None
        for k, group in enumerate(groups):
            tick = None if report is None else (
                lambda done, total, k=k: report(k * n + done, len(groups) * n))
            parts = feed(data, names, group, frames, ops, debiased, spread=spread, rows=rows,
                         workers=workers, own_grams=k == 0, report=tick)
            for other in parts[1:]:
                parts[0].merge(other)
            if own is None:
                own = parts[0].own
            # later passes made no Grams; their crosses are moved into the first pass's frames
            # (the move reads the column and row-norm sums only)
            cross = parts[0].in_frames([(m.shift, m.scale) for m in own]).cross
            terms.update({(needed[a], needed[b]): pair_terms(own[a], own[b], c)
                          for (a, b), c in cross.items()})
    return terms
