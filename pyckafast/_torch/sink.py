"""Where each batch of flattened activations goes, and the CKA map made from it afterwards.

Linear kernel: the streamed layers feed ONE :class:`~pyckafast.CKAMapState` (GPU activations go
in as they are: the state's cuda producer reduces them on the device); the cached layers are
appended to the activation cache (with a cache in RAM,
:class:`~pyckafast._torch.cache.MemoryCache`, the tiled pass keeps the rows itself instead: one
copy). On the host, every pair of cached layers comes from the tiled sample-space pass run
while the batches arrive (:class:`~pyckafast._torch.tiles.StreamedTiles`: each batch's Gram
tiles against the earlier rows, with torch, on the same threads as the forward passes; what is
left after the last batch is the last window against the older rows). For a
model on the GPU the cache is read after the pass by
:func:`pyckafast._cpu.tiled_map.tiled_map_terms` with CuPy (each layer's Gram tile once per block
pair). RBF kernel: every layer is cached and the map is one tiled pass over the cache.

Both sinks keep the time split of the report (:meth:`LinearMapSink.timings`).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import numpy as np

from .._core import combine
from .._core.inputs import device_of
from .._core.optional import require
from .cache import MemoryCache
from .capture import host_array
from .plan import Plan

__all__ = ["LinearMapSink", "RBFSink", "RowBlocks", "tiles_module", "Clock"]


def tiles_module(backend: str, on_device: bool):
    """The array module of the cached layers' tiled pass: CuPy for a model on the GPU (backend
    "auto" when CuPy imports, or "cuda"), else NumPy."""
    if backend == "cuda" or (backend == "auto" and on_device):
        try:
            import cupy
        except ImportError:
            if backend == "cuda":
                raise
            return np
        return cupy
    return np


def _state_input(t):
    """What the map state takes: a device tensor as it is (no host copy), a CPU one as a view."""
    return t if device_of(t) == "cuda" else t.numpy()


class _BesideTorch:
    """BLAS threads for the state's host GEMMs that do not sit on torch's intra-op threads:
    the cores torch does not use, at least one. OpenBLAS's workers spin for a while after each
    call, so with both pools on every core each slows the other down (the forward passes ran
    2.2x slower inside the loop than alone). One threadpoolctl controller per comparison (made
    at the first batch: finding the BLAS libraries costs milliseconds, too much per batch)."""

    def __init__(self):
        from .._core.threads import available_cores

        torch = require("torch", "pyckafast.torch")
        self.limit = max(1, available_cores() - torch.get_num_threads())
        self.controller = None
        if self.limit < available_cores():
            from threadpoolctl import ThreadpoolController

            self.controller = ThreadpoolController()

    def __call__(self):
        if self.controller is None:
            return contextlib.nullcontext()
        return self.controller.limit(limits=self.limit, user_api="blas")


class RowBlocks:
    """Host batches of the streamed layers gathered into blocks of rows before the map state
    takes them.

    Each state update makes fresh float64 sums of every layer and layer pair (p x p each) and
    merges them, whatever its number of rows: one update per 256-row batch spent more time on
    that than on the GEMMs (the MLP job: 1.3 s of 2.0 s). A block holds up to ``max_bytes`` of
    all layers together (``max_rows`` rows at most, at least one batch); the state's sums do not
    depend on how the rows are grouped. Errors in the rows (NaN, Inf) are found when the block
    goes in, and name the rows as the state counts them.
    """

    def __init__(self, max_bytes: int = 32 << 20, max_rows: int = 4096):
        self.max_bytes, self.max_rows = max_bytes, max_rows
        self.bufs: list[np.ndarray] = []
        self.filled = 0

    def add(self, arrays: list[np.ndarray], update) -> None:
        """Copy one batch in (``arrays``: one C-contiguous array per layer, the same rows);
        ``update(blocks)`` takes a full block first when the batch does not fit."""
        m = arrays[0].shape[0]
        if not self._fits(arrays):
            self.flush(update)
            if not self._allocate(arrays):  # a batch above the budget goes in alone
                update(arrays)
                return
        for buf, a in zip(self.bufs, arrays):
            buf[self.filled:self.filled + m] = a
        self.filled += m

    def flush(self, update) -> bool:
        """Hand the rows gathered so far to ``update``; False when there were none."""
        if not self.filled:
            return False
        blocks, self.filled = [buf[:self.filled] for buf in self.bufs], 0
        update(blocks)
        return True

    def _fits(self, arrays) -> bool:
        return (len(self.bufs) == len(arrays) and self.filled + arrays[0].shape[0] <= len(self.bufs[0])
                and all(b.dtype == a.dtype and b.shape[1:] == a.shape[1:]
                        for b, a in zip(self.bufs, arrays)))

    def _allocate(self, arrays) -> bool:
        row_bytes = sum(a.itemsize * a.shape[1] for a in arrays)
        rows = min(self.max_rows, self.max_bytes // max(1, row_bytes))
        if rows < 2 * arrays[0].shape[0]:
            self.bufs = []
            return False
        self.bufs = [np.empty((rows, a.shape[1]), a.dtype) for a in arrays]
        return True


class Clock:
    """The time split of one comparison (seconds): ``forward`` (the models' forward passes,
    capture hooks included), ``batch_loop`` (the loop's wall time: forward passes, the state's
    updates, the cache writes and the tile work done as batches arrive), ``tiled_pass`` (all
    Gram tile work of the cached layers, in the loop and after it), ``disk`` (the cache's
    writes, flushes and read-backs)."""

    def __init__(self, started: float | None = None):
        self.started = started
        self.forward = self.tiles = 0.0
        self.loop_end = None

    def batch(self, forward_seconds: float) -> None:
        if self.started is None:  # no start given: the loop began with this batch's forward
            self.started = time.perf_counter() - forward_seconds
        self.forward += forward_seconds

    def as_dict(self, disk: float) -> dict:
        loop = 0.0 if self.loop_end is None else self.loop_end - self.started
        return {"forward": self.forward, "batch_loop": loop, "tiled_pass": self.tiles,
                "disk": disk}


class LinearMapSink:
    """Streams the small layers into one map state, writes the cached layers to disk and, for
    host activations, runs their tiled pass as the batches arrive.

    ``started`` (a ``time.perf_counter()`` value) is when the batch loop began, for
    :meth:`timings`; ``add``'s ``forward_seconds`` the time of the batch's forward passes.
    ``gather``: host batches go to the state in blocks of rows (:class:`RowBlocks`), for a sink
    that sees the whole loop and then :meth:`result` (``state`` is complete only after it).
    """

    def __init__(self, plan: Plan, state, cache, debiased: bool, tiles_xp=np, *,
                 tile: int | None = None, started: float | None = None, gather: bool = False):
        self.plan, self.state, self.cache, self.debiased = plan, state, cache, debiased
        self.tiles_xp = tiles_xp  # CuPy: the cached blocks are uploaded, the tiles made on the GPU
        self.clock = Clock(started)
        self.tile, self.streamed, self.batches = tile, None, 0
        self._beside_torch = None
        self.blocks = RowBlocks() if gather else None
        self.resident = False  # the tiled pass holds the cached rows (see _stream_tiles)

    def _stream_tiles(self, acts: dict) -> None:
        """At the first batch: host activations of cached layers get the tiled pass that runs
        as the batches arrive; device ones (CuPy tiles) the pass over the cache afterwards."""
        keys, cache = self.plan.cached, self.cache
        if cache is None or self.tiles_xp is not np or any(
                device_of(acts[k]) == "cuda" for k in keys):
            return
        from .tiles import StreamedTiles

        # A cache in RAM that only this pass reads: the pass keeps the rows itself (one copy
        # in RAM, nothing read back) and the cache is left empty.
        self.resident = isinstance(cache, MemoryCache) and self.tile is None
        self.streamed = StreamedTiles([f"layer {k[1]!r} of {k[0]}" for k in keys],
                                      lambda r, start, out: cache.read(keys[r], start, out),
                                      rows=self.tile,
                                      resident=cache.rows if self.resident else None)

    def add(self, acts: dict, forward_seconds: float = 0.0) -> None:
        """One batch: ``acts`` maps (model, layer) keys to flattened tensors."""
        self.clock.batch(forward_seconds)
        if not self.batches:
            self._stream_tiles(acts)
        self.batches += 1
        plan = self.plan
        if self.streamed is not None:  # checked (finite) before anything is written
            cached = [acts[key] for key in plan.cached]
            self.streamed.check(cached)
        if self.state is not None:
            keys = self._state_keys()
            arrays = [_state_input(acts[k]) for k in keys]
            if self.blocks is None or any(device_of(a) == "cuda" for a in arrays):
                self._update_state(arrays)
            else:
                self.blocks.add(arrays, self._update_state)
        if not self.resident:
            for key in plan.cached:
                self.cache.write(key, host_array(acts[key]))
        if self.streamed is not None:
            before = self.streamed.seconds
            self.streamed.add(cached, checked=True)
            self.clock.tiles += self.streamed.seconds - before
        self.clock.loop_end = time.perf_counter()

    def cached_bytes(self, key) -> int:
        """Bytes of one cached layer's rows held (in the cache, or in the tiled pass)."""
        if self.resident:
            return self.streamed.nbytes(self.plan.cached.index(key))
        return self.cache.nbytes(key)

    def _state_keys(self) -> list:
        plan = self.plan
        keys = [plan.keys_a[i] for i in plan.stream_a]
        return keys if plan.symmetric else keys + [plan.keys_b[j] for j in plan.stream_b]

    def _update_state(self, arrays: list) -> None:
        plan = self.plan
        xs = {plan.keys_a[i][1]: a for i, a in zip(plan.stream_a, arrays)}
        ys = None if plan.symmetric else arrays[len(plan.stream_a):]
        if self._beside_torch is None:
            self._beside_torch = _BesideTorch()
        with self._beside_torch():
            self.state.update(xs, ys)

    def timings(self) -> dict:
        """Seconds of the comparison so far: ``forward``, ``batch_loop``, ``tiled_pass``,
        ``disk`` (see :class:`Clock`)."""
        return self.clock.as_dict(self.cache.seconds if self.cache is not None else 0.0)

    def result(self, *, progress=None, tile: int | None = None) -> np.ndarray:
        """The (La, Lb) map: streamed entries from the state, the rest from the cache.
        ``tile``: rows per block of the pass over the cache after the loop (device
        activations); the pass run during the loop took its rows (``tile=``) at construction."""
        plan = self.plan
        if self.blocks is not None and self.blocks.flush(self._update_state):  # the last rows
            self.clock.loop_end = time.perf_counter()
        out = np.full((len(plan.keys_a), len(plan.keys_b)), np.nan)
        if self.state is not None and plan.stream_a and plan.stream_b:
            out[np.ix_(plan.stream_a, plan.stream_b)] = self.state.result(debiased=self.debiased)
        if plan.cached:
            self._cached_entries(out, progress, tile)
        return out

    def _cached_pairs(self) -> list[tuple[int, int]]:
        plan = self.plan
        index = {k: r for r, k in enumerate(plan.cached)}
        pairs = [(index[plan.keys_a[i]], index[plan.keys_b[j]]) for i, j in plan.cache_pairs]
        if plan.symmetric:  # (r, r): the zero-variance flag of every cached layer's diagonal
            pairs += [(r, r) for r in range(len(plan.cached))]
        return pairs

    def _cached_terms(self, pairs, progress, tile):
        """(terms, zero) of the cached pairs: what the streamed pass has left, or the tiled pass
        over the whole cache (device activations)."""
        from .._core.progress import progress_reporter

        plan = self.plan
        began = time.perf_counter()
        try:
            if self.streamed is not None:
                self.cache.finish()  # the last rows go out (a full disk raises here)
                left = self.streamed.remaining()  # read-back chunks of the last window
                with progress_reporter(progress, max(1, left), desc="tiled CKA map",
                                       unit="chunk") as report:
                    self.streamed.finish(report)
                    if report is not None and not left:
                        report(1, 1)  # nothing was left after the loop: the pass is done
                return self.streamed.terms(pairs)
            from .._cpu.tiled_map import tiled_map_terms

            arrays = self.cache.arrays()
            names = [f"layer {k[1]!r} of {k[0]}" for k in plan.cached]
            return tiled_map_terms([arrays[k] for k in plan.cached], pairs, tile=tile,
                                   progress=progress, names=names, xp=self.tiles_xp)
        finally:
            if self.streamed is None:
                self.clock.tiles += time.perf_counter() - began

    def _cached_entries(self, out: np.ndarray, progress, tile) -> None:
        plan = self.plan
        index = {k: r for r, k in enumerate(plan.cached)}
        pairs = self._cached_pairs()
        before = self.streamed.seconds if self.streamed is not None else 0.0
        terms, zero = self._cached_terms(pairs, progress, tile)
        if self.streamed is not None:
            self.clock.tiles += self.streamed.seconds - before
        for r, key in enumerate(plan.cached):
            if zero[r] and any(r in pair for pair in pairs):
                _warn_constant(key)
        for (i, j), (r, s) in zip(plan.cache_pairs, pairs):
            if zero[r] or zero[s]:  # warned once per layer above
                out[i, j] = math.nan
                continue
            h = combine.kernel_hsic(terms[(r, s)], self.debiased)
            out[i, j] = combine.cka_from_hsic(h)
        if plan.symmetric:
            for i, key in enumerate(plan.keys_a):
                if key in index:
                    out[i, i] = math.nan if zero[index[key]] else 1.0
            lower = np.tril_indices(len(plan.keys_a), -1)
            out[lower] = out.T[lower]


class RBFSink:
    """RBF kernel: every layer is cached; afterwards one tiled pass over the cache gives the map
    (:func:`pyckafast.cka_matrix` with ``form="tiles"``: each layer's bandwidth once, its kernel
    tile once per block pair), or with a sampled bandwidth's ``n_pairs``/``seed`` one
    :func:`pyckafast.rbf_cka` per pair. The activations are read from the cache's memmaps, never
    gathered in memory."""

    def __init__(self, plan: Plan, cache, *, started: float | None = None):
        self.plan, self.cache = plan, cache
        self.clock = Clock(started)

    def add(self, acts: dict, forward_seconds: float = 0.0) -> None:
        self.clock.batch(forward_seconds)
        for key in self.plan.cached:
            self.cache.write(key, host_array(acts[key]))
        self.clock.loop_end = time.perf_counter()

    def cached_bytes(self, key) -> int:
        """Bytes of one cached layer's rows in the cache."""
        return self.cache.nbytes(key)

    def timings(self) -> dict:
        """Seconds of the comparison so far (see :class:`Clock`; ``tiled_pass``: the RBF pass
        over the cache after the loop)."""
        return self.clock.as_dict(self.cache.seconds)

    def result(self, *, debiased: bool, backend: str, options: dict, progress=None) -> np.ndarray:
        began = time.perf_counter()
        try:
            return self._result(debiased, backend, options, progress)
        finally:
            self.clock.tiles += time.perf_counter() - began

    def _result(self, debiased: bool, backend: str, options: dict, progress) -> np.ndarray:
        from ..cka_matrix import cka_matrix
        from ..rbf import rbf_cka

        plan = self.plan
        arrays = self.cache.arrays()
        xs = [arrays[k] for k in plan.keys_a]
        ys = [arrays[k] for k in plan.keys_b]
        if not {"n_pairs", "seed"} & set(options):
            return cka_matrix(xs, None if plan.symmetric else ys, kernel="rbf", debiased=debiased,
                              backend=backend, form="tiles", progress=progress, **options)
        out = np.empty((len(xs), len(ys)))
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                if plan.symmetric and j < i:  # one model against itself: the map is symmetric
                    out[i, j] = out[j, i]
                    continue
                value = rbf_cka(x, y, debiased=debiased, backend=backend, **options)
                # a layer against itself is exactly 1 (nan, with rbf_cka's warning, without
                # variance), as in cka_matrix, not 1 up to the pass's rounding
                out[i, j] = 1.0 if plan.symmetric and i == j and np.isfinite(value) else value
        return out


def _warn_constant(key) -> None:
    warnings.warn(f"layer {key[1]!r} of {key[0]} has zero variance (every sample gives the same "
                  "output): its CKA entries are undefined (nan).", RuntimeWarning, stacklevel=5)
