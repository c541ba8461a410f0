"""cka_test against float64 n x n oracles of the published permutation moments, full
enumeration and Monte Carlo; the incomplete gamma function against closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import pyckafast
from pyckafast._core.permutation_moments import gamma_p, gamma_q, pearson3_upper
from pyckafast.rbf import RBFOptions

# --- oracles: dense n x n matrices and the raw (uncentred) formulas ------------------------


def centred(k):
    h = np.eye(len(k)) - 1.0 / len(k)
    return h @ k @ h


def u_centred(k):
    """Szekely & Rizzo (2014), written out from the definition."""
    n = len(k)
    a = k - np.diag(np.diag(k))
    out = np.zeros_like(a)
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = (a[i, j] - a[i].sum() / (n - 2) - a[:, j].sum() / (n - 2)
                             + a.sum() / ((n - 1) * (n - 2)))
    return out


def useful(a):
    aa = a @ a
    d = np.diag(a)
    return dict(T=np.trace(a), T2=np.sum(a ** 2), S2=np.sum(d ** 2), T3=np.sum(aa * a),
                S3=np.sum(d ** 3), U=np.sum(a ** 3), R=d @ np.diag(aa), B=d @ a @ d)


def raw_moments(a, b):
    """E[T], E[T^2], E[T^3] of T = tr(A P B P'): Kazi-Aoual et al. (1995) as arranged by
    Bilodeau & Guetsop Nangue (2017), transcribed term by term with T != 0."""
    n = len(a)
    ua, ub = useful(a), useful(b)

    def p(f):
        return f(ua) * f(ub)

    m1 = p(lambda m: m["T"]) / n + p(lambda m: -m["T"]) / (n * (n - 1))
    m2 = (p(lambda m: m["S2"]) / n
          + (p(lambda m: m["T"] ** 2 - m["S2"]) + 2 * p(lambda m: m["T2"] - m["S2"])
             + 4 * p(lambda m: -m["S2"])) / (n * (n - 1))
          + (4 * p(lambda m: 2 * m["S2"] - m["T2"]) + 2 * p(lambda m: 2 * m["S2"] - m["T"] ** 2))
          / (n * (n - 1) * (n - 2))
          + p(lambda m: 2 * m["T2"] - 6 * m["S2"] + m["T"] ** 2) / (n * (n - 1) * (n - 2) * (n - 3)))
    T, T2, S2, T3, S3, U, R, B = "T", "T2", "S2", "T3", "S3", "U", "R", "B"
    sp = [
        p(lambda m: m[S3]) / n,
        (4 * p(lambda m: -m[S3] + m[U]) + 3 * p(lambda m: m[T] * m[S2] - m[S3])
         + 6 * p(lambda m: -m[S3]) + 12 * p(lambda m: -m[S3] + m[R])
         + 6 * p(lambda m: -m[S3] + m[B])) / (n * (n - 1)),
        (3 * p(lambda m: -m[T] * m[S2] + 2 * m[S3])
         + p(lambda m: m[T] ** 3 - 3 * m[T] * m[S2] + 2 * m[S3])
         + 12 * p(lambda m: -m[T] * m[S2] + 2 * m[S3] - m[B]) + 12 * p(lambda m: 2 * m[S3] - m[R])
         + 24 * p(lambda m: 2 * m[S3] - m[R] - m[B])
         + 6 * p(lambda m: m[T] * (m[T2] - m[S2]) + 2 * m[S3] - 2 * m[R])
         + 24 * p(lambda m: 2 * m[S3] - m[U] - m[R])
         + 8 * p(lambda m: m[T3] + 2 * m[S3] - 3 * m[R])) / (n * (n - 1) * (n - 2)),
        (12 * p(lambda m: m[T] * m[S2] - 6 * m[S3] + 2 * m[R] + 2 * m[B])
         + 6 * p(lambda m: m[T] * (-m[T2] + m[S2]) - 6 * m[S3] + 2 * m[U] + 4 * m[R])
         + 3 * p(lambda m: -m[T] ** 3 + 5 * m[T] * m[S2] - 6 * m[S3] + 2 * m[B])
         + 12 * p(lambda m: m[T] * (-m[T2] + 2 * m[S2]) - 6 * m[S3] + 3 * m[R] + 2 * m[B])
         + 8 * p(lambda m: -6 * m[S3] + 2 * m[U] + 3 * m[R])
         + 24 * p(lambda m: -m[T3] - 6 * m[S3] + m[U] + 5 * m[R] + m[B]))
        / (n * (n - 1) * (n - 2) * (n - 3)),
        (3 * p(lambda m: m[T] ** 3 + 2 * m[T] * (m[T2] - 5 * m[S2]) + 24 * m[S3] - 8 * m[R] - 8 * m[B])
         + 12 * p(lambda m: m[T] * (m[T2] - 2 * m[S2]) + 2 * m[T3] + 24 * m[S3] - 4 * m[U]
                  - 16 * m[R] - 4 * m[B])) / (n * (n - 1) * (n - 2) * (n - 3) * (n - 4)),
        p(lambda m: -m[T] ** 3 - 6 * m[T] * (m[T2] - 3 * m[S2]) - 8 * m[T3] - 120 * m[S3]
          + 16 * m[U] + 72 * m[R] + 24 * m[B]) / (n * (n - 1) * (n - 2) * (n - 3) * (n - 4) * (n - 5)),
    ]
    return m1, m2, sum(sp)


def grams(x, y, kernel):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if kernel == "linear":
        return x @ x.T, y @ y.T
    gx, gy = RBFOptions.of().gammas(x, y)

    def rbf(a, g):
        d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        return np.exp(-g * d)

    return rbf(x, gx), rbf(y, gy)


def oracle(x, y, kernel, debiased):
    """(cka, mean, var, skew) of CKA under permutation, from the dense matrices."""
    k, l = grams(x, y, kernel)
    f = u_centred if debiased else centred
    a, b = f(k), f(l)
    scale = math.sqrt(np.sum(a * a) * np.sum(b * b))
    m1, m2, m3 = raw_moments(a, b)
    var = m2 - m1 ** 2
    skew = (m3 - 3 * var * m1 - m1 ** 3) / var ** 1.5
    return np.sum(a * b) / scale, m1 / scale, var / scale ** 2, skew, (a, b, scale)


def data(n, seed=0, mean=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + mean
    y = np.column_stack([np.tanh(x[:, 0] - mean) + 0.7 * rng.normal(size=n),
                         rng.standard_exponential(n)]) + mean
    return x.astype(dtype), y.astype(dtype)


KERNELS = [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)]


# --- the incomplete gamma function -----------------------------------------------------------

@pytest.mark.parametrize("a,x", [(1.0, 0.3), (1.0, 7.0), (3.0, 1.0), (3.0, 12.0), (10.0, 9.5),
                                 (25.0, 40.0)])
def test_gamma_q_equals_the_closed_form_of_integer_shapes(a, x):
    # Q(k, x) = exp(-x) sum_{j<k} x^j / j!
    expected = math.exp(-x) * sum(x ** j / math.factorial(j) for j in range(int(a)))
    assert gamma_q(a, x) == pytest.approx(expected, rel=1e-13)
    assert gamma_p(a, x) + gamma_q(a, x) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("x", [1e-4, 0.2, 1.3, 4.0, 30.0])
def test_gamma_p_of_half_is_erf(x):
    assert gamma_p(0.5, x) == pytest.approx(math.erf(math.sqrt(x)), rel=1e-13)
    assert gamma_q(0.5, x) == pytest.approx(math.erfc(math.sqrt(x)), rel=1e-12)


def test_pearson3_tends_to_the_normal_and_its_limits():
    for z in (-2.0, 0.3, 3.0):
        assert pearson3_upper(z, 1e-4) == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-3)
    # skew 2: Z = G - 1 with G exponential, so P(Z >= z) = exp(-(z + 1)).
    assert pearson3_upper(1.5, 2.0) == pytest.approx(math.exp(-2.5), rel=1e-13)
    assert pearson3_upper(-1.5, 2.0) == 1.0  # below the support
    assert pearson3_upper(1.5, -2.0) == 0.0


def test_gamma_rejects_bad_arguments():
    with pytest.raises(ValueError, match="a > 0"):
        gamma_p(0.0, 1.0)


# --- moments against the dense oracle --------------------------------------------------------

@pytest.mark.parametrize("kernel,debiased", KERNELS)
def test_moments_equal_the_dense_reference(kernel, debiased):
    x, y = data(30)
    cka, mean, var, skew, _ = oracle(x, y, kernel, debiased)
    r = pyckafast.cka_test(x, y, kernel=kernel, debiased=debiased, method="moments",
                           third_moment=True)
    assert r.cka == pytest.approx(cka, rel=1e-10)
    assert r.null_var == pytest.approx(var, rel=1e-10)
    assert r.null_skew == pytest.approx(skew, rel=1e-10)
    if debiased:
        assert abs(r.null_mean) < 1e-12 and abs(mean) < 1e-12
    else:
        assert r.null_mean == pytest.approx(mean, rel=1e-10)
    z = (cka - mean) / math.sqrt(var)
    assert r.zscore == pytest.approx(z, rel=1e-9)
    assert r.pvalue == pytest.approx(pearson3_upper(z, skew), rel=1e-10)
    assert r.approximation == "pearson3"


@pytest.mark.parametrize("kernel,debiased", KERNELS)
def test_two_moments_need_no_dense_pass_and_are_exact(kernel, debiased):
    x, y = data(25, seed=3)
    _, mean, var, _, _ = oracle(x, y, kernel, debiased)
    r = pyckafast.cka_test(x, y, kernel=kernel, debiased=debiased, method="moments",
                           third_moment=False)
    assert r.null_var == pytest.approx(var, rel=1e-10)
    assert r.null_mean == pytest.approx(mean, rel=1e-10, abs=1e-13)
    assert math.isnan(r.null_skew)
    assert r.approximation == ("normal" if debiased else "gamma2")
    if not debiased:  # gamma on [0, inf) with these two moments
        assert r.pvalue == pytest.approx(pearson3_upper(r.zscore, 2 * math.sqrt(var) / mean),
                                         rel=1e-12)


def test_linear_third_moment_of_float32_data_with_a_large_mean():
    x, y = data(400, seed=5)
    r64 = pyckafast.cka_test(x, y, method="moments", third_moment=True)
    x32, y32 = (x + 100).astype(np.float32), (y + 100).astype(np.float32)
    r32 = pyckafast.cka_test(x32, y32, method="moments", third_moment=True)
    # The float32 rows themselves differ from the float64 ones by ~1e-6 of the spread.
    for f in ("cka", "null_mean", "null_var", "null_skew"):
        assert getattr(r32, f) == pytest.approx(getattr(r64, f), rel=1e-4)


def test_moments_of_a_memmap_equal_those_of_the_array(tmp_path):
    x, y = data(200, seed=6)
    mx = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    mx[:] = x
    mx.flush()
    for debiased in (False, True):
        a = pyckafast.cka_test(mx, y, method="moments", third_moment=True, debiased=debiased)
        b = pyckafast.cka_test(x, y, method="moments", third_moment=True, debiased=debiased)
        assert a.null_skew == pytest.approx(b.null_skew, rel=1e-12)


# --- enumeration ------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,debiased", KERNELS)
@pytest.mark.parametrize("n", [6, 8])
def test_exact_equals_full_enumeration(kernel, debiased, n):
    x, y = data(n, seed=n)
    cka, mean, var, skew, (a, b, scale) = oracle(x, y, kernel, debiased)
    values = np.array([np.sum(a * b[np.ix_(p, p)]) for p in itertools.permutations(range(n))])
    values /= scale
    r = pyckafast.cka_test(x, y, kernel=kernel, debiased=debiased)  # auto: exact for n <= 8
    assert r.method == "exact" and r.n_permutations == math.factorial(n)
    assert r.pvalue == np.count_nonzero(values >= values[0] - 1e-11) / len(values)
    assert r.null_var == pytest.approx(values.var(), rel=1e-10)
    assert r.null_var == pytest.approx(var, rel=1e-10)  # and the formulas agree
    if n >= 6:
        assert r.null_skew == pytest.approx(skew, rel=1e-8)


def test_exact_refuses_large_n():
    x, y = data(10)
    with pytest.raises(ValueError, match="n <= 9"):
        pyckafast.cka_test(x, y, method="exact")


# --- explicit permutations ---------------------------------------------------------------------

@pytest.mark.parametrize("kernel,debiased", KERNELS)
def test_monte_carlo_moments_within_their_standard_error(kernel, debiased):
    x, y = data(24, seed=11)
    _, mean, var, _, _ = oracle(x, y, kernel, debiased)
    b = 3000 if kernel == "linear" else 400
    r = pyckafast.cka_test(x, y, kernel=kernel, debiased=debiased, method="permutation",
                           n_permutations=b, seed=4)
    assert r.n_permutations == b
    assert abs(r.null_mean - mean) < 4 * math.sqrt(var / b)
    # sd of a sample variance ~ var sqrt((kurtosis - 1) / B); kurtosis of these laws < 6
    assert abs(r.null_var - var) < 4 * var * math.sqrt(5.0 / b)
    # and the third: the sd of a sample skewness is sqrt(6 / B) for normal data, larger here
    skew = oracle(x, y, kernel, debiased)[3]
    assert abs(r.null_skew - skew) < 5 * math.sqrt(15.0 / b)


def test_permutation_pvalue_formula_and_seed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = rng.normal(size=(50, 2))
    r1 = pyckafast.cka_test(x, y, method="permutation", n_permutations=199, seed=7)
    r2 = pyckafast.cka_test(x, y, method="permutation", n_permutations=199, seed=7)
    assert r1 == r2
    # p = (1 + #{T_b >= T}) / (1 + B): a multiple of 1/200
    assert round(r1.pvalue * 200) == pytest.approx(r1.pvalue * 200, abs=1e-9)
    strong = pyckafast.cka_test(x, x + 0.01 * y[:, :1], method="permutation", n_permutations=99,
                                seed=1)
    assert strong.pvalue == 0.01


def test_permutations_are_the_same_on_every_backend():
    x, y = data(300, seed=2)
    y = y + 0.05 * x[:, :2]
    backends = [b for b in ("numpy", "numba", "cpp")
                if pyckafast._core.dispatch.probe(b) is None]
    results = {b: pyckafast.cka_test(x, y, method="permutation", n_permutations=300, seed=3,
                                     backend=b) for b in backends}
    first = results[backends[0]]
    for r in results.values():
        assert r.pvalue == first.pvalue
        assert r.null_mean == pytest.approx(first.null_mean, rel=1e-9)


# --- inputs, maps, streaming ------------------------------------------------------------------

def test_dask_input_gives_two_moments_and_refuses_permutations():
    da = pytest.importorskip("dask.array")
    x, y = data(200, seed=1)
    dx, dy = da.from_array(x, chunks=64), da.from_array(y, chunks=64)
    r = pyckafast.cka_test(dx, dy, method="moments")
    ref = pyckafast.cka_test(x, y, method="moments", third_moment=False)
    assert r.null_var == pytest.approx(ref.null_var, rel=1e-10)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-8)
    with pytest.raises(ValueError, match="NumPy arrays"):
        pyckafast.cka_test(dx, dy, method="permutation", n_permutations=9)


def test_options_of_the_other_kernel_are_errors():
    x, y = data(20)
    with pytest.raises(ValueError, match="sigma"):
        pyckafast.cka_test(x, y, sigma=1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        pyckafast.cka_test(x, y, kernel="rbf", chunk_size=10)
    with pytest.raises(ValueError, match="method"):
        pyckafast.cka_test(x, y, method="bootstrap")


@pytest.mark.parametrize("debiased", [False, True])
def test_matrix_test_shares_each_layers_moments(debiased, monkeypatch):
    # One pass over all layers (as cka_matrix), not one per pair; the same tests as pair by pair.
    from pyckafast import significance

    calls = []
    real = significance._linear_terms
    monkeypatch.setattr(significance, "_linear_terms",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3)) + 50.0
    xs = [x, x[:, :2] ** 2 + rng.normal(size=(300, 2)), rng.normal(size=(300, 4))]
    ys = [np.tanh(x) + 0.5 * rng.normal(size=(300, 3)), rng.normal(size=(300, 1))]
    sym = pyckafast.cka_matrix_test(xs, debiased=debiased)
    two = pyckafast.cka_matrix_test(xs, ys, debiased=debiased, method="permutation",
                                    n_permutations=30, seed=4)
    assert calls == []
    monkeypatch.setattr(significance, "_linear_terms", real)
    for i, a in enumerate(xs):
        for j, b in enumerate(xs):
            ref = pyckafast.cka_test(a, b, debiased=debiased)
            assert sym.cka[i, j] == pytest.approx(ref.cka, rel=1e-10)
            assert sym.pvalue[i, j] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
        for j, b in enumerate(ys):
            ref = pyckafast.cka_test(a, b, debiased=debiased, method="permutation",
                                     n_permutations=30, seed=4)
            assert two.cka[i, j] == pytest.approx(ref.cka, rel=1e-10)
            assert two.pvalue[i, j] == ref.pvalue


def test_matrix_test_checks_the_options_once():
    x, y = data(20, seed=1)
    with pytest.raises(TypeError, match="options of cka_test"):
        pyckafast.cka_matrix_test([x], [y], n_perms=10)
    with pytest.raises(ValueError, match="n_permutations"):
        pyckafast.cka_matrix_test([x], [y], n_permutations=0)


def test_rbf_explicit_sigma_is_honoured():
    x, y = data(30, seed=9)
    r = pyckafast.cka_test(x, y, kernel="rbf", sigma=(1.5, 0.7), method="moments")
    assert r.cka == pytest.approx(pyckafast.rbf_cka(x, y, sigma=(1.5, 0.7)), rel=1e-12)


def test_matrix_test_equals_the_pairwise_tests():
    x, y = data(40, seed=4)
    z = np.random.default_rng(8).normal(size=(40, 2))
    m = pyckafast.cka_matrix_test([x, y], [y, z], method="moments")
    assert m.cka.shape == m.pvalue.shape == (2, 2)
    assert m.pvalue[1, 1] == pytest.approx(pyckafast.cka_test(y, z, method="moments").pvalue,
                                           rel=1e-10)
    sym = pyckafast.cka_matrix_test([x, y, z], method="moments")
    assert np.allclose(sym.pvalue, sym.pvalue.T) and np.allclose(np.diag(sym.cka), 1.0)


@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_state_test_equals_the_two_moment_test(debiased):
    x, y = data(300, seed=12)
    state = pyckafast.LinearCKAState()
    for lo in range(0, 300, 70):
        state.update(x[lo:lo + 70] + 50, y[lo:lo + 70])
    r = state.test(debiased=debiased)
    ref = pyckafast.cka_test(x, y, debiased=debiased, method="moments", third_moment=False)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-8)
    assert r.null_var == pytest.approx(ref.null_var, rel=1e-10)
    with pytest.raises(ValueError, match="no samples"):
        pyckafast.LinearCKAState().test()


@pytest.mark.parametrize("method", ["moments", "permutation", "exact"])
def test_zero_variance_gives_an_undefined_test_with_the_cka_warning(method):
    x = np.ones((8, 2))
    y = np.random.default_rng(0).normal(size=(8, 2))
    with pytest.warns(RuntimeWarning, match="zero variance"):
        r = pyckafast.cka_test(x, y, method=method, n_permutations=9)
    assert math.isnan(r.cka) and math.isnan(r.pvalue) and r.approximation == "undefined"
