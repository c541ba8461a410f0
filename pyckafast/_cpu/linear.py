"""Producers of linear terms on the CPU: chunked feature-space moments and sample-space Grams.

Drivers here get the resolved backend module (``ops``, with ``linear_moments`` and
``gemm_dtype``), never a backend name: :mod:`pyckafast._core.dispatch` chose it.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from .._core import combine, dispatch
from . import linear_tiles, moments, pass_progress
from .._core.combine import gram_is_zero_variance
from .._core.inputs import Samples, check_finite_sums, column_mean
from .._core.scaling import power_of_two_scale
from .._core.terms import KernelTerms, LinearTerms
from .._core.threads import get_num_threads
from .moments import _rounded_shift, _scaled, row_frame

__all__ = [
    "default_chunk_rows", "feature_terms", "row_frame", "first_chunk_mean", "sample_terms",
    "hsic_triple", "check_cpu_precision",
]

# Rows per chunk: a chunk of one side is about this many bytes, small enough to stay in cache
# between the shift pass and the GEMMs, large enough for BLAS to run at full rate.
_CHUNK_BYTES = 8 << 20


def default_chunk_rows(p1: int, p2: int, itemsize: int) -> int:
    return int(np.clip(_CHUNK_BYTES // (itemsize * max(p1, p2)), 256, 1 << 16))


def feature_terms(
    x: np.ndarray, y: np.ndarray, *, ops: ModuleType, debiased: bool = False,
    chunk_size: int | None = None, shift: tuple[np.ndarray, np.ndarray] | None = None,
    start: int = 0, report=None,
) -> LinearTerms:
    """Exact linear terms of all rows, one pass of the moment state's host feed (a 1 x 1 map:
    :func:`pyckafast._cpu.moments.feed`), memory O(p^2 + chunk_size * p); ``start`` offsets row
    numbers in errors (for a block of a larger array); ``report(rows_done, n)`` after each chunk.

    ``shift``: the frame's shifts in the data's own units (no scaling, no far-chunk restarts);
    else the first chunk's (:func:`row_frame`), chunk-parallel where
    :func:`pyckafast._core.dispatch.linear_workers` says so.
    """
    rows = chunk_size or default_chunk_rows(x.shape[1], y.shape[1], max(x.itemsize, y.itemsize))
    workers, spread = 1, [math.inf, math.inf]
    if shift is not None:
        frames = [(np.asarray(shift[0], np.float64), 1.0), (np.asarray(shift[1], np.float64), 1.0)]
    else:
        fx, fy = row_frame(x, rows), row_frame(y, rows)
        frames, spread = [(fx.shift, fx.scale), (fy.shift, fy.scale)], [fx.spread, fy.spread]
        workers = dispatch.linear_workers(ops, x.shape[0], x.shape[1], y.shape[1], rows,
                                          max(x.itemsize, y.itemsize), get_num_threads())
    parts = moments.feed([x, y], ["x", "y"], [(0, 1)], frames, ops, debiased, spread=spread,
                         start=start, rows=rows, workers=workers, report=report)
    for other in parts[1:]:
        parts[0].merge(other)
    return parts[0].pair(0, 1)


def check_cpu_precision(precision: str) -> None:
    """"highest" only: CPU BLAS has no TF32 (the spec already allowed "tf32" for GPU data)."""
    if precision != "highest":
        raise ValueError(
            f"precision={precision!r} needs the cuda backend (GPU tensor cores); on the CPU only "
            "'highest' is available."
        )


def hsic_triple(
    x: Samples, y: Samples, *, ops: ModuleType, debiased: bool, chunk_size: int | None = None,
    form: str = "auto", precision: str = "highest", progress=None,
) -> combine.HSICTriple:
    """The linear HSIC triple of prepared host inputs, in the form :func:`dispatch.linear_form`
    picks: chunked feature-space moments, or for p >> n the sample-space sums, from the n x n
    Grams in memory or over block pairs of Gram tiles (:mod:`pyckafast._cpu.linear_tiles`).
    ``progress`` (:mod:`pyckafast._core.progress`) counts rows, block pairs, or one unit for the
    in-memory Grams."""
    check_cpu_precision(precision)
    chosen = dispatch.linear_form(form, x.n, x.p, y.p, max(x.data.itemsize, y.data.itemsize))
    unit = {"features": "rows", "tiles": "pair", "samples": "pass"}[chosen]
    with pass_progress.reporter(progress, desc=f"linear ({chosen})", unit=unit) as report:
        if chosen == "tiles":
            terms, zero_x, zero_y = linear_tiles.tiled_sample_terms(x.data, y.data,
                                                                    progress=report)
        elif chosen == "samples":
            terms, zero_x, zero_y = sample_terms(x.data, y.data)
            if report is not None:
                report(1, 1)
        else:
            terms = feature_terms(x.data, y.data, ops=ops, debiased=debiased,
                                  chunk_size=chunk_size, report=report)
            return combine.linear_hsic(terms, debiased)
    return combine.kernel_hsic(terms, debiased)._replace(zero_x=zero_x, zero_y=zero_y)


def first_chunk_mean(a: np.ndarray, rows: int) -> np.ndarray:
    """The shift of :func:`row_frame` for producers that do not scale (scale 1)."""
    return _rounded_shift(column_mean(a[: min(rows, a.shape[0])]), a.dtype)


def sample_terms(
    x: np.ndarray, y: np.ndarray, *, column_block: int = 4096
) -> tuple[KernelTerms, bool, bool]:
    """Kernel terms of the centred linear Grams K = X~X~', L = Y~Y~' (for p >> n), and whether
    x and y have zero variance.

    Columns are centred a block at a time, so no full centred copy of x or y is made.
    """
    k, zero_x, scale_x = _centred_gram(x, "x", column_block)
    l, zero_y, scale_y = _centred_gram(y, "y", column_block)
    terms = KernelTerms(
        n=x.shape[0], s_kl=float(np.vdot(k, l)), s_kk=float(np.vdot(k, k)),
        s_ll=float(np.vdot(l, l)), row_k=k.sum(axis=1), row_l=l.sum(axis=1),
        diag_k=np.diagonal(k).copy(), diag_l=np.diagonal(l).copy(), eps=_eps(x.dtype, y.dtype),
        log2_k=-2 * (math.frexp(scale_x)[1] - 1), log2_l=-2 * (math.frexp(scale_y)[1] - 1),
    )
    return terms, zero_x, zero_y


def _centred_gram(a: np.ndarray, name: str, column_block: int) -> tuple[np.ndarray, bool, float]:
    """The Gram of the centred rows times scale^2, whether it is zero, and the power of two
    ``scale`` (chosen from the first column block's spread; 1 unless the data are extreme)."""
    n = a.shape[0]
    gram = np.zeros((n, n))
    scale = None
    for start in range(0, a.shape[1], column_block):
        block = a[:, start:start + column_block]
        mean = column_mean(block)
        check_finite_sums(mean, name, 0, n, block)
        centred = block - mean.astype(block.dtype)
        if scale is None:
            scale = power_of_two_scale(float(np.max(np.abs(centred))))
        centred = _scaled(centred, scale)
        gram += centred @ centred.T
    zero = gram_is_zero_variance(float(np.trace(gram)), float(gram.sum()), n, _eps(a.dtype))
    return gram, zero, scale


def _eps(*dtypes: np.dtype) -> float:
    return max(float(np.finfo(d).eps) for d in dtypes)
