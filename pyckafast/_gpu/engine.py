"""The device side of the GPU producers: kernel launches, cuBLAS GEMMs, staging and memory.

The drivers (:mod:`pyckafast._gpu.linear`, :mod:`pyckafast._gpu.rbf`) only talk to an engine
through the methods below, so that CI (no GPU) runs them against a NumPy engine whose kernels are
the C++ host twins (tests/gpu_emulation.py). Only imported once CuPy is known to be usable.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from math import ceil

import cupy
import numpy as np

from . import blas
from .kernels import launch
from .oom import DeviceOutOfMemory, translated

__all__ = ["CudaEngine"]

_THREADS = 256
_SLAB_ROWS = 64  # rows per thread in the column kernels: one atomic per thread per slab
_MAX_GRID_Y = 65535
_RBF_TM = {np.dtype(np.float32): 8, np.dtype(np.float64): 4}  # pairs per thread (TM x TM)
_RBF_SLOTS = 64
_CUBLAS_TF32_TENSOR_OP_MATH = 3  # cublasMath_t in cublas_api.h (CuPy's enum does not name it)


def _i64(v: int) -> np.int64:
    return np.int64(v)


class CudaEngine:
    """Kernels and BLAS on the current CUDA device and stream."""

    xp = cupy
    # CuPy's pool, and cuBLAS workspace or pinned host allocations (translated by oom.translated)
    oom_errors = (cupy.cuda.memory.OutOfMemoryError, DeviceOutOfMemory)

    def __init__(self) -> None:
        self.stream = cupy.cuda.get_current_stream()
        self._copy_stream: cupy.cuda.Stream | None = None  # host uploads, created on first use
        try:  # cuBLAS SYRK for the x'x and y'y Grams: half the flops of a GEMM
            # (import_module: an `import cupy.cublas` here would make `cupy` a local name of
            # __init__, unbound on the line above)
            self.triangular_grams = hasattr(importlib.import_module("cupy.cublas"), "syrk")
        except ImportError:
            self.triangular_grams = False

    # -- memory ---------------------------------------------------------------------------
    def free_bytes(self) -> int:
        """Device memory free now, counting blocks CuPy's pool holds but does not use."""
        free, _ = cupy.cuda.Device().mem_info
        return int(free + cupy.get_default_memory_pool().free_bytes())

    def release(self) -> None:
        """Give the pool's cached blocks back to the device (before retrying smaller)."""
        cupy.get_default_memory_pool().free_all_blocks()

    def pinned(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """A page-locked host buffer (asynchronous uploads) viewed as a numpy array."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        with translated():  # cudaHostAlloc failures are CUDARuntimeErrors
            mem = cupy.cuda.alloc_pinned_memory(max(1, count * dtype.itemsize))
        return np.frombuffer(mem, dtype, count).reshape(shape)

    def upload(self, host: np.ndarray, device: cupy.ndarray,
               after: cupy.cuda.Event | None = None) -> cupy.cuda.Event:
        """Asynchronous copy of a pinned host array into a device array on the copy stream, once
        the compute stream has passed ``after`` (the last reader of ``device``); returns the
        copy's event (for :meth:`use` and, host-side, :meth:`wait` before refilling ``host``)."""
        if self._copy_stream is None:
            self._copy_stream = cupy.cuda.Stream(non_blocking=True)
        if after is not None:
            self._copy_stream.wait_event(after)
        device.set(host, stream=self._copy_stream)
        event = cupy.cuda.Event()
        event.record(self._copy_stream)
        return event

    def use(self, event: cupy.cuda.Event) -> None:
        """Work queued on the compute stream from now on waits for ``event`` (device-side)."""
        self.stream.wait_event(event)

    def record(self) -> cupy.cuda.Event:
        """An event at the current end of the compute stream."""
        event = cupy.cuda.Event()
        event.record(self.stream)
        return event

    @staticmethod
    def wait(event: cupy.cuda.Event | None) -> None:
        """The host waits for ``event``."""
        if event is not None:
            event.synchronize()

    @staticmethod
    def asnumpy(a) -> np.ndarray:
        return cupy.asnumpy(a)

    # -- linear moments -------------------------------------------------------------------
    def moments(self, cx, cy, sx, sy, bx, by, csx, csy, norms) -> None:
        """Shift chunk rows into bx/by, add column sums to csx/csy and, when ``norms`` is given
        (a _NormSums of device arrays), the debiased row-norm terms (csrc/cuda/linear_moments_cuda.cu)."""
        m = cx.shape[0]
        nslabs = min(_MAX_GRID_Y, max(1, ceil(m / _SLAB_ROWS)))
        slab = ceil(m / nslabs)
        t = "float" if bx.dtype == np.float32 else "double"
        for src, shift, dst, colsum in ((cx, sx, bx, csx), (cy, sy, by, csy)):
            p = src.shape[1]
            rs, cs = (s // src.itemsize for s in src.strides)
            launch("linear_moments_cuda.cu", f"pcf_shift_columns<{t}>", (ceil(p / _THREADS), nslabs),
                   (_THREADS,), (src, _i64(m), _i64(p), _i64(rs), _i64(cs), shift, dst, colsum,
                                 _i64(slab)))
        if norms is None:
            return
        q, r = norms.q[:m], norms.r[:m]
        warps_per_block = _THREADS // 32
        row_blocks = min(ceil(m / warps_per_block), 1 << 16)
        for buf, out in ((bx, q), (by, r)):
            launch("linear_moments_cuda.cu", f"pcf_row_norms<{t}>", (row_blocks,), (_THREADS,),
                   (buf, _i64(m), _i64(buf.shape[1]), out))
        for buf, qsum, rsum in ((bx, norms.qx, norms.rx), (by, norms.qy, norms.ry)):
            p = buf.shape[1]
            launch("linear_moments_cuda.cu", f"pcf_weighted_columns<{t}>",
                   (ceil(p / _THREADS), nslabs), (_THREADS,),
                   (buf, _i64(m), _i64(p), q, r, qsum, rsum, _i64(slab)))
        launch("linear_moments_cuda.cu", "pcf_norm_scalars", (min(ceil(m / _THREADS), 1024),),
               (_THREADS,), (q, r, _i64(m), norms.scalars))

    def gram(self, b, out) -> bool:
        """out = b.T @ b in b's dtype. cuBLAS SYRK (half the flops) fills only one triangle and
        leaves the other untouched: returns True then. TF32 runs on the GEMM path."""
        if self.triangular_grams and not self._tf32:
            with translated():  # a failed cuBLAS workspace allocation is out of memory too
                cupy.cublas.syrk("T", b, out=out, alpha=1.0, beta=0.0, lower=False)
            return True
        self.cross(b, b, out)
        return False

    def cross(self, a, b, out) -> None:
        """out = a.T @ b; float32 under precision("tf32") asks cuBLAS for TF32 explicitly."""
        with translated():
            if self._tf32 and a.dtype == np.float32 and b.dtype == np.float32 \
                    and a.flags.c_contiguous and b.flags.c_contiguous:
                self._tf32_gemm(a, b, out)
            else:
                cupy.matmul(a.T, b, out=out)

    def _tf32_gemm(self, a, b, out) -> None:
        from cupy_backends.cuda.libs import cublas

        handle = cupy.cuda.device.get_cublas_handle()
        cublas.setStream(handle, self.stream.ptr)
        blas.gemm_at_b(cublas.gemmEx, handle, a, b, out, lambda arr: arr.data.ptr)

    _tf32 = False

    @contextmanager
    def precision(self, precision: str):
        """GEMMs inside use TF32 tensor cores for float32 when precision == "tf32"."""
        if precision != "tf32":
            yield
            return
        from cupy_backends.cuda.libs import cublas

        handle = cupy.cuda.device.get_cublas_handle()
        previous = cublas.getMathMode(handle)
        cublas.setMathMode(handle, _CUBLAS_TF32_TENSOR_OP_MATH)
        self._tf32 = True
        try:
            yield
        finally:
            cublas.setMathMode(handle, previous)
            self._tf32 = False

    # -- RBF tiles ------------------------------------------------------------------------
    @staticmethod
    def rbf_rows_per_tile(dtype: np.dtype) -> int:
        return 16 * _RBF_TM[np.dtype(dtype)]

    def rbf_pair(self, a, b, kernel_x: tuple, kernel_y: tuple, same_block: bool, row_k_a,
                 row_l_a, row_k_b, row_l_b, sums) -> None:
        """Add the pair terms of centred blocks a, b (``_Block``s of device arrays) with one
        launch of csrc/cuda/rbf_pairs_cuda.cu: over its slots, ``sums`` (shape (slots, 3)) gains
        s_kl, s_kk, s_ll of every ordered pair the block pair stands for (both orders of each
        (i in a, j in b); every i != j of a block with itself), and the row sums of E, F go to
        row_*_a and row_*_b (with ``same_block``, b is a and row_*_b must be row_*_a)."""
        dtype = np.dtype(a.x.dtype)
        tm = _RBF_TM[dtype]
        bm = 16 * tm
        ma, mb = a.x.shape[0], b.x.shape[0]
        grid = (ceil(mb / bm), ceil(ma / bm))
        if grid[1] > _MAX_GRID_Y:
            raise ValueError(f"an RBF block of {ma} rows exceeds the grid limit ({_MAX_GRID_Y * bm}).")
        t = "float" if dtype == np.float32 else "double"
        scalar = dtype.type
        launch("rbf_pairs_cuda.cu", f"pcf_rbf_tiles<{t}, {tm}>", grid, (_THREADS,), (
            a.x, a.y, a.nx, a.ny, _i64(ma), b.x, b.y, b.nx, b.ny, _i64(mb),
            _i64(a.x.shape[1]), _i64(a.y.shape[1]), scalar(kernel_x[0]), scalar(kernel_x[1]),
            np.int32(kernel_x[2]), scalar(kernel_y[0]), scalar(kernel_y[1]), np.int32(kernel_y[2]),
            np.int32(bool(same_block)), row_k_a, row_l_a, row_k_b, row_l_b, sums,
            np.int32(sums.shape[0]),
        ))

    slots = _RBF_SLOTS

    # -- exact-median passes --------------------------------------------------------------
    def d2_hist(self, sides: list[dict], same_block: bool) -> None:
        """One launch of csrc/cuda/d2_hist_cuda.cu for one or two sides (grid z): each side's
        dict holds its blocks ``a``, ``b`` ((rows, norms) of device arrays), window ``lo``,
        ``hi``, ``bins`` (0: collect into ``values`` up to ``capacity``) and the uint64
        counters ``below``, ``counts``, ``nvalues`` the kernel adds to."""
        (xa, _), (xb, _) = sides[0]["a"], sides[0]["b"]  # the first side sets the grid
        dtype = np.dtype(xa.dtype)
        tm = _RBF_TM[dtype]
        bm = 16 * tm
        grid = (ceil(xb.shape[0] / bm), ceil(xa.shape[0] / bm), len(sides))
        if grid[1] > _MAX_GRID_Y:
            raise ValueError(f"a block of {xa.shape[0]} rows exceeds the grid limit "
                             f"({_MAX_GRID_Y * bm}).")
        args: list = [_i64(xa.shape[0]), _i64(xb.shape[0]), np.int32(bool(same_block))]
        for s in (sides * 2)[:2]:  # a lone side fills both argument sets; grid z runs the first
            (a, n_a), (b, n_b) = s["a"], s["b"]
            args += [a, b, n_a, n_b, _i64(a.shape[1]), np.float64(s["lo"]), np.float64(s["hi"]),
                     _i64(s["bins"]), s["below"], s["counts"], s["values"], _i64(s["capacity"]),
                     s["nvalues"]]
        t = "float" if dtype == np.float32 else "double"
        launch("d2_hist_cuda.cu", f"pcf_d2_hist<{t}, {tm}>", grid, (_THREADS,), tuple(args))
