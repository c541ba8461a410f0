"""The GPU bandwidth selection, run on the CPU with xp=numpy: the same code the GPU runs with
xp=cupy must give the CPU engine's exact medians."""

import numpy as np
import pytest

from pyckafast._core import bandwidth as _bandwidth
from pyckafast._gpu import bandwidth as _gpu_bandwidth


@pytest.mark.parametrize("rule", ["kornblith", "offdiag", "sampled"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("n, tile", [(7, 3), (300, 64), (301, 1000)])
def test_device_median_equals_cpu_median(rule, dtype, tol, n, tile):
    rng = np.random.default_rng(n)
    a = (rng.normal(size=(n, 5)) * [1, 2, 3, 4, 5] + 7).astype(dtype)
    cpu = _bandwidth.median_sq_distance(a, rule, tile=tile, n_pairs=5000, seed=3)
    dev = _gpu_bandwidth.median_sq_distance(a, rule, xp=np, tile=tile, n_pairs=5000, seed=3)
    assert dev == pytest.approx(cpu, rel=tol)
    if rule != "sampled":  # exact: equals np.median over the explicit distances
        d2 = ((a[:, None, :].astype(np.float64) - a[None, :, :]) ** 2).sum(-1)
        full = d2 if rule == "kornblith" else d2[np.triu_indices(n, 1)]
        assert dev == pytest.approx(float(np.median(full)), rel=tol * 10)


def test_ties_and_identical_points():
    a = np.repeat(np.arange(4.0)[:, None], 50, axis=0)  # 4 distinct points, many ties
    for rule in ("kornblith", "offdiag"):
        d2 = (a - a.T) ** 2
        full = d2.ravel() if rule == "kornblith" else d2[np.triu_indices(len(a), 1)]
        assert _gpu_bandwidth.median_sq_distance(a, rule, xp=np, tile=33) == pytest.approx(np.median(full))
    same = np.ones((40, 3))
    assert _gpu_bandwidth.median_sq_distance(same, "offdiag", xp=np, tile=16) == 0.0


def test_gamma_follows_options():
    from pyckafast.rbf import RBFOptions

    a = np.random.default_rng(0).normal(size=(50, 4))
    opts = RBFOptions.of(threshold=0.5, bandwidth="offdiag")
    median = _bandwidth.median_sq_distance(a, "offdiag")
    assert _gpu_bandwidth.gamma(a, "x", 0, opts, 16, np) == pytest.approx(1 / (2 * 0.25 * median))
    assert _gpu_bandwidth.gamma(a, "x", 1, RBFOptions.of(sigma=(1.0, 2.0)), None, np) == 1 / 8
