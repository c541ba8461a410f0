"""RBF kernel terms on a GPU: the fused tile kernel over blocks of rows, O(n) device memory.

Each input is centred once per call by one global shift (column means rounded to the compute
dtype, checked finite, as on the CPU: :class:`~pyckafast._core.pairs.CentredSide`) and the same
centred side serves the bandwidth selection and the pass. The rows are cut into blocks and every
unordered pair of blocks (a, b), a <= b, of the scheduler in :mod:`pyckafast._core.pairs` goes
through one launch of the engine's ``rbf_pair``, which adds into device row sums and never writes
a distance or kernel matrix. Blocks are as large as half the free device memory allows (the whole
input when it fits); out of memory halves them. The result is the CPU engine's KernelTerms of
E = 2^m K - c, F likewise, with the same per-kernel constants
(:func:`pyckafast._cpu.rbf.side_kernels`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._core.pairs import (CentredBlock, CentredSide, PairTerms, block_bounds, centre,
                           reduce_pairs, retry_out_of_memory)
from .._core.bandwidth import gamma_from_sigma
from .._core.rbf_entry import RbfKernel, scaled_gamma, scaled_side
from .._core.terms import KernelTerms
from .._cpu.rbf import kernel_terms, side_kernels
from . import bandwidth as gpu_bandwidth

__all__ = ["rbf_terms", "rbf_terms_under", "device_sides", "default_block_rows"]

_MEMORY_SHARE = 0.5

def default_block_rows(n: int, dx: int, dy: int, itemsize: int, free: int, unit: int) -> int:
    """Rows per block: all n if two centred blocks fit in half the free memory, else fewer."""
    per_row = 2 * ((dx + dy) * itemsize + 2 * itemsize + 16)  # two blocks, norms, row sums
    rows = int(_MEMORY_SHARE * free // per_row)
    rows = min(n, max(unit, rows // unit * unit))
    return min(rows, 65535 * unit)  # the kernel's grid limit


def device_sides(engine, x, y, resident: bool = False) -> tuple[CentredSide, CentredSide]:
    """x and y (``inputs.Samples``) centred once, on the engine's array module. Host rows stay
    on the host and are uploaded block by block, unless ``resident``: the bandwidth passes read
    every block many times (and index random rows), so they want the rows on the device."""
    (side_x, _), (side_y, _) = scaled_device_sides(engine, x, y, resident)
    return side_x, side_y


def scaled_device_sides(engine, x, y, resident: bool = False):
    """((side, k), (side, k)): :func:`device_sides` with the rows of data of extreme magnitude
    multiplied by 2^k (:func:`~pyckafast._core.rbf_entry.scaled_side`)."""
    def side(s, name: str):
        rows = engine.xp.asarray(s.data) if resident and not s.on_device else s.data
        return scaled_side(centre(rows, name, s.dtype, engine.xp))

    return side(x, "x"), side(y, "y")


def _gamma(options: Any, side: CentredSide, index: int, k: int, tile: int | None) -> float:
    if options.sigma is not None:  # the sigma of the data, scaled with the rows
        return gamma_from_sigma(math.ldexp(options.sigma[index], k))
    return gpu_bandwidth.side_gamma(options, side, index, tile)


def rbf_terms(engine, x, y, *, gamma_x: float, gamma_y: float, tile: int | None) -> KernelTerms:
    """Kernel terms of the RBF kernels exp(-gamma_x |x_i - x_j|^2) and L over all ordered pairs
    of the rows of x and y (``inputs.Samples`` with the same number of rows)."""
    (side_x, kx), (side_y, ky) = scaled_device_sides(engine, x, y)
    kernels = side_kernels((side_x, side_y), scaled_gamma(gamma_x, kx), scaled_gamma(gamma_y, ky))
    return _pass(engine, side_x, side_y, *kernels, tile)


def rbf_terms_under(engine, x, y, *, options: Any, tile: int | None) -> KernelTerms:
    """Kernel terms with the bandwidths ``options`` choose (an ``RBFOptions``), selected on the
    device from the same centred sides as the pass."""
    (side_x, kx), (side_y, ky) = scaled_device_sides(engine, x, y, resident=options.sigma is None)
    if options.sigma is not None:
        gamma_x, gamma_y = _gamma(options, side_x, 0, kx, tile), _gamma(options, side_y, 1, ky, tile)
    else:  # both exact medians in the same launches of the distance-histogram kernel
        gamma_x, gamma_y = gpu_bandwidth.side_gammas(engine, options, side_x, side_y, tile)
    kernels = side_kernels((side_x, side_y), gamma_x, gamma_y, options)
    return _pass(engine, side_x, side_y, *kernels, tile)


def _pass(engine, side_x: CentredSide, side_y: CentredSide, kx: RbfKernel, ky: RbfKernel,
          dtype: np.dtype, tile: int | None) -> KernelTerms:
    """The pass over device blocks of ``tile`` rows (default: what memory allows), halved on
    out-of-memory errors, computed in ``dtype``."""
    unit = engine.rbf_rows_per_tile(dtype)
    rows = int(tile) if tile else default_block_rows(side_x.n, side_x.depth, side_y.depth,
                                                     dtype.itemsize, engine.free_bytes(), unit)
    return retry_out_of_memory(
        lambda r: _all_pairs(engine, side_x, side_y, dtype, kx, ky, r), rows, unit,
        errors=engine.oom_errors, release=engine.release, what="RBF CKA",
        per=lambda r: f"{r}-row blocks")


def _all_pairs(engine, side_x: CentredSide, side_y: CentredSide, dtype: np.dtype,
               kx: RbfKernel, ky: RbfKernel, rows: int) -> KernelTerms:
    xp, n = engine.xp, side_x.n
    row_k, row_l = xp.zeros(n), xp.zeros(n)
    sums = xp.zeros((engine.slots, 3))

    def body(a: CentredBlock, b: CentredBlock, same: bool) -> None:
        # The engine scatters in place: row sums of a into a's rows, column sums into b's.
        (alo, ahi), (blo, bhi) = a.bounds, b.bounds
        engine.rbf_pair(a, b, kx.args(), ky.args(), same, row_k[alo:ahi], row_l[alo:ahi],
                        row_k[blo:bhi], row_l[blo:bhi], sums)

    reduce_pairs(body, block_bounds(n, rows),
                 load_a=lambda bounds: CentredBlock.load(side_x, side_y, bounds, dtype))
    total = engine.asnumpy(sums).sum(axis=0)
    whole = PairTerms(float(total[0]), float(total[1]), float(total[2]), engine.asnumpy(row_k),
                      engine.asnumpy(row_l), None, None)
    return kernel_terms(n, whole, kx, ky)
