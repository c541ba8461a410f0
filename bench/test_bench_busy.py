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


def rbf_gemm_floor(x, y, tile=2048):
    """The dot-product GEMMs of a tiled RBF pass alone (upper-triangle tiles, x and y)."""
    for lo in range(0, x.shape[0], tile):
        for lo_b in range(lo, x.shape[0], tile):
            x[lo:lo + tile] @ x[lo_b:lo_b + tile].T
            y[lo:lo + tile] @ y[lo_b:lo_b + tile].T


@pytest.mark.parametrize("state", ["quiet", "busy"])
@pytest.mark.parametrize("method", ["rbf_gemm_floor", "pyckafast_rbf"])
def test_rbf_under_load(benchmark, method, state):
    """RBF n = 1e5, d = 64 float32 (explicit sigma: one pass), against its GEMMs alone."""
    benchmark.group = f"rbf n=100000 d=64 float32 {state}"
    benchmark.extra_info.update(method=method, n=100_000, p=64, dtype="float32", state=state)
    x, y = correlated_data(100_000, 64, "float32")
    fn = rbf_gemm_floor if method == "rbf_gemm_floor" else (
        lambda a, b: pyckafast.rbf_cka(a, b, sigma=8.0))
    with busy(2 if state == "busy" else 0):
        benchmark.pedantic(fn, args=(x, y), rounds=1, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("state", ["quiet", "busy"])
@pytest.mark.parametrize("method", ["tile_floor", "tiles"])
def test_tiles_under_load(benchmark, method, state):
    """The tiled large-p pass (n = 5,000, p = 8,192 per side), against its Gram tiles alone."""
    from test_bench_tiles import tile_floor

    from pyckafast._core.dispatch import tile_rows

    n, p = 5_000, 8_192
    benchmark.group = f"tiles n={n} p={p}+{p} float32 {state}"
    benchmark.extra_info.update(method=method, n=n, p=p, dtype="float32", state=state)
    x, y = correlated_data(n, p, "float32", mean=10.0)
    tile = tile_rows(p, p, 4)
    if method == "tile_floor":
        x, y = x - x.mean(axis=0), y - y.mean(axis=0)
        fn, args = (lambda a, b: tile_floor(a, b, tile, n)), (x, y)
    else:
        fn, args = (lambda a, b: pyckafast.linear_cka(a, b, form="tiles")), (x, y)
    with busy(2 if state == "busy" else 0):
        benchmark.pedantic(fn, args=args, rounds=1, iterations=1, warmup_rounds=0)
