"""Linear CKA is scale invariant: every finite input within its dtype's range gives the right value.

Data of extreme magnitude are multiplied by a power of two before the GEMMs (exact). Before,
float32 data at 1e19 gave nan (squares overflow), at 1e-22 were 1e-3 off (subnormal squares),
and float64 at 1e-100 or 1e150 gave nan (the sums of squared moments under/overflowed).
"""

import math
import warnings

import numpy as np
import pytest

import pyckafast

SCALES = {np.float32: [1e-30, 1e-22, 1e19, 1e36], np.float64: [1e-300, 1e-155, 1e-100, 1e150, 1e300]}
CASES = [(dtype, s) for dtype, scales in SCALES.items() for s in scales]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 12)) + 5.0
    y = x @ rng.normal(size=(12, 6)) + rng.normal(size=(600, 6))
    return x, y


@pytest.mark.parametrize("dtype, scale", CASES, ids=[f"{d.__name__}-{s:g}" for d, s in CASES])
@pytest.mark.parametrize("form", ["features", "samples"])
@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_cka_of_extreme_magnitudes(data, dtype, scale, form, debiased, cpu_backend):
    x, y = data
    expected = pyckafast.linear_cka(x, y, debiased=debiased)
    xs, ys = (x * scale).astype(dtype), (y * scale).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no false "zero variance" warning either
        got = pyckafast.linear_cka(xs, ys, debiased=debiased, form=form, backend=cpu_backend)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert got == pytest.approx(expected, abs=tol)


@pytest.mark.parametrize("log2", [-400, -170, 170, 400])
def test_hsic_is_scaled_back_exactly(data, log2):
    x, y = data
    s = math.ldexp(1.0, log2)
    value = pyckafast.linear_hsic(x * s, y, debiased=True)
    expected = math.ldexp(pyckafast.linear_hsic(x, y, debiased=True), 2 * log2)
    assert value == pytest.approx(expected, rel=1e-12)


def test_hsic_beyond_float64_is_inf_with_a_warning(data):
    x, y = data
    with pytest.warns(RuntimeWarning, match="exceeds the float64 range"):
        assert pyckafast.linear_hsic(x * 1e200, y * 1e200) == math.inf
    assert pyckafast.linear_cka(x * 1e200, y * 1e200) == pytest.approx(
        pyckafast.linear_cka(x, y), abs=1e-12)


def test_streams_of_different_magnitudes_merge(data, tmp_path):
    x, y = data
    a = pyckafast.LinearCKAState().update(x[:300] * 1e200, y[:300])
    b = pyckafast.LinearCKAState().update(x[300:] * 1e200, y[300:])
    a.save(tmp_path / "a.npz")
    merged = pyckafast.LinearCKAState.load(tmp_path / "a.npz").merge(b)
    assert merged.result(debiased=True) == pytest.approx(
        pyckafast.linear_cka(x, y, debiased=True), abs=1e-12)


def test_minibatch_of_extreme_magnitudes(data):
    x, y = data
    assert pyckafast.minibatch_cka(x * 1e200, y, batch_size=100) == pytest.approx(
        pyckafast.minibatch_cka(x, y, batch_size=100), abs=1e-12)
