"""RBF CKA at scale: the fused tiled pass (per backend) against its floor and a naive n x n.

Run: ``pytest bench/test_bench_rbf.py --benchmark-only`` (the lead runs the big cases on a quiet
machine; ``-k 10000`` for a quick check). Each case records in ``extra_info`` the peak memory
its call allocated (tracemalloc: NumPy buffers are traced) and the process peak RSS.

* ``rbf_pass``: ``rbf_cka`` with explicit sigma (one tiled pass, both estimators).
* ``gemm_floor``: the same tile GEMMs (x and y dot-product tiles, upper triangle) without exp.
* ``median``: the exact "kornblith" bandwidth of one side (histogram selection passes).
* ``rbf_depth``: the fused pass against BLAS tiles for wide rows (the ``FUSED_MAX_DEPTH`` choice).
* ``naive``: the n x n float64 implementation (Gram matrices); at n = 30000 its ~4 live n x n
  float64 arrays (27 GiB) exceed this machine's 24 GiB, so the case records "out of memory".
"""

from __future__ import annotations

import resource
import tracemalloc

import numpy as np
import pytest

import pyckafast
from pyckafast._core import bandwidth as _bandwidth
from pyckafast._core import pairs as _pairs
from pyckafast._cpu.producers import rbf_producer

SIZES = [10_000, 30_000, 100_000]
D = 64
NAIVE_MAX_N = 20_000


def _data(n: int, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, D)).astype(dtype) + 5
    y = (np.tanh(x @ rng.normal(size=(D, D)).astype(dtype) / 8) + 0.1 * rng.normal(size=(n, D))
         ).astype(dtype)
    return x, y


def _run(benchmark, fn, n):
    tracemalloc.start()
    result = benchmark.pedantic(fn, rounds=1 if n > 10_000 else 3, warmup_rounds=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    benchmark.extra_info.update(
        n=n, d=D, traced_peak_mb=round(peak / 2**20, 1),
        process_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    return result


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Compile the Numba kernels and load the extension outside the timed calls."""
    x, y = _data(300)
    for backend in ("numba", "cpp"):
        pyckafast.rbf_cka(x, y, sigma=4.0, backend=backend)
    _bandwidth.median_sq_distance(x, "kornblith")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_rbf_pass(benchmark, backend, n):
    x, y = _data(n)
    value = _run(benchmark, lambda: pyckafast.rbf_cka(x, y, sigma=(11.3, 1.4), backend=backend), n)
    benchmark.extra_info["backend"] = backend
    assert 0.0 < value < 1.0


@pytest.mark.parametrize("n", SIZES)
def test_gemm_floor(benchmark, n):
    """The distance GEMMs of the tiled pass alone: the floor the fused pass is measured against."""
    x, y = _data(n)
    tile = _pairs.default_tile(x.itemsize)
    bounds = _pairs.block_bounds(n, tile)

    def gemms():
        total = 0.0
        for ia, (alo, ahi) in enumerate(bounds):
            xa, ya = x[alo:ahi], y[alo:ahi]
            for blo, bhi in bounds[ia:]:
                gx = xa @ xa.T if blo == alo else xa @ x[blo:bhi].T
                gy = ya @ ya.T if blo == alo else ya @ y[blo:bhi].T
                total += float(gx[0, 0]) + float(gy[0, 0])
        return total

    _run(benchmark, gemms, n)


@pytest.mark.parametrize("n", SIZES)
def test_median(benchmark, n):
    x, _ = _data(n)
    value = _run(benchmark, lambda: _bandwidth.median_sq_distance(x, "kornblith"), n)
    assert value > 0


@pytest.mark.parametrize("n", [10_000, 20_000, 30_000])
def test_naive(benchmark, n):
    if n > NAIVE_MAX_N:  # it needs ~4 n x n float64 arrays at once (Grams, distances, exp temps)
        pytest.skip(f"naive n x n at n={n}: out of memory (~{4 * 8 * n * n / 2**30:.0f} GiB of "
                    "n x n float64 arrays on a 24 GiB machine)")
    x, y = _data(n)

    def naive():
        def centred_gram(a, sigma):
            a = a.astype(np.float64)
            sq = np.einsum("ij,ij->i", a, a)
            k = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0) / (2 * sigma**2))
            k -= k.mean(0)
            k -= k.mean(1)[:, None]
            return k

        k = centred_gram(x, 11.3)
        l = centred_gram(y, 1.4)
        return float(np.vdot(k, l) / np.sqrt(np.vdot(k, k) * np.vdot(l, l)))

    value = _run(benchmark, naive, n)
    assert 0.0 < value < 1.0


@pytest.mark.parametrize("d", [64, 256, 512, 640, 1024])
@pytest.mark.parametrize("path", ["fused", "blas_tiles"])
def test_rbf_depth(benchmark, monkeypatch, path, d):
    """Where the register-tiled pass stops paying: rows of depth d per side (total 2d), n = 1e4,
    against the BLAS dot-product tiles + the same epilogue (``_cpp.FUSED_MAX_DEPTH`` is the
    crossover)."""
    from pyckafast._cpu import ops_cpp as _cpp

    n = 10_000
    rng = np.random.default_rng(0)
    x, y = (rng.normal(size=(n, d)).astype(np.float32) for _ in range(2))
    monkeypatch.setattr(_cpp, "FUSED_MAX_DEPTH", 10**9 if path == "fused" else 0)
    produce = rbf_producer("cpp")
    _run(benchmark, lambda: produce(x, y, gamma_x=1 / (4 * d), gamma_y=1 / (2 * d)), n)
    benchmark.extra_info.update(d=d, path=path)
