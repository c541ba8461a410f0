"""The fused, tiled RBF-HSIC pass on the CPU: exact kernel terms in O(n) memory.

Every RBF producer (this module's :func:`rbf_terms`, the Dask reduction, the CUDA kernel) reduces
to one unit of work, :func:`rbf_block_pair`: the pair sums and row sums of

    E_ij = expm1(-gamma_x |x_i - x_j|^2) = K_ij - 1,   F_ij = expm1(-gamma_y |y_i - y_j|^2)

for i in block a and j in block b. Feeding K - 1 instead of K changes neither the biased nor the
unbiased HSIC (both are invariant to a constant added to every entry), makes the diagonal exactly
0 (so :class:`KernelTerms` has no diagonal), and keeps wide bandwidths (K close to 1) free of
cancellation. The blocks must already be centred by one common shift (:func:`centring_shift`):
the squared distances come from the expansion |a|^2 + |b|^2 - 2 a.b, which is only accurate for
data near the origin. The dot-product tiles are BLAS GEMMs in the input dtype; a backend's
``rbf_tile`` operation does the fused exp and the float64 accumulation. A backend that also has
``rbf_pairs`` (the C++ extension) computes the dot products itself, in registers, for rows of
total depth up to its ``FUSED_MAX_DEPTH``: then a whole pass is one call and no tile exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._core import dispatch
from .._core.terms import KernelTerms
from .._core.validation import check_finite_sums

__all__ = ["PairTerms", "rbf_block_pair", "rbf_terms", "centring_shift", "default_tile",
           "block_bounds"]

# Rows per tile: two tiles of dot products (x and y) of this many rows squared stay near 8 MB
# for float32 (16 MB for float64) and BLAS runs at full rate on them.
_DEFAULT_TILE = 1024


@dataclass(frozen=True)
class PairTerms:
    """Sums over the pairs (i in block a, j in block b) of E = K - 1 and F = L - 1.

    ``s_kl = sum E_ij F_ij``, ``s_kk = sum E_ij^2``, ``s_ll = sum F_ij^2`` (float64);
    ``row_k_a[i] = sum_j E_ij``, ``row_l_a`` likewise, ``row_k_b[j] = sum_i E_ij`` (column sums).
    For a diagonal pair (a is b) the sums run over all ordered pairs of the block and
    ``row_*_b`` are zeros: ``row_*_a`` already hold the full row sums.
    """

    s_kl: float
    s_kk: float
    s_ll: float
    row_k_a: np.ndarray
    row_l_a: np.ndarray
    row_k_b: np.ndarray
    row_l_b: np.ndarray


def default_tile(itemsize: int) -> int:
    return _DEFAULT_TILE if itemsize >= 8 else 2 * _DEFAULT_TILE


def block_bounds(n: int, tile: int) -> list[tuple[int, int]]:
    """[(start, stop)] of consecutive row blocks of at most ``tile`` rows."""
    return [(lo, min(lo + tile, n)) for lo in range(0, n, tile)]


def centring_shift(a: np.ndarray, name: str, dtype: np.dtype) -> np.ndarray:
    """Column means in float64, rounded to ``dtype``: subtracting them is exact near the mean."""
    total = a.sum(axis=0, dtype=np.float64)
    check_finite_sums(total, name, 0, a.shape[0])
    return (total / a.shape[0]).astype(dtype)


def rbf_block_pair(
    xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, *, gamma_x: float,
    gamma_y: float, diagonal: bool, backend: str = "auto",
) -> PairTerms:
    """Pair terms of blocks a and b (already centred by one common shift per side).

    ``diagonal=True`` means block b is block a (``xb``/``yb`` are then ignored). x and y blocks
    are computed in their common dtype (float32 or float64); every sum is float64.
    """
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    dtype = ops.gemm_dtype(np.promote_types(xa.dtype, ya.dtype))
    if dispatch.rbf_fused(ops, xa.shape[1] + ya.shape[1]):
        xa, ya = xa.astype(dtype, copy=False), ya.astype(dtype, copy=False)
        if not diagonal:
            xb, yb = xb.astype(dtype, copy=False), yb.astype(dtype, copy=False)
        zx, zy = np.zeros(xa.shape[1], dtype), np.zeros(ya.shape[1], dtype)
        block = ops.fused_block(xa.shape[1] + ya.shape[1], dtype.itemsize)
        return PairTerms(*ops.rbf_pairs(xa, ya, None if diagonal else xb, None if diagonal else yb,
                                        zx, zy, float(gamma_x), float(gamma_y), bool(diagonal),
                                        block))
    a = _Block.of(xa, ya, dtype)
    b = a if diagonal else _Block.of(xb, yb, dtype)
    return _pair(a, b, gamma_x, gamma_y, diagonal, ops)


def rbf_terms(
    x: np.ndarray, y: np.ndarray, *, gamma_x: float, gamma_y: float, tile: int | None = None,
    backend: str = "auto",
) -> KernelTerms:
    """Kernel terms of E = K - 1, F = L - 1 over all n^2 ordered pairs, tile by tile.

    Only the upper triangle of block pairs is evaluated (K and L are symmetric). Memory beyond
    the inputs: two tiles of dot products, two centred blocks per side and the row sums.
    """
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    n = x.shape[0]
    dtype = ops.gemm_dtype(np.promote_types(x.dtype, y.dtype))
    shift_x, shift_y = centring_shift(x, "x", dtype), centring_shift(y, "y", dtype)
    depth = x.shape[1] + y.shape[1]
    if dispatch.rbf_fused(ops, depth):
        block = int(tile or ops.fused_block(depth, dtype.itemsize))
        s_kl, s_kk, s_ll, row_k, row_l, _, _ = ops.rbf_pairs(
            x.astype(dtype, copy=False), y.astype(dtype, copy=False), None, None, shift_x,
            shift_y, float(gamma_x), float(gamma_y), True, block)
        return KernelTerms(n=n, s_kl=s_kl, s_kk=s_kk, s_ll=s_ll, row_k=row_k, row_l=row_l)
    tile = int(tile or default_tile(dtype.itemsize))
    row_k, row_l = np.zeros(n), np.zeros(n)
    sums = np.zeros(3)
    bounds = block_bounds(n, tile)
    for ia, (alo, ahi) in enumerate(bounds):
        a = _Block.of(x[alo:ahi] - shift_x, y[alo:ahi] - shift_y, dtype)
        for blo, bhi in bounds[ia:]:
            diagonal = blo == alo
            b = a if diagonal else _Block.of(x[blo:bhi] - shift_x, y[blo:bhi] - shift_y, dtype)
            p = _pair(a, b, gamma_x, gamma_y, diagonal, ops)
            weight = 1.0 if diagonal else 2.0  # an off-diagonal pair stands for (a, b) and (b, a)
            sums += weight * np.array([p.s_kl, p.s_kk, p.s_ll])
            row_k[alo:ahi] += p.row_k_a
            row_l[alo:ahi] += p.row_l_a
            if not diagonal:
                row_k[blo:bhi] += p.row_k_b
                row_l[blo:bhi] += p.row_l_b
    return KernelTerms(n=n, s_kl=float(sums[0]), s_kk=float(sums[1]), s_ll=float(sums[2]),
                       row_k=row_k, row_l=row_l)


@dataclass(frozen=True)
class _Block:
    """A centred block of rows of x and y (C-contiguous, one dtype) and their squared norms."""

    x: np.ndarray
    y: np.ndarray
    nx: np.ndarray
    ny: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, dtype: np.dtype) -> _Block:
        x = np.ascontiguousarray(x, dtype=dtype)
        y = np.ascontiguousarray(y, dtype=dtype)
        return cls(x, y, np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y))


def _pair(a: _Block, b: _Block, gamma_x: float, gamma_y: float, diagonal: bool, ops) -> PairTerms:
    # a.x @ a.x.T on one buffer lets NumPy call SYRK (half the flops) for diagonal tiles.
    gx = a.x @ a.x.T if diagonal else a.x @ b.x.T
    gy = a.y @ a.y.T if diagonal else a.y @ b.y.T
    return PairTerms(*ops.rbf_tile(gx, gy, a.nx, a.ny, b.nx, b.ny, float(gamma_x), float(gamma_y),
                                   bool(diagonal)))
