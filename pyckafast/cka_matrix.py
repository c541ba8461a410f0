"""Layer x layer CKA maps: each representation's own terms are computed once."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ._core import combine, dispatch, params
from ._core.inputs import Samples, check_same_n, into_dask, prepare_list
from ._core.params import Callables, Boolean, StrOptions, validate_params
from ._core.progress import Progress
from ._core.validation import min_samples
from ._core.types import ArrayLike, Backend, Bandwidth, Kernel, Sigma
from .rbf import RBF_OPTIONS_SPEC, RBFOptions

__all__ = ["cka_matrix"]

#: The forms a map accepts (types.Form less "samples": a map never forms n x n Grams whole).
MapForm = Literal["auto", "features", "tiles"]


@validate_params({
    "kernel": params.KERNEL, "debiased": params.BOOLEAN, "backend": params.BACKEND,
    "tile": params.ROWS, **{k: RBF_OPTIONS_SPEC[k] for k in ("sigma", "threshold", "bandwidth")},
    "form": [StrOptions(("auto", "features", "tiles"))],
    "progress": [params.OPTIONAL, Boolean(), Callables()],
})
def cka_matrix(
    xs: Sequence[ArrayLike], ys: Sequence[ArrayLike] | None = None, *, kernel: Kernel = "linear",
    debiased: bool = False, sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: Bandwidth = "kornblith", backend: Backend = "auto", tile: int | None = None,
    form: MapForm = "auto", progress: Progress = None,
) -> np.ndarray:
    """Return the CKA between every representation in ``xs`` and every one in ``ys``.

    Parameters
    ----------
    xs : sequence of array_like, each (n, p_i)
        Representations of the same n samples: host arrays, GPU arrays, or Dask arrays chunked
        by rows (host arrays beside Dask ones join them; the passes then run as Dask tasks on
        the active scheduler, e.g. a ``dask.distributed`` cluster, and nothing is read before).
    ys : sequence of array_like, optional
        A second list (same n). None: ``xs`` against itself; the result is then symmetric with a
        unit diagonal (nan for a representation without variance) and only pairs i < j are
        computed.
    kernel : {"linear", "rbf"}, default "linear"
        The kernel of the Gram matrices.
    debiased : bool, default False
        CKA from unbiased HSIC (Song et al. 2012) instead of the biased estimator.
    sigma : float or (float, float), optional
        RBF only: explicit bandwidths, as in :func:`rbf_cka` (a scalar for both sides of every
        pair). None: each representation's bandwidth is chosen once from its data.
    threshold : float, default 1.0
        RBF only: multiplier of the median distance, as in :func:`rbf_cka`.
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        RBF only: which median sets the bandwidth, as in :func:`rbf_cka`.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Who computes the terms. GPU inputs (CuPy, torch CUDA) or ``backend="cuda"``: every pair
        runs on the GPU.
    tile : int, optional
        Rows per block of the RBF pass and of the tiled linear pass (default: chosen from the
        dtype and the layers' widths). The result does not depend on it beyond float64
        rounding.
    form : {"auto", "features", "tiles"}, default "auto"
        How pairs of host layers (and of wide GPU layers) are computed. Linear: "features" takes
        every pair from p x p moments; "tiles" every pair from Gram tiles in sample space (one
        pass over block pairs for all of them); "auto" sends the layers whose own moments would
        not fit in memory, or cost more than their n x n Gram (about p > n), to the tiled pass
        (every pair they are in, and every pair of two layers that pass computes anyway), the
        other pairs to the feature pass. RBF: the pairs deeper than 1024 features (p_i + p_j;
        "tiles": all pairs) go to one tiled pass in which each layer's kernel tile is computed
        once per block pair; the others (and all with ``backend="numpy"``, the reference, or
        "features") take one pass per pair.
    progress : None, bool or callable, default None
        True shows a tqdm bar per pass, a callable is called as ``progress(done, total)`` (rows
        of the linear feature pass, block pairs of a tiled pass).

    Returns
    -------
    numpy.ndarray
        Shape (len(xs), len(ys)), float64: the CKA of every pair ``(xs[i], ys[j])``.

    Notes
    -----
    Linear: every representation's own moments (its Gram X'X about a fixed shift, column sums
    and row norms) are accumulated once, chunk by chunk in float64; each pair then costs one
    chunked cross GEMM X'Y (the same estimator as :func:`linear_cka`; no centred copy of any
    layer is made). Wide layers go through one sample-space pass over block pairs in which
    every layer's Gram tile is computed once and shared by all of its pairs (memory
    O(L (n + tile^2) + tile p)). RBF: each representation's bandwidth is found once; each pair
    is one tiled O(n)-memory pass (:func:`rbf_cka`), or for wide layers a share of one tiled
    pass for all of them. Dask: the narrow layers' moments are made per row chunk where it
    lives and merged exactly in a tree; the wide layers (and RBF maps) take the tiled pass over
    pairs of row chunks; the result equals the in-memory map.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 8))
    >>> m = pyckafast.cka_matrix([x, 2 * x, np.tanh(x)])
    >>> m.shape, bool(np.allclose(m, m.T)), float(m[0, 1].round(12))
    ((3, 3), True, 1.0)
    """
    symmetric = ys is None
    xs_ = prepare_list(xs, "xs", finite=True)
    ys_ = xs_ if symmetric else prepare_list(ys, "ys", finite=True)
    if not symmetric and "dask" in (xs_[0].kind, ys_[0].kind):  # host layers join Dask ones
        xs_, ys_ = into_dask(xs_), into_dask(ys_)
    _check_same_samples(xs_, ys_, debiased)
    options = RBFOptions.of(sigma, threshold, bandwidth) if kernel == "rbf" else None
    produce = dispatch.producer("matrix", xs_[0].kind, backend)
    pair = produce(xs_, ys_, symmetric, kernel=kernel, debiased=debiased, options=options,
                   tile=tile, form=form, progress=progress)
    # a producer that knows which layers vary (Dask: from its own pass) says so
    has_variance = getattr(pair, "has_variance", lambda i: _has_variance(xs_[i].data))
    out = np.empty((len(xs_), len(ys_)))
    for i in range(len(xs_)):
        for j in range(len(ys_)):
            if symmetric and j < i:
                out[i, j] = out[j, i]
            elif symmetric and i == j:
                out[i, j] = 1.0 if has_variance(i) else _nan_for(i)
            else:
                out[i, j] = combine.cka_from_hsic(pair(i, j))
    return out


def _check_same_samples(xs: list[Samples], ys: list[Samples], debiased: bool) -> None:
    """Every representation has the n rows of xs[0], n large enough for the estimator, and all
    live on one device."""
    first = xs[0]
    min_n, why = min_samples(debiased)
    for s in (*xs, *ys):
        check_same_n(first.data, s.data, min_n, why=why, names=(first.name, s.name))
    if len({s.device for s in (*xs, *ys)}) > 1:
        raise ValueError("xs and ys must live on one device; got "
                         f"{[(s.name, s.device) for s in (*xs, *ys)]}.")


_VARIANCE_ROWS = 4096  # rows compared at a time: no n x p boolean temporary (memmaps > RAM)


def _has_variance(a) -> bool:
    """Whether any row differs from the first."""
    first = a[:1]
    return any(bool((a[lo:lo + _VARIANCE_ROWS] != first).any())
               for lo in range(0, a.shape[0], _VARIANCE_ROWS))


def _nan_for(i: int) -> float:
    warnings.warn(f"xs[{i}] has zero variance: its CKA with itself is undefined (nan).",
                  RuntimeWarning, stacklevel=3)
    return math.nan
