"""RBF CKA/HSIC against a float64 n x n reference: every backend, bandwidth rule, estimator."""

import math

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch as _backends, combine as _combine
from pyckafast._core.pairs import CentredSide
from pyckafast._cpu import rbf as _rbf_engine
from pyckafast.rbf import rbf_producer
from rbf_reference import CPU_BACKENDS, correlated, cka_ref, gram_rbf, hsic_ref, rbf_cka_ref

THRESHOLDS = [0.2, 0.5, 1.0, 2.0, 5.0]


def _rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def data():
    return correlated(np.random.default_rng(7), 203, 12, 6)


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    why = _backends.probe(request.param)
    assert why is None, f"backend {request.param} unavailable: {why}"
    return request.param


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_float64_matches_reference(data, backend, threshold, debiased):
    x, y = data
    got = pyckafast.rbf_cka(x, y, threshold=threshold, debiased=debiased, backend=backend,
                            tile=64)  # n = 203 is not a multiple of the tile
    assert _rel(got, rbf_cka_ref(x, y, threshold, debiased=debiased)) <= 1e-8


@pytest.mark.parametrize("rule", ["kornblith", "offdiag"])
@pytest.mark.parametrize("debiased", [False, True])
def test_bandwidth_rules_match_reference(data, backend, rule, debiased):
    x, y = data
    got = pyckafast.rbf_cka(x, y, bandwidth=rule, threshold=0.5, debiased=debiased,
                            backend=backend, tile=50)
    assert _rel(got, rbf_cka_ref(x, y, 0.5, rule, debiased)) <= 1e-8


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_float32_large_mean(backend, threshold, debiased):
    x, y = correlated(np.random.default_rng(3), 157, 8, 5, mean=300.0, dtype=np.float32)
    got = pyckafast.rbf_cka(x, y, threshold=threshold, debiased=debiased, backend=backend,
                            tile=40)
    assert _rel(got, rbf_cka_ref(x, y, threshold, debiased=debiased)) <= 1e-4


def test_explicit_sigma_and_hsic_value(data, backend):
    x, y = data
    k, l = gram_rbf(x, sigma=3.0), gram_rbf(y, sigma=(1.5))
    for debiased in (False, True):
        got = pyckafast.rbf_hsic(x, y, sigma=(3.0, 1.5), debiased=debiased, backend=backend)
        assert _rel(got, hsic_ref(k, l, debiased)) <= 1e-8
        got = pyckafast.hsic(x, y, kernel="rbf", sigma=(3.0, 1.5), debiased=debiased)
        assert _rel(got, hsic_ref(k, l, debiased)) <= 1e-8
    assert _rel(pyckafast.rbf_cka(x, y, sigma=(3.0, 1.5)), cka_ref(k, l, False)) <= 1e-8


def test_tiny_tiles_equal_large_tiles(data, backend):
    x, y = data[0][:61], data[1][:61]  # tile=1 is one call per pair: keep n small
    produce = rbf_producer(backend)
    big = produce(x, y, gamma_x=0.03, gamma_y=0.2, tile=1000)
    for tile in (1, 3, 17):
        small = produce(x, y, gamma_x=0.03, gamma_y=0.2, tile=tile)
        for field in ("s_kl", "s_kk", "s_ll"):
            assert _rel(getattr(small, field), getattr(big, field)) <= 1e-12
        np.testing.assert_allclose(small.row_k, big.row_k, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(small.row_l, big.row_l, rtol=1e-12, atol=1e-12)


def test_backends_give_the_same_terms(data):
    x, y = data
    ref = rbf_producer("numpy")(x, y, gamma_x=0.05, gamma_y=0.1, tile=70)
    for name in ("numba", "cpp"):
        got = rbf_producer(name)(x, y, gamma_x=0.05, gamma_y=0.1, tile=70)
        assert _rel(got.s_kl, ref.s_kl) <= 1e-12
        np.testing.assert_allclose(got.row_k, ref.row_k, rtol=1e-12)


def _sides(x, y):
    """x and y rows as centred sides with a zero shift (the data are already near 0)."""
    return tuple(CentredSide(a, np.zeros(a.shape[1]), a.dtype, name) for a, name in ((x, "x"), (y, "y")))


def test_block_pair_contract(data, backend):
    """Off-diagonal pairs: row and column sums of E; diagonal pairs: all ordered pairs."""
    x, y = data
    xa, ya, xb, yb = x[:30], y[:30], x[30:75], y[30:75]
    gx, gy = 0.04, 0.3
    ops = _backends.resolve(backend, "rbf_tile")
    e = np.expm1(-gx * ((xa[:, None] - xb[None]) ** 2).sum(-1))
    f = np.expm1(-gy * ((ya[:, None] - yb[None]) ** 2).sum(-1))
    p = _rbf_engine.set_pair_terms(_sides(xa, ya), _sides(xb, yb), gamma_x=gx, gamma_y=gy, ops=ops,
                                   tile=7)
    assert _rel(p.s_kl, (e * f).sum()) <= 1e-10 and _rel(p.s_ll, (f * f).sum()) <= 1e-10
    np.testing.assert_allclose(p.row_k_a, e.sum(1), rtol=1e-10)
    np.testing.assert_allclose(p.row_l_b, f.sum(0), rtol=1e-10)
    e = np.expm1(-gx * ((xa[:, None] - xa[None]) ** 2).sum(-1))
    d = _rbf_engine.set_pair_terms(_sides(xa, ya), None, gamma_x=gx, gamma_y=gy, ops=ops, tile=7)
    assert _rel(d.s_kk, (e * e).sum()) <= 1e-10
    np.testing.assert_allclose(d.row_k_a, e.sum(1), rtol=1e-10)
    assert not d.row_k_b.any()


def test_expm1_kernel_accuracy():
    """The branch-free expm1 of rbf_pair.h (through the C++ and Numba tiles) against np.expm1."""
    d2 = np.concatenate([[0.0], np.geomspace(1e-12, 800.0, 4000)])
    g = np.zeros((1, d2.size))
    for name in ("cpp", "numba"):
        ops = _backends.resolve(name, "rbf_tile")
        _, _, _, _, _, col_k, _ = ops.rbf_tile(g, g, np.zeros(1), np.zeros(1), d2, d2, 1.0, 1.0,
                                               False)
        np.testing.assert_allclose(col_k, np.expm1(-d2), rtol=4e-16, atol=0)


def test_numba_epilogue_runs_the_cpp_expm1():
    """The Numba tile takes its expm1 constants from rbf_pair.h's ExpM1Table<double>: its entries
    are bit for bit the C++ kernels' scalar expm1 (a drifted table or a stale Numba cache fails)."""
    pytest.importorskip("numba")
    ext = pytest.importorskip("pyckafast._ext")
    d2 = np.concatenate([[0.0], np.geomspace(1e-14, 750.0, 20000)])
    g = np.zeros((1, d2.size))
    ops = _backends.resolve("numba", "rbf_tile")
    _, _, _, _, _, col_k, _ = ops.rbf_tile(g, g, np.zeros(1), np.zeros(1), d2, d2, 1.0, 1.0, False)
    np.testing.assert_array_equal(col_k, ext.expm1_neg_f64(-d2, False))


def test_non_contiguous_and_fortran_inputs(data):
    x, y = data
    expected = pyckafast.rbf_cka(x, y, debiased=True)
    wide = np.zeros((x.shape[0], 2 * x.shape[1]))
    wide[:, ::2] = x
    assert _rel(pyckafast.rbf_cka(wide[:, ::2], np.asfortranarray(y), debiased=True),
                expected) <= 1e-12
    assert _rel(pyckafast.rbf_cka(x[::-1], y[::-1], debiased=True), expected) <= 1e-10


def test_identical_and_transformed_inputs(data):
    x, _ = data
    assert pyckafast.rbf_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert pyckafast.cka(x, 3.0 * x - 2.0, kernel="rbf", debiased=True) == pytest.approx(1.0)
    assert pyckafast.cka(x, x[:, :5]) == pytest.approx(pyckafast.linear_cka(x, x[:, :5]))


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.inf, math.nan, (1.0, 0.0), (1.0, 2.0, 3.0)])
def test_bad_sigma(data, sigma):
    x, y = data
    with pytest.raises(ValueError, match="sigma"):
        pyckafast.rbf_cka(x, y, sigma=sigma)


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 0.0}, "threshold"), ({"threshold": -2}, "threshold"),
    ({"bandwidth": "mean"}, "bandwidth"), ({"tile": 0}, "tile"), ({"n_pairs": 0}, "n_pairs"),
    ({"backend": "fortran"}, "backend"),
])
def test_bad_options(data, kwargs, match):
    x, y = data
    with pytest.raises(ValueError, match=match):
        pyckafast.rbf_cka(x, y, **kwargs)


def test_kernel_name_and_shapes(data):
    x, y = data
    with pytest.raises(ValueError, match="kernel"):
        pyckafast.cka(x, y, kernel="poly")
    with pytest.raises(ValueError, match="same number of samples"):
        pyckafast.rbf_cka(x, y[:-1])
    with pytest.raises(ValueError, match="at least 4"):
        pyckafast.rbf_cka(x[:3], y[:3], debiased=True)
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        pyckafast.rbf_cka(bad, y, sigma=1.0)


def test_all_points_equal(data):
    x, y = data
    const = np.ones_like(x) * 4.0
    with pytest.raises(ValueError, match="median squared distance"):
        pyckafast.rbf_cka(const, y)
    with pytest.warns(RuntimeWarning, match="not positive"):
        assert math.isnan(pyckafast.rbf_cka(const, y, sigma=1.0))


def test_wide_bandwidth_does_not_cancel():
    """threshold 1e3: K within 1e-7 of 1; the K - 1 accumulation keeps CKA at its limit, the
    linear CKA (the first-order term of the kernel in 1/sigma^2)."""
    x, y = correlated(np.random.default_rng(1), 120, 5, 3)
    got = pyckafast.rbf_cka(x, y, threshold=1e3)
    assert _rel(got, pyckafast.linear_cka(x, y)) <= 1e-5
