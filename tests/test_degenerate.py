"""Estimators that are 0 exactly must come out as 0, not as rounding noise.

x = [0, 1, 1, 1, 1] has an exact unbiased HSIC(x, x) of 0 (checked below in exact fractions), so
debiased CKA is 0/0. Before, the feature form returned 0.9722 and the sample form 1.0: ratios of
rounding errors of the size 1e-17.
"""

from fractions import Fraction

import numpy as np
import pytest

import pyckafast


def _unbiased_hsic_exact(k: list[list[Fraction]], l: list[list[Fraction]]) -> Fraction:
    """Song et al. (2012) unbiased HSIC in exact rational arithmetic."""
    n = len(k)
    kh = [[k[i][j] if i != j else Fraction(0) for j in range(n)] for i in range(n)]
    lh = [[l[i][j] if i != j else Fraction(0) for j in range(n)] for i in range(n)]
    tr = sum(kh[i][j] * lh[j][i] for i in range(n) for j in range(n))
    sk, sl = sum(map(sum, kh)), sum(map(sum, lh))
    kl = sum(sum(kh[i]) * sum(lh[i]) for i in range(n))
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2 * kl / (n - 2)) / (n * (n - 3))


DEGENERATE = [0.0, 1.0, 1.0, 1.0, 1.0]


def test_the_example_is_exactly_degenerate():
    k = [[Fraction(int(a * b)) for b in DEGENERATE] for a in DEGENERATE]
    assert _unbiased_hsic_exact(k, k) == 0


@pytest.mark.parametrize("form", ["features", "samples"])
def test_linear_debiased_cka_of_a_zero_unbiased_self_hsic_is_nan(form):
    x = np.array(DEGENERATE)
    assert pyckafast.linear_hsic(x, x, debiased=True, form=form) == 0.0
    with pytest.warns(RuntimeWarning, match=r"HSIC\(x, x\) = 0"):
        assert np.isnan(pyckafast.linear_cka(x, x, debiased=True, form=form))


@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp"])
def test_rbf_debiased_cka_of_a_zero_unbiased_self_hsic_is_nan(backend):
    x = np.array(DEGENERATE)
    assert pyckafast.rbf_hsic(x, x, debiased=True, sigma=1.0, backend=backend) == 0.0
    with pytest.warns(RuntimeWarning, match=r"HSIC\(x, x\) = 0"):
        assert np.isnan(pyckafast.rbf_cka(x, x, debiased=True, sigma=1.0, backend=backend))


def test_nearly_degenerate_data_keep_their_value():
    # One sample moved by 1e-3: the unbiased HSIC is tiny but far above rounding; CKA is defined.
    x = np.array([0.0, 1.0, 1.0, 1.0, 1.0 + 1e-3])
    assert pyckafast.linear_hsic(x, x, debiased=True) != 0.0
    assert pyckafast.linear_cka(x, x, debiased=True) == pytest.approx(1.0)
