"""Shared benchmark helpers: data cache, peak-memory measurement, environment record.

Run: ``pytest bench --benchmark-only`` (see bench/README.md for the recorded tables).
"""

import functools
import platform
import tracemalloc

import numpy as np


@functools.lru_cache(maxsize=1)  # one data set at a time: the largest are GBs
def correlated_data(n: int, p: int, dtype: str, mean: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.empty((n, p), dtype)
    y = np.empty((n, p), dtype)
    w = rng.normal(size=(p, p)).astype(dtype) / np.sqrt(p)
    for lo in range(0, n, 65536):  # generate in blocks: no float64 temporary of the whole array
        hi = min(n, lo + 65536)
        x[lo:hi] = rng.normal(size=(hi - lo, p)) + mean
        y[lo:hi] = (x[lo:hi] - mean) @ w + rng.normal(size=(hi - lo, p)) + mean
    return x, y


def peak_extra_bytes(fn, *args, **kwargs):
    """Peak bytes allocated through Python/NumPy while fn runs (memory beyond its inputs)."""
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(benchmark, fn, *args, rounds=3, **kwargs):
    """Time fn with pytest-benchmark, then record its peak extra memory (untimed run)."""
    result = benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=rounds, iterations=1,
                                warmup_rounds=1)
    benchmark.extra_info["peak_extra_MB"] = round(peak_extra_bytes(fn, *args, **kwargs) / 2**20, 1)
    return result


def pytest_benchmark_update_machine_info(config, machine_info):
    import numba

    machine_info["numpy"] = np.__version__
    machine_info["numba"] = numba.__version__
    machine_info["processor"] = platform.processor() or platform.machine()

