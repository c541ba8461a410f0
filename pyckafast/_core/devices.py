"""Where do the inputs live? Decided once at the public boundary, without importing cupy/torch.

NumPy arrays, memmaps and anything ``np.asarray`` accepts live on the CPU. CuPy arrays and torch
CUDA tensors live on a GPU; torch CPU tensors are taken through DLPack without a copy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["device_of", "common_device", "host_view", "producer_device"]

# DLPack device types (dlpack.h): kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13.
_DLPACK_CPU = (1, 3)
_DLPACK_CUDA = (2, 13)


def device_of(a: object) -> str:
    """"cpu" or "cuda" for one input, from its type and DLPack device; imports nothing."""
    if isinstance(a, np.ndarray):
        return "cpu"
    dl_device = getattr(a, "__dlpack_device__", None)
    if dl_device is not None:
        try:
            kind = int(dl_device()[0])
        except Exception:  # noqa: BLE001 - a foreign object with a broken protocol: treat as host data
            return "cpu"
        if kind in _DLPACK_CUDA:
            return "cuda"
    return "cpu"


def common_device(x: object, y: object) -> str:
    """The one device both inputs live on; raises if they are on different devices."""
    dx, dy = device_of(x), device_of(y)
    if dx != dy:
        raise ValueError(
            f"x and y must live on the same device; got x on {dx} ({type(x).__name__}) and "
            f"y on {dy} ({type(y).__name__}). Move one of them (e.g. .get() / .cpu() / cupy.asarray)."
        )
    return dx


def producer_device(backend: str, device: str) -> str:
    """The device whose backends produce the terms: the GPU when asked for, else the data's."""
    return "cuda" if backend == "cuda" else device


def host_view(a: object) -> object:
    """A NumPy view of host data: torch CPU tensors through DLPack (no copy), others unchanged."""
    if type(a).__module__.split(".")[0] == "torch":
        return np.from_dlpack(a.detach())  # type: ignore[attr-defined]
    return a
