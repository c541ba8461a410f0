"""Up-front cost of a CKA/HSIC call: the pass it takes, its work, memory and expected time.

:func:`estimate_cost` reads only shapes and dtypes (no pass over the data) and resolves the
same choices the call would make (:func:`pyckafast._core.dispatch.linear_form` for the linear
form, the tile sizes of the RBF pass). The expected time divides the flop count by this
machine's rate, measured once per process on a small GEMM: BLAS rather than the engine's own
kernels, so the figure says whether a call takes seconds or hours, not to 10 %.

Flop counts (a multiply-add counts two):

* linear, feature form: ``n (p1^2 + p2^2 + 2 p1 p2)`` (two SYRKs, one GEMM);
* linear, sample forms (in-memory Grams or tiles): ``n^2 (p1 + p2)`` plus the element-wise
  sums, about ``6 n^2``;
* RBF: ``n^2 / 2`` pairs, each ``2 (p1 + p2)`` flops of dot products and about ``_EXP_FLOPS``
  flop-equivalents for the two ``expm1`` and the sums; an exact median rule adds about
  ``_MEDIAN_PASSES`` distance passes per side (histogram selection), the sampled rule
  ``n_pairs (p1 + p2)``, an explicit sigma nothing.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._core import dispatch, params
from ._core.pairs import default_tile
from ._core.params import validate_params
from ._core.types import ArrayLike, Bandwidth, Form, Kernel, Sigma

__all__ = ["CostEstimate", "estimate_cost", "measured_flop_rate"]

# Flop-equivalents per pair of the RBF pass beyond its dot products (two expm1, three products,
# four sums), fitted to the fused C++ pass against the GEMM rate of the same machine.
_EXP_FLOPS = 60
# Distance passes of an exact median per side (histogram selection: 2 to 4), each with its
# binning (about 20 flop-equivalents per pair).
_MEDIAN_PASSES = 3
_BIN_FLOPS = 20
# The measured GEMM: X'Y of two chunks of (rows, width), the shape of the engine's GEMMs.
_GEMM_ROWS, _GEMM_WIDTH = 2048, 256


@dataclass(frozen=True)
class CostEstimate:
    """What a CKA/HSIC call will cost, before it runs (made by :func:`estimate_cost`).

    Parameters
    ----------
    kernel : str
        "linear" or "rbf".
    form : str
        The pass: "features", "samples" or "tiles" (linear), "pairs" (RBF).
    n, p_x, p_y : int
        Samples and widths.
    block_pairs : int
        Block pairs of the O(n^2) pass (0 for the linear feature form, which streams chunks,
        and for the in-memory sample form).
    bandwidth_passes : int
        Extra passes over pairs to choose the RBF bandwidth (0: none, or a sampled median).
    flops : float
        Floating-point operations (flop-equivalents for the RBF exponentials).
    bytes : int
        Memory the pass holds beyond its inputs.
    seconds : float
        Expected time at this machine's measured rate.
    rate : float
        The measured rate, flop/s (a GEMM in the input dtype, all threads).
    fits : bool
        Whether the pass fits in the memory available here. False: no linear form does (the
        estimate is of the one needing least memory, or of the form asked for), and the call
        itself would raise MemoryError.

    Examples
    --------
    >>> import pyckafast
    >>> est = pyckafast.estimate_cost((10_000, 64), (10_000, 64), kernel="rbf", rate=1e10)
    >>> est.form, est.block_pairs, round(est.seconds, 1)
    ('pairs', 55, 6.0)
    """

    kernel: str
    form: str
    n: int
    p_x: int
    p_y: int
    block_pairs: int
    bandwidth_passes: int
    flops: float
    bytes: int
    seconds: float
    rate: float
    fits: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict.

        Returns
        -------
        dict
            Field name -> value (str, int or float).

        Examples
        --------
        >>> import pyckafast
        >>> pyckafast.estimate_cost((100, 4), (100, 2), rate=1e9).as_dict()["form"]
        'features'
        """
        return asdict(self)

    def __str__(self) -> str:
        pairs = f", {self.block_pairs:,} block pairs" if self.block_pairs else ""
        extra = (f" + {self.bandwidth_passes} bandwidth passes" if self.bandwidth_passes else "")
        fits = "" if self.fits else " (more than this machine has: no form fits in memory)"
        return (f"{self.kernel} CKA, {self.form} pass{extra}: n = {self.n:,}, p = {self.p_x} + "
                f"{self.p_y}{pairs}; {self.flops:.3g} flop, {_size(self.bytes)} beyond the "
                f"inputs{fits}; about {_duration(self.seconds)} at {self.rate / 1e9:.3g} GFLOP/s")


@validate_params({"kernel": params.KERNEL, "debiased": params.BOOLEAN,
                  "form": params.FORM, "sigma": params.SIGMA,
                  "bandwidth": [params.StrOptions(("kornblith", "offdiag", "sampled"))],
                  "n_pairs": [params.positive_int()], "tile": params.ROWS,
                  "chunk_size": params.ROWS, "rate": [params.OPTIONAL, params.positive_real()]})
def estimate_cost(x: ArrayLike | tuple[int, int], y: ArrayLike | tuple[int, int],
                  kernel: Kernel = "linear", *, debiased: bool = False, form: Form = "auto",
                  sigma: Sigma = None, bandwidth: Bandwidth = "kornblith", n_pairs: int = 100_000,
                  tile: int | None = None, chunk_size: int | None = None,
                  rate: float | None = None) -> CostEstimate:
    """Estimate the cost of ``cka(x, y, kernel=kernel, ...)`` from shapes and dtypes only.

    Parameters
    ----------
    x, y : array_like or tuple of int
        The inputs (only ``.shape`` and ``.dtype`` are read: NumPy arrays, memmaps, Dask, CuPy
        and torch arrays), or their shapes ``(n, p)`` (then float64 is assumed).
    kernel : {"linear", "rbf"}, default "linear"
        Which CKA.
    debiased : bool, default False
        Taken for the signature of :func:`pyckafast.cka`; both estimators cost the same.
    form : {"auto", "features", "samples", "tiles"}, default "auto"
        Linear kernel: the form to cost ("auto": the one the call would pick here).
    sigma : float or (float, float), optional
        RBF: an explicit bandwidth (no bandwidth passes).
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        RBF: the median rule (exact rules add passes over pairs).
    n_pairs : int, default 100000
        RBF: pairs of the sampled median.
    tile, chunk_size : int, optional
        Rows per tile (RBF, tiled linear form) or per chunk (linear feature form).
    rate : float, optional
        The flop/s to assume; default: :func:`measured_flop_rate` (measured once per process,
        about a tenth of a second).

    Returns
    -------
    CostEstimate
        The pass, its block pairs, flops, memory beyond the inputs and expected seconds.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> est = pyckafast.estimate_cost((1_000_000, 256), (1_000_000, 128))
    >>> est.form, est.block_pairs
    ('features', 0)
    >>> est = pyckafast.estimate_cost(np.zeros((20_000, 64)), np.zeros((20_000, 8)), kernel="rbf")
    >>> est.form, est.block_pairs, est.bandwidth_passes
    ('pairs', 210, 6)
    >>> est.seconds > 0
    True
    >>> est = pyckafast.estimate_cost((10**12, 10**6), (10**12, 10), rate=1e12)
    >>> est.fits, est.form
    (False, 'features')
    """
    (n, p1, itemsize_x), (n_y, p2, itemsize_y) = _shape(x, "x"), _shape(y, "y")
    if n != n_y:
        raise ValueError(f"x and y must have the same number of samples (rows); got {n} and {n_y}.")
    itemsize = max(itemsize_x, itemsize_y)
    rate = rate or measured_flop_rate(np.float32 if itemsize <= 4 else np.float64)
    fits = True
    if kernel == "linear":
        try:
            chosen = dispatch.linear_form(form, n, p1, p2, itemsize)
        except MemoryError:  # an estimate still: of the form asked for, or the smallest
            fits = False
            chosen = form if form != "auto" else min(
                ("features", "tiles"), key=lambda f: _linear(n, p1, p2, itemsize, f, tile,
                                                             chunk_size)[3])
        chosen, pairs, flops, nbytes = _linear(n, p1, p2, itemsize, chosen, tile, chunk_size)
        passes = 0
    else:
        chosen, pairs, flops, nbytes, passes = _rbf(n, p1, p2, itemsize, sigma, bandwidth,
                                                    n_pairs, tile)
    return CostEstimate(kernel, chosen, n, p1, p2, pairs, passes, float(flops), int(nbytes),
                        flops / rate, rate, fits)


def _shape(a, name: str) -> tuple[int, int, int]:
    """(n, p, itemsize) of an array or a shape tuple (float64 assumed)."""
    if isinstance(a, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in a):
        shape, itemsize = a, 8
    elif hasattr(a, "shape") and hasattr(a, "dtype"):
        shape, itemsize = tuple(int(v) for v in a.shape), _itemsize(a.dtype)
    else:
        raise TypeError(f"{name} must be an array or a shape tuple (n, p); "
                        f"got {type(a).__name__}.")
    if len(shape) not in (1, 2) or min(shape) < 1:
        raise ValueError(f"{name} must have shape (n,) or (n, p) with n, p >= 1; got {shape}.")
    return shape[0], (shape[1] if len(shape) == 2 else 1), itemsize


def _itemsize(dtype) -> int:
    """Bytes per element of the compute dtype: integers and bool compute in float64, float16 in
    float32."""
    try:
        d = np.dtype(dtype)
    except TypeError:  # a torch dtype
        return max(4, min(8, int(getattr(dtype, "itemsize", 8))))
    return 8 if d.kind in "biu" else max(4, min(8, d.itemsize))


def _linear(n, p1, p2, itemsize, chosen, tile, chunk_size):
    """(form, block pairs, flops, bytes) of the linear pass in form ``chosen``."""
    if chosen == "features":
        rows = min(n, chunk_size or max(256, (8 << 20) // (itemsize * max(p1, p2))))
        nbytes = (p1 * p1 + p2 * p2 + p1 * p2) * (8 + itemsize) + 2 * rows * (p1 + p2) * itemsize
        return chosen, 0, n * (p1 * p1 + p2 * p2 + 2 * p1 * p2), nbytes
    flops = n * n * (p1 + p2) + 6 * n * n
    if chosen == "samples":  # the two Grams in memory: one step, no block pairs
        return chosen, 0, flops, 2 * n * n * 8
    rows = min(n, tile or dispatch.tile_rows(p1, p2, itemsize))
    blocks = -(-n // rows)
    return chosen, blocks * (blocks + 1) // 2, flops, dispatch.tile_bytes(n, p1, p2, itemsize, tile)


def _rbf(n, p1, p2, itemsize, sigma, bandwidth, n_pairs, tile):
    rows = min(n, tile or default_tile(itemsize))
    blocks = -(-n // rows)
    pairs = n * n / 2
    flops = pairs * (2 * (p1 + p2) + _EXP_FLOPS)
    passes = 0
    if sigma is None and bandwidth == "sampled":
        flops += 3 * min(n_pairs, pairs) * (p1 + p2)
    elif sigma is None:
        passes = 2 * _MEDIAN_PASSES  # per side
        flops += _MEDIAN_PASSES * pairs * (2 * (p1 + p2) + 2 * _BIN_FLOPS)
    nbytes = 4 * rows * rows * 8 + 2 * rows * (p1 + p2) * itemsize + 6 * n * 8
    return "pairs", blocks * (blocks + 1) // 2, flops, nbytes, passes


@functools.lru_cache(maxsize=None)
def measured_flop_rate(dtype=np.float64) -> float:
    """This machine's GEMM rate in flop/s for ``dtype``, measured once per process.

    Parameters
    ----------
    dtype : numpy dtype, default float64
        The GEMM's dtype: float32 or float64.

    Returns
    -------
    float
        The best of three timings of ``X'Y`` for two (2048, 256) chunks (0.27 GFLOP), all
        threads: the shape of the engine's own GEMMs.

    Examples
    --------
    >>> from pyckafast.cost import measured_flop_rate
    >>> measured_flop_rate() > 1e6
    True
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((_GEMM_ROWS, _GEMM_WIDTH)).astype(dtype) for _ in range(2))
    out = a.T @ b  # warm-up: BLAS threads start, pages are touched
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        np.matmul(a.T, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * _GEMM_ROWS * _GEMM_WIDTH ** 2 / max(best, 1e-9)


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} TiB"  # pragma: no cover


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.2g} s"
    if seconds < 7200:
        return f"{seconds / 60:.2g} min"
    return f"{seconds / 3600:.3g} h"
