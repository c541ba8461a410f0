"""The part of input preparation that needs CuPy (imported inside each function): DLPack views
of device data, the device the inputs live on, and whole inputs copied to the device.

Everything else about inputs (kinds, shapes, dtypes, n, finiteness) is in
:mod:`pyckafast._core.inputs`, the same for every device.
"""

from __future__ import annotations

from .._core.inputs import Samples, check_finite_rows, float32_if_numpy_lacks

__all__ = ["as_cupy", "device_id", "device_array"]


def as_cupy(a: object):
    """A CuPy view of data on a CUDA device (torch CUDA tensors and other DLPack producers are
    taken through DLPack, without a copy; torch bfloat16 / float8 tensors, which CuPy has no
    dtype for, as one float32 copy on the device)."""
    import cupy

    if isinstance(a, cupy.ndarray):
        return a
    if hasattr(a, "detach"):
        a = float32_if_numpy_lacks(a.detach())
    return cupy.from_dlpack(a)


def device_id(*samples: Samples) -> int:
    """The GPU the inputs live on (the current device for host inputs); raises if two inputs
    live on different GPUs."""
    import cupy

    ids = {s.name: s.data.device.id for s in samples if s.on_device}
    if len(set(ids.values())) > 1:
        raise ValueError(f"the inputs must live on the same GPU; got {ids}.")
    return next(iter(ids.values())) if ids else cupy.cuda.Device().id


def device_array(s: Samples):
    """``s`` as one finite floating CuPy array on the device (host data copied there once): for
    passes that need all rows resident, such as the exact bandwidth selection."""
    import cupy

    a = s.data if s.on_device else cupy.asarray(s.data)
    a = a.astype(s.dtype, copy=False)
    check_finite_rows(Samples(a, s.dtype, True, s.name, "cupy"))
    return a
