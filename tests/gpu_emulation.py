"""A NumPy engine with the interface of pyckafast._gpu.engine.CudaEngine, for CI (no GPU).

Its linear kernels are the C++ host twin of csrc/cuda/linear_moments_cuda.cu (the same loops of
csrc/common/linear_rows.h in the kernels' decomposition); its Grams fill one triangle, as cuBLAS
SYRK does; its RBF pair is the host twin of csrc/cuda/rbf_pairs_cuda.cu (the kernel's grid, block
and thread loops run serially, csrc/cpu/twins/rbf_pairs_twin.cpp). The GPU drivers
(_gpu_linear, _gpu_rbf) run on it unchanged, staging path and out-of-memory retries included.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from pyckafast import _twins


class FakeOutOfMemory(MemoryError):
    """Stands in for cupy.cuda.memory.OutOfMemoryError."""


class EmulatedEvent:
    """A stream event: an upload's (its copy runs when the event is first waited on or used, the
    latest moment a real copy stream may run it) or a mark on the compute stream."""

    def __init__(self, seq: int, kind: str, copy=None, after=None):
        self.seq, self.kind, self.copy, self.after = seq, kind, copy, after

    def complete(self) -> None:
        if self.copy is not None:
            host, device = self.copy
            device[...] = host
            self.copy = None


class EmulatedEngine:
    xp = np
    oom_errors = (FakeOutOfMemory,)
    triangular_grams = True
    slots = 4

    def __init__(self, *, free: int = 1 << 30, oom_above_rows: int | None = None,
                 slab: int = 5, tile_rows: int = 8):
        self.free, self.oom_above_rows, self.slab, self.tile_rows = free, oom_above_rows, slab, tile_rows
        self.released = 0
        self.calls: dict[str, int] = {}
        self.precisions: list[str] = []
        self.schedule: list[tuple] = []  # (what, event seq or landing buffer id, ...) in order
        self._seq = 0

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def free_bytes(self) -> int:
        return self.free

    def release(self) -> None:
        self.released += 1

    def pinned(self, shape, dtype):
        return np.empty(shape, dtype)

    def _event(self, kind: str, **kw) -> EmulatedEvent:
        self._seq += 1
        return EmulatedEvent(self._seq, kind, **kw)

    def upload(self, host, device, after=None):
        """Queued on the copy stream: the copy itself runs when the event completes."""
        self._count("upload")
        base = device.base if device.base is not None else device
        event = self._event("upload", copy=(host, device), after=after)  # reads host late
        self.schedule.append(("upload", event.seq, id(base), None if after is None else after.seq))
        return event

    def use(self, event) -> None:
        event.complete()
        self.schedule.append(("use", event.seq))

    def record(self):
        event = self._event("record")
        self.schedule.append(("record", event.seq))
        return event

    def wait(self, event) -> None:
        if event is not None:
            event.complete()
            self.schedule.append(("wait", event.seq))

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)

    def moments(self, cx, cy, sx, sy, bx, by, csx, csy, norms) -> None:
        self._count("moments")
        self.schedule.append(("moments",))
        m = cx.shape[0]
        if self.oom_above_rows is not None and m > self.oom_above_rows:
            raise FakeOutOfMemory(f"emulated: no memory for {m} rows")
        kernel = _twins.linear_moments_columns_f32 if bx.dtype == np.float32 else _twins.linear_moments_columns_f64
        sum_x, sum_y, qx, rx, qy, ry, s = kernel(cx, cy, sx, sy, bx, by, norms is not None, self.slab)
        csx += sum_x
        csy += sum_y
        if norms is not None:
            norms.qx += qx
            norms.rx += rx
            norms.qy += qy
            norms.ry += ry
            norms.scalars += s

    def gram(self, b, out) -> bool:
        out[...] = np.triu(b.T @ b)  # one triangle, like SYRK
        return True

    def cross(self, a, b, out) -> None:
        np.matmul(a.T, b, out=out)

    @contextmanager
    def precision(self, precision: str):
        self.precisions.append(precision)
        yield

    def rbf_rows_per_tile(self, dtype) -> int:
        return self.tile_rows

    def rbf_pair(self, a, b, kernel_x, kernel_y, same_block, row_k_a, row_l_a, row_k_b, row_l_b,
                 sums) -> None:
        """One launch of the CUDA RBF kernel, run by its host twin (csrc/cpu/twins/rbf_pairs_twin.cpp)."""
        self._count("rbf_pair")
        if self.oom_above_rows is not None and a.x.shape[0] > self.oom_above_rows:
            raise FakeOutOfMemory("emulated: block too large")
        twin = _twins.rbf_pairs_twin_f32 if a.x.dtype == np.float32 else _twins.rbf_pairs_twin_f64
        twin(a.x, a.y, a.nx, a.ny, b.x, b.y, b.nx, b.ny, tuple(kernel_x), tuple(kernel_y),
             bool(same_block),
             row_k_a, row_l_a, row_k_b, row_l_b, sums)

    def d2_hist(self, sides, same_block: bool) -> None:
        """One launch of the CUDA distance-histogram kernel, run by its host twin
        (csrc/cpu/d2_hist_twin.cpp) for each side of the launch's grid z."""
        self._count("d2_hist")
        for s in sides:
            (a, na), (b, nb) = s["a"], s["b"]
            twin = _twins.d2_hist_twin_f32 if a.dtype == np.float32 else _twins.d2_hist_twin_f64
            twin(a, b, na, nb, bool(same_block), s["lo"], s["hi"], s["bins"], s["below"],
                 s["counts"], s["values"], s["nvalues"])


def emulated_cuda(engine: EmulatedEngine):
    """A stand-in for the ``pyckafast._gpu.ops_cuda`` backend module: the same operations, run
    by the real GPU drivers on ``engine`` (host arrays play the device's). ``hsic_calls``
    counts the minibatch HSIC matrices."""
    import types

    from pyckafast._core import gram
    from pyckafast._core.inputs import Samples, prepare
    from pyckafast._gpu import linear as gpu_linear, rbf as gpu_rbf

    ops = types.ModuleType("emulated_cuda")
    ops.hsic_calls = 0
    ops.engine = engine

    def as_samples(a, name):
        return a if isinstance(a, Samples) else prepare(a, name)

    def linear_terms(x, y, *, debiased, chunk_size=None, precision="highest"):
        return gpu_linear.linear_terms(engine, x, y, x.n, debiased=debiased,
                                       chunk_size=chunk_size, precision=precision)

    def rbf_terms(x, y, *, gamma_x, gamma_y, tile=None):
        return gpu_rbf.rbf_terms(engine, as_samples(x, "x"), as_samples(y, "y"),
                                 gamma_x=gamma_x, gamma_y=gamma_y, tile=tile)

    def rbf_terms_under(x, y, *, options, tile=None):  # bandwidths chosen on the engine too
        return gpu_rbf.rbf_terms_under(engine, as_samples(x, "x"), as_samples(y, "y"),
                                       options=options, tile=tile)

    def hsic_matrix(reps, **kwargs):
        ops.hsic_calls += 1
        return gram.hsic_matrix(np, reps, **kwargs)

    ops.linear_terms, ops.rbf_terms, ops.rbf_terms_under = linear_terms, rbf_terms, rbf_terms_under
    ops.hsic_matrix = hsic_matrix
    ops.array_module = lambda: np
    ops.device_array = lambda s: np.asarray(s.data, dtype=s.dtype)
    return ops


def install_emulated_cuda(monkeypatch, engine: EmulatedEngine | None = None):
    """Make ``backend="cuda"`` resolve to :func:`emulated_cuda` for one test; returns the
    module (its ``engine`` counts the kernel calls)."""
    from pyckafast._core import dispatch

    ops = emulated_cuda(engine or EmulatedEngine())
    real_load = dispatch._load
    monkeypatch.setattr(dispatch, "_load",
                        lambda name: (ops, None) if name == "cuda" else real_load(name))
    return ops
