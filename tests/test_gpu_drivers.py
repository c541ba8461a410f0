"""The GPU drivers (chunking, staging, shifts, NaN detection, OOM retries, block pairs) run in CI
on an emulated engine whose kernels are the C++ host twins (tests/gpu_emulation.py)."""

from __future__ import annotations

import numpy as np
import pytest

import pyckafast
from pyckafast._core import combine as _combine, gram as core_gram
from pyckafast._gpu import linear as _gpu_linear, rbf as _gpu_rbf
from pyckafast._core.inputs import Samples, float_dtype
from pyckafast._core.terms import KernelTerms

pytest.importorskip("pyckafast._twins", reason="the C++ host twins need the compiled extension")
from gpu_emulation import EmulatedEngine  # noqa: E402
from _reference import kernel_terms_brute  # noqa: E402


def _samples(a, on_device):
    a = a[:, None] if a.ndim == 1 else a
    return Samples(a, float_dtype(a.dtype, "x"), on_device)


def _cka(terms, debiased):
    return _combine.cka_from_hsic(_combine.linear_hsic(terms, debiased))


def _data(n=203, p1=9, p2=4, dtype=np.float32, mean=1e3, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, p1)) + mean).astype(dtype)
    y = (x[:, :p2] ** 2 / mean + rng.normal(size=(n, p2))).astype(dtype)
    return x, y


@pytest.mark.parametrize("on_device", [True, False], ids=["device", "host-staged"])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("rows", [7, 64, 1000])
def test_linear_matches_float64_reference(on_device, debiased, rows):
    x, y = _data()  # float32 with a large mean: the shift must keep the precision
    engine = EmulatedEngine()
    terms = _gpu_linear.linear_terms(engine, _samples(x, on_device), _samples(y, on_device),
                                     x.shape[0], debiased=debiased, chunk_size=rows)
    ref = pyckafast.linear_cka(x.astype(np.float64), y.astype(np.float64), debiased=debiased,
                               backend="numpy", form="features")
    assert abs(_cka(terms, debiased) - ref) < 2e-6
    assert engine.calls["moments"] == -(-x.shape[0] // rows)
    assert ("upload" in engine.calls) == (not on_device)


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed", "mixed-dtypes", "ints"])
def test_linear_layouts_and_dtypes(layout):
    x, y = _data(n=120, p1=12, dtype=np.float64, mean=3.0)
    if layout == "fortran":
        x, y = np.asfortranarray(x), np.asfortranarray(y)
    elif layout == "strided":
        x, y = x[:, ::2], y[::1, 1:]
    elif layout == "reversed":
        x, y = x[::-1], y[::-1]
    elif layout == "mixed-dtypes":
        x = x.astype(np.float32)
    elif layout == "ints":
        x = np.round(x * 10).astype(np.int64)
    terms = _gpu_linear.linear_terms(EmulatedEngine(), _samples(x, True), _samples(y, True),
                                     x.shape[0], debiased=True, chunk_size=31)
    ref = pyckafast.linear_cka(np.asarray(x, float), np.asarray(y, float), debiased=True,
                               backend="numpy", form="features")
    assert abs(_cka(terms, True) - ref) < 1e-6


def test_linear_smallest_n_and_one_feature():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=4), rng.normal(size=(4, 2))
    terms = _gpu_linear.linear_terms(EmulatedEngine(), _samples(x, True), _samples(y, True), 4,
                                     debiased=True, chunk_size=3)
    ref = pyckafast.linear_cka(x, y, debiased=True, backend="numpy", form="features")
    assert abs(_cka(terms, True) - ref) < 1e-12


@pytest.mark.parametrize("on_device", [True, False])
def test_linear_reports_non_finite_rows(on_device):
    x, y = _data(n=50, dtype=np.float64)
    y[23, 1] = np.nan
    with pytest.raises(ValueError, match=r"y must contain only finite values; found NaN or Inf in row 23, column 1 \(NaN\)\.$"):
        _gpu_linear.linear_terms(EmulatedEngine(), _samples(x, on_device), _samples(y, on_device),
                                 50, debiased=False, chunk_size=10)


def test_linear_out_of_memory_halves_the_chunk():
    x, y = _data(n=300)
    engine = EmulatedEngine(oom_above_rows=40)
    with pytest.warns(RuntimeWarning, match="retrying with"):
        terms = _gpu_linear.linear_terms(engine, _samples(x, True), _samples(y, True), 300,
                                         debiased=True, chunk_size=256)
    assert engine.released >= 1
    ref = pyckafast.linear_cka(x.astype(float), y.astype(float), debiased=True, backend="numpy",
                               form="features")
    assert abs(_cka(terms, True) - ref) < 2e-6


def test_linear_out_of_memory_at_the_floor_raises():
    x, y = _data(n=600)
    with pytest.raises(MemoryError, match="ran out of device memory"), pytest.warns(RuntimeWarning):
        _gpu_linear.linear_terms(EmulatedEngine(oom_above_rows=10), _samples(x, True),
                                 _samples(y, True), 600, debiased=False, chunk_size=600)


def test_default_rows_respects_memory():
    assert _gpu_linear.default_rows(10**7, 1024, 1024, 4, False, 80 << 30) == (512 << 20) // 8192
    small = _gpu_linear.default_rows(10**7, 1024, 1024, 4, True, 1 << 30)
    assert 256 <= small < (512 << 20) // 8192
    assert _gpu_linear.default_rows(100, 8, 8, 4, False, 80 << 30) == 100


@pytest.mark.parametrize("tile", [8, 24, 1000])
@pytest.mark.parametrize("on_device", [True, False])
def test_rbf_block_pairs_match_brute_force(tile, on_device):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(61, 5)) + 50.0
    y = np.tanh(x[:, :3]) + 0.1 * rng.normal(size=(61, 3))
    terms = _gpu_rbf.rbf_terms(EmulatedEngine(), _samples(x, on_device), _samples(y, on_device),
                               gamma_x=0.1, gamma_y=0.7, tile=tile)
    ref = kernel_terms_brute(x, y, 0.1, 0.7)
    for debiased in (False, True):
        got = _combine.cka_from_hsic(_combine.kernel_hsic(terms, debiased))
        want = _combine.cka_from_hsic(_combine.kernel_hsic(ref, debiased))
        assert abs(got - want) < 1e-10
        # The producers sum 2^m K - c (pyckafast/_core/rbf_entry.py), the brute force K - 1:
        # the HSIC values agree, not the terms.
        got_h = _combine.kernel_hsic(terms, debiased).unscaled()
        want_h = _combine.kernel_hsic(ref, debiased)
        np.testing.assert_allclose(got_h[:3], want_h[:3], rtol=1e-9)


def test_rbf_out_of_memory_halves_blocks():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    engine = EmulatedEngine(oom_above_rows=16)
    with pytest.warns(RuntimeWarning, match="retrying with"):
        terms = _gpu_rbf.rbf_terms(engine, _samples(x, True), _samples(y, True),
                                   gamma_x=0.5, gamma_y=0.5, tile=40)
    ref = kernel_terms_brute(x, y, 0.5, 0.5)
    got = _combine.kernel_hsic(terms, False).unscaled().xy
    assert abs(got - _combine.kernel_hsic(ref, False).xy) < 1e-9 * abs(got)


def test_rbf_default_block_rows():
    assert _gpu_rbf.default_block_rows(10**6, 512, 512, 4, 80 << 30, 128) == 10**6
    rows = _gpu_rbf.default_block_rows(10**8, 512, 512, 4, 8 << 30, 128)
    assert rows % 128 == 0 and rows * 2 * 1024 * 4 <= 4 << 30


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_hsic_matrix_matches_kernel_terms(kernel, debiased):
    rng = np.random.default_rng(4)
    reps = [rng.normal(size=(30, 4)), rng.normal(size=(30, 2)) + 7.0, rng.normal(size=(30, 6))]
    reps[2][:, :2] += 0.5 * reps[0][:, :2]
    gammas = [0.2, 0.5, 0.1]
    got = core_gram.hsic_matrix(np, reps, kernel=kernel, gammas=gammas, debiased=debiased)

    def gram(a, g):
        a = a - a.mean(0)
        if kernel == "linear":
            return a @ a.T
        return np.exp(-g * ((a[:, None] - a[None]) ** 2).sum(-1))

    for i in range(3):
        for j in range(3):
            k, l = gram(reps[i], gammas[i]), gram(reps[j], gammas[j])
            t = KernelTerms(n=30, s_kl=float((k * l).sum()), s_kk=float((k * k).sum()),
                            s_ll=float((l * l).sum()), row_k=k.sum(1), row_l=l.sum(1),
                            diag_k=np.diag(k).copy(), diag_l=np.diag(l).copy())
            assert abs(got[i, j] - _combine.kernel_hsic(t, debiased).xy) < 1e-10 * max(1.0, abs(got[i, j]))


def test_hsic_matrix_checks():
    with pytest.raises(ValueError, match="batch's 5 rows"):
        core_gram.hsic_matrix(np, [np.ones((5, 2)), np.ones((6, 2))])
    with pytest.raises(ValueError, match="one gamma per representation"):
        core_gram.hsic_matrix(np, [np.ones((5, 2))], kernel="rbf")


def test_default_bandwidth_medians_of_both_sides_share_each_histogram_launch():
    """issue 14: the exact medians of x and y run in the same launches of the distance-histogram
    kernel (both sides per launch), and the value is the host one."""
    from pyckafast.rbf import RBFOptions

    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 6))
    y = np.tanh(x[:, :3]) + rng.normal(size=(300, 3))
    engine = EmulatedEngine()
    launches = []
    real = engine.d2_hist
    engine.d2_hist = lambda sides, same_block: launches.append(len(sides)) or real(sides, same_block)
    terms = _gpu_rbf.rbf_terms_under(engine, _samples(x, True), _samples(y, True),
                                     options=RBFOptions.of(None, 1.0, "kornblith"), tile=64)
    assert launches and set(launches) == {2}
    got = _combine.cka_from_hsic(_combine.kernel_hsic(terms, False))
    assert got == pytest.approx(pyckafast.rbf_cka(x, y, backend="numpy"), rel=1e-10)
