"""Scalar rules at the public boundary, each written once.

The array checks live in :mod:`pyckafast._core.inputs`; their names are importable from here
too, because the block-pair and GPU drivers (owned elsewhere) import them from this module.
"""

from __future__ import annotations

import numpy as np

from .inputs import as_samples, check_finite_sums, check_same_n, float_dtype

__all__ = ["min_samples", "check_positive_scalar",
           "as_samples", "check_finite_sums", "check_same_n", "float_dtype"]


def min_samples(debiased: bool) -> tuple[int, str]:
    """The fewest samples an estimator is defined for, and why: the one place this rule lives."""
    if debiased:
        return 4, "the unbiased HSIC divides by n(n-3)"
    return 2, "CKA needs variance"


def check_positive_scalar(value: object, name: str) -> float:
    """Return ``value`` as a float, raising if it is not a finite number > 0 (for values that
    are not public parameters, e.g. a gamma computed by a driver)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive real number; got {value!r}.") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {v}.")
    return v
