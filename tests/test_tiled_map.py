"""The tiled sample-space map (pyckafast._cpu.tiled_map): every layer's Gram tile once per block
pair, every wanted pair reduced from the tiles; and cka_matrix's routing of wide layers to it."""

from __future__ import annotations

import types

import numpy as np
import pytest
from _reference import cka_from_grams, linear_cka_ref, sq_distances

import pyckafast
from pyckafast._core import combine
from pyckafast._cpu import linear_map, tiled_map
from pyckafast._cpu.tiled_map import map_tile_rows, tiled_map_terms

DEBIASED = pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])


def _layers(rng, n, widths, mean=0.0, dtype=np.float64):
    """Related layers of the given widths (each a noisy linear image of a common signal)."""
    z = rng.normal(size=(n, 12))
    out = []
    for k, p in enumerate(widths):
        a = z @ rng.normal(size=(12, p)) + (0.5 + k) * rng.normal(size=(n, p))
        out.append((a + mean).astype(dtype))
    return out


def _cka(terms, debiased, zero=(False, False)):
    h = combine.kernel_hsic(terms, debiased)._replace(zero_x=zero[0], zero_y=zero[1])
    return combine.cka_from_hsic(h)


@DEBIASED
@pytest.mark.parametrize("widths", [(300, 40, 520), (9, 25, 4)], ids=["p>n", "p<n"])
def test_symmetric_pairs_equal_linear_cka(rng, debiased, widths):
    n = 203  # not a multiple of the tile
    layers = _layers(rng, n, widths)
    pairs = [(0, 1), (0, 2), (1, 2)]
    terms, zero = tiled_map_terms(layers, pairs, tile=64)
    assert zero == [False] * 3 and set(terms) == set(pairs)
    for i, j in pairs:
        want = pyckafast.linear_cka(layers[i], layers[j], debiased=debiased)
        assert _cka(terms[i, j], debiased) == pytest.approx(want, abs=1e-10)


@DEBIASED
def test_two_sided_pairs_and_a_layer_with_itself(rng, debiased):
    xs = _layers(rng, 150, (70, 200))
    ys = _layers(rng, 150, (33, 180, 5))
    reps = [*xs, *ys]
    pairs = [(i, 2 + j) for i in range(2) for j in range(3)] + [(1, 1)]
    terms, _ = tiled_map_terms(reps, pairs, tile=64)
    for i, j in pairs:
        want = linear_cka_ref(reps[i], reps[j], debiased)
        assert _cka(terms[i, j], debiased) == pytest.approx(want, abs=1e-10)


@DEBIASED
def test_float32_with_a_large_mean(rng, debiased):
    layers = _layers(rng, 180, (260, 50, 400), mean=1e3, dtype=np.float32)
    terms, _ = tiled_map_terms(layers, [(0, 1), (0, 2), (1, 2)], tile=128)
    for (i, j), t in terms.items():
        assert t.eps == np.finfo(np.float32).eps
        assert _cka(t, debiased) == pytest.approx(linear_cka_ref(layers[i], layers[j], debiased),
                                                  abs=1e-5)


def test_memmap_inputs_are_read_block_by_block(rng, tmp_path):
    layers = _layers(rng, 170, (90, 130))
    maps = []
    for k, a in enumerate(layers):
        np.save(tmp_path / f"l{k}.npy", a)
        maps.append(np.load(tmp_path / f"l{k}.npy", mmap_mode="r"))
    terms, _ = tiled_map_terms(maps, [(0, 1)], tile=64)
    in_memory, _ = tiled_map_terms(layers, [(0, 1)], tile=64)
    assert terms[0, 1].s_kl == in_memory[0, 1].s_kl
    assert _cka(terms[0, 1], True) == pytest.approx(linear_cka_ref(*layers, True), abs=1e-10)


def test_only_the_layers_in_pairs_are_read(rng):
    layers = _layers(rng, 60, (8, 9, 10))
    layers[2] = layers[2].copy()
    layers[2][3, 1] = np.nan  # never read
    terms, zero = tiled_map_terms(layers, [(0, 1)], tile=32)
    assert set(terms) == {(0, 1)} and zero == [False, False, False]
    with pytest.raises(ValueError, match=r"xs\[2\] must contain only finite values"):
        tiled_map_terms(layers, [(0, 2)], names=["xs[0]", "xs[1]", "xs[2]"])
    with pytest.raises(ValueError, match=r"reps\[1\] must have the n = 60 rows"):
        tiled_map_terms([layers[0], layers[1][:50]], [(0, 1)])


def test_progress_is_reported_per_block_pair(rng):
    layers = _layers(rng, 100, (5, 6))
    seen = []
    tiled_map_terms(layers, [(0, 1)], tile=32, progress=lambda done, total: seen.append(
        (done, total)))
    blocks = 4  # 100 rows in tiles of 32
    total = blocks * (blocks + 1) // 2
    assert seen == [(k, total) for k in range(1, total + 1)]


def _shifted_brute(a, kernel):
    """Brute-force E = 2^m exp(-gamma d2) - c (zero diagonal) of an RbfKernel."""
    gamma, c, m = kernel.args()
    e = 2.0 ** m * np.exp(-gamma * sq_distances(a)) - c
    np.fill_diagonal(e, 0.0)
    return e


def test_rbf_tiles_equal_the_brute_force_terms(rng):
    layers = _layers(rng, 90, (30, 7, 50), mean=3.0)
    gammas = [0.02, 0.3, 0.01]
    terms, zero = tiled_map_terms(layers, [(0, 1), (1, 2), (0, 2)], tile=32, kernel="rbf",
                                  gammas=gammas)
    kernels, _ = tiled_map.rbf_kernels(gammas, None, layers, [np.dtype(np.float64)] * 3)
    assert zero == [False] * 3
    assert max(k.m for k in kernels) > 50  # a narrow kernel: scaled entries, c << 2^m
    for (i, j), t in terms.items():
        e, f = _shifted_brute(layers[i], kernels[i]), _shifted_brute(layers[j], kernels[j])
        assert (t.log2_k, t.log2_l) == (kernels[i].log2_scale, kernels[j].log2_scale)
        assert (t.const_diag_k, t.const_diag_l) == (kernels[i].diag, kernels[j].diag)
        assert t.diag_k is None and t.diag_l is None
        assert t.s_kl == pytest.approx(float((e * f).sum()), rel=1e-10)
        assert t.s_kk == pytest.approx(float((e * e).sum()), rel=1e-10)
        # a row sum adds entries of both signs: its error is relative to the sum of |E|
        assert np.all(np.abs(t.row_k - e.sum(1)) <= 1e-10 * np.abs(e).sum(1))
        assert np.all(np.abs(t.row_l - f.sum(1)) <= 1e-10 * np.abs(f).sum(1))
        grams = [np.exp(-g * sq_distances(a)) for g, a in ((gammas[i], layers[i]),
                                                             (gammas[j], layers[j]))]
        for debiased in (False, True):  # against the float64 n x n Grams
            assert _cka(t, debiased) == pytest.approx(cka_from_grams(*grams, debiased), rel=1e-10)
    with pytest.raises(ValueError, match="gammas"):
        tiled_map_terms(layers, [(0, 1)], kernel="rbf")


def test_tile_rows_keep_the_stack_and_blocks_in_budget():
    rows = map_tile_rows([16384] * 8, 4)
    assert rows % 64 == 0 and 8 * rows * rows * 8 <= tiled_map._STACK_BYTES
    assert 2 * rows * 16384 * 4 <= tiled_map._BLOCKS_BYTES
    assert map_tile_rows([4], 8) == tiled_map._MAX_TILE


# ---- cka_matrix routes wide layers through the tiled pass ---------------------------------------
ROUTES = {  # layers (n = 120): 0: p=400 and 2: p=300 wide, 1: p=6 and 3: p=8 narrow
    # symmetric: every layer pairs with a wide one, so all pairs share the tiled pass's tiles
    "symmetric": (None, {"tiled": [[(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]],
                         "features": []}),
    # reps = xs + ys = [L0, L1, L1, L3] (pairs (i, 2 + j)): layer 1 pairs with no wide layer
    "two-sided, mixed": ([1, 3], {"tiled": [[(0, 2), (0, 3)]], "features": [[(1, 2), (1, 3)]]}),
    # reps = [L0, L1, L2, L3]: (1, 3) is narrow but both its layers are in the tiled pass
    "two-sided, free pair": ([2, 3], {"tiled": [[(0, 2), (0, 3), (1, 2), (1, 3)]],
                                      "features": []}),
}


@DEBIASED
@pytest.mark.parametrize("route", list(ROUTES))
def test_cka_matrix_sends_wide_layers_to_one_tiled_pass(monkeypatch, rng, debiased, route):
    layers = _layers(rng, 120, (400, 6, 300, 8))
    picks, expected = ROUTES[route]
    xs = layers if picks is None else layers[:2]
    ys = None if picks is None else [layers[k] for k in picks]
    calls = {"tiled": [], "features": []}
    real_tiled, real_features = tiled_map.tiled_map_terms, linear_map.map_terms

    def tiled(reps, pairs, **kw):
        calls["tiled"].append(sorted(pairs))
        return real_tiled(reps, pairs, **kw)

    def features(reps, names, pairs, debiased, **kw):
        calls["features"].append(sorted(pairs))
        return real_features(reps, names, pairs, debiased, **kw)

    monkeypatch.setattr(tiled_map, "tiled_map_terms", tiled)
    monkeypatch.setattr(linear_map, "map_terms", features)
    got = pyckafast.cka_matrix(xs, ys, debiased=debiased)
    assert calls == expected
    other = xs if ys is None else ys
    for i in range(len(xs)):
        for j in range(len(other)):
            if ys is None and i == j:
                assert got[i, j] == 1.0
            else:
                want = linear_cka_ref(xs[i], other[j], debiased)
                assert got[i, j] == pytest.approx(want, abs=1e-10)


def test_cka_matrix_form_tiles_and_features_agree(rng):
    layers = _layers(rng, 97, (12, 30, 5))
    seen = []
    tiles = pyckafast.cka_matrix(layers, form="tiles", tile=32,
                                 progress=lambda d, t: seen.append((d, t)))
    features = pyckafast.cka_matrix(layers, form="features")
    np.testing.assert_allclose(tiles, features, atol=1e-12)
    assert seen[-1] == (10, 10)  # 4 blocks: 10 block pairs
    with pytest.raises(ValueError, match="'form' parameter of cka_matrix"):
        pyckafast.cka_matrix(layers, form="gram")


def test_cka_matrix_zero_variance_wide_layer_is_nan(rng):
    layers = _layers(rng, 50, (80, 6))
    layers.append(np.full((50, 70), 4.0))
    with pytest.warns(RuntimeWarning, match="zero variance"):
        got = pyckafast.cka_matrix(layers)
    with pytest.warns(RuntimeWarning, match="zero variance"):
        want = pyckafast.linear_cka(layers[0], layers[2])
    assert np.isnan(want) and np.isnan(got[0, 2]) and np.isnan(got[2, 2])
    assert not np.isnan(got[0, 1])


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "two-sided"])
def test_cka_matrix_rbf_form_tiles_equals_the_per_pair_passes(rng, symmetric):
    layers = _layers(rng, 110, (40, 6, 90), mean=2.0)
    ys = None if symmetric else layers[1:]
    for debiased in (False, True):
        kw = dict(kernel="rbf", debiased=debiased, threshold=0.8)
        tiled = pyckafast.cka_matrix(layers, ys, form="tiles", tile=32, **kw)
        per_pair = pyckafast.cka_matrix(layers, ys, **kw)
        np.testing.assert_allclose(tiled, per_pair, rtol=0, atol=1e-9)


# ---- the same map over Dask row chunks ----------------------------------------------------------
@pytest.mark.parametrize("kernel", ["linear", "rbf", "rbf-narrow"])
def test_dask_map_equals_the_in_memory_map(rng, kernel):
    da = pytest.importorskip("dask.array")
    import dask

    from pyckafast._dask.map import tiled_map_terms as dask_map_terms

    layers = _layers(rng, 230, (60, 9, 140), mean=5.0)
    layers[1] = layers[1].astype(np.float32)
    chunked = [da.from_array(layers[0], chunks=(70, 30)), da.from_array(layers[1], chunks=(100, 9)),
               layers[2]]  # uneven, misaligned chunks; a NumPy array beside them
    pairs = [(0, 1), (0, 2), (1, 2), (2, 2)]
    # gamma = 1 / (mean squared distance): kernels far from 0 and 1
    # (narrow: u near 80, scaled entries and the float32 layer's tiles in float64)
    factor = 80.0 if kernel == "rbf-narrow" else 1.0
    gammas = [factor / (2 * a.astype(np.float64).var(0).sum()) for a in layers] \
        if kernel != "linear" else None
    kernel = kernel[:3] if kernel != "linear" else kernel
    with dask.config.set(scheduler="synchronous"):
        got, zero = dask_map_terms(chunked, pairs, tile=32, kernel=kernel, gammas=gammas)
    want, zero_in_memory = tiled_map_terms(layers, pairs, tile=32, kernel=kernel, gammas=gammas)
    if factor > 1:
        assert min(t.log2_k for t in want.values()) < -100  # the narrow kernels are scaled
    assert zero == zero_in_memory == [False] * 3
    for pair in pairs:
        # Layer 1 is float32: its Gram tiles come from sgemm, whose rounding of an entry depends
        # on the tile it is in (the Dask chunk bounds 70/140/210 give other tile shapes than the
        # in-memory 32-row blocks) and on the CPU's kernel (AVX-512 happened to agree bit for
        # bit, AVX2 does not). Entry errors are <= p eps32 |x_i||x_j| each (p = 9); the two
        # roundings are independent and CKA averages them over n^2 entries, so the two maps
        # differ by ~eps32 / n (seen: <= 3.4e-10, with each map ~1e-9 from the float64 value).
        # With tiles whose entries do not depend on the tile the maps agree to 4e-16, so 1e-8
        # (1/12 eps32) is float32 rounding only; float64-only pairs must agree to 1e-12.
        tol = 1e-8 if 1 in pair else 1e-12
        for debiased in (False, True):
            assert _cka(got[pair], debiased) == pytest.approx(_cka(want[pair], debiased),
                                                              abs=tol)
        assert (got[pair].log2_k, got[pair].const_diag_k) == (want[pair].log2_k,
                                                               want[pair].const_diag_k)
        if kernel == "linear" and layers[pair[0]].dtype == np.float32:
            # Row sums of a centred Gram cancel to ~0: what is left is the float32 rounding of
            # the entries, each within p eps32 sum_k |x_ik x_jk| (gamma_p); the two maps round
            # independently, so they differ by at most twice the sum of those bounds over j.
            a = np.abs(layers[pair[0]].astype(np.float64)
                       - layers[pair[0]].mean(0, dtype=np.float64))
            bound = 2 * a.shape[1] * np.finfo(np.float32).eps * (a @ a.sum(0))
            assert np.all(np.abs(got[pair].row_k - want[pair].row_k) <= bound)
            continue
        np.testing.assert_allclose(got[pair].row_k, want[pair].row_k, rtol=1e-9,
                                   atol=1e-6 * max(1.0, float(np.abs(want[pair].row_k).max())))


def test_dask_map_names_a_bad_layer(rng):
    da = pytest.importorskip("dask.array")
    import dask

    from pyckafast._dask.map import tiled_map_terms as dask_map_terms

    layers = _layers(rng, 50, (4, 5))
    layers[1][7, 2] = np.inf
    with dask.config.set(scheduler="synchronous"), pytest.raises(
            ValueError, match=r"xs\[1\] must contain only finite values"):
        dask_map_terms([da.from_array(a, chunks=20) for a in layers], [(0, 1)],
                       names=["xs[0]", "xs[1]"])
    with pytest.raises(ValueError, match=r"reps\[1\] must have the n = 50 rows"):
        dask_map_terms([da.from_array(layers[0]), da.from_array(layers[1][:40])], [(0, 1)])


# ---- the GPU route: the tiled map through the engine's array module (emulated) ------------------
def _proxy_module() -> types.ModuleType:
    """An array module that is not NumPy (so the tiled map takes the device code path: host rows
    uploaded block by block with ``xp.asarray``, results brought back with ``_host``) but
    computes with NumPy."""
    xp = types.ModuleType("proxy_xp")
    xp.__getattr__ = lambda name: getattr(np, name)
    return xp


@pytest.fixture
def gpu_ops(monkeypatch):
    pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ host twins")
    from gpu_emulation import EmulatedEngine

    from pyckafast._core import dispatch
    from pyckafast._gpu import linear as gpu_linear

    engine = EmulatedEngine()
    ops = types.ModuleType("emulated_cuda")
    ops.linear_terms = lambda x, y, *, debiased, chunk_size=None, precision="highest": (
        gpu_linear.linear_terms(engine, x, y, x.n, debiased=debiased, chunk_size=chunk_size,
                                precision=precision))
    ops.array_module = _proxy_module
    ops.device_array = lambda s: np.asarray(s.data, dtype=s.dtype)
    real_load = dispatch._load
    monkeypatch.setattr(dispatch, "_load",
                        lambda name: (ops, None) if name == "cuda" else real_load(name))
    ops.engine = engine
    return ops


def test_tiled_map_through_another_array_module(rng):
    layers = _layers(rng, 130, (200, 7), mean=50.0, dtype=np.float32)
    for kernel, gammas in (("linear", None), ("rbf", [1e-3, 2e-2])):
        got, zero = tiled_map_terms(layers, [(0, 1)], tile=64, xp=_proxy_module(), kernel=kernel,
                                    gammas=gammas)
        want, _ = tiled_map_terms(layers, [(0, 1)], tile=64, kernel=kernel, gammas=gammas)
        # the device path sums the RBF row norms in float64 (the host path in float32)
        assert got[0, 1].s_kl == pytest.approx(want[0, 1].s_kl, rel=0 if gammas is None else 1e-6)
        assert zero == [False, False]


@DEBIASED
def test_cka_matrix_on_the_gpu_sends_wide_layers_to_the_tiled_map(gpu_ops, rng, debiased,
                                                                   monkeypatch):
    layers = _layers(rng, 120, (400, 6, 8))
    xs, ys = layers[1:], [layers[0], layers[2]]  # reps [L1, L2, L0, L2]
    seen = []
    real = tiled_map.tiled_map_terms

    def tiled(reps, pairs, **kw):
        seen.append((sorted(pairs), kw["xp"].__name__))
        return real(reps, pairs, **kw)

    monkeypatch.setattr(tiled_map, "tiled_map_terms", tiled)
    got = pyckafast.cka_matrix(xs, ys, debiased=debiased, backend="cuda")
    assert seen == [([(0, 2), (1, 2)], "proxy_xp")]  # the pairs with L0; (i, L2) per pair
    assert gpu_ops.engine.calls["moments"] > 0
    for i in range(2):
        for j in range(2):
            want = linear_cka_ref(xs[i], ys[j], debiased)
            assert got[i, j] == pytest.approx(want, abs=1e-10)


def test_cka_matrix_of_wide_memmaps(rng, tmp_path):
    layers = _layers(rng, 90, (150, 120, 5), mean=2.0, dtype=np.float32)
    maps = []
    for k, a in enumerate(layers):
        np.save(tmp_path / f"l{k}.npy", a)
        maps.append(np.load(tmp_path / f"l{k}.npy", mmap_mode="r"))
    got = pyckafast.cka_matrix(maps, debiased=True, tile=32)
    np.testing.assert_array_equal(got, pyckafast.cka_matrix(layers, debiased=True, tile=32))
    assert got[0, 2] == pytest.approx(linear_cka_ref(layers[0], layers[2], True), abs=1e-5)


def test_cka_matrix_rbf_sends_deep_pairs_to_the_tiled_pass(monkeypatch, rng):
    layers = _layers(rng, 100, (900, 200, 600, 6), mean=1.0)
    seen = []
    real = tiled_map.tiled_map_terms

    def tiled(reps, pairs, **kw):
        seen.append(sorted(pairs))
        return real(reps, pairs, **kw)

    monkeypatch.setattr(tiled_map, "tiled_map_terms", tiled)
    got = pyckafast.cka_matrix(layers, kernel="rbf", debiased=True)
    # (0, 1) and (0, 2) are deep, (1, 2) comes free; the narrow layer 3 pairs one pass each
    assert seen == [[(0, 1), (0, 2), (1, 2)]]
    per_pair = pyckafast.cka_matrix(layers, kernel="rbf", debiased=True, form="features")
    assert len(seen) == 1
    np.testing.assert_allclose(got, per_pair, rtol=0, atol=1e-9)
    pyckafast.cka_matrix(layers, kernel="rbf", backend="numpy")  # the reference: per pair
    assert len(seen) == 1


# ---- on a real GPU (scripts/gpu_check.sh runs ``-m gpu``; skipped without CuPy and a device) ----
def _cupy():
    from pyckafast._core import dispatch

    cupy = pytest.importorskip("cupy", reason="needs CuPy")
    if dispatch.probe("cuda") is not None:
        pytest.skip(f"no usable GPU: {dispatch.probe('cuda')}")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_tiled_map_on_a_gpu_equals_the_host_map(rng, kernel):
    cupy = _cupy()
    layers = _layers(rng, 300, (700, 40, 900), mean=1e3, dtype=np.float32)
    pairs = [(0, 1), (0, 2), (1, 2)]
    gammas = [1 / (2 * a.astype(np.float64).var(0).sum()) for a in layers] \
        if kernel == "rbf" else None
    want, _ = tiled_map_terms(layers, pairs, tile=128, kernel=kernel, gammas=gammas)
    for reps in ([cupy.asarray(a) for a in layers], layers):  # device arrays; host rows streamed
        got, zero = tiled_map_terms(reps, pairs, tile=128, xp=cupy, kernel=kernel, gammas=gammas)
        assert zero == [False] * 3
        for pair in pairs:
            for debiased in (False, True):
                assert _cka(got[pair], debiased) == pytest.approx(_cka(want[pair], debiased),
                                                                  abs=1e-6)


@pytest.mark.gpu
def test_cka_matrix_of_wide_gpu_layers(rng):
    cupy = _cupy()
    layers = _layers(rng, 200, (600, 7, 500))
    got = pyckafast.cka_matrix([cupy.asarray(a) for a in layers], debiased=True)
    np.testing.assert_allclose(got, pyckafast.cka_matrix(layers, debiased=True), atol=1e-10)


@pytest.mark.parametrize("magnitude", [2.0 ** 70, 2.0 ** -70], ids=["huge", "tiny"])
def test_float32_of_extreme_magnitude_is_scaled(rng, magnitude):
    """float32 Gram tiles of rows near 1e21 would overflow (near 1e-21 underflow): the centred
    rows are multiplied by a power of two and HSIC scaled back through the terms' log2."""
    da = pytest.importorskip("dask.array")
    import dask

    from pyckafast._dask.map import tiled_map_terms as dask_map_terms

    base = _layers(rng, 120, (150, 9))
    layers = [(a * magnitude).astype(np.float32) for a in base]
    terms, zero = tiled_map_terms(layers, [(0, 1)], tile=64)
    with dask.config.set(scheduler="synchronous"):
        chunked, _ = dask_map_terms([da.from_array(a, chunks=50) for a in layers], [(0, 1)],
                                    tile=64)
    assert zero == [False, False]
    for t in (terms[0, 1], chunked[0, 1]):
        assert t.log2_k != 0 and np.isfinite(t.s_kl)
        for debiased in (False, True):
            want = linear_cka_ref(*layers, debiased)  # of the float32 values
            assert _cka(t, debiased) == pytest.approx(want, abs=1e-5)
        h = combine.kernel_hsic(t, False).unscaled()
        assert h.xy == pytest.approx(pyckafast.linear_hsic(*layers), rel=1e-4)
    got = pyckafast.cka_matrix(layers, form="tiles")
    assert got[0, 1] == pytest.approx(linear_cka_ref(*layers), abs=1e-5)


# ---- narrow RBF bandwidths in the tiled map ------------------------------------------------------
# The tiled map sums E = 2^m K - c per kernel, as every RBF producer does
# (pyckafast/_core/rbf_entry.py); with E = K - 1 (before) the debiased estimator cancelled the
# -1s at narrow bandwidths: threshold 0.1 lost every digit. Bounds as in tests/test_rbf_narrow.py
# (per-pair rbf_cka, itself checked there against the float64 n x n reference).
def _narrow_tol(dtype, threshold):
    u = 1.0 / (2.0 * threshold ** 2)
    if dtype == np.float32 and u > 64:  # both run in float64 (rbf_entry.pass_dtype)
        return 1e-6
    return 1e-10 if dtype == np.float64 else 3e-7 * max(1.0, u) + 1e-6


@pytest.fixture(scope="module")
def narrow_layers():
    from _reference import correlated_tanh

    x, y = correlated_tanh(np.random.default_rng(3), 200, 24, 12, mean=2.0)
    return [x, y, np.tanh(x[:, :16]) + 2.0]


@pytest.mark.filterwarnings("ignore:the RBF kernel of")  # biased CKA at 0.05: K is I
@pytest.mark.parametrize("threshold", [0.05, 0.1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_cka_matrix_rbf_tiles_narrow_bandwidths(narrow_layers, dtype, threshold):
    layers = [a.astype(dtype) for a in narrow_layers]
    for debiased in (False, True):
        got = pyckafast.cka_matrix(layers, kernel="rbf", debiased=debiased, threshold=threshold,
                                   form="tiles", tile=64)
        for i, j in ((0, 1), (0, 2), (1, 2)):
            want = pyckafast.rbf_cka(layers[i], layers[j], threshold=threshold,
                                     debiased=debiased, tile=64)
            assert abs(got[i, j] - want) <= _narrow_tol(dtype, threshold) * abs(want), (
                debiased, i, j, got[i, j], want)


def test_tiled_map_rbf_narrow_explicit_sigma_matches_reference(narrow_layers):
    # an explicit sigma: the typical entry from sampled pairs (as rbf_cka); against the
    # float64 n x n reference
    from _reference import rbf_cka_ref

    x, y = narrow_layers[:2]
    sigma = (0.06 * np.sqrt(2 * 24), 0.06 * np.sqrt(2 * 12))  # u near 140 per side
    got = pyckafast.cka_matrix([x], [y], kernel="rbf", debiased=True, sigma=sigma, form="tiles",
                               tile=64)[0, 0]
    want = rbf_cka_ref(x, y, sigma=sigma, debiased=True)
    assert abs(got - want) <= 1e-10 * abs(want)


# ---- the same pass run as batches arrive (pyckafast._torch.tiles.StreamedTiles) -------------
def _streamed(layers, sizes, rows=None, resident=None):
    torch = pytest.importorskip("torch")
    from pyckafast._torch.tiles import StreamedTiles

    def read(r, start, out):
        assert resident is None, "a resident pass reads nothing back"
        np.copyto(out, layers[r][start:start + len(out)])
        return out

    tiles = StreamedTiles([f"layers[{r}]" for r in range(len(layers))], read, rows=rows,
                          resident=resident)
    lo = 0
    for size in sizes:
        tiles.add([torch.from_numpy(np.ascontiguousarray(a[lo:lo + size])) for a in layers])
        lo += size
    assert lo == len(layers[0])
    return tiles


@DEBIASED
@pytest.mark.parametrize("sizes, rows, resident", [
    ([40] * 5 + [3], None, None),  # every batch in one window
    ([40] * 5 + [3], 80, None),  # windows of two batches: older rows read back
    ([17, 50, 9, 60, 30, 37], 64, None),  # uneven batches, one larger than the window
    ([203], 32, None),  # one batch, cut into sub-blocks
    ([40] * 5 + [3], None, 203),  # every row kept: nothing read back
    ([17, 50, 9, 60, 30, 37], None, 70),  # more rows than expected: the window grows twice
], ids=["one-window", "windows", "uneven", "one-batch", "resident", "resident-grows"])
def test_streamed_tiles_equal_the_tiled_pass(rng, debiased, sizes, rows, resident):
    """Batch by batch, the block pairs (t, s), s <= t, give the tiled pass's terms: the same
    sums (pair products, row sums, diagonal) up to rounding, whatever the batches and windows."""
    layers = _layers(rng, 203, (300, 40, 7), mean=3.0)
    layers[1] = layers[1].astype(np.float32)
    pairs = [(0, 1), (0, 2), (1, 2), (1, 1), (2, 0)]
    tiles = _streamed(layers, sizes, rows, resident)
    if resident:
        assert tiles.nbytes(1) == 203 * 40 * 4  # every row of layer 1 (float32) held
    got, zero = tiles.terms(pairs)
    want, zero_want = tiled_map_terms(layers, pairs, tile=64)
    assert zero == zero_want == [False] * 3
    for pair in pairs:
        ref = linear_cka_ref(layers[pair[0]].astype(np.float64),
                             layers[pair[1]].astype(np.float64), debiased)
        tol = 1e-6 if 1 in pair else 1e-11  # float32 Gram tiles
        assert _cka(got[pair], debiased) == pytest.approx(ref, abs=tol)
        assert _cka(got[pair], debiased) == pytest.approx(_cka(want[pair], debiased), abs=tol)
        g, w = got[pair], want[pair]
        assert g.n == w.n and g.log2_k == w.log2_k


def test_streamed_tiles_float32_with_a_large_mean(rng):
    """The shift (the first batch's means, rounded) keeps float32 tiles of data far from the
    origin accurate, as the tiled pass's global means do."""
    x = _layers(rng, 300, (60, 20), mean=0.0)
    layers = [(a + 1e4).astype(np.float32) for a in x]
    got, _ = _streamed(layers, [64] * 4 + [44], rows=128).terms([(0, 1)])
    ref = linear_cka_ref(*(a.astype(np.float64) for a in layers), True)
    assert _cka(got[0, 1], True) == pytest.approx(ref, abs=1e-6)


def test_streamed_tiles_reject_non_finite_rows_by_layer_and_row(rng):
    torch = pytest.importorskip("torch")
    from pyckafast._torch.tiles import StreamedTiles

    tiles = StreamedTiles(["layer 'a'", "layer 'b'"], lambda r, s, out: out)
    a, b = torch.randn(30, 5), torch.randn(30, 3)
    tiles.add([a[:10], b[:10]])
    bad = b[10:].clone()
    bad[7, 1] = float("nan")
    with pytest.raises(ValueError, match=r"layer 'b' must contain only finite values; found NaN "
                                         r"or Inf in row 17\."):
        tiles.add([a[10:], bad])
    assert tiles.n == 10  # the rejected batch changed nothing
    with pytest.raises(ValueError, match="layer 'a' gave 4 features of torch.float32 in a later"):
        tiles.add([a[10:, :4], b[10:]])
