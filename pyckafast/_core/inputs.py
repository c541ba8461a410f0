"""Inputs at the public boundary, prepared once per call into :class:`Samples`.

Where an input lives is read from its type, without importing cupy, torch or dask (as
array-api-compat does, through ``type(a).__module__`` and ``sys.modules``):

* NumPy arrays, memmaps and anything ``np.asarray`` takes: kind "numpy", on the CPU. Torch CPU
  tensors and other host DLPack producers (JAX CPU arrays, any object with ``__dlpack__`` and
  ``__dlpack_device__``) are viewed through ``np.from_dlpack`` without a copy; torch tensors of
  a dtype NumPy lacks (bfloat16, float8) become one float32 copy first.
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
           "float32_if_numpy_lacks",
           "float_dtype", "as_samples", "as_cupy", "prepare", "prepare_pair", "prepare_list",
           "check_same_n", "into_dask", "check_finite_sums", "check_finite_rows", "column_mean",
           "on_reachable_device"]

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
        return np.from_dlpack(float32_if_numpy_lacks(a.detach()))  # type: ignore[attr-defined]
    if hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__") and _top_module(a) != "dask":
        try:
            return np.from_dlpack(a)
        except (TypeError, ValueError, BufferError, RuntimeError, AttributeError):
            return a
    return a


# Torch floating dtypes NumPy (and CuPy) have no dtype for, so DLPack cannot hand them over.
_NUMPY_LACKS = ("torch.bfloat16", "torch.float8")


def float32_if_numpy_lacks(t: Any) -> Any:
    """A torch tensor of a dtype NumPy lacks (bfloat16, the float8 formats) as one float32
    copy on its device (float32 holds every such value exactly, and bfloat16 computes in
    float32 anyway, as float16 does); any other tensor unchanged."""
    if str(t.dtype).startswith(_NUMPY_LACKS):
        return t.float()
    return t


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
    data = as_cupy(a)  # data on a GPU: CuPy is needed (and importable) now
    return Samples(_as_2d(data, name), float_dtype(data.dtype, name), True, name, "cupy")


def as_cupy(a: object) -> Any:
    """A CuPy view of data on a CUDA device (torch CUDA tensors and other DLPack producers are
    taken through DLPack, without a copy; torch bfloat16 / float8 tensors, which CuPy has no
    dtype for, as one float32 copy on the device)."""
    import cupy

    if isinstance(a, cupy.ndarray):
        return a
    if hasattr(a, "detach"):
        a = float32_if_numpy_lacks(a.detach())
    return cupy.from_dlpack(a)


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
    ``name[i]``, all on one device; if any is a Dask array, all are (host arrays wrapped)."""
    if isinstance(reps, (np.ndarray, str)) or not isinstance(reps, Sequence) or len(reps) == 0:
        raise TypeError(f"{name} must be a non-empty list of 2-D arrays; got {type(reps).__name__}.")
    names = [f"{name}[{i}]" for i in range(len(reps))]
    if any(array_kind(r) == "dask" for r in reps):  # host arrays beside Dask ones go into Dask
        samples = [_dask_samples(r, n) for r, n in zip(reps, names)]
    else:
        samples = [prepare(r, n) for r, n in zip(reps, names)]
    if len({s.device for s in samples}) > 1:
        raise ValueError(f"every representation in {name} must live on one device; got "
                         f"{[f'{s.name}: {s.device}' for s in samples]}.")
    if finite:
        for s in samples:
            check_finite_rows(s)
    return samples


def into_dask(samples: list[Samples]) -> list[Samples]:
    """``samples`` with host inputs wrapped into Dask arrays (lazily; GPU data raise), for a call
    whose other inputs are Dask arrays."""
    return [s if s.kind == "dask" else _dask_samples(s.data, s.name) for s in samples]


def column_mean(a: Any, xp: Any = np) -> Any:
    """Float64 column means of the rows ``a`` (module ``xp``) that do not overflow for finite
    data: rows whose largest value is so large that n of them could overflow a float64 sum
    (finite data near 1e307) are summed times a power of two (exact) and the mean scaled back,
    which cannot overflow (a mean is no larger than the largest value). NaN / Inf stay as
    they are, so the caller's finiteness check sees them."""
    with np.errstate(all="ignore"):
        mean = a.mean(axis=0, dtype=np.float64)
        if bool(xp.isfinite(mean).all()):
            return mean
        peak = float(xp.max(xp.abs(a)))
        if not math.isfinite(peak):
            return mean
        exponent = math.frexp(peak)[1]
        small = (a * math.ldexp(1.0, -exponent)).mean(axis=0, dtype=np.float64)
        return xp.ldexp(small, exponent)  # 2^1024 itself is not a float64: scale in one step


def check_finite_sums(sums: np.ndarray, name: str, start: int, stop: int,
                      rows: Any = None) -> None:
    """Raise if a column-sum vector is not finite: a NaN or Inf in rows [start, stop) of ``name``.

    A sum over values that contains NaN or +-Inf is itself non-finite, so checking the sums that
    the kernels accumulate anyway costs nothing and needs no boolean copy of the data. ``rows``
    (the chunk the sums are of, any array module) lets the message name the first bad row and
    column; it is read only once a sum is not finite.
    """
    if np.all(np.isfinite(sums)):
        return
    where = _first_non_finite(rows, start) if rows is not None else None
    if where is not None:
        raise ValueError(f"{name} must contain only finite values; found {where}.")
    raise ValueError(
        f"{name} must contain only finite values; found NaN or Inf in rows {start}..{stop - 1} "
        f"(or values so large that their sum overflows float64)."
    )


def _first_non_finite(block: Any, start: int) -> str | None:
    """"NaN or Inf in row i, column j (NaN)" (global row ``start + i``) of the first
    non-finite value of a 2-D block (any array module), or None if every value is finite."""
    xp = sys.modules.get(type(block).__module__.split(".")[0], np)
    if not hasattr(xp, "isfinite"):
        xp = np
    for lo in range(0, block.shape[0], _FINITE_BLOCK):  # no boolean copy of a whole memmap
        bad = ~xp.isfinite(block[lo:lo + _FINITE_BLOCK])
        if bool(bad.any()):
            row, col = divmod(int(xp.argmax(bad.reshape(-1))), block.shape[1])
            value = float(block[lo + row, col])
            kind = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
            return f"NaN or Inf in row {start + lo + row}, column {col} ({kind})"
    return None


def check_finite_rows(s: Samples) -> None:
    """Raise, naming ``s.name`` and the first offending row and column, if ``s`` holds a NaN or
    Inf.

    Host data is checked through float64 column sums a block at a time (no boolean copy of the
    whole array); the row is looked for only once a block's sum is not finite, and a block whose
    values are all finite (a sum of data near 1e307 may overflow) passes: the producers scale
    such data by a power of two. Device data is checked on the device; Dask data by its
    producer, inside the reduction (it stays lazy here).
    """
    if s.kind == "dask":
        return
    xp, a = s.xp, s.data
    for lo in range(0, s.n, _FINITE_BLOCK):
        block = a[lo:lo + _FINITE_BLOCK]
        with np.errstate(over="ignore", invalid="ignore"):
            if bool(xp.isfinite(block.sum(axis=0, dtype=np.float64)).all()):
                continue
        where = _first_non_finite(block, lo)
        if where is not None:
            raise ValueError(f"{s.name} must contain only finite values; found {where}.")
