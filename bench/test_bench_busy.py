"""Linear CKA on a quiet and on a busy machine, beside the bare BLAS floor and the torch formula.

"busy": two competing processes (bench/load.py) each keep one core busy for the whole case, as
other jobs on a shared workstation, a cluster node or other Dask workers do. Every method runs
on the same data in the same state, so the ratios are measured, not assumed::

    pytest bench/test_bench_busy.py --benchmark-only --benchmark-json=busy.json
"""

import numpy as np
import pytest
from conftest import correlated_data, run
from load import busy

import pyckafast

CASES = [(200_000, 256), (1_000_000, 256)]


def gemm_floor(x, y):
    """The three products any exact linear CKA needs, through NumPy's (multithreaded) BLAS."""
    return x.T @ x, y.T @ y, x.T @ y


def torch_formula(x, y):
    """What a torch user writes: centre, three GEMMs, Frobenius norms (float32, as given)."""
    import torch

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    tx, ty = tx - tx.mean(0), ty - ty.mean(0)
    return float((tx.T @ ty).square().sum() / ((tx.T @ tx).norm() * (ty.T @ ty).norm()))


METHODS = {"gemm_floor": gemm_floor, "torch_formula": torch_formula,
           "pyckafast": pyckafast.linear_cka}


@pytest.mark.parametrize("state", ["quiet", "busy"])
@pytest.mark.parametrize("n, p", CASES, ids=[f"n={n}-p={p}" for n, p in CASES])
@pytest.mark.parametrize("method", list(METHODS))
def test_linear_under_load(benchmark, method, n, p, state):
    if method == "torch_formula":
        pytest.importorskip("torch")
    benchmark.group = f"linear n={n} p={p} float32 {state}"
    benchmark.extra_info.update(method=method, n=n, p=p, dtype="float32", state=state)
    x, y = correlated_data(n, p, "float32", mean=10.0)
    if state == "quiet":
        run(benchmark, METHODS[method], x, y, rounds=5)
        return
    with busy(2):
        run(benchmark, METHODS[method], x, y, rounds=5)
