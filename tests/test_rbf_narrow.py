"""RBF CKA from the narrowest to the widest bandwidth (threshold 0.05 to 20), both estimators,
every CPU backend and the emulated GPU engine, against the float64 n x n reference.

The producers sum E = 2^m K - c per kernel, c near the typical entry (pyckafast/_core/rbf_entry.py);
with E = K - 1 (before) the unbiased estimator cancelled the -1s once K << 1: debiased CKA at
threshold 0.1 lost every digit (nan, or an arbitrary value) and float32 entries underflowed.

Error bound (per entry, csrc/common/rbf_pair.h): |dE| <= ~4 eps (2^m K + |E|), eps of the pass
dtype; the sums add n^2 such terms in float64 and the HSIC combination adds no cancellation
beyond the spread of the entries. Measured, n = 200 (dx 24, dy 12): float64 CKA within 1e-13
relative of the reference at every threshold; float32 within 8e-6 (the error of gamma d2 from
float32 dot products and the float32 median, about eps32 u with u = 1/(2 threshold^2); float32
kernels with u > 64 run in float64 and keep only the median's error, 1e-9 at threshold 0.05).
Asserted: float64 1e-10, float32 3e-7 * max(1, u) + 1e-6.
"""

import numpy as np
import pytest

import pyckafast
from pyckafast._core import combine
from pyckafast._core.inputs import Samples
from pyckafast.rbf import RBFOptions
from _reference import correlated_tanh, rbf_cka_ref

THRESHOLDS = [0.05, 0.1, 0.2, 1.0, 5.0, 20.0]
DEBIASED = pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])


def _tol(dtype, threshold):
    u = 1.0 / (2.0 * threshold ** 2)
    return 1e-10 if dtype == np.float64 else 3e-7 * max(1.0, u) + 1e-6


@pytest.fixture(scope="module")
def data():
    return correlated_tanh(np.random.default_rng(3), 200, 24, 12, mean=2.0)


@pytest.fixture(scope="module")
def references(data):
    x, y = data
    return {(t, d): rbf_cka_ref(x, y, t, debiased=d) for t in THRESHOLDS for d in (False, True)}


@DEBIASED
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_every_bandwidth_matches_reference(data, references, cpu_backend, dtype, threshold,
                                           debiased):
    x, y = (a.astype(dtype) for a in data)
    want = references[threshold, debiased]
    if dtype == np.float32:
        want = rbf_cka_ref(x, y, threshold, debiased=debiased)
    got = pyckafast.rbf_cka(x, y, threshold=threshold, debiased=debiased, backend=cpu_backend,
                            tile=64)
    assert abs(got - want) <= _tol(dtype, threshold) * abs(want)


@DEBIASED
@pytest.mark.parametrize("threshold", [0.05, 0.1, 20.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_emulated_gpu_matches_reference(data, references, dtype, threshold, debiased):
    pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ host twins")
    from gpu_emulation import EmulatedEngine
    from pyckafast._gpu import rbf as gpu_rbf

    x, y = (a.astype(dtype) for a in data)
    want = rbf_cka_ref(x, y, threshold, debiased=debiased)
    terms = gpu_rbf.rbf_terms_under(EmulatedEngine(), Samples(x, x.dtype, True),
                                    Samples(y, y.dtype, True),
                                    options=RBFOptions.of(threshold=threshold), tile=64)
    got = combine.cka_from_hsic(combine.kernel_hsic(terms, debiased))
    assert abs(got - want) <= _tol(dtype, threshold) * abs(want)


def test_explicit_narrow_sigma_matches_reference(data):
    """With an explicit sigma the typical entry comes from a sample of pairs."""
    x, y = data
    sigma = (0.1 * np.sqrt(2 * 24), 0.1 * np.sqrt(2 * 12))  # ~ threshold 0.1
    want = rbf_cka_ref(x, y, sigma=sigma, debiased=True)
    for backend in ("numpy", "numba", "cpp"):
        got = pyckafast.rbf_cka(x, y, sigma=sigma, debiased=True, backend=backend)
        assert abs(got - want) <= 1e-10 * abs(want)
    hsic = pyckafast.rbf_hsic(x, y, sigma=sigma, debiased=True, backend="cpp")
    assert hsic == pytest.approx(
        __import__("_reference").rbf_hsic_ref(x, y, sigma=sigma, debiased=True), rel=1e-9)


def test_issue_case_n1500_threshold_0_1():
    """The case of the issue: n = 1500, p = 256 + 128, threshold 0.1, debiased (was nan)."""
    rng = np.random.default_rng(12)
    x, y = correlated_tanh(rng, 1500, 256, 128, mean=1.0, dtype=np.float32)
    want = rbf_cka_ref(x, y, 0.1, debiased=True)  # of the float32 data, in float64
    for dtype, tol in ((np.float64, 1e-10), (np.float32, _tol(np.float32, 0.1))):
        got = pyckafast.rbf_cka(x.astype(dtype), y.astype(dtype), threshold=0.1, debiased=True,
                                backend="cpp")
        assert abs(got - want) <= tol * abs(want)
