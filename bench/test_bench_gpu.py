"""GPU benchmarks (skipped without CuPy and a GPU); run them with scripts/gpu_check.sh.

* Linear CKA, n = 1e7, p = 1024, float32 on the device, against a bare CuPy ``x.T @ x`` of the
  same x in the same run. y is ``x[::-1]`` (a reversed view: the full work of a second
  representation without a second 40 GB array). CKA does three p x p products (x'x, y'y by
  SYRK, x'y by GEMM); ``extra_info["rate_vs_gemm"] = 3 * t(x.T @ x) / t(CKA)``.
* RBF CKA terms, n = 1e6, d = 512 (x and y), float32, fused tile kernel, against a
  straightforward CuPy implementation (row block x all rows: matmul, distances, exp, sums).

Sizes can be reduced with PYCKAFAST_BENCH_LINEAR_N and PYCKAFAST_BENCH_RBF_N. Every timed
function synchronises the device before it returns.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pyckafast._core import dispatch as _backends

cupy = pytest.importorskip("cupy", reason="GPU benchmarks need CuPy")
if _backends.probe("cuda") is not None:
    pytest.skip(f"no usable GPU: {_backends.probe('cuda')}", allow_module_level=True)

import pyckafast  # noqa: E402
from pyckafast._gpu import ops_cuda as _cuda  # noqa: E402

pytestmark = pytest.mark.gpu

LINEAR_N = int(float(os.environ.get("PYCKAFAST_BENCH_LINEAR_N", "1e7")))
LINEAR_P = 1024
RBF_N = int(float(os.environ.get("PYCKAFAST_BENCH_RBF_N", "1e6")))
RBF_D = 512
RBF_GAMMA = 1.0 / (2 * RBF_D)  # sigma^2 = d: E[|x_i - x_j|^2] = 2d for standard normal rows


def _synced(fn):
    def run():
        out = fn()
        cupy.cuda.get_current_stream().synchronize()
        return out
    return run


def _device_info(benchmark, **sizes):
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    benchmark.extra_info.update(device=props["name"].decode() if isinstance(props["name"], bytes)
                                else str(props["name"]), cupy=cupy.__version__, **sizes)


@pytest.fixture(scope="module")
def linear_x():
    need = LINEAR_N * LINEAR_P * 4
    if cupy.cuda.Device().mem_info[0] < need * 1.15:
        pytest.skip(f"x needs {need / 2**30:.1f} GiB of free GPU memory")
    x = cupy.random.default_rng(0).standard_normal((LINEAR_N, LINEAR_P), dtype=np.float32)
    x += 3.0  # a mean, as activations have
    yield x
    del x
    cupy.get_default_memory_pool().free_all_blocks()


_times: dict[str, float] = {}


def test_bare_cupy_gram(benchmark, linear_x):
    _device_info(benchmark, n=LINEAR_N, p=LINEAR_P, dtype="float32")
    gram = _synced(lambda: linear_x.T @ linear_x)
    gram()  # cuBLAS warm-up
    benchmark.pedantic(gram, rounds=3, iterations=1)
    _times["bare"] = benchmark.stats.stats.min


@pytest.mark.parametrize("precision", ["highest", "tf32"])
def test_linear_cka(benchmark, linear_x, precision):
    _device_info(benchmark, n=LINEAR_N, p=LINEAR_P, dtype="float32", precision=precision)
    y = linear_x[::-1]
    run = _synced(lambda: pyckafast.linear_cka(linear_x, y, precision=precision))
    pyckafast.linear_cka(linear_x[:4096], y[:4096], precision=precision)  # NVRTC compile, warm-up
    benchmark.pedantic(run, rounds=3, iterations=1)
    if "bare" in _times:
        benchmark.extra_info["rate_vs_gemm"] = 3 * _times["bare"] / benchmark.stats.stats.min


@pytest.fixture(scope="module")
def rbf_xy():
    rng = cupy.random.default_rng(1)
    x = rng.standard_normal((RBF_N, RBF_D), dtype=np.float32)
    y = cupy.tanh(x) + 0.5 * rng.standard_normal((RBF_N, RBF_D), dtype=np.float32)
    yield x, y
    del x, y
    cupy.get_default_memory_pool().free_all_blocks()


def _straightforward_rbf(x, y, gamma, block=1024):
    """Kernel terms the plain CuPy way: row block x all rows, full (not symmetric) tiles."""
    n = x.shape[0]
    nx, ny = (x * x).sum(1), (y * y).sum(1)
    sums = cupy.zeros(3)
    row_k, row_l = cupy.zeros(n), cupy.zeros(n)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        k = cupy.exp(-gamma * cupy.maximum(nx[lo:hi, None] + nx[None, :] - 2 * (x[lo:hi] @ x.T), 0))
        l = cupy.exp(-gamma * cupy.maximum(ny[lo:hi, None] + ny[None, :] - 2 * (y[lo:hi] @ y.T), 0))
        sums += cupy.stack([(k * l).sum(dtype=np.float64), (k * k).sum(dtype=np.float64),
                            (l * l).sum(dtype=np.float64)])
        row_k[lo:hi] = k.sum(1, dtype=np.float64)
        row_l[lo:hi] = l.sum(1, dtype=np.float64)
    return sums, row_k, row_l


def test_rbf_fused(benchmark, rbf_xy):
    x, y = rbf_xy
    _device_info(benchmark, n=RBF_N, d=RBF_D, dtype="float32")
    _cuda.rbf_terms(x[:2048], y[:2048], gamma_x=RBF_GAMMA, gamma_y=RBF_GAMMA)  # compile, warm-up
    run = _synced(lambda: _cuda.rbf_terms(x, y, gamma_x=RBF_GAMMA, gamma_y=RBF_GAMMA))
    benchmark.pedantic(run, rounds=1, iterations=1)
    _times["rbf_fused"] = benchmark.stats.stats.min


def test_rbf_straightforward_cupy(benchmark, rbf_xy):
    x, y = rbf_xy
    _device_info(benchmark, n=RBF_N, d=RBF_D, dtype="float32")
    _straightforward_rbf(x[:2048], y[:2048], RBF_GAMMA)
    run = _synced(lambda: _straightforward_rbf(x, y, RBF_GAMMA))
    benchmark.pedantic(run, rounds=1, iterations=1)
    if "rbf_fused" in _times:
        benchmark.extra_info["fused_speedup"] = benchmark.stats.stats.min / _times["rbf_fused"]
