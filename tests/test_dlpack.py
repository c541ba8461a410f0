"""Any host DLPack producer (``__dlpack__`` + ``__dlpack_device__``) is accepted by the public
functions and viewed without a copy."""

from __future__ import annotations

import numpy as np
import pytest

import pyckafast
from pyckafast._core.inputs import as_samples, prepare


class Producer:
    """The smallest DLPack producer: no ``__array__``, so NumPy can only read it through DLPack."""

    def __init__(self, a: np.ndarray):
        self.a, self.calls = a, 0

    def __dlpack__(self, **kwargs):
        self.calls += 1
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 6))
    return x, np.tanh(x @ rng.normal(size=(6, 4))), x[:, :3] ** 2


@pytest.mark.parametrize("layout", ["c", "fortran", "strided"])
def test_the_view_shares_the_producers_memory(layout):
    base = np.random.default_rng(1).normal(size=(50, 8))
    a = {"c": base, "fortran": np.asfortranarray(base), "strided": base[::2, ::3]}[layout]
    p = Producer(a)
    s = prepare(p, "x")
    assert s.kind == "numpy" and not s.on_device
    assert np.shares_memory(s.data, a) and p.calls == 1
    np.testing.assert_array_equal(s.data, a)


def test_a_dtype_numpy_computes_in_another_is_converted():
    a = np.arange(24, dtype=np.int32).reshape(6, 4)
    view = as_samples(Producer(a), "x")
    assert view.dtype == np.float64 and not np.shares_memory(view, a)
    np.testing.assert_array_equal(view, a)


def test_public_functions_take_producers():
    x, y, z = _data()
    px, py, pz = Producer(x), Producer(y), Producer(z)
    assert pyckafast.linear_cka(px, py) == pytest.approx(pyckafast.linear_cka(x, y), abs=1e-15)
    assert pyckafast.rbf_cka(px, py) == pytest.approx(pyckafast.rbf_cka(x, y), abs=1e-15)
    np.testing.assert_allclose(pyckafast.cka_matrix([px, py, pz]), pyckafast.cka_matrix([x, y, z]),
                               atol=1e-15)
    assert min(p.calls for p in (px, py, pz)) >= 1


def test_a_producer_numpy_cannot_view_gets_a_clear_error():
    class Broken(Producer):
        def __dlpack__(self, **kwargs):
            raise BufferError("no DLPack export for this one")

    with pytest.raises((TypeError, ValueError), match="x"):
        pyckafast.linear_cka(Broken(np.ones((5, 2))), np.ones((5, 2)))


def test_jax_cpu_arrays_are_viewed_without_a_copy():
    jnp = pytest.importorskip("jax.numpy", reason="jax is optional: the DLPack path is tested "
                                                  "above with a producer class")
    import jax

    jax.config.update("jax_enable_x64", True)
    x, y, _ = _data()
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    view = prepare(jx, "x").data
    assert view.ctypes.data == jx.unsafe_buffer_pointer()  # the same buffer
    assert pyckafast.linear_cka(jx, jy) == pytest.approx(pyckafast.linear_cka(x, y), abs=1e-15)


# ---- torch bfloat16 / float16 tensors (issue 22, item 5) -----------------------------------------
# bfloat16 crashed every entry point with numpy's "Unsupported dtype in DLTensor." They are
# computed as float32 (one float32 copy: NumPy has no bfloat16), as float16 already was.
# linear_cka, rbf_cka, cka_matrix (narrow, tiled, RBF) and both states take torch float16 and
# bfloat16 cells in tests/test_matrix.py, against the float64 reference; the others here.
def _entry_points():
    return {
        "linear_hsic": lambda x, y: pyckafast.linear_hsic(x, y),
        "cka": lambda x, y: pyckafast.cka(x, y, kernel="rbf", sigma=2.0),
        "hsic": lambda x, y: pyckafast.hsic(x, y),
        "minibatch_cka": lambda x, y: pyckafast.minibatch_cka(x, y, batch_size=40),
    }


@pytest.mark.parametrize("name", list(_entry_points()))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_half_tensors_give_the_float32_value(name, dtype):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(200, 10, generator=g) + 3.0).to(getattr(torch, dtype))
    y = torch.tanh(x.float() @ torch.randn(10, 4, generator=g)).to(getattr(torch, dtype))
    fn = _entry_points()[name]
    got, want = fn(x, y), fn(x.float(), y.float())
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_half_tensors_are_prepared_as_float32(dtype):
    torch = pytest.importorskip("torch")
    t = torch.ones(30, 3, dtype=getattr(torch, dtype))
    s = prepare(t, "x")
    assert s.dtype == np.float32 and s.data.dtype == np.float32 and s.kind == "numpy"
    assert (s.data == 1.0).all()
