"""Linear CKA: every CPU backend against the GEMM floor and a naive n x n implementation.

The GEMM floor is the bare NumPy ``x.T @ x; y.T @ y; x.T @ y`` on the same data in the same run:
no exact linear CKA can be faster than the products it needs.
"""

import numpy as np
import pytest
from conftest import correlated_data, run

import pyckafast
from pyckafast._core import dispatch as _backends

NS = [10_000, 100_000, 1_000_000]
PS = [64, 256, 512]
DTYPES = ["float32", "float64"]
NAIVE_MAX_BYTES = 6 * 2**30  # two n x n float64 Grams and their product must fit in RAM


def gemm_floor(x, y):
    return x.T @ x, y.T @ y, x.T @ y


def naive_gram_cka(x, y):
    """Kornblith et al.'s reference recipe: n x n Grams, centred by their row/column means."""
    def centred(gram):
        means = gram.mean(axis=0)
        return gram - means[:, None] - means[None, :] + means.mean()

    k, l = centred(x @ x.T), centred(y @ y.T)
    return float(np.vdot(k, l) / np.sqrt(np.vdot(k, k) * np.vdot(l, l)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("method", ["gemm_floor", "numpy", "numba", "cpp", "naive_nxn"])
def test_linear(benchmark, method, n, p, dtype):
    benchmark.group = f"linear n={n} p={p} {dtype}"
    benchmark.extra_info.update(method=method, n=n, p=p, dtype=dtype)
    if method == "naive_nxn":
        need = 4 * n * n * 8
        if need > NAIVE_MAX_BYTES or n > 10_000:
            pytest.skip(f"naive n x n needs ~{need / 2**30:.0f} GiB: out of memory on this machine")
    if method in ("numpy", "numba", "cpp") and _backends.probe(method):
        pytest.skip(f"backend {method} unavailable: {_backends.probe(method)}")
    x, y = correlated_data(n, p, dtype, mean=10.0)
    rounds = 3 if n * p <= 100_000 * 256 else 1
    if method == "gemm_floor":
        run(benchmark, gemm_floor, x, y, rounds=rounds)
    elif method == "naive_nxn":
        run(benchmark, naive_gram_cka, x, y, rounds=1)
    else:
        run(benchmark, pyckafast.linear_cka, x, y, backend=method, form="features", rounds=rounds)


@pytest.mark.parametrize("method", ["gemm_floor", "cpp", "numba"])
def test_linear_target_case(benchmark, method):
    """The target: n = 2e5, p = 256, float32: pyckafast / GEMM floor <= 1.15."""
    benchmark.group = "target n=200000 p=256 float32"
    x, y = correlated_data(200_000, 256, "float32", mean=10.0)
    benchmark.extra_info.update(method=method, n=200_000, p=256, dtype="float32")
    if method == "gemm_floor":
        run(benchmark, gemm_floor, x, y, rounds=7)
    else:
        run(benchmark, pyckafast.linear_cka, x, y, backend=method, rounds=7)
