"""The public functions' GPU route without a GPU: the "cuda" backend module is replaced by one
whose operations run the real GPU drivers on the emulated engine (tests/gpu_emulation.py), so
``backend="cuda"`` goes through dispatch, the GPU producers and the drivers, and must give the
CPU results. tests/test_gpu.py checks the same routes on a real GPU."""

from __future__ import annotations

import types

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch, gram
from pyckafast._core.inputs import Samples, prepare
from pyckafast._core.params import InvalidParameterError
from pyckafast._gpu import linear as gpu_linear, rbf as gpu_rbf

pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ host twins")
from gpu_emulation import EmulatedEngine  # noqa: E402


def _emulated_cuda(engine: EmulatedEngine) -> types.ModuleType:
    """A stand-in for pyckafast._gpu.ops_cuda with the same operations, run on ``engine``."""
    ops = types.ModuleType("emulated_cuda")
    ops.hsic_calls = 0

    def as_samples(a, name):
        return a if isinstance(a, Samples) else prepare(a, name)

    def linear_terms(x, y, *, debiased, chunk_size=None, precision="highest"):
        return gpu_linear.linear_terms(engine, x, y, x.n, debiased=debiased,
                                       chunk_size=chunk_size, precision=precision)

    def rbf_terms(x, y, *, gamma_x, gamma_y, tile=None):
        sx, sy = as_samples(x, "x"), as_samples(y, "y")
        return gpu_rbf.rbf_terms(engine, sx, sy, gamma_x=gamma_x, gamma_y=gamma_y, tile=tile)

    def hsic_matrix(reps, **kwargs):
        ops.hsic_calls += 1
        return gram.hsic_matrix(np, reps, **kwargs)

    ops.linear_terms, ops.rbf_terms, ops.hsic_matrix = linear_terms, rbf_terms, hsic_matrix
    ops.array_module = lambda: np
    ops.device_array = lambda s: np.asarray(s.data, dtype=s.dtype)
    return ops


@pytest.fixture
def engine(monkeypatch):
    engine = EmulatedEngine()
    fake = _emulated_cuda(engine)
    real_load = dispatch._load
    monkeypatch.setattr(dispatch, "_load",
                        lambda name: (fake, None) if name == "cuda" else real_load(name))
    engine.ops = fake
    return engine


def _layers():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(64, 5)) + 3.0
    return [x, np.tanh(x[:, :3]) + 0.3 * rng.normal(size=(64, 3)), (x[:, :2] ** 2)]


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_takes_the_gpu_producer(engine, debiased):
    x, y, _ = _layers()
    got = pyckafast.linear_cka(x, y, debiased=debiased, backend="cuda", chunk_size=20)
    assert engine.calls["moments"] == 4
    assert got == pytest.approx(pyckafast.linear_cka(x, y, debiased=debiased), rel=1e-10)


def test_gpu_path_checks_parameters_before_running(engine):
    x, y, _ = _layers()
    for bad in ({"form": "gram"}, {"chunk_size": True}, {"precision": "fast"}):
        with pytest.raises(InvalidParameterError, match="parameter of linear_cka"):
            pyckafast.linear_cka(x, y, backend="cuda", **bad)
    assert engine.calls == {}


@pytest.mark.parametrize("kernel, options", [("linear", {}), ("rbf", {"sigma": 2.0}),
                                             ("rbf", {"bandwidth": "offdiag"})])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_takes_the_gpu_producers(engine, kernel, options, debiased):
    layers = _layers()
    got = pyckafast.cka_matrix(layers, kernel=kernel, debiased=debiased, backend="cuda", **options)
    want = pyckafast.cka_matrix(layers, kernel=kernel, debiased=debiased, **options)
    assert engine.calls["moments" if kernel == "linear" else "rbf_pair"] >= 3  # three pairs
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("kernel, options", [("linear", {}), ("rbf", {"sigma": 2.0}),
                                             ("rbf", {})])
@pytest.mark.parametrize("debiased", [False, True])
def test_minibatch_cka_takes_the_hsic_matrix(engine, kernel, options, debiased):
    x, y, _ = _layers()
    got = pyckafast.minibatch_cka(x, y, 16, kernel=kernel, debiased=debiased, backend="cuda",
                                  **options)
    want = pyckafast.minibatch_cka(x, y, 16, kernel=kernel, debiased=debiased, **options)
    assert engine.ops.hsic_calls == 4  # one per batch of 16 of the 64 rows
    assert got == pytest.approx(want, rel=1e-9)


def test_streaming_state_takes_the_gpu_producer(engine):
    x, y, _ = _layers()
    state = pyckafast.LinearCKAState(backend="cuda").update(x[:30], y[:30]).update(x[30:], y[30:])
    assert engine.calls["moments"] == 2
    assert state.result(debiased=True) == pytest.approx(
        pyckafast.linear_cka(x, y, debiased=True), rel=1e-10)
