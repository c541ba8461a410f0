"""Minibatch CKA (Nguyen et al. 2021): mean of per-batch HSIC, then normalised."""

import numpy as np
import pytest

import pyckafast
from _reference import (correlated_tanh, hsic, linear_gram, pytorch_cka_minibatch, rbf_gram,
                        torch_cka_minibatch)

from pyckafast.minibatch import MinibatchMap, batch_gram

# float32: 1e-5 for linear kernels (test_linear.py), 1e-4 for RBF (distances in float32, test_rbf.py)
TOL = {(np.float64, "linear"): 1e-10, (np.float64, "rbf"): 1e-10,
       (np.float32, "linear"): 1e-5, (np.float32, "rbf"): 1e-4}
MEAN = {np.float64: 0.0, np.float32: 1e3}


def _reference(x, y, batch, seed, debiased, gram):
    order = np.random.default_rng(seed).permutation(len(x))
    h = []
    for lo in range(0, len(x) - batch + 1, batch):
        idx = np.sort(order[lo:lo + batch])
        k, l = gram(x[idx]), gram(y[idx])
        h.append([hsic(k, l, debiased), hsic(k, k, debiased), hsic(l, l, debiased)])
    xy, xx, yy = np.mean(h, axis=0)
    return xy / np.sqrt(xx * yy)


@pytest.mark.parametrize("debiased", [True, False], ids=["debiased", "biased"])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_matches_reference(target, dtype, kernel, debiased, request):
    # 250 = 4 batches of 60 and 10 samples left out
    x, y = correlated_tanh(np.random.default_rng(4), 250, 6, 4, mean=MEAN[dtype], dtype=dtype)
    gram = linear_gram if kernel == "linear" else rbf_gram
    got = pyckafast.minibatch_cka(target.on(x), target.on(y), 60, kernel=kernel,
                                  debiased=debiased, seed=5, backend=target.backend)
    assert got == pytest.approx(_reference(x, y, 60, 5, debiased, gram), rel=TOL[dtype, kernel])


def test_is_a_different_estimator_but_close_for_big_batches():
    x, y = correlated_tanh(np.random.default_rng(5), 600, 6, 4)
    full = pyckafast.linear_cka(x, y, debiased=True)
    mb = pyckafast.minibatch_cka(x, y, 600, seed=None)
    assert mb == pytest.approx(full, rel=1e-10)  # one batch of everything: the same number
    assert pyckafast.minibatch_cka(x, y, 50) != pytest.approx(full, rel=1e-6)


@pytest.mark.parametrize("batch", [0, 3, 1000, 2.5])
def test_bad_batch_size(batch):
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match="batch_size"):
        pyckafast.minibatch_cka(x, x, batch)


def test_bad_kernel():
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match="kernel"):
        pyckafast.minibatch_cka(x, x, 10, kernel="cosine")


# The layer-map estimator of torch_cka / pytorch-cka (MinibatchMap): per-batch Grams once, every
# pair from one GEMM of the stacked Grams, float64 sums.

def _layer_batches(seed, n_batches=5, b=40, widths=(7, 30, 3), mean=0.0, dtype=np.float64):
    """Per batch, a list of related layers (a tanh network's activations)."""
    rng = np.random.default_rng(seed)
    w = [rng.normal(size=(6, p)) for p in widths]
    out = []
    for _ in range(n_batches):
        z = rng.normal(size=(b, 6))
        out.append([(np.tanh(z @ wi + 0.3 * rng.normal(size=(b, wi.shape[1]))) + mean)
                    .astype(dtype) for wi in w])
    return out


def _run(batches_a, batches_b=None):
    acc = MinibatchMap(symmetric=batches_b is None)
    for i, xs in enumerate(batches_a):
        acc.update(xs, None if batches_b is None else batches_b[i])
    return acc


def test_minibatch_map_equals_the_peers_formulas_in_float64():
    a, b = _layer_batches(0, mean=0.5), _layer_batches(1, widths=(4, 9))
    got = _run(a, b).result()
    np.testing.assert_allclose(got, torch_cka_minibatch(a, b), rtol=0, atol=1e-10)
    np.testing.assert_allclose(got, pytorch_cka_minibatch(a, b, clamp=False), rtol=0, atol=1e-10)


def test_minibatch_map_symmetric_is_the_two_sided_map():
    a = _layer_batches(2)
    sym, two = _run(a).result(), _run(a, a).result()
    np.testing.assert_allclose(sym, two, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.diagonal(sym), 1.0, rtol=0, atol=1e-13)
    np.testing.assert_allclose(sym, torch_cka_minibatch(a, a), rtol=0, atol=1e-10)


@pytest.mark.parametrize("mean", [0.0, 0.5, 1.0, 2.0, 3.0, 1e3, 1e5])  # offset shares 0..1
def test_minibatch_map_float32_with_a_large_mean(mean):
    """float32 Grams of rows with a common offset: a large one is centred away first, a small
    one kept (the Gram of the rows as they are), and either way the float32 GEMM keeps the
    estimate to float32 rounding of the data (the peers, uncentred, do not)."""
    a64, b64 = _layer_batches(3), _layer_batches(4, widths=(5, 11))
    a32 = [[(x + mean).astype(np.float32) for x in xs] for xs in a64]
    b32 = [[(y - mean).astype(np.float32) for y in ys] for ys in b64]
    want = torch_cka_minibatch([[x.astype(np.float64) - mean for x in xs] for xs in a32],
                               [[y.astype(np.float64) + mean for y in ys] for ys in b32])
    got = _run(a32, b32).result()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_minibatch_map_torch_tensors_take_torch_gemms():
    torch = pytest.importorskip("torch")
    a, b = _layer_batches(5), _layer_batches(6, widths=(8,))
    calls = []
    real_mm = torch.Tensor.__matmul__
    try:
        torch.Tensor.__matmul__ = lambda s, o: calls.append(s.dtype) or real_mm(s, o)
        grams = [batch_gram(torch.from_numpy(x)) for x in a[0]]
        g32 = batch_gram(torch.from_numpy(a[0][1].astype(np.float32)))
    finally:
        torch.Tensor.__matmul__ = real_mm
    assert calls == [torch.float64] * len(a[0]) + [torch.float32]  # torch's GEMM, input dtype
    assert all(isinstance(g, np.ndarray) and g.dtype == np.float64 for g in grams)
    np.testing.assert_allclose(grams[1], batch_gram(a[0][1]), rtol=0, atol=1e-12)
    assert g32.dtype == np.float32
    ta = [[torch.from_numpy(x) for x in xs] for xs in a]
    tb = [[torch.from_numpy(y) for y in ys] for ys in b]
    np.testing.assert_allclose(_run(ta, tb).result(), _run(a, b).result(), rtol=0, atol=1e-12)
    # half-precision activations: the float32 value of their upcast copies
    for dtype in (torch.float16, torch.bfloat16):
        ha = [[t.to(dtype) for t in xs] for xs in ta]
        up = [[t.float() for t in xs] for xs in ha]
        np.testing.assert_array_equal(_run(ha).result(), _run(up).result())


@pytest.mark.parametrize("value", [0.0, 1e4 / 3, -7.1, 1e30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minibatch_map_a_constant_layer(value, dtype):
    """A layer constant in every batch has an undefined CKA: nan with a warning, the other
    entries unharmed (decided from its own rounding residue, whatever its value)."""
    a, b = _layer_batches(7), _layer_batches(8, widths=(3,))
    const = np.full((40, 4), value, dtype=dtype)
    with pytest.warns(RuntimeWarning, match="without variance"):
        got = _run([[*xs, const] for xs in a], b).result()
    assert np.isnan(got[-1]).all() and not np.isnan(got[:-1]).any()
    np.testing.assert_allclose(got[:-1], _run(a, b).result(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("mean, std", [(1e6, 1.0), (1e4, 0.01), (3.0, 1e-6)])
def test_minibatch_map_small_spread_is_not_constant(mean, std):
    """float32 data with a small spread next to its mean (issue 22 item 1's class) has
    variance: its value, not nan."""
    import warnings

    rng = np.random.default_rng(9)
    xs, ys = [], []
    for _ in range(4):
        z = rng.normal(size=(64, 3))
        xs.append([(mean + std * z).astype(np.float32)])
        ys.append([(z[:, :2] + 0.5 * rng.normal(size=(64, 2))).astype(np.float32)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _run(xs, ys).result()
    want = torch_cka_minibatch([[x.astype(np.float64) - mean for x in b] for b in xs], ys)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_minibatch_map_bad_batches():
    acc = MinibatchMap()
    x = np.random.default_rng(0).normal(size=(3, 2))
    with pytest.raises(ValueError, match="at least 4 samples"):
        acc.update([x], [x])
    with pytest.raises(ValueError, match="same samples"):
        acc.update([np.ones((5, 2))], [np.ones((6, 2))])
    with pytest.raises(ValueError, match="no batch"):
        acc.result()
    with pytest.raises(ValueError, match="symmetric"):
        MinibatchMap(symmetric=True).update([x], [x])


@pytest.mark.parametrize("b", [8, 10])  # in quarters, and not (b % 4)
def test_wide_torch_gram_in_quarters_is_the_gram(b, monkeypatch):
    torch = pytest.importorskip("torch")
    from pyckafast.minibatch import _QUARTERS_FROM

    calls, bmm = [], torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a: calls.append(1) or bmm(*a))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, _QUARTERS_FROM + 3, generator=gen)
    g = batch_gram(x)
    ref = (x.double() @ x.double().T).numpy()
    assert g.dtype == np.float32 and len(calls) == (2 if b % 4 == 0 else 0)
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("threads, route", [(1, "_syrk_gram"), (2, "_torch_gram")])
def test_torch_gram_route_follows_this_threads_torch_pool(threads, route, monkeypatch):
    # one torch thread (a model side by side with another): NumPy's SYRK, half a GEMM's work
    torch = pytest.importorskip("torch")
    import pyckafast.minibatch as mb

    calls = []
    real = getattr(mb, route)
    monkeypatch.setattr(mb, route, lambda *a: calls.append(1) or real(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(12, 30, generator=gen) + 1e3  # a large offset
        g = batch_gram(x)
    finally:
        torch.set_num_threads(before)
    assert len(calls) == 2  # the Gram, then the centred rows' (the offset dominates)
    xc = x.double() - x.double().mean(0)
    ref = (xc @ xc.T).numpy()
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    if route == "_syrk_gram":  # one triangle computed, mirrored
        np.testing.assert_array_equal(g, g.T)
