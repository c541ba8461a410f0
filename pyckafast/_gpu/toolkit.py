"""Is the CUDA toolkit CuPy needs really there? A driver-only machine imports CuPy and sees the
device, yet has no NVRTC (run-time compiler), no CUDA headers or no cuBLAS; the first kernel then
fails deep inside a call. :func:`missing_toolkit` probes each once, with a trivial compile and a
trivial cuBLAS GEMM, and says exactly what is missing and how to get it. It takes the ``cupy``
module as an argument so that the tests can hand it a fake one (no GPU in CI).
"""

from __future__ import annotations

from typing import Any

__all__ = ["missing_toolkit", "cached_missing_toolkit", "FIX"]

FIX = ("install CuPy with its CUDA toolkit wheels: pip install 'pyckafast[cuda12]' (that is "
       "cupy-cuda12x[ctk]) or 'pyckafast[cuda13]' (cupy-cuda13x[ctk]), or a system CUDA toolkit "
       "CuPy finds (CUDA_PATH)")

_PROBE_SOURCE = 'extern "C" __global__ void pcf_probe(float* a) { a[threadIdx.x] = 1.0f; }'
_CACHE: dict[str, str | None] = {}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def missing_toolkit(cupy: Any) -> str | None:
    """None when NVRTC compiles a trivial kernel and cuBLAS runs a 2 x 2 GEMM, else the first
    missing piece (NVRTC, the CUDA headers, cuBLAS) with the error it raised and the fix."""
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - a missing libnvrtc raises several types
        return f"NVRTC (libnvrtc, CUDA's run-time compiler) cannot be loaded ({_describe(exc)}); {FIX}"
    try:
        module = cupy.RawModule(code=_PROBE_SOURCE, options=("-std=c++17",))
        module.get_function("pcf_probe")  # compiles and loads
    except Exception as exc:  # noqa: BLE001 - CompileException, RuntimeError (headers), ...
        text = str(exc)
        what = ("the CUDA headers CuPy compiles against are missing" if "header" in text.lower()
                else "NVRTC cannot compile a trivial kernel")
        return f"{what} ({_describe(exc)}); {FIX}"
    try:
        a = cupy.ones((2, 2), dtype="float32")
        cupy.cuda.device.get_cublas_handle()
        float((a @ a).sum())  # a real cuBLAS call, synchronised
    except Exception as exc:  # noqa: BLE001 - CUBLASError, missing libcublas (ImportError/OSError)
        return f"cuBLAS (libcublas) is unusable ({_describe(exc)}); {FIX}"
    return None


def cached_missing_toolkit(cupy: Any) -> str | None:
    """:func:`missing_toolkit`, probed once per process."""
    if "answer" not in _CACHE:
        _CACHE["answer"] = missing_toolkit(cupy)
    return _CACHE["answer"]
