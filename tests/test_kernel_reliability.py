"""The compiled kernels under a careless caller (issue 22, item 10): strided shift arguments,
threads beside a Numba kernel, and the memory of the C++ median pass for many small blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pyckafast

from pyckafast._cpu import ops_numba_rbf

_ext = pytest.importorskip("pyckafast._ext", reason="the C++ extension is built in place")


@pytest.mark.parametrize("suffix, dtype", [("f64", np.float64), ("f32", np.float32)])
def test_a_strided_shift_is_read_as_its_values(suffix, dtype):
    """The bindings read the shift's data pointer as contiguous: a strided view (every other
    entry of a longer vector) gave the moments of a different shift."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)).astype(dtype), rng.normal(size=(50, 3)).astype(dtype)
    wide_x, wide_y = rng.normal(size=8).astype(dtype), rng.normal(size=6).astype(dtype)
    sx, sy = wide_x[::2], wide_y[::2]  # strided views
    outs = [(np.empty_like(x), np.empty_like(y)) for _ in range(2)]
    kernel = getattr(_ext, f"linear_moments_{suffix}")
    got = kernel(x, y, sx, sy, *outs[0], True)
    want = kernel(x, y, sx.copy(), sy.copy(), *outs[1], True)
    np.testing.assert_array_equal(outs[0][0], x - sx)
    for a, b in zip(got[:2], want[:2]):
        np.testing.assert_array_equal(a, b)
    d2 = getattr(_ext, f"d2_pass_{suffix}")
    below, counts = d2(x, sx, 0.0, 50.0, 16, 8)
    below_c, counts_c = d2(x, sx.copy(), 0.0, 50.0, 16, 8)
    assert below == below_c and np.array_equal(counts, counts_c)


def test_the_median_pass_does_not_store_its_block_pairs():
    """n = 16000 rows in blocks of 4: 8 million block pairs, which the pass stored in a list
    (320 MB, 640 MB while it grew) before walking them; now it walks them by index."""
    code = textwrap.dedent("""
        import resource, numpy as np
        from pyckafast import _ext
        x = np.random.default_rng(0).normal(size=(16000, 1))
        shift = np.zeros(1)
        _ext.d2_pass_f64(x[:64], shift, 0.0, 1.0, 8, 4)  # load everything first
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        below, counts = _ext.d2_pass_f64(x, shift, 0.0, 1.0, 8, 4)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grown, below + int(counts.sum()))
    """)
    # the child imports the package this run imports (installed or built in place), from a
    # folder where no source tree shadows it
    root = str(Path(pyckafast.__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True, cwd=tempfile.gettempdir(),
                         env={**os.environ, "PYTHONPATH": root}).stdout.split()
    grown_kib, counted = int(out[0]), int(out[1])
    x = np.random.default_rng(0).normal(size=(16000, 1))[:, 0]
    d2 = np.sort(x)  # every pair is counted once: the pairs below 1.0 (all are below hi)
    within = int(np.sum(np.searchsorted(d2, d2 + 1.0, side="right") - np.arange(1, 16001)))
    assert counted == within
    assert grown_kib < 64 * 1024, f"the pass grew the process by {grown_kib / 1024:.0f} MiB"


def test_a_numba_tile_lets_other_python_threads_run():
    """The Numba kernels held the GIL for a whole tile: a Python thread beside them stopped."""
    rng = np.random.default_rng(1)
    m = 3000
    g = rng.normal(size=(m, m))
    na, nb = np.abs(rng.normal(size=m)) * 10, np.abs(rng.normal(size=m)) * 10
    ops_numba_rbf.d2_histogram(g[:8, :8], na[:8], nb[:8], False, 0.0, 40.0, 16)  # compile
    start = time.perf_counter()
    ops_numba_rbf.d2_histogram(g, na, nb, False, 0.0, 40.0, 16)
    once = time.perf_counter() - start
    calls = max(3, int(0.6 / max(once, 1e-3)))  # the kernel runs for about 0.6 s in all

    def work():
        for _ in range(calls):
            ops_numba_rbf.d2_histogram(g, na, nb, False, 0.0, 40.0, 16)

    def work_one_thread():  # one Numba thread too: the parallel launcher runs it inline
        import numba

        numba.set_num_threads(1)
        work()

    worker = threading.Thread(target=work_one_thread)
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    span = ticks[-1] - ticks[0] if len(ticks) > 1 else 0.0
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([calls * once])
    # With the GIL held the main thread waits out each call: gaps as long as one call and few
    # ticks. Released: it ticks every few ms throughout (a loaded machine adds some jitter).
    assert len(ticks) > 4 * calls + 10, (len(ticks), span, calls, once)
    assert float(np.median(gaps)) < min(0.02, once / 4), (float(np.median(gaps)), once)
