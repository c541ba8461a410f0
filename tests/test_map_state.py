"""CKAMapState: the streaming, mergeable layer x layer map (docs/CONTRACTS.md)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from _reference import correlated_linear, linear_cka_ref

import pyckafast
from pyckafast import CKAMapState
from pyckafast._core import dispatch
from pyckafast._core.inputs import Samples, prepare
from pyckafast._gpu import linear as gpu_linear


def _layers(rng, n=300, mean=0.0, dtype=np.float64):
    """Four layers of the same n samples (different widths, related to each other)."""
    x, y = correlated_linear(rng, n, 6, 4)
    layers = [x, y, np.tanh(x[:, :3]) + 0.2 * rng.normal(size=(n, 3)), x[:, :2] ** 2]
    return [(a + mean).astype(dtype) for a in layers]


def _drifting(rng, n=300):
    """Layers whose rows come in groups of very different means: batches and shards taken in
    order have means far apart, so the exact reshift of parts is exercised."""
    layers = _layers(rng, n)
    for k, a in enumerate(layers):
        a[n // 3: 2 * n // 3] += 40.0 * (k + 1)
        a[2 * n // 3:] -= 1e3
    return layers


def _sharded(layers, ys, bounds, debiased=True):
    """One state per shard [bounds[k], bounds[k+1]), each fed in batches of 23 rows."""
    states = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        state = CKAMapState(debiased=debiased)
        for b in range(lo, hi, 23):
            cut = slice(b, min(b + 23, hi))
            state.update([a[cut] for a in layers], None if ys is None else [a[cut] for a in ys])
        states.append(state)
    return states


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "two-sided"])
def test_three_shards_merged_equal_the_one_shot_map(rng, symmetric):
    layers = _drifting(rng)
    ys = None if symmetric else [layers[1], layers[3], layers[0][:, :1]]
    shards = _sharded(layers, ys, [0, 70, 190, 300])
    state = shards[2].merge(shards[0]).merge(shards[1])  # any order
    assert state.n == 300
    for debiased in (False, True):
        want = pyckafast.cka_matrix(layers, ys, debiased=debiased)
        got = state.result(debiased=debiased)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        # and against the textbook reference, pair by pair
        other = layers if symmetric else ys
        for i, j in [(0, 1), (2, 0), (1, 2)]:
            assert got[i, j] == pytest.approx(linear_cka_ref(layers[i], other[j], debiased),
                                              abs=1e-12)


def test_hsic_matches_linear_hsic(rng):
    layers = _drifting(rng)
    state = _sharded(layers, None, [0, 150, 300])
    state = state[0].merge(state[1])
    for debiased in (False, True):
        hxy, hxx, hyy = state.hsic(debiased=debiased)
        assert hxy.shape == (4, 4) and hxx.shape == hyy.shape == (4,)
        for i in range(4):
            assert hxx[i] == pytest.approx(
                pyckafast.linear_hsic(layers[i], layers[i], debiased=debiased), rel=1e-10)
            for j in range(4):
                assert hxy[i, j] == pytest.approx(
                    pyckafast.linear_hsic(layers[i], layers[j], debiased=debiased), rel=1e-10)


def test_mapping_input_keeps_names(rng):
    layers = _layers(rng, 120)
    named = dict(zip(["conv1", "conv2", "fc", "out"], layers))
    state = CKAMapState().update({k: v[:60] for k, v in named.items()})
    state.update({k: v[60:] for k, v in named.items()})
    assert state.names_a == state.names_b == ["conv1", "conv2", "fc", "out"]
    np.testing.assert_allclose(state.result(), pyckafast.cka_matrix(layers), atol=1e-12)
    two = CKAMapState().update({"a": layers[0]}, {"p": layers[1], "q": layers[2]})
    assert (two.names_a, two.names_b) == (["a"], ["p", "q"])
    assert CKAMapState().update(layers).names_a is None
    unnamed = CKAMapState().update([v[:30] for v in layers]).merge(state)
    assert unnamed.names_a == unnamed.names_b == ["conv1", "conv2", "fc", "out"]
    with pytest.raises(ValueError, match=r"xs must name its layers \['conv1'"):
        state.update({f"x{k}": v[:10] for k, v in enumerate(layers)})


def test_batches_must_match_the_first(rng):
    layers = _layers(rng, 60)
    state = CKAMapState().update([a[:30] for a in layers])
    with pytest.raises(ValueError, match="xs must hold 4 layers as in earlier updates; got 3"):
        state.update([a[30:] for a in layers[:3]])
    with pytest.raises(ValueError, match=r"xs\[1\] must have 4 features as in earlier updates; "
                                         "got 3"):
        state.update([layers[0][30:], layers[1][30:, :3], layers[2][30:], layers[3][30:]])
    with pytest.raises(ValueError, match="expected ys=None"):
        state.update([a[30:] for a in layers], [layers[0][30:]])
    with pytest.raises(ValueError, match="same number of samples"):
        state.update([layers[0][30:], layers[1][31:], layers[2][30:], layers[3][30:]])
    bad = layers[2][30:].copy()
    bad[25, 1] = np.nan
    with pytest.raises(ValueError, match=r"xs\[2\] must contain only finite values"):
        state.update([layers[0][30:], layers[1][30:], bad, layers[3][30:]])
    assert state.n == 30  # nothing of the bad batch was added
    np.testing.assert_allclose(state.result(), pyckafast.cka_matrix([a[:30] for a in layers]),
                               atol=1e-12)
    with pytest.raises(TypeError, match="xs must be a non-empty list"):
        state.update(layers[0])
    fresh = CKAMapState()
    with pytest.raises(ValueError, match="finite"):
        fresh.update([layers[0][30:], layers[1][30:], bad, layers[3][30:]])
    fresh.update(layers[:2])  # a failed first batch fixed nothing
    assert fresh.n == 60 and fresh.result().shape == (2, 2)
    other = CKAMapState().update([layers[0], layers[1]])
    with pytest.raises(ValueError, match="other must map the same layers"):
        CKAMapState().update(layers).merge(other)


def test_merge_refuses_itself_and_mixed_estimators(rng):
    layers = _layers(rng, 60)
    state = CKAMapState().update(layers)
    with pytest.raises(ValueError, match="disjoint .* the state itself"):
        state.merge(state)
    with pytest.raises(ValueError, match="debiased"):
        state.merge(CKAMapState(debiased=False).update(layers))
    with pytest.raises(TypeError, match="CKAMapState"):
        state.merge(pyckafast.LinearCKAState())
    biased = CKAMapState(debiased=False).update(layers)
    with pytest.raises(ValueError, match="debiased=False"):
        biased.result(debiased=True)
    with pytest.raises(ValueError, match="no samples yet"):
        CKAMapState().result()


def test_merge_into_an_empty_state_copies(rng):
    layers = _layers(rng, 90)
    source = CKAMapState().update([a[:40] for a in layers])
    state = CKAMapState().merge(source)
    state.update([a[40:] for a in layers])  # must not change the source
    assert source.n == 40 and state.n == 90
    np.testing.assert_allclose(source.result(), pyckafast.cka_matrix([a[:40] for a in layers]),
                               atol=1e-12)
    np.testing.assert_allclose(state.result(), pyckafast.cka_matrix(layers), atol=1e-12)


def test_state_does_not_grow_with_n(rng):
    layers = _layers(rng, 400)
    state = CKAMapState().update([a[:50] for a in layers])
    before = state.nbytes
    widths = [a.shape[1] for a in layers]
    own = sum(p * p + 3 * p for p in widths)  # gram, sums, qb, shift
    cross = sum(widths[i] * widths[j] + widths[i] + widths[j]
                for i in range(4) for j in range(i + 1, 4))
    assert before == 8 * (own + cross)
    state.update([a[50:] for a in layers])
    assert state.nbytes == before


@pytest.mark.parametrize("symmetric", [True, False])
def test_save_load_round_trip(tmp_path, rng, symmetric):
    layers = _drifting(rng)
    ys = None if symmetric else layers[:2]
    named = dict(zip("abcd", layers))
    state = CKAMapState().update({k: v[:120] for k, v in named.items()},
                                 None if ys is None else [a[:120] for a in ys])
    state.save(tmp_path / "map.state")
    loaded = CKAMapState.load(tmp_path / "map.state")
    assert loaded.n == 120 and loaded.names_a == list("abcd")
    np.testing.assert_array_equal(loaded.result(debiased=True), state.result(debiased=True))
    loaded.update({k: v[120:] for k, v in named.items()},
                  None if ys is None else [a[120:] for a in ys])
    for debiased in (False, True):
        np.testing.assert_allclose(loaded.result(debiased=debiased),
                                   pyckafast.cka_matrix(layers, ys, debiased=debiased),
                                   atol=1e-12)


def test_load_validates_the_file(tmp_path, rng):
    layers = _layers(rng, 50)
    CKAMapState(debiased=False).update(layers).save(tmp_path / "ok.npz")
    arrays = dict(np.load(tmp_path / "ok.npz"))
    bad = dict(arrays, cross0_2_xy=np.zeros((6, 2)))
    np.savez(tmp_path / "shape.npz", **bad)
    with pytest.raises(ValueError, match=r"'cross0_2_xy' must be a real array of shape \(6, 3\)"):
        CKAMapState.load(tmp_path / "shape.npz")
    nan = dict(arrays, own1_gram=np.full((4, 4), np.nan))
    np.savez(tmp_path / "nan.npz", **nan)
    with pytest.raises(ValueError, match="'own1_gram' holds NaN"):
        CKAMapState.load(tmp_path / "nan.npz")
    missing = {k: v for k, v in arrays.items() if k != "own3_total"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match="no 'own3_total' field"):
        CKAMapState.load(tmp_path / "missing.npz")
    pyckafast.LinearCKAState().update(layers[0], layers[1]).save(tmp_path / "linear.npz")
    with pytest.raises(ValueError, match="not a CKAMapState file"):
        CKAMapState.load(tmp_path / "linear.npz")
    np.savez(tmp_path / "obj.npz", kind=np.array(["CKAMapState", None], dtype=object))
    with pytest.raises(ValueError, match="not a CKAMapState file"):
        CKAMapState.load(tmp_path / "obj.npz")  # never unpickled
    with pytest.raises(ValueError, match="debiased=False"):
        CKAMapState.load(tmp_path / "ok.npz").result(debiased=True)


def test_a_zero_variance_layer_gives_nan(rng):
    layers = _layers(rng, 80)
    layers[1] = np.full((80, 4), 3.0)
    state = CKAMapState().update(layers)
    with pytest.warns(RuntimeWarning, match="zero variance"):
        got = state.result()
    assert np.isnan(got[1]).all() and np.isnan(got[:, 1]).all()
    assert got[0, 0] == 1.0


# ---- device batches through the GPU linear producer (emulated engine) --------------------------
@pytest.fixture
def engine(monkeypatch):
    pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ host twins")
    from gpu_emulation import EmulatedEngine

    engine = EmulatedEngine()
    fake = types.ModuleType("emulated_cuda")

    def linear_terms(x, y, *, debiased, chunk_size=None, precision="highest"):
        assert isinstance(x, Samples) and isinstance(y, Samples)
        return gpu_linear.linear_terms(engine, x, y, x.n, debiased=debiased,
                                       chunk_size=chunk_size, precision=precision)

    def device_array(s):  # the layers' moments once per layer and batch: count the copies
        engine.calls["device_array"] = engine.calls.get("device_array", 0) + 1
        return np.asarray(s.data, dtype=s.dtype)

    fake.linear_terms, fake.device_array, fake.array_module = linear_terms, device_array, lambda: np
    real_load = dispatch._load
    monkeypatch.setattr(dispatch, "_load",
                        lambda name: (fake, None) if name == "cuda" else real_load(name))
    return engine


def test_host_batches_after_device_batches_still_restart_far_chunks(engine, rng, monkeypatch,
                                                                    tmp_path):
    from pyckafast._cpu import moments as cpu_moments

    layers = _drifting(rng, 150)
    state = CKAMapState(backend="cuda").update([a[:50] for a in layers])
    state.save(tmp_path / "gpu.npz")
    parts = []
    real = cpu_moments.feed

    def spy(*args, **kwargs):
        made = real(*args, **kwargs)
        parts.extend(made[1:])  # parts about far chunks' own means
        return made

    monkeypatch.setattr(cpu_moments, "feed", spy)
    for s in (state, CKAMapState.load(tmp_path / "gpu.npz")):
        s.backend = "auto"
        parts.clear()
        for lo in range(50, 150, 25):
            s.update([a[lo:lo + 25] for a in layers])
        assert parts  # the rows 100.. (another mean) were accumulated about their own mean
        np.testing.assert_allclose(s.result(debiased=True),
                                   pyckafast.cka_matrix(layers, debiased=True), atol=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_device_batches_go_through_the_cuda_producer(engine, rng, symmetric):
    layers = _drifting(rng, 150)
    ys = None if symmetric else layers[2:]
    host = _sharded(layers, ys, [0, 60])[0]  # a CPU shard merged with GPU batches
    state = CKAMapState(backend="cuda")
    for lo in range(60, 150, 45):
        state.update([a[lo:lo + 45] for a in layers],
                     None if ys is None else [a[lo:lo + 45] for a in ys])
    assert engine.calls["device_array"] == 2 * len(layers) + (0 if ys is None else 2 * len(ys))
    state.merge(host)  # each layer went to the device once per batch (of two)
    for debiased in (False, True):
        np.testing.assert_allclose(state.result(debiased=debiased),
                                   pyckafast.cka_matrix(layers, ys, debiased=debiased),
                                   atol=1e-12)


def test_one_layer_on_the_device(engine, rng):
    x = _layers(rng, 80)[0]
    state = CKAMapState(backend="cuda").update([x])
    assert engine.calls["moments"] > 0
    assert state.result().tolist() == [[1.0]]
    assert state.hsic()[1][0] == pytest.approx(pyckafast.linear_hsic(x, x), rel=1e-12)
    assert prepare(x, "x").p == 6


@pytest.mark.gpu
def test_cupy_batches_on_a_real_gpu(rng):
    """scripts/gpu_check.sh runs ``-m gpu``; skipped without CuPy and a device."""
    cupy = pytest.importorskip("cupy", reason="needs CuPy")
    if dispatch.probe("cuda") is not None:
        pytest.skip(f"no usable GPU: {dispatch.probe('cuda')}")
    layers = _drifting(rng, 200)
    state = CKAMapState()
    for lo in range(0, 200, 64):
        state.update([cupy.asarray(a[lo:lo + 64]) for a in layers])
    for debiased in (False, True):
        np.testing.assert_allclose(state.result(debiased=debiased),
                                   pyckafast.cka_matrix(layers, debiased=debiased), atol=1e-10)


def test_data_of_extreme_magnitude_are_scaled_exactly(rng):
    """Rows near 2^170 (products would overflow float64 sums of squares of squares) are scaled
    by powers of two; batches of another magnitude get another scale and merge exactly."""
    layers = _layers(rng, 200)
    for a in layers:
        a[100:] *= 2.0 ** -9  # the later batches: another power-of-two scale
    big = [a * 2.0 ** 170 for a in layers]  # exact
    state = CKAMapState()
    for lo in range(0, 200, 40):
        state.update([a[lo:lo + 40] for a in big])
    scales = {m.scale for m in state._state.sums.own}
    assert scales and all(s < 2.0 ** -100 for s in scales)
    for debiased in (False, True):
        np.testing.assert_allclose(state.result(debiased=debiased),
                                   pyckafast.cka_matrix(layers, debiased=debiased), atol=1e-12)
        hxy, hxx, _ = state.hsic(debiased=debiased)
        want = pyckafast.linear_hsic(layers[0], layers[1], debiased=debiased)
        assert hxy[0, 1] == pytest.approx(want * 2.0 ** 680, rel=1e-10)
        assert np.isfinite(hxx).all()


@pytest.mark.parametrize("debiased", [False, True])
def test_one_shot_map_in_several_passes_with_far_chunks(rng, monkeypatch, debiased):
    """Pairs split over passes (a small MAX_CROSS_BYTES): later passes make no Grams and their
    far-chunk parts land in the first pass's frames; the map is the in-memory one."""
    from pyckafast._cpu import linear_map, moments

    layers = _drifting(rng, 1200)
    monkeypatch.setattr(linear_map, "MAX_CROSS_BYTES", 8 * 6 * 6)  # one pair per pass
    monkeypatch.setattr(moments, "_CHUNKS_BYTES", 1)  # 256-row chunks: the drift is far
    got = pyckafast.cka_matrix(layers, debiased=debiased)
    monkeypatch.undo()
    want = np.array([[linear_cka_ref(a, b, debiased) for b in layers] for a in layers])
    np.testing.assert_allclose(got, want, atol=1e-10)
