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


# ---- RBF CKA -------------------------------------------------------------------------------------
# RBF CKA with a median bandwidth is scale invariant, and with sigma scaled like the data too.
# The centred rows of extreme magnitude are multiplied by a power of two (exact) and an explicit
# gamma by 2^-2k. Before: float32 at 1e-20 gave 1.0 (cpp) silently, float64 at 1e-155 too, huge
# scales nan or "identical points".
RBF_SCALES = {np.float32: [1e-30, 1e-20, 1e20, 1e30], np.float64: [1e-300, 1e-155, 1e155, 1e300]}
RBF_CASES = [(dtype, s) for dtype, scales in RBF_SCALES.items() for s in scales]
RBF_IDS = [f"{d.__name__}-{s:g}" for d, s in RBF_CASES]


@pytest.fixture(scope="module")
def rbf_data():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 8)) + 5.0
    y = np.tanh(x @ rng.normal(size=(8, 5))) + 0.5 * rng.normal(size=(120, 5))
    return x, y


def _rbf_expected(x, y, debiased):
    return (pyckafast.rbf_cka(x, y, debiased=debiased, backend="numpy"),
            pyckafast.rbf_cka(x, y, sigma=(3.0, 1.0), debiased=debiased, backend="numpy"))


@pytest.mark.parametrize("dtype, scale", RBF_CASES, ids=RBF_IDS)
@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_rbf_cka_of_extreme_magnitudes(rbf_data, dtype, scale, debiased, cpu_backend):
    x, y = rbf_data
    median, fixed = _rbf_expected(x, y, debiased)
    xs, ys = (x * scale).astype(dtype), (y * scale).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = pyckafast.rbf_cka(xs, ys, debiased=debiased, backend=cpu_backend)
        got_sigma = pyckafast.rbf_cka(xs, ys, sigma=(3.0 * scale, 1.0 * scale),
                                      debiased=debiased, backend=cpu_backend)
    assert got == pytest.approx(median, abs=tol)
    assert got_sigma == pytest.approx(fixed, abs=tol)


@pytest.mark.parametrize("dtype, scale", RBF_CASES, ids=RBF_IDS)
def test_rbf_cka_of_extreme_magnitudes_gpu_and_dask(rbf_data, dtype, scale):
    pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ host twins")
    da = pytest.importorskip("dask.array")
    import pyckafast.dask
    from gpu_emulation import EmulatedEngine
    from pyckafast._core import combine
    from pyckafast._core.inputs import Samples
    from pyckafast._gpu import rbf as gpu_rbf
    from pyckafast.rbf import RBFOptions

    x, y = rbf_data
    median, fixed = _rbf_expected(x, y, True)
    xs, ys = (x * scale).astype(dtype), (y * scale).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for options, want in ((RBFOptions.of(), median),
                          (RBFOptions.of(sigma=(3.0 * scale, 1.0 * scale)), fixed)):
        terms = gpu_rbf.rbf_terms_under(EmulatedEngine(), Samples(xs, xs.dtype, True),
                                        Samples(ys, ys.dtype, True), options=options, tile=64)
        assert combine.cka_from_hsic(combine.kernel_hsic(terms, True)) == pytest.approx(
            want, abs=tol)
    dx, dy = da.from_array(xs, chunks=50), da.from_array(ys, chunks=50)
    assert pyckafast.dask.rbf_cka(dx, dy, debiased=True) == pytest.approx(median, abs=tol)
    same_sigma = pyckafast.rbf_cka(x, y, sigma=3.0, debiased=True, backend="numpy")
    assert pyckafast.dask.rbf_cka(dx, dy, sigma=3.0 * scale, debiased=True) == pytest.approx(
        same_sigma, abs=tol)


def test_rbf_hsic_of_scaled_data_with_scaled_sigma(rbf_data):
    """The kernel values do not change (gamma d2 is invariant), so neither does HSIC."""
    x, y = rbf_data
    want = pyckafast.rbf_hsic(x, y, sigma=(3.0, 1.0), debiased=True)
    got = pyckafast.rbf_hsic(x * 1e-200, y * 1e-200, sigma=(3e-200, 1e-200), debiased=True)
    assert got == pytest.approx(want, rel=1e-10)


# ---- a small spread beside a large mean (issue 22, item 1) ---------------------------------------
# float32 data of mean 1e6 and std 1 (~70 distinct values per column) used to give nan with a
# false "zero variance" warning on every linear entry point: the rule called any layer with std
# below 16 eps of its mean constant. A layer is constant only when its values are.
SPREADS = [(1e6, 1.0), (1e4, 0.01), (1e6, "one ulp")]
SPREAD_IDS = ["mean1e6-std1", "mean1e4-std0.01", "mean1e6-one-ulp"]


def _small_spread(mean, std):
    rng = np.random.default_rng(21)
    base = rng.normal(size=(300, 20))
    y = np.tanh(base @ rng.normal(size=(20, 8))).astype(np.float32)
    if std == "one ulp":  # two rows differ from the rest, by one float32 ulp, in one column
        x = np.full((300, 20), mean, np.float32)
        x[[17, 40], 3] = np.nextafter(np.float32(mean), np.float32(np.inf))
        y[[17, 40]] += 5.0  # so that CKA is not tiny
    else:
        x = (base * std + mean).astype(np.float32)
    want = {d: pyckafast.linear_cka(x.astype(np.float64), y.astype(np.float64), debiased=d,
                                    backend="numpy") for d in (False, True)}
    return x, y, want


def _entry_points(x, y, debiased, backend):
    """Every linear route on the CPU (in memory, streamed, mapped, Dask, emulated GPU)."""
    da = pytest.importorskip("dask.array")
    from pyckafast import dask as pk_dask
    from pyckafast._core import combine
    from pyckafast._core.inputs import Samples
    from pyckafast._gpu import linear as gpu_linear

    out = {form: pyckafast.linear_cka(x, y, debiased=debiased, backend=backend, form=form)
           for form in ("features", "samples", "tiles")}
    state = pyckafast.LinearCKAState(backend=backend)
    for a, b in zip(np.array_split(x, 5), np.array_split(y, 5)):
        state.update(a, b)
    out["LinearCKAState"] = state.result(debiased=debiased)
    out["CKAMapState"] = pyckafast.CKAMapState(backend=backend).update([x, y]).result(
        debiased=debiased)[0, 1]
    for form in ("features", "tiles"):
        out[f"cka_matrix-{form}"] = pyckafast.cka_matrix([x, y], debiased=debiased,
                                                         form=form)[0, 1]
    dx, dy = da.from_array(x, chunks=70), da.from_array(y, chunks=70)
    out["dask"] = pk_dask.linear_cka(dx, dy, debiased=debiased)
    if pytest.importorskip("pyckafast._ext"):
        from gpu_emulation import EmulatedEngine

        terms = gpu_linear.linear_terms(EmulatedEngine(), Samples(x, x.dtype, True),
                                        Samples(y, y.dtype, True), x.shape[0],
                                        debiased=debiased, chunk_size=64)
        out["gpu (emulated)"] = combine.cka_from_hsic(combine.linear_hsic(terms, debiased))
    return out


@pytest.mark.parametrize("mean, std", SPREADS, ids=SPREAD_IDS)
@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_float32_small_spread_beside_a_large_mean_is_not_constant(mean, std, debiased,
                                                                  cpu_backend):
    x, y, want = _small_spread(mean, std)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no false "zero variance" warning
        got = _entry_points(x, y, debiased, cpu_backend)
    wrong = {k: v for k, v in got.items() if not v == pytest.approx(want[debiased], abs=1e-5)}
    assert not wrong, f"expected {want[debiased]}, got {wrong}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_constant_layer_at_a_large_mean_is_still_constant(dtype, cpu_backend):
    """The other side of the rule: equal values are constant on every route, whatever the
    mean, and the result is nan with the warning (not a ratio of rounding errors)."""
    x, y, _ = _small_spread(1e6, 1.0)
    const = np.full_like(x, 1e6 + 0.1, dtype=dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _entry_points(const, y.astype(dtype), False, cpu_backend)
    assert all(np.isnan(v) for v in got.values()), got
    assert any("zero variance" in str(w.message) for w in caught)


# ---- finite float64 data near 1e307 (issue 22, item 9) -------------------------------------------
# Their column sums overflow, so the finiteness checks refused them as "NaN or Inf"; the mean is
# now summed times a power of two and the rows scaled (exact), as for smaller extremes.
@pytest.mark.parametrize("scale", [1e307, -1.5e308])
def test_finite_data_near_the_float64_limit(data, scale, cpu_backend):
    x, y = data
    x = x - 5.0  # a spread as large as the values, so the sums of rows overflow
    want = pyckafast.linear_cka(x, y, debiased=True)
    xs = x * (scale / np.max(np.abs(x)))
    state = pyckafast.LinearCKAState(backend=cpu_backend).update(xs[:200], y[:200]).update(
        xs[200:], y[200:])
    got = {
        **{form: pyckafast.linear_cka(xs, y, debiased=True, form=form, backend=cpu_backend)
           for form in ("features", "samples", "tiles")},
        "LinearCKAState": state.result(debiased=True),
        "CKAMapState": pyckafast.CKAMapState(backend=cpu_backend).update([xs, y]).result(
            debiased=True)[0, 1],
        "cka_matrix": pyckafast.cka_matrix([xs, y], debiased=True)[0, 1],
        "cka_matrix tiles": pyckafast.cka_matrix([xs, y], debiased=True, form="tiles")[0, 1],
    }
    wrong = {k: v for k, v in got.items() if not v == pytest.approx(want, abs=1e-12)}
    assert not wrong, f"expected {want}, got {wrong}"
    rbf_want = pyckafast.rbf_cka(x, y, backend=cpu_backend)
    assert pyckafast.rbf_cka(xs, y, backend=cpu_backend) == pytest.approx(rbf_want, abs=1e-12)
