import numpy as np
import pytest

import pyckafast
from pyckafast.robustness import fit_least_squares
from pyckafast.transforms import two_cubes

from _reference import linear_cka_ref


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 12)) * 3
    labels = np.repeat(np.arange(4), 60)
    x = centres[labels] + rng.normal(size=(240, 12))
    return x, labels


@pytest.mark.parametrize("target", [0.95, 0.6, 0.25, 0.05])
def test_reaches_target_with_identical_predictions(blobs, target):
    x, labels = blobs
    clf = fit_least_squares(x, labels)
    out = pyckafast.manipulate(x, target=target, classifier=(clf.weights, clf.bias))
    assert abs(out.cka - target) < 0.01
    assert abs(linear_cka_ref(x, out.x) - target) < 0.01
    np.testing.assert_array_equal(clf.predict(out.x), clf.predict(x))
    np.testing.assert_allclose(out.x, x + out.c * out.mask[:, None] * out.direction)
    assert out.reachable[0] <= target <= out.reachable[1]


def test_with_reference_and_labels(blobs):
    x, labels = blobs
    ref = np.tanh(x @ np.random.default_rng(1).normal(size=(12, 6)))
    start = pyckafast.linear_cka(ref, x)
    for target in (start - 0.3, min(start + 0.05, 0.99)):
        out = pyckafast.manipulate(x, ref, target=target, labels=labels)
        assert abs(pyckafast.linear_cka(ref, out.x) - target) < 0.01
        np.testing.assert_array_equal(out.classifier.predict(out.x), out.classifier.predict(x))


def test_sklearn_binary_classifier():
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, labels = two_cubes(100, 5, seed=0)
    clf = sklearn.LogisticRegression().fit(x, labels)
    out = pyckafast.manipulate(x, target=0.4, classifier=clf)
    assert abs(out.cka - 0.4) < 0.01
    np.testing.assert_array_equal(clf.predict(out.x), clf.predict(x))


def test_unreachable_and_bad_arguments(blobs):
    x, labels = blobs
    ref = np.random.default_rng(2).normal(size=(240, 3))  # unrelated: CKA stays small
    with pytest.raises(ValueError, match=r"not reachable.*\[\d\.\d+, \d\.\d+\]"):
        pyckafast.manipulate(x, ref, target=0.99, labels=labels)
    with pytest.raises(ValueError, match="target"):
        pyckafast.manipulate(x, target=1.5, labels=labels)
    with pytest.raises(ValueError, match="classifier=.*labels="):
        pyckafast.manipulate(x, target=0.5)
    with pytest.raises(ValueError, match="weights must have shape"):
        pyckafast.manipulate(x, target=0.5, classifier=(np.ones((3, 5)), np.ones(3)))
    with pytest.raises(ValueError, match="no separability-preserving direction"):
        pyckafast.manipulate(x[:, :3], target=0.5, labels=labels)


@pytest.mark.parametrize("tol", [0.0, -0.1, float("nan"), "small", None])
def test_manipulate_rejects_a_bad_tol(tol):
    x, labels = two_cubes(60, 3, seed=0)
    with pytest.raises((ValueError, TypeError), match="tol"):
        pyckafast.manipulate(x, target=0.5, labels=labels, tol=tol)
