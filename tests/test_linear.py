"""Linear CKA/HSIC against the float64 n x n reference, over the matrix
device x backend x dtype x shape (tests/conftest.py): float64 to 1e-10, float32 data with a
column mean of 1e3 to 1e-5 (the bar that the textbook float32 formula misses, see
test_raw_float32_formula_fails_the_same_bar)."""

import numpy as np
import pytest
from _reference import (correlated_linear, linear_cka_feature_space, linear_cka_ref,
                        linear_hsic_ref)

import pyckafast

FORMS = ["features", "samples"]
MEAN = {np.float64: 3.0, np.float32: 1e3}  # float32: a large mean, the hard case
TOL = {np.float64: 1e-10, np.float32: 1e-5}
# (n, dx, dy): the debiased minimum n = 4; one feature per side, n not a multiple of the chunks.
# (n = 203 with 12 and 6 features, and n = 40 with 90 and 120, are the matrix's cells:
# tests/test_matrix.py, every input kind, with form="auto".)
SHAPES = [
    pytest.param((4, 3, 2), id="n4-dx3-dy2"),
    pytest.param((57, 1, 1), id="n57-dx1-dy1"),
]
DEBIASED = pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])


def rel(a, b):
    return abs(a - b) / abs(b)


@DEBIASED
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("form", FORMS)
def test_matches_reference(target, dtype, shape, form, debiased, rng):
    n, dx, dy = shape
    x, y = correlated_linear(rng, n, dx, dy, mean=MEAN[dtype], dtype=dtype)
    kw = dict(debiased=debiased, backend=target.backend, form=form, chunk_size=64)
    got = pyckafast.linear_cka(target.on(x), target.on(y), **kw)
    assert rel(got, linear_cka_ref(x, y, debiased)) <= TOL[dtype]
    hsic = pyckafast.linear_hsic(target.on(x), target.on(y), **kw)
    assert rel(hsic, linear_hsic_ref(x, y, debiased)) <= TOL[dtype]


@DEBIASED
def test_tiny_chunks_equal_one_chunk(target, debiased, rng):
    x, y = correlated_linear(rng, 301, 6, 4, mean=-2.0)
    x, y = target.on(x), target.on(y)
    one = pyckafast.linear_cka(x, y, debiased=debiased, backend=target.backend, form="features")
    for chunk in (1, 7, 64, 300, 301, 1000):
        got = pyckafast.linear_cka(x, y, debiased=debiased, backend=target.backend,
                                   chunk_size=chunk, form="features")
        assert rel(got, one) <= 1e-12


@pytest.mark.slow
@DEBIASED
def test_float32_large_mean_is_accurate(target, debiased, rng):
    x, y = correlated_linear(rng, 300_000, 32, 24, mean=1e3, dtype=np.float32)
    got = pyckafast.linear_cka(target.on(x), target.on(y), debiased=debiased,
                               backend=target.backend)
    assert rel(got, linear_cka_feature_space(x, y, debiased)) <= 1e-5


def test_raw_float32_formula_fails_the_same_bar(rng):
    """The bar above is meaningful: X'X - n mu mu' in float32 misses it by orders of magnitude
    (already at a tenth of its n: tens of percent, against 1e-5)."""
    n = 30_000
    x, y = correlated_linear(rng, n, 32, 24, mean=1e3, dtype=np.float32)
    mx, my = x.mean(0, dtype=np.float32), y.mean(0, dtype=np.float32)
    xx = x.T @ x - n * np.outer(mx, mx)
    yy = y.T @ y - n * np.outer(my, my)
    xy = x.T @ y - n * np.outer(mx, my)
    naive = np.linalg.norm(xy) ** 2 / (np.linalg.norm(xx) * np.linalg.norm(yy))
    assert rel(float(naive), linear_cka_feature_space(x, y)) > 1e-3


@DEBIASED
def test_invariances(target, debiased, rng):
    x, y = correlated_linear(rng, 150, 10, 8)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))

    def cka(a, b):
        return pyckafast.linear_cka(target.on(a), target.on(b), debiased=debiased,
                                    backend=target.backend)

    base = cka(x, y)
    assert rel(base, linear_cka_ref(x, y, debiased)) <= 1e-10
    assert rel(cka(x @ q, y), base) <= 1e-10
    assert rel(cka(7.5 * x, y), base) <= 1e-10
    assert rel(cka(x + 123.0, y - 4.0), base) <= 1e-10
    assert abs(cka(x, x) - 1.0) <= 1e-10


def test_symmetric_and_bounded(target, rng):
    x, y = correlated_linear(rng, 80, 5, 9)
    xy = pyckafast.linear_cka(target.on(x), target.on(y), backend=target.backend)
    yx = pyckafast.linear_cka(target.on(y), target.on(x), backend=target.backend)
    assert rel(xy, yx) <= 1e-12
    assert 0.0 <= xy <= 1.0


@pytest.mark.parametrize("form", FORMS)
def test_layouts_without_copy_semantics(target, dtype, form, rng):
    """Fortran-ordered, column-strided and row-reversed views built on the case's device
    (memmaps: an input kind of tests/test_matrix.py). Each layout pair is a separate Numba
    compilation, so the pairs are few."""
    x, y = correlated_linear(rng, 120, 6, 5, mean=MEAN[dtype], dtype=dtype)
    xp, gx, gy = target.xp, target.on(x), target.on(y)
    fortran_x = xp.asfortranarray(gx)
    strided_y = xp.repeat(gy, 2, axis=1)[:, ::2]
    cases = [
        (fortran_x, gy, x, y),
        (gx, strided_y, x, y),
        (fortran_x, strided_y, x, y),
        (gx[::-1], gy[::-1], x[::-1], y[::-1]),
    ]
    for a, b, ra, rb in cases:
        got = pyckafast.linear_cka(a, b, backend=target.backend, form=form, chunk_size=32)
        assert rel(got, linear_cka_ref(ra, rb)) <= TOL[dtype]


def test_one_d_int_and_bool_inputs(target, rng):
    v = rng.integers(0, 10, size=50)
    y = v[:, None] * 2.0 + rng.normal(size=(50, 1)) * 0.1
    got = pyckafast.linear_cka(target.on(v), target.on(y), backend=target.backend)
    assert rel(got, linear_cka_ref(v, y)) <= 1e-10
    b = rng.integers(0, 2, size=(50, 3)).astype(bool)
    got = pyckafast.linear_cka(target.on(b), target.on(y), backend=target.backend)
    assert rel(got, linear_cka_ref(b, y)) <= 1e-10


def test_mixed_dtypes(target, rng):
    x, y = correlated_linear(rng, 90, 4, 3)
    got = pyckafast.linear_cka(target.on(x.astype(np.float32)), target.on(y),
                               backend=target.backend)
    assert rel(got, linear_cka_ref(x.astype(np.float32), y)) <= 1e-10


@pytest.mark.parametrize("form", FORMS)
def test_zero_variance_is_nan_with_warning_naming_it(target, form, rng):
    y = rng.normal(size=(20, 3))
    with pytest.warns(RuntimeWarning, match="x has zero variance"):
        assert np.isnan(pyckafast.linear_cka(target.on(np.full((20, 4), 3.7)), target.on(y),
                                             backend=target.backend, form=form))
    with pytest.warns(RuntimeWarning, match="y has zero variance"):
        assert np.isnan(pyckafast.linear_cka(target.on(y), target.on(np.full((20, 2), 1e6, np.float32)),
                                             backend=target.backend, form=form))


def test_constant_column_is_fine(target, dtype, rng):
    x, y = correlated_linear(rng, 60, 4, 3, mean=MEAN[dtype], dtype=dtype)
    x[:, 1] = dtype(5.0)
    for debiased in (False, True):
        got = pyckafast.linear_cka(target.on(x), target.on(y), debiased=debiased,
                                   backend=target.backend)
        assert rel(got, linear_cka_ref(x, y, debiased)) <= TOL[dtype]


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


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("form", FORMS)
def test_non_finite_values_are_reported(target, bad, form, rng):
    x, y = correlated_linear(rng, 50, 3, 3)
    y[37, 1] = bad
    kind = {"nan": "NaN", "inf": r"\+Inf", "-inf": "-Inf"}[str(bad)]
    # every form names the row and the column, not the chunk (issue 22, item 9)
    with pytest.raises(ValueError, match=r"y must contain only finite values; found NaN or Inf in "
                                         rf"row 37, column 1 \({kind}\)\.$"):
        pyckafast.linear_cka(target.on(x), target.on(y), backend=target.backend, form=form,
                             chunk_size=16)
    x[20, 2] = bad  # beyond the first chunk, which sets the shift
    x[0, 0] = bad  # in the first chunk, which also sets the shift
    with pytest.raises(ValueError, match=r"x must contain only finite values; found NaN or Inf in "
                                         rf"row 0, column 0 \({kind}\)\.$"):
        pyckafast.linear_cka(target.on(x), target.on(y), backend=target.backend, form=form,
                             chunk_size=16)


def test_explicit_unavailable_backend_raises_with_reason(monkeypatch):
    from pyckafast._core import dispatch as _dispatch

    monkeypatch.setattr(_dispatch, "_load", lambda name: (None, "no compiler here"))
    with pytest.raises(pyckafast.BackendUnavailable, match="backend='cpp' cannot run here: no compiler here"):
        pyckafast.linear_cka(np.ones((4, 2)), np.ones((4, 2)), backend="cpp")


def test_auto_prefers_sample_form_when_p_much_larger_than_n():
    from pyckafast._core.dispatch import prefer_samples

    assert prefer_samples(100, 5000, 5000)
    assert not prefer_samples(100_000, 64, 64)
    assert not prefer_samples(50_000, 100_000, 100_000)  # n x n would not fit
