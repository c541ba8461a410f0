"""compare_models on activations that live "on the GPU", without a GPU: the model's tensors are
a torch.Tensor subclass that reports a CUDA DLPack device and refuses every host conversion,
and the cuda backend is the emulated engine (tests/gpu_emulation.py). The streamed layers must
reach the map state's cuda producer as they are, with no host copy."""

from __future__ import annotations

import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pyckafast._twins", reason="the emulated engine runs the C++ host twins")

import pyckafast  # noqa: E402
from pyckafast._core import dispatch  # noqa: E402
from pyckafast._core import inputs as core_inputs  # noqa: E402
from pyckafast._gpu import linear as gpu_linear  # noqa: E402
from pyckafast.torch import compare_models  # noqa: E402
from gpu_emulation import EmulatedEngine  # noqa: E402


class DeviceTensor(torch.Tensor):
    """A CPU tensor that says it lives on a CUDA device; copying it to the host fails, except
    through ``cpu()`` while ``host_copies`` is a list (then each copy is counted there)."""

    host_copies = None

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0

    def _host_copy(self, *args, **kwargs):
        raise AssertionError("an activation was copied to the host")

    numpy = __array__ = tolist = _host_copy

    def cpu(self, *args, **kwargs):
        if DeviceTensor.host_copies is None:
            self._host_copy()
        DeviceTensor.host_copies.append(tuple(self.shape))
        return self.as_subclass(torch.Tensor).clone()


@pytest.fixture
def emulated(monkeypatch):
    """The cuda backend on the emulated engine, and a DLPack view (no copy) for device tensors."""
    engine = EmulatedEngine()
    ops = types.ModuleType("emulated_cuda")
    ops.linear_terms = lambda x, y, *, debiased, chunk_size=None, precision="highest": \
        gpu_linear.linear_terms(engine, x, y, x.n, debiased=debiased, chunk_size=chunk_size,
                                precision=precision)
    # the moment state's GPU feed: the array module of "device" data and a prepared input on it
    ops.array_module = lambda: np
    def device_array(s):  # counted: each layer's batch reaches the GPU feed once
        engine.calls["device_array"] = engine.calls.get("device_array", 0) + 1
        return np.asarray(s.data, dtype=s.dtype)

    ops.device_array = device_array
    real_load = dispatch._load
    monkeypatch.setattr(dispatch, "_load",
                        lambda name: (ops, None) if name == "cuda" else real_load(name))
    seen = []

    def as_device_array(a):
        assert isinstance(a, DeviceTensor)
        seen.append(a)
        return torch.Tensor.numpy(a.as_subclass(torch.Tensor))  # a view: the "device" array

    monkeypatch.setattr(core_inputs, "as_cupy", as_device_array)
    return engine, seen


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(inplace=True),
                               torch.nn.Flatten(), torch.nn.Linear(3 * 16, 5), torch.nn.Tanh())


@pytest.mark.parametrize("debiased", [False, True])
def test_device_activations_take_the_cuda_producer_without_host_copies(emulated, debiased):
    engine, seen = emulated
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, 6, 6, generator=g)
    batches = [x[i:i + 25].as_subclass(DeviceTensor) for i in range(0, 60, 25)]
    a, b = _net(1), _net(2)
    names = ["0", "3", "4"]
    m, _, _, rep = compare_models(a, b, batches, names, debiased=debiased, report=True)
    assert all(r["path"] == "stream" for r in rep)
    assert len(seen) == 3 * 2 * len(names)  # every layer of every batch, as a device tensor
    # the cuda producer ran: the moment state's GPU feed took every layer's batch, once each
    # (3 batches, the layers of both models)
    assert engine.calls["device_array"] == 3 * 2 * len(names)
    # the reference: the same models on plain host tensors
    ref, _, _ = compare_models(a, b, [t.as_subclass(torch.Tensor) for t in batches], names,
                               debiased=debiased)
    np.testing.assert_allclose(m, ref, atol=1e-6)


def test_the_fake_device_tensor_refuses_host_copies():
    t = torch.zeros(3, 2).as_subclass(DeviceTensor)
    with pytest.raises(AssertionError, match="copied to the host"):
        np.asarray(t)
    assert pyckafast._core.inputs.device_of(t.reshape(6)) == "cuda"


def test_cached_layers_are_copied_once_and_tiled_with_the_gpu_module(emulated, monkeypatch):
    """A budget that streams the narrow layers: model_a's wide one (48 features) and model_b's
    layers (they pair with it) are copied to the host once per batch for the cache, and the tiled pass runs with the GPU array module
    (here a stand-in for CuPy that counts its uploads)."""
    import sys

    from pyckafast._torch.plan import state_bytes

    engine, seen = emulated
    uploads = []
    fake_cupy = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake_cupy.asarray = lambda a, *args, **kw: uploads.append(a.shape) or np.asarray(a, *args, **kw)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(DeviceTensor, "host_copies", [])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 2, 6, 6, generator=g)
    batches = [x[i:i + 25].as_subclass(DeviceTensor) for i in range(0, 60, 25)]
    a, b = _net(3), _net(4)
    m, _, _, rep = compare_models(a, b, batches, ["0", "4"], ["3", "4"], report=True,
                                  max_state_bytes=state_bytes([5], [5, 5]), debiased=True)
    assert [(r["layer"], r["path"]) for r in rep] == [
        ("0", "cache"), ("4", "stream"), ("3", "cache"), ("4", "cache")]
    # model_a's "0" and model_b's "3" and "4" are cached: one host copy each per batch
    assert sorted(DeviceTensor.host_copies) == sorted([(25, 48), (25, 48), (10, 48)] +
                                                      [(25, 5), (25, 5), (10, 5)] * 2)
    assert len(seen) == 3 * 3  # the streamed layers (model_a's "4", model_b's "3" and "4")
    assert uploads  # the tiled pass uploaded the cached blocks
    ref, _, _ = compare_models(a, b, [t.as_subclass(torch.Tensor) for t in batches], ["0", "4"],
                               ["3", "4"], debiased=True)
    np.testing.assert_allclose(m, ref, atol=1e-6)
