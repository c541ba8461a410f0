"""Linear CKA at large p: the tiled sample-space pass against the bare BLAS of its Gram tiles.

The floor is the products the pass cannot avoid: for every block pair a <= b of the upper
triangle, X_a X_b' and Y_a Y_b' (SYRK on the diagonal), BLAS in float32, with the same tiles,
on data centred beforehand (the floor neither centres nor sums). The feature form (p x p
moments) is measured beside it on the same data::

    pytest bench/test_bench_tiles.py --benchmark-only --benchmark-json=tiles.json
"""

import numpy as np
import pytest
import tracemalloc

import pyckafast
from pyckafast._core.dispatch import tile_rows

N, P = 20_000, 16_384


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = np.empty((N, P), np.float32)
    y = np.empty((N, P), np.float32)
    for lo in range(0, N, 2000):  # no float64 temporary of the whole array
        x[lo:lo + 2000] = rng.standard_normal((2000, P), dtype=np.float32) + 10.0
        y[lo:lo + 2000] = 0.5 * x[lo:lo + 2000] + rng.standard_normal((2000, P), dtype=np.float32)
    return x, y


def tile_floor(x, y, tile, n=N):
    for lo in range(0, n, tile):
        a_x, a_y = x[lo:lo + tile], y[lo:lo + tile]
        for lo_b in range(lo, n, tile):
            if lo_b == lo:
                a_x @ a_x.T, a_y @ a_y.T
            else:
                a_x @ x[lo_b:lo_b + tile].T, a_y @ y[lo_b:lo_b + tile].T


@pytest.mark.parametrize("method", ["tile_floor", "tiles", "features"])
def test_large_p(benchmark, data, method):
    x, y = data
    tile = tile_rows(P, P, 4)
    benchmark.group = f"linear n={N} p={P}+{P} float32"
    benchmark.extra_info.update(method=method, n=N, p=P, dtype="float32", tile=tile)
    if method == "tile_floor":
        xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)  # outside the timing
        _once(benchmark, tile_floor, xc, yc, tile)
    else:
        _once(benchmark, pyckafast.linear_cka, x, y, form=method)


def _once(benchmark, fn, *args, **kwargs):
    """One timed call (minutes each at this size), its peak traced allocation in the same call:
    tracemalloc costs nothing measurable beside GEMMs of this size."""
    tracemalloc.start()
    try:
        benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=1, iterations=1, warmup_rounds=0)
        benchmark.extra_info["peak_extra_MB"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    finally:
        tracemalloc.stop()
