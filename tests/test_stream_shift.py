"""Accuracy does not depend on the order or size of batches (or chunks).

Before, a stream kept its first batch's shift: a one-row first batch 300 sigma away left every
later float32 GEMM on data 300 sigma from 0, and debiased CKA was off by 3.7e-3.
"""

import numpy as np
import pytest

import pyckafast


@pytest.fixture(scope="module")
def far_first_row():
    rng = np.random.default_rng(0)
    n, p = 30_001, 32
    x = rng.normal(size=(n, p))
    y = x @ rng.normal(size=(p, p)) / 6 + rng.normal(size=(n, p))
    x[0] += 300.0
    y[0] += 300.0
    return (x + 1000).astype(np.float32), (y - 500).astype(np.float32)


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_stream_with_a_far_one_row_first_batch(far_first_row, debiased, cpu_backend):
    x, y = far_first_row
    expected = pyckafast.linear_cka(x.astype(np.float64), y.astype(np.float64), debiased=debiased)
    state = pyckafast.LinearCKAState(backend=cpu_backend).update(x[:1], y[:1])
    for lo in range(1, x.shape[0], 10_000):
        state.update(x[lo:lo + 10_000], y[lo:lo + 10_000])
    assert state.result(debiased=debiased) == pytest.approx(expected, abs=1e-6)


def test_chunks_far_from_the_first_chunk_get_their_own_shift_exactly(cpu_backend):
    # Rows sorted along a drift: later chunks lie up to 1e4 away from the first chunk's mean, so
    # the host feed (_cpu/moments.feed) restarts them at their own mean and merges the parts; the result stays exact.
    rng = np.random.default_rng(1)
    n = 40_000
    x = rng.normal(size=(n, 16)) + np.linspace(0.0, 1e4, n)[:, None]
    y = x[:, :8] * 0.5 + rng.normal(size=(n, 8))
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    expected = pyckafast.linear_cka(x32.astype(np.float64), y32.astype(np.float64), debiased=True)
    got = pyckafast.linear_cka(x32, y32, debiased=True, backend=cpu_backend, chunk_size=4096)
    assert got == pytest.approx(expected, abs=1e-6)


def test_merge_settles_on_the_bulk_shift(rng):
    x, y = rng.normal(size=(101, 3)), rng.normal(size=(101, 2))
    small = pyckafast.LinearCKAState().update(x[:1] + 50, y[:1])
    bulk = pyckafast.LinearCKAState().update(x[1:], y[1:])
    merged = small.merge(bulk)
    np.testing.assert_array_equal(merged.terms.shift_x, bulk.terms.shift_x)
    assert merged.n == 101
