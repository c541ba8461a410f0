"""Numba kernels of the RBF pass: the fused exp + float64 sums of a tile, and the distance
histograms of the exact median bandwidth.

The exp is the branch-free expm1 of csrc/common/rbf_tile.h (round-to-nearest shifter, Taylor
polynomial, 2^k from integer bits) written as three short loops over a row buffer, so that LLVM
vectorises each of them (``math.expm1`` would be a scalar libm call per entry). Rows are split
into fixed chunks of 64 with their own column partials, reduced in chunk order: the result does
not depend on the thread count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_CHUNK_ROWS = 64
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
_SHIFTER = 6755399441055744.0  # 1.5 * 2^52: adding it rounds to an integer kept in the low bits
_SHIFTER_BITS = np.array([_SHIFTER]).view(np.int64)[0]


@njit(cache=True, inline="always")
def _reduce(x):
    """x = k ln2 + r; returns (t, r) where t = k + shifter carries k in its low mantissa bits."""
    x = max(x, -708.0)
    t = x * _LOG2E + _SHIFTER
    k = t - _SHIFTER
    return t, (x - k * _LN2_HI) - k * _LN2_LO


@njit(cache=True, inline="always")
def _expm1_poly(r):
    """expm1(r) for |r| <= ln2/2 (Taylor to r^13)."""
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    return p * r * r + r


@njit(cache=True, inline="always")
def _expm1_row(g, ni, nb, gamma, j0, t, p):
    """Fill t[j0:] and p[j0:] so that E_j = 2^k p + (2^k - 1) after _pow2_bits(t)."""
    for j in range(j0, g.shape[0]):
        d2 = max(np.float64(ni) + np.float64(nb[j]) - 2.0 * np.float64(g[j]), 0.0)
        tj, r = _reduce(-gamma * d2)
        t[j] = tj
        p[j] = _expm1_poly(r)


@njit(cache=True, inline="always")
def _pow2_bits(bits, j0):
    """t (as int64 bits) -> the bits of 2^k."""
    for j in range(j0, bits.shape[0]):
        bits[j] = (bits[j] - _SHIFTER_BITS + 1023) << 52


@njit(cache=True)
def _tile_chunk(gx, gy, nxa, nya, nxb, nyb, gamma_x, gamma_y, diagonal, lo, hi,
                row_k, row_l, col_k, col_l, buf):
    mb = gx.shape[1]
    tx, px, ty, py = buf[0], buf[1], buf[2], buf[3]
    bx, by = tx.view(np.int64), ty.view(np.int64)
    skl = skk = sll = 0.0
    for i in range(lo, hi):
        j0 = i + 1 if diagonal else 0
        _expm1_row(gx[i], nxa[i], nxb, gamma_x, j0, tx, px)
        _expm1_row(gy[i], nya[i], nyb, gamma_y, j0, ty, py)
        _pow2_bits(bx, j0)
        _pow2_bits(by, j0)
        rk = rl = 0.0
        for j in range(j0, mb):
            e = tx[j] * px[j] + (tx[j] - 1.0)
            f = ty[j] * py[j] + (ty[j] - 1.0)
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


@njit(parallel=True, cache=True)
def _tile(gx, gy, nxa, nya, nxb, nyb, gamma_x, gamma_y, diagonal):
    ma, mb = gx.shape
    nchunks = max(1, (ma + _CHUNK_ROWS - 1) // _CHUNK_ROWS)
    row_k, row_l = np.zeros(ma), np.zeros(ma)
    cols = np.zeros((nchunks, 2, mb))
    sums = np.zeros((nchunks, 3))
    for c in prange(nchunks):
        lo, hi = c * _CHUNK_ROWS, min(ma, (c + 1) * _CHUNK_ROWS)
        buf = np.empty((4, mb))
        s = _tile_chunk(gx, gy, nxa, nya, nxb, nyb, gamma_x, gamma_y, diagonal, lo, hi,
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


def rbf_tile(gx, gy, nxa, nya, nxb, nyb, gamma_x, gamma_y, diagonal):
    """Fused exp + float64 sums of one RBF tile pair (see ``pyckafast._cpu.rbf.PairTerms``).

    float32 tiles are evaluated in float64 from their float32 dot products.
    """
    s_kl, s_kk, s_ll, rka, rla, rkb, rlb = _tile(
        gx, gy, nxa, nya, nxb, nyb, float(gamma_x), float(gamma_y), bool(diagonal)
    )
    return float(s_kl), float(s_kk), float(s_ll), rka, rla, rkb, rlb


def threads() -> int:
    return numba.get_num_threads()


@njit(parallel=True, cache=True)
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
