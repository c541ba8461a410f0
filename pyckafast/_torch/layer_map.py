"""An exact linear CKA map fed layer outputs batch by batch, for the integrations that keep their
own hooks (the compat front ends, the torchmetrics metrics): ``compare_models``' routing
without its capture.

The first batch fixes every layer's width; :func:`~pyckafast._torch.plan.plan_map` then sends
each layer one way under one budget (:func:`~pyckafast._torch.plan.state_bytes`): narrow layers
stream into ONE :class:`~pyckafast.CKAMapState` (float64 moments: nothing grows with n), wide
ones are appended to an on-disk :class:`~pyckafast._torch.cache.ActivationCache` and their
pairs come from one tiled sample-space pass over it
(:class:`~pyckafast._torch.sink.LinearMapSink`). Memory: the state, one batch, and the tiled
pass's O(tile^2 + tile p) buffers; never n x p in RAM, never p x p for a wide layer.

The cache is read back through :class:`FileRows` (block reads) rather than memory maps: the
pages of a mapped file count towards the process's resident memory, so a tiled pass over
memmaps ends holding the whole cache resident; read blocks are freed after their tile. The
cache stays open, so more batches may follow a result.
"""

from __future__ import annotations

import shutil
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.inputs import device_of, on_reachable_device
from .._core.optional import require
from .cache import ActivationCache
from .plan import Plan, default_budget, plan_map
from .sink import LinearMapSink, tiles_module

__all__ = ["LayerMap", "RowCache", "FileRows", "batch_rows"]

Key = tuple[str, str]
# Bytes per block when rows are summed or copied between caches.
_BLOCK_BYTES = 32 * 2**20


def batch_rows(a: Any, name: str):
    """One batch of a layer as the (batch, features) torch tensor the state and the cache take:
    detached, trailing dimensions flattened, bfloat16 and float16 as float32 (a float32 copy of
    the batch, never float64), integers and bools as float64, on a device pyckafast reaches
    (:func:`~pyckafast._core.inputs.on_reachable_device`).

    Examples
    --------
    >>> import torch
    >>> t = batch_rows(torch.ones(4, 2, 3, dtype=torch.bfloat16), "x")
    >>> tuple(t.shape), t.dtype
    ((4, 6), torch.float32)
    """
    torch = require("torch", "pyckafast's layer maps")
    if not isinstance(a, torch.Tensor):
        with warnings.catch_warnings():  # a read-only array: only read here
            warnings.simplefilter("ignore", UserWarning)
            a = torch.as_tensor(a, device="cuda" if device_of(a) == "cuda" else None)
    t = a.detach()
    if t.is_complex():
        raise TypeError(f"{name} must hold real numbers; got a {t.dtype} tensor.")
    if t.dim() == 0:
        raise ValueError(f"{name} must have one row per sample (shape (batch, ...)); got a "
                         "0-d tensor.")
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.to(torch.float32)  # the float32-upcast value, as the other entry points
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float64)
    t = t[:, None] if t.dim() == 1 else t.reshape(t.shape[0], -1)
    if 0 in t.shape:
        raise ValueError(f"{name} must not be empty; got shape {tuple(a.shape)}.")
    return on_reachable_device(t)


class FileRows:
    """The (n, p) rows of one raw cache file, read block by block (``rows[lo:hi]`` reads those
    rows; nothing is mapped), with the few array methods the tiled pass uses.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.raw")
    >>> np.arange(12, dtype=np.float32).tofile(path)
    >>> rows = FileRows(path, np.float32, (4, 3))
    >>> rows[1:3].tolist(), rows.sum(axis=0, dtype=np.float64).tolist()
    ([[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], [18.0, 22.0, 26.0])
    """

    ndim = 2

    def __init__(self, path: str, dtype: Any, shape: tuple[int, int]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(int(s) for s in shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, lo: int, hi: int) -> np.ndarray:
        n, p = self.shape
        lo, hi = max(0, lo), min(n, hi)
        count = max(0, hi - lo) * p
        out = np.fromfile(self.path, dtype=self.dtype, count=count,
                          offset=lo * p * self.dtype.itemsize)
        if out.size != count:
            raise OSError(f"the activation cache file {self.path!r} holds fewer rows than "
                          f"written ({n}); was it changed or removed during the comparison?")
        return out.reshape(max(0, hi - lo), p)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            lo, hi, step = index.indices(self.shape[0])
            rows = self._read(lo, hi) if step > 0 else self._read(hi + 1, lo + 1)[::-1]
            return rows[::abs(step)] if abs(step) != 1 else rows
        if isinstance(index, (int, np.integer)):
            k = int(index) + (self.shape[0] if index < 0 else 0)
            if not 0 <= k < self.shape[0]:
                raise IndexError(f"row {index} is out of range for {self.shape[0]} rows.")
            return self._read(k, k + 1)[0]
        rows = np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return np.stack([self[int(r)] for r in rows.ravel()]) if rows.size else np.empty(
            (0, self.shape[1]), self.dtype)

    def blocks(self):
        """(lo, rows) for consecutive blocks of about 32 MiB."""
        step = max(1, _BLOCK_BYTES // max(1, self.shape[1] * self.dtype.itemsize))
        for lo in range(0, self.shape[0], step):
            yield lo, self._read(lo, lo + step)

    def sum(self, axis: int | None = None, dtype: Any = None) -> np.ndarray:
        """Column sums (``axis=0``) block by block; any other axis through a full read."""
        if axis != 0:
            return np.asarray(self).sum(axis=axis, dtype=dtype)
        total = np.zeros(self.shape[1], dtype=dtype or self.dtype)
        for _, block in self.blocks():
            total += block.sum(axis=0, dtype=dtype)
        return total

    def mean(self, axis: int | None = None, dtype: Any = None) -> np.ndarray:
        """Column means (``axis=0``) block by block (``_core.inputs.column_mean`` takes them)."""
        if axis != 0:
            return np.asarray(self).mean(axis=axis, dtype=dtype)
        return self.sum(axis=0, dtype=dtype or np.float64) / max(1, self.shape[0])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        rows = self._read(0, self.shape[0])
        return rows if dtype is None else rows.astype(dtype, copy=False)


def _remove(files: list, directory: str) -> None:
    for f in files:
        f.close()
    shutil.rmtree(directory, ignore_errors=True)


class RowCache(ActivationCache):
    """The activation cache of a layer map: read back as :class:`FileRows` while it stays open
    for more rows, removed on :meth:`close` or when garbage-collected; pickling copies the rows
    (into a fresh directory on unpickling)."""

    def __init__(self, keys: list[Key], cache_dir: Any = None):
        super().__init__(keys, cache_dir, keep=False)
        self.cache_dir = cache_dir
        self._finalizer = weakref.finalize(self, _remove, list(self.files.values()),
                                           self.directory)

    def rows(self) -> int:
        """Rows written so far (every layer has as many)."""
        shapes = [s for s in self.shapes.values() if s is not None]
        return shapes[0][0] if shapes else 0

    def arrays(self) -> dict:
        """Readers of every layer's rows written so far (the files stay open)."""
        self._settle()  # the writer thread's pending rows first (ActivationCache writes them
        for f in self.files.values():  # in the background where torch leaves a core free)
            f.flush()
        return {key: FileRows(path, self.dtypes.get(key, np.float32), self.shapes[key] or (0, 0))
                for key, path in self.paths.items()}

    def append(self, other: RowCache) -> None:
        """Append every row of ``other`` (the same layers), block by block."""
        for key, rows in other.arrays().items():
            for _, block in rows.blocks():
                self.write(key, block)

    def close(self) -> None:
        self._finalizer()

    def __getstate__(self) -> dict:
        return {"keys": list(self.paths), "cache_dir": self.cache_dir,
                "rows": {k: np.asarray(r) for k, r in self.arrays().items() if self.shapes[k]}}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["keys"], state["cache_dir"])
        for key, rows in state["rows"].items():
            self.write(key, rows)


class LayerMap:
    """Exact linear CKA between every layer of side a and every layer of side b, fed per batch;
    narrow layers stream into one map state, wide ones go to the disk cache (see module).

    Parameters
    ----------
    debiased : bool
        The estimator of :meth:`result`: unbiased HSIC (Song et al. 2012), or biased HSIC.
    backend : str, default "auto"
        Backend of the streamed state, as in :class:`pyckafast.CKAMapState`; "cuda" or "auto"
        with CuPy also tile the cached layers of a model on the GPU there.
    max_state_bytes : int, optional
        Budget of the streamed state (float64 bytes, :func:`~pyckafast._torch.plan.state_bytes`);
        the widest layers go to the cache until it fits. Default: a quarter of the memory
        available, at most 2 GiB (:func:`~pyckafast._torch.plan.default_budget`).
    cache_dir : str or path-like, optional
        Where the cache directory is made (default: the system's temporary directory).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> import pyckafast
    >>> x = torch.randn(90, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> layer_map = LayerMap(debiased=False, max_state_bytes=10_000)  # x's 40 x 40 Gram: cached
    >>> for batch in x.split(30):
    ...     _ = layer_map.update([batch, batch[:, :3]], None)
    >>> layer_map.route, layer_map.n
    ('cache', 90)
    >>> bool(np.allclose(layer_map.result(), pyckafast.cka_matrix([x.numpy(), x[:, :3].numpy()])))
    True
    """

    def __init__(self, *, debiased: bool, backend: str = "auto",
                 max_state_bytes: int | None = None, cache_dir: Any = None):
        self.debiased, self.backend = bool(debiased), backend
        self.max_state_bytes, self.cache_dir = max_state_bytes, cache_dir
        self.plan: Plan | None = None
        self.state = None  # the CKAMapState of the streamed layers, if any stream
        self.cache: RowCache | None = None
        self.widths: dict[Key, int] = {}
        self.on_device = False
        self.n = 0

    @property
    def route(self) -> str | None:
        """"stream" (every entry from the state), "cache" (every entry from the tiled pass),
        "mixed", or None before the first batch."""
        if self.plan is None:
            return None
        if not self.plan.cached:
            return "stream"
        return "cache" if not (self.plan.stream_a and self.plan.stream_b) else "mixed"

    def start(self, widths_a: list[int], widths_b: list[int] | None, on_device: bool = False
              ) -> None:
        """Fix the layers (widths; ``widths_b`` None: side a against itself) and their routes."""
        keys_a = [("a", str(i)) for i in range(len(widths_a))]
        keys_b = keys_a if widths_b is None else [("b", str(j)) for j in range(len(widths_b))]
        self.widths = {**dict(zip(keys_a, widths_a)),
                       **({} if widths_b is None else dict(zip(keys_b, widths_b)))}
        budget = self.max_state_bytes
        if budget is None:
            from .._core.dispatch import _available_bytes

            budget = default_budget(_available_bytes())
        self.plan = plan_map(keys_a, keys_b, self.widths, widths_b is None, budget)
        self.on_device = on_device
        if self.plan.stream_a and self.plan.stream_b:
            from ..map_state import CKAMapState

            self.state = CKAMapState(debiased=self.debiased, backend=self.backend)
        if self.plan.cached:
            self.cache = RowCache(self.plan.cached, self.cache_dir)

    @property
    def widths_a(self) -> list[int]:
        return [self.widths[k] for k in self.plan.keys_a]

    @property
    def widths_b(self) -> list[int] | None:
        return None if self.plan.symmetric else [self.widths[k] for k in self.plan.keys_b]

    def update(self, xs: Sequence, ys: Sequence | None) -> LayerMap:
        """Add one batch: ``xs[i]`` the (batch, ...) output of layer i of side a (torch tensors
        or arrays; trailing dimensions are flattened), ``ys`` side b (None: side a against
        itself, each pair once). Returns ``self``."""
        a = [batch_rows(t, f"xs[{i}]") for i, t in enumerate(xs)]
        b = None if ys is None else [batch_rows(t, f"ys[{j}]") for j, t in enumerate(ys)]
        layers = [*a, *(b or [])]
        rows = int(layers[0].shape[0])
        for k, t in enumerate(layers):
            if int(t.shape[0]) != rows:
                name = f"xs[{k}]" if k < len(a) else f"ys[{k - len(a)}]"
                raise ValueError(f"every layer must have the batch's {rows} rows (those of "
                                 f"xs[0]); got {int(t.shape[0])} in {name}.")
        wa = [int(t.shape[1]) for t in a]
        wb = None if b is None else [int(t.shape[1]) for t in b]
        if self.plan is None:
            self.start(wa, wb, any(device_of(t) == "cuda" for t in layers))
        self._check(wa, wb)
        acts = dict(zip(self.plan.keys_a, a))
        if b is not None:
            acts.update(zip(self.plan.keys_b, b))
        self._check_cached(acts)
        self._sink().add(acts)
        self.n += rows
        return self

    def _check(self, wa: list[int], wb: list[int] | None) -> None:
        if (wa, wb) != (self.widths_a, self.widths_b):
            def shown(w_a, w_b):
                return f"widths {w_a}" + (" against themselves" if w_b is None else f" x {w_b}")
            raise ValueError(f"every batch must give the same layers: expected "
                             f"{shown(self.widths_a, self.widths_b)}; got {shown(wa, wb)}.")

    def _check_cached(self, acts: dict) -> None:
        """A cached layer's batch must be finite and of its first batch's dtype, checked before
        anything is added (the state checks its own layers): a rejected batch changes nothing."""
        for key in self.plan.cached:
            t = acts[key]
            name = self._name(key)
            want = self.cache.dtypes.get(key) if self.cache is not None else None
            got = np.dtype(str(t.dtype).replace("torch.", ""))
            if want is not None and got != want:
                raise ValueError(f"{name} gave {got} rows in this batch and {want} in the first; "
                                 "every batch of a layer must have one dtype.")
            bad = ~t.isfinite().all(dim=1)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(f"{name} must contain only finite values; found NaN or Inf in "
                                 f"row {self.n + row}.")

    def _name(self, key: Key) -> str:
        return f"{'xs' if key[0] == 'a' else 'ys'}[{key[1]}]"

    def _sink(self, cache: RowCache | None = None) -> LinearMapSink:
        cache = self.cache if cache is None else cache
        xp = tiles_module(self.backend, self.on_device) if cache is not None else np
        return LinearMapSink(self.plan, self.state, cache, self.debiased, xp)

    def result(self, cache: RowCache | None = None) -> np.ndarray:
        """The (La, Lb) CKA map of every sample seen (nan, with a RuntimeWarning, for a layer
        without variance); ``cache``: the cached layers' rows to use instead of this map's own
        (e.g. every rank's, gathered)."""
        if self.plan is None:
            raise ValueError("the layer map has seen no batch.")
        if self.plan.cached and (cache or self.cache).rows() < 2:
            raise ValueError(f"CKA needs at least 2 samples; got {(cache or self.cache).rows()}.")
        return self._sink(cache).result()

    def merge(self, other: LayerMap) -> LayerMap:
        """Fold in another map of the same layers fed other samples (left unchanged)."""
        if other.plan is None:
            return self
        if self.plan is None:
            self.start(other.widths_a, other.widths_b, other.on_device)
        self._check(other.widths_a, other.widths_b)
        if other.state is not None:
            self.state.merge(other.state)  # an empty state copies the other's
        if other.cache is not None:
            self.cache.append(other.cache)
        self.n += other.n
        return self

    def close(self) -> None:
        """Remove the cache's files (the map is empty afterwards)."""
        if self.cache is not None:
            self.cache.close()

