"""Self-checks of tests/_reference.py against independent closed forms (no library code): the
library is tested against this module, so this module is tested against the definitions."""

from fractions import Fraction
from itertools import permutations

import numpy as np
import pytest

import _reference as ref


# ---- exact arithmetic on a tiny integer example -----------------------------------------------

K_INT = [[4, 1, 0, 2, 3],
         [1, 5, 2, 0, 1],
         [0, 2, 6, 1, 0],
         [2, 0, 1, 3, 2],
         [3, 1, 0, 2, 7]]
L_INT = [[2, 0, 1, 1, 0],
         [0, 3, 1, 2, 1],
         [1, 1, 4, 0, 2],
         [1, 2, 0, 5, 1],
         [0, 1, 2, 1, 1]]


def _unbiased_u_statistic(k, l):
    """Song et al. (2012), Theorem 3: HSIC_u is the U-statistic with kernel
    h(i, j, q, r) = k_ij l_ij + k_ij l_qr - 2 k_ij l_iq averaged over ordered distinct
    quadruples (the average over all orderings is the symmetrised kernel). Exact fractions."""
    n = len(k)
    quads = list(permutations(range(n), 4))
    total = sum(Fraction(k[i][j] * l[i][j] + k[i][j] * l[q][r] - 2 * k[i][j] * l[i][q])
                for i, j, q, r in quads)
    return total / len(quads)


def _biased_v_expansion(k, l):
    """tr(KHLH) = sum K.L - (2/n) (K1).(L1) + (1'K1)(1'L1)/n^2, over (n - 1)^2. Exact."""
    n = len(k)
    kl = sum(Fraction(k[i][j] * l[i][j]) for i in range(n) for j in range(n))
    rk = [sum(row) for row in k]
    rl = [sum(row) for row in l]
    cross = sum(Fraction(a * b) for a, b in zip(rk, rl))
    return (kl - Fraction(2, n) * cross + Fraction(sum(rk) * sum(rl), n * n)) / (n - 1) ** 2


def test_unbiased_hsic_equals_the_u_statistic_in_exact_fractions():
    k, l = np.array(K_INT, float), np.array(L_INT, float)
    for a, b, ka, kb in ((k, l, K_INT, L_INT), (k, k, K_INT, K_INT), (l, l, L_INT, L_INT)):
        exact = _unbiased_u_statistic(ka, kb)
        assert ref.hsic_unbiased(a, b) == pytest.approx(float(exact), rel=1e-14, abs=1e-15)
    # the example is not degenerate: the value is a non-trivial fraction
    assert _unbiased_u_statistic(K_INT, L_INT) not in (0, 1)


def test_biased_hsic_equals_the_v_expansion_in_exact_fractions():
    k, l = np.array(K_INT, float), np.array(L_INT, float)
    exact = _biased_v_expansion(K_INT, L_INT)
    assert ref.hsic_biased(k, l) == pytest.approx(float(exact), rel=1e-14)
    assert ref.hsic(k, l, debiased=False) == ref.hsic_biased(k, l)
    assert ref.hsic(k, l, debiased=True) == ref.hsic_unbiased(k, l)


def test_unbiased_hsic_equals_u_centred_gram_form(rng):
    """Second independent form: the U-centred Grams of Kornblith et al.'s colab
    (center_gram(unbiased=True)), <K~u, L~u> / (n(n-3))."""
    n = 11
    k = rng.normal(size=(n, n))
    k = k @ k.T
    l = np.tanh(k) + rng.normal(size=(n, n)) * 0.1
    l = (l + l.T) / 2

    def u_centre(g):
        g = g.copy()
        np.fill_diagonal(g, 0)
        means = g.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g -= means[:, None] + means[None, :]
        np.fill_diagonal(g, 0)
        return g

    assert ref.hsic_unbiased(k, l) == pytest.approx((u_centre(k) * u_centre(l)).sum() / (n * (n - 3)),
                                                    rel=1e-12)


# ---- linear CKA: Gram form against the feature-space closed forms -----------------------------

@pytest.mark.parametrize("n, p1, p2", [(30, 4, 3), (6, 9, 2), (4, 1, 1)], ids=str)
def test_biased_linear_hsic_is_cross_covariance_norm(rng, n, p1, p2):
    x, y = ref.correlated_linear(rng, n, p1, p2, mean=5.0)
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert ref.linear_hsic_ref(x, y) == pytest.approx(
        np.linalg.norm(xc.T @ yc) ** 2 / (n - 1) ** 2, rel=1e-12)


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
@pytest.mark.parametrize("n, p1, p2", [(40, 5, 3), (7, 12, 9), (4, 3, 2)], ids=str)
def test_linear_cka_gram_form_equals_feature_space_form(rng, n, p1, p2, debiased):
    x, y = ref.correlated_linear(rng, n, p1, p2, mean=-3.0)
    assert ref.linear_cka_ref(x, y, debiased) == pytest.approx(
        ref.linear_cka_feature_space(x, y, debiased), rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_cka_invariances_and_identity(rng, debiased):
    x, y = ref.correlated_linear(rng, 25, 4, 3)
    base = ref.linear_cka_ref(x, y, debiased)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert ref.linear_cka_ref(3.0 * x @ q + 7.0, y, debiased) == pytest.approx(base, rel=1e-12)
    assert ref.linear_cka_ref(x, x, debiased) == pytest.approx(1.0, rel=1e-14)
    assert ref.rbf_cka_ref(x, x, debiased=debiased) == pytest.approx(1.0, rel=1e-14)
    assert 0.0 < base < 1.0


def test_subtracting_a_constant_from_kernels_changes_no_estimator(rng):
    """Why the RBF producers may accumulate E = K - 1 instead of K, and why hsic_unbiased may
    shift by the mean off-diagonal entry: exact for both definitions, in fractions."""
    shifted = [[v - 3 for v in row] for row in K_INT]
    assert _unbiased_u_statistic(shifted, L_INT) == _unbiased_u_statistic(K_INT, L_INT)
    assert _biased_v_expansion(shifted, L_INT) == _biased_v_expansion(K_INT, L_INT)
    n = 19
    x = rng.normal(size=(n, 3))
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    k, l = np.exp(-d / 4), np.exp(-d / 9)
    np.testing.assert_allclose(ref.hsic_biased(k - 1, l - 1), ref.hsic_biased(k, l), rtol=1e-10)


# ---- RBF pieces ------------------------------------------------------------------------------

def test_medians_of_a_hand_example():
    x = np.array([[0.0], [1.0], [3.0]])  # squared distances 1, 9, 4 (and three diagonal zeros)
    np.testing.assert_array_equal(ref.sq_distances(x), [[0, 1, 9], [1, 0, 4], [9, 4, 0]])
    assert ref.median_sq(x, "kornblith") == 1.0  # of [0, 0, 0, 1, 1, 4, 4, 9, 9]
    assert ref.median_sq(x, "offdiag") == 4.0  # of [1, 9, 4]
    with pytest.raises(ValueError, match="rule"):
        ref.median_sq(x, "mean")


def test_rbf_gram_entries_and_threshold(rng):
    x = rng.normal(size=(9, 3)) + 100.0
    i, j = 2, 7
    k = ref.rbf_gram(x, sigma=1.7)
    assert k[i, j] == pytest.approx(np.exp(-np.sum((x[i] - x[j]) ** 2) / (2 * 1.7 ** 2)), rel=1e-14)
    np.testing.assert_array_equal(np.diag(k), 1.0)
    for rule in ref.RULES:
        sigma = 0.5 * np.sqrt(ref.median_sq(x, rule))
        np.testing.assert_allclose(ref.rbf_gram(x, 0.5, rule), ref.rbf_gram(x, sigma=sigma),
                                   rtol=1e-14)


def test_rbf_sigma_pair_means_one_per_side(rng):
    x, y = ref.correlated_tanh(rng, 12, 3, 2)
    k, l = ref.rbf_gram(x, sigma=2.0), ref.rbf_gram(y, sigma=0.5)
    for debiased in (False, True):
        assert ref.rbf_cka_ref(x, y, sigma=(2.0, 0.5), debiased=debiased) == ref.cka_from_grams(
            k, l, debiased)
        assert ref.rbf_hsic_ref(x, y, sigma=(2.0, 0.5), debiased=debiased) == ref.hsic(k, l, debiased)
    assert ref.rbf_cka_ref(x, y, sigma=2.0) == ref.cka_from_grams(k, ref.rbf_gram(y, sigma=2.0))


def test_kernel_terms_are_the_sums_of_k_minus_one(rng):
    x, y = ref.correlated_tanh(rng, 10, 3, 2, mean=50.0)
    gx, gy = 0.2, 0.7
    t = ref.kernel_terms_brute(x, y, gx, gy)
    e, f = ref.rbf_gram(x, sigma=np.sqrt(0.5 / gx)) - 1, ref.rbf_gram(y, sigma=np.sqrt(0.5 / gy)) - 1
    assert t.n == 10
    assert t.s_kl == pytest.approx((e * f).sum(), rel=1e-12)
    assert t.s_kk == pytest.approx((e * e).sum(), rel=1e-12)
    assert t.s_ll == pytest.approx((f * f).sum(), rel=1e-12)
    np.testing.assert_allclose(t.row_k, e.sum(1), rtol=1e-12)
    np.testing.assert_allclose(t.row_l, f.sum(1), rtol=1e-12)


# ---- data generators -------------------------------------------------------------------------

@pytest.mark.parametrize("make", [ref.correlated_linear, ref.correlated_tanh],
                         ids=["linear", "tanh"])
def test_generators_shape_dtype_mean_and_dependence(make):
    x, y = make(np.random.default_rng(0), 2000, 5, 3, mean=1e3, dtype=np.float32)
    assert x.shape == (2000, 5) and y.shape == (2000, 3)
    assert x.dtype == y.dtype == np.float32
    np.testing.assert_allclose(x.mean(0, dtype=np.float64), 1e3, atol=0.1)
    x2, y2 = make(np.random.default_rng(0), 2000, 5, 3, mean=1e3, dtype=np.float32)
    np.testing.assert_array_equal(x, x2)
    assert ref.linear_cka_feature_space(x, y) > 0.1  # related: far above independent data's
