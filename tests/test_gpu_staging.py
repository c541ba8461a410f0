"""Host-input staging of the GPU linear driver (two pinned buffers, two landing buffers, a copy
stream) and its switchable chunk Gram shapes, on the emulated engine (tests/gpu_emulation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pyckafast._core.inputs import Samples
from pyckafast._gpu import linear

pytest.importorskip("pyckafast._twins", reason="the C++ host twins need the compiled extension")
from gpu_emulation import EmulatedEngine  # noqa: E402


def _samples(a, on_device=False):
    return Samples(a, np.dtype(a.dtype), on_device)


def _data(n=101, p1=6, p2=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p1)) + 5.0
    return x, np.tanh(x[:, :p2]) + rng.normal(size=(n, p2))


def _reference(x, y, t):
    bx, by = x - t.shift_x, y - t.shift_y
    return bx.T @ bx, by.T @ by, bx.T @ by


def test_double_buffer_schedule():
    """Per input and chunk c: the host waits for slot c % 2's previous upload before refilling
    its pinned buffer; the upload into landing buffer c % 2 waits (on the device) for the mark
    recorded after chunk c - 2's moments, its only reader; the compute stream uses the upload
    before the moments read it; every chunk is uploaded and used exactly once."""
    x, y = _data()
    engine = EmulatedEngine()
    rows, n = 16, x.shape[0]
    t = linear.linear_terms(engine, _samples(x), _samples(y), n, debiased=True, chunk_size=rows)
    for got, want in zip((t.xx, t.yy, t.xy), _reference(x, y, t)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    sched = engine.schedule
    uploads = [e for e in sched if e[0] == "upload"]
    nchunks = -(-n // rows)
    assert len(uploads) == 2 * nchunks  # x and y
    used = [e[1] for e in sched if e[0] == "use"]
    assert sorted(used) == sorted(u[1] for u in uploads)  # each upload used once
    moments = [i for i, e in enumerate(sched) if e[0] == "moments"]
    marks = [e[1] for e in sched if e[0] == "record"]
    assert len(moments) == nchunks and len(marks) == 2 * nchunks
    for c, at in enumerate(moments):
        before = sched[moments[c - 1] + 1 if c else 0:at]
        ups = [e for e in before if e[0] == "upload"]
        assert len(ups) == 2, before  # this chunk's x and y uploads, both used before the kernel
        assert {e[1] for e in before if e[0] == "use"} == {u[1] for u in ups}
        for side, up in enumerate(ups):
            landing = up[2]
            assert landing == uploads[(c % 2) * 2 + side][2]  # alternating landing buffers
            if c >= 2:  # after the mark of chunk c - 2 (same side) on the compute stream
                assert up[3] == marks[2 * (c - 2) + side]
            else:
                assert up[3] is None
            if c >= 2:  # the host saw slot c % 2's previous upload finish before refilling it
                previous = uploads[2 * (c - 2) + side][1]
                assert ("wait", previous) in before
    assert len({u[2] for u in uploads}) == 4  # two landing buffers per input


def test_staging_reads_every_row_once_in_order():
    """A source that records the row ranges it is asked for: each chunk once, in order."""
    x, y = _data(n=77)

    class Recording(np.ndarray):
        log: list = []

        def __getitem__(self, key):
            if isinstance(key, slice):
                Recording.log.append((key.start, key.stop))
            return np.asarray(self).__getitem__(key)

    rx = x.view(Recording)
    Recording.log = []
    linear.linear_terms(EmulatedEngine(), _samples(rx), _samples(y), 77, debiased=False,
                        chunk_size=20)
    chunks = [r for r in Recording.log if r != (None, 20)]  # the shift reads the first chunk
    assert chunks == [(0, 20), (20, 40), (40, 60), (60, 77)]


@pytest.mark.parametrize("threads", [1, 3, 4])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided"])
def test_threaded_copy_into_pinned(threads, layout, monkeypatch):
    monkeypatch.setattr(linear, "_COPY_MIN_BYTES", 0)  # thread even this small copy
    src = np.arange(4003 * 7, dtype=np.float32).reshape(4003, 7)
    if layout == "fortran":
        src = np.asfortranarray(src)
    elif layout == "strided":
        src = np.arange(4003 * 14, dtype=np.float32).reshape(4003, 14)[:, ::2]
    dst = np.empty(src.shape, np.float32)
    linear.copy_rows(dst, src, threads)
    np.testing.assert_array_equal(dst, src)


@pytest.mark.parametrize("shape", linear.GRAM_SHAPES)
@pytest.mark.parametrize("on_device", [True, False])
def test_gram_shapes_give_the_same_terms(shape, on_device):
    x, y = _data(n=90, p1=5, p2=4)
    t = linear.linear_terms(EmulatedEngine(), _samples(x, on_device), _samples(y, on_device), 90,
                            debiased=True, chunk_size=32, gram=shape)
    for got, want in zip((t.xx, t.yy, t.xy), _reference(x, y, t)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(t.xx, t.xx.T)


def test_gram_shape_from_the_environment(monkeypatch):
    assert linear.gram_shape() == "syrk"  # the default is kept
    monkeypatch.setenv("PYCKAFAST_GPU_GRAM", "joint")
    assert linear.gram_shape() == "joint"
    assert linear.gram_shape("gemm") == "gemm"  # an explicit option wins
    monkeypatch.setenv("PYCKAFAST_GPU_GRAM", "tensor")
    with pytest.raises(ValueError, match="PYCKAFAST_GPU_GRAM.*'tensor'"):
        linear.gram_shape()
