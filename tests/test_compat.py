"""pyckafast.compat.kornblith against the reference implementation of Kornblith et al.'s colab."""

import numpy as np
import pytest

from pyckafast.compat import kornblith as kb


# ---- reference implementation (Kornblith et al. 2019 CKA colab), transcribed -------------------
def ref_gram_linear(x):
    return x.dot(x.T)


def ref_gram_rbf(x, threshold=1.0):
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold ** 2 * sq_median_distance))


def ref_center_gram(gram, unbiased=False):
    if not np.allclose(gram, gram.T):
        raise ValueError("Input must be a symmetric matrix.")
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def ref_cka(gram_x, gram_y, debiased=False):
    gram_x = ref_center_gram(gram_x, unbiased=debiased)
    gram_y = ref_center_gram(gram_y, unbiased=debiased)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    normalization_x = np.linalg.norm(gram_x)
    normalization_y = np.linalg.norm(gram_y)
    return scaled_hsic / (normalization_x * normalization_y)


def _ref_debiased_helper(xty, ssr_x, ssr_y, sq_norm_x, sq_norm_y, n):
    return xty - n / (n - 2.0) * ssr_x.dot(ssr_y) + sq_norm_x * sq_norm_y / ((n - 1) * (n - 2))


def ref_feature_space_linear_cka(features_x, features_y, debiased=False):
    features_x = features_x - np.mean(features_x, 0, keepdims=True)
    features_y = features_y - np.mean(features_y, 0, keepdims=True)
    dot_product_similarity = np.linalg.norm(features_x.T.dot(features_y)) ** 2
    normalization_x = np.linalg.norm(features_x.T.dot(features_x))
    normalization_y = np.linalg.norm(features_y.T.dot(features_y))
    if debiased:
        n = features_x.shape[0]
        ssr_x = np.einsum("ij,ij->i", features_x, features_x)
        ssr_y = np.einsum("ij,ij->i", features_y, features_y)
        sq_x, sq_y = np.sum(ssr_x), np.sum(ssr_y)
        dot_product_similarity = _ref_debiased_helper(dot_product_similarity, ssr_x, ssr_y, sq_x, sq_y, n)
        normalization_x = np.sqrt(_ref_debiased_helper(normalization_x ** 2, ssr_x, ssr_x, sq_x, sq_x, n))
        normalization_y = np.sqrt(_ref_debiased_helper(normalization_y ** 2, ssr_y, ssr_y, sq_y, sq_y, n))
    return dot_product_similarity / (normalization_x * normalization_y)


# ---- data ---------------------------------------------------------------------------------------
def _pair(n, p1, p2, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p1)) + offset
    y = np.tanh(x @ rng.normal(size=(p1, p2))) + 0.5 * rng.normal(size=(n, p2)) + offset
    return x, y


SHAPES = [(4, 3, 2), (5, 1, 1), (37, 10, 5), (200, 8, 30), (150, 300, 20)]


@pytest.mark.parametrize("n,p1,p2", SHAPES)
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_linear_grams_match_reference(n, p1, p2, debiased):
    x, y = _pair(n, p1, p2, seed=n + p1)
    gx, gy = kb.gram_linear(x), kb.gram_linear(y)
    np.testing.assert_allclose(gx, ref_gram_linear(x), rtol=1e-13, atol=1e-12)
    expect = ref_cka(ref_gram_linear(x), ref_gram_linear(y), debiased=debiased)
    assert kb.cka(gx, gy, debiased=debiased) == pytest.approx(expect, abs=1e-10)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_grams_and_cka_match_reference(threshold, debiased):
    x, y = _pair(60, 6, 4, seed=3, offset=2.0)
    gx, gy = kb.gram_rbf(x, threshold), kb.gram_rbf(y, threshold)
    np.testing.assert_allclose(gx, ref_gram_rbf(x, threshold), rtol=1e-10, atol=1e-12)
    expect = ref_cka(ref_gram_rbf(x, threshold), ref_gram_rbf(y, threshold), debiased=debiased)
    assert kb.cka(gx, gy, debiased=debiased) == pytest.approx(expect, abs=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_center_gram_matches_reference(unbiased):
    x, _ = _pair(25, 4, 1, seed=9, offset=3.0)
    g = ref_gram_linear(x)
    got = kb.center_gram(g, unbiased=unbiased)
    np.testing.assert_allclose(got, ref_center_gram(g, unbiased=unbiased), rtol=1e-12, atol=1e-9)
    assert got is not g and not np.shares_memory(got, g)


@pytest.mark.parametrize("n,p1,p2", SHAPES)
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_feature_space_linear_cka_matches_reference(n, p1, p2, debiased, offset):
    x, y = _pair(n, p1, p2, seed=p2, offset=offset)
    expect = ref_feature_space_linear_cka(x, y, debiased=debiased)
    got = kb.feature_space_linear_cka(x, y, debiased=debiased)
    assert got == pytest.approx(expect, abs=1e-10)


def test_debiased_gram_equals_feature_space():
    # The reference's two debiased routes agree; so must ours (U-centring == Song et al.).
    x, y = _pair(80, 5, 7, seed=1)
    a = kb.cka(kb.gram_linear(x), kb.gram_linear(y), debiased=True)
    assert a == pytest.approx(kb.feature_space_linear_cka(x, y, debiased=True), abs=1e-12)


def test_large_gram_offset_keeps_precision():
    # Grams of uncentred data have entries far from 0; the pair sums are taken shifted.
    x, y = _pair(300, 4, 4, seed=5, offset=1e3)
    for debiased in (False, True):
        expect = ref_feature_space_linear_cka(x, y, debiased=debiased)
        assert kb.cka(kb.gram_linear(x), kb.gram_linear(y), debiased) == pytest.approx(expect, abs=1e-8)


def test_float32_grams_accepted():
    x, y = _pair(40, 3, 3, seed=2)
    gx, gy = ref_gram_linear(x), ref_gram_linear(y)
    got = kb.cka(gx.astype(np.float32), gy.astype(np.float32))
    assert got == pytest.approx(ref_cka(gx, gy), abs=1e-5)


def test_errors_name_the_argument():
    g = np.eye(5)
    with pytest.raises(ValueError, match="gram_x must be a symmetric"):
        kb.cka(np.triu(np.ones((5, 5))), g)
    with pytest.raises(ValueError, match="gram_y must be a square"):
        kb.cka(g, np.ones((5, 4)))
    with pytest.raises(ValueError, match="same shape"):
        kb.cka(g, np.eye(6))
    with pytest.raises(TypeError, match="gram_x must hold real numbers"):
        kb.cka(np.full((3, 3), "a"), np.eye(3))
    with pytest.raises(ValueError, match="gram must be a symmetric"):
        kb.center_gram(np.triu(np.ones((4, 4))))
    with pytest.raises(ValueError, match="threshold"):
        kb.gram_rbf(np.ones((4, 2)), threshold=-1.0)
    with pytest.raises(ValueError, match="at least 4 samples"):
        kb.cka(np.eye(3), np.eye(3), debiased=True)
