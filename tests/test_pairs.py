"""The block-pair scheduler (pyckafast._core.pairs) and the RBF passes that run on it: every
unordered pair once, one diagonal convention, each input centred once, and CPU, Dask and the
emulated GPU equal to a float64 brute force and to each other."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch, pairs
from pyckafast._core.pairs import PairTerms, PairTermsSum
from pyckafast._core.terms import KernelTerms
from pyckafast._cpu.producers import rbf_producer
from conftest import CPU_BACKENDS


# ---- the scheduler -------------------------------------------------------------------------------
@pytest.mark.parametrize("n, tile", [(4, 1), (4, 4), (4, 3), (10, 3), (203, 64), (7, 100)])
def test_block_bounds_cover_the_rows_once(n, tile):
    bounds = pairs.block_bounds(n, tile)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(0 < hi - lo <= tile for lo, hi in bounds)
    # only the last block may be ragged
    assert [hi - lo for lo, hi in bounds[:-1]] == [tile] * (len(bounds) - 1)


def test_bounds_of_sizes():
    assert pairs.bounds_of_sizes([3, 1, 5]) == [(0, 3), (3, 4), (4, 9)]


def _visited(bounds_a, bounds_b=None):
    """Every row pair the scheduler's blocks stand for, with the convention applied: a diagonal
    block pair evaluates i < j only."""
    seen = []
    for (alo, ahi), (blo, bhi), diagonal in pairs.block_pairs(bounds_a, bounds_b):
        for i in range(alo, ahi):
            for j in range(i + 1 if diagonal else blo, bhi):
                seen.append((i, j))
    return seen


@pytest.mark.parametrize("n, tile", [(4, 1), (4, 2), (4, 4), (11, 3), (11, 1), (17, 16)])
def test_every_unordered_pair_once(n, tile):
    seen = _visited(pairs.block_bounds(n, tile))
    assert len(seen) == len(set(seen)) == n * (n - 1) // 2
    assert {tuple(sorted(p)) for p in seen} == set(itertools.combinations(range(n), 2))


def test_diagonal_only_on_the_same_block():
    listed = list(pairs.block_pairs(pairs.block_bounds(10, 4)))
    assert [d for _, _, d in listed] == [True, False, False, True, False, True]
    assert all((a == b) == d for a, b, d in listed)


def test_two_sets_are_a_full_rectangle_without_diagonal():
    a, b = pairs.block_bounds(5, 2), pairs.block_bounds(3, 2)
    listed = list(pairs.block_pairs(a, b))
    assert len(listed) == len(a) * len(b) and not any(d for _, _, d in listed)
    assert len(_visited(a, b)) == 15


def test_reduce_pairs_loads_block_a_once_per_row():
    loads = []

    def load(bounds):
        loads.append(bounds)
        return bounds

    total = pairs.reduce_pairs(lambda a, b, d: 1, pairs.block_bounds(10, 3), load_a=load)
    assert total == 10  # 4 blocks: 4 * 5 / 2 block pairs
    assert loads.count((0, 3)) == 1  # a once for its row; b loaded for each other pair
    assert len(loads) == 4 + 6


def test_reduce_pairs_gather_sees_all_parts_first():
    gathered = []

    def gather(parts):
        gathered.append(list(parts))
        return [10 * p for p in parts]

    total = pairs.reduce_pairs(lambda a, b, d: 1, pairs.block_bounds(5, 2), gather=gather)
    assert gathered == [[1] * 6] and total == 60


def _brute_pair_terms(xa, ya, xb, yb, gx, gy) -> PairTerms:
    e = np.expm1(-gx * ((xa[:, None] - xb[None]) ** 2).sum(-1))
    f = np.expm1(-gy * ((ya[:, None] - yb[None]) ** 2).sum(-1))
    return PairTerms(float((e * f).sum()), float((e * e).sum()), float((f * f).sum()), e.sum(1),
                     f.sum(1), e.sum(0), f.sum(0))


@pytest.mark.parametrize("tile", [1, 2, 5, 64])
def test_scatter_of_one_set_and_of_two_sets(tile):
    """PairTermsSum over brute-force block parts: a set against itself gives the terms over all
    ordered pairs (a diagonal pair); two sets give the one-direction off-diagonal terms."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(13, 3)), rng.normal(size=(13, 2))

    def body(a, b, diagonal):
        p = _brute_pair_terms(x[slice(*a)], y[slice(*a)], x[slice(*b)], y[slice(*b)], 0.3, 0.7)
        if not diagonal:
            return p
        # the convention: i < j evaluated, sums doubled, columns into the same rows
        e = np.triu(np.expm1(-0.3 * ((x[slice(*a), None] - x[None, slice(*a)]) ** 2).sum(-1)), 1)
        f = np.triu(np.expm1(-0.7 * ((y[slice(*a), None] - y[None, slice(*a)]) ** 2).sum(-1)), 1)
        zero = np.zeros(len(e))
        return PairTerms(2 * (e * f).sum(), 2 * (e * e).sum(), 2 * (f * f).sum(),
                         e.sum(1) + e.sum(0), f.sum(1) + f.sum(0), zero, zero)

    whole = pairs.reduce_pairs(body, pairs.block_bounds(13, tile), into=PairTermsSum(13))
    ref = _brute_pair_terms(x, y, x, y, 0.3, 0.7)  # the diagonal of E is expm1(0) = 0
    for field in ("s_kl", "s_kk", "s_ll", "row_k_a", "row_l_a"):
        np.testing.assert_allclose(getattr(whole, field), getattr(ref, field), rtol=1e-12)
    assert not whole.row_k_b.any()

    two = pairs.reduce_pairs(lambda a, b, d: _brute_pair_terms(
        x[slice(*a)], y[slice(*a)], x[5 + b[0]:5 + b[1]], y[5 + b[0]:5 + b[1]], 0.3, 0.7),
        pairs.block_bounds(5, tile), pairs.block_bounds(8, tile), into=PairTermsSum(5, 8))
    ref = _brute_pair_terms(x[:5], y[:5], x[5:], y[5:], 0.3, 0.7)
    for field in PairTerms.__dataclass_fields__:
        np.testing.assert_allclose(getattr(two, field), getattr(ref, field), rtol=1e-12)


def test_centring_shift_is_rounded_and_names_the_argument():
    a = np.array([[1.0, 2.0], [3.0, 4.0 + 1e-9]], dtype=np.float32)
    side = pairs.centre(a, "x", np.float32)
    assert side.shift.dtype == np.float32 and side.shift.tolist() == [2.0, 3.0]
    assert side.max_sq_norm() == pytest.approx(2.0)
    a[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"x must contain only finite values"):
        pairs.centre(a, "x", np.float32)


def test_retry_out_of_memory_halves_then_names_the_rows():
    class Oom(Exception):
        pass

    tried, released = [], []

    def run(rows):
        tried.append(rows)
        if rows > 24:
            raise Oom("no memory")
        return rows

    with pytest.warns(RuntimeWarning, match="GPU out of memory") as record:
        with pytest.raises(MemoryError, match="test on the GPU ran out of device memory even "
                                               "with 25 rows, and more: no memory"):
            pairs.retry_out_of_memory(run, 100, 25, errors=(Oom,),
                                      release=lambda: released.append(1), what="test",
                                      per=lambda r: f"{r} rows", detail=", and more")
    assert tried == [100, 50, 25] and len(released) == 3
    assert [str(w.message) for w in record] == [f"GPU out of memory; retrying with {r} rows."
                                                for r in (50, 25)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pairs.retry_out_of_memory(run, 100, 3, errors=(Oom,), release=lambda: None,
                                         what="test", per=str) == 12


# ---- the RBF passes on the scheduler: CPU, Dask and the emulated GPU -----------------------------
def _inputs(n=157, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) * [1, 2, 3, 1, 1, 5] + 40.0  # a large mean: centring matters
    y = np.tanh(x[:, :3] - 40.0) + 0.2 * rng.normal(size=(n, 3)) - 7.0
    return x, y


def _brute_kernel_terms(x, y, gamma_x, gamma_y, like: KernelTerms) -> KernelTerms:
    """The terms of the entries 2^m K - c off the diagonal, with the (m, c) of each kernel that
    the producer of ``like`` chose (``log2_k = -m``, ``const_diag_k = 2^m - c``)."""
    def entries(a, gamma, log2, diag):
        m = -log2
        e = np.ldexp(np.exp(-gamma * ((a[:, None] - a[None]) ** 2).sum(-1)), m) - (2.0**m - diag)
        np.fill_diagonal(e, 0.0)
        return e

    e = entries(x, gamma_x, like.log2_k, like.const_diag_k)
    f = entries(y, gamma_y, like.log2_l, like.const_diag_l)
    return KernelTerms(n=len(x), s_kl=float((e * f).sum()), s_kk=float((e * e).sum()),
                       s_ll=float((f * f).sum()), row_k=e.sum(1), row_l=f.sum(1),
                       log2_k=like.log2_k, log2_l=like.log2_l, const_diag_k=like.const_diag_k,
                       const_diag_l=like.const_diag_l)


def _assert_same_terms(got: KernelTerms, want: KernelTerms, rtol=1e-10):
    for field in ("log2_k", "log2_l", "const_diag_k", "const_diag_l"):
        assert getattr(got, field) == getattr(want, field), field
    for field in ("s_kl", "s_kk", "s_ll"):
        assert getattr(got, field) == pytest.approx(getattr(want, field), rel=rtol), field
    for field in ("row_k", "row_l"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=rtol,
                                   atol=rtol * np.abs(getattr(want, field)).max())


def _gpu_samples(a, on_device=True):
    from pyckafast._gpu.inputs import Samples

    return Samples(a, a.dtype, on_device)


def _emulated_engine():
    pytest.importorskip("pyckafast._twins", reason="the emulated engine needs the C++ host twins")
    from gpu_emulation import EmulatedEngine

    return EmulatedEngine()


@pytest.mark.parametrize("tile", [1, 16, 1000])
def test_rbf_terms_equal_brute_force_everywhere(tile):
    """One tiling on the CPU (every backend, fused and BLAS-tile paths), one over Dask chunks and
    one over emulated device blocks: all equal the float64 brute force."""
    x, y = _inputs(n=41 if tile == 1 else 157)
    for backend in CPU_BACKENDS:
        got = rbf_producer(backend)(x, y, gamma_x=0.02, gamma_y=0.5, tile=tile)
        _assert_same_terms(got, _brute_kernel_terms(x, y, 0.02, 0.5, got))
    from pyckafast._gpu import rbf as gpu_rbf

    for on_device in (True, False):
        got = gpu_rbf.rbf_terms(_emulated_engine(), _gpu_samples(x, on_device),
                                _gpu_samples(y, on_device), gamma_x=0.02, gamma_y=0.5, tile=tile)
        _assert_same_terms(got, _brute_kernel_terms(x, y, 0.02, 0.5, got))


@pytest.mark.parametrize("chunks", [(157,), (50, 7, 100), (1, 60, 96)])
def test_dask_chunk_pairs_equal_brute_force(chunks):
    da = pytest.importorskip("dask.array")
    from pyckafast._dask import rbf as dask_rbf

    x, y = _inputs()
    gamma = 1.0 / (2 * 3.0**2)
    for backend in CPU_BACKENDS:
        got = dask_rbf.rbf_kernel_terms(
            da.from_array(x, chunks=(chunks, -1)), da.from_array(y, chunks=(chunks, -1)),
            sigma=3.0, threshold=1.0, bandwidth="kornblith", debiased=False, backend=backend,
            tile=16, n_pairs=1, seed=0)
        _assert_same_terms(got, _brute_kernel_terms(x, y, gamma, gamma, got))


@pytest.mark.parametrize("rule", ["kornblith", "offdiag", "sampled"])
def test_bandwidths_and_terms_agree_across_drivers(rule):
    """The default bandwidth path (median on the same centred sides as the pass) gives the same
    terms in memory, over Dask chunks and on the emulated GPU."""
    da = pytest.importorskip("dask.array")
    import pyckafast.dask
    from pyckafast._cpu import rbf as cpu_rbf
    from pyckafast._gpu import rbf as gpu_rbf
    from pyckafast.rbf import RBFOptions

    x, y = _inputs()
    options = RBFOptions.of(threshold=0.7, bandwidth=rule, n_pairs=3000, seed=2)
    ops = dispatch.resolve("numpy", "rbf_tile")
    cpu = cpu_rbf.rbf_terms_under(x, y, options=options, ops=ops, tile=32)
    gpu = gpu_rbf.rbf_terms_under(_emulated_engine(), _gpu_samples(x, False),
                                  _gpu_samples(y, False), options=options, tile=32)
    _assert_same_terms(gpu, cpu, rtol=1e-9)
    sampling = {"n_pairs": 3000, "seed": 2} if rule == "sampled" else {}  # else an error
    got = pyckafast.dask.rbf_cka(da.from_array(x, chunks=60), da.from_array(y, chunks=60),
                                 threshold=0.7, bandwidth=rule, tile=32, **sampling)
    from pyckafast._core import combine

    assert got == pytest.approx(combine.cka_from_hsic(combine.kernel_hsic(cpu, False)), abs=1e-10)


# ---- each input centred once per call ------------------------------------------------------------
@pytest.fixture
def centrings(monkeypatch):
    """Names of the inputs centred, one entry per centring pass (column-sum pass)."""
    calls = []
    real = pairs.centring_shift

    def counting(a, name, dtype, xp=np):
        calls.append(name)
        return real(a, name, dtype, xp)

    monkeypatch.setattr(pairs, "centring_shift", counting)
    return calls


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("options", [{}, {"bandwidth": "offdiag"}, {"bandwidth": "sampled"},
                                     {"sigma": 2.0}])
def test_each_input_is_centred_once_per_rbf_cka(centrings, backend, options):
    x, y = _inputs()
    pyckafast.rbf_cka(x, y, backend=backend, **options)
    assert sorted(centrings) == ["x", "y"]


def test_each_input_is_centred_once_on_the_emulated_gpu(centrings):
    from pyckafast._gpu import rbf as gpu_rbf
    from pyckafast.rbf import RBFOptions

    x, y = _inputs()
    gpu_rbf.rbf_terms_under(_emulated_engine(), _gpu_samples(x), _gpu_samples(y),
                            options=RBFOptions.of(), tile=64)
    assert sorted(centrings) == ["x", "y"]


def test_each_input_is_centred_once_over_dask_chunks(monkeypatch):
    da = pytest.importorskip("dask.array")
    from pyckafast._dask import rbf as dask_rbf

    calls, real = [], dask_rbf.shift_from_sums

    def counting(total, n, name, dtype):
        calls.append(name)
        return real(total, n, name, dtype)

    monkeypatch.setattr(dask_rbf, "shift_from_sums", counting)
    x, y = _inputs()
    dask_rbf.rbf_kernel_terms(da.from_array(x, chunks=50), da.from_array(y, chunks=50), sigma=None,
                              threshold=1.0, bandwidth="kornblith", debiased=False,
                              backend="auto", tile=32, n_pairs=1, seed=0)
    assert sorted(calls) == ["dx", "dy"]


# ---- backend="numpy" runs no compiled code -------------------------------------------------------
@pytest.fixture
def no_compiled_code(monkeypatch):
    """Count every call into pyckafast._ext; make every Numba dispatcher of the CPU backends
    raise. Yields the extension's call counts."""
    numba = pytest.importorskip("numba")
    from pyckafast._cpu import ops_numba, ops_numba_rbf

    calls = {}
    try:
        from pyckafast import _ext
    except ImportError:
        _ext = None
    for name in dir(_ext) if _ext is not None else ():
        fn = getattr(_ext, name)
        if callable(fn) and not name.startswith("__"):
            def counting(*args, _fn=fn, _name=name, **kwargs):
                calls[_name] = calls.get(_name, 0) + 1
                return _fn(*args, **kwargs)
            monkeypatch.setattr(_ext, name, counting)

    def forbidden(*args, **kwargs):
        raise AssertionError("a Numba kernel ran under backend='numpy'")

    patched = 0
    for module in (ops_numba, ops_numba_rbf):
        for name, value in vars(module).items():
            if isinstance(value, numba.core.dispatcher.Dispatcher):
                monkeypatch.setattr(module, name, forbidden)
                patched += 1
    assert patched >= 5 and (_ext is None or len(calls) == 0)
    return calls


@pytest.mark.parametrize("options", [{}, {"bandwidth": "offdiag", "debiased": True},
                                     {"bandwidth": "sampled"}, {"sigma": (1.0, 2.0)}])
def test_numpy_backend_runs_no_compiled_code(no_compiled_code, options):
    x, y = _inputs()
    x32 = x.astype(np.float32)  # float32 too: the numpy backend upcasts, never picks a kernel
    for a in (x, x32):
        value = pyckafast.rbf_cka(a, y, backend="numpy", tile=40, **options)
        assert 0.0 < value < 1.0
    pyckafast.cka_matrix([x, y], kernel="rbf", backend="numpy")
    pyckafast.minibatch_cka(x, y, batch_size=50, kernel="rbf", backend="numpy")
    assert no_compiled_code == {}


def test_the_no_compiled_code_check_can_fail(no_compiled_code):
    """The fixture does see compiled code: the default backend runs it."""
    x, y = _inputs()
    if dispatch.probe("cpp") is None:
        pyckafast.rbf_cka(x, y, backend="cpp")
        assert sum(no_compiled_code.values()) > 0
    with pytest.raises(AssertionError, match="Numba kernel"):
        pyckafast.rbf_cka(x, y, backend="numba")


@pytest.mark.parametrize("tile", [1, 4, 13, 40])
def test_one_scatter_gives_the_sums_of_the_whole_matrix(tile):
    """ScatteredSums over block_pairs: full square diagonal parts (weight 1) and one-direction
    off-diagonal parts (weight 2, rows to a, columns to b) give the whole symmetric matrix's
    sums, row sums and diagonal, for a stack of L matrices; two distinct sets give the sums of
    the rectangle counted in both directions."""
    rng = np.random.default_rng(tile)
    a = rng.normal(size=(3, 13, 13))
    k = a + a.transpose(0, 2, 1)  # three symmetric "kernels"
    flat = k.reshape(3, -1)

    def body(ba, bb, diagonal):
        part = k[:, ba[0]:ba[1], bb[0]:bb[1]]
        f = part.reshape(3, -1)
        return pairs.BlockSums(f @ f.T, part.sum(axis=2), None if diagonal else part.sum(axis=1),
                               np.diagonal(part, axis1=1, axis2=2) if diagonal else None)

    bounds = pairs.block_bounds(13, tile)
    got = pairs.reduce_pairs(body, bounds, into=pairs.ScatteredSums((3, 3), (3,), 13,
                                                                    keep_diagonal=True))
    np.testing.assert_allclose(got.sums, flat @ flat.T, rtol=1e-12)
    np.testing.assert_allclose(got.rows_a, k.sum(axis=2), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got.diagonal, np.diagonal(k, axis1=1, axis2=2))
    rect = k[:, :5, 5:]  # rows 0..4 against rows 5..12: two sets
    two = pairs.reduce_pairs(lambda ba, bb, diagonal: body((ba[0], ba[1]), (5 + bb[0], 5 + bb[1]),
                                                           False),
                             pairs.block_bounds(5, tile), pairs.block_bounds(8, tile),
                             into=pairs.ScatteredSums((3, 3), (3,), 5, 8))
    r = rect.reshape(3, -1)
    np.testing.assert_allclose(two.sums, 2 * r @ r.T, rtol=1e-12)
    np.testing.assert_allclose(two.rows_a, rect.sum(axis=2), atol=1e-12)
    np.testing.assert_allclose(two.rows_b, rect.sum(axis=1), atol=1e-12)
