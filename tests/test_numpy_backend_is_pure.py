"""``backend="numpy"`` is the plain float64 reference: no public function may reach the compiled
C++ extension or a Numba-jitted function when it is asked for (an explicit backend means that
backend, everywhere: the bandwidth passes, the tiles, the linear moments, Dask tasks)."""

from __future__ import annotations

import functools
import importlib
import pkgutil

import numpy as np
import pytest

import pyckafast
import pyckafast.dask

numba_registry = pytest.importorskip("numba.core.registry")

# Modules that need an optional dependency or a GPU to import; none holds compiled code.
_SKIP_IMPORT = ("pyckafast._gpu", "pyckafast.plot", "pyckafast.robustness.plots",
                "pyckafast.__main__")


def _import_every_module() -> None:
    for info in pkgutil.walk_packages(pyckafast.__path__, prefix="pyckafast."):
        if not info.name.startswith(_SKIP_IMPORT):
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional dependency (torch, matplotlib) is missing
                pass


def _counting(fn, name: str, calls: list):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls.append(name)
        return fn(*args, **kwargs)
    return wrapper


@pytest.fixture
def compiled_calls(monkeypatch):
    """Every call into ``pyckafast._ext`` and into a Numba dispatcher that a pyckafast module
    holds, by name, in call order."""
    _import_every_module()
    calls: list[str] = []
    ext = pytest.importorskip("pyckafast._ext")
    for name in dir(ext):
        value = getattr(ext, name)
        if callable(value) and not name.startswith("__"):
            monkeypatch.setattr(ext, name, _counting(value, f"_ext.{name}", calls))
    # Count at the dispatcher class: a Python-level call of any jitted function goes through it
    # (calls between jitted functions stay compiled and are not Python calls).
    dispatcher = numba_registry.CPUDispatcher
    original_call = dispatcher.__call__

    def counting_call(self, *args, **kwargs):
        module = getattr(self.py_func, "__module__", "") or ""
        if module.startswith("pyckafast"):
            calls.append(f"numba {module}.{self.py_func.__name__}")
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(dispatcher, "__call__", counting_call)
    return calls


def _data(n=90):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, np.tanh(x[:, :4]) + 0.1 * rng.normal(size=(n, 4))


def _stream(tmp_path):
    x, y = _data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return pyckafast.stream_npy(tmp_path / "x.npy", tmp_path / "y.npy", chunk_size=25,
                                backend="numpy").result(debiased=True)


def _state():
    x, y = _data()
    return pyckafast.LinearCKAState(backend="numpy").update(x[:50], y[:50]).update(
        x[50:], y[50:]).result(debiased=True)


def _dask_call(fn, **kwargs):
    da = pytest.importorskip("dask.array")
    import dask

    x, y = _data()
    with dask.config.set(scheduler="synchronous"):  # tasks run here, where calls are counted
        return fn(da.from_array(x, chunks=40), da.from_array(y, chunks=40), backend="numpy",
                  **kwargs)


def _compare_models():
    torch = pytest.importorskip("torch")
    from pyckafast.torch import compare_models

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = [torch.randn(30, 4) for _ in range(3)]
    return compare_models(net, net, data, ["0", "2"], backend="numpy", debiased=True)[0]


_CALLS = {
    "linear_cka-features": lambda t: pyckafast.linear_cka(*_data(), backend="numpy", form="features"),
    "linear_cka-samples": lambda t: pyckafast.linear_cka(*_data(), backend="numpy", form="samples"),
    "linear_hsic-debiased": lambda t: pyckafast.linear_hsic(*_data(), backend="numpy", debiased=True),
    "cka-linear": lambda t: pyckafast.cka(*_data(), backend="numpy"),
    "hsic-rbf-sigma": lambda t: pyckafast.hsic(*_data(), kernel="rbf", sigma=1.5, backend="numpy"),
    "rbf_cka-sigma": lambda t: pyckafast.rbf_cka(*_data(), sigma=(1.0, 2.0), backend="numpy"),
    "rbf_cka-sampled": lambda t: pyckafast.rbf_cka(*_data(), bandwidth="sampled", backend="numpy"),
    "rbf_cka-kornblith": lambda t: pyckafast.rbf_cka(*_data(), backend="numpy"),
    "rbf_hsic-offdiag": lambda t: pyckafast.rbf_hsic(*_data(), bandwidth="offdiag", backend="numpy"),
    "cka_matrix-linear": lambda t: pyckafast.cka_matrix(list(_data()), debiased=True, backend="numpy"),
    "cka_matrix-rbf-sigma": lambda t: pyckafast.cka_matrix(list(_data()), kernel="rbf", sigma=1.0,
                                                           backend="numpy"),
    "cka_matrix-rbf-median": lambda t: pyckafast.cka_matrix(list(_data()), kernel="rbf",
                                                            backend="numpy"),
    "minibatch_cka-linear": lambda t: pyckafast.minibatch_cka(*_data(), 30, backend="numpy"),
    "minibatch_cka-rbf-sigma": lambda t: pyckafast.minibatch_cka(*_data(), 30, kernel="rbf",
                                                                 sigma=1.0, backend="numpy"),
    "minibatch_cka-rbf-median": lambda t: pyckafast.minibatch_cka(*_data(), 30, kernel="rbf",
                                                                  backend="numpy"),
    "LinearCKAState": lambda t: _state(),
    "stream_npy": _stream,
    "dask.linear_cka": lambda t: _dask_call(pyckafast.dask.linear_cka, debiased=True),
    "dask.rbf_cka-sigma": lambda t: _dask_call(pyckafast.dask.rbf_cka, sigma=1.0),
    "dask.rbf_cka-median": lambda t: _dask_call(pyckafast.dask.rbf_cka),
    "linear_cka-dask-input": lambda t: _dask_call(pyckafast.linear_cka),
    "compare_models": lambda t: _compare_models(),
}


@pytest.mark.parametrize("case", list(_CALLS))
def test_numpy_backend_calls_no_compiled_code(case, compiled_calls, tmp_path):
    value = _CALLS[case](tmp_path)
    assert np.all(np.isfinite(value))
    assert compiled_calls == []


def test_the_counters_see_compiled_calls(compiled_calls):
    """The fixture is not blind: the compiled backends are counted when they run."""
    x, y = _data()
    pyckafast.linear_cka(x, y, backend="cpp")
    pyckafast.linear_cka(x, y, backend="numba")
    assert any(c.startswith("_ext.") for c in compiled_calls)
    assert any(c.startswith("numba ") for c in compiled_calls)
