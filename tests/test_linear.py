import numpy as np
import pytest
from reference import correlated, linear_cka_ref, linear_cka_two_pass

import pyckafast

FORMS = ["features", "samples"]


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(200, 7, 5), (40, 90, 120), (4, 3, 2), (57, 1, 1)])
@pytest.mark.parametrize("form", FORMS)
def test_float64_matches_reference(cpu_backend, debiased, shape, form, rng):
    n, p1, p2 = shape
    x, y = correlated(rng, n, p1, p2, mean=3.0)
    got = pyckafast.linear_cka(x, y, debiased=debiased, backend=cpu_backend, form=form)
    assert rel(got, linear_cka_ref(x, y, debiased)) <= 1e-10


@pytest.mark.parametrize("debiased", [False, True])
def test_tiny_chunks_equal_one_chunk(cpu_backend, debiased, rng):
    x, y = correlated(rng, 301, 6, 4, mean=-2.0)
    one = pyckafast.linear_cka(x, y, debiased=debiased, backend=cpu_backend, form="features")
    for chunk in (1, 7, 64, 300, 301, 1000):
        got = pyckafast.linear_cka(x, y, debiased=debiased, backend=cpu_backend, chunk_size=chunk,
                                   form="features")
        assert rel(got, one) <= 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("debiased", [False, True])
def test_float32_large_mean_is_accurate(cpu_backend, debiased, rng):
    n = 300_000
    x, y = correlated(rng, n, 32, 24, mean=1e3, dtype=np.float32)
    got = pyckafast.linear_cka(x, y, debiased=debiased, backend=cpu_backend)
    if debiased:
        # float64 reference of the debiased estimator from exactly centred float64 moments
        ref = _debiased_two_pass(x, y)
    else:
        ref = linear_cka_two_pass(x, y)
    assert rel(got, ref) <= 1e-5


def _debiased_two_pass(x, y):
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    n = len(x)
    a, b = (x * x).sum(1), (y * y).sum(1)

    def h(f_ab, ab, sa, sb):
        return f_ab - n / (n - 2) * ab + sa * sb / ((n - 1) * (n - 2))

    hxy = h(np.linalg.norm(x.T @ y) ** 2, a @ b, a.sum(), b.sum())
    hxx = h(np.linalg.norm(x.T @ x) ** 2, a @ a, a.sum(), a.sum())
    hyy = h(np.linalg.norm(y.T @ y) ** 2, b @ b, b.sum(), b.sum())
    return hxy / np.sqrt(hxx * hyy)


def test_raw_float32_formula_fails_the_same_bar(rng):
    """The bar above is meaningful: X'X - n mu mu' in float32 misses it by orders of magnitude."""
    n = 300_000
    x, y = correlated(rng, n, 32, 24, mean=1e3, dtype=np.float32)
    mx, my = x.mean(0, dtype=np.float32), y.mean(0, dtype=np.float32)
    xx = x.T @ x - n * np.outer(mx, mx)
    yy = y.T @ y - n * np.outer(my, my)
    xy = x.T @ y - n * np.outer(mx, my)
    naive = np.linalg.norm(xy) ** 2 / (np.linalg.norm(xx) * np.linalg.norm(yy))
    assert rel(float(naive), linear_cka_two_pass(x, y)) > 1e-3


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(debiased, rng):
    x, y = correlated(rng, 150, 10, 8)
    base = pyckafast.linear_cka(x, y, debiased=debiased)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert rel(pyckafast.linear_cka(x @ q, y, debiased=debiased), base) <= 1e-10
    assert rel(pyckafast.linear_cka(7.5 * x, y, debiased=debiased), base) <= 1e-10
    assert rel(pyckafast.linear_cka(x + 123.0, y - 4.0, debiased=debiased), base) <= 1e-10
    assert abs(pyckafast.linear_cka(x, x, debiased=debiased) - 1.0) <= 1e-10


def test_symmetric_and_bounded(rng):
    x, y = correlated(rng, 80, 5, 9)
    assert rel(pyckafast.linear_cka(x, y), pyckafast.linear_cka(y, x)) <= 1e-12
    assert 0.0 <= pyckafast.linear_cka(x, y) <= 1.0


@pytest.mark.parametrize("form", FORMS)
def test_layouts_without_copy_semantics(cpu_backend, form, rng, tmp_path):
    x, y = correlated(rng, 120, 6, 5, mean=1.0)
    ref = linear_cka_ref(x, y)
    fortran = np.asfortranarray(x)
    strided = np.repeat(y, 2, axis=1)[:, ::2]
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    for a, b in ((fortran, y), (x, strided), (mm, y), (fortran, strided)):
        assert rel(pyckafast.linear_cka(a, b, backend=cpu_backend, form=form, chunk_size=32), ref) <= 1e-10


def test_one_d_int_and_bool_inputs(rng):
    v = rng.integers(0, 10, size=50)
    y = v[:, None] * 2.0 + rng.normal(size=(50, 1)) * 0.1
    assert rel(pyckafast.linear_cka(v, y), linear_cka_ref(v.astype(float), y)) <= 1e-10
    b = rng.integers(0, 2, size=(50, 3)).astype(bool)
    assert rel(pyckafast.linear_cka(b, y), linear_cka_ref(b.astype(float), y)) <= 1e-10


def test_mixed_dtypes(rng):
    x, y = correlated(rng, 90, 4, 3)
    got = pyckafast.linear_cka(x.astype(np.float32), y)
    assert rel(got, linear_cka_ref(x.astype(np.float32), y)) <= 1e-10


def test_hsic_values(rng):
    x, y = correlated(rng, 30, 4, 3)
    from reference import hsic_biased, hsic_unbiased

    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = xc @ xc.T, yc @ yc.T
    assert rel(pyckafast.linear_hsic(x, y), hsic_biased(k, l)) <= 1e-10
    assert rel(pyckafast.linear_hsic(x, y, debiased=True), hsic_unbiased(x @ x.T, y @ y.T)) <= 1e-10


@pytest.mark.parametrize("form", FORMS)
def test_zero_variance_is_nan_with_warning_naming_it(form, rng):
    y = rng.normal(size=(20, 3))
    with pytest.warns(RuntimeWarning, match="x has zero variance"):
        assert np.isnan(pyckafast.linear_cka(np.full((20, 4), 3.7), y, form=form))
    with pytest.warns(RuntimeWarning, match="y has zero variance"):
        assert np.isnan(pyckafast.linear_cka(y, np.full((20, 2), 1e6, np.float32), form=form))


def test_constant_column_is_fine(rng):
    x, y = correlated(rng, 60, 4, 3)
    x[:, 1] = 5.0
    assert rel(pyckafast.linear_cka(x, y), linear_cka_ref(x, y)) <= 1e-10


@pytest.mark.parametrize(
    "x, y, kwargs, exc, match",
    [
        (np.ones((5, 2)), np.ones((6, 2)), {}, ValueError, "same number of samples.*5.*6"),
        (np.ones((1, 2)), np.ones((1, 2)), {}, ValueError, "at least 2 samples"),
        (np.ones((3, 2)), np.ones((3, 2)), {"debiased": True}, ValueError, "at least 4 samples"),
        (np.ones((3, 2, 2)), np.ones((3, 2)), {}, ValueError, "x must be a 1-D or 2-D.*\\(3, 2, 2\\)"),
        (np.array([["a"], ["b"]]), np.ones((2, 1)), {}, TypeError, "x must hold real numbers.*<U1"),
        (np.ones((3, 1)), np.ones((3, 1)) * 1j, {}, TypeError, "y must hold real numbers.*complex"),
        (np.empty((0, 3)), np.empty((0, 3)), {}, ValueError, "x must not be empty"),
        (np.ones((4, 2)), np.ones((4, 2)), {"backend": "fortran"}, ValueError, "The 'backend' parameter of linear_cka must be one of 'auto', 'numpy'"),
        (np.ones((4, 2)), np.ones((4, 2)), {"chunk_size": 0}, ValueError, "The 'chunk_size' parameter of linear_cka must be a positive integer or None. Got 0 \\(int\\)"),
        (np.ones((4, 2)), np.ones((4, 2)), {"form": "gram"}, ValueError, "The 'form' parameter of linear_cka must be one of"),
    ],
)
def test_bad_input(x, y, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pyckafast.linear_cka(x, y, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("form", FORMS)
def test_non_finite_values_are_reported(cpu_backend, bad, form, rng):
    x, y = correlated(rng, 50, 3, 3)
    y[37, 1] = bad
    with pytest.raises(ValueError, match="y must contain only finite values"):
        pyckafast.linear_cka(x, y, backend=cpu_backend, form=form, chunk_size=16)
    x[0, 0] = bad  # in the first chunk, which also sets the shift
    with pytest.raises(ValueError, match="x must contain only finite values.*rows 0"):
        pyckafast.linear_cka(x, y, backend=cpu_backend, form=form, chunk_size=16)


def test_explicit_unavailable_backend_raises_with_reason(monkeypatch):
    from pyckafast._core import dispatch as _backends

    monkeypatch.setattr(_backends, "_load", lambda name: (None, "no compiler here"))
    with pytest.raises(pyckafast.BackendUnavailable, match="backend='cpp' cannot run here: no compiler here"):
        pyckafast.linear_cka(np.ones((4, 2)), np.ones((4, 2)), backend="cpp")


def test_auto_prefers_sample_form_when_p_much_larger_than_n():
    from pyckafast._core.dispatch import prefer_samples

    assert prefer_samples(100, 5000, 5000)
    assert not prefer_samples(100_000, 64, 64)
    assert not prefer_samples(50_000, 100_000, 100_000)  # n x n would not fit
