"""The host twin of the CUDA RBF kernel (csrc/cpu/twins/rbf_pairs_twin.cpp, sharing the kernel's index
math in csrc/common/rbf_pairs_grid.h) against float64 brute force: ragged blocks, dx != dy, same
and different blocks, float32 and float64, tile by tile down to the pair-sum slots."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

_twins = pytest.importorskip("pyckafast._twins", reason="the host twins need the test-only extension")

from gpu_emulation import EmulatedEngine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TWIN = {np.float32: _twins.rbf_pairs_twin_f32, np.float64: _twins.rbf_pairs_twin_f64}
TILE = {np.float32: _twins.rbf_twin_tile_rows_f32(), np.float64: _twins.rbf_twin_tile_rows_f64()}
GAMMA_X, GAMMA_Y = 0.04, 0.3
# (gamma, c, m) of E = 2^m exp(-gamma d2) - c: x a shifted and scaled kernel, y the expm1 form.
KX, KY = (GAMMA_X, 3.1, 2), (GAMMA_Y, 1.0, 0)
K1 = (1.0, 1.0, 0)  # (gamma, c, m): the expm1 form, E = K - 1


def _entry(d2, kernel):
    gamma, c, m = kernel
    return np.ldexp(np.exp(-gamma * d2), m) - c


class Block:
    """What pyckafast._gpu_rbf hands the engine: centred rows and their squared norms."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.nx = (x.astype(float) ** 2).sum(1).astype(x.dtype)
        self.ny = (y.astype(float) ** 2).sum(1).astype(y.dtype)


def _blocks(dtype, ma, mb, same_block, dx=19, dy=6, seed=0):
    rng = np.random.default_rng(seed)
    a = Block(rng.normal(size=(ma, dx)).astype(dtype), rng.normal(size=(ma, dy)).astype(dtype))
    if same_block:
        return a, a
    return a, Block(rng.normal(size=(mb, dx)).astype(dtype), rng.normal(size=(mb, dy)).astype(dtype))


def _entries(a, b, same_block):
    """E, F of every pair (i in a, j in b) in float64 from the rows; the diagonal is 0."""
    def one(p, q, kernel):
        p, q = p.astype(float), q.astype(float)
        e = _entry(((p[:, None, :] - q[None, :, :]) ** 2).sum(-1), kernel)
        if same_block:
            np.fill_diagonal(e, 0.0)
        return e
    return one(a.x, b.x, KX), one(a.y, b.y, KY)


def _launch(dtype, a, b, same_block, slots=4, start=0.0, kernels=(KX, KY)):
    """One emulated launch; returns (row_k_a, row_l_a, row_k_b, row_l_b, sums)."""
    rka, rla = np.full(len(a.x), start), np.full(len(a.x), start)
    rkb, rlb = (rka, rla) if same_block else (np.full(len(b.x), start), np.full(len(b.x), start))
    sums = np.zeros((slots, 3))
    TWIN[dtype](a.x, a.y, a.nx, a.ny, b.x, b.y, b.nx, b.ny, *kernels, same_block,
                rka, rla, rkb, rlb, sums)
    return rka, rla, rkb, rlb, sums


def _tol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-12


SHAPES = [(1, 1), (7, 3), (130, 61), (300, 129), (257, 256)]  # ragged against 64 and 128


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ma,mb", SHAPES)
def test_different_blocks_match_brute_force(dtype, ma, mb):
    """Every pair once, counted for both orders; row sums to a, column sums to b."""
    a, b = _blocks(dtype, ma, mb, False)
    rka, rla, rkb, rlb, sums = _launch(dtype, a, b, False)
    e, f = _entries(a, b, False)
    want = 2.0 * np.array([(e * f).sum(), (e * e).sum(), (f * f).sum()])
    rtol = _tol(dtype)
    np.testing.assert_allclose(sums.sum(0), want, rtol=rtol)
    for got, ref in ((rka, e.sum(1)), (rla, f.sum(1)), (rkb, e.sum(0)), (rlb, f.sum(0))):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 63, 64, 65, 129, 300])
def test_same_block_matches_brute_force(dtype, m):
    """Pairs i < j only (diagonal tiles masked, tiles below the diagonal skipped), doubled, and
    the column sums scattered back to the rows: the full ordered-pair sums of the block."""
    a, _ = _blocks(dtype, m, m, True, dx=5, dy=11)
    rka, rla, rkb, rlb, sums = _launch(dtype, a, a, True)
    assert rkb is rka
    e, f = _entries(a, a, True)
    rtol = _tol(dtype)
    np.testing.assert_allclose(sums.sum(0), [(e * f).sum(), (e * e).sum(), (f * f).sum()],
                               rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(rka, e.sum(1), rtol=rtol, atol=rtol * max(np.abs(e.sum(1)).max(), 1))
    np.testing.assert_allclose(rla, f.sum(1), rtol=rtol, atol=rtol * max(np.abs(f.sum(1)).max(), 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("same_block", [True, False])
def test_each_slot_holds_its_tiles(dtype, same_block):
    """Slot s holds exactly the (doubled) pair sums of the tiles (bx, by) with
    (by * grid_x + bx) % slots == s that run: all of them, or bx >= by for one block."""
    tile = TILE[dtype]
    ma, mb = 2 * tile + 9, (tile + 5 if not same_block else 2 * tile + 9)
    a, b = _blocks(dtype, ma, mb, same_block, seed=4)
    slots = 5
    *_, sums = _launch(dtype, a, b, same_block, slots=slots)
    e, f = _entries(a, b, same_block)
    grid_x, grid_y = -(-mb // tile), -(-ma // tile)
    want = np.zeros((slots, 3))
    for by in range(grid_y):
        for bx in range(grid_x):
            if same_block and bx < by:
                continue
            te = e[by * tile:(by + 1) * tile, bx * tile:(bx + 1) * tile]
            tf = f[by * tile:(by + 1) * tile, bx * tile:(bx + 1) * tile]
            if same_block and bx == by:  # pairs j > i only
                te, tf = np.triu(te, 1), np.triu(tf, 1)
            want[(by * grid_x + bx) % slots] += 2.0 * np.array(
                [(te * tf).sum(), (te * te).sum(), (tf * tf).sum()])
    np.testing.assert_allclose(sums, want, rtol=_tol(dtype), atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sums_are_added_in_place(dtype):
    a, b = _blocks(dtype, 70, 40, False)
    fresh = _launch(dtype, a, b, False)
    shifted = _launch(dtype, a, b, False, start=1.0)
    for got, ref in zip(shifted[:4], fresh[:4]):
        np.testing.assert_allclose(got, ref + 1.0, rtol=1e-12)


@pytest.mark.parametrize("same_block", [True, False])
def test_engine_contract_of_the_former_numpy_stand_in(same_block):
    """EmulatedEngine.rbf_pair (now the twin) against the float64 NumPy stand-in it replaced:
    weight 1 over the ordered pairs of a block with itself, weight 2 across blocks, row sums of
    a, and column sums to b only across blocks."""
    a, b = _blocks(np.float64, 150, 150 if same_block else 77, same_block, seed=7)
    engine = EmulatedEngine()
    got = [np.zeros(150), np.zeros(150)]
    got += got if same_block else [np.zeros(len(b.x)), np.zeros(len(b.x))]
    sums = np.zeros((engine.slots, 3))
    engine.rbf_pair(a, b, KX, KY, same_block, *got, sums)

    def stand_in(pa, pb, na, nb, kernel):  # tests/gpu_emulation.py before the twin
        d2 = na[:, None] + nb[None, :] - 2.0 * (pa @ pb.T)
        return _entry(np.maximum(d2, 0.0), kernel)

    e, f = stand_in(a.x, b.x, a.nx, b.nx, KX), stand_in(a.y, b.y, a.ny, b.ny, KY)
    want_rows = [np.zeros(150), np.zeros(150)]
    want_rows += want_rows if same_block else [np.zeros(len(b.x)), np.zeros(len(b.x))]
    if same_block:
        np.fill_diagonal(e, 0.0)
        np.fill_diagonal(f, 0.0)
    weight = 1.0 if same_block else 2.0
    want = weight * np.array([(e * f).sum(), (e * e).sum(), (f * f).sum()])
    want_rows[0] += e.sum(1)
    want_rows[1] += f.sum(1)
    if not same_block:
        want_rows[2] += e.sum(0)
        want_rows[3] += f.sum(0)
    np.testing.assert_allclose(sums.sum(0), want, rtol=1e-12)
    for g, w in zip(got, want_rows):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    assert engine.calls["rbf_pair"] == 1


def test_wide_bandwidth_is_not_cancelled():
    """Entries are K - 1 evaluated in float32: with gamma d2 ~ 1e-6 (K within 1e-6 of 1) the
    float32 sums keep their relative precision."""
    a, b = _blocks(np.float32, 90, 33, False)
    a, b = (Block(blk.x * np.float32(3e-3), blk.y) for blk in (a, b))
    rka, _, rkb, _, sums = _launch(np.float32, a, b, False, kernels=((GAMMA_X, 1.0, 0), KY))
    e = np.expm1(-GAMMA_X * ((a.x[:, None].astype(float) - b.x[None]) ** 2).sum(-1))
    assert -1e-4 < e.min() and e.max() < 0
    np.testing.assert_allclose(rka, e.sum(1), rtol=1e-5)
    np.testing.assert_allclose(rkb, e.sum(0), rtol=1e-5)
    assert sums[:, 1].sum() == pytest.approx(2.0 * (e * e).sum(), rel=1e-5)


def test_twin_runs_the_instantiations_the_engine_launches():
    """Tile rows of the twin = 16 TM of the kernel instantiation pyckafast._gpu.engine launches
    for that dtype (read from the sources: importing the engine needs CuPy)."""
    engine = (ROOT / "pyckafast" / "_gpu" / "engine.py").read_text()
    tm = {k: int(v) for k, v in re.findall(r"np\.dtype\(np\.(float\d+)\): (\d+)", engine)}
    kernel = (ROOT / "csrc" / "cuda" / "rbf_pairs_cuda.cu").read_text()
    instantiated = dict(re.findall(r"PCF_RBF_INSTANTIATE\((float|double), (\d+)\)", kernel))
    assert TILE[np.float32] == 16 * tm["float32"] == 16 * int(instantiated["float"])
    assert TILE[np.float64] == 16 * tm["float64"] == 16 * int(instantiated["double"])


def test_twin_checks_arguments():
    a, b = _blocks(np.float32, 10, 12, False)
    rows = np.zeros(10)
    sums = np.zeros((2, 3))
    with pytest.raises(ValueError, match="same_block needs block b to be block a"):
        TWIN[np.float32](a.x, a.y, a.nx, a.ny, b.x, b.y, b.nx, b.ny, K1, K1, True, rows,
                         rows.copy(), np.zeros(12), np.zeros(12), sums)
    with pytest.raises(ValueError, match="row_k_b"):  # a strided view would be a silent copy
        TWIN[np.float32](a.x, a.y, a.nx, a.ny, b.x, b.y, b.nx, b.ny, K1, K1, False, rows,
                         rows.copy(), np.zeros(24)[::2], np.zeros(12), sums)
    with pytest.raises(ValueError, match="xb"):
        TWIN[np.float32](a.x, a.y, a.nx, a.ny, b.x.astype(np.float64), b.y, b.nx, b.ny, K1,
                         K1, False, rows, rows.copy(), np.zeros(12), np.zeros(12), sums)
    with pytest.raises(ValueError, match="sums"):
        TWIN[np.float32](a.x, a.y, a.nx, a.ny, b.x, b.y, b.nx, b.ny, K1, K1, False, rows,
                         rows.copy(), np.zeros(12), np.zeros(12), np.zeros((2, 2)))
