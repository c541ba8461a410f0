"""The CUDA engine's edges without a GPU, through fake CuPy modules: the toolkit probe
(NVRTC, headers, cuBLAS), allocation failures that must reach the out-of-memory retry, and the
explicit TF32 GEMM's column-major arguments (checked by a NumPy cublasGemmEx)."""

from __future__ import annotations

import ctypes
import importlib
import sys
import types

import numpy as np
import pytest

from pyckafast._gpu import blas, oom, toolkit


# ---- fakes -------------------------------------------------------------------------------------
class CUBLASError(RuntimeError):
    def __init__(self, status):
        super().__init__(f"CUBLAS_STATUS {status}")
        self.status = status


class CUDARuntimeError(RuntimeError):
    def __init__(self, status):
        super().__init__(f"cudaError {status}")
        self.status = status


class DevArray(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr`` (its host address stands for the device one)."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _dev(a):
    return np.ascontiguousarray(a).view(DevArray)


def _col_major(ptr, rows, cols, ld):
    buf = (ctypes.c_float * (ld * cols)).from_address(ptr)
    return np.ctypeslib.as_array(buf).reshape(cols, ld).T[:rows]


def numpy_gemm_ex(handle, transa, transb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c,
                  ctype, ldc, compute, algo):
    """cublasGemmEx on host memory (column-major, host pointer mode), for float32."""
    assert (atype, btype, ctype) == (blas.CUDA_R_32F,) * 3
    calls.append(compute)
    alpha = ctypes.c_float.from_address(alpha).value
    beta = ctypes.c_float.from_address(beta).value
    op_a = _col_major(a, m, k, lda) if transa == 0 else _col_major(a, k, m, lda).T
    op_b = _col_major(b, k, n, ldb) if transb == 0 else _col_major(b, n, k, ldb).T
    out = _col_major(c, m, n, ldc)
    prod = alpha * (op_a.astype(np.float64) @ op_b)
    out[...] = prod if beta == 0 else prod + beta * out  # beta = 0: C is not read (BLAS)


calls: list[int] = []


def _fake_cupy(*, nvrtc=None, compile_error=None, cublas_error=None, pinned_error=None,
               syrk_error=None):
    def raise_(exc):
        if exc is not None:
            raise exc

    class RawModule:
        def __init__(self, code, options=()):
            self.code = code

        def get_function(self, name):
            raise_(compile_error)
            return name

    class OutOfMemoryError(MemoryError):
        pass

    stream = types.SimpleNamespace(ptr=0, wait_event=lambda e: None)
    cuda = types.SimpleNamespace(
        nvrtc=types.SimpleNamespace(getVersion=lambda: raise_(nvrtc) or (12, 4)),
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
        device=types.SimpleNamespace(get_cublas_handle=lambda: raise_(cublas_error) or 7),
        get_current_stream=lambda: stream,
        alloc_pinned_memory=lambda size: raise_(pinned_error) or bytearray(size),
    )

    def syrk(trans, b, out, alpha, beta, lower):
        raise_(syrk_error)
        out[...] = np.triu(b.T @ b)

    fake = types.ModuleType("cupy")
    fake.cuda, fake.RawModule = cuda, RawModule
    fake.ones = np.ones
    fake.matmul = np.matmul
    fake.cublas = types.ModuleType("cupy.cublas")
    fake.cublas.syrk = syrk
    return fake


@pytest.fixture
def fake_engine(monkeypatch):
    """pyckafast._gpu.engine imported against a fake cupy (and cupy_backends' cublas)."""
    def load(**kw):
        fake = _fake_cupy(**kw)
        cublas = types.ModuleType("cupy_backends.cuda.libs.cublas")
        cublas.gemmEx = numpy_gemm_ex
        cublas.getMathMode = lambda handle: 0
        cublas.setMathMode = lambda handle, mode: None
        cublas.setStream = lambda handle, ptr: None
        libs = types.ModuleType("cupy_backends.cuda.libs")
        libs.cublas = cublas
        for name, module in (("cupy", fake), ("cupy.cublas", fake.cublas),
                             ("cupy_backends", types.ModuleType("cupy_backends")),
                             ("cupy_backends.cuda", types.ModuleType("cupy_backends.cuda")),
                             ("cupy_backends.cuda.libs", libs),
                             ("cupy_backends.cuda.libs.cublas", cublas)):
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.delitem(sys.modules, "pyckafast._gpu.engine", raising=False)
        return importlib.import_module("pyckafast._gpu.engine")

    yield load
    sys.modules.pop("pyckafast._gpu.engine", None)  # never leave the fake-backed module behind


# ---- toolkit probe -----------------------------------------------------------------------------
def test_probe_passes_with_a_working_toolkit():
    assert toolkit.missing_toolkit(_fake_cupy()) is None


@pytest.mark.parametrize("kw, words", [
    ({"nvrtc": OSError("libnvrtc.so.12: cannot open shared object file")}, ["NVRTC", "libnvrtc"]),
    ({"compile_error": RuntimeError("Failed to find CUDA headers; pip install cupy-cuda12x[ctk]")},
     ["headers"]),
    ({"compile_error": RuntimeError("nvrtc: error: invalid value for --gpu-architecture")},
     ["NVRTC cannot compile"]),
    ({"cublas_error": ImportError("libcublas.so.12: cannot open shared object file")},
     ["cuBLAS", "libcublas"]),
])
def test_probe_names_what_is_missing(kw, words):
    reason = toolkit.missing_toolkit(_fake_cupy(**kw))
    for word in [*words, "cupy-cuda12x[ctk]", "cupy-cuda13x[ctk]"]:
        assert word in reason, reason


def test_probe_runs_once(monkeypatch):
    monkeypatch.setattr(toolkit, "_CACHE", {})
    probes = []
    monkeypatch.setattr(toolkit, "missing_toolkit", lambda cupy: probes.append(cupy) or "why")
    assert toolkit.cached_missing_toolkit("c") == toolkit.cached_missing_toolkit("c") == "why"
    assert len(probes) == 1


def test_extras_use_cupy_toolkit_wheels():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]
    assert any(d.startswith("cupy-cuda12x[ctk]>=14") for d in extras["cuda12"])
    assert any(d.startswith("cupy-cuda13x[ctk]>=14") for d in extras["cuda13"])


# ---- allocation failures -----------------------------------------------------------------------
@pytest.mark.parametrize("exc, oom_", [
    (CUBLASError(3), True), (CUBLASError(13), False),  # ALLOC_FAILED vs EXECUTION_FAILED
    (CUDARuntimeError(2), True), (CUDARuntimeError(700), False),  # cudaErrorIllegalAddress
    (type("CUBLASError", (Exception,), {})("CUBLAS_STATUS_ALLOC_FAILED"), True),
    (ValueError("ALLOC_FAILED"), False),
])
def test_allocation_failures_are_recognised(exc, oom_):
    assert oom.is_allocation_failure(exc) is oom_
    with pytest.raises(oom.DeviceOutOfMemory if oom_ else type(exc)):
        with oom.translated():
            raise exc


def test_engine_translates_cublas_and_pinned_failures(fake_engine):
    engine_mod = fake_engine(pinned_error=CUDARuntimeError(2), syrk_error=CUBLASError(3))
    engine = engine_mod.CudaEngine()
    assert oom.DeviceOutOfMemory in engine.oom_errors
    with pytest.raises(oom.DeviceOutOfMemory) as info:
        engine.pinned((4, 4), np.float32)
    assert isinstance(info.value.__cause__, CUDARuntimeError)
    with pytest.raises(oom.DeviceOutOfMemory):
        engine.gram(np.ones((5, 3), np.float32), np.zeros((3, 3), np.float32))


def test_retry_halves_on_cublas_allocation_failure():
    """The linear driver on an engine whose cuBLAS fails to allocate above 40 rows per chunk:
    the pass reruns with halved chunks and gives the exact terms."""
    pytest.importorskip("pyckafast._ext")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from gpu_emulation import EmulatedEngine

    from pyckafast._core.inputs import Samples
    from pyckafast._gpu import linear

    class Engine(EmulatedEngine):
        oom_errors = (*EmulatedEngine.oom_errors, oom.DeviceOutOfMemory)

        def gram(self, b, out):
            with oom.translated():
                if b.shape[0] > 40:
                    raise CUBLASError(3)
            return super().gram(b, out)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    engine = Engine()
    with pytest.warns(RuntimeWarning, match="retrying with 32 rows"):
        t = linear.linear_terms(engine, Samples(x, np.dtype(float), False),
                                Samples(y, np.dtype(float), False), 50, debiased=False,
                                chunk_size=64)
    np.testing.assert_allclose(t.xy, (x - t.shift_x).T @ (y - t.shift_y), rtol=1e-12)
    assert engine.released == 1  # one halving: 64 -> 32 rows


# ---- explicit TF32 GEMM -------------------------------------------------------------------------
@pytest.mark.parametrize("k, p, q", [(7, 3, 5), (64, 16, 16), (1, 1, 4)])
def test_tf32_gemm_arguments_compute_a_transpose_b(k, p, q):
    rng = np.random.default_rng(k)
    a, b = _dev(rng.normal(size=(k, p)).astype(np.float32)), _dev(rng.normal(size=(k, q)).astype(np.float32))
    out = _dev(np.full((p, q), np.nan, np.float32))
    calls.clear()
    blas.gemm_at_b(numpy_gemm_ex, 0, a, b, out, lambda arr: arr.data.ptr)
    np.testing.assert_allclose(out, np.asarray(a).T @ np.asarray(b), rtol=1e-5, atol=1e-5)
    assert calls == [blas.CUBLAS_COMPUTE_32F_FAST_TF32]


def test_tf32_gemm_refuses_what_cublas_cannot_read():
    a = _dev(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="float32"):
        blas.gemm_at_b(numpy_gemm_ex, 0, a, _dev(np.ones((4, 2))), _dev(np.ones((3, 2), np.float32)),
                       lambda arr: arr.data.ptr)
    with pytest.raises(ValueError, match="shape"):
        blas.gemm_at_b(numpy_gemm_ex, 0, a, a, _dev(np.ones((3, 2), np.float32)),
                       lambda arr: arr.data.ptr)


def test_engine_asks_for_tf32_inside_precision_tf32(fake_engine):
    """CudaEngine.cross/gram: float32 GEMMs under precision("tf32") go through cublasGemmEx with
    CUBLAS_COMPUTE_32F_FAST_TF32 (and SYRK is not used then); outside, through matmul."""
    engine = fake_engine().CudaEngine()
    rng = np.random.default_rng(1)
    a, b = _dev(rng.normal(size=(9, 4)).astype(np.float32)), _dev(rng.normal(size=(9, 3)).astype(np.float32))
    out, g = _dev(np.zeros((4, 3), np.float32)), _dev(np.zeros((4, 4), np.float32))
    calls.clear()
    with engine.precision("tf32"):
        engine.cross(a, b, out)
        assert engine.gram(a, g) is False  # the full GEMM path
    assert calls == [blas.CUBLAS_COMPUTE_32F_FAST_TF32] * 2
    np.testing.assert_allclose(out, np.asarray(a).T @ np.asarray(b), rtol=1e-5)
    np.testing.assert_allclose(g, np.asarray(a).T @ np.asarray(a), rtol=1e-5)
    engine.cross(a, b, out)
    assert engine.gram(a, g) is True  # SYRK again
    assert len(calls) == 2


# ---- kernel argument marshalling -----------------------------------------------------------------
def _kernel_params(source: str, kernel: str) -> list[str]:
    """The C parameter types of ``kernel`` in csrc/cuda/``source``."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "csrc" / "cuda" / source).read_text()
    body = re.search(rf"{kernel}\((.*?)\)\s*{{", text, re.S).group(1)
    return [" ".join(w for w in p.split()[:-1] if w not in ("const", "__restrict__"))
            for p in body.split(",")]


_C_TYPES = {"long long": np.int64, "int": np.int32, "double": np.float64}


@pytest.mark.parametrize("dtype, ctype", [(np.float32, "float"), (np.float64, "double")])
@pytest.mark.parametrize("nsides", [1, 2])
def test_d2_hist_launch_matches_the_kernel_signature(fake_engine, monkeypatch, dtype, ctype, nsides):
    engine_mod = fake_engine()
    launched = []
    monkeypatch.setattr(engine_mod, "launch", lambda *a: launched.append(a))
    engine = engine_mod.CudaEngine()
    rows = [np.zeros((300, 5), dtype), np.zeros(300, dtype)]
    side = {"a": rows, "b": rows, "lo": 0.0, "hi": 1.0, "bins": 4, "below": np.zeros(1, np.uint64),
            "counts": np.zeros(4, np.uint64), "values": np.zeros(1), "capacity": 0,
            "nvalues": np.zeros(1, np.uint64)}
    engine.d2_hist([side] * nsides, same_block=True)
    (source, name, grid, block, args), = launched
    assert (source, block) == ("d2_hist_cuda.cu", (256,))
    tm = 8 if dtype == np.float32 else 4
    assert name == f"pcf_d2_hist<{ctype}, {tm}>" and grid == (-(-300 // (16 * tm)),) * 2 + (nsides,)
    params = _kernel_params("d2_hist_cuda.cu", "pcf_d2_hist")
    assert len(args) == len(params)
    for value, param in zip(args, params):
        if param.endswith("*"):
            want = {"T*": dtype, "unsigned long long*": np.uint64, "double*": np.float64}[param]
            assert isinstance(value, np.ndarray) and value.dtype == want, (param, value)
        else:
            assert type(value) is _C_TYPES[param], (param, value)


@pytest.mark.parametrize("dtype, ctype", [(np.float32, "float"), (np.float64, "double")])
def test_rbf_launch_matches_the_kernel_signature(fake_engine, monkeypatch, dtype, ctype):
    engine_mod = fake_engine()
    launched = []
    monkeypatch.setattr(engine_mod, "launch", lambda *a: launched.append(a))
    block = types.SimpleNamespace(x=np.zeros((70, 5), dtype), y=np.zeros((70, 3), dtype),
                                  nx=np.zeros(70, dtype), ny=np.zeros(70, dtype))
    row = np.zeros(70)
    # each kernel as (gamma, c, m): the entries 2^m exp(-gamma d2) - c of csrc/common/rbf_pair.h
    engine_mod.CudaEngine().rbf_pair(block, block, (0.5, 1.0, 0), (0.25, 0.5, 3), True, row, row,
                                     row, row, np.zeros((64, 3)))
    (source, name, grid, block_dim, args), = launched
    params = _kernel_params("rbf_pairs_cuda.cu", "pcf_rbf_tiles")
    assert source == "rbf_pairs_cuda.cu" and name.startswith(f"pcf_rbf_tiles<{ctype},")
    assert len(args) == len(params)
    for value, param in zip(args, params):
        if param.endswith("*"):
            want = {"T*": dtype, "double*": np.float64}[param]
            assert isinstance(value, np.ndarray) and value.dtype == want, (param, value)
        elif param == "T":
            assert type(value) is np.dtype(dtype).type
        else:
            assert type(value) is _C_TYPES[param], (param, value)
