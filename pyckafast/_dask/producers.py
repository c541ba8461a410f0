"""Producers for Dask arrays chunked by rows: the terms are made where each chunk lives and
stay lazy until one reduction at the end (see :mod:`pyckafast.dask`).

Linear: every row chunk produces exact :class:`~pyckafast._core.terms.LinearTerms` on its worker
(shifted by its own first rows' mean, float64 sums); the terms merge pairwise in a tree
(``LinearTerms.merge`` re-expresses one shift in the other exactly), so only O(p^2) floats
travel. RBF: the chunk-pair reduction of :mod:`pyckafast._dask.rbf`.

The tasks take the CPU backend's *name*: a module cannot travel to a worker; the client has
already resolved it once (:func:`pyckafast._core.dispatch.producer`), so a missing backend
fails before any task runs.
"""

from __future__ import annotations

from itertools import accumulate

from .._core import combine, dispatch
from .._core.inputs import Samples, as_samples
from .._core.terms import LinearTerms
from .._cpu import linear as cpu_linear

__all__ = ["linear_terms", "linear_triple", "rbf_triple"]


def linear_terms(x: Samples, y: Samples, *, debiased: bool, backend: str):
    """A ``dask.delayed`` of the exact :class:`LinearTerms` of all rows (tree-reduced)."""
    import dask

    from .rbf import aligned_blocks

    # n was checked when the inputs were prepared (a streaming batch may hold a single row).
    blocks_x, blocks_y = aligned_blocks(x.data, y.data, min_n=1)
    starts = [0, *accumulate(int(size) for size in x.data.chunks[0][:-1])]  # for messages
    names = (x.name, y.name)
    parts = [
        dask.delayed(_chunk_terms, pure=True)(bx, by, bool(debiased), backend, start, names)
        for bx, by, start in zip(blocks_x, blocks_y, starts)
    ]
    return _tree(parts, dask.delayed(_merge, pure=True))


def linear_triple(x: Samples, y: Samples, *, backend: str, debiased: bool,
                  chunk_size: int | None = None, form: str = "auto",
                  precision: str = "highest") -> combine.HSICTriple:
    """The linear HSIC triple of two Dask arrays.

    Feature form (``form="features"``, or "auto" when the p x p moments fit): one ``compute``
    of the tree-reduced terms, a row chunk of the Dask array being one chunk. Otherwise (wide
    layers, ``form="tiles"``/"samples"): the tiled sample-space pass over pairs of row chunks
    (:func:`pyckafast._dask.map.tiled_map_terms`), O(n + chunk^2) memory per task.
    ``chunk_size`` has no effect here."""
    cpu_linear.check_cpu_precision(precision)
    n, p1, p2 = x.n, x.data.shape[1], y.data.shape[1]
    itemsize = max(x.data.dtype.itemsize, y.data.dtype.itemsize)
    # "samples" (n x n Grams in memory) is not a Dask producer: its sums come from the tiles.
    if dispatch.linear_form(form, n, p1, p2, itemsize) == "features":
        terms = linear_terms(x, y, debiased=debiased, backend=backend).compute()
        return combine.linear_hsic(terms, debiased)
    from .map import tiled_map_terms

    kernel_terms, zero = tiled_map_terms([x.data, y.data], [(0, 1)], names=[x.name, y.name])
    return combine.kernel_hsic(kernel_terms[0, 1], debiased)._replace(zero_x=zero[0],
                                                                      zero_y=zero[1])


def _chunk_terms(x, y, debiased: bool, backend: str, start: int,
                 names: tuple[str, str]) -> LinearTerms:
    x, y = as_samples(x, names[0]), as_samples(y, names[1])
    ops = dispatch.resolve(backend, "linear_moments", "cpu")  # on the worker, by name
    return cpu_linear.feature_terms(x, y, ops=ops, debiased=debiased, start=start)


def _merge(a: LinearTerms, b: LinearTerms) -> LinearTerms:
    return a.merge(b)


def _tree(parts: list, merge):
    """Pairwise reduction: depth log2(len(parts)), every level's merges run in parallel."""
    while len(parts) > 1:
        pairs = [merge(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def rbf_triple(x: Samples, y: Samples, *, backend: str, debiased: bool, options,
               tile: int | None = None) -> combine.HSICTriple:
    """The RBF HSIC triple of two Dask arrays (``options``: a :class:`pyckafast.rbf.RBFOptions`)."""
    from .._core.kernel_checks import warn_degenerate_kernels
    from . import rbf as dask_rbf

    sigma = None
    if options.sigma is not None:
        if options.sigma[0] != options.sigma[1]:
            raise ValueError("Dask inputs take one sigma for both x and y; got "
                             f"sigma={options.sigma}.")
        sigma = options.sigma[0]
    terms = dask_rbf.rbf_kernel_terms(
        x.data, y.data, sigma=sigma, threshold=options.threshold, bandwidth=options.bandwidth,
        debiased=debiased, backend=backend, tile=tile, n_pairs=options.n_pairs,
        seed=options.seed, names=(x.name, y.name),
    )
    warn_degenerate_kernels(terms, (x.name, y.name), debiased=debiased)
    return combine.kernel_hsic(terms, debiased)
