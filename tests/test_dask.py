"""pyckafast.dask on a LocalCluster with worker processes: equal to the in-memory results."""


import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import pyckafast  # noqa: E402
import pyckafast.dask as pdask  # noqa: E402
from _reference import linear_cka_feature_space, rbf_cka_ref  # noqa: E402



@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _data(n, p1, p2, seed=0, offset=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p1)) + offset
    y = np.tanh(x[:, : max(1, p1 // 2)] - offset) @ rng.normal(size=(max(1, p1 // 2), p2))
    y += 0.3 * rng.normal(size=(n, p2)) + offset
    return x.astype(dtype), y.astype(dtype)


UNEVEN = [(100, 250, 333, 17, 300), (1000,), (7, 993)]


@pytest.mark.parametrize("chunks", UNEVEN)
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_equals_in_memory(client, chunks, debiased):
    x, y = _data(1000, 9, 5, offset=30.0)
    dx = da.from_array(x, chunks=(chunks, 4))  # columns split too: rechunked to one
    dy = da.from_array(y, chunks=(200, 5))  # different row chunks: aligned to dx
    got = pdask.linear_cka(dx, dy, debiased=debiased)
    assert got == pytest.approx(pyckafast.linear_cka(x, y, debiased=debiased), abs=1e-10)
    assert got == pytest.approx(linear_cka_feature_space(x, y, debiased), abs=1e-10)


def test_linear_float32_large_mean_matches_float64(client):
    x, y = _data(4000, 16, 8, seed=1, offset=500.0)
    expect = pyckafast.linear_cka(x, y)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    got = pdask.linear_cka(da.from_array(x32, chunks=700), da.from_array(y32, chunks=700))
    # float32 GEMMs on differently cut chunks round differently: agreement to float32 level.
    assert got == pytest.approx(pyckafast.linear_cka(x32, y32), abs=1e-6)
    assert got == pytest.approx(expect, abs=1e-6)


def test_linear_backends_and_1d_int_input(client):
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 10, size=500), rng.normal(size=(500, 3))
    for backend in pyckafast._core.dispatch.usable_backends("cpu"):
        got = pdask.linear_cka(da.from_array(x, chunks=120), da.from_array(y, chunks=120), backend=backend)
        assert got == pytest.approx(pyckafast.linear_cka(x, y), abs=1e-10)


def test_linear_bad_input(client):
    x = da.ones((10, 2), chunks=5)
    with pytest.raises(ValueError, match="same number of samples"):
        pdask.linear_cka(x, da.ones((9, 2), chunks=5))
    with pytest.raises(TypeError, match="dy must hold real numbers"):
        pdask.linear_cka(x, da.from_array(np.full((10, 2), "a")))
    with pytest.raises(ValueError, match="dx must be a 1-D or 2-D"):
        pdask.linear_cka(da.ones((10, 2, 2)), x)
    with pytest.raises(ValueError, match="at least 4 samples"):
        pdask.linear_cka(da.ones((3, 2)), da.ones((3, 2)), debiased=True)
    unknown = x[x[:, 0] > 0]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        pdask.linear_cka(unknown, unknown)


@pytest.mark.parametrize("chunks", [(100, 37, 163), 300])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("rule", ["kornblith", "offdiag"])
def test_rbf_exact_median_equals_in_memory(client, chunks, debiased, rule):
    x, y = _data(300, 5, 3, seed=2, offset=10.0)
    got = pdask.rbf_cka(da.from_array(x, chunks=(chunks, -1)), da.from_array(y, chunks=(chunks, -1)),
                        bandwidth=rule, threshold=0.7, debiased=debiased, tile=64)
    assert got == pytest.approx(rbf_cka_ref(x, y, 0.7, rule, debiased), abs=1e-8)
    assert got == pytest.approx(pyckafast.rbf_cka(x, y, threshold=0.7, bandwidth=rule,
                                                  debiased=debiased), abs=1e-8)


@pytest.mark.parametrize("sigma", [0.5, 3.0, 40.0])
def test_rbf_explicit_sigma(client, sigma):
    x, y = _data(200, 4, 4, seed=4)
    got = pdask.rbf_cka(da.from_array(x, chunks=70), da.from_array(y, chunks=70), sigma=sigma)
    assert got == pytest.approx(rbf_cka_ref(x, y, sigma=sigma), abs=1e-8)


def test_exact_median_many_passes_and_ties(client):
    # 1500 rows: 2.25e6 distances > the gather cap, so the histogram passes narrow the interval;
    # repeated rows make heavy ties (and a 0 median for the Kornblith rule would be avoided).
    from pyckafast._dask import rbf as _dask_rbf

    rng = np.random.default_rng(5)
    x = np.repeat(rng.normal(size=(500, 3)), 3, axis=0)
    x -= x.mean(axis=0)
    blocks = [x[lo:lo + 400] for lo in range(0, 1500, 400)]
    sq = np.einsum("ij,ij->i", x, x)
    d = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    np.fill_diagonal(d, 0)
    for rule, values in (("kornblith", d), ("offdiag", d[np.triu_indices(len(d), 1)])):
        got = _dask_rbf.exact_median(blocks, rule=rule, tile=256)
        assert got == pytest.approx(np.median(values), rel=1e-12)


def test_rbf_sampled_bandwidth_is_chunking_independent(client):
    x, y = _data(400, 4, 3, seed=6)
    a = pdask.rbf_cka(da.from_array(x, chunks=400), da.from_array(y, chunks=400), bandwidth="sampled",
                      n_pairs=5000, seed=1)
    b = pdask.rbf_cka(da.from_array(x, chunks=((50, 150, 200), -1)), da.from_array(y, chunks=130),
                      bandwidth="sampled", n_pairs=5000, seed=1)
    assert a == pytest.approx(b, abs=1e-12)
    in_memory = pyckafast.rbf_cka(x, y, bandwidth="sampled", n_pairs=5000, seed=1)
    assert a == pytest.approx(in_memory, abs=1e-10)  # the same random pairs as in memory
    assert a == pytest.approx(rbf_cka_ref(x, y), abs=0.02)  # sampled median ~ exact


def test_rbf_bad_arguments(client):
    x = da.ones((10, 2), chunks=5)
    with pytest.raises(ValueError, match="The 'bandwidth' parameter of pyckafast.dask.rbf_cka must be one of"):
        pdask.rbf_cka(x, x, bandwidth="silverman")
    with pytest.raises(ValueError, match="threshold"):
        pdask.rbf_cka(x, x, threshold=0)


def test_rbf_many_tiny_chunks_are_coarsened(client, monkeypatch):
    """30 row chunks of 20 rows: before, every pass ran one task per chunk pair (465 tasks of
    20 x 20 pairs); now the rows are rechunked to one CPU tile first (600 rows: one chunk, one
    task per pass), and the value is the in-memory one."""
    from pyckafast._dask import rbf as dask_rbf

    x, y = _data(600, 4, 3, seed=5)
    tasks = []
    real = dask_rbf._gather
    monkeypatch.setattr(dask_rbf, "_gather", lambda parts: tasks.append(len(parts)) or real(parts))
    got = pdask.rbf_cka(da.from_array(x, chunks=(20, -1)), da.from_array(y, chunks=(20, -1)),
                        threshold=0.7, debiased=True)
    assert got == pytest.approx(pyckafast.rbf_cka(x, y, threshold=0.7, debiased=True), abs=1e-10)
    assert tasks and max(tasks) == 1
    tasks.clear()  # 2100 rows of float64 in 42 chunks: 3 chunks (1024 rows), 6 chunk pairs
    x, y = _data(2100, 3, 2, seed=6)
    got = pdask.rbf_cka(da.from_array(x, chunks=(50, -1)), da.from_array(y, chunks=(50, -1)),
                        sigma=2.0)
    assert got == pytest.approx(pyckafast.rbf_cka(x, y, sigma=2.0), abs=1e-10)
    assert max(tasks) == 6


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["x", "y"])
def test_rbf_non_finite_names_the_argument_and_global_row(client, bad, side):
    """The message names the argument (x/y through pyckafast.rbf_cka, dx/dy through
    pyckafast.dask.rbf_cka) and the global row, not the range of rows the sums covered."""
    x, y = _data(300, 4, 3, seed=7)
    (x if side == "x" else y)[217, 1] = bad
    dx, dy = da.from_array(x, chunks=100), da.from_array(y, chunks=100)
    with pytest.raises(ValueError, match=f"^{side} must contain only finite values; found NaN or "
                                         "Inf in row 217"):
        pyckafast.rbf_cka(dx, dy)
    with pytest.raises(ValueError, match=f"^d{side} must contain only finite values; found NaN "
                                         "or Inf in row 217"):
        pdask.rbf_cka(dx, dy, sigma=1.0)


# ---- wide layers: the tiled sample-space pass over pairs of row chunks (issue 11) -----------

@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_wide_linear_takes_the_tiled_pass_over_chunk_pairs(debiased, dtype, monkeypatch):
    """p much larger than n: a p x p feature form is never built (forced here by leaving it too
    little memory), and the chunk-pair pass gives the in-memory value."""
    import dask.array as da

    from pyckafast._core import dispatch
    from pyckafast._cpu import linear as cpu_linear

    rng = np.random.default_rng(7)
    x = (rng.normal(size=(150, 600)) + 1e3).astype(dtype)
    y = (np.tanh(x[:, :300] - 1e3) + rng.normal(size=(150, 300))).astype(dtype)
    want = pyckafast.linear_cka(x.astype(np.float64), y.astype(np.float64), debiased=debiased)
    feature_calls = []
    monkeypatch.setattr(cpu_linear, "feature_terms",
                        lambda *a, **k: feature_calls.append(1) or pytest.fail("feature form"))
    monkeypatch.setattr(dispatch, "_available_bytes", lambda: 64 * 2**20)  # p x p won't fit
    dx, dy = da.from_array(x, chunks=(40, -1)), da.from_array(y, chunks=(40, -1))
    got = pyckafast.dask.linear_cka(dx, dy, debiased=debiased)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    assert got == pytest.approx(want, rel=tol, abs=tol) and not feature_calls
    assert pyckafast.linear_cka(dx, dy, debiased=debiased, form="tiles") == pytest.approx(
        want, rel=tol, abs=tol)


# ---- layer maps: cka_matrix on Dask arrays (issue 21) ---------------------------------------

def _layers(n, seed=3):
    """Layers of 8 to 2,600 features of the same n samples (the widest one wide: p > n)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 8))
    return [base + 5.0, np.tanh(base @ rng.normal(size=(8, 100))),
            (base @ rng.normal(size=(8, 2600))) ** 2 + rng.normal(size=(n, 2600)),
            np.abs(base[:, :3]) + 0.5 * rng.normal(size=(n, 3))]


@pytest.fixture
def path_spy(monkeypatch):
    """Which passes a Dask map ran (the routing runs on the client)."""
    from pyckafast._dask import matrix as dask_matrix

    calls = []
    for name in ("tiled_map_terms", "linear_map_terms"):
        real = getattr(dask_matrix, name)
        monkeypatch.setattr(dask_matrix, name, lambda *a, _real=real, _name=name, **k: (
            calls.append((_name, sorted({r for pair in a[2 if _name == "linear_map_terms"
                                                         else 1] for r in pair}))),
            _real(*a, **k))[1])
    return calls


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_on_a_cluster_equals_the_in_memory_map(client, path_spy, debiased):
    """n = 1,003 in row chunks of 250 (not a multiple): symmetric and cross maps of layers of 8
    to 2,600 features; the wide layer's pairs take the tiled chunk-pair pass, the others the
    tree-reduced moments, and both equal the in-memory map."""
    xs = _layers(1003)
    dxs = [da.from_array(a, chunks=(250, -1)) for a in xs]
    got = pyckafast.cka_matrix(dxs, debiased=debiased)
    want = pyckafast.cka_matrix(xs, debiased=debiased)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert np.all(np.diag(got) == 1.0) and np.array_equal(got, got.T)
    # cross: xs = (8, 100), ys = (2600, 3); (i, ys[0]) tiled, (i, ys[1]) from moments
    ys = [xs[2], xs[3]]
    dys = [da.from_array(a, chunks=(300, -1)) for a in ys]  # other chunks: aligned to xs[0]
    path_spy.clear()
    got = pyckafast.cka_matrix(dxs[:2], dys, debiased=debiased)
    np.testing.assert_allclose(got, pyckafast.cka_matrix(xs[:2], ys, debiased=debiased),
                               rtol=0, atol=1e-10)
    assert path_spy == [("tiled_map_terms", [0, 1, 2]), ("linear_map_terms", [0, 1, 3])]
    # every pair from moments (the narrow layers)
    narrow, dnarrow = [xs[0], xs[1], xs[3]], [dxs[0], dxs[1], dxs[3]]
    np.testing.assert_allclose(pyckafast.cka_matrix(dnarrow, debiased=debiased, form="features"),
                               pyckafast.cka_matrix(narrow, debiased=debiased), rtol=0, atol=1e-10)


@pytest.mark.parametrize("debiased, options, on_cluster", [
    (False, {}, False), (True, {"bandwidth": "offdiag", "threshold": 0.7}, False),
    (True, {"sigma": 2.0}, True)])
def test_cka_matrix_rbf_equals_the_in_memory_map(client, debiased, options, on_cluster):
    """Each layer's bandwidth by the exact Dask selection, every pair from the tiled chunk-pair
    pass (the median rules' many small passes run on the synchronous scheduler: the cluster
    adds only round trips to them)."""
    import dask

    rng = np.random.default_rng(5)
    xs = [rng.normal(size=(301, 6)), rng.normal(size=(301, 40)), rng.normal(size=(301, 3))]
    xs[1][:, :6] += 2 * xs[0]
    dxs = [da.from_array(a, chunks=(90, -1)) for a in xs]
    with dask.config.set(scheduler=None if on_cluster else "synchronous"):
        sym = pyckafast.cka_matrix(dxs, kernel="rbf", debiased=debiased, **options)
        cross = pyckafast.cka_matrix(dxs[:1], dxs[1:], kernel="rbf", debiased=debiased,
                                     **options)
    np.testing.assert_allclose(sym, pyckafast.cka_matrix(xs, kernel="rbf", debiased=debiased,
                                                         **options), rtol=0, atol=1e-10)
    np.testing.assert_allclose(cross, pyckafast.cka_matrix(xs[:1], xs[1:], kernel="rbf",
                                                           debiased=debiased, **options),
                               rtol=0, atol=1e-10)


def test_cka_matrix_float32_large_mean_and_host_layers_beside_dask(client):
    """float32 layers with a large mean equal the float64 map; a host layer joins the Dask
    ones (both in one list and as the other list); nothing is read before the map runs."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(700, 12))
    xs = [x + 1e4, np.tanh(x) @ rng.normal(size=(12, 30)) - 3e3]
    want = pyckafast.cka_matrix(xs, debiased=True)
    dxs = [da.from_array(a.astype(np.float32), chunks=(128, -1)) for a in xs]
    np.testing.assert_allclose(pyckafast.cka_matrix(dxs, debiased=True), want, atol=1e-5)
    np.testing.assert_allclose(pyckafast.cka_matrix([dxs[0], xs[1]], debiased=True), want,
                               atol=1e-5)
    np.testing.assert_allclose(pyckafast.cka_matrix([xs[0]], [dxs[1]], debiased=True),
                               want[:1, 1:], atol=1e-5)


def test_cka_matrix_dask_constant_layer_and_non_finite(client):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5))
    dxs = [da.from_array(x, chunks=70), da.from_array(np.ones((300, 2)), chunks=70)]
    with pytest.warns(RuntimeWarning, match=r"xs\[1\] has zero variance"):
        m = pyckafast.cka_matrix(dxs)
    assert m[0, 0] == 1.0 and np.isnan(m[1, 1])
    bad = x.copy()
    bad[217, 3] = np.nan
    with pytest.raises(ValueError, match=r"xs\[1\] must contain only finite values; found "
                                         r"NaN or Inf in row 217"):
        pyckafast.cka_matrix([dxs[0], da.from_array(bad, chunks=70)])


@pytest.mark.parametrize("form, computations", [("features", 1), ("tiles", None)])
def test_cka_matrix_dask_stays_lazy_until_its_passes(form, computations, monkeypatch):
    """No Dask array is pulled into memory; a map of narrow layers is one Dask computation
    (every chunk's terms, the tree and the variance flags together)."""
    import dask
    from dask.local import get_sync

    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(230, 6)), rng.normal(size=(230, 4)) ** 2, rng.normal(size=(230, 9))]
    want = pyckafast.cka_matrix(xs, debiased=True, form=form)
    graphs = []

    def counting_scheduler(dsk, keys, **options):
        graphs.append(keys)
        return get_sync(dsk, keys, **options)

    def no_asarray(self, *args, **kw):
        raise AssertionError("the Dask array was pulled into memory by np.asarray")

    dxs = [da.from_array(a, chunks=(60, -1)) for a in xs]
    monkeypatch.setattr(da.Array, "__array__", no_asarray)
    with dask.config.set(scheduler=counting_scheduler):
        got = pyckafast.cka_matrix(dxs, debiased=True, form=form)
    assert graphs and (computations is None or len(graphs) == computations), len(graphs)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
