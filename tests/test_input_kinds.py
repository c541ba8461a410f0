"""Inputs whose meaning the kernels cannot keep are refused; empty Dask chunks add nothing."""

import numpy as np
import pytest

import pyckafast
import pyckafast.dask


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    return x, x[:, :2] ** 2 + rng.normal(size=(60, 2))


@pytest.mark.parametrize("fn", [pyckafast.linear_cka, pyckafast.rbf_cka, pyckafast.minibatch_cka])
def test_masked_arrays_are_refused(xy, fn):
    x, y = xy
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, bool))
    masked.mask[3, 1] = True
    args = (masked, y, 20) if fn is pyckafast.minibatch_cka else (masked, y)
    with pytest.raises(TypeError, match="x must be a plain array; got a numpy.ma.MaskedArray"):
        fn(*args)


def test_np_matrix_is_refused(xy):
    x, y = xy
    with pytest.raises(TypeError, match="y must be a plain array; got a numpy.matrix"):
        pyckafast.linear_cka(x, np.asmatrix(y), debiased=True)
    with pytest.raises(TypeError, match=r"xs\[1\] must be a plain array"):
        pyckafast.cka_matrix([x, np.asmatrix(y)])


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_empty_dask_chunks_contribute_nothing(xy, kernel):
    da = pytest.importorskip("dask.array")
    x, y = xy
    keep = np.r_[np.zeros(20, bool), np.ones(30, bool), np.zeros(10, bool)]
    dx, dy = da.from_array(x, chunks=20), da.from_array(y, chunks=20)
    kx, ky = dx[da.from_array(keep, chunks=20)], dy[da.from_array(keep, chunks=20)]
    kx.compute_chunk_sizes()
    ky.compute_chunk_sizes()
    assert 0 in kx.chunks[0]  # what boolean filtering makes
    cka = pyckafast.cka
    expected = cka(x[keep], y[keep], kernel=kernel, debiased=True)
    assert cka(kx, ky, kernel=kernel, debiased=True) == pytest.approx(expected, abs=1e-12)
    dask_cka = pyckafast.dask.linear_cka if kernel == "linear" else pyckafast.dask.rbf_cka
    assert dask_cka(kx, ky, debiased=True) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_constant_data_give_nan_with_a_warning_for_both_kernels(kernel, debiased, cpu_backend):
    """One behaviour: CKA of an input without variance is undefined (before, RBF raised that
    half of the pairs were identical points while linear returned nan)."""
    y = np.random.default_rng(1).normal(size=(50, 2))
    with pytest.warns(RuntimeWarning, match="x"):
        value = pyckafast.cka(np.ones((50, 3)), y, kernel=kernel, debiased=debiased,
                              backend=cpu_backend)
    assert np.isnan(value)
