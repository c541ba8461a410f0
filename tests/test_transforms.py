import numpy as np
import pytest

import pyckafast
from pyckafast import transforms as tf

from _reference import linear_cka_ref


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(120, 7)) * np.arange(1, 8) + 3.0


@pytest.mark.parametrize("make", [
    lambda x: tf.orthogonal(x, seed=3),
    lambda x: tf.isotropic_scale(x, 17.5),
    lambda x: tf.isotropic_scale(x, 1e-3),
    lambda x: tf.translate(x, np.linspace(-50, 50, 7)),
    lambda x: tf.translate(x, 1e4),
])
def test_invariances(x, make):
    y = make(x)
    assert y.shape == x.shape and not np.shares_memory(x, y)
    assert abs(pyckafast.linear_cka(x, y) - 1.0) < 1e-10


def test_orthogonal_is_orthogonal(x):
    y = tf.orthogonal(x, seed=1)
    q = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(q.T @ q, np.eye(7), atol=1e-10)


def test_invertible_linear_changes_cka_and_matches_brute(x):
    y = tf.invertible_linear(x, mean=5.0, std=1.0, seed=0)
    m = tf.draw_invertible(7, 5.0, 1.0, seed=0)
    np.testing.assert_allclose(y, x @ m)
    cka = pyckafast.linear_cka(x, y)
    assert cka < 0.9
    assert abs(cka - linear_cka_ref(x, y)) < 1e-10


def test_invertible_linear_redraw_criterion():
    with pytest.raises(ValueError, match="condition number"):
        tf.draw_invertible(30, 0.0, 1.0, seed=0, max_condition=1.0, max_tries=3)
    m = tf.draw_invertible(30, 0.0, 1.0, seed=0, max_condition=1e4)
    assert np.linalg.cond(m) <= 1e4


def test_translate_subset_and_outlier(x):
    mask = np.zeros(120, bool)
    mask[:30] = True
    v = np.ones(7)
    y = tf.translate_subset(x, mask, v, 2.5)
    np.testing.assert_allclose(y[:30], x[:30] + 2.5)
    np.testing.assert_array_equal(y[30:], x[30:])
    z = tf.add_outlier(x, 5, v, -1.0)
    np.testing.assert_allclose(z[5], x[5] - 1.0)
    np.testing.assert_array_equal(np.delete(z, 5, 0), np.delete(x, 5, 0))


@pytest.mark.parametrize("mask, err, match", [
    (np.ones(119, bool), ValueError, "length n = 120"),
    (np.ones(120, int), TypeError, "boolean"),
    (np.zeros(120, bool), ValueError, "proper non-empty"),
    (np.ones(120, bool), ValueError, "proper non-empty"),
])
def test_mask_validation(x, mask, err, match):
    with pytest.raises(err, match=match):
        tf.translate_subset(x, mask, np.ones(7), 1.0)


def test_argument_validation(x):
    mask = np.arange(120) < 10
    with pytest.raises(ValueError, match="direction.*7"):
        tf.translate_subset(x, mask, np.ones(6), 1.0)
    with pytest.raises(ValueError, match="non-zero"):
        tf.translate_subset(x, mask, np.zeros(7), 1.0)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="c must be finite"):
            tf.translate_subset(x, mask, np.ones(7), bad)
        with pytest.raises(ValueError, match="c must be finite"):
            tf.add_outlier(x, 0, np.ones(7), bad)
    with pytest.raises(ValueError, match="alpha"):
        tf.isotropic_scale(x, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        tf.isotropic_scale(x, -2.0)
    with pytest.raises(ValueError, match="index"):
        tf.add_outlier(x, 120, np.ones(7), 1.0)
    with pytest.raises(TypeError, match="index"):
        tf.add_outlier(x, 1.5, np.ones(7), 1.0)
    with pytest.raises(ValueError, match="std"):
        tf.invertible_linear(x, 1.0, 0.0)
    with pytest.raises(ValueError, match="shift"):
        tf.translate(x, np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        tf.orthogonal(np.full((3, 2), np.nan))


def _predict(w, b, x):
    return np.argmax(x @ w.T + b, axis=1)


@pytest.mark.parametrize("k", [3, 10])
def test_separability_preserving_direction_keeps_predictions(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(300, 20))
    w, b = rng.normal(size=(k, 20)), rng.normal(size=k)
    before = _predict(w, b, x)
    for seed in range(3):
        v = tf.separability_preserving_direction(w, seed=seed)
        assert abs(np.linalg.norm(v) - 1) < 1e-12
        diffs = (w[1:] - w[0]) @ v
        assert np.max(np.abs(diffs)) < 1e-12
        for c in (1.0, 100.0, -1e4):
            for mask in (before == 0, rng.random(300) < 0.3):
                y = tf.translate_subset(x, mask, v, c)
                np.testing.assert_array_equal(_predict(w, b, y), before)
                assert pyckafast.linear_cka(x, y) < 1.0 - 1e-6


def test_separability_direction_binary_and_empty_null_space():
    w = np.array([[1.0, 2.0, -1.0]])
    v = tf.separability_preserving_direction(w, seed=0)
    assert abs(w[0] @ v) < 1e-14
    # two classes in R^1: the single difference spans everything
    with pytest.raises(ValueError, match="no separability-preserving direction"):
        tf.separability_preserving_direction(np.array([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="no separability-preserving direction"):
        tf.separability_preserving_direction(np.random.default_rng(0).normal(size=(5, 4)))
    with pytest.raises(ValueError, match="weights"):
        tf.separability_preserving_direction(np.full((2, 3), np.nan))


def test_two_cubes():
    x, labels = tf.two_cubes(500, 4, offset=1.1, seed=2)
    assert x.shape == (1000, 4) and labels.tolist() == [0] * 500 + [1] * 500
    assert x[:500].min() >= -0.5 and x[:500].max() < 0.5
    np.testing.assert_allclose(x[500:, 0].mean(), 1.1, atol=0.05)
    assert x[500:, 0].min() >= 0.6
    np.testing.assert_array_equal(tf.two_cubes(500, 4, seed=2)[0], x)
