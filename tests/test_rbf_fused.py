"""The C++ fused RBF pass (csrc/cpu/rbf_pairs_cpu.cpp) against float64 brute force, on every
instruction set this CPU runs (the generic build is the one a machine without AVX would get), and
the BLAS-tile path of the same extension against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyckafast._cpu.producers import rbf_producer

try:
    from pyckafast import _ext
except ImportError as exc:  # a missing build fails here, as in conftest.cpu_backend
    if os.environ.get("PYCKAFAST_ALLOW_NO_EXT") != "1":
        raise ImportError(f"the fused RBF pass needs the compiled extension: {exc}") from exc
    pytest.skip("no compiled extension (PYCKAFAST_ALLOW_NO_EXT=1)", allow_module_level=True)

LEVELS = ["generic", "avx2", "avx512"]
# Subprocesses import the same pyckafast as this process (installed, or a source tree built in
# place), from a directory where the source tree cannot shadow it.
_PACKAGE_ROOT = str(Path(_ext.__file__).resolve().parents[1])
AVAILABLE = LEVELS[: LEVELS.index(_ext.simd_isa()) + 1]
SUFFIX = {np.float32: "_f32", np.float64: "_f64"}
TOL = {np.float32: 2e-6, np.float64: 1e-12}
K1 = (1.0, 1.0, 0)  # (gamma, c, m): the expm1 form, E = K - 1


def _entries(a, b, gamma):
    d2 = ((a[:, None, :].astype(float) - b[None, :, :].astype(float)) ** 2).sum(-1)
    return np.expm1(-gamma * d2)


def _brute(xa, ya, xb, yb, gx, gy):
    e, f = _entries(xa, xb, gx), _entries(ya, yb, gy)
    return [(e * f).sum(), (e * e).sum(), (f * f).sum(), e.sum(1), f.sum(1), e.sum(0), f.sum(0)]


def _assert_terms(got, want, tol):
    for g, w in zip(got, want):
        scale = np.abs(w).max() if np.ndim(w) else abs(w)
        assert np.abs(np.asarray(g) - w).max() <= tol * scale


def _rows(rng, m, d, dtype, mean=0.0):
    return (rng.normal(size=(m, d)) + mean).astype(dtype)


@pytest.mark.parametrize("simd", AVAILABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ma, mb, block", [(37, 23, 10), (200, 131, 64), (301, 1, 1000),
                                           (5, 9, 1), (97, 97, 33)])
def test_two_sets_match_brute_force(simd, dtype, ma, mb, block):
    """Ragged micro-tiles, blocks of one row, a block larger than the set, dx != dy."""
    rng = np.random.default_rng(ma * mb)
    xa, ya, xb, yb = (_rows(rng, m, d, dtype) for m, d in ((ma, 7), (ma, 3), (mb, 7), (mb, 3)))
    got = getattr(_ext, "rbf_pairs" + SUFFIX[dtype])(
        xa, ya, xb, yb, np.zeros(7, dtype), np.zeros(3, dtype), (0.1, 1.0, 0), (0.3, 1.0, 0), False, block, simd)
    _assert_terms(got, _brute(xa, ya, xb, yb, 0.1, 0.3), TOL[dtype])


@pytest.mark.parametrize("simd", AVAILABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, block", [(2, 1), (37, 10), (130, 64), (257, 2048), (100, 7)])
def test_one_set_counts_each_pair_once_per_order(simd, dtype, n, block):
    """same_block: only i < j is evaluated, the sums are over all ordered pairs, and the rows are
    centred by the given shift (a large mean, as activations have)."""
    rng = np.random.default_rng(n)
    x, y = _rows(rng, n, 9, dtype, mean=50.0), _rows(rng, n, 4, dtype, mean=-20.0)
    sx, sy = x.mean(0, dtype=float).astype(dtype), y.mean(0, dtype=float).astype(dtype)
    got = getattr(_ext, "rbf_pairs" + SUFFIX[dtype])(x, y, None, None, sx, sy, (0.05, 1.0, 0), (0.2, 1.0, 0), True,
                                                     block, simd)
    s_kl, s_kk, s_ll, row_k, row_l, _, _ = _brute(x, y, x, y, 0.05, 0.2)
    _assert_terms(got[:5], [s_kl, s_kk, s_ll, row_k, row_l], 5 * TOL[dtype])
    assert not got[5].any() and not got[6].any()


@pytest.mark.parametrize("simd", AVAILABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("diagonal", [False, True])
def test_blas_tile_path_equals_fused_path(simd, dtype, diagonal):
    rng = np.random.default_rng(3)
    xa, ya, xb, yb = (_rows(rng, m, d, dtype) for m, d in ((150, 6), (150, 5), (61, 6), (61, 5)))
    if diagonal:
        xb, yb = xa, ya
    norms = [np.einsum("ij,ij->i", v, v) for v in (xa, ya, xb, yb)]
    tile = getattr(_ext, "rbf_tile" + SUFFIX[dtype])(xa @ xb.T, ya @ yb.T, *norms, (0.2, 1.0, 0), (0.1, 1.0, 0),
                                                     diagonal, simd)
    pairs = getattr(_ext, "rbf_pairs" + SUFFIX[dtype])(
        xa, ya, None if diagonal else xb, None if diagonal else yb, np.zeros(6, dtype),
        np.zeros(5, dtype), (0.2, 1.0, 0), (0.1, 1.0, 0), diagonal, 40, simd)
    _assert_terms(tile, pairs, 10 * TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_engine_fused_and_tile_paths_agree(dtype, monkeypatch):
    from pyckafast._cpu import ops_cpp as _cpp

    rng = np.random.default_rng(4)
    x, y = _rows(rng, 300, 20, dtype, mean=3.0), _rows(rng, 300, 11, dtype)
    fused = rbf_producer("cpp")(x, y, gamma_x=0.02, gamma_y=0.05)
    monkeypatch.setattr(_cpp, "FUSED_MAX_DEPTH", 0)
    tiles = rbf_producer("cpp")(x, y, gamma_x=0.02, gamma_y=0.05, tile=64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name in ("s_kl", "s_kk", "s_ll", "row_k", "row_l"):
        np.testing.assert_allclose(getattr(fused, name), getattr(tiles, name), rtol=tol,
                                   atol=tol * np.abs(getattr(tiles, name)).max())


def test_strided_and_fortran_rows():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(90, 8)), rng.normal(size=(90, 5))
    sx, sy = np.zeros(8), np.zeros(5)
    want = _ext.rbf_pairs_f64(x, y, None, None, sx, sy, (0.1, 1.0, 0), (0.1, 1.0, 0), True, 32)
    wide = np.zeros((90, 16))
    wide[:, ::2] = x
    got = _ext.rbf_pairs_f64(wide[:, ::2], np.asfortranarray(y), None, None, sx, sy, (0.1, 1.0, 0), (0.1, 1.0, 0),
                             True, 32)
    _assert_terms(got, want, 1e-13)


@pytest.mark.parametrize("simd", AVAILABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vector_lanes", [False, True])
def test_expm1_lanes(simd, dtype, vector_lanes):
    """The shared expm1 of rbf_pair.h on scalar and vector lanes against np.expm1 (float64)."""
    x = -np.concatenate([[0.0], np.geomspace(1e-30, 1e3, 5001)]).astype(dtype)
    got = getattr(_ext, "expm1_neg" + SUFFIX[dtype])(x, vector_lanes, simd)
    want = np.expm1(x.astype(float))
    ulp = np.finfo(dtype).eps
    np.testing.assert_allclose(got, want, rtol=4 * ulp, atol=0)


def _python(code: str, cwd, **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=_PACKAGE_ROOT, **env)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_result_does_not_depend_on_threads(tmp_path):
    """Every partial is reduced in a fixed order: 1 and 3 threads give the same bits."""
    code = ("import numpy as np; from pyckafast import _ext; r = np.random.default_rng(0); "
            "x = r.normal(size=(700, 12)).astype(np.float32); y = r.normal(size=(700, 6))"
            ".astype(np.float32); t = _ext.rbf_pairs_f32(x, y, None, None, np.zeros(12, "
            "np.float32), np.zeros(6, np.float32), (0.1, 1.0, 0), (0.2, 1.0, 0), True, 64); "
            "print(repr(t[:3]), float(t[3] @ np.arange(700)))")
    out = {}
    for threads in ("1", "3"):
        run = _python(code, tmp_path, OMP_NUM_THREADS=threads, PYCKAFAST_NUM_THREADS=threads)
        assert run.returncode == 0, run.stderr
        out[threads] = run.stdout
    assert out["1"] == out["3"]


def test_simd_cap_from_the_environment(tmp_path):
    run = _python("from pyckafast import _ext; print(_ext.simd_isa())", tmp_path,
                  PYCKAFAST_SIMD="generic")
    assert run.stdout.strip() == "generic", run.stderr


def test_bad_arguments_name_the_argument():
    x = np.ones((4, 3))
    z3 = np.zeros(3)
    with pytest.raises(ValueError, match="block must be at least 1"):
        _ext.rbf_pairs_f64(x, x, None, None, z3, z3, K1, K1, True, 0)
    with pytest.raises(ValueError, match="xb and yb are required"):
        _ext.rbf_pairs_f64(x, x, x, None, z3, z3, K1, K1, False, 8)
    with pytest.raises(ValueError, match="xb and yb must be None"):
        _ext.rbf_pairs_f64(x, x, x, x, z3, z3, K1, K1, True, 8)
    with pytest.raises(ValueError, match="xa and ya"):
        _ext.rbf_pairs_f64(x, x[:3], None, None, z3, z3, K1, K1, True, 8)
    with pytest.raises(ValueError, match="xa and xb"):
        _ext.rbf_pairs_f64(x, x, x[:, :2], x, z3, z3, K1, K1, False, 8)
    with pytest.raises(ValueError, match="shift_x"):
        _ext.rbf_pairs_f64(x, x, None, None, z3[:2], z3, K1, K1, True, 8)
    with pytest.raises(ValueError, match="simd must be"):
        _ext.rbf_pairs_f64(x, x, None, None, z3, z3, K1, K1, True, 8, "sse9")
    with pytest.raises(TypeError, match="xa has the wrong dtype"):
        _ext.rbf_pairs_f64(x.astype(np.float32), x, None, None, z3, z3, K1, K1, True, 8)


@pytest.mark.parametrize("simd", AVAILABLE)
@pytest.mark.parametrize("n, block", [(5, 1), (101, 16), (300, 2048), (64, 33)])
def test_distance_pass_counts_every_pair_once(simd, n, block):
    """d2_pass (the exact median's selection pass): below / per-bin counts / collected values
    over the pairs i < j, against float64 brute force."""
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 6)) + 40.0
    shift = a.mean(0)
    c = a - shift
    d2 = ((c[:, None] - c[None]) ** 2).sum(-1)[np.triu_indices(n, 1)]
    lo, hi = np.quantile(d2, 0.25) * (1 + 1e-9), np.quantile(d2, 0.75) * (1 - 1e-9)
    below, counts = _ext.d2_pass_f64(a, shift, lo, hi, 16, block, simd)
    assert below == np.count_nonzero(d2 < lo)
    inside = d2[(d2 >= lo) & (d2 <= hi)]
    bins = np.minimum(((inside - lo) * (16 / (hi - lo))).astype(int), 15)
    np.testing.assert_array_equal(counts, np.bincount(bins, minlength=16))
    below2, values = _ext.d2_pass_f64(a, shift, lo, hi, 0, block, simd)
    assert below2 == below
    np.testing.assert_allclose(np.sort(values), np.sort(inside), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", ["kornblith", "offdiag"])
@pytest.mark.parametrize("n", [150, 151])
def test_exact_median_fused_and_tile_passes_agree(dtype, rule, n, monkeypatch):
    from pyckafast._core import bandwidth as _bandwidth
    from pyckafast._cpu import ops_cpp as _cpp

    rng = np.random.default_rng(n)
    a = (rng.normal(size=(n, 10)) * 2 + 100).astype(dtype)
    c = a.astype(float) - a.mean(0, dtype=float)
    d2 = ((c[:, None] - c[None]) ** 2).sum(-1)
    want = np.median(d2) if rule == "kornblith" else np.median(d2[np.triu_indices(n, 1)])
    fused = _bandwidth.median_sq_distance(a, rule)
    monkeypatch.setattr(_cpp, "FUSED_MAX_DEPTH", 0)  # the same backend on 64-row BLAS tiles
    tiles = _bandwidth.median_sq_distance(a, rule, tile=64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert fused == pytest.approx(want, rel=tol)
    assert tiles == pytest.approx(want, rel=tol)
