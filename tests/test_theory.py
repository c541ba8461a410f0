import numpy as np
import pytest

import pyckafast
from pyckafast import theory
from pyckafast import transforms as tf

from _reference import linear_cka_ref


def _rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture(params=[0, 1, 2])
def case(request):
    seed = request.param
    rng = np.random.default_rng(seed)
    if seed == 0:
        x, labels = tf.two_cubes(80, 6, seed=seed)
        mask = labels == 1
    else:
        x = rng.normal(size=(150, 9)) @ rng.normal(size=(9, 9)) + 4.0
        mask = rng.random(150) < (0.1 if seed == 1 else 0.6)
    v = rng.normal(size=x.shape[1]) * (1.0 if seed != 2 else 7.3)  # not unit length
    return x, mask, v


def test_curve_equals_brute_force(case):
    x, mask, v = case
    cs = np.array([-300.0, -7.0, -0.5, 0.0, 0.01, 1.0, 5.0, 50.0, 1e3])
    curve = theory.translation_curve(x, mask, v, cs)
    assert curve.shape == cs.shape
    for c, value in zip(cs, curve):
        brute = linear_cka_ref(x, tf.translate_subset(x, mask, v, c))
        assert _rel(value, brute) < 1e-8, (c, value, brute)
    assert theory.translation_curve(x, mask, v, 0.0) == pytest.approx(1.0, abs=1e-14)
    assert isinstance(theory.translation_curve(x, mask, v, 2.0), float)


def test_limit_equals_brute_force_and_is_approached(case):
    x, mask, v = case
    lim = theory.translation_limit(x, mask)
    assert _rel(lim, linear_cka_ref(x, mask.astype(float))) < 1e-8
    n, rho = len(x), mask.mean()
    xc = x - x.mean(0)
    formula = n * rho * (1 - rho) * np.sum((x[mask].mean(0) - x[~mask].mean(0)) ** 2) / np.linalg.norm(xc.T @ xc)
    assert _rel(lim, formula) < 1e-10
    gaps = [abs(linear_cka_ref(x, tf.translate_subset(x, mask, v, c)) - lim) for c in (1e3, 1e4, 1e5)]
    assert gaps[2] < gaps[1] < gaps[0] and gaps[2] < 1e-3
    far = theory.translation_curve(x, mask, v, np.array([-1e7, 1e7]))
    np.testing.assert_allclose(far, lim, rtol=1e-4)
    # independent of the direction, symmetric in T <-> S
    other = np.random.default_rng(99).normal(size=x.shape[1])
    assert theory.translation_curve(x, mask, other, 1e8) == pytest.approx(lim, rel=1e-5)
    assert theory.translation_limit(x, ~mask) == pytest.approx(lim, rel=1e-12)


def test_reference_curve_equals_brute_force(case):
    x, mask, v = case
    r = np.tanh(x @ np.random.default_rng(5).normal(size=(x.shape[1], 4)))
    for c in (-20.0, 0.0, 0.3, 40.0):
        value = theory.translation_curve(x, mask, v, c, reference=r)
        brute = linear_cka_ref(r, tf.translate_subset(x, mask, v, c))
        assert _rel(value, brute) < 1e-8
    lim = theory.translation_limit(x, mask, reference=r)
    assert _rel(lim, linear_cka_ref(r, mask.astype(float))) < 1e-8


def test_limit_zero_when_means_coincide():
    x = np.random.default_rng(0).normal(size=(40, 3))
    x = x - x.mean(0)
    x = np.vstack([x, -x])  # T = second half is the mirror image: both subsets have mean 0
    mask = np.arange(80) >= 40
    assert theory.translation_limit(x, mask) < 1e-28


def test_outlier_limit_and_curve():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5)) + 1.0
    v = rng.normal(size=5)
    lim = theory.outlier_limit(x, 17)
    n = len(x)
    xc = x - x.mean(0)
    formula = n / (n - 1) * np.sum(xc[17] ** 2) / np.linalg.norm(xc.T @ xc)
    assert _rel(lim, formula) < 1e-10
    onehot = np.zeros(n)
    onehot[17] = 1.0
    assert _rel(lim, linear_cka_ref(x, onehot)) < 1e-8
    for c in (2.0, 30.0):
        brute = linear_cka_ref(x, tf.add_outlier(x, 17, v, c))
        assert _rel(theory.outlier_curve(x, 17, v, c), brute) < 1e-8
    assert abs(pyckafast.linear_cka(x, tf.add_outlier(x, 17, v, 1e6)) - lim) < 1e-6
    # the limit shrinks as n grows
    big = rng.normal(size=(5000, 5))
    assert theory.outlier_limit(big, 0) < 0.01 < lim * 10


def test_theory_validation():
    x = np.random.default_rng(0).normal(size=(10, 3))
    mask = np.arange(10) < 4
    with pytest.raises(ValueError, match="finite"):
        theory.translation_curve(x, mask, np.ones(3), [1.0, np.nan])
    with pytest.raises(ValueError, match="direction"):
        theory.translation_curve(x, mask, np.ones((3, 1)), 1.0)
    with pytest.raises(ValueError, match="length n = 10"):
        theory.translation_limit(x, mask[:9])
    with pytest.raises(ValueError, match="zero variance"):
        theory.translation_limit(np.ones((10, 3)), mask)
    with pytest.raises(ValueError, match="reference"):
        theory.translation_limit(x, mask, reference=np.ones((9, 2)))


def test_translation_curve_reaches_the_limit_at_huge_c():
    # c^4 overflows float64 beyond c ~ 1e77: the curve used to return 0.0 or nan there.
    from pyckafast.transforms import random_direction, two_cubes

    x, labels = two_cubes(300, 10, seed=0)
    v = random_direction(10, seed=1)
    limit = theory.translation_limit(x, labels == 1)
    far = theory.translation_curve(x, labels == 1, v, [1e8, 1e80, -1e80, 1e300])
    np.testing.assert_allclose(far, limit, rtol=1e-6)
    near = theory.translation_curve(x, labels == 1, v, [0.5, 2.0])
    brute = [pyckafast.linear_cka(x, x + c * np.outer(labels == 1, v)) for c in (0.5, 2.0)]
    np.testing.assert_allclose(near, brute, rtol=1e-10)
