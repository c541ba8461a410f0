"""Exact median bandwidths in O(n) memory (histogram selection over tiles) vs np.median."""

import numpy as np
import pytest

import pyckafast
from pyckafast._core import bandwidth as _bandwidth, dispatch as _dispatch
from _reference import median_sq, rbf_cka_ref


@pytest.fixture(autouse=True)
def force_histogram_passes(monkeypatch):
    """A tiny candidate budget makes every selection go through the histogram narrowing."""
    monkeypatch.setattr(_bandwidth, "_MAX_CANDIDATES", 8)


@pytest.mark.parametrize("n", [4, 5, 6, 7, 64, 131])
@pytest.mark.parametrize("rule", ["kornblith", "offdiag"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_exact_median_equals_np_median(n, rule, dtype, tol):
    x = (np.random.default_rng(n).normal(size=(n, 5)) + 50.0).astype(dtype)
    got = _bandwidth.median_sq_distance(x, rule, tile=16)
    assert got == pytest.approx(median_sq(x, rule), rel=tol)


def test_median_with_ties_and_duplicates():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(90, 2)).astype(np.float64)  # many equal distances
    for rule in ("kornblith", "offdiag"):
        assert _bandwidth.median_sq_distance(x, rule, tile=7) == median_sq(x, rule)


def test_median_rank_conventions():
    # kornblith: n zeros + every pair twice; even count -> mean of the two middle values
    assert _bandwidth.median_ranks("kornblith", 2) == [-1, 0]  # {0, 0, d, d}
    assert _bandwidth.median_ranks("kornblith", 3) == [0, 0]  # 9 values, rank 4 -> pair rank 0
    assert _bandwidth.median_ranks("offdiag", 4) == [2, 3]
    with pytest.raises(ValueError, match="bandwidth"):
        _bandwidth.median_ranks("mode", 4)


def test_sampled_median_is_seeded_and_close():
    x = np.random.default_rng(1).normal(size=(400, 6))
    a = _bandwidth.median_sq_distance(x, "sampled", n_pairs=20000, seed=3)
    assert a == _bandwidth.median_sq_distance(x, "sampled", n_pairs=20000, seed=3)
    assert a == pytest.approx(median_sq(x, "offdiag"), rel=0.03)
    got = pyckafast.rbf_cka(x, np.tanh(x), bandwidth="sampled", n_pairs=20000)
    assert got == pytest.approx(rbf_cka_ref(x, np.tanh(x), rule="offdiag"), rel=0.01)


@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp"])
def test_pair_reductions_add(backend, monkeypatch):
    """Histograms and candidates of block pairs merge by +, so any driver can reduce them; every
    backend's tile histogram bins like the Numba kernel."""
    monkeypatch.setattr(_bandwidth, "_BINS", 16)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(7, 3))
    histogram, candidates = _bandwidth.tile_pair_fns(np, _dispatch.resolve(backend, "rbf_tile").d2_histogram)
    whole = histogram(a, b, False, 1.0, 9.0)
    parts = histogram(a[:4], b, False, 1.0, 9.0) + histogram(a[4:], b, False, 1.0, 9.0)
    assert whole.below == parts.below and (whole.counts == parts.counts).all()
    d2 = ((a[:, None] - b[None]) ** 2).sum(-1).ravel()
    inside = d2[(d2 >= 1.0) & (d2 <= 9.0)]
    want = np.bincount(np.minimum(((inside - 1.0) * (16 / 8.0)).astype(int), 15), minlength=16)
    assert whole.below == np.count_nonzero(d2 < 1.0) and (whole.counts == want).all()
    above = histogram(a, b, False, 1e6, 2e6)  # nothing inside the window
    assert above.below == 70 and not above.counts.any()
    diagonal = histogram(a, a, True, 0.0, 50.0)
    assert diagonal.below + diagonal.counts.sum() == 45  # pairs i < j only
    c = candidates(a, a, True, 0.0, np.inf)
    assert c.below == 0 and c.values.size == 45


def test_zero_median_is_a_clear_error():
    x = np.zeros((20, 3))
    x[:3] = 1.0  # most pairs identical
    for rule in ("kornblith", "offdiag"):
        with pytest.raises(ValueError, match="sigma would be 0"):
            pyckafast.rbf_cka(x, np.random.default_rng(0).normal(size=(20, 2)), bandwidth=rule)


# ---- the sampled guess of the first window (select_pair_ranks(sample=...)) ----------------------
def _counted_median(x, rule, sample, tile=64):
    from pyckafast._core.pairs import centre

    side = centre(x, "x", np.dtype(np.float64))
    reducer, passes = _bandwidth.side_reducer(side, tile), []

    def counted(body):
        passes.append(1)
        return reducer(body)

    upper = 4.0 * side.max_sq_norm()
    got = _bandwidth.exact_median(rule, side.n, upper, counted, side.dtype,
                                  _bandwidth.tile_pair_fns(np), sample)
    return got, len(passes), side


@pytest.mark.parametrize("rule", ["kornblith", "offdiag"])
def test_sampled_guess_selects_in_one_pass(rule, monkeypatch):
    monkeypatch.setattr(_bandwidth, "_MAX_CANDIDATES", 1 << 21)
    x = np.random.default_rng(5).normal(size=(500, 7)) + 3.0
    from pyckafast._core.pairs import centre

    assert _bandwidth.worth_sampling(500)
    sample = _bandwidth.pair_sample(centre(x, "x", np.dtype(np.float64)))
    got, passes, _ = _counted_median(x, rule, sample)
    assert got == median_sq(x, rule)  # exact: the same float64 values, selected
    assert passes == 1
    _, without, _ = _counted_median(x, rule, None)
    assert without == 2  # a histogram, then the candidates of the bins holding the ranks


@pytest.mark.parametrize("max_candidates", [8, 1 << 21])  # histogram first / candidates first
@pytest.mark.parametrize("wrong", ["below", "above", "narrow"])
def test_a_wrong_guess_costs_passes_never_exactness(max_candidates, wrong, monkeypatch):
    monkeypatch.setattr(_bandwidth, "_MAX_CANDIDATES", max_candidates)
    x = np.random.default_rng(6).normal(size=(300, 4))
    value = median_sq(x, "offdiag")
    sample = {"below": np.linspace(0, 1e-3 * value, 500), "above": np.linspace(10, 20, 500) * value,
              "narrow": np.full(500, value * 1.01)}[wrong]
    got, passes, _ = _counted_median(x, "offdiag", np.sort(sample))
    assert got == value
    assert passes >= 2  # the missed guess, then the selection from the full range


def test_sampled_guess_with_ties(monkeypatch):
    monkeypatch.setattr(_bandwidth, "_MAX_CANDIDATES", 1 << 21)
    x = np.random.default_rng(0).integers(0, 3, size=(400, 2)).astype(np.float64)
    from pyckafast._core.pairs import centre

    sample = _bandwidth.pair_sample(centre(x, "x", np.dtype(np.float64)))
    for rule in ("kornblith", "offdiag"):
        assert _counted_median(x, rule, sample)[0] == median_sq(x, rule)


def test_pair_sample_is_seeded_and_sorted():
    from pyckafast._core.pairs import centre

    side = centre(np.random.default_rng(1).normal(size=(50, 3)), "x", np.dtype(np.float64))
    a, b = _bandwidth.pair_sample(side, 1000), _bandwidth.pair_sample(side, 1000)
    assert a.dtype == np.float64 and a.size == 1000 and (a == b).all() and (np.diff(a) >= 0).all()
    i, j = _bandwidth.sampled_pairs(50, 1000, 0)
    want = np.sort(((side.rows[i] - side.rows[j]) ** 2).sum(1))
    np.testing.assert_allclose(a, want, rtol=1e-12)


def test_sweeps_reuse_medians(monkeypatch):
    """A translation sweep computes x's median once per seed and y's once per point (shared by
    the three RBF multipliers), and gives the values of the measures called one by one."""
    from pyckafast import transforms
    from pyckafast.robustness import measures as _measures, sweeps

    calls = []
    original = _bandwidth.exact_median_in_memory
    monkeypatch.setattr(_bandwidth, "exact_median_in_memory",
                        lambda side, rule, **kw: calls.append(side.n) or original(side, rule, **kw))
    ms = _measures.default_measures(rbf_samples=30)
    magnitudes = [1.0, 5.0, 20.0]
    r = sweeps.translation_sweep(magnitudes, [0], n_per_cube=25, dim=6, measures=ms,
                                 theory_curve=False)
    assert len(calls) == 1 + len(magnitudes)  # x once, y once per c (not 2 x 3 per point)
    x, labels = transforms.two_cubes(25, 6, 1.1, seed=0)
    v = transforms.random_direction(6, seed=[0, 1])
    rows = _measures.subsample_rows(x.shape[0], 30, 0)
    for j, c in enumerate(magnitudes):
        y = transforms.translate_subset(x, labels == 1, v, c)
        for m in ms[1:]:
            want = m.fn(x[rows], y[rows])
            assert r.values[m.name][0, j] == pytest.approx(want, rel=1e-12, abs=1e-14)
