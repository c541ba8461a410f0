"""Producers of linear terms on the CPU: chunked feature-space moments and sample-space Grams.

Drivers here get the resolved backend module (``ops``, with ``linear_moments`` and
``gemm_dtype``), never a backend name: :mod:`pyckafast._core.dispatch` chose it.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import NamedTuple

import numpy as np

from .._core import combine, dispatch
from . import linear_tiles, pass_progress
from .._core.combine import gram_is_zero_variance
from .._core.inputs import Samples, check_finite_sums, column_mean
from .._core.scaling import power_of_two_scale
from .._core.terms import KernelTerms, LinearTerms
from .._core.threads import blas_threads, get_num_threads, single_threaded_blas, threads

__all__ = [
    "default_chunk_rows", "Accumulator", "accumulate", "block_terms", "feature_terms",
    "row_frame", "first_chunk_mean", "power_of_two_scale", "sample_terms", "hsic_triple",
    "check_cpu_precision",
]

# Rows per chunk: a chunk of one side is about this many bytes, small enough to stay in cache
# between the shift pass and the GEMMs, large enough for BLAS to run at full rate.
_CHUNK_BYTES = 8 << 20


def default_chunk_rows(p1: int, p2: int, itemsize: int) -> int:
    return int(np.clip(_CHUNK_BYTES // (itemsize * max(p1, p2)), 256, 1 << 16))


class Accumulator:
    """Running float64 sums of chunks presented in one frame (rows * scale - shift): in-place
    adds into buffers allocated once, so a stream of small batches costs its GEMMs, not p x p
    allocations."""

    def __init__(self, p1: int, p2: int, dtype: np.dtype, input_dtype: np.dtype,
                 shift_x: np.ndarray, shift_y: np.ndarray, scale: tuple[float, float]):
        self.n = 0
        self.dtype = np.dtype(dtype)
        self.shift_x, self.shift_y, self.scale = shift_x, shift_y, scale
        self.sum_x, self.sum_y = np.zeros(p1), np.zeros(p2)
        self.xx, self.yy, self.xy = np.zeros((p1, p1)), np.zeros((p2, p2)), np.zeros((p1, p2))
        self.norms = None
        self.eps = float(np.finfo(input_dtype).eps)  # sets the zero-variance threshold
        # GEMM results land here in the GEMM dtype before the float64 add.
        self._gx, self._gy = np.empty((p1, p1), dtype), np.empty((p2, p2), dtype)
        self._gxy = np.empty((p1, p2), dtype)

    def takes(self, dtype: np.dtype, scale: tuple[float, float], p1: int, p2: int) -> bool:
        """Whether chunks of this GEMM dtype, scale and width can be added in place."""
        return (self.dtype == dtype and self.scale == scale
                and (self.sum_x.size, self.sum_y.size) == (p1, p2))

    def add(self, bx: np.ndarray, by: np.ndarray, sum_x, sum_y, norms) -> None:
        self.n += bx.shape[0]
        self.sum_x += sum_x
        self.sum_y += sum_y
        # a.T @ a on one buffer lets NumPy call SYRK: half the flops of a general GEMM.
        self.xx += np.matmul(bx.T, bx, out=self._gx)
        self.yy += np.matmul(by.T, by, out=self._gy)
        self.xy += np.matmul(bx.T, by, out=self._gxy)
        if norms is not None:
            self.norms = norms if self.norms is None else self.norms + norms

    def terms(self, *, copy: bool = False) -> LinearTerms:
        """The sums so far (views of the running buffers unless ``copy``)."""
        own = (lambda a: a.copy()) if copy else (lambda a: a)
        return LinearTerms(
            n=self.n, shift_x=self.shift_x, shift_y=self.shift_y, sum_x=own(self.sum_x),
            sum_y=own(self.sum_y), xx=own(self.xx), yy=own(self.yy), xy=own(self.xy),
            norms=self.norms, eps=self.eps, scale_x=self.scale[0], scale_y=self.scale[1],
        )


def block_terms(
    x: np.ndarray, y: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray, ops,
    debiased: bool, rows: int, start: int = 0, scale: tuple[float, float] = (1.0, 1.0),
    spread: tuple[float, float] = (math.inf, math.inf), workers: int = 1, report=None,
) -> LinearTerms:
    """Exact terms of all rows of x and y, multiplied by the powers of two ``scale`` and shifted
    by (shift_x, shift_y) (in scaled units), ``rows`` at a time (see :func:`accumulate`).

    ``workers > 1``: chunk-parallel. Each worker thread takes whole chunks (shift pass, then
    single-threaded GEMMs into its own float64 sums) and the sums merge at the end: no barrier
    per GEMM and no BLAS thread pool spinning while another process holds a core, and one
    worker's memory-bound shift pass overlaps another's GEMMs.

    ``report(rows_done, n)`` (thread-safe, :func:`pass_progress.reporter`) after each chunk.
    """
    wide = np.promote_types(x.dtype, y.dtype)

    def new_accumulator() -> Accumulator:
        return Accumulator(x.shape[1], y.shape[1], ops.gemm_dtype(wide), wide, shift_x, shift_y,
                           scale)

    feeders = [_Feeder(new_accumulator(), ops, debiased, min(rows, x.shape[0]), spread, wide)
               for _ in range(max(1, workers))]
    chunks = [(lo, min(lo + rows, x.shape[0])) for lo in range(0, x.shape[0], rows)]
    tick = _row_ticker(report, x.shape[0])
    if len(feeders) == 1:
        with blas_threads(get_num_threads()):
            for lo, hi in chunks:
                feeders[0].add(x, y, lo, hi, start)
                tick(hi - lo)
    else:
        _run_parallel(feeders, chunks, x, y, start, tick)
    terms = feeders[0].acc.terms()
    for part in [f.acc.terms() for f in feeders[1:]] + [p for f in feeders for p in f.finish()]:
        if part.n:
            terms = part if terms.n == 0 else terms.merge(part)
    return terms


def accumulate(
    x: np.ndarray, y: np.ndarray, acc: Accumulator, ops, debiased: bool, rows: int, *,
    start: int = 0, spread: tuple[float, float] = (math.inf, math.inf),
) -> list[LinearTerms]:
    """Add the rows of x and y, ``rows`` at a time, into ``acc`` (in its frame).

    A chunk whose mean lies farther than ``spread`` (the data's spread, scaled units) from the
    frame's shift is shifted by its own mean instead and accumulated apart (with the chunks that
    follow it, while they stay near); those parts are returned, to be merged exactly. So the
    GEMMs, in the input dtype, always see data near 0, whatever the order of the rows.
    ``ops`` is a backend module with ``linear_moments`` and ``gemm_dtype``. Memory beyond the
    inputs: two chunk buffers (and a scaled copy of the chunk when a scale is not 1, i.e. only
    for data of extreme magnitude). ``start`` offsets row numbers in errors.
    """
    feeder = _Feeder(acc, ops, debiased, min(rows, x.shape[0]), spread,
                     np.promote_types(x.dtype, y.dtype))
    for lo in range(0, x.shape[0], rows):
        feeder.add(x, y, lo, min(lo + rows, x.shape[0]), start)
    return feeder.finish()


class _Feeder:
    """Adds chunks to one accumulator through its own chunk buffers (see :func:`accumulate`)."""

    def __init__(self, acc: Accumulator, ops, debiased: bool, rows: int,
                 spread: tuple[float, float], wide: np.dtype):
        self.acc, self.current, self.parts = acc, acc, []
        self.ops, self.debiased, self.spread, self.wide = ops, debiased, spread, wide
        acc.eps = max(acc.eps, float(np.finfo(wide).eps))
        self.bufx = np.empty((rows, acc.sum_x.size), acc.dtype)
        self.bufy = np.empty((rows, acc.sum_y.size), acc.dtype)

    def add(self, x: np.ndarray, y: np.ndarray, lo: int, hi: int, start: int) -> None:
        cx, cy = x[lo:hi], y[lo:hi]
        if cx.dtype != cy.dtype:  # kernels take one dtype: upcast this chunk of the narrower side
            cx, cy = cx.astype(self.wide, copy=False), cy.astype(self.wide, copy=False)
        cx, cy = _scaled(cx, self.acc.scale[0]), _scaled(cy, self.acc.scale[1])
        bx, by = self.bufx[: hi - lo], self.bufy[: hi - lo]
        moments = self._moments(cx, cy, bx, by)
        check_finite_sums(moments[0], "x", start + lo, start + hi, cx)
        check_finite_sums(moments[1], "y", start + lo, start + hi, cy)
        if _far(moments[0], hi - lo, self.spread[0]) or _far(moments[1], hi - lo, self.spread[1]):
            self._restart(moments, hi - lo, cx.dtype)
            moments = self._moments(cx, cy, bx, by)
        self.current.add(bx, by, *moments)

    def finish(self) -> list[LinearTerms]:
        """The terms of the chunks accumulated apart from ``acc``."""
        if self.current is not self.acc:
            self.parts.append(self.current.terms())
            self.current = self.acc
        return self.parts

    def _moments(self, cx, cy, bx, by):
        return self.ops.linear_moments(cx, cy, self.current.shift_x, self.current.shift_y, bx, by,
                                       self.debiased)

    def _restart(self, moments, rows: int, dtype: np.dtype) -> None:
        """Continue in a new frame at this chunk's own mean."""
        if self.current is not self.acc:
            self.parts.append(self.current.terms())
        c = self.current
        self.current = Accumulator(c.sum_x.size, c.sum_y.size, c.dtype, self.wide,
                                   _rounded_shift(c.shift_x + moments[0] / rows, dtype),
                                   _rounded_shift(c.shift_y + moments[1] / rows, dtype), c.scale)


def _row_ticker(report, n: int):
    """tick(rows) adding finished rows to ``report(done, n)`` (a no-op without a report)."""
    if report is None:
        return lambda rows: None
    done, lock = [0], threading.Lock()

    def tick(rows: int) -> None:
        with lock:
            done[0] += rows
            report(done[0], n)

    return tick


def _run_parallel(feeders: list[_Feeder], chunks: list[tuple[int, int]], x, y,
                  start: int, tick=lambda rows: None) -> None:
    """Each feeder's thread takes the next chunk until none is left (a busy core just takes
    fewer chunks); BLAS runs single-threaded meanwhile, the threads are the parallelism."""
    lock, todo = threading.Lock(), iter(chunks)

    def work(feeder: _Feeder) -> None:
        with threads(1):  # the kernels run on this worker alone
            while True:
                with lock:
                    chunk = next(todo, None)
                if chunk is None:
                    return
                feeder.add(x, y, *chunk, start)
                tick(chunk[1] - chunk[0])

    with single_threaded_blas(), ThreadPoolExecutor(len(feeders)) as pool:
        for future in [pool.submit(work, f) for f in feeders]:
            future.result()  # re-raises a worker's error (e.g. a NaN found in its chunk)


def _scaled(chunk: np.ndarray, scale: float) -> np.ndarray:
    # A power of two: the product is exact (Python float scalars keep the chunk's dtype).
    return chunk if scale == 1.0 else np.multiply(chunk, scale)


def _far(shifted_sum: np.ndarray, rows: int, spread: float) -> bool:
    """Whether a chunk's mean (shift + sum / rows) is farther than ``spread`` from the shift."""
    return float(np.max(np.abs(shifted_sum))) > spread * rows


def feature_terms(
    x: np.ndarray, y: np.ndarray, *, ops: ModuleType, debiased: bool = False,
    chunk_size: int | None = None, shift: tuple[np.ndarray, np.ndarray] | None = None,
    start: int = 0, report=None,
) -> LinearTerms:
    """Exact linear terms of all rows, one pass, memory O(p^2 + chunk_size * p); ``start``
    offsets row numbers in errors (for a block of a larger array); ``report(rows_done, n)``
    after each chunk."""
    rows = chunk_size or default_chunk_rows(x.shape[1], y.shape[1], max(x.itemsize, y.itemsize))
    if shift is not None:  # an explicit shift is in the data's own units: no scaling
        return block_terms(x, y, *shift, ops, debiased, rows, start=start, report=report)
    fx, fy = row_frame(x, rows), row_frame(y, rows)
    workers = dispatch.linear_workers(ops, x.shape[0], x.shape[1], y.shape[1], rows,
                                      max(x.itemsize, y.itemsize), get_num_threads())
    return block_terms(x, y, fx.shift, fy.shift, ops, debiased, rows, start=start,
                       scale=(fx.scale, fy.scale), spread=(fx.spread, fy.spread), workers=workers,
                       report=report)


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


# Data whose spread lies outside [2^-50, 2^50] are multiplied by a power of two that brings it
# near 1 (exact, _core/scaling): float32 GEMMs of values near 1e19 overflow (squares near 1e38),
# near 1e-22 the squares are subnormal and lose their bits, and float64 sums of squared moments
# overflow or underflow beyond about 1e+-75. CKA is scale invariant; HSIC is scaled back.
_SPREAD_ROWS = 256  # rows of the first chunk that estimate the spread


class Frame(NamedTuple):
    """How the rows of one input are presented to the GEMMs: ``a * scale - shift``."""

    shift: np.ndarray  # float64 values of the input dtype, in scaled units
    scale: float  # a power of two
    spread: float  # the largest |a_ij - mean_j| seen in the first rows, in scaled units


def row_frame(a: np.ndarray, rows: int) -> Frame:
    """The frame of the chunks of ``a``: ``a * scale - shift`` is near 0 and of unit size.

    The shift is the first chunk's mean (times the scale) rounded to the input dtype, so the
    subtraction is exact for values near the mean (Sterbenz); a non-finite mean gives a zero
    shift, so that the chunk's finiteness check reports the bad rows.
    """
    head = a[: min(rows, a.shape[0])]
    mean = column_mean(head)
    with np.errstate(all="ignore"):
        spread = float(np.max(np.abs(head[:_SPREAD_ROWS] - mean)))
        if spread == math.inf and np.isfinite(mean).all():  # finite data near 1e308: halve
            spread = 2.0 * float(np.max(np.abs(head[:_SPREAD_ROWS] * 0.5 - mean * 0.5)))
    scale = power_of_two_scale(spread)
    return Frame(_rounded_shift(mean * scale, a.dtype), scale,
                 spread * scale if math.isfinite(spread) else math.inf)


def first_chunk_mean(a: np.ndarray, rows: int) -> np.ndarray:
    """The shift of :func:`row_frame` for producers that do not scale (scale 1)."""
    return _rounded_shift(column_mean(a[: min(rows, a.shape[0])]), a.dtype)


def _rounded_shift(mean: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        shift = mean.astype(dtype)
    return np.nan_to_num(shift, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float64)


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
