"""The fused, tiled RBF-HSIC pass on the CPU: exact kernel terms in O(n) memory.

Every RBF producer (this module, the Dask reduction, the CUDA driver) sums, over the block pairs
of :mod:`pyckafast._core.pairs`, the pair sums and row sums of

    E_ij = expm1(-gamma_x |x_i - x_j|^2) = K_ij - 1,   F_ij = expm1(-gamma_y |y_i - y_j|^2)

Feeding K - 1 instead of K changes neither the biased nor the unbiased HSIC (both are invariant
to a constant added to every entry), makes the diagonal exactly 0 (so :class:`KernelTerms` has no
diagonal), and keeps wide bandwidths (K close to 1) free of cancellation. Each input is centred
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

from types import ModuleType
from typing import Any

import numpy as np

from .._core import bandwidth as bw, dispatch
from .._core.pairs import (CentredBlock, CentredSide, PairTerms, PairTermsSum, block_bounds,
                           centre, compute_dtype, default_tile, reduce_pairs)
from .._core.terms import KernelTerms
from . import pass_progress

__all__ = ["Sides", "centred", "side_gamma", "rbf_terms_under", "rbf_terms", "set_pair_terms"]

Sides = tuple[CentredSide, CentredSide]  # the x and y rows of one row set


def centred(a: np.ndarray, name: str, ops: ModuleType) -> CentredSide:
    """Host input ``a`` prepared for backend ``ops``: centred once, in its compute dtype."""
    return centre(a, name, compute_dtype(ops, a.dtype))


def side_gamma(options: Any, side: CentredSide, index: int, *, ops: ModuleType,
               tile: int | None = None) -> float:
    """gamma of one centred host input under ``options`` (exact medians in memory, on ``ops``)."""
    def exact(s: CentredSide, rule: str) -> float:
        return bw.exact_median_in_memory(s, rule, ops=ops, tile=tile)

    return bw.side_gamma(options, side, index, exact)


def rbf_terms_under(x: np.ndarray, y: np.ndarray, *, options: Any, ops: ModuleType,
                    tile: int | None = None, progress=None) -> KernelTerms:
    """Kernel terms with the bandwidths ``options`` choose: each input is centred once and the
    same centred rows serve the bandwidth selection and the RBF pass."""
    side_x, side_y = centred(x, "x", ops), centred(y, "y", ops)
    gamma_x = side_gamma(options, side_x, 0, ops=ops, tile=tile)
    gamma_y = side_gamma(options, side_y, 1, ops=ops, tile=tile)
    return rbf_terms((side_x, side_y), gamma_x=gamma_x, gamma_y=gamma_y, ops=ops, tile=tile,
                     progress=progress)


def rbf_terms(sides: Sides, *, gamma_x: float, gamma_y: float, ops: ModuleType,
              tile: int | None = None, progress=None) -> KernelTerms:
    """Kernel terms of E = K - 1, F = L - 1 over all n^2 ordered pairs of the centred rows.

    Only the upper triangle of block pairs is evaluated (K and L are symmetric). Memory beyond
    the inputs: two tiles of dot products, two centred blocks per side and the row sums.
    """
    whole = set_pair_terms(sides, None, gamma_x=gamma_x, gamma_y=gamma_y, ops=ops, tile=tile,
                           progress=progress)
    return KernelTerms(n=sides[0].n, s_kl=whole.s_kl, s_kk=whole.s_kk, s_ll=whole.s_ll,
                       row_k=whole.row_k_a, row_l=whole.row_l_a)


def set_pair_terms(a: Sides, b: Sides | None, *, gamma_x: float, gamma_y: float,
                   ops: ModuleType, tile: int | None = None, progress=None) -> PairTerms:
    """:class:`PairTerms` of row set ``a`` against row set ``b``, or of ``a`` against itself.

    Parameters
    ----------
    a, b
        (x side, y side) of each row set; ``b`` None for ``a`` against itself (the result is a
        diagonal pair). The sides of ``b`` are rows of the same inputs as ``a`` and share their
        shifts (Dask: two row chunks).
    gamma_x, gamma_y
        The RBF parameters of E = expm1(-gamma_x |x_i - x_j|^2) and F.
    ops
        The resolved CPU backend: its fused ``rbf_pairs`` when
        :func:`~pyckafast._core.dispatch.rbf_fused` says so, else BLAS tiles and ``rbf_tile``.
    tile
        Rows per tile (per work item of the fused pass); the result does not depend on it
        beyond float64 rounding.
    progress
        The one ``progress=`` option (:mod:`pyckafast._core.progress`): ``progress(done,
        total)`` per block pair (:mod:`pyckafast._cpu.pass_progress`).

    Returns
    -------
    PairTerms
        Float64 sums; x and y are computed in their common compute dtype.
    """
    dtype = np.result_type(a[0].dtype, a[1].dtype)
    depth = a[0].depth + a[1].depth
    if dispatch.rbf_fused(ops, depth):
        block = int(tile or ops.fused_block(depth, dtype.itemsize))
        if progress not in (None, False):  # the same calls over bands of rows, counted
            return pass_progress.fused_in_bands(a, b, progress, lambda sa, sb: _fused_set_pair(
                sa, sb, gamma_x, gamma_y, ops, block, dtype), block)
        return _fused_set_pair(a, b, gamma_x, gamma_y, ops, block, dtype)
    tile = int(tile or default_tile(dtype.itemsize))

    def load(sides: Sides):
        return lambda bounds: CentredBlock.load(*sides, bounds, dtype)

    def body(block_a: CentredBlock, block_b: CentredBlock, diagonal: bool) -> PairTerms:
        return _tile_pair(block_a, block_b, gamma_x, gamma_y, diagonal, ops)

    bounds_a, bounds_b = block_bounds(a[0].n, tile), None if b is None else block_bounds(b[0].n, tile)
    with pass_progress.counted(PairTermsSum(a[0].n, None if b is None else b[0].n), progress,
                              bounds_a, bounds_b) as into:
        return reduce_pairs(body, bounds_a, bounds_b, load_a=load(a),
                            load_b=None if b is None else load(b), into=into)


def _fused_set_pair(a: Sides, b: Sides | None, gamma_x: float, gamma_y: float, ops: ModuleType,
                    block: int, dtype: np.dtype) -> PairTerms:
    # The fused pass centres the rows by the shift as it packs them: no centred copy exists.
    xb, yb = (None, None) if b is None else (b[0].rows_as(dtype), b[1].rows_as(dtype))
    return PairTerms(*ops.rbf_pairs(
        a[0].rows_as(dtype), a[1].rows_as(dtype), xb, yb, a[0].shift.astype(dtype),
        a[1].shift.astype(dtype), float(gamma_x), float(gamma_y), b is None, block))


def _tile_pair(a: CentredBlock, b: CentredBlock, gamma_x: float, gamma_y: float, diagonal: bool,
               ops: ModuleType) -> PairTerms:
    # a.x @ a.x.T on one buffer lets NumPy call SYRK (half the flops) for diagonal tiles.
    gx = a.x @ a.x.T if diagonal else a.x @ b.x.T
    gy = a.y @ a.y.T if diagonal else a.y @ b.y.T
    return PairTerms(*ops.rbf_tile(gx, gy, a.nx, a.ny, b.nx, b.ny, float(gamma_x), float(gamma_y),
                                   bool(diagonal)))
