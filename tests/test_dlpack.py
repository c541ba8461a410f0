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
