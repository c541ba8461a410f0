"""Exact CKA on Dask arrays chunked by rows: the same terms, computed where the data lives.

* :func:`linear_cka` — every row chunk produces exact :class:`~pyckafast._core.terms.LinearTerms`
  (shifted by its own first rows' mean, float64 sums) on the worker that holds it; the terms
  merge pairwise in a tree (``LinearTerms.merge`` re-expresses one shift in the other exactly),
  so only O(p^2) floats travel and the result equals the in-memory :func:`pyckafast.linear_cka`.
  ``pyckafast.linear_cka`` / ``rbf_cka`` given Dask arrays run these same producers
  (:mod:`pyckafast._dask.producers`).
* :func:`rbf_cka` — one task per pair of row chunks (i <= j), each the in-memory pass over that
  chunk pair (``pyckafast._cpu.rbf.set_pair_terms``); the block-pair scheduler of
  :mod:`pyckafast._core.pairs` adds the pair sums and scatters the row sums to their rows.
  Bandwidths by an exact median over chunk pairs (:mod:`pyckafast._dask.rbf`).

Any active ``dask.distributed`` client is used (as for every ``.compute()``), so the same call
runs on a laptop or on a cluster::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")
    x = dask.array.from_zarr("activations_a.zarr")      # (n, p1), chunked by rows
    y = dask.array.from_zarr("activations_b.zarr")      # (n, p2), same row chunks
    pyckafast.dask.linear_cka(x, y, debiased=True)

Dask is optional (``pip install pyckafast[dask]``); this module imports it when called.
"""

from __future__ import annotations

from ._core import combine, dispatch, params
from ._core.inputs import prepare_pair
from ._core.optional import require
from ._core.params import validate_params
from ._core.types import ArrayLike, Bandwidth, CPUBackend
from ._core.validation import min_samples
from ._core.progress import Progress
from ._core.passes import dask_progress
from .rbf import RBF_OPTIONS_SPEC, RBFOptions

__all__ = ["linear_cka", "rbf_cka", "linear_terms"]

_NAMES = ("dx", "dy")
_LINEAR_SPEC = {"debiased": params.BOOLEAN, "backend": params.CPU_BACKEND}


def _prepared(dx, dy, debiased: bool, backend: str, op: str):
    """Both inputs as Dask-backed Samples (array_like input wrapped, lazily) and the producer."""
    da = require("dask.array", "pyckafast.dask")

    min_n, why = min_samples(debiased)
    sx, sy, _ = prepare_pair(da.asarray(dx), da.asarray(dy), min_n=min_n, why=why, names=_NAMES)
    return sx, sy, dispatch.producer(op, "dask", backend)


@validate_params({**_LINEAR_SPEC, "progress": params.PROGRESS}, owner="pyckafast.dask.linear_cka")
def linear_cka(dx: ArrayLike, dy: ArrayLike, *, debiased: bool = False,
               backend: CPUBackend = "auto", progress: Progress = None) -> float:
    """Exact linear CKA of two Dask arrays of shape (n, p1), (n, p2) chunked by rows.

    Parameters
    ----------
    dx, dy : dask.array.Array or array_like
        Representations of the same n samples (rows). Row chunks of ``dy`` are aligned to those
        of ``dx`` and columns are made one chunk (a rechunk when needed).
    debiased : bool, default False
        False: biased HSIC (Kornblith et al. 2019); True: unbiased HSIC (Song et al. 2012).
    backend : {"auto", "numpy", "numba", "cpp"}, default "auto"
        CPU backend run on the workers for the per-chunk terms (see :func:`pyckafast.linear_cka`).
    progress : None, bool or callable, optional
        None/False: silent (default); True: a tqdm bar on stderr; a callable:
        ``progress(done, total)`` in tasks of each Dask computation, under the local schedulers
        (a ``dask.distributed`` cluster reports through its own dashboard and
        ``distributed.progress``).

    Returns
    -------
    float
        Equal to ``pyckafast.linear_cka(dx.compute(), dy.compute(), ...)`` to float64 rounding.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import pyckafast, pyckafast.dask
    >>> x = np.random.default_rng(0).normal(size=(1000, 6))
    >>> y = x[:, :3] ** 2
    >>> d = pyckafast.dask.linear_cka(da.from_array(x, chunks=300), da.from_array(y, chunks=250))
    >>> abs(d - pyckafast.linear_cka(x, y)) < 1e-12
    True
    """
    sx, sy, produce = _prepared(dx, dy, debiased, backend, "linear")
    with dask_progress(progress, desc="dask linear"):
        return combine.cka_from_hsic(produce(sx, sy, debiased=debiased))


@validate_params(_LINEAR_SPEC, owner="pyckafast.dask.linear_terms")
def linear_terms(dx: ArrayLike, dy: ArrayLike, *, debiased: bool = False,
                 backend: CPUBackend = "auto"):
    """Build a ``dask.delayed`` of the exact linear terms of all rows (tree-reduced).

    Parameters
    ----------
    dx, dy : dask.array.Array or array_like
        Representations of the same n samples (rows), as in :func:`linear_cka`.
    debiased : bool, default False
        Also compute the row-norm terms that debiased CKA needs.
    backend : {"auto", "numpy", "numba", "cpp"}, default "auto"
        CPU backend run on the workers for the per-chunk terms.

    Returns
    -------
    dask.delayed.Delayed
        Computes to the :class:`~pyckafast._core.terms.LinearTerms` of all rows (mergeable,
        e.g. into a :class:`pyckafast.LinearCKAState`).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import pyckafast.dask
    >>> x = da.from_array(np.random.default_rng(0).normal(size=(100, 3)), chunks=30)
    >>> pyckafast.dask.linear_terms(x, x ** 2).compute().n
    100
    """
    from ._dask import producers

    sx, sy, _ = _prepared(dx, dy, debiased, backend, "linear")
    return producers.linear_terms(sx, sy, debiased=debiased, backend=backend)


@validate_params({**RBF_OPTIONS_SPEC, "sigma": [params.OPTIONAL, params.positive_real()],
                  "debiased": params.BOOLEAN, "backend": params.CPU_BACKEND, "tile": params.ROWS,
                  "progress": params.PROGRESS},
                 owner="pyckafast.dask.rbf_cka", rules=params.RBF_RULES)
def rbf_cka(
    dx: ArrayLike, dy: ArrayLike, *, sigma: float | None = None, threshold: float = 1.0,
    bandwidth: Bandwidth = "kornblith", debiased: bool = False, backend: CPUBackend = "auto",
    tile: int | None = None,
    n_pairs: int = 100_000, seed: int | None = 0, progress: Progress = None,
) -> float:
    """Exact RBF-kernel CKA of two Dask arrays chunked by rows, in O(n) memory per worker.

    Parameters
    ----------
    dx, dy : dask.array.Array or array_like
        Representations of the same n samples, as in :func:`linear_cka`.
    sigma : float, optional
        Explicit bandwidth for both x and y (``K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))``);
        overrides ``bandwidth``.
    threshold : float, default 1.0
        Multiplier: ``sigma^2 = threshold^2 * median`` of the squared distances.
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        As in :func:`pyckafast.rbf_cka`: "kornblith", exact median of all n^2 squared distances,
        the n zeros of the diagonal included (Kornblith et al. 2019); "offdiag", exact median of
        the n(n-1)/2 distinct pairs. Exact medians cost a few extra passes over the chunk
        pairs. "sampled": median over ``n_pairs`` random pairs i != j drawn with ``seed`` (the
        same pairs as in memory), one pass over the sampled rows only.
    debiased : bool, default False
        Biased HSIC (Gretton et al. 2005) or unbiased HSIC (Song et al. 2012).
    backend : {"auto", "numpy", "numba", "cpp"}, default "auto"
        CPU backend of the RBF tiles on the workers.
    tile : int, optional
        Rows per tile inside a chunk pair (bounds each task's temporaries to tile^2 floats).
    n_pairs : int, default 100000
        Pairs drawn by ``bandwidth="sampled"`` (an error with another rule or with ``sigma``).
    seed : int or None, default 0
        Seed of ``bandwidth="sampled"`` (likewise).
    progress : None, bool or callable, optional
        As in :func:`linear_cka`: tasks of each Dask computation (the bandwidth passes and the
        RBF pass are computations of their own).

    Returns
    -------
    float
        Equal to the in-memory RBF CKA to float64 rounding.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import pyckafast.dask
    >>> x = np.random.default_rng(0).normal(size=(300, 4))
    >>> v = pyckafast.dask.rbf_cka(da.from_array(x, chunks=100), da.from_array(2 * x, chunks=100))
    >>> round(v, 10)
    1.0
    """
    sx, sy, produce = _prepared(dx, dy, debiased, backend, "rbf")
    options = RBFOptions.of(sigma, threshold, bandwidth, n_pairs, seed)
    with dask_progress(progress, desc="dask rbf"):
        return combine.cka_from_hsic(produce(sx, sy, debiased=debiased, options=options,
                                             tile=tile))
