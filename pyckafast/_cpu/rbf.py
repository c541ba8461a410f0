"""The fused, tiled RBF-HSIC pass on the CPU: exact kernel terms in O(n) memory.

Every RBF producer (this module, the Dask reduction, the CUDA driver) sums, over the block pairs
of :mod:`pyckafast._core.pairs` (pairs i != j), the pair sums and row sums of

    E_ij = 2^m exp(-gamma_x |x_i - x_j|^2) - c,   F_ij likewise for y with its own (m, c)

with per-kernel constants chosen from the typical entry (:mod:`pyckafast._core.rbf_entry`):
neither HSIC estimator changes, the diagonal 2^m - c goes to :class:`KernelTerms` as a constant,
and neither wide (K near 1) nor narrow (K << 1) bandwidths cancel. Each input is centred
once per call (:class:`~pyckafast._core.pairs.CentredSide`, shared with the bandwidth selection):
the squared distances come from the expansion |a|^2 + |b|^2 - 2 a.b, which is only accurate for
data near the origin.

Drivers here take the resolved backend ``ops`` (never a name). Its ``rbf_tile`` does the fused
exp and the float64 accumulation on BLAS dot-product tiles; a backend that also has ``rbf_pairs``
(the C++ extension) computes the dot products itself, in registers, for rows of total depth up to
its ``FUSED_MAX_DEPTH`` (:func:`~pyckafast._core.dispatch.rbf_fused`): then the pass over a set
pair is one call and no tile exists.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from .._core import bandwidth as bw, dispatch
from .._core.rbf_entry import (RbfKernel, kernel_args, pass_dtype, sampled_typical,
                               scaled_side, typical_exponent)
from .._core.pairs import (CentredBlock, CentredSide, PairTerms, PairTermsSum, block_bounds,
                           centre, compute_dtype, default_tile, reduce_pairs)
from .._core.terms import KernelTerms
from . import pass_progress

__all__ = ["Sides", "centred", "prepared", "side_gamma", "rbf_terms_under", "rbf_terms", "side_kernels",
           "kernel_terms", "set_pair_terms"]

Sides = tuple[CentredSide, CentredSide]  # the x and y rows of one row set


def centred(a: np.ndarray, name: str, ops: ModuleType) -> CentredSide:
    """Host input ``a`` prepared for backend ``ops``: centred once, in its compute dtype."""
    return centre(a, name, compute_dtype(ops, a.dtype))


def prepared(a: np.ndarray, name: str, ops: ModuleType) -> tuple[CentredSide, int]:
    """(side, k): ``a`` centred once, its rows multiplied by 2^k when their magnitude is extreme
    (:func:`~pyckafast._core.rbf_entry.scaled_side`; gammas of the data are scaled by 2^-2k)."""
    return scaled_side(centred(a, name, ops))


def side_gamma(options: Any, side: CentredSide, index: int, *, ops: ModuleType,
               tile: int | None = None, k: int = 0) -> float:
    """gamma of one centred host input under ``options`` (exact medians in memory, on ``ops``),
    for its rows multiplied by 2^k (an explicit sigma is scaled with them)."""
    def exact(s: CentredSide, rule: str) -> float:
        return bw.exact_median_in_memory(s, rule, ops=ops, tile=tile)

    if options.sigma is not None:
        return bw.gamma_from_sigma(math.ldexp(options.sigma[index], k))
    return bw.side_gamma(options, side, index, exact)


def rbf_terms_under(x: np.ndarray, y: np.ndarray, *, options: Any, ops: ModuleType,
                    tile: int | None = None, progress=None) -> KernelTerms:
    """Kernel terms with the bandwidths ``options`` choose: each input is centred once and the
    same centred rows serve the bandwidth selection and the RBF pass."""
    (side_x, kx), (side_y, ky) = prepared(x, "x", ops), prepared(y, "y", ops)
    gamma_x = side_gamma(options, side_x, 0, ops=ops, tile=tile, k=kx)
    gamma_y = side_gamma(options, side_y, 1, ops=ops, tile=tile, k=ky)
    return rbf_terms((side_x, side_y), gamma_x=gamma_x, gamma_y=gamma_y, ops=ops, tile=tile,
                     options=options, progress=progress)


def side_kernels(sides: Sides, gamma_x: float, gamma_y: float,
                 options: Any = None) -> tuple[RbfKernel, RbfKernel, np.dtype]:
    """The entry constants of both kernels and the dtype of the pass (float64 for float32 data
    whose kernels are too narrow for float32: :func:`~pyckafast._core.rbf_entry.pass_dtype`)."""
    u_x, u_y = (typical_exponent(options, g, lambda s=s: sampled_typical(s),
                                 lambda s=s: s.max_sq_norm() == 0.0)  # one point: u = 0
                for g, s in ((gamma_x, sides[0]), (gamma_y, sides[1])))
    dtype = pass_dtype(np.result_type(sides[0].dtype, sides[1].dtype), u_x, u_y)
    return RbfKernel.of(gamma_x, u_x, dtype), RbfKernel.of(gamma_y, u_y, dtype), dtype


def kernel_terms(n: int, whole: PairTerms, kx: RbfKernel, ky: RbfKernel) -> KernelTerms:
    """The :class:`KernelTerms` of the off-diagonal sums of one whole set (every producer)."""
    return KernelTerms(n=n, s_kl=whole.s_kl, s_kk=whole.s_kk, s_ll=whole.s_ll,
                       row_k=np.asarray(whole.row_k_a), row_l=np.asarray(whole.row_l_a),
                       log2_k=kx.log2_scale, log2_l=ky.log2_scale, const_diag_k=kx.diag,
                       const_diag_l=ky.diag)


def rbf_terms(sides: Sides, *, gamma_x: float, gamma_y: float, ops: ModuleType,
              tile: int | None = None, options: Any = None,
              progress=None) -> KernelTerms:
    """Kernel terms of the RBF kernels over all n^2 ordered pairs of the centred rows.

    Only the upper triangle of block pairs is evaluated (K and L are symmetric). Memory beyond
    the inputs: two tiles of dot products, two centred blocks per side and the row sums.
    ``options`` (an ``RBFOptions`` with a median rule, or None) tells the typical entry.
    """
    kx, ky, dtype = side_kernels(sides, gamma_x, gamma_y, options)
    whole = set_pair_terms(sides, None, kernel_x=kx, kernel_y=ky, ops=ops, tile=tile,
                           dtype=dtype, progress=progress)
    return kernel_terms(sides[0].n, whole, kx, ky)


def set_pair_terms(a: Sides, b: Sides | None, *, kernel_x: RbfKernel | float,
                   kernel_y: RbfKernel | float, ops: ModuleType, tile: int | None = None,
                   dtype: np.dtype | None = None, progress=None) -> PairTerms:
    """:class:`PairTerms` of row set ``a`` against row set ``b``, or of ``a`` against itself.

    Parameters
    ----------
    a, b
        (x side, y side) of each row set; ``b`` None for ``a`` against itself (the result is a
        diagonal pair). The sides of ``b`` are rows of the same inputs as ``a`` and share their
        shifts (Dask: two row chunks).
    kernel_x, kernel_y
        The entries E = 2^m exp(-gamma |x_i - x_j|^2) - c (an ``RbfKernel``, or a bare gamma:
        the ``expm1`` form K - 1).
    ops
        The resolved CPU backend: its fused ``rbf_pairs`` when
        :func:`~pyckafast._core.dispatch.rbf_fused` says so, else BLAS tiles and ``rbf_tile``.
    tile
        Rows per tile (per work item of the fused pass); the result does not depend on it
        beyond float64 rounding.
    dtype
        The dtype of the pass (default: the sides' common compute dtype).
    progress
        The one ``progress=`` option (:mod:`pyckafast._core.progress`): ``progress(done,
        total)`` per block pair (:mod:`pyckafast._cpu.pass_progress`).

    Returns
    -------
    PairTerms
        Float64 sums of the pairs i != j.
    """
    dtype = np.dtype(dtype or np.result_type(a[0].dtype, a[1].dtype))
    kx, ky = kernel_args(kernel_x), kernel_args(kernel_y)
    depth = a[0].depth + a[1].depth
    if dispatch.rbf_fused(ops, depth):
        block = int(tile or ops.fused_block(depth, dtype.itemsize))
        if progress not in (None, False):  # the same calls over bands of rows, counted
            return pass_progress.fused_in_bands(a, b, progress, lambda sa, sb: _fused_set_pair(
                sa, sb, kx, ky, ops, block, dtype), block)
        return _fused_set_pair(a, b, kx, ky, ops, block, dtype)
    tile = int(tile or default_tile(dtype.itemsize))

    def load(sides: Sides):
        return lambda bounds: CentredBlock.load(*sides, bounds, dtype)

    def body(block_a: CentredBlock, block_b: CentredBlock, diagonal: bool) -> PairTerms:
        return _tile_pair(block_a, block_b, kx, ky, diagonal, ops)

    bounds_a, bounds_b = block_bounds(a[0].n, tile), None if b is None else block_bounds(b[0].n, tile)
    with pass_progress.counted(PairTermsSum(a[0].n, None if b is None else b[0].n), progress,
                              bounds_a, bounds_b) as into:
        return reduce_pairs(body, bounds_a, bounds_b, load_a=load(a),
                            load_b=None if b is None else load(b), into=into)


def _fused_set_pair(a: Sides, b: Sides | None, kx: tuple, ky: tuple, ops: ModuleType,
                    block: int, dtype: np.dtype) -> PairTerms:
    # The fused pass centres the rows by the shift as it packs them: no centred copy exists.
    xb, yb = (None, None) if b is None else (b[0].rows_as(dtype), b[1].rows_as(dtype))
    return PairTerms(*ops.rbf_pairs(
        a[0].rows_as(dtype), a[1].rows_as(dtype), xb, yb, a[0].shift.astype(dtype),
        a[1].shift.astype(dtype), kx, ky, b is None, block))


def _tile_pair(a: CentredBlock, b: CentredBlock, kx: tuple, ky: tuple, diagonal: bool,
               ops: ModuleType) -> PairTerms:
    # a.x @ a.x.T on one buffer lets NumPy call SYRK (half the flops) for diagonal tiles.
    gx = a.x @ a.x.T if diagonal else a.x @ b.x.T
    gy = a.y @ a.y.T if diagonal else a.y @ b.y.T
    return PairTerms(*ops.rbf_tile(gx, gy, a.nx, a.ny, b.nx, b.ny, kx, ky, bool(diagonal)))
