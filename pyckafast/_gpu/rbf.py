"""RBF kernel terms on a GPU: the fused tile kernel over blocks of rows, O(n) device memory.

The rows are centred by one global shift (column means rounded to the compute dtype, as on the
CPU), cut into blocks, and every unordered pair of blocks (a, b), a <= b, goes through one launch
of csrc/cuda/rbf_pairs_cuda.cu, which never writes a distance or kernel matrix. Blocks are as large as
half the free device memory allows (the whole input when it fits); out of memory halves them.
The result is exactly the CPU engine's KernelTerms of E = K - 1, F = L - 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._core.terms import KernelTerms
from .._core.validation import check_finite_sums

__all__ = ["rbf_terms", "default_block_rows"]

_MEMORY_SHARE = 0.5
_NORM_ROWS = 1 << 16  # rows per step of the float64 squared-norm pass


def default_block_rows(n: int, dx: int, dy: int, itemsize: int, free: int, unit: int) -> int:
    """Rows per block: all n if two centred blocks fit in half the free memory, else fewer."""
    per_row = 2 * ((dx + dy) * itemsize + 2 * itemsize + 16)  # two blocks, norms, row sums
    rows = int(_MEMORY_SHARE * free // per_row)
    rows = min(n, max(unit, rows // unit * unit))
    return min(rows, 65535 * unit)  # the kernel's grid limit


def rbf_terms(engine, x, y, n: int, *, gamma_x: float, gamma_y: float,
              tile: int | None) -> KernelTerms:
    """Kernel terms of E = expm1(-gamma_x |x_i - x_j|^2), F likewise, over all ordered pairs."""
    dtype = np.promote_types(x.dtype, y.dtype)
    unit = engine.rbf_rows_per_tile(dtype)
    shift_x, shift_y = _centre(engine, x, "x", n, dtype), _centre(engine, y, "y", n, dtype)
    dx, dy = x.data.shape[1], y.data.shape[1]
    rows = int(tile) if tile else default_block_rows(n, dx, dy, dtype.itemsize,
                                                     engine.free_bytes(), unit)
    while True:
        try:
            return _all_pairs(engine, x, y, n, dtype, shift_x, shift_y, gamma_x, gamma_y, rows)
        except engine.oom_errors as exc:
            engine.release()
            if rows <= unit:
                raise MemoryError(
                    f"RBF CKA on the GPU ran out of device memory even with {rows}-row blocks: {exc}"
                ) from exc
            rows = max(unit, rows // 2)
            warnings.warn(f"GPU out of memory; retrying with {rows}-row blocks.", RuntimeWarning,
                          stacklevel=3)


def _centre(engine, s, name: str, n: int, dtype: np.dtype):
    """Column means (float64 sums, checked finite), rounded to ``dtype``, on the device."""
    total = s.data.sum(axis=0, dtype=np.float64)
    host_total = engine.asnumpy(total) if s.on_device else np.asarray(total)
    check_finite_sums(host_total, name, 0, n)
    return engine.xp.asarray((host_total / n).astype(dtype))


@dataclass(frozen=True)
class _Block:
    """Centred rows of x and y on the device (C-contiguous, compute dtype) and squared norms."""

    x: object
    y: object
    nx: object
    ny: object


def _block(engine, x, y, lo: int, hi: int, shift_x, shift_y, dtype) -> _Block:
    xc, yc = _centred(engine, x, lo, hi, shift_x, dtype), _centred(engine, y, lo, hi, shift_y, dtype)
    return _Block(xc, yc, _sq_norms(engine.xp, xc), _sq_norms(engine.xp, yc))


def _centred(engine, s, lo: int, hi: int, shift, dtype):
    xp = engine.xp
    part = s.data[lo:hi] if s.on_device else xp.asarray(np.ascontiguousarray(s.data[lo:hi]))
    return xp.ascontiguousarray(part.astype(dtype, copy=False) - shift)


def _sq_norms(xp, a):
    """|a_i|^2 accumulated in float64 (bounded temporaries), rounded to a's dtype."""
    out = xp.empty(a.shape[0], a.dtype)
    for lo in range(0, a.shape[0], _NORM_ROWS):
        part = a[lo:lo + _NORM_ROWS].astype(np.float64)
        out[lo:lo + _NORM_ROWS] = (part * part).sum(axis=1)
    return out


def _all_pairs(engine, x, y, n, dtype, shift_x, shift_y, gamma_x, gamma_y, rows) -> KernelTerms:
    xp = engine.xp
    row_k, row_l = xp.zeros(n), xp.zeros(n)
    sums = xp.zeros((engine.slots, 3))
    bounds = [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]
    for ia, (alo, ahi) in enumerate(bounds):
        a = _block(engine, x, y, alo, ahi, shift_x, shift_y, dtype)
        for blo, bhi in bounds[ia:]:
            same = blo == alo
            b = a if same else _block(engine, x, y, blo, bhi, shift_x, shift_y, dtype)
            engine.rbf_pair(a, b, gamma_x, gamma_y, same, row_k[alo:ahi], row_l[alo:ahi],
                            row_k[blo:bhi], row_l[blo:bhi], sums)
    total = engine.asnumpy(sums).sum(axis=0)
    return KernelTerms(n=n, s_kl=float(total[0]), s_kk=float(total[1]), s_ll=float(total[2]),
                       row_k=engine.asnumpy(row_k), row_l=engine.asnumpy(row_l))
