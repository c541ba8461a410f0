"""Inputs at the public boundary, prepared once per call into :class:`Samples`.

Where an input lives is read from its type, without importing cupy, torch or dask (as
array-api-compat does, through ``type(a).__module__`` and ``sys.modules``):

* NumPy arrays, memmaps and anything ``np.asarray`` takes: kind "numpy", on the CPU. Torch CPU
  tensors and other host DLPack producers (JAX CPU arrays, any object with ``__dlpack__`` and
  ``__dlpack_device__``) are viewed through ``np.from_dlpack`` without a copy.
* CuPy arrays and torch CUDA tensors (and other DLPack producers on a CUDA device): kind "cupy",
  on the GPU; torch tensors become CuPy views through DLPack (CuPy is imported only then).
* Dask arrays: kind "dask"; they stay lazy, only their shape and dtype are read.

Every error names the argument (``x``, ``y``, ``xs[2]``), what was expected and what came.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

__all__ = ["Samples", "Kind", "array_kind", "device_of", "common_device", "host_view",
           "float_dtype", "as_samples", "prepare", "prepare_pair", "prepare_list",
           "check_same_n", "check_finite_sums", "check_finite_rows", "on_reachable_device"]

Kind = Literal["numpy", "cupy", "dask"]

# DLPack device types (dlpack.h): kDLCPU = 1, kDLCUDAHost = 3; kDLCUDA = 2, kDLCUDAManaged = 13.
_DLPACK_CUDA = (2, 13)
# Rows per block when a finiteness check has to find the offending row.
_FINITE_BLOCK = 8192


@dataclass(frozen=True)
class Samples:
    """One prepared 2-D input of shape (n, p).

    ``data`` is a host NumPy array (a view where possible), a CuPy array (any strides, possibly
    an integer dtype, converted by the GPU drivers chunk by chunk) or a lazy Dask array;
    ``dtype`` is the floating dtype it is computed in; ``on_device`` is True for GPU data;
    ``name`` is the argument's name in messages; ``kind`` is its array module.
    """

    data: Any
    dtype: np.dtype
    on_device: bool = False
    name: str = "x"
    kind: Kind = "numpy"

    @property
    def device(self) -> str:
        return "cuda" if self.on_device else "cpu"

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    @property
    def p(self) -> int:
        return int(self.data.shape[1])

    @property
    def xp(self) -> ModuleType:
        """The array module of ``data`` (already imported: the data is one of its arrays)."""
        return {"numpy": np, "cupy": sys.modules.get("cupy"),
                "dask": sys.modules.get("dask.array")}[self.kind] or np


def _top_module(a: object) -> str:
    return type(a).__module__.split(".")[0]


def device_of(a: object) -> str:
    """"cpu" or "cuda" for one input, from its type and DLPack device; imports nothing."""
    if isinstance(a, np.ndarray):
        return "cpu"
    dl_device = getattr(a, "__dlpack_device__", None)
    if dl_device is not None and _top_module(a) != "dask":
        try:
            kind = int(dl_device()[0])
        except Exception:  # noqa: BLE001 - a foreign object with a broken protocol: host data
            return "cpu"
        if kind in _DLPACK_CUDA:
            return "cuda"
    return "cpu"


def on_reachable_device(a: Any) -> Any:
    """``a`` itself, or a host copy of a CUDA tensor when CuPy (which pyckafast's GPU producers
    use) is not installed: a model on the GPU then still gets its CKA, computed on the host.
    Imports neither torch nor CuPy (only looks CuPy up)."""
    if getattr(getattr(a, "device", None), "type", None) == "cuda" and hasattr(a, "cpu"):
        import importlib.util

        if importlib.util.find_spec("cupy") is None:
            return a.cpu()
    return a


def array_kind(a: object) -> Kind:
    """"dask" for Dask arrays, "cupy" for data on a CUDA device, else "numpy"."""
    if _top_module(a) == "dask":
        dask_array = sys.modules.get("dask.array")
        if dask_array is not None and isinstance(a, dask_array.Array):
            return "dask"
    return "cupy" if device_of(a) == "cuda" else "numpy"


def common_device(x: object, y: object) -> str:
    """The one device both inputs live on; raises if they are on different devices."""
    dx, dy = device_of(x), device_of(y)
    if dx != dy:
        raise ValueError(
            f"x and y must live on the same device; got x on {dx} ({type(x).__name__}) and "
            f"y on {dy} ({type(y).__name__}). Move one of them (e.g. .get() / .cpu() / cupy.asarray)."
        )
    return dx


def host_view(a: object) -> object:
    """A NumPy view of host data: torch CPU tensors and any other DLPack producer on the host
    (``__dlpack__`` and ``__dlpack_device__``: JAX CPU arrays, ...) through ``np.from_dlpack``,
    which shares their memory; others unchanged.

    A producer NumPy cannot view (a dtype it lacks, a broken protocol) is left to
    ``np.asarray``, which copies through ``__array__`` where the producer has one.
    """
    if isinstance(a, np.ndarray):
        return a
    if _top_module(a) == "torch":
        return np.from_dlpack(a.detach())  # type: ignore[attr-defined]
    if hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__") and _top_module(a) != "dask":
        try:
            return np.from_dlpack(a)
        except (TypeError, ValueError, BufferError, RuntimeError, AttributeError):
            return a
    return a


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


def _as_2d(a: Any, name: str) -> Any:
    """``a`` with one feature axis added to 1-D input; any array module, never copies."""
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim != 2:
        raise ValueError(
            f"{name} must be a 1-D or 2-D array of shape (n_samples, n_features); "
            f"got shape {a.shape}."
        )
    if 0 in a.shape:
        raise ValueError(f"{name} must not be empty; got shape {a.shape}.")
    return a


def as_samples(x: object, name: str) -> np.ndarray:
    """Return host data ``x`` as a 2-D floating NumPy array of shape (n_samples, n_features).

    1-D input is one feature. Integer and boolean input is converted to float64, float16 to
    float32. Non-contiguous, Fortran-ordered and memory-mapped arrays are returned as views.
    """
    _reject_subclasses(x, name)
    arr = x if isinstance(x, np.ndarray) else np.asarray(host_view(x))
    target = float_dtype(arr.dtype, name)
    if arr.dtype != target:
        arr = arr.astype(target)
    return _as_2d(arr, name)


def _reject_subclasses(x: object, name: str) -> None:
    """Masked arrays and np.matrix are ndarrays whose meaning the kernels would not keep: a mask
    would be ignored (or half-honoured by NumPy reductions), and matrix products change shapes."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must be a plain array; got a numpy.ma.MaskedArray, whose mask would be "
            f"ignored. Drop the masked samples (e.g. {name}[~{name}.mask.any(axis=1)].data) or "
            f"fill them ({name}.filled(value)) first.")
    if isinstance(x, np.matrix):
        raise TypeError(f"{name} must be a plain array; got a numpy.matrix. Pass "
                        f"np.asarray({name}).")


def prepare(a: object, name: str) -> Samples:
    """One input as :class:`Samples`, wherever it lives; device and Dask data are not moved."""
    kind = array_kind(a)
    if kind == "numpy":
        host = as_samples(a, name)
        return Samples(host, host.dtype, False, name, "numpy")
    if kind == "dask":
        dtype = float_dtype(a.dtype, name)  # type: ignore[attr-defined]
        if math.isnan(a.shape[0]):  # type: ignore[attr-defined]  # e.g. after boolean indexing
            raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() "
                             "first.")
        return Samples(_without_empty_chunks(_as_2d(a, name)), dtype, False, name, "dask")
    from .._gpu.inputs import as_cupy  # data on a GPU: CuPy is needed (and importable) now

    data = as_cupy(a)
    return Samples(_as_2d(data, name), float_dtype(data.dtype, name), True, name, "cupy")


def _without_empty_chunks(a: Any) -> Any:
    """A Dask array whose empty row chunks (boolean filtering makes them) are merged away: they
    hold no samples, and a task over zero rows has no terms to give."""
    rows = a.chunks[0]
    if all(rows) or not any(rows):
        return a
    return a.rechunk({0: tuple(c for c in rows if c)})


def check_same_n(x: Any, y: Any, min_n: int, *, why: str = "", names: tuple[str, str] = ("x", "y")) -> int:
    """Check that x and y have the same number of rows, at least ``min_n``; return n."""
    n, m = x.shape[0], y.shape[0]
    if m != n:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of samples (rows); "
            f"got {names[0]} with {n} and {names[1]} with {m}."
        )
    if n < min_n:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{names[0]} and {names[1]} need at least {min_n} samples{reason}; got {n}.")
    return n


def prepare_pair(x: object, y: object, *, min_n: int, why: str = "", finite: bool = False,
                 names: tuple[str, str] = ("x", "y")) -> tuple[Samples, Samples, int]:
    """Both inputs prepared, on one device (or both Dask), with the same n >= ``min_n``.

    ``finite=True`` checks every value now (one O(n p) pass, for producers whose first pass
    does not check, e.g. bandwidth selection); otherwise the producer checks chunk by chunk.
    """
    if "dask" in (array_kind(x), array_kind(y)):  # Dask takes host arrays beside a Dask array
        sx, sy = _dask_samples(x, names[0]), _dask_samples(y, names[1])
    else:
        common_device(x, y)
        sx, sy = prepare(x, names[0]), prepare(y, names[1])
    n = check_same_n(sx.data, sy.data, min_n, why=why, names=names)
    if finite:
        check_finite_rows(sx)
        check_finite_rows(sy)
    return sx, sy, n


def _dask_samples(a: object, name: str) -> Samples:
    if array_kind(a) == "dask":
        return prepare(a, name)
    if device_of(a) == "cuda":
        raise ValueError(f"{name} lives on a GPU but the other input is a Dask array; "
                         "move it to the host or into Dask first.")
    import dask.array as da  # the other input is a Dask array, so Dask is imported already

    return prepare(da.asarray(as_samples(a, name)), name)


def prepare_list(reps: object, name: str, *, finite: bool = False) -> list[Samples]:
    """A non-empty list of representations of the same samples, each prepared, named
    ``name[i]``, all on one device."""
    if isinstance(reps, (np.ndarray, str)) or not isinstance(reps, Sequence) or len(reps) == 0:
        raise TypeError(f"{name} must be a non-empty list of 2-D arrays; got {type(reps).__name__}.")
    samples = [prepare(r, f"{name}[{i}]") for i, r in enumerate(reps)]
    devices = {s.device for s in samples}
    if len(devices) > 1 or any(s.kind == "dask" for s in samples):
        raise ValueError(f"every representation in {name} must be a NumPy or a GPU array, all on "
                         f"one device; got {[f'{s.name}: {s.kind}' for s in samples]}.")
    if finite:
        for s in samples:
            check_finite_rows(s)
    return samples


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


def check_finite_rows(s: Samples) -> None:
    """Raise, naming ``s.name`` and the first offending row, if ``s`` holds a NaN or Inf.

    Host data is checked through float64 column sums a block at a time (no boolean copy of the
    whole array); the row is looked for only once a block's sum is not finite. Device data is
    checked on the device; Dask data by its producer, inside the reduction (it stays lazy here).
    """
    if s.kind == "dask":
        return
    xp, a = s.xp, s.data
    for lo in range(0, s.n, _FINITE_BLOCK):
        block = a[lo:lo + _FINITE_BLOCK]
        if bool(xp.isfinite(block.sum(axis=0, dtype=np.float64)).all()):
            continue
        bad = ~xp.isfinite(block).all(axis=1)
        where = (f"found NaN or Inf in row {lo + int(xp.argmax(bad))}" if bool(bad.any()) else
                 f"values in rows {lo}..{lo + block.shape[0] - 1} are so large that their sum "
                 "overflows float64")
        raise ValueError(f"{s.name} must contain only finite values; {where}.")
