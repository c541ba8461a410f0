"""cka_influence against brute-force recomputation of CKA without each sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pyckafast
from pyckafast.rbf import RBFOptions


def data(n, seed=0, mean=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [3.0, 1.0, 0.5, 2.0] + mean
    y = np.column_stack([x[:, 0] - mean + rng.normal(size=n), rng.standard_exponential(n),
                         np.sin(x[:, 1])]) + mean
    y[3] += 8.0  # an outlier
    return x.astype(dtype), y.astype(dtype)


def brute(x, y, kernel, debiased):
    if kernel == "linear":
        def f(a, b):
            return pyckafast.linear_cka(a, b, debiased=debiased, backend="numpy")
    else:
        gx, gy = RBFOptions.of().gammas(x, y)
        sigma = (math.sqrt(0.5 / gx), math.sqrt(0.5 / gy))

        def f(a, b):
            return pyckafast.rbf_cka(a, b, sigma=sigma, debiased=debiased, backend="numpy")
    return np.array([f(np.delete(x, i, 0), np.delete(y, i, 0)) for i in range(len(x))])


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_leave_one_out_equals_brute_force(kernel, debiased, monkeypatch):
    x, y = data(37, seed=1)
    # Linear: chunks of 8 rows in both passes and blocks of 8 in the final algebra, so that
    # every boundary (and a last, short chunk) is crossed.
    monkeypatch.setattr("pyckafast._core.leave_one_out._BLOCK", 8)
    chunk = 8 if kernel == "linear" else None
    r = pyckafast.cka_influence(x, y, kernel=kernel, debiased=debiased, tile=8, chunk_size=chunk)
    ref = brute(x, y, kernel, debiased)
    np.testing.assert_allclose(r.loo, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.delta, ref - r.cka, rtol=1e-8, atol=1e-12)
    se = math.sqrt(36 / 37 * np.sum((ref - ref.mean()) ** 2))
    assert r.se == pytest.approx(se, rel=1e-9)
    assert r.top(1)[0][0] == 3  # the outlier moves CKA most


def test_linear_loo_of_float32_with_a_large_mean():
    x, y = data(3000, seed=2)
    ref = pyckafast.cka_influence(x, y, debiased=True)
    x32, y32 = (x + 100).astype(np.float32), (y + 100).astype(np.float32)
    r = pyckafast.cka_influence(x32, y32, debiased=True)
    # delta ~ 1/n: compare the changes, not only the values
    scale = np.max(np.abs(ref.delta))
    assert np.max(np.abs(r.delta - ref.delta)) < 1e-3 * scale
    assert r.se == pytest.approx(ref.se, rel=1e-3)


def test_linear_loo_chunks_and_threads_agree():
    x, y = data(70000, seed=3)
    r1 = pyckafast.cka_influence(x, y)
    with pyckafast.threads(1):
        r2 = pyckafast.cka_influence(x, y, chunk_size=999)
    np.testing.assert_allclose(r1.loo, r2.loo, rtol=1e-12)


def test_ci_and_top():
    x, y = data(60, seed=4)
    r = pyckafast.cka_influence(x, y)
    lo, hi = r.ci(0.95)
    assert lo == pytest.approx(r.cka - 1.959963984540054 * r.se, rel=1e-12)
    assert hi - lo > 0
    idx, d = r.top(5)
    assert list(np.abs(d)) == sorted(np.abs(d), reverse=True)
    assert np.all(np.abs(np.delete(r.delta, idx)) <= np.abs(d[-1]))
    assert r.top(10_000)[0].size == 60
    with pytest.raises(ValueError, match="level"):
        r.ci(1.5)
    with pytest.raises(ValueError, match="k must"):
        r.top(0)


def test_bad_inputs_name_the_argument():
    x, y = data(10)
    with pytest.raises(ValueError, match="n - 1"):
        pyckafast.cka_influence(x[:4], y[:4], debiased=True)
    with pytest.raises(ValueError, match="kernel"):
        pyckafast.cka_influence(x, y, kernel="poly")
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="NumPy arrays and memmaps"):
        pyckafast.cka_influence(da.from_array(x), da.from_array(y))


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("case", ["collinear", "p > n", "rank one", "tiny scales"])
def test_linear_loo_of_singular_and_ill_conditioned_moments(case, debiased):
    # The row forms go through the canonical bases of C_xx and C_yy (their ranges only): a
    # duplicated or constant column, p > n, a rank-one side and columns of very different
    # scales must still give the brute-force values.
    rng = np.random.default_rng(5)
    n = 41
    base = rng.normal(size=(n, 6)) * [5, 1, 0.1, 1e-3, 2, 1]
    x, y = {
        "collinear": (np.column_stack([base, base[:, 0], np.full(n, 3.0)]),
                      base[:, :3] ** 2 + rng.normal(size=(n, 3))),
        "p > n": (rng.normal(size=(n, 60)), rng.normal(size=(n, 5)) + 1e3),
        "rank one": (base, np.outer(base[:, 1], [1.0, 2.0, -1.0])),
        "tiny scales": (base, np.column_stack([base[:, 0] + 1e-6 * rng.normal(size=n),
                                               rng.normal(size=n)])),
    }[case]
    r = pyckafast.cka_influence(x, y, debiased=debiased)
    ref = brute(x, y, "linear", debiased)
    np.testing.assert_allclose(r.loo, ref, rtol=1e-10, atol=1e-12)
    d = ref - r.cka
    assert np.max(np.abs(r.delta - d)) < 1e-8 * np.max(np.abs(d))


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_non_finite_values_are_refused_naming_the_input(kernel):
    x, y = data(50)
    y[17, 1] = np.nan
    with pytest.raises(ValueError, match="y must contain only finite values"):
        pyckafast.cka_influence(x, y, kernel=kernel)
