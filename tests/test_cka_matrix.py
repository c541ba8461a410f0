"""Layer x layer CKA maps: every entry equals the float64 reference CKA of that pair, on every
backend and dtype (tests/conftest.py). The symmetric linear and RBF maps and the tiled cross map
over every input kind, backend and dtype: tests/test_matrix.py."""

import numpy as np
import pytest

import pyckafast
from _reference import correlated_tanh, linear_cka_ref, rbf_cka_ref

# float32: 1e-5 for linear kernels (test_linear.py), 1e-4 for RBF (distances in float32, test_rbf.py)
TOL = {(np.float64, "linear"): 1e-10, (np.float64, "rbf"): 1e-10,
       (np.float32, "linear"): 1e-5, (np.float32, "rbf"): 1e-4}
KERNEL = pytest.mark.parametrize("kernel", ["linear", "rbf"])


def _layers(dtype):
    """Four layers of 120 samples: 7, 5, 3 and 5 features, different scales and offsets (float32:
    a column mean of 1e3)."""
    mean = 1e3 if dtype == np.float32 else 0.0
    x, y = correlated_tanh(np.random.default_rng(8), 120, 7, 5)
    layers = [x, y, np.tanh(x[:, :3]) + 10.0, y ** 2]
    return [(a + mean).astype(dtype) for a in layers]


def _reference(a, b, kernel, debiased, threshold=1.0):
    if kernel == "linear":
        return linear_cka_ref(a, b, debiased)
    return rbf_cka_ref(a, b, threshold, debiased=debiased)



@KERNEL
def test_rectangular_map(target, dtype, kernel, request):
    layers = _layers(dtype)
    on = [target.on(a) for a in layers]
    m = pyckafast.cka_matrix(on[:2], on[1:], kernel=kernel, debiased=True, threshold=0.5,
                             backend=target.backend)
    assert m.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            ref = _reference(layers[i], layers[1 + j], kernel, True, threshold=0.5)
            assert m[i, j] == pytest.approx(ref, rel=TOL[dtype, kernel])


@KERNEL
def test_mixed_dtypes_in_one_map(kernel):
    layers = _layers(np.float64)
    layers[3] = layers[3].astype(np.float32)
    m = pyckafast.cka_matrix(layers, kernel=kernel)
    for i in range(3):
        tol = TOL[np.float32, kernel]  # the float32 layer's own products are float32 GEMMs
        assert m[i, 3] == pytest.approx(_reference(layers[i], layers[3], kernel, False), rel=tol)
        assert m[i, 3] == m[3, i]


def test_zero_variance_layer():
    layers = _layers(np.float64)
    const = np.full((120, 3), 2.0)
    with pytest.warns(RuntimeWarning):
        m = pyckafast.cka_matrix([layers[0], const])
    assert m[0, 0] == 1.0 and np.isnan(m[1, 1]) and np.isnan(m[0, 1])


def test_bad_inputs():
    layers = _layers(np.float64)
    with pytest.raises(TypeError, match="xs"):
        pyckafast.cka_matrix(layers[0])
    with pytest.raises(ValueError, match="same number of samples"):
        pyckafast.cka_matrix([layers[0], layers[1][:-1]])
    with pytest.raises(ValueError, match="kernel"):
        pyckafast.cka_matrix(layers, kernel="poly")


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_map_makes_no_float64_copy_of_the_layers(debiased):
    """Each layer's moments are accumulated chunk by chunk: the map's peak memory is a couple
    of chunk buffers, not a float64 centred copy of every layer (3 x 20 MB here)."""
    import tracemalloc

    rng = np.random.default_rng(9)
    layers = [rng.normal(size=(40_000, 64)).astype(np.float32) for _ in range(3)]
    one_copy = layers[0].size * 8
    tracemalloc.start()
    try:
        m = pyckafast.cka_matrix(layers, debiased=debiased)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * one_copy, f"peak {peak / 2**20:.1f} MiB"
    assert m[0, 1] == pytest.approx(pyckafast.linear_cka(layers[0], layers[1], debiased=debiased,
                                                         backend="numpy"), rel=1e-6)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_one_pass_map_equals_the_per_pair_passes(monkeypatch, debiased, symmetric):
    """Small-p maps are one pass over the rows; wide ones fall back to a pass per pair."""
    from pyckafast._cpu import linear_map

    layers = _layers(np.float64)
    ys = None if symmetric else layers[1:]
    one_pass = pyckafast.cka_matrix(layers, ys, debiased=debiased)
    monkeypatch.setattr(linear_map, "MAX_CROSS_BYTES", 0)
    per_pair = pyckafast.cka_matrix(layers, ys, debiased=debiased)
    np.testing.assert_allclose(one_pass, per_pair, rtol=1e-12)


def test_pairs_are_grouped_into_passes_by_the_bytes_they_hold(monkeypatch):
    from pyckafast._cpu import linear_map

    monkeypatch.setattr(linear_map, "MAX_CROSS_BYTES", 2 * 100 * 100 * 8)
    widths = [100, 100, 100, 400]
    groups = linear_map.passes(widths, [(0, 1), (0, 2), (1, 2), (0, 3)])
    assert groups == [[(0, 1), (0, 2)], [(1, 2)], [(0, 3)]]  # a pair too wide alone is one pass


def test_feature_pass_reads_only_the_layers_of_its_pairs():
    """Layers whose pairs all go to the tiled pass get no p x p moments in the feature pass."""
    from pyckafast._cpu import linear_map

    layers = _layers(np.float64)
    unread = np.full((120, 3), np.nan)  # would raise if its chunks were read
    terms = linear_map.map_terms([layers[0], unread, layers[1]], ["a", "b", "c"], [(0, 2)], True)
    assert list(terms) == [(0, 2)]
    assert terms[0, 2].xx.shape == (7, 7) and terms[0, 2].yy.shape == (5, 5)


def test_variance_check_goes_block_by_block(monkeypatch):
    import importlib

    module = importlib.import_module("pyckafast.cka_matrix")  # the package exports the function
    monkeypatch.setattr(module, "_VARIANCE_ROWS", 7)
    a = np.ones((40, 3))
    assert not module._has_variance(a)
    a[39, 2] = 2.0  # in the last, partial block
    assert module._has_variance(a)
