"""Out-of-memory errors of the CUDA path beyond CuPy's own OutOfMemoryError.

cuBLAS reports a failed workspace allocation as ``CUBLASError`` (CUBLAS_STATUS_ALLOC_FAILED) and a
failed page-locked host allocation comes back as ``CUDARuntimeError`` (cudaErrorMemoryAllocation);
neither is a CuPy OutOfMemoryError, so the drivers' halving retry
(:func:`pyckafast._core.pairs.retry_out_of_memory`) would not see them. The engine runs such calls
inside :func:`translated`, which re-raises them as :class:`DeviceOutOfMemory` (one of the engine's
``oom_errors``). CuPy-free, so that the tests can raise fake errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DeviceOutOfMemory", "is_allocation_failure", "translated"]

_CUBLAS_STATUS_ALLOC_FAILED = 3  # cublasStatus_t
_CUDA_ERROR_MEMORY_ALLOCATION = 2  # cudaErrorMemoryAllocation == CUDA_ERROR_OUT_OF_MEMORY
_STATUS_BY_TYPE = {"CUBLASError": _CUBLAS_STATUS_ALLOC_FAILED,
                   "CUDARuntimeError": _CUDA_ERROR_MEMORY_ALLOCATION,
                   "CUDADriverError": _CUDA_ERROR_MEMORY_ALLOCATION}
_WORDS = ("ALLOC_FAILED", "cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY")


class DeviceOutOfMemory(MemoryError):
    """A cuBLAS or CUDA runtime allocation failure, retried like CuPy's OutOfMemoryError."""


def is_allocation_failure(exc: BaseException) -> bool:
    """True for cuBLAS ALLOC_FAILED and CUDA runtime/driver out-of-memory errors (by type name and
    status, else by the status name in the message)."""
    want = _STATUS_BY_TYPE.get(type(exc).__name__)
    if want is None:
        return False
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status == want
    return any(w in str(exc) for w in _WORDS)


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise allocation failures inside as :class:`DeviceOutOfMemory` (chained)."""
    try:
        yield
    except Exception as exc:
        if is_allocation_failure(exc):
            raise DeviceOutOfMemory(f"{type(exc).__name__}: {exc}") from exc
        raise
