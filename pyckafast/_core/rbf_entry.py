"""How the RBF producers evaluate kernel entries: E = 2^m exp(-gamma d2) - c, per kernel.

Both HSIC estimators are unchanged when a constant c is subtracted from every entry of a kernel
matrix, the diagonal included (H (K - c 11') H = H K H; the unbiased estimator of Song et al.
is invariant to a constant added to the off-diagonal entries and ignores the diagonal), and CKA
is unchanged by scaling a kernel (HSIC triples carry the scale as a power of two). So every
producer sums entries of 2^m K - c over the pairs i != j and reports the diagonal, 2^m - c, as a
constant (:class:`~pyckafast._core.terms.KernelTerms` ``const_diag_k``). The constants are
chosen per kernel from the typical entry exp(-u), u = gamma * (typical squared distance):

* c = 2^m exp(-u), the typical entry: the summed entries stay of the size of their spread, so
  the combination of sums does not cancel. Wide bandwidths (u << 1) give m = 0 and c near 1,
  the ``expm1`` form (K - 1) that keeps K near 1 accurate; narrow ones (u >> 1) a c that keeps
  the unbiased estimator from cancelling the -1s of K - 1 (which lost every digit once
  exp(-u) fell below the rounding of n^2 sums of -1).
* 2^m with m = round(u / ln 2), the typical entry near 1: exp(-u) underflows float32 for u > 87
  (threshold < 0.076 with the median rules) and its square float64 for u > 354.

The kernels evaluate 2^m exp(x) - c with a bounded error: about 4 eps (2^m K + |E|) per entry,
eps of the compute dtype, and about 2 eps |E| when 2^m K is within a factor 0.7 of 2^m (see
csrc/common/rbf_pair.h, ``rbf_exp_shifted``).

For the median bandwidth rules u = gamma * median = 1 / (2 threshold^2) whatever the data; with
an explicit sigma the typical squared distance is the median of a few random pairs (fixed
seed). float32 kernels narrower than u = :data:`FLOAT32_MAX_EXPONENT` are computed in float64:
with m capped at 100 (2^m finite in float32) their far pairs would flush to 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RbfKernel", "shifted_exp", "typical_exponent", "sampled_typical", "side_kernel", "pass_dtype",
           "kernel_args", "spread_exponent", "peak_exponent", "scaled_side", "scaled_gamma",
           "FLOAT32_MAX_EXPONENT", "TYPICAL_PAIRS"]

# Largest m the kernels take (csrc/common/rbf_pair.h, ExpM1Table<T>::kMaxScale).
_MAX_SCALE = {np.dtype(np.float32): 100, np.dtype(np.float64): 400}
# float32 passes of kernels with a larger typical exponent u run in float64: m = u / ln 2 stays
# <= 92 < 100, and pairs up to u + 87 past the typical one stay representable.
FLOAT32_MAX_EXPONENT = 64.0
# Random pairs whose median squared distance stands for the typical one with an explicit sigma.
TYPICAL_PAIRS = 2048


@dataclass(frozen=True)
class RbfKernel:
    """E = 2^m exp(-gamma d2) - c for one kernel (gamma, c rounded to the compute dtype)."""

    gamma: float
    c: float = 1.0
    m: int = 0

    @classmethod
    def of(cls, gamma: float, u: float, dtype: Any) -> RbfKernel:
        """The kernel with typical exponent ``u`` (gamma times the typical squared distance) in
        compute dtype ``dtype``: m = round(u / ln 2) (capped), c = 2^m exp(-u)."""
        dtype = np.dtype(dtype)
        u = float(u) if math.isfinite(u) and u > 0 else 0.0
        m = min(int(round(u / math.log(2.0))), _MAX_SCALE[dtype])
        c = math.exp(m * math.log(2.0) - u)
        scalar = dtype.type
        return cls(float(scalar(gamma)), float(scalar(c)), m)

    @classmethod
    def as_kernel(cls, k: RbfKernel | float | tuple) -> RbfKernel:
        """``k`` itself, (gamma, c, m), or a bare gamma (the ``expm1`` form K - 1)."""
        if isinstance(k, RbfKernel):
            return k
        if isinstance(k, tuple):
            return cls(float(k[0]), float(k[1]), int(k[2]))
        return cls(float(k))

    def args(self) -> tuple[float, float, int]:
        """(gamma, c, m) as the compiled kernels take them."""
        return self.gamma, self.c, self.m

    @property
    def diag(self) -> float:
        """The diagonal entry 2^m - c (in float64)."""
        return math.ldexp(1.0, self.m) - self.c

    @property
    def log2_scale(self) -> int:
        """The ``log2_k`` of :class:`~pyckafast._core.terms.KernelTerms`: the matrix held is
        K * 2^m = K * 2^-log2."""
        return -self.m


def typical_exponent(options: Any, gamma: float, median_of_pairs, one_point=None) -> float:
    """u = gamma * (typical squared distance) of one side.

    ``options`` is an ``RBFOptions`` (or None for an explicit gamma); with a median rule u is
    1 / (2 threshold^2) exactly, unless ``one_point()`` (optional) says the rows are all one
    point: then every distance is 0 and so is u (c = 1, m = 0: every entry K - 1 is exactly 0,
    so HSIC(x, x) is exactly 0 on every backend; with u = 1 / (2 threshold^2) the entries would
    be the constant 2^m - c and HSIC(x, x) = 0 would rest on the rounding of its cancelling
    terms, which depends on the backend's summation order). Otherwise ``median_of_pairs()``
    gives the median squared distance of :data:`TYPICAL_PAIRS` random row pairs (seed 0; see
    :func:`sampled_typical`), or None when the rows are all one point.
    """
    if options is not None and options.sigma is None:
        if one_point is not None and one_point():
            return 0.0
        return 1.0 / (2.0 * options.threshold ** 2)
    median = median_of_pairs()
    return 0.0 if median is None else float(gamma) * float(median)


def pass_dtype(dtype: Any, *exponents: float) -> np.dtype:
    """The dtype of the RBF pass: ``dtype``, or float64 for a float32 pass whose kernels are
    narrower than :data:`FLOAT32_MAX_EXPONENT` allows."""
    dtype = np.dtype(dtype)
    if dtype == np.float32 and max(exponents, default=0.0) > FLOAT32_MAX_EXPONENT:
        return np.dtype(np.float64)
    return dtype


def sampled_typical(side: Any) -> float | None:
    """The median squared distance of :data:`TYPICAL_PAIRS` random row pairs of a
    :class:`~pyckafast._core.pairs.CentredSide` (None if all rows are one point)."""
    from .bandwidth import median_over_pairs, sampled_pairs

    if side.max_sq_norm() == 0.0:
        return None
    xp = np if isinstance(side.rows, np.ndarray) else side.xp  # host rows of a GPU pass
    return median_over_pairs(side.rows, *sampled_pairs(side.n, TYPICAL_PAIRS, 0), xp=xp)


def side_kernel(options: Any, side: Any, gamma: float, dtype: Any) -> RbfKernel:
    """The :class:`RbfKernel` of one centred side under ``options`` (None: explicit gamma)."""
    u = typical_exponent(options, gamma, lambda: sampled_typical(side),
                         lambda: side.max_sq_norm() == 0.0)
    return RbfKernel.of(gamma, u, dtype)


def kernel_args(k: RbfKernel | float | tuple) -> tuple[float, float, int]:
    """(gamma, c, m) of a kernel given as :class:`RbfKernel`, a tuple or a bare gamma (for the
    backends' ``rbf_tile``/``rbf_pairs``: a bare gamma is the ``expm1`` form)."""
    return RbfKernel.as_kernel(k).args()


# ---- data of extreme magnitude ----------------------------------------------------------------
# Centred data whose largest |value| lies outside [2^-LIMIT, 2^LIMIT] are multiplied by a power of
# two (exact) that brings it near 1: float32 squares underflow below ~1e-19 and overflow above
# ~1e19, float64 ones near 1e-154 and 1e154. RBF CKA with a median bandwidth is scale invariant,
# and an explicit gamma is scaled by 2^-2k with the data, so the kernel does not change.
_SCALE_LIMIT_LOG2 = {np.dtype(np.float32): 24, np.dtype(np.float64): 200}
_SPREAD_ROWS = 8192


def spread_exponent(side: Any) -> int:
    """k such that the centred rows of ``side`` times 2^k have their largest |value| in
    [0.5, 1), or 0 when they are within the dtype's comfortable range (no copy needed)."""
    xp = np if isinstance(side.rows, np.ndarray) else side.xp
    shift = xp.asarray(side.shift).astype(np.float64)
    peak = 0.0
    for lo in range(0, side.n, _SPREAD_ROWS):
        part = xp.asarray(side.rows[lo:lo + _SPREAD_ROWS]).astype(np.float64)
        if part.size:
            peak = max(peak, float(xp.abs(part - shift).max()))
    return peak_exponent(peak, side.dtype)


def peak_exponent(peak: float, dtype: Any) -> int:
    """The k of :func:`spread_exponent` for centred data whose largest |value| is ``peak``."""
    if not (peak > 0.0 and math.isfinite(peak)):
        return 0
    exponent = math.frexp(peak)[1]  # peak in [2^(e-1), 2^e)
    limit = _SCALE_LIMIT_LOG2[np.dtype(np.promote_types(dtype, np.float32))]
    return -exponent if abs(exponent) > limit else 0


def scaled_side(side: Any) -> tuple[Any, int]:
    """(side, k): ``side`` itself and 0, or its rows and shift multiplied by 2^k (one scaled copy
    of the rows, in their dtype) when :func:`spread_exponent` asks for it."""
    from dataclasses import replace

    k = spread_exponent(side)
    if k == 0:
        return side, 0
    factor = math.ldexp(1.0, k)
    rows = side.rows * side.rows.dtype.type(factor)  # exact (a power of two)
    shift = side.shift * side.shift.dtype.type(factor)
    return replace(side, rows=rows, shift=shift), k


def scaled_gamma(gamma: float, k: int) -> float:
    """gamma of the data multiplied by 2^k: gamma * 2^-2k (gamma d2 unchanged)."""
    return math.ldexp(float(gamma), -2 * k)


# Below this exponent x, exp(x) < 0.71 and 2^m exp(x) - c is formed from exp; above, from expm1
# (2^m expm1(x) + (2^m - c): no cancellation when K is near 1 and c near 2^m). Either way the
# error is that of csrc/common/rbf_pair.h's rbf_exp_shifted: ~4 eps (2^m K + |E|).
_EXPM1_ABOVE = -0.34657359027997264  # -ln(2) / 2


def shifted_exp(xp: Any, x: Any, kernel: Any) -> Any:
    """In place, for any array module ``xp``: float64 exponents x = -gamma d2 <= 0 -> the
    entries E = 2^m exp(x) - c of ``kernel`` (its (gamma, c, m); gamma is not used here), the
    host-array form of csrc/common/rbf_pair.h's ``rbf_exp_shifted`` (NumPy reference tiles, the
    tiled map, CuPy tiles). Multiplying by 2^m is exact. Returns ``x``."""
    _, c, m = kernel_args(kernel)
    scale = math.ldexp(1.0, m)
    near = x > _EXPM1_ABOVE
    from_expm1 = xp.expm1(x)  # one tile of scratch
    from_expm1 *= scale
    from_expm1 += scale - c
    xp.exp(x, out=x)
    x *= scale
    x -= c
    xp.copyto(x, from_expm1, where=near)
    return x
