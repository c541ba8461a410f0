"""The pybind11 C++ extension (``pyckafast._ext``) as a backend.

Linear CKA: the fused shift/column-sum pass here, GEMMs with BLAS. RBF: ``rbf_pairs``, one fused
pass that computes the dot products in registers (no BLAS, no tile in memory) for rows of total
depth ``dx + dy <= FUSED_MAX_DEPTH``; wider rows go through BLAS dot-product tiles and
``rbf_tile`` (a cache-blocked GEMM wins there). Both run the same vectorised epilogue. The exact
median's passes: ``d2_pass_kernel`` over a whole set (same depth limit), else ``d2_histogram``.
"""

from __future__ import annotations

import numpy as np

from .._core.rbf_entry import kernel_args
from .._core.terms import RowNormTerms
from .._core.threads import get_num_threads

try:
    from .. import _ext
except ImportError as exc:  # not built (e.g. a source checkout); the registry reports why
    _ext = None
    _IMPORT_ERROR = f"the compiled extension pyckafast._ext did not load ({exc})"
else:
    _IMPORT_ERROR = None


def unusable_reason() -> str | None:
    return _IMPORT_ERROR


# The kernels release the GIL and keep no shared state: chunk-parallel passes may call them
# from several threads at once.
CHUNK_PARALLEL = True


def gemm_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(dtype)


def _kernel(name: str, dtype: np.dtype):
    _ext.set_thread_limit(get_num_threads())  # for the calls this thread makes next
    if dtype == np.float32:
        return getattr(_ext, f"{name}_f32")
    if dtype == np.float64:
        return getattr(_ext, f"{name}_f64")
    raise TypeError(f"the cpp backend takes float32 or float64 arrays; got {dtype}.")


def linear_moments(x, y, shift_x, shift_y, out_x, out_y, debiased):
    """Write the shifted rows into ``out_x``/``out_y``; return (sum_x, sum_y, norms or None)."""
    kernel = _kernel("linear_moments", x.dtype)
    sum_x, sum_y, qx, rx, qy, ry, s = kernel(
        x, y, shift_x.astype(x.dtype), shift_y.astype(y.dtype), out_x, out_y, bool(debiased)
    )
    if not debiased:
        return sum_x, sum_y, None
    norms = RowNormTerms(
        sum_q=float(s[0]), sum_r=float(s[1]), sum_qq=float(s[2]), sum_rr=float(s[3]),
        sum_qr=float(s[4]), qx=qx, rx=rx, qy=qy, ry=ry,
    )
    return sum_x, sum_y, norms


# Widest rows (dx + dy) the register-tiled pass takes; measured in bench/README.md ("RBF: fused
# pass or BLAS tiles").
FUSED_MAX_DEPTH = 1024
# Bytes of packed rows per work item (both sides): the block stays in L2.
_FUSED_BLOCK_BYTES = 2 * 2**20


def fused_block(depth: int, itemsize: int) -> int:
    """Rows per work item of ``rbf_pairs`` for rows of total depth ``depth``."""
    rows = _FUSED_BLOCK_BYTES // max(1, depth * itemsize)
    return int(min(2048, max(256, rows // 32 * 32)))


def rbf_pairs(xa, ya, xb, yb, shift_x, shift_y, kernel_x, kernel_y, same_block, block):
    """Sums of one set of rows against another (or itself): ``PairTerms`` fields, in order.
    Kernels: ``RbfKernel``s, (gamma, c, m) or bare gammas (E = K - 1)."""
    kernel = _kernel("rbf_pairs", xa.dtype)
    return kernel(xa, ya, xb, yb, shift_x, shift_y, kernel_args(kernel_x), kernel_args(kernel_y),
                  same_block, block)


def d2_pass_kernel(dtype: np.dtype):
    """``_ext.d2_pass_f32/f64``: one exact-median selection pass over all pairs of a set."""
    return _kernel("d2_pass", np.dtype(dtype))


def rbf_tile(gx, gy, nxa, nya, nxb, nyb, kernel_x, kernel_y, diagonal):
    """Fused exp + float64 sums of one RBF tile pair (see ``pyckafast._cpu.rbf.PairTerms``)."""
    return _kernel("rbf_tile", gx.dtype)(gx, gy, nxa, nya, nxb, nyb, kernel_args(kernel_x),
                                         kernel_args(kernel_y), diagonal)


def d2_histogram(g, na, nb, diagonal, lo, hi, nbins):
    """Histogram of one tile's squared distances, for rows too wide for ``d2_pass_kernel``: the
    extension has no tile histogram, so these bin in the Numba kernel (imported on first use)."""
    from .ops_numba_rbf import d2_histogram as numba_histogram

    return numba_histogram(g, na, nb, diagonal, lo, hi, nbins)
