"""The engine test matrix: input kind x backend (x device) x dtype, in one place.

A *route* is one input kind (how the caller holds the data) and one backend (who computes):

* kinds: ``numpy``, ``memmap`` (an ``np.load(mmap_mode="r")`` of a saved .npy), ``torch`` (a CPU
  tensor, viewed through DLPack), ``dask`` (row-chunked, chunks not dividing n) and, on a machine
  with a usable CUDA backend, ``cupy``;
* backends: the CPU backends ``numpy``, ``numba``, ``cpp`` and ``cuda``. Without a GPU the cuda
  column runs the real GPU drivers on the emulated engine (tests/gpu_emulation.py: the C++ host
  twins of the CUDA kernels); with one, on the GPU (marked ``gpu``).

Every kind x backend pair is a route; the pairs that cannot work (Dask on the GPU backend, GPU
data with a CPU backend) are routes too, whose cells must raise the error ``route_error`` names.
Nothing is skipped: a missing compiled backend fails unless PYCKAFAST_ALLOW_NO_EXT=1.

Dtypes: float64, float32 (data of mean 1e4 and std 1: the hard case, against float64), and the
half types each kind can hold (float16 in NumPy, memmaps and Dask; float16 and bfloat16 in
torch), which the entry points compute in float32. A cell's reference is the float64 reference
of exactly the values the cell's input holds (the data rounded to its dtype).

``cells(ops)`` gives the pytest params of every (operation, route, dtype); an operation is a
name the engine suite (tests/test_matrix.py) knows how to run and to check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

from pyckafast._core import dispatch

CPU_BACKENDS = ["numpy", "numba", "cpp"]
BACKENDS = [*CPU_BACKENDS, "cuda"]
REAL_CUDA = dispatch.probe("cuda") is None
HOST_KINDS = ["numpy", "memmap", "torch"]
KINDS = [*HOST_KINDS, "dask"] + (["cupy"] if REAL_CUDA else [])
DTYPES = [np.float64, np.float32]  # the two compute dtypes (tests/conftest.py's ``dtype``)

# What each kind can hold; the half types are computed in float32.
KIND_DTYPES = {
    "numpy": ["float64", "float32", "float16"],
    "memmap": ["float64", "float32", "float16"],
    "dask": ["float64", "float32", "float16"],
    "torch": ["float64", "float32", "float16", "bfloat16"],
    "cupy": ["float64", "float32", "float16"],
}
COMPUTE = {"float64": "float64", "float32": "float32", "float16": "float32",
           "bfloat16": "float32"}
# The data of every cell: standard normal features plus this mean (float32: the hard case,
# a spread of 1 beside a mean of 1e4; float16 and bfloat16 cannot hold that spread there).
MEAN = {"float64": 3.0, "float32": 1e4, "float16": 2.0, "bfloat16": 2.0}


def route_error(kind: str, backend: str) -> tuple[type[Exception], str] | None:
    """The error a route that cannot work must raise (None: the route works)."""
    if kind == "dask" and backend == "cuda":
        return ValueError, r"backend='cuda' takes arrays on cuda, but the inputs live on cpu"
    if kind == "cupy" and backend != "cuda":
        return ValueError, rf"backend='{backend}' takes arrays on cpu, but the inputs live on cuda"
    return None


@dataclass(frozen=True)
class Cell:
    op: str
    kind: str
    backend: str
    dtype: str

    @property
    def error(self):
        return route_error(self.kind, self.backend)

    @property
    def compute(self) -> str:
        return COMPUTE[self.dtype]

    @property
    def device(self) -> str:
        if self.backend != "cuda":
            return "cpu"
        return "cuda" if REAL_CUDA else "cuda-emulated"

    def __str__(self) -> str:
        backend = "cuda-emulated" if self.device == "cuda-emulated" else self.backend
        return f"{self.op}-{self.kind}-{backend}-{self.dtype}"


def cells(ops) -> list:
    """pytest params of every cell of ``ops``: each kind x backend x dtype the kind holds (a
    route that cannot work: its float64 cell, which must raise)."""
    out = []
    for op in ops:
        for kind in KINDS:
            for backend in BACKENDS:
                dtypes = KIND_DTYPES[kind] if route_error(kind, backend) is None else ["float64"]
                for dtype in dtypes:
                    cell = Cell(op, kind, backend, dtype)
                    marks = [pytest.mark.gpu] if cell.device == "cuda" else []
                    out.append(pytest.param(cell, id=str(cell), marks=marks))
    return out


def require(backend: str) -> None:
    """A CPU backend that cannot run fails the cell (a missing build is a defect), unless
    PYCKAFAST_ALLOW_NO_EXT=1 says this environment has no compiler."""
    why = dispatch.probe(backend)
    if why is not None:
        if os.environ.get("PYCKAFAST_ALLOW_NO_EXT") == "1":
            pytest.skip(f"backend {backend} unavailable: {why}")
        pytest.fail(f"backend {backend} unavailable: {why}")


# The operations of the cuda backend module that the GPU producers call.
CUDA_OPS = ("linear_terms", "rbf_terms", "rbf_terms_under", "hsic_matrix", "device_array")


def prepare_backend(cell: Cell, monkeypatch) -> dict[str, int]:
    """Make the cell's backend runnable (the emulated GPU where there is no real one) and
    return the counts of calls into the cuda backend's operations, which a cuda cell that
    passes must have made (a route that quietly ran on the CPU would not)."""
    calls: dict[str, int] = {}
    if cell.backend != "cuda":
        require(cell.backend)
        return calls
    if cell.device == "cuda-emulated":
        pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ twins")
        from gpu_emulation import install_emulated_cuda

        module = install_emulated_cuda(monkeypatch)
    else:
        from pyckafast._gpu import ops_cuda as module

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return call

    for name in CUDA_OPS:
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    return calls


def rounded(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype``, held in the NumPy dtype the cell's input is made from
    (bfloat16: float32 holding bfloat16 values, made exact by torch's own rounding)."""
    if dtype == "bfloat16":
        import torch

        return torch.from_numpy(a.astype(np.float32)).bfloat16().float().numpy()
    return a.astype(dtype)


class Inputs:
    """Makes the cell's input kind from host arrays (already rounded to the cell's dtype)."""

    def __init__(self, cell: Cell, tmp_path):
        self.cell, self.tmp_path, self.made = cell, tmp_path, 0

    def __call__(self, a: np.ndarray, chunks: int = 50):
        kind, dtype = self.cell.kind, self.cell.dtype
        if kind == "numpy":
            return a
        if kind == "memmap":
            self.made += 1
            path = self.tmp_path / f"a{self.made}.npy"
            np.save(path, a)
            return np.load(path, mmap_mode="r")
        if kind == "torch":
            import torch

            t = torch.from_numpy(np.ascontiguousarray(a))
            return t.bfloat16() if dtype == "bfloat16" else t
        if kind == "dask":
            da = pytest.importorskip("dask.array")
            return da.from_array(a, chunks=(chunks, -1))
        if kind == "cupy":
            import cupy

            return cupy.asarray(a)
        raise AssertionError(kind)
