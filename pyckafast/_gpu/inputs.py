"""GPU inputs at the public boundary: CuPy arrays and torch CUDA tensors are taken as they are
(DLPack, no copy); host arrays (NumPy, memmaps, torch CPU) stay on the host and are streamed to
the device chunk by chunk. The checks mirror :mod:`pyckafast._core.validation` and name the argument.
CuPy is imported inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._core.devices import device_of, host_view
from .._core.validation import as_samples, check_same_n, float_dtype

__all__ = ["Samples", "as_gpu_samples", "gpu_pair", "device_arrays"]


@dataclass(frozen=True)
class Samples:
    """One validated 2-D input: ``data`` is a cupy.ndarray (any strides, possibly an integer or
    bool dtype, converted chunk by chunk) or a host numpy array; ``dtype`` is the float dtype the
    kernels use for it."""

    data: object
    dtype: np.dtype
    on_device: bool


def as_gpu_samples(a: object, name: str) -> Samples:
    """Validate one input of a GPU producer without moving or copying device data."""
    if device_of(a) != "cuda":
        host = as_samples(host_view(a), name)
        return Samples(host, host.dtype, False)
    import cupy

    if not isinstance(a, cupy.ndarray):  # torch CUDA tensors and other DLPack producers
        a = cupy.from_dlpack(a.detach() if hasattr(a, "detach") else a)
    dtype = float_dtype(a.dtype, name)
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim != 2:
        raise ValueError(
            f"{name} must be a 1-D or 2-D array of shape (n_samples, n_features); got shape {a.shape}."
        )
    if a.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {a.shape}.")
    return Samples(a, dtype, True)


def gpu_pair(x: object, y: object, min_n: int, why: str = "") -> tuple[Samples, Samples, int]:
    """Both inputs validated, on one device (made current by the caller), with the same n."""
    sx, sy = as_gpu_samples(x, "x"), as_gpu_samples(y, "y")
    if sx.on_device and sy.on_device and sx.data.device.id != sy.data.device.id:
        raise ValueError(
            f"x and y must live on the same GPU; got x on device {sx.data.device.id} and y on "
            f"device {sy.data.device.id}."
        )
    n = check_same_n(sx.data, sy.data, min_n, why=why)
    return sx, sy, n


def device_id(*samples: Samples) -> int:
    """The GPU the inputs live on (the current device for host inputs)."""
    import cupy

    for s in samples:
        if s.on_device:
            return s.data.device.id
    return cupy.cuda.Device().id


def device_arrays(x: object, y: object) -> tuple[object, object]:
    """Both inputs as finite floating CuPy arrays on one device (host data copied there once):
    for passes that need all rows resident, such as the exact bandwidth selection."""
    import cupy

    sx, sy, _ = gpu_pair(x, y, 2, why="CKA needs variance")
    out = []
    for s, name in ((sx, "x"), (sy, "y")):
        a = s.data if s.on_device else cupy.asarray(s.data)
        a = a.astype(s.dtype, copy=False)
        if not bool(cupy.isfinite(a).all()):
            raise ValueError(f"{name} must contain only finite values; found NaN or Inf.")
        out.append(a)
    return out[0], out[1]
