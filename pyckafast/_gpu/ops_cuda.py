"""The "cuda" backend: CUDA kernels through CuPy, whole-array producers of host float64 terms.

Inputs are prepared :class:`pyckafast._core.inputs.Samples` (parameters were checked by the
public function's spec): CuPy arrays (torch CUDA tensors arrive as CuPy views through DLPack) or
host arrays (NumPy, memmaps: streamed to the device chunk by chunk). CuPy is imported only after
:func:`unusable_reason` found it, so ``import pyckafast`` never imports it.

Operations: ``linear_terms``, ``rbf_terms`` (and ``rbf_terms_under``, which also selects the
bandwidths on the device; see docs/ARCHITECTURE.md) and ``hsic_matrix`` (the
HSIC between all pairs of representations of one minibatch, for minibatch CKA and CKA maps).
"""

from __future__ import annotations

import numpy as np

from .._core.inputs import Samples, check_same_n, prepare
from .._core.terms import KernelTerms, LinearTerms
from .._core.validation import check_positive_scalar, min_samples

__all__ = ["unusable_reason", "describe_device", "linear_terms", "rbf_terms", "rbf_terms_under",
           "hsic_matrix", "array_module", "device_array", "launches"]


def unusable_reason() -> str | None:
    """None if CuPy imports, sees a CUDA device and can compile a kernel and run cuBLAS, else
    why not (naming the missing piece: see :mod:`pyckafast._gpu.toolkit`)."""
    try:
        import cupy
    except ImportError as exc:
        return (f"CuPy is not installed ({exc}); install pyckafast[cuda12] or pyckafast[cuda13] "
                "to match your CUDA driver")
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises all sorts
        return f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError without a driver or device
        return f"CuPy finds no usable CUDA device ({type(exc).__name__}: {exc})"
    if count <= 0:
        return "CuPy finds no CUDA device"
    from .toolkit import cached_missing_toolkit

    return cached_missing_toolkit(cupy)  # NVRTC, headers and cuBLAS, probed once


def describe_device() -> str:
    """One line about the current GPU (for show_config)."""
    import cupy

    device = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = device.mem_info
    return (f"{name} (device {device.id} of {cupy.cuda.runtime.getDeviceCount()}, compute "
            f"capability {device.compute_capability}, {free / 2**30:.1f} of {total / 2**30:.1f} "
            f"GiB free, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, CuPy "
            f"{cupy.__version__})")


def array_module():
    """The array module of device data (the GPU producers index batches with it)."""
    import cupy

    return cupy


def device_array(s: Samples):
    """One prepared input as a CuPy array on the device (host data copied once)."""
    from . import inputs as gpu_inputs

    return gpu_inputs.device_array(s)


def linear_terms(x: Samples, y: Samples, *, debiased: bool, chunk_size: int | None = None,
                 precision: str = "highest") -> LinearTerms:
    """Exact linear terms of prepared x and y on the GPU (host float64 result).

    ``precision="tf32"`` lets cuBLAS run float32 GEMMs on TF32 tensor cores (10-bit mantissa
    inputs, float32 accumulation); the default "highest" keeps full float32/float64 GEMMs.
    """
    import cupy

    from . import engine, inputs as gpu_inputs, linear as gpu_linear

    with cupy.cuda.Device(gpu_inputs.device_id(x, y)):
        return gpu_linear.linear_terms(engine.CudaEngine(), x, y, x.n, debiased=debiased,
                                        chunk_size=chunk_size, precision=precision)


def rbf_terms(x, y, *, gamma_x: float, gamma_y: float, tile: int | None = None) -> KernelTerms:
    """Kernel terms of E = K - 1, F = L - 1 (RBF kernels exp(-gamma |a - b|^2)) on the GPU.

    ``x``, ``y``: prepared :class:`Samples` or arrays (CuPy, torch CUDA or host). ``tile`` is
    the number of rows per block held on the device (default: as many as half the free memory
    allows); every block pair is one launch of the fused tile kernel.
    """
    from . import rbf as gpu_rbf

    gamma_x = check_positive_scalar(gamma_x, "gamma_x")
    gamma_y = check_positive_scalar(gamma_y, "gamma_y")
    return _on_device(x, y, lambda engine, sx, sy: gpu_rbf.rbf_terms(
        engine, sx, sy, gamma_x=gamma_x, gamma_y=gamma_y, tile=tile))


def rbf_terms_under(x, y, *, options, tile: int | None = None) -> KernelTerms:
    """Kernel terms on the GPU with the bandwidths ``options`` (an ``rbf.RBFOptions``) choose,
    selected on the device from the same centred inputs as the pass."""
    from . import rbf as gpu_rbf

    return _on_device(x, y, lambda engine, sx, sy: gpu_rbf.rbf_terms_under(
        engine, sx, sy, options=options, tile=tile))


def _on_device(x, y, run) -> KernelTerms:
    """``run(engine, sx, sy)`` on the GPU the inputs live on, after the boundary checks."""
    import cupy

    from . import engine, inputs as gpu_inputs

    sx = x if isinstance(x, Samples) else prepare(x, "x")
    sy = y if isinstance(y, Samples) else prepare(y, "y")
    min_n, why = min_samples(debiased=False)  # kernel terms serve both estimators
    check_same_n(sx.data, sy.data, min_n, why=why)
    with cupy.cuda.Device(gpu_inputs.device_id(sx, sy)):
        return run(engine.CudaEngine(), sx, sy)


def hsic_matrix(reps, *, kernel: str = "linear", gammas=None, debiased: bool = True) -> np.ndarray:
    """HSIC between every pair of representations of one batch of samples, on the GPU.

    ``reps``: a sequence of (m, p_i) arrays (CuPy, torch CUDA, or host arrays copied to the
    device) or prepared Samples, of the same m samples. Returns the L x L float64 host matrix (unbiased HSIC of Song et al. 2012
    when ``debiased``, else the biased tr(KHLH)/(m-1)^2). Minibatch CKA averages these over
    batches.
    """
    import cupy

    from . import inputs as gpu_inputs
    from .._core import gram

    if not reps:
        raise ValueError("reps must hold at least one representation; got none.")
    samples = [r if isinstance(r, Samples) else prepare(r, f"reps[{i}]") for i, r in enumerate(reps)]
    with cupy.cuda.Device(gpu_inputs.device_id(*samples)):
        arrays = [gpu_inputs.device_array(s) for s in samples]
        return cupy.asnumpy(gram.hsic_matrix(cupy, arrays, kernel=kernel, gammas=gammas,
                                             debiased=debiased))


def launches() -> dict[str, int]:
    """CUDA kernel launches in this process by kernel name (empty before the first)."""
    from . import kernels

    return kernels.launches()
