"""Minibatch CKA (Nguyen et al. 2021): mean of per-batch HSIC, then normalised."""

import numpy as np
import pytest

import pyckafast
from rbf_reference import correlated, gram_rbf, hsic_ref


def _linear_gram(a):
    a = a - a.mean(0)
    return a @ a.T


def _reference(x, y, batch, seed, debiased, gram):
    order = np.random.default_rng(seed).permutation(len(x))
    h = []
    for lo in range(0, len(x) - batch + 1, batch):
        idx = np.sort(order[lo:lo + batch])
        k, l = gram(x[idx]), gram(y[idx])
        h.append([hsic_ref(k, l, debiased), hsic_ref(k, k, debiased), hsic_ref(l, l, debiased)])
    xy, xx, yy = np.mean(h, axis=0)
    return xy / np.sqrt(xx * yy)


@pytest.mark.parametrize("debiased", [True, False])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_matches_reference(kernel, debiased):
    x, y = correlated(np.random.default_rng(4), 250, 6, 4)
    gram = _linear_gram if kernel == "linear" else gram_rbf
    got = pyckafast.minibatch_cka(x, y, 60, kernel=kernel, debiased=debiased, seed=5)
    assert got == pytest.approx(_reference(x, y, 60, 5, debiased, gram), rel=1e-9)


def test_is_a_different_estimator_but_close_for_big_batches():
    x, y = correlated(np.random.default_rng(5), 600, 6, 4)
    full = pyckafast.linear_cka(x, y, debiased=True)
    mb = pyckafast.minibatch_cka(x, y, 600, seed=None)
    assert mb == pytest.approx(full, rel=1e-10)  # one batch of everything: the same number
    assert pyckafast.minibatch_cka(x, y, 50) != pytest.approx(full, rel=1e-6)


def test_float32_large_mean():
    x, y = correlated(np.random.default_rng(6), 200, 5, 3, mean=1e3, dtype=np.float32)
    ref = _reference(x.astype(np.float64), y.astype(np.float64), 50, 0, True, gram_rbf)
    assert pyckafast.minibatch_cka(x, y, 50, kernel="rbf") == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("batch", [0, 3, 1000, 2.5])
def test_bad_batch_size(batch):
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match="batch_size"):
        pyckafast.minibatch_cka(x, x, batch)


def test_bad_kernel():
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match="kernel"):
        pyckafast.minibatch_cka(x, x, 10, kernel="cosine")
