"""Layer x layer CKA maps: every entry equals the pairwise function."""

import numpy as np
import pytest

import pyckafast
from rbf_reference import correlated


@pytest.fixture(scope="module")
def layers():
    rng = np.random.default_rng(8)
    x, y = correlated(rng, 120, 7, 5)
    return [x, y, np.tanh(x[:, :3]) + 10.0, (y ** 2).astype(np.float32)]


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_symmetric_map(layers, kernel, debiased):
    m = pyckafast.cka_matrix(layers, kernel=kernel, debiased=debiased)
    assert m.shape == (4, 4)
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(np.diag(m), 1.0)
    for i in range(4):
        for j in range(i + 1, 4):
            ref = pyckafast.cka(layers[i], layers[j], kernel=kernel, debiased=debiased)
            assert m[i, j] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_rectangular_map(layers, kernel):
    m = pyckafast.cka_matrix(layers[:2], layers[1:], kernel=kernel, debiased=True, threshold=0.5)
    assert m.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            ref = pyckafast.cka(layers[i], layers[1 + j], kernel=kernel, debiased=True,
                                **({"threshold": 0.5} if kernel == "rbf" else {}))
            assert m[i, j] == pytest.approx(ref, rel=1e-9)


def test_zero_variance_layer(layers):
    const = np.full((120, 3), 2.0)
    with pytest.warns(RuntimeWarning):
        m = pyckafast.cka_matrix([layers[0], const])
    assert m[0, 0] == 1.0 and np.isnan(m[1, 1]) and np.isnan(m[0, 1])


def test_bad_inputs(layers):
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
