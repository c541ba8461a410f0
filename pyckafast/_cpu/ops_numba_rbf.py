"""Numba kernels of the RBF pass: the fused exp + float64 sums of a tile, and the distance
histograms of the exact median bandwidth.

The entry E = 2^m exp(-gamma d2) - c is the branch-free ``rbf_exp_shifted`` of
csrc/common/rbf_pair.h (round-to-nearest shifter, Taylor polynomial, 2^(k+m) from integer bits;
c = 1, m = 0 is expm1) written as three short loops over a row buffer, so that LLVM
vectorises each of them (``math.expm1`` is a scalar libm call per entry: measured +28 % per pair
in this epilogue). Its constants are not copied here: they are read at import from the
``ExpM1Table<double>`` of rbf_pair.h (shipped in the package, see ``pyckafast._core.sources.source_root``),
the table the C++ and CUDA kernels compile, and the Taylor coefficients are 1/k! as there. Rows
are split into fixed chunks of 64 with their own column partials, reduced in chunk order: the
result does not depend on the thread count.

Numba's on-disk cache keys on this file, not on the header: after editing the table in a source
checkout, clear ``__pycache__`` (tests/test_rbf.py compares this expm1 with the C++ one bit for bit).
"""

from __future__ import annotations

import math
import re

import numba
import numpy as np
from numba import njit, prange

from .._core.rbf_entry import kernel_args
from .._core.threads import sync_numba
from .._core.sources import source_root

_CHUNK_ROWS = 64


def _expm1_table() -> dict[str, float]:
    """The ``static constexpr`` constants of ``ExpM1Table<double>`` in csrc/common/rbf_pair.h."""
    path = source_root() / "common" / "rbf_pair.h"
    body = re.search(r"struct ExpM1Table<double> \{(.*?)\n\};", path.read_text(), re.S)
    entries = re.findall(r"static constexpr [\w ]+? (k\w+) = ([^;]+);", body.group(1) if body else "")
    table = {name: float(value) for name, value in entries}
    missing = {"kShifter", "kMin", "kLog2e", "kLn2Hi", "kLn2Lo", "kDegree", "kExponentBias",
               "kMantissaBits"} - set(table)
    if missing:
        raise ImportError(f"{path}: ExpM1Table<double> lacks {sorted(missing)}")
    return table


_TABLE = _expm1_table()
_SHIFTER, _MIN, _LOG2E = _TABLE["kShifter"], _TABLE["kMin"], _TABLE["kLog2e"]
_LN2_HI, _LN2_LO = _TABLE["kLn2Hi"], _TABLE["kLn2Lo"]
_SHIFTER_BITS = np.array([_SHIFTER]).view(np.int64)[0]
_EXPONENT_BIAS, _MANTISSA_BITS = int(_TABLE["kExponentBias"]), int(_TABLE["kMantissaBits"])
# 1/k! for k = degree down to 2, correctly rounded (k! is exact in double), as rbf_pair.h's
# InvFactorial; the Horner loop over this constant tuple is unrolled by LLVM.
_TAYLOR = tuple(1.0 / float(math.factorial(k)) for k in range(int(_TABLE["kDegree"]), 1, -1))


@njit(cache=True, inline="always")
def _reduce(x, x_min):
    """x = k ln2 + r; returns (t, r) where t = k + shifter carries k in its low mantissa bits."""
    x = max(x, x_min)
    t = x * _LOG2E + _SHIFTER
    k = t - _SHIFTER
    return t, (x - k * _LN2_HI) - k * _LN2_LO


@njit(cache=True, inline="always")
def _expm1_poly(r):
    """expm1(r) for |r| <= ln2/2 (Taylor series to r^kDegree)."""
    p = r * _TAYLOR[0] + _TAYLOR[1]
    for c in _TAYLOR[2:]:
        p = p * r + c
    return p * r * r + r


@njit(cache=True, inline="always")
def _expm1_row(g, ni, nb, gamma, x_min, j0, t, p):
    """Fill t[j0:] and p[j0:] so that E_j = q p + (q - c), q = 2^(k+m), after _pow2_bits(t, m)."""
    for j in range(j0, g.shape[0]):
        d2 = max(np.float64(ni) + np.float64(nb[j]) - 2.0 * np.float64(g[j]), 0.0)
        tj, r = _reduce(-gamma * d2, x_min)
        t[j] = tj
        p[j] = _expm1_poly(r)


@njit(cache=True, inline="always")
def _pow2_bits(bits, j0, m):
    """t (as int64 bits) -> the bits of 2^(k+m)."""
    for j in range(j0, bits.shape[0]):
        bits[j] = (bits[j] - _SHIFTER_BITS + (_EXPONENT_BIAS + m)) << _MANTISSA_BITS


@njit(cache=True, nogil=True)
def _tile_chunk(gx, gy, nxa, nya, nxb, nyb, kx, ky, diagonal, lo, hi,
                row_k, row_l, col_k, col_l, buf):
    mb = gx.shape[1]
    gamma_x, c_x, m_x = kx
    gamma_y, c_y, m_y = ky
    min_x, min_y = _MIN - m_x * _LN2_HI, _MIN - m_y * _LN2_HI  # as rbf_pair.h: 2^(k+m) normal
    tx, px, ty, py = buf[0], buf[1], buf[2], buf[3]
    bx, by = tx.view(np.int64), ty.view(np.int64)
    skl = skk = sll = 0.0
    for i in range(lo, hi):
        j0 = i + 1 if diagonal else 0
        _expm1_row(gx[i], nxa[i], nxb, gamma_x, min_x, j0, tx, px)
        _expm1_row(gy[i], nya[i], nyb, gamma_y, min_y, j0, ty, py)
        _pow2_bits(bx, j0, m_x)
        _pow2_bits(by, j0, m_y)
        rk = rl = 0.0
        for j in range(j0, mb):
            e = tx[j] * px[j] + (tx[j] - c_x)
            f = ty[j] * py[j] + (ty[j] - c_y)
            rk += e
            rl += f
            col_k[j] += e
            col_l[j] += f
            skl += e * f
            skk += e * e
            sll += f * f
        row_k[i] += rk
        row_l[i] += rl
    return skl, skk, sll


@njit(parallel=True, cache=True, nogil=True)  # whole tiles: let other Python threads run
def _tile(gx, gy, nxa, nya, nxb, nyb, kx, ky, diagonal):
    ma, mb = gx.shape
    nchunks = max(1, (ma + _CHUNK_ROWS - 1) // _CHUNK_ROWS)
    row_k, row_l = np.zeros(ma), np.zeros(ma)
    cols = np.zeros((nchunks, 2, mb))
    sums = np.zeros((nchunks, 3))
    for c in prange(nchunks):
        lo, hi = c * _CHUNK_ROWS, min(ma, (c + 1) * _CHUNK_ROWS)
        buf = np.empty((4, mb))
        s = _tile_chunk(gx, gy, nxa, nya, nxb, nyb, kx, ky, diagonal, lo, hi,
                        row_k, row_l, cols[c, 0], cols[c, 1], buf)
        sums[c, 0], sums[c, 1], sums[c, 2] = s
    col_k, col_l = np.zeros(mb), np.zeros(mb)
    for c in range(nchunks):  # chunk order: independent of the scheduling
        col_k += cols[c, 0]
        col_l += cols[c, 1]
    total = sums.sum(axis=0)
    if diagonal:  # pairs i < j stand for (i, j) and (j, i); both ends go to the a rows
        return 2.0 * total[0], 2.0 * total[1], 2.0 * total[2], row_k + col_k, row_l + col_l, \
            np.zeros(mb), np.zeros(mb)
    return total[0], total[1], total[2], row_k, row_l, col_k, col_l


def rbf_tile(gx, gy, nxa, nya, nxb, nyb, kernel_x, kernel_y, diagonal):
    """Fused exp + float64 sums of one RBF tile pair (see ``pyckafast._cpu.rbf.PairTerms``);
    kernels: ``RbfKernel``s, (gamma, c, m) or bare gammas (E = K - 1).

    float32 tiles are evaluated in float64 from their float32 dot products.
    """
    sync_numba()
    (gamma_x, c_x, m_x), (gamma_y, c_y, m_y) = kernel_args(kernel_x), kernel_args(kernel_y)
    s_kl, s_kk, s_ll, rka, rla, rkb, rlb = _tile(
        gx, gy, nxa, nya, nxb, nyb, (float(gamma_x), float(c_x), int(m_x)),
        (float(gamma_y), float(c_y), int(m_y)), bool(diagonal)
    )
    return float(s_kl), float(s_kk), float(s_ll), rka, rla, rkb, rlb


def threads() -> int:
    return numba.get_num_threads()


@njit(parallel=True, cache=True, nogil=True)  # whole tiles: let other Python threads run
def d2_histogram(g, na, nb, diagonal, lo, hi, nbins):
    """Counts of the squared distances max(0, na_i + nb_j - 2 g_ij) of one tile (pairs i < j
    only for a diagonal tile): (number below ``lo``, counts of ``nbins`` equal bins over
    [lo, hi]). Values above ``hi`` are not counted. Bin index: floor((v - lo) * scale)."""
    ma, mb = g.shape
    nchunks = max(1, (ma + _CHUNK_ROWS - 1) // _CHUNK_ROWS)
    counts = np.zeros((nchunks, nbins), np.int64)
    below = np.zeros(nchunks, np.int64)
    scale = nbins / (hi - lo) if hi > lo else 0.0
    for c in prange(nchunks):
        for i in range(c * _CHUNK_ROWS, min(ma, (c + 1) * _CHUNK_ROWS)):
            for j in range(i + 1 if diagonal else 0, mb):
                v = max(np.float64(na[i]) + np.float64(nb[j]) - 2.0 * np.float64(g[i, j]), 0.0)
                if v < lo:
                    below[c] += 1
                elif v <= hi:
                    counts[c, min(int((v - lo) * scale), nbins - 1)] += 1
    return below.sum(), counts.sum(axis=0)
