"""Minibatch CKA of wide layers works on each batch's B x B Grams, not on p x p moments."""

import tracemalloc

import numpy as np
import pytest

import pyckafast


def test_wide_layers_use_the_batch_grams():
    rng = np.random.default_rng(0)
    n, p, batch = 300, 32_768, 100  # p x p float64 moments alone would be 8.6 GB per matrix
    x = rng.normal(size=(n, p)).astype(np.float32)
    y = x[:, :512] @ rng.normal(size=(512, 64)).astype(np.float32)
    tracemalloc.start()
    try:
        value = pyckafast.minibatch_cka(x, y, batch_size=batch, seed=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20
    # Unbiased HSIC per batch, averaged, then normalised (Nguyen et al. 2021), by brute force.
    def hsic_unbiased(k, l):
        m = k.shape[0]
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        return (np.sum(k * l) + k.sum() * l.sum() / ((m - 1) * (m - 2))
                - 2 / (m - 2) * k.sum(0) @ l.sum(0)) / (m * (m - 3))

    def grams(a):
        a = a.astype(np.float64)
        return a @ a.T

    h = np.mean([[hsic_unbiased(grams(a[lo:lo + batch]), grams(b[lo:lo + batch]))
                  for a, b in ((x, y), (x, x), (y, y))] for lo in range(0, n, batch)], axis=0)
    assert value == pytest.approx(h[0] / np.sqrt(h[1] * h[2]), rel=1e-5)
