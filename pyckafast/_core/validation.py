"""Checks at the public boundary: every error names the argument, what was expected and what came."""

from __future__ import annotations

import numpy as np

__all__ = ["float_dtype", "as_samples", "check_same_n", "check_finite_sums", "check_positive_scalar",
           "min_samples"]


def float_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The floating dtype an input of ``dtype`` is computed in: integer and bool -> float64,
    float16 -> float32, longer than float64 -> float64; anything else is a TypeError."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    if dtype.kind == "f":
        return np.dtype(np.float32 if dtype.itemsize <= 4 else np.float64)
    raise TypeError(
        f"{name} must hold real numbers (float32, float64, integer or bool); got dtype {dtype}."
    )


def as_samples(x: object, name: str) -> np.ndarray:
    """Return ``x`` as a 2-D floating array of shape (n_samples, n_features) without copying.

    1-D input is one feature. Integer and boolean input is converted to float64, float16 to float32.
    Non-contiguous, Fortran-ordered and memory-mapped arrays are returned as views.
    """
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    target = float_dtype(arr.dtype, name)
    if arr.dtype != target:
        arr = arr.astype(target)
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 1-D or 2-D array of shape (n_samples, n_features); "
            f"got shape {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}.")
    return arr


def min_samples(debiased: bool) -> tuple[int, str]:
    """The fewest samples an estimator is defined for, and why: the one place this rule lives."""
    if debiased:
        return 4, "the unbiased HSIC divides by n(n-3)"
    return 2, "CKA needs variance"


def check_same_n(x: np.ndarray, y: np.ndarray, min_n: int, *, why: str = "") -> int:
    """Check that x and y have the same number of rows, at least ``min_n``; return n."""
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(
            f"x and y must have the same number of samples (rows); "
            f"got x with {n} and y with {y.shape[0]}."
        )
    if n < min_n:
        reason = f" ({why})" if why else ""
        raise ValueError(f"x and y need at least {min_n} samples{reason}; got {n}.")
    return n


def check_finite_sums(sums: np.ndarray, name: str, start: int, stop: int) -> None:
    """Raise if a column-sum vector is not finite: a NaN or Inf in rows [start, stop) of ``name``.

    A sum over values that contains NaN or +-Inf is itself non-finite, so checking the sums that
    the kernels accumulate anyway costs nothing and needs no boolean copy of the data.
    """
    if not np.all(np.isfinite(sums)):
        raise ValueError(
            f"{name} must contain only finite values; found NaN or Inf in rows {start}..{stop - 1} "
            f"(or values so large that their sum overflows float64)."
        )


def check_positive_scalar(value: object, name: str) -> float:
    """Return ``value`` as a float, raising if it is not a finite number > 0."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive real number; got {value!r}.") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {v}.")
    return v
