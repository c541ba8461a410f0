"""The terms algebra on its own: reshift is exact, merge is addition, combine is estimator-true."""

import numpy as np
from _reference import correlated_linear, hsic_biased, hsic_unbiased

from pyckafast._core import combine as _combine
from pyckafast._core import dispatch
from pyckafast._cpu.linear import feature_terms

NUMPY = dispatch.resolve("numpy", "linear_moments", "cpu")
from pyckafast._core.terms import KernelTerms


def test_reshift_equals_recomputation_with_the_new_shift(rng):
    x, y = correlated_linear(rng, 70, 5, 4, mean=2.0)
    a = feature_terms(x, y, ops=NUMPY, debiased=True, shift=(np.zeros(5), np.zeros(4)))
    sx, sy = rng.normal(size=5) * 3, rng.normal(size=4) * 3
    b = feature_terms(x, y, ops=NUMPY, debiased=True, shift=(sx, sy))
    moved = a.reshift(sx, sy)
    for name in ("sum_x", "sum_y", "xx", "yy", "xy"):
        np.testing.assert_allclose(getattr(moved, name), getattr(b, name), rtol=1e-12, atol=1e-9)
    for name in ("sum_q", "sum_r", "sum_qq", "sum_rr", "sum_qr", "qx", "rx", "qy", "ry"):
        np.testing.assert_allclose(getattr(moved.norms, name), getattr(b.norms, name), rtol=1e-11)


def test_centred_terms_have_zero_sums(rng):
    x, y = correlated_linear(rng, 50, 3, 3, mean=40.0)
    c = feature_terms(x, y, ops=NUMPY, debiased=True).centred()
    np.testing.assert_allclose(c.sum_x, 0, atol=1e-9)
    np.testing.assert_allclose(c.xx, (x - x.mean(0)).T @ (x - x.mean(0)), rtol=1e-12)


def test_kernel_hsic_matches_reference_and_blocks_add(rng):
    n = 23
    k = rng.normal(size=(n, n))
    k = k @ k.T
    l = np.tanh(k) + rng.normal(size=(n, n)) * 0.01
    l = (l + l.T) / 2

    def terms(kk, ll, rows):
        mask = np.zeros((n, n))
        mask[rows] = 1.0
        kk, ll = kk * mask, ll * mask  # only the pairs (i, j) with i in rows
        return KernelTerms(n, float((kk * ll).sum()), float((kk * kk).sum()), float((ll * ll).sum()),
                           kk.sum(1), ll.sum(1), np.diag(kk).copy(), np.diag(ll).copy())

    whole = terms(k, l, slice(None))
    split = terms(k, l, slice(0, 9)) + terms(k, l, slice(9, None))
    for t in (whole, split):
        b = _combine.kernel_hsic(t, debiased=False)
        u = _combine.kernel_hsic(t, debiased=True)
        np.testing.assert_allclose([b.xy, b.xx, b.yy], [hsic_biased(k, l), hsic_biased(k, k), hsic_biased(l, l)], rtol=1e-10)
        np.testing.assert_allclose([u.xy, u.xx, u.yy], [hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)], rtol=1e-10)

