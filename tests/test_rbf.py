"""RBF CKA/HSIC against the float64 n x n reference (tests/_reference.py), over the matrix
device x backend x dtype x shape (tests/conftest.py), every threshold and both estimators.

Tolerances: float64 1e-10. float32 (data with a column mean of 1e3) 1e-4: the distances come
from float32 GEMMs on centred data, so gamma * d2 carries an absolute error of about
eps32 * (|a|^2 + |b|^2) / (2 threshold^2 median) ~ 6e-8 * 2 / threshold^2, i.e. 3e-6 at the
narrowest threshold 0.2; 1e-4 keeps a 30x margin over that while a float32 result gone wrong
(1e-3 and worse) fails. Narrower bandwidths (down to 0.05) and the error bound: test_rbf_narrow.py.
"""

import math

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch as _dispatch, combine as _combine
from pyckafast._core.pairs import CentredSide
from pyckafast._core.rbf_entry import RbfKernel
from pyckafast._cpu import rbf as cpu_rbf
from pyckafast._cpu.producers import rbf_producer
from _reference import correlated_tanh, cka_from_grams, hsic, rbf_cka_ref, rbf_gram

THRESHOLDS = [0.2, 0.5, 1.0, 2.0, 5.0]
MEAN = {np.float64: 3.0, np.float32: 1e3}
TOL = {np.float64: 1e-10, np.float32: 1e-4}
# (n, dx, dy, tile): n not a multiple of the tile (ragged last tile), p > n, the debiased
# minimum n = 4 (one tile), one feature against two.
SHAPES = [
    pytest.param((150, 12, 6, 64), id="n150-dx12-dy6-tile64"),
    pytest.param((40, 90, 120, 16), id="n40-dx90-dy120-tile16"),
    pytest.param((4, 3, 2, None), id="n4-dx3-dy2"),
    pytest.param((61, 1, 2, 16), id="n61-dx1-dy2-tile16"),
]
DEBIASED = pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])

def _rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def data():
    return correlated_tanh(np.random.default_rng(7), 203, 12, 6)


@pytest.fixture
def backend(cpu_backend):
    """The CPU-internal tests (tiles, block pairs): every CPU backend, conftest's rule for a
    missing build."""
    return cpu_backend


@DEBIASED
@pytest.mark.parametrize("threshold", THRESHOLDS, ids=[f"threshold{t}" for t in THRESHOLDS])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(target, dtype, shape, threshold, debiased, rng):
    n, dx, dy, tile = shape
    x, y = correlated_tanh(rng, n, dx, dy, mean=MEAN[dtype], dtype=dtype)
    got = pyckafast.rbf_cka(target.on(x), target.on(y), threshold=threshold, debiased=debiased,
                            backend=target.backend, tile=tile)
    assert _rel(got, rbf_cka_ref(x, y, threshold, debiased=debiased)) <= TOL[dtype]


@pytest.mark.parametrize("rule", ["kornblith", "offdiag"])
@DEBIASED
def test_bandwidth_rules_match_reference(target, dtype, rule, debiased):
    x, y = correlated_tanh(np.random.default_rng(7), 150, 12, 6, mean=MEAN[dtype], dtype=dtype)
    got = pyckafast.rbf_cka(target.on(x), target.on(y), bandwidth=rule, threshold=0.5,
                            debiased=debiased, backend=target.backend, tile=64)
    assert _rel(got, rbf_cka_ref(x, y, 0.5, rule, debiased)) <= TOL[dtype]


def test_explicit_sigma_and_hsic_value(target, dtype):
    x, y = correlated_tanh(np.random.default_rng(7), 203, 12, 6, mean=MEAN[dtype], dtype=dtype)
    k, l = rbf_gram(x, sigma=3.0), rbf_gram(y, sigma=1.5)
    gx, gy = target.on(x), target.on(y)
    for debiased in (False, True):
        got = pyckafast.rbf_hsic(gx, gy, sigma=(3.0, 1.5), debiased=debiased,
                                 backend=target.backend)
        assert _rel(got, hsic(k, l, debiased)) <= TOL[dtype]
        got = pyckafast.hsic(gx, gy, kernel="rbf", sigma=(3.0, 1.5), debiased=debiased,
                             backend=target.backend)
        assert _rel(got, hsic(k, l, debiased)) <= TOL[dtype]
    got = pyckafast.rbf_cka(gx, gy, sigma=(3.0, 1.5), backend=target.backend)
    assert _rel(got, cka_from_grams(k, l)) <= TOL[dtype]


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
        assert (got.const_diag_k, got.log2_k) == (ref.const_diag_k, ref.log2_k)
        # Row sums of K - c (c the typical entry) are sums of both signs: compared to their scale.
        np.testing.assert_allclose(got.row_k, ref.row_k, rtol=1e-12,
                                   atol=1e-12 * np.abs(ref.row_k).max())


def _sides(x, y):
    """x and y rows as centred sides with a zero shift (the data are already near 0)."""
    return tuple(CentredSide(a, np.zeros(a.shape[1]), a.dtype, name) for a, name in ((x, "x"), (y, "y")))


def test_block_pair_contract(data, backend):
    """Off-diagonal pairs: row and column sums of E; diagonal pairs: all ordered pairs i != j.
    x: E = 2^5 K - 0.3 (a scaled, shifted kernel), y: a bare gamma, F = L - 1."""
    x, y = data
    xa, ya, xb, yb = x[:30], y[:30], x[30:75], y[30:75]
    gx, gy = 0.04, 0.3
    kx = RbfKernel(gx, 0.3, 5)
    ops = _dispatch.resolve(backend, "rbf_tile")
    e = np.ldexp(np.exp(-gx * ((xa[:, None] - xb[None]) ** 2).sum(-1)), 5) - 0.3
    f = np.expm1(-gy * ((ya[:, None] - yb[None]) ** 2).sum(-1))
    p = cpu_rbf.set_pair_terms(_sides(xa, ya), _sides(xb, yb), kernel_x=kx, kernel_y=gy,
                                   ops=ops, tile=7)
    assert _rel(p.s_kl, (e * f).sum()) <= 1e-10 and _rel(p.s_ll, (f * f).sum()) <= 1e-10
    np.testing.assert_allclose(p.row_k_a, e.sum(1), rtol=1e-10)
    np.testing.assert_allclose(p.row_l_b, f.sum(0), rtol=1e-10)
    e = np.ldexp(np.exp(-gx * ((xa[:, None] - xa[None]) ** 2).sum(-1)), 5) - 0.3
    np.fill_diagonal(e, 0.0)  # the diagonal 2^m - c is the host's, never summed
    d = cpu_rbf.set_pair_terms(_sides(xa, ya), None, kernel_x=kx, kernel_y=gy, ops=ops,
                                   tile=7)
    assert _rel(d.s_kk, (e * e).sum()) <= 1e-10
    np.testing.assert_allclose(d.row_k_a, e.sum(1), rtol=1e-10)
    assert not d.row_k_b.any()


def test_expm1_kernel_accuracy():
    """The branch-free expm1 of rbf_pair.h (through the C++ and Numba tiles) against np.expm1."""
    d2 = np.concatenate([[0.0], np.geomspace(1e-12, 800.0, 4000)])
    g = np.zeros((1, d2.size))
    for name in ("cpp", "numba"):
        ops = _dispatch.resolve(name, "rbf_tile")
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
    ops = _dispatch.resolve("numba", "rbf_tile")
    _, _, _, _, _, col_k, _ = ops.rbf_tile(g, g, np.zeros(1), np.zeros(1), d2, d2, 1.0, 1.0, False)
    np.testing.assert_array_equal(col_k, ext.expm1_neg_f64(-d2, False))


def test_non_contiguous_and_fortran_inputs(data, target):
    x, y = data
    xp = target.xp
    gx, gy = target.on(x), target.on(y)
    expected = pyckafast.rbf_cka(gx, gy, debiased=True, backend=target.backend)
    assert _rel(expected, rbf_cka_ref(x, y, debiased=True)) <= 1e-10
    wide = xp.zeros((x.shape[0], 2 * x.shape[1]))
    wide[:, ::2] = gx
    got = pyckafast.rbf_cka(wide[:, ::2], xp.asfortranarray(gy), debiased=True,
                            backend=target.backend)
    assert _rel(got, expected) <= 1e-12
    got = pyckafast.rbf_cka(gx[::-1], gy[::-1], debiased=True, backend=target.backend)
    assert _rel(got, expected) <= 1e-10


def test_identical_and_transformed_inputs(data, target):
    x, _ = data
    gx = target.on(x)
    kw = dict(backend=target.backend)
    assert pyckafast.rbf_cka(gx, gx, **kw) == pytest.approx(1.0, abs=1e-12)
    assert pyckafast.cka(gx, 3.0 * gx - 2.0, kernel="rbf", debiased=True, **kw) == pytest.approx(1.0)
    assert pyckafast.cka(gx, gx[:, :5], **kw) == pytest.approx(pyckafast.linear_cka(x, x[:, :5]))


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


def test_all_points_equal(data, target):
    """No variance: CKA is undefined, nan with a warning, with the median rule or a sigma (as
    linear CKA); most points equal but not all: the median bandwidth would be 0, which raises."""
    x, y = data
    const = target.on(np.ones_like(x) * 4.0)
    for kwargs in ({}, {"sigma": 1.0}):
        with pytest.warns(RuntimeWarning, match="not positive"):
            assert math.isnan(pyckafast.rbf_cka(const, target.on(y), backend=target.backend,
                                                **kwargs))
        # exactly 0, not a rounding residue of cancelling terms (that depends on the backend's
        # summation order, e.g. its SIMD width: AVX2 left +1e-13 and CKA 0.0 without a warning)
        assert pyckafast.rbf_hsic(const, const, backend=target.backend, **kwargs) == 0.0
    mostly = np.ones_like(x) * 4.0
    mostly[:5] += np.arange(5)[:, None]
    with pytest.raises(ValueError, match="median squared distance"):
        pyckafast.rbf_cka(target.on(mostly), target.on(y), backend=target.backend)


def test_wide_bandwidth_does_not_cancel(target, dtype):
    """threshold 1e3: K within 1e-7 of 1; the K - 1 accumulation keeps CKA at its limit, the
    linear CKA (the first-order term of the kernel in 1/sigma^2)."""
    x, y = correlated_tanh(np.random.default_rng(1), 120, 5, 3, mean=MEAN[dtype], dtype=dtype)
    got = pyckafast.rbf_cka(target.on(x), target.on(y), threshold=1e3, backend=target.backend)
    assert _rel(got, pyckafast.linear_cka(x, y, backend="numpy")) <= 1e-5


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("side", ["x", "y"])
@pytest.mark.parametrize("kwargs", [{}, {"sigma": 1.0}, {"bandwidth": "sampled"}])
def test_non_finite_names_the_argument_and_row(data, target, bad, side, kwargs):
    x, y = (a.copy() for a in data)
    (x if side == "x" else y)[117, 2] = bad
    with pytest.raises(ValueError, match=f"^{side} must contain only finite values; found NaN or "
                                         "Inf in row 117"):
        pyckafast.rbf_cka(target.on(x), target.on(y), backend=target.backend, **kwargs)


@pytest.mark.parametrize("side", ["x", "y"])
def test_minibatch_rbf_non_finite_names_the_argument_and_row(data, side):
    x, y = (a.copy() for a in data)
    (x if side == "x" else y)[150, 0] = np.nan
    with pytest.raises(ValueError, match=f"^{side} must contain only finite values; found NaN or "
                                         "Inf in row 150"):
        pyckafast.minibatch_cka(x, y, batch_size=50, kernel="rbf", seed=None)


@pytest.mark.parametrize("dtype, c, m", [(np.float64, 1.0, 0), (np.float64, 0.8, 7),
                                         (np.float64, 1.3, 380), (np.float32, 1.0, 0),
                                         (np.float32, 0.9, 90)])
def test_shifted_entry_error_bound(dtype, c, m):
    """E = 2^m exp(-d2) - c from the kernels' shared math (C++ scalar/vector lanes through
    rbf_tile, Numba) within the stated bound 4 eps (2^m K + |E|) of a long double reference,
    over d2 from 0 to past the clamp (where 2^m K < exp(kMin): E is -c within that bound)."""
    eps = float(np.finfo(dtype).eps)
    d2 = np.concatenate([[0.0], np.geomspace(1e-9, 5.0 * m + 900.0, 3000)]).astype(dtype)
    k = np.ldexp(np.exp(-d2.astype(np.longdouble)), m)
    want = k - np.longdouble(dtype(c))
    bound = 4 * eps * (k + np.abs(want)) + 2.0 * np.exp(-87.0 if dtype == np.float32 else -708.0)
    g, zero = np.zeros((1, d2.size), dtype), np.zeros(1, dtype)
    for name in ("cpp", "numba") if dtype == np.float64 else ("cpp",):
        ops = _dispatch.resolve(name, "rbf_tile")
        col = ops.rbf_tile(g, g, zero, zero, d2, d2, (1.0, c, m), (1.0, c, m), False)[5]
        assert np.all(np.abs(col - want) <= bound), name
