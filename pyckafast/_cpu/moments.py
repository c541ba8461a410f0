"""The host feed of the moment state: rows of every layer, chunk by chunk, into float64 sums.

Each chunk of each layer is shifted once (by the backend's ``linear_moments`` kernel, which
also adds the column sums and the debiased row-norm sums in float64) into a buffer of the GEMM
dtype (float32 layers run float32 GEMMs); its own Gram is made once per chunk (SYRK) whatever
the number of pairs it is in, and each held pair adds one GEMM. A state of one pair hands both
sides to the pair kernel at once (the cross row-norm terms come in the same pass).

This is the one driver of the frames: the batch is presented in the state's frames when their
scales still fit it (else in its own: a scale change, merged exactly); a chunk whose mean lies
farther from the frame's shift than the data's spread starts a part about its own mean, merged
exactly (:meth:`pyckafast._core.moments.MomentSums.merge`). Nothing here touches the state: the
parts are returned and the caller commits them once the whole batch went through.
"""

from __future__ import annotations

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .._core.inputs import check_finite_sums, column_mean
from .._core.scaling import power_of_two_scale
from .._core.moments import Cross, CrossNorms, MomentSums, OwnNorms, Pair
from .._core.threads import (blas_threads, get_num_threads, loop_torch, single_threaded_blas,
                             threads)

__all__ = ["Frame", "row_frame", "chunk_rows", "batch_frames", "feed",
           "widest"]

_CHUNKS_BYTES = 8 << 20  # the chunks of all layers together stay near this size
_SMALL_CHUNK = 1 << 20  # elements of a chunk (all layers) below which the shift is one thread


# Data whose spread lies outside [2^-50, 2^50] are multiplied by a power of two that brings it
# near 1 (exact): float32 GEMMs of values near 1e19 overflow (squares near 1e38), near 1e-22 the
# squares are subnormal and lose their bits, and float64 sums of squared moments overflow or
# underflow beyond about 1e+-75 (_core/scaling). CKA is scale invariant; HSIC is scaled back.
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


def _rounded_shift(mean: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        shift = mean.astype(dtype)
    return np.nan_to_num(shift, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float64)


def chunk_rows(widths: list[int], itemsize: int) -> int:
    return int(np.clip(_CHUNKS_BYTES // (itemsize * max(1, sum(widths))), 256, 1 << 16))


def batch_frames(data: list[np.ndarray], rows: int, state: MomentSums | None):
    """The frames of a batch ((shift, scale) per layer) and its spreads (scaled units): the
    state's frames when the batch's powers of two are the state's, else the batch's own."""
    frames = [row_frame(a, rows) for a in data]
    spread = [f.spread for f in frames]
    if state is not None and [f.scale for f in frames] == [m.scale for m in state.own]:
        return state.frames, spread
    return [(f.shift, f.scale) for f in frames], spread


def feed(data: list[np.ndarray], names: list[str], pairs: list[Pair], frames, ops,
         debiased: bool, *, spread: list[float], start: int = 0, rows: int | None = None,
         workers: int = 1, own_grams: bool = True, report=None) -> list[MomentSums]:
    """The float64 sums of all rows of ``data`` (one array per layer, the same rows), as parts
    to merge: the first in ``frames``, the others about far chunks' own means.

    ``ops`` is the backend module (``linear_moments``, ``gemm_dtype``); ``spread[i]`` the
    distance from the shift beyond which a chunk of layer i counts as far; ``start`` offsets row
    numbers in errors; ``workers > 1`` runs chunk-parallel (each worker thread takes whole
    chunks into its own sums, single-threaded BLAS); ``own_grams=False`` skips the layers' own
    Grams (a later pass of :func:`pyckafast._cpu.linear_map.map_terms`); ``report(done, n)``
    after each chunk (thread-safe).
    """
    n = data[0].shape[0]
    rows = min(n, rows or chunk_rows([a.shape[1] for a in data], max(a.itemsize for a in data)))
    eps = [float(np.finfo(a.dtype).eps) for a in data]
    feeders = [_Feeder(data, names, pairs, frames, eps, ops, debiased, rows, spread, own_grams)
               for _ in range(max(1, workers))]
    chunks = [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]
    tick = _ticker(report, n)
    if len(feeders) == 1:
        with blas_threads(get_num_threads()):
            for lo, hi in chunks:
                feeders[0].add(lo, hi, start)
                tick(hi - lo)
    else:
        _run_parallel(feeders, chunks, start, tick)
    first = feeders[0].base
    for f in feeders[1:]:
        first.add(f.base)  # the same frames: an in-place add
    return [first] + [p for f in feeders for p in f.finish()]


class _Feeder:
    """One worker's sums and chunk buffers."""

    def __init__(self, data, names, pairs, frames, eps, ops, debiased, rows, spread, own_grams):
        self.data, self.names, self.pairs, self.eps = data, names, pairs, eps
        self.ops, self.debiased, self.spread, self.own_grams = ops, debiased, spread, own_grams
        self.base = self.current = MomentSums.zeros(frames, eps, pairs, debiased)
        self.parts: list[MomentSums] = []
        # One pair: the pair kernel makes both sides and their cross norms at once (in one
        # dtype: the chunks of the narrower side are upcast, as one-shot linear CKA does).
        self.paired = pairs == [(0, 1)] and len(data) == 2
        self.dtypes = [a.dtype for a in data]
        if self.paired:
            self.dtypes = [np.promote_types(*self.dtypes)] * 2
        gemm = [ops.gemm_dtype(d) for d in self.dtypes]
        self.bufs = [np.empty((rows, a.shape[1]), g) for a, g in zip(data, gemm)]
        self.grams = [np.empty((a.shape[1],) * 2, g) for a, g in zip(data, gemm)]
        self.none = [np.empty((rows, 0), g) for g in gemm]  # the kernel's empty partner
        self.none_in = [np.empty((rows, 0), d) for d in self.dtypes]
        self.matmul = _matmul_in(loop_torch())
        self.flat: dict[np.dtype, np.ndarray] = {}  # cross GEMM results, per result dtype
        for i, j in pairs:
            dt = np.result_type(gemm[i], gemm[j])
            size = data[i].shape[1] * data[j].shape[1]
            if self.flat.get(dt, np.empty(0)).size < size:
                self.flat[dt] = np.empty(size, dt)

    def add(self, lo: int, hi: int, start: int) -> None:
        # Sums that overflow are refused by the caller, before anything is committed (errstate
        # is per thread: set here, in the worker).
        with np.errstate(over="ignore", invalid="ignore"):
            self._add(lo, hi, start)

    def _add(self, lo: int, hi: int, start: int) -> None:
        # The shift kernel's threads cost more than they save on a small chunk (a batch of a
        # few hundred rows): one thread there, BLAS keeps its own for the GEMMs.
        small = (hi - lo) * sum(a.shape[1] for a in self.data) < _SMALL_CHUNK
        with threads(1) if small else contextlib.nullcontext():
            step = self._shifted(lo, hi)
        for (s, _, _), name, a in zip(step, self.names, self.data):
            check_finite_sums(s, name, start + lo, start + hi, a[lo:hi])
        m = hi - lo
        if any(float(np.max(np.abs(s), initial=0.0)) > w * m for (s, _, _), w in
               zip(step, self.spread)):  # a far chunk: continue about its own mean
            if self.current is not self.base:
                self.parts.append(self.current)
            frames = [(_rounded_shift(shift + s / m, a.dtype), scale) for (shift, scale), (s, _, _), a
                      in zip(self.current.frames, step, self.data)]
            self.current = MomentSums.zeros(frames, self.eps, self.pairs, self.debiased)
            with threads(1) if small else contextlib.nullcontext():
                step = self._shifted(lo, hi)
        self._accumulate(step, m)

    def finish(self) -> list[MomentSums]:
        """The parts accumulated apart from ``base`` (about far chunks' means)."""
        if self.current is not self.base:
            self.parts.append(self.current)
            self.current = self.base
        return self.parts

    def _shifted(self, lo: int, hi: int) -> list[tuple]:
        """Per layer: (column sums, own norms or None, q or None), its shifted rows in
        ``bufs``; for one pair, the pair's cross norms ride on layer 1's entry."""
        m, frames = hi - lo, self.current.frames
        chunks = [_scaled(a[lo:hi].astype(d, copy=False), scale)
                  for a, d, (_, scale) in zip(self.data, self.dtypes, frames)]
        if self.paired:
            (sx, fx), (sy, fy) = frames
            s_a, s_b, t = self.ops.linear_moments(chunks[0], chunks[1], sx, sy, self.bufs[0][:m],
                                                  self.bufs[1][:m], self.debiased)
            if t is None:
                return [(s_a, None, None), (s_b, None, None)]
            return [(s_a, OwnNorms(t.sum_q, t.sum_qq, t.qx), None),
                    (s_b, OwnNorms(t.sum_r, t.sum_rr, t.ry), CrossNorms(t.sum_qr, t.rx, t.qy))]
        out = []
        in_pairs = {k for pair in self.pairs for k in pair}
        for k, (c, (shift, _)) in enumerate(zip(chunks, frames)):
            b = self.bufs[k][:m]
            s, _, t = self.ops.linear_moments(c, self.none_in[k][:m], shift, shift[:0], b,
                                              self.none[k][:m], self.debiased)
            q = None
            if t is not None and k in in_pairs:
                q = np.einsum("ij,ij->i", b, b, dtype=np.float64)
            out.append((s, None if t is None else OwnNorms(t.sum_q, t.sum_qq, t.qx), q))
        return out

    def _accumulate(self, step: list[tuple], m: int) -> None:
        sums = self.current
        for k, (mo, (s, norms, _)) in enumerate(zip(sums.own, step)):
            mo.n += m
            mo.sum += s
            if self.own_grams:
                b = self.bufs[k][:m]
                mo.gram += self.matmul(b.T, b, self.grams[k])  # one buffer: SYRK in NumPy
            if norms is not None:
                mo.norms.sum_q += norms.sum_q
                mo.norms.sum_qq += norms.sum_qq
                mo.norms.qx += norms.qx
        for (i, j), cross in sums.cross.items():
            bi, bj = self.bufs[i][:m], self.bufs[j][:m]
            dt = np.result_type(bi.dtype, bj.dtype)
            out = self.flat[dt][: bi.shape[1] * bj.shape[1]].reshape(bi.shape[1], bj.shape[1])
            cross.xy += self.matmul(bi.T, bj, out)
            if cross.norms is not None:
                _add_cross_norms(cross, step, i, j, bi, bj)


def _matmul_in(torch):
    """``matmul(a, b, out)``: NumPy's, or, inside a model loop, torch's on views of the same
    buffers (its intra-op pool is idle between forward passes: all its threads, not the one
    core left beside it; 1.5x faster on 2 cores for the MLP job's moments)."""
    if torch is None:
        return lambda a, b, out: np.matmul(a, b, out=out)

    def matmul(a, b, out):
        torch.matmul(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))
        return out

    return matmul


def _add_cross_norms(cross: Cross, step, i: int, j: int, bi, bj) -> None:
    t = cross.norms
    if isinstance(step[j][2], CrossNorms):  # the pair kernel's, made with the shift
        c = step[j][2]
        t.sum_qr += c.sum_qr
        t.rx += c.rx
        t.qy += c.qy
        return
    q, r = step[i][2], step[j][2]
    t.sum_qr += float(q @ r)
    t.rx += r @ bi
    t.qy += q @ bj


def _scaled(chunk: np.ndarray, scale: float) -> np.ndarray:
    # A power of two: the product is exact (Python float scalars keep the chunk's dtype).
    return chunk if scale == 1.0 else np.multiply(chunk, scale)


def _ticker(report, n: int):
    """tick(rows) adding finished rows to ``report(done, n)`` (a no-op without a report)."""
    if report is None:
        return lambda rows: None
    done, lock = [0], threading.Lock()

    def tick(rows: int) -> None:
        with lock:
            done[0] += rows
            report(done[0], n)

    return tick


def _run_parallel(feeders: list[_Feeder], chunks, start: int, tick) -> None:
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
                feeder.add(*chunk, start)
                tick(chunk[1] - chunk[0])

    with single_threaded_blas(), ThreadPoolExecutor(len(feeders)) as pool:
        for future in [pool.submit(work, f) for f in feeders]:
            future.result()  # re-raises a worker's error (e.g. a NaN found in its chunk)


def widest(mine: list[float], theirs: list[float]) -> list[float]:
    """Per layer the larger spread; a side that knows none (fed only GPU batches, or loaded
    from a file without spreads) takes the other's."""
    if not mine or not theirs:
        return list(mine or theirs)
    return [max(a, b) for a, b in zip(mine, theirs)]

