"""Fixtures over the axes of the test matrix (tests/matrix.py): device x backend x dtype.

The engine entry points run over the whole matrix (input kind x backend x dtype) in
tests/test_matrix.py; the suites here take one (device, backend) ``target`` and a ``dtype``.

The core public-behaviour suites take the ``target`` fixture (one (device, backend) pair) and
the ``dtype`` fixture, so every case runs on every CPU backend and, on a machine with a usable
CUDA backend, on the GPU too (pytorch_scatter's ``product(tests, reductions, dtypes,
devices)``). Build inputs on the case's device with ``target.on(a)`` (``array_on``). A cuda case
is marked ``gpu`` (so scripts/gpu_check.sh's ``-m gpu`` runs it) and, when it passes, must have
launched CUDA kernels (checked after the test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from matrix import CPU_BACKENDS, DTYPES, REAL_CUDA, require as _require

BACKENDS = {"cpu": CPU_BACKENDS, "cuda": ["cuda"]}
DEVICES = ["cpu"] + (["cuda"] if REAL_CUDA else [])
TARGETS = [(device, backend) for device in DEVICES for backend in BACKENDS[device]]


def array_on(device: str, a):
    """``a`` on ``device``: a CuPy array on "cuda", the NumPy array itself otherwise."""
    if device == "cuda":
        import cupy

        return cupy.asarray(a)
    return a


def _cuda_launches() -> int:
    from pyckafast._gpu import ops_cuda

    return sum(ops_cuda.launches().values())


@dataclass(frozen=True)
class Target:
    """One column of the matrix: where the data live and which backend computes."""

    device: str
    backend: str

    def on(self, a):
        return array_on(self.device, a)

    @property
    def xp(self):
        if self.device == "cuda":
            import cupy

            return cupy
        return np


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Every CPU backend (for CPU-only internals)."""
    _require(request.param)
    return request.param


@pytest.fixture(params=[
    pytest.param((d, b), id=b, marks=[pytest.mark.gpu] if d == "cuda" else [])
    for d, b in TARGETS
])
def target(request):
    """Every (device, backend) pair; on cuda, a passing case must have run CUDA kernels."""
    device, backend = request.param
    if device == "cpu":
        _require(backend)
        yield Target(device, backend)
        return
    before = _cuda_launches()
    yield Target(device, backend)
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed:
        assert _cuda_launches() > before, "a cuda case ran no CUDA kernel"


@pytest.fixture(params=DTYPES, ids=["float64", "float32"])
def dtype(request):
    return request.param


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (the cuda launch check reads the call's)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
