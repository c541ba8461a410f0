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


# ---- the fused distance-histogram kernel (csrc/cuda/d2_hist_cuda.cu) through its host twin ------
_twins = pytest.importorskip("pyckafast._twins", reason="the host twins need the test-only extension")
if not hasattr(_twins, "d2_hist_twin_f32"):
    pytest.skip("the extension predates the distance-histogram twin: rebuild it",
                allow_module_level=True)
from gpu_emulation import EmulatedEngine  # noqa: E402

from pyckafast._core.pairs import centre  # noqa: E402


def _twin(a, b, same, lo, hi, bins, capacity=1000):
    kernel = _twins.d2_hist_twin_f32 if a.dtype == np.float32 else _twins.d2_hist_twin_f64
    na, nb = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    below, counts = np.zeros(1, np.uint64), np.zeros(max(bins, 1), np.uint64)
    values, nvalues = np.zeros(capacity), np.zeros(1, np.uint64)
    kernel(a, b if not same else a, na, nb if not same else na, same, lo, hi, bins, below, counts,
           values, nvalues)
    return int(below[0]), counts.astype(np.int64), values[: min(capacity, int(nvalues[0]))], int(nvalues[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ma, mb, same", [(37, 37, True), (130, 130, True), (129, 70, False),
                                           (5, 260, False)])
def test_histogram_twin_counts_every_pair_once(dtype, ma, mb, same):
    """Integer-valued rows: every distance is exact in both dtypes, so the kernel's counts equal
    NumPy's over the same pairs (i < j within a block, all (i, j) across blocks)."""
    rng = np.random.default_rng(ma + mb)
    a = rng.integers(-3, 4, size=(ma, 11)).astype(dtype)
    b = a if same else rng.integers(-3, 4, size=(mb, 11)).astype(dtype)
    d2 = ((a[:, None, :].astype(float) - b[None, :, :]) ** 2).sum(-1)
    d2 = d2[np.triu_indices(ma, 1)] if same else d2.ravel()
    lo, hi, bins = 20.0, 60.0, 16
    below, counts, _, _ = _twin(a, b, same, lo, hi, bins)
    inside = d2[(d2 >= lo) & (d2 <= hi)]
    want = np.bincount(np.minimum(((inside - lo) * bins / (hi - lo)).astype(int), bins - 1),
                       minlength=bins)
    assert below == np.count_nonzero(d2 < lo) and (counts == want).all()
    below, _, values, count = _twin(a, b, same, lo, hi, 0, capacity=d2.size)
    assert below == np.count_nonzero(d2 < lo) and count == inside.size
    assert (np.sort(values) == np.sort(inside)).all()
    _, _, kept, count = _twin(a, b, same, lo, hi, 0, capacity=3)  # overflow is reported
    assert count == inside.size and kept.size == min(3, inside.size)


@pytest.mark.parametrize("rule", ["kornblith", "offdiag"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("n, tile", [(203, 128), (500, 256)])  # 500: the sampled guess's one pass
def test_device_medians_of_both_sides_in_one_launch(rule, dtype, tol, n, tile, monkeypatch):
    rng = np.random.default_rng(n)
    x = (rng.normal(size=(n, 9)) * 3 + 40).astype(dtype)
    y = (np.tanh(x[:, :4] / 40) + rng.normal(size=(n, 4))).astype(dtype)
    sides = [centre(x, "x", np.dtype(dtype)), centre(y, "y", np.dtype(dtype))]
    engine = EmulatedEngine()
    got = _gpu_bandwidth.exact_medians(engine, sides, rule, tile)
    for value, a in zip(got, (x, y)):
        assert value == pytest.approx(_bandwidth.median_sq_distance(a, rule), rel=tol)
    blocks = -(-n // tile)
    pairs = blocks * (blocks + 1) // 2
    launches = engine.calls["d2_hist"]
    assert launches % pairs == 0
    assert launches // pairs <= 3 if n < 300 else launches // pairs == 1  # x and y share them


def test_device_medians_fall_back_when_the_guess_misses(monkeypatch):
    n = 400
    x = np.random.default_rng(1).normal(size=(n, 5))
    side = centre(x, "x", np.dtype(np.float64))
    monkeypatch.setattr(_bandwidth, "pair_sample", lambda s, *a, **k: np.full(600, 1e-9))
    got = _gpu_bandwidth.exact_medians(EmulatedEngine(), [side], "offdiag", 128)
    assert got[0] == _bandwidth.median_sq_distance(x, "offdiag")


def test_side_gammas_match_side_gamma():
    from pyckafast.rbf import RBFOptions

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(150, 6)), rng.normal(size=(150, 3)) * 4
    sx, sy = centre(x, "x", np.dtype(np.float64)), centre(y, "y", np.dtype(np.float64))
    for opts in (RBFOptions.of(threshold=0.7, bandwidth="kornblith"),
                 RBFOptions.of(sigma=(1.0, 2.0)), RBFOptions.of(bandwidth="sampled")):
        want = (_gpu_bandwidth.side_gamma(opts, sx, 0, 64), _gpu_bandwidth.side_gamma(opts, sy, 1, 64))
        got = _gpu_bandwidth.side_gammas(EmulatedEngine(), opts, sx, sy, 128)
        assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("switch, launches", [(None, True), ("tiles", False)])
def test_device_sides_use_the_kernel_unless_switched_off(switch, launches, monkeypatch):
    """A side on a device (xp is not NumPy; here a NumPy stand-in) takes its exact median from
    the distance-histogram kernel on a CudaEngine (here the emulated one);
    PYCKAFAST_GPU_MEDIAN=tiles keeps the CuPy-tile passes."""
    import sys
    import types

    device_xp = types.ModuleType("device_xp")
    device_xp.__getattr__ = lambda name: getattr(np, name)
    engines = []

    class Engine(EmulatedEngine):
        def __init__(self):
            super().__init__()
            engines.append(self)

    monkeypatch.setitem(sys.modules, "pyckafast._gpu.engine",
                        types.SimpleNamespace(CudaEngine=Engine))
    if switch:
        monkeypatch.setenv("PYCKAFAST_GPU_MEDIAN", switch)
    x = np.random.default_rng(3).normal(size=(150, 4))
    side = centre(x, "x", np.dtype(np.float64), device_xp)
    got = _gpu_bandwidth.exact_median(side, "kornblith", 64)
    assert got == pytest.approx(_bandwidth.median_sq_distance(x, "kornblith"), rel=1e-12)
    assert bool(engines and engines[0].calls.get("d2_hist")) is launches
