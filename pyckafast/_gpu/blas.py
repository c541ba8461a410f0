"""cuBLAS calls the engine makes beyond CuPy's ``matmul``, as plain argument arithmetic (CuPy-free,
so the tests check the column-major mapping with NumPy).

TF32: CuPy's ``matmul`` calls ``cublasGemmEx`` with ``CUBLAS_COMPUTE_32F``; whether the handle's
TF32 math mode then engages tensor cores is cuBLAS's choice. The engine's float32 GEMMs under
``precision="tf32"`` therefore call ``cublasGemmEx`` themselves with the compute type
``CUBLAS_COMPUTE_32F_FAST_TF32``, which asks for TF32 explicitly.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["CUBLAS_COMPUTE_32F_FAST_TF32", "CUDA_R_32F", "gemm_at_b_args", "gemm_at_b"]

CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUDA_R_32F = 0  # cudaDataType_t
CUBLAS_COMPUTE_32F_FAST_TF32 = 77  # cublasComputeType_t (cublas_api.h)
CUBLAS_GEMM_DEFAULT = -1


def gemm_at_b_args(a_shape: tuple[int, int], b_shape: tuple[int, int]) -> dict[str, int]:
    """cuBLAS (column-major) arguments of out = a.T @ b for C-contiguous a (k x p), b (k x q) and
    out (p x q): column-major, out is out.T (q x p) = b' @ a'^T with b' = b.T (q x k, ld q) and
    a' = a.T (p x k, ld p)."""
    (k, p), (k2, q) = a_shape, b_shape
    if k != k2:
        raise ValueError(f"a and b must have the same rows; got {a_shape} and {b_shape}.")
    return {"transa": CUBLAS_OP_N, "transb": CUBLAS_OP_T, "m": q, "n": p, "k": k, "lda": max(1, q),
            "ldb": max(1, p), "ldc": max(1, q)}


def gemm_at_b(gemm_ex: Callable[..., Any], handle: int, a: Any, b: Any, out: Any,
              ptr: Callable[[Any], int], compute_type: int = CUBLAS_COMPUTE_32F_FAST_TF32) -> None:
    """out = a.T @ b (float32, C-contiguous) through ``gemm_ex`` (CuPy's ``cublas.gemmEx``, host
    pointer mode: alpha and beta are host addresses); ``ptr`` gives an array's device address."""
    for name, arr in (("a", a), ("b", b), ("out", out)):
        if arr.dtype != np.float32 or not arr.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous float32 array; got {arr.dtype}, "
                             f"strides {arr.strides}.")
    g = gemm_at_b_args(a.shape, b.shape)
    if out.shape != (g["n"], g["m"]):
        raise ValueError(f"out must have shape {(g['n'], g['m'])}; got {out.shape}.")
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)  # alive during the call
    gemm_ex(handle, g["transa"], g["transb"], g["m"], g["n"], g["k"], one.ctypes.data,
            ptr(b), CUDA_R_32F, g["lda"], ptr(a), CUDA_R_32F, g["ldb"], zero.ctypes.data,
            ptr(out), CUDA_R_32F, g["ldc"], compute_type, CUBLAS_GEMM_DEFAULT)
