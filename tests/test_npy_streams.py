"""stream_npy converts non-native memmaps (int8, float16, big-endian) chunk by chunk."""

import tracemalloc

import numpy as np
import pytest

import pyckafast


@pytest.mark.parametrize("dtype", ["int8", "float16", ">f8", "bool"])
def test_stream_npy_converts_one_chunk_at_a_time(tmp_path, dtype):
    rng = np.random.default_rng(0)
    n, p = 40_000, 64
    base = rng.integers(-100, 100, size=(n, p))
    x = (base > 0) if dtype == "bool" else base.astype(dtype)
    y = x[:, :16].astype(np.float32) + rng.normal(size=(n, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    whole = n * p * 8  # a float64 copy of x: what a whole-file conversion allocates at least
    tracemalloc.start()
    try:
        state = pyckafast.stream_npy(tmp_path / "x.npy", tmp_path / "y.npy", chunk_size=2000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < whole / 4
    expected = pyckafast.linear_cka(x.astype(np.float64), y.astype(np.float64), debiased=True)
    assert state.result(debiased=True) == pytest.approx(expected, rel=1e-6)
