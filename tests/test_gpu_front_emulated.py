"""The public functions' GPU route without a GPU: the "cuda" backend module is replaced by one
whose operations run the real GPU drivers on the emulated engine (tests/gpu_emulation.py), so
``backend="cuda"`` goes through dispatch, the GPU producers and the drivers, and must give the
CPU results. tests/test_gpu.py checks the same routes on a real GPU."""

from __future__ import annotations

import numpy as np
import pytest

import pyckafast
from pyckafast._core.params import InvalidParameterError

pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ host twins")
from gpu_emulation import EmulatedEngine, install_emulated_cuda  # noqa: E402


@pytest.fixture
def engine(monkeypatch):
    engine = EmulatedEngine()
    engine.ops = install_emulated_cuda(monkeypatch, engine)
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
