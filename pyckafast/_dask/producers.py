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
    """The linear HSIC triple of two Dask arrays: one ``compute`` of the tree-reduced terms.
    ``chunk_size`` and ``form`` have no effect here: a row chunk of the Dask array is one
    chunk of the feature form."""
    cpu_linear.check_cpu_precision(precision)
    terms = linear_terms(x, y, debiased=debiased, backend=backend).compute()
    return combine.linear_hsic(terms, debiased)


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
    from .._kernel_checks import warn_degenerate_kernels
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
