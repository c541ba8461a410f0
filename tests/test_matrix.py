"""Every engine entry point over the whole test matrix (tests/matrix.py): input kind x backend x
dtype, each cell against the float64 n x n reference of the values it holds, biased and
debiased in the same cell; routes that cannot work must raise their error.

The shapes are small (n <= 203): what the matrix checks is that every route reaches the same
exact value, not the entry points' behaviour at scale (their own suites, and bench/).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from _reference import correlated_linear, correlated_tanh, linear_cka_ref, rbf_cka_ref

import pyckafast
from matrix import Cell, Inputs, MEAN, cells, prepare_backend, rounded

ESTIMATORS = (False, True)
# float64: 1e-10 everywhere; float32 compute (float32 data of mean 1e4, and the half types):
# 1e-5 for linear kernels, 1e-4 for RBF (squared distances in float32).
TOL = {("float64", "linear"): 1e-10, ("float64", "rbf"): 1e-10,
       ("float32", "linear"): 1e-5, ("float32", "rbf"): 1e-4}


# ---- the data of the cells: float64 draws, rounded to each cell's dtype ------------------------
@lru_cache(maxsize=None)
def _draw(name: str) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(sum(map(ord, name)))
    if name == "pair":  # n not a multiple of the chunks below
        return correlated_linear(rng, 203, 12, 6)
    if name == "wide pair":  # p > n: the sample-space forms
        return correlated_linear(rng, 40, 90, 120)
    if name == "rbf pair":
        return correlated_tanh(rng, 90, 6, 4)
    if name == "layers":
        x, y = correlated_tanh(rng, 120, 7, 5)
        return x, y, np.tanh(x[:, :3]) + 0.3 * rng.normal(size=(120, 3))
    if name == "wide layers":  # two wide layers (the tiled pass) beside a narrow one
        x, y = correlated_linear(rng, 40, 90, 120)
        return x, x[:, :6] ** 2 + rng.normal(size=(40, 6)), y
    raise AssertionError(name)


@lru_cache(maxsize=None)
def data(name: str, dtype: str) -> tuple[np.ndarray, ...]:
    """The arrays of ``name`` with the dtype's mean, rounded to ``dtype``."""
    return tuple(rounded(a + MEAN[dtype], dtype) for a in _draw(name))


@lru_cache(maxsize=None)
def reference(op: str, dtype: str) -> dict:
    """The float64 reference of the values the cells of ``op`` and ``dtype`` hold."""
    spec = OPS[op]
    arrays = [a.astype(np.float64) for a in data(spec.data, dtype)]
    if spec.kernel == "rbf":
        def one(a, b, d):
            return rbf_cka_ref(a, b, debiased=d)
    else:
        def one(a, b, d):
            return linear_cka_ref(a, b, d)
    if spec.shape == "pair":
        return {d: one(arrays[0], arrays[1], d) for d in ESTIMATORS}
    xs, ys = (arrays, arrays) if spec.shape == "symmetric" else (arrays[:2], arrays[1:])
    out = {}
    for d in ESTIMATORS:
        m = np.array([[one(a, b, d) for b in ys] for a in xs])
        if spec.shape == "symmetric":
            np.fill_diagonal(m, 1.0)
        out[d] = m
    return out


# ---- the operations: how each entry point is run on a cell's inputs ----------------------------
class Op:
    def __init__(self, data: str, kernel: str, shape: str, run):
        self.data, self.kernel, self.shape, self.run = data, kernel, shape, run


def _linear_cka(inputs, backend):
    return {d: pyckafast.linear_cka(*inputs, debiased=d, backend=backend, chunk_size=64)
            for d in ESTIMATORS}


def _rbf_cka(inputs, backend):
    return {d: pyckafast.rbf_cka(*inputs, debiased=d, backend=backend) for d in ESTIMATORS}


def _map(kernel, symmetric, **kw):
    def run(inputs, backend):
        xs, ys = (list(inputs), None) if symmetric else (list(inputs[:2]), list(inputs[1:]))
        return {d: pyckafast.cka_matrix(xs, ys, kernel=kernel, debiased=d, backend=backend, **kw)
                for d in ESTIMATORS}
    return run


BATCHES = [0, 3, 50, 51, 130, 203]  # uneven, a batch of one row, n not a multiple


def _linear_state(inputs, backend):
    state = pyckafast.LinearCKAState(backend=backend)
    x, y = inputs
    for lo, hi in zip(BATCHES[:-1], BATCHES[1:]):
        state.update(x[lo:hi], y[lo:hi])
    assert state.n == 203
    return {d: state.result(debiased=d) for d in ESTIMATORS}


def _map_state(inputs, backend):
    state = pyckafast.CKAMapState(backend=backend)
    for lo, hi in ((0, 30), (30, 31), (31, 77), (77, 120)):
        state.update([a[lo:hi] for a in inputs])
    assert state.n == 120
    return {d: state.result(debiased=d) for d in ESTIMATORS}


OPS = {
    "linear_cka": Op("pair", "linear", "pair", _linear_cka),
    "linear_cka_wide": Op("wide pair", "linear", "pair", _linear_cka),
    "rbf_cka": Op("rbf pair", "rbf", "pair", _rbf_cka),
    "cka_matrix": Op("layers", "linear", "symmetric", _map("linear", True)),
    "cka_matrix_tiled": Op("wide layers", "linear", "cross", _map("linear", False, tile=16)),
    "cka_matrix_rbf": Op("layers", "rbf", "symmetric", _map("rbf", True)),
    "LinearCKAState": Op("pair", "linear", "pair", _linear_state),
    "CKAMapState": Op("layers", "linear", "symmetric", _map_state),
}


@pytest.mark.parametrize("cell", cells(OPS))
def test_cell(cell: Cell, monkeypatch, tmp_path):
    cuda_calls = prepare_backend(cell, monkeypatch)
    op = OPS[cell.op]
    make = Inputs(cell, tmp_path)
    inputs = [make(a) for a in data(op.data, cell.dtype)]
    if cell.error is not None:
        exc, match = cell.error
        with pytest.raises(exc, match=match):
            op.run(inputs, cell.backend)
        return
    got = op.run(inputs, cell.backend)
    want = reference(cell.op, cell.dtype)
    tol = TOL[cell.compute, op.kernel]
    for d in ESTIMATORS:
        np.testing.assert_allclose(got[d], want[d], rtol=tol, atol=0,
                                   err_msg=f"{cell}, debiased={d}")
    assert (cell.backend == "cuda") == bool(cuda_calls), f"{cell} called the cuda ops {cuda_calls}"
