"""Linear terms on a GPU: row chunks shifted by a fused kernel, GEMMs on cuBLAS, float64 sums.

Per chunk of rows: one kernel writes the rows minus a fixed shift (the first chunk's mean, as on
the CPU) into a reused device buffer in the input dtype and adds the column sums (and the
debiased row-norm terms) in float64; then x'x, y'y (SYRK) and x'y (GEMM) of the buffer run in the
input dtype and are added to float64 accumulators on the device. NaN/Inf are detected through
each chunk's column sums without a host round trip; the terms cross to the host once, at the end.
Host inputs (NumPy, memmaps) are copied chunk by chunk through two pinned buffers (by a few host
threads: NumPy's copy releases the GIL) into two device landing buffers on a separate copy
stream, so that the upload of chunk c + 1 overlaps the kernels and GEMMs of chunk c, and an input
larger than GPU memory streams through. Out of memory: the chunk is halved and the pass rerun.

The chunk Grams' shape is switchable for measurement (``gram_shape`` or the environment variable
PYCKAFAST_GPU_GRAM): "syrk" (default: SYRK for x'x and y'y, one GEMM for x'y), "gemm" (three
GEMMs) or "joint" (one SYRK of [x | y], whose upper triangle holds all three blocks).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import ceil

import numpy as np

from .._cpu.linear import first_chunk_mean
from .._core.pairs import retry_out_of_memory
from .._core.terms import LinearTerms, RowNormTerms
from .._core.validation import check_finite_sums

__all__ = ["linear_terms", "default_rows", "GRAM_SHAPES", "gram_shape", "copy_rows"]

_CHUNK_BYTES = 512 << 20  # rows per chunk: about this many bytes of x and y together
_MIN_ROWS = 32  # smallest chunk tried after out-of-memory errors
_MEMORY_SHARE = 0.5  # of the free device memory, for the chunk buffers and the p x p sums
GRAM_SHAPES = ("syrk", "gemm", "joint")
_COPY_THREADS = 4  # host threads filling a pinned buffer (memcpy bandwidth of one core is ~10 GB/s)
_COPY_MIN_BYTES = 8 << 20  # below this one thread copies
_POOL: list[ThreadPoolExecutor] = []


def gram_shape(shape: str | None = None) -> str:
    """The chunk Gram shape: ``shape``, else $PYCKAFAST_GPU_GRAM, else "syrk"."""
    shape = shape or os.environ.get("PYCKAFAST_GPU_GRAM") or "syrk"
    if shape not in GRAM_SHAPES:
        raise ValueError(f"gram_shape (or PYCKAFAST_GPU_GRAM) must be one of {GRAM_SHAPES}; "
                         f"got {shape!r}.")
    return shape


def copy_rows(dst: np.ndarray, src, threads: int = _COPY_THREADS) -> None:
    """dst[...] = src by row ranges on a few threads (page-locked destination, any source
    layout, memmaps included); small copies stay on the calling thread."""
    if threads <= 1 or dst.nbytes < _COPY_MIN_BYTES or dst.shape[0] < 2 * threads:
        np.copyto(dst, src)
        return
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(_COPY_THREADS, thread_name_prefix="pyckafast-stage"))
    step = ceil(dst.shape[0] / threads)
    parts = [_POOL[0].submit(np.copyto, dst[lo:lo + step], src[lo:lo + step])
             for lo in range(0, dst.shape[0], step)]
    for part in parts:
        part.result()


def default_rows(n: int, p1: int, p2: int, itemsize: int, host: bool, free: int) -> int:
    """Rows per chunk: ~_CHUNK_BYTES of input, fewer if device memory is short."""
    per_row = (p1 + p2) * itemsize * (2 if host else 1) + 16  # buffers (+ staging), q and r
    fixed = (p1 * p1 + p2 * p2 + p1 * p2) * (8 + itemsize) + 16 * (p1 + p2) * 8
    budget = _MEMORY_SHARE * free - fixed
    want = _CHUNK_BYTES // ((p1 + p2) * itemsize)
    return int(min(n, max(256, min(want, budget // per_row))))


def linear_terms(engine, x, y, n: int, *, debiased: bool, chunk_size: int | None,
                 precision: str = "highest", gram: str | None = None) -> LinearTerms:
    """Exact linear terms of all n rows of x and y (``_core.inputs.Samples``) on ``engine``;
    ``gram`` is the chunk Gram shape (see :func:`gram_shape`)."""
    shape = gram_shape(gram)
    wide = np.promote_types(x.dtype, y.dtype)
    p1, p2 = x.data.shape[1], y.data.shape[1]
    host = not (x.on_device and y.on_device)
    rows = int(chunk_size) if chunk_size else default_rows(n, p1, p2, wide.itemsize, host,
                                                           engine.free_bytes())
    rows = min(rows, n)
    sums_gib = (p1 * p1 + p2 * p2 + p1 * p2) * 8 / 2**30
    return retry_out_of_memory(
        lambda r: _one_pass(engine, x, y, n, wide, r, debiased, precision, shape), rows, _MIN_ROWS,
        errors=engine.oom_errors, release=engine.release, what="linear CKA",
        per=lambda r: f"{r} rows per chunk",
        detail=f" (x: {p1} features, y: {p2}; the p x p sums alone need {sums_gib:.2f} GiB)")


@dataclass
class _NormSums:
    """Device accumulators of the debiased row-norm terms (and per-chunk q, r scratch)."""

    q: object
    r: object
    qx: object
    rx: object
    qy: object
    ry: object
    scalars: object  # sum q, sum r, sum q^2, sum r^2, sum q r

    @classmethod
    def zeros(cls, xp, rows: int, p1: int, p2: int) -> _NormSums:
        return cls(xp.empty(rows), xp.empty(rows), xp.zeros(p1), xp.zeros(p1), xp.zeros(p2),
                   xp.zeros(p2), xp.zeros(5))

    def host(self, engine) -> RowNormTerms:
        s = engine.asnumpy(self.scalars)
        return RowNormTerms(
            sum_q=float(s[0]), sum_r=float(s[1]), sum_qq=float(s[2]), sum_rr=float(s[3]),
            sum_qr=float(s[4]), qx=engine.asnumpy(self.qx), rx=engine.asnumpy(self.rx),
            qy=engine.asnumpy(self.qy), ry=engine.asnumpy(self.ry),
        )


class _Rows:
    """Row chunks of one input as device arrays of the compute dtype.

    Host input: chunk c is copied into pinned buffer c % 2 (after the host has seen that buffer's
    previous upload finish), uploaded on the engine's copy stream into landing buffer c % 2 (after
    the compute stream has passed the last reader of that landing buffer, chunk c - 2's moments)
    and handed out with the compute stream waiting for the upload. :meth:`done` records the end of
    the chunk's readers.
    """

    def __init__(self, engine, samples, dtype: np.dtype, rows: int):
        self.engine, self.a, self.dtype = engine, samples.data, np.dtype(dtype)
        self.on_device = samples.on_device
        if not self.on_device:
            shape = (rows, self.a.shape[1])
            self.pinned = [engine.pinned(shape, self.a.dtype) for _ in range(2)]
            self.landing = [engine.xp.empty(shape, self.a.dtype) for _ in range(2)]
            self.uploaded: list = [None, None]  # per slot: its last upload's event
            self.consumed: list = [None, None]  # per slot: the compute stream past its readers
            self.count = 0

    def shift(self, rows: int):
        """The first chunk's mean rounded to the compute dtype (see first_chunk_mean), on device."""
        xp = self.engine.xp
        if not self.on_device:
            return xp.asarray(first_chunk_mean(self.a, rows).astype(self.dtype))
        head = self.a[: min(rows, self.a.shape[0])]
        mean = head.mean(axis=0, dtype=np.float64).astype(self.dtype)
        return xp.ascontiguousarray(xp.nan_to_num(mean, nan=0.0, posinf=0.0, neginf=0.0))

    def chunk(self, lo: int, hi: int):
        if self.on_device:
            part = self.a[lo:hi]
            return part if part.dtype == self.dtype else part.astype(self.dtype)
        slot = self.count % 2
        self.count += 1
        self.engine.wait(self.uploaded[slot])  # the host may refill the pinned buffer
        staged = self.pinned[slot][: hi - lo]
        copy_rows(staged, self.a[lo:hi])  # host work overlaps the device's previous chunk
        landing = self.landing[slot][: hi - lo]
        self.uploaded[slot] = self.engine.upload(staged, landing, after=self.consumed[slot])
        self.engine.use(self.uploaded[slot])
        return landing if landing.dtype == self.dtype else landing.astype(self.dtype)

    def done(self) -> None:
        """The chunk last handed out has all its readers queued: mark the end of them."""
        if not self.on_device:
            self.consumed[(self.count - 1) % 2] = self.engine.record()


def _one_pass(engine, x, y, n, wide, rows, debiased, precision, shape) -> LinearTerms:
    xp = engine.xp
    p1, p2 = x.data.shape[1], y.data.shape[1]
    src_x, src_y = _Rows(engine, x, wide, rows), _Rows(engine, y, wide, rows)
    shift_x, shift_y = src_x.shift(rows), src_y.shift(rows)
    bx, by = xp.empty((rows, p1), wide), xp.empty((rows, p2), wide)
    grams = _Grams(engine, xp, shape, rows, p1, p2, wide)
    sum_x, sum_y, csx, csy = xp.zeros(p1), xp.zeros(p2), xp.empty(p1), xp.empty(p2)
    norms = _NormSums.zeros(xp, rows, p1, p2) if debiased else None
    nchunks = ceil(n / rows)
    bad = xp.zeros((nchunks, 2), dtype=bool)  # NaN/Inf seen in the chunk's x / y column sums
    with engine.precision(precision):
        for c in range(nchunks):
            lo, hi = c * rows, min(n, (c + 1) * rows)
            m = hi - lo
            csx.fill(0)
            csy.fill(0)
            engine.moments(src_x.chunk(lo, hi), src_y.chunk(lo, hi), shift_x, shift_y, bx[:m],
                           by[:m], csx, csy, norms)
            src_x.done()  # the landing buffers' only reader is the moments kernel
            src_y.done()
            sum_x += csx
            sum_y += csy
            bad[c, 0] = ~xp.isfinite(csx).all()
            bad[c, 1] = ~xp.isfinite(csy).all()
            grams.add(bx[:m], by[:m])
    _raise_non_finite(engine.asnumpy(bad), rows, n, x, y)
    xx, yy, xy = grams.totals()
    return LinearTerms(
        n=n, shift_x=engine.asnumpy(shift_x).astype(np.float64),
        shift_y=engine.asnumpy(shift_y).astype(np.float64), sum_x=engine.asnumpy(sum_x),
        sum_y=engine.asnumpy(sum_y), xx=engine.asnumpy(xx), yy=engine.asnumpy(yy),
        xy=engine.asnumpy(xy), norms=None if norms is None else norms.host(engine),
        eps=float(np.finfo(wide).eps),
    )


class _Grams:
    """float64 sums of the chunks' x'x, y'y and x'y in one of the GRAM_SHAPES."""

    def __init__(self, engine, xp, shape: str, rows: int, p1: int, p2: int, wide):
        self.engine, self.xp, self.shape, self.p1 = engine, xp, shape, p1
        self.triangular = False  # the accumulated x'x and y'y hold one triangle (SYRK)
        if shape == "joint":
            self.both = xp.empty((rows, p1 + p2), wide)
            self.g = xp.zeros((p1 + p2, p1 + p2), wide)
            self.sum = xp.zeros((p1 + p2, p1 + p2))
        else:
            self.gx, self.gy = xp.zeros((p1, p1), wide), xp.zeros((p2, p2), wide)
            self.gxy = xp.zeros((p1, p2), wide)
            self.xx, self.yy, self.xy = xp.zeros((p1, p1)), xp.zeros((p2, p2)), xp.zeros((p1, p2))

    def add(self, bx, by) -> None:
        engine = self.engine
        if self.shape == "joint":  # [x | y]' [x | y]: x'x, x'y (upper right) and y'y in one SYRK
            both = self.both[: bx.shape[0]]
            both[:, : self.p1] = bx
            both[:, self.p1:] = by
            self.triangular = engine.gram(both, self.g)
            self.sum += self.g
            return
        if self.shape == "gemm":
            engine.cross(bx, bx, self.gx)
            engine.cross(by, by, self.gy)
        else:
            self.triangular = engine.gram(bx, self.gx)  # the other triangle of gx stays 0
            engine.gram(by, self.gy)
        self.xx += self.gx
        self.yy += self.gy
        engine.cross(bx, by, self.gxy)
        self.xy += self.gxy

    def totals(self):
        """(x'x, y'y, x'y) summed over the chunks, full matrices."""
        if self.shape == "joint":
            p1, s = self.p1, self.sum
            xx, yy, xy = s[:p1, :p1], s[p1:, p1:], s[:p1, p1:]
        else:
            xx, yy, xy = self.xx, self.yy, self.xy
        if self.triangular:
            xx, yy = _mirror(self.xp, xx), _mirror(self.xp, yy)
        return xx, yy, xy


def _mirror(xp, g):
    """The full symmetric matrix from one accumulated triangle (the other is exactly 0)."""
    return xp.triu(g) + xp.triu(g, 1).T


def _raise_non_finite(bad: np.ndarray, rows: int, n: int, x, y) -> None:
    for c, (bx, by) in enumerate(bad):
        for flag, side, name in ((bx, x, "x"), (by, y, "y")):
            if flag:  # the CPU path's message: the chunk's first bad row and column
                lo, hi = c * rows, min(n, (c + 1) * rows)
                check_finite_sums(np.array([np.nan]), name, lo, hi, side.data[lo:hi])
