"""The tiled sample-space linear pass: exact for any (n, p), memory O(n + tile * p)."""

import tracemalloc

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch
from pyckafast._core.terms import KernelTerms
from pyckafast._cpu.linear_tiles import tiled_sample_terms
from pyckafast._core.combine import cka_from_hsic, kernel_hsic


def _reference(x, y, debiased):
    """Naive float64 n x n Grams (Kornblith et al.; unbiased HSIC of Song et al. 2012)."""
    def centred_gram(a):
        a = a.astype(np.float64)
        a = a - a.mean(axis=0)
        return a @ a.T

    k, l = centred_gram(x), centred_gram(y)
    n = k.shape[0]
    if not debiased:
        hsic = lambda a, b: float(np.vdot(a, b))  # noqa: E731  (centred Grams: tr(KHLH))
    else:
        def hsic(a, b):
            a, b = a - np.diag(np.diag(a)), b - np.diag(np.diag(b))
            return (np.vdot(a, b) + a.sum() * b.sum() / ((n - 1) * (n - 2))
                    - 2 / (n - 2) * a.sum(0) @ b.sum(0))
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


SHAPES = [(257, 40, 33), (300, 900, 700), (4, 3, 5)]  # p < n, p > n, the debiased minimum


@pytest.mark.parametrize("n, p1, p2", SHAPES, ids=[f"n{n}-p{p1}x{p2}" for n, p1, p2 in SHAPES])
@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
@pytest.mark.parametrize("tile", [64, 1000], ids=["tile64", "one-tile"])
def test_tiles_equal_the_reference(n, p1, p2, debiased, tile):
    rng = np.random.default_rng(n + p1)
    x = rng.normal(size=(n, p1))
    y = x[:, :min(p1, p2)] @ rng.normal(size=(min(p1, p2), p2)) + rng.normal(size=(n, p2))
    terms, zero_x, zero_y = tiled_sample_terms(x, y, tile=tile)
    got = cka_from_hsic(kernel_hsic(terms, debiased))
    assert not zero_x and not zero_y
    assert got == pytest.approx(_reference(x, y, debiased), abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_float32_with_a_large_mean(debiased):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 800)) + 1e3
    y = (x - 1e3) @ rng.normal(size=(800, 300)) / 30 + rng.normal(size=(600, 300)) + 1e3
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    expected = _reference(x32, y32, debiased)
    got = pyckafast.linear_cka(x32, y32, debiased=debiased, form="tiles")
    assert got == pytest.approx(expected, abs=1e-5)


def test_memmap_input_read_block_by_block(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 1200)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mx = np.load(tmp_path / "x.npy", mmap_mode="r")
    got = pyckafast.linear_cka(mx, mx[:, :600] * 2, form="tiles", debiased=True)
    assert got == pytest.approx(_reference(x, x[:, :600], True), abs=1e-5)


def test_memory_beyond_the_inputs_is_o_n_plus_tile_p():
    rng = np.random.default_rng(3)
    n, p = 2000, 4000
    x = rng.normal(size=(n, p)).astype(np.float32)
    y = rng.normal(size=(n, p)).astype(np.float32)
    tracemalloc.start()
    try:
        tiled_sample_terms(x, y, tile=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Two blocks of x and y rows (2 * 256 * 8000 * 4 B = 16 MB) plus tiles and O(n) sums; the
    # in-memory form would hold two n x n float64 Grams (64 MB), the feature form 3 p^2 x 12 B.
    assert peak < 24 * 2**20


def test_auto_takes_the_form_that_fits():
    n, p = 20_000, 16_384
    assert dispatch.linear_form("auto", 10**6, 256, 256, 4, available=2**34) == "features"
    assert dispatch.linear_form("auto", 2_000, 20_000, 20_000, 4, available=2**34) == "samples"
    assert dispatch.linear_form("auto", n, p, p, 4, available=8 * 2**30) == "tiles"
    # p x p moments of p = 16,384 need 3.2 GB: they fit in 64 GB, and cost more flops than tiles
    assert dispatch.linear_form("auto", n, p, p, 4, available=2**36) == "tiles"


def test_a_forced_form_that_cannot_fit_fails_at_once_with_the_bytes():
    # p x p moments, their float32 GEMM scratch: 3 * 20,000^2 * 12 B
    with pytest.raises(MemoryError, match=r"form='features' needs about 13.4 GiB"):
        dispatch.linear_form("features", 9_000, 20_000, 20_000, 4, available=8 * 2**30)
    # two float64 n x n Grams: 2 * 40,000^2 * 8 B
    with pytest.raises(MemoryError, match=r"form='samples' needs about 23.8 GiB"):
        dispatch.linear_form("samples", 40_000, 2, 2, 8, available=8 * 2**30)


def test_tiles_through_the_public_function_match_the_features_form():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 30)), rng.normal(size=(400, 20))
    for debiased in (False, True):
        a = pyckafast.linear_cka(x, y, form="tiles", debiased=debiased)
        b = pyckafast.linear_cka(x, y, form="features", debiased=debiased)
        assert a == pytest.approx(b, abs=1e-12)
    assert isinstance(tiled_sample_terms(x, y)[0], KernelTerms)
