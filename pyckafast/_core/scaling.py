"""Powers of two that bring data of extreme magnitude near 1 (exact scalings: CKA does not
change, and HSIC values are scaled back in :mod:`pyckafast._core.combine`)."""

from __future__ import annotations

import math

__all__ = ["SAFE_EXPONENT", "power_of_two_scale"]

# Spreads within 2^+-50 are left alone: no product of two such values, summed over any n that
# fits in memory, can over- or underflow float64.
SAFE_EXPONENT = 50


def power_of_two_scale(spread: float) -> float:
    """1.0 for a spread within [2^-50, 2^50] (or 0, or not finite), else the power of two that
    brings it into [0.5, 1).

    Examples
    --------
    >>> power_of_two_scale(3.0), power_of_two_scale(2.0 ** 60)
    (1.0, 4.336808689942018e-19)
    """
    if not math.isfinite(spread) or spread == 0.0:
        return 1.0
    exponent = math.frexp(spread)[1]
    return 1.0 if abs(exponent) <= SAFE_EXPONENT else math.ldexp(1.0, -exponent)
