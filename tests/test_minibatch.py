"""Minibatch CKA (Nguyen et al. 2021): mean of per-batch HSIC, then normalised."""

import numpy as np
import pytest

import pyckafast
from _reference import correlated_tanh, hsic, linear_gram, rbf_gram

# float32: 1e-5 for linear kernels (test_linear.py), 1e-4 for RBF (distances in float32, test_rbf.py)
TOL = {(np.float64, "linear"): 1e-10, (np.float64, "rbf"): 1e-10,
       (np.float32, "linear"): 1e-5, (np.float32, "rbf"): 1e-4}
MEAN = {np.float64: 0.0, np.float32: 1e3}


def _reference(x, y, batch, seed, debiased, gram):
    order = np.random.default_rng(seed).permutation(len(x))
    h = []
    for lo in range(0, len(x) - batch + 1, batch):
        idx = np.sort(order[lo:lo + batch])
        k, l = gram(x[idx]), gram(y[idx])
        h.append([hsic(k, l, debiased), hsic(k, k, debiased), hsic(l, l, debiased)])
    xy, xx, yy = np.mean(h, axis=0)
    return xy / np.sqrt(xx * yy)


@pytest.mark.parametrize("debiased", [True, False], ids=["debiased", "biased"])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_matches_reference(target, dtype, kernel, debiased, request):
    # 250 = 4 batches of 60 and 10 samples left out
    x, y = correlated_tanh(np.random.default_rng(4), 250, 6, 4, mean=MEAN[dtype], dtype=dtype)
    gram = linear_gram if kernel == "linear" else rbf_gram
    got = pyckafast.minibatch_cka(target.on(x), target.on(y), 60, kernel=kernel,
                                  debiased=debiased, seed=5, backend=target.backend)
    assert got == pytest.approx(_reference(x, y, 60, 5, debiased, gram), rel=TOL[dtype, kernel])


def test_is_a_different_estimator_but_close_for_big_batches():
    x, y = correlated_tanh(np.random.default_rng(5), 600, 6, 4)
    full = pyckafast.linear_cka(x, y, debiased=True)
    mb = pyckafast.minibatch_cka(x, y, 600, seed=None)
    assert mb == pytest.approx(full, rel=1e-10)  # one batch of everything: the same number
    assert pyckafast.minibatch_cka(x, y, 50) != pytest.approx(full, rel=1e-6)


@pytest.mark.parametrize("batch", [0, 3, 1000, 2.5])
def test_bad_batch_size(batch):
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match="batch_size"):
        pyckafast.minibatch_cka(x, x, batch)


def test_bad_kernel():
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match="kernel"):
        pyckafast.minibatch_cka(x, x, 10, kernel="cosine")
