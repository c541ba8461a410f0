"""The C++ one-pass products of a batch's Grams (``_ext.gram_products_*``), the minibatch
estimate's host route, against the float64 stacks' GEMMs (``batch_hsic_terms``)."""

import numpy as np
import pytest

from pyckafast._core.minibatch_terms import batch_hsic_terms, hsic_from_products
from pyckafast.minibatch import MinibatchMap, _float64_zero_diagonal

_ext = pytest.importorskip("pyckafast._ext", reason="the C++ extension is built in place")


def _grams(rng, b, widths, dtype, mean=0.0):
    out = []
    for p in widths:
        x = (rng.normal(size=(b, p)) + mean).astype(dtype)
        out.append(x @ x.T)
    return out


def _kernel(dtype):
    return _ext.gram_products_f32 if dtype == np.float32 else _ext.gram_products_f64


# b = 37: not a multiple of the kernel's 16 partial sums (the tail loop); 256: the job's batch
@pytest.mark.parametrize("b", [5, 37, 256])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("symmetric", [False, True], ids=["two-sided", "symmetric"])
def test_products_give_the_stacks_hsic(b, dtype, symmetric):
    rng = np.random.default_rng(b)
    ga = _grams(rng, b, [3, 40, 7], dtype, mean=2.0)
    gb = None if symmetric else _grams(rng, b, [5, 1], dtype)
    products = _kernel(dtype)(ga, gb)
    trace, sq_a, rows_a, sq_b, rows_b = products
    assert trace.shape == (3, 3 if symmetric else 2) and rows_a.shape == (3, b)
    assert all(p.dtype == np.float64 for p in products)
    sa = _float64_zero_diagonal(ga)
    sb = sa if symmetric else _float64_zero_diagonal(gb)
    va, vb = sa.reshape(len(sa), -1), sb.reshape(len(sb), -1)
    # the products: float64 sums of the same float64 values, in another order
    np.testing.assert_allclose(trace, va @ vb.T, rtol=1e-13)
    np.testing.assert_allclose(sq_a, (va * va).sum(1), rtol=1e-13)
    np.testing.assert_allclose(rows_a, sa.sum(2), rtol=0, atol=1e-13 * np.abs(sa).sum(2).max())
    side_b = () if symmetric else (sq_b, rows_b)
    got = hsic_from_products(b, trace, sq_a, rows_a, *side_b)
    ref = batch_hsic_terms(sa, None if symmetric else sb)
    # the HSIC cancels terms of the size of tr(K~K~) / (b(b-3)) (the Grams' offset of 2.0)
    for g, r, scale in zip(got, ref, (np.sqrt(np.outer(ref.scale_x, ref.scale_y)), ref.scale_x,
                                      ref.scale_y, ref.scale_x, ref.scale_y)):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12 * np.max(scale))
    if symmetric:
        np.testing.assert_array_equal(trace, trace.T)
        assert sq_b.shape == (0,) and rows_b.shape == (0, b)


def test_minibatch_map_takes_the_kernel_route_and_equals_the_stacks(monkeypatch):
    import pyckafast._cpu.ops_cpp as ops_cpp

    rng = np.random.default_rng(0)
    batches = [(_grams(rng, 64, [8, 3], np.float32), _grams(rng, 64, [4], np.float32))
               for _ in range(3)]
    calls = []
    real = _ext.gram_products_f32
    monkeypatch.setattr(_ext, "gram_products_f32", lambda *a: calls.append(1) or real(*a))
    fast = MinibatchMap()
    for ga, gb in batches:
        fast.update_grams(ga, gb)
    assert len(calls) == 3
    monkeypatch.setattr(ops_cpp, "_ext", None)  # as without the extension: the float64 stacks
    slow = MinibatchMap()
    for ga, gb in batches:
        slow.update_grams(ga, gb)
    assert len(calls) == 3
    np.testing.assert_allclose(fast.result(), slow.result(), rtol=0, atol=1e-13)


def test_mixed_or_strided_grams_take_the_stacks():
    from pyckafast.minibatch import _products_kernel

    g32 = np.eye(6, dtype=np.float32)
    assert _products_kernel([g32, g32]) is _ext.gram_products_f32
    assert _products_kernel([g32, g32.astype(np.float64)]) is None
    c_order_view = np.asfortranarray(np.ones((6, 6), np.float32)).T  # C-contiguous
    assert _products_kernel([c_order_view, g32]) is _ext.gram_products_f32
    assert _products_kernel([np.ones((6, 12), np.float32)[:, ::2]]) is None
    assert _products_kernel([np.eye(6, dtype=np.int64)]) is None


@pytest.mark.parametrize("bad, message", [
    (lambda g: ([g], [g[:5, :5].copy()]), "grams_b\\[0\\] has 5 samples where the first Gram"),
    (lambda g: ([g[:, :5].copy()], None), "grams_a\\[0\\] must be a square"),
    (lambda g: ([g.astype(np.float64)], None), "grams_a\\[0\\] must be a C-contiguous array"),
    (lambda g: ([], None), "at least one Gram"),
])
def test_kernel_names_the_bad_argument(bad, message):
    g = np.eye(6, dtype=np.float32)
    with pytest.raises((ValueError, TypeError), match=message):
        _ext.gram_products_f32(*bad(g))
