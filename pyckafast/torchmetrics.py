"""torchmetrics metrics for exact linear CKA: :class:`CKA` and :class:`CKAMap`.

``update(x, y)`` per batch, ``compute()`` at the end, as any torchmetrics metric; under DDP (or
any ``torch.distributed`` group) ``compute()`` gives the exact CKA of the samples of **all**
ranks, equal to the single-process value to float64 rounding.

What a rank holds. The first batch fixes the layers' widths, and
:func:`pyckafast._torch.plan.plan_map` routes each layer as :func:`pyckafast.torch.
compare_models` does, under the budget ``max_state_bytes`` (the same on every rank, so every
rank routes alike): narrow layers stream into ONE :class:`pyckafast.CKAMapState` (each layer's
Gram once per batch, float64 moments, nothing that grows with n); wide layers (convolutional
outputs of tens of thousands of features, whose p x p moments would not fit) are appended to an
on-disk activation cache, and their pairs come from one tiled sample-space pass over it in
``compute()``. bfloat16 and float16 tensors are taken as float32 (one float32 copy of each
batch, never float64), giving the float32-upcast value.

How the ranks combine. The synced torchmetrics state ``terms`` is a view of the rank's
CKAMapState: reading it gives ``CKAMapState.arrays()`` (with the layer widths) as one flat
float64 record, encoded when it is read (not per update); writing it (as torchmetrics' sync
does with the gathered records) merges the records with the exact reshift algebra of
``CKAMapState.merge``. So it is gathered (``dist_reduce_fx="cat"``), not summed: summing would
need one shift common to all ranks before any data is seen. The record's size is that of the
state, O(sum p_i^2 + sum p_i p_j), independent of n; a rank that saw no batch sends an empty one.
The cached rows of wide layers cannot travel in a record (they grow with n): under DDP,
``compute()`` gathers every rank's cached rows from the process group, block by block (a few
tens of MiB per step), into a temporary cache of its own, and every rank makes the same map.
``forward`` and ``merge_state`` with another metric carry the cached rows too; ``merge_state``
with a state dict carries streamed moments only, and says so for a metric with cached layers.

torchmetrics is optional (``pip install "pyckafast[torchmetrics]"``); ``import pyckafast``
does not import it, this module does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ._core.types import ArrayLike, Backend
from ._torch.layer_map import LayerMap, RowCache
from .map_state import CKAMapState

try:
    import torch
    from torchmetrics import Metric
    from torchmetrics.utilities.distributed import gather_all_tensors
    from torchmetrics.utilities.exceptions import TorchMetricsUserError
except ModuleNotFoundError as exc:  # name the extra that brings it
    from ._core.optional import MissingDependency

    raise MissingDependency(f"pyckafast.torchmetrics needs {exc.name}, which is not "
                            'installed: pip install "pyckafast[torchmetrics]".',
                            name=exc.name) from None

__all__ = ["CKA", "CKAMap", "STATE_BUDGET"]

#: Default budget (bytes of float64 moments) of a rank's streamed state: a fixed number, not a
#: share of the memory free, so that every rank makes the same plan. compute() under DDP holds
#: the world's records at once (world size x this, at most).
STATE_BUDGET = 2**30
# Bytes of cached rows per rank and gather step.
_GATHER_BYTES = 16 * 2**20

# ---- one rank's record: a dict of arrays as one flat float64 vector ----------------------------
_MAGIC = 20261207.0
_KINDS = {"f": 0.0, "i": 1.0, "u": 1.0, "b": 2.0, "U": 3.0}


def _encode(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """``arrays`` (float, integer, bool and str arrays) as one float64 vector that
    :func:`_decode` reads back exactly (integers below 2^53; float64 values as they are)."""
    parts: list[np.ndarray] = [np.array([_MAGIC, len(arrays)])]
    for key, value in arrays.items():
        a = np.asarray(value)
        code = [float(ord(c)) for c in key]
        if a.dtype.kind == "U":
            values = [v for s in a.ravel() for v in (len(s), *map(ord, s))]
        else:
            values = a.ravel()
        parts += [np.array([len(code), *code, _KINDS[a.dtype.kind], a.ndim, *a.shape]),
                  np.asarray(values, dtype=np.float64)]
    return np.concatenate(parts)


def _decode(flat: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Every record of a concatenation of :func:`_encode` vectors (any number, any ranks)."""
    out, pos = [], 0

    def take(count: int) -> np.ndarray:
        nonlocal pos
        if pos + count > flat.size:
            raise ValueError("a CKAMap record is truncated: the synced state is corrupt.")
        part = flat[pos:pos + count]
        pos += count
        return part

    while pos < flat.size:
        magic, fields = take(2)
        if magic != _MAGIC:
            raise ValueError("the synced state holds something that is not a CKAMap record.")
        record = {}
        for _ in range(int(fields)):
            key = "".join(chr(int(c)) for c in take(int(take(1)[0])))
            kind, ndim = take(2)
            shape = tuple(int(s) for s in take(int(ndim)))
            size = math.prod(shape)
            if kind == 3.0:
                strings = []
                for _ in range(size):
                    strings.append("".join(chr(int(c)) for c in take(int(take(1)[0]))))
                record[key] = np.array(strings, dtype=str).reshape(shape)
            else:
                dtype = {0.0: np.float64, 1.0: np.int64, 2.0: np.bool_}[float(kind)]
                record[key] = take(size).astype(dtype).reshape(shape)
        out.append(record)
    return out


def _record(layer_map: LayerMap) -> dict[str, np.ndarray]:
    """The rank's record: the layers (widths, symmetric), the cached layers' dtypes and rows, and
    the streamed state's arrays (keys prefixed "state/")."""
    plan = layer_map.plan
    cache = layer_map.cache
    dtypes = [cache.dtypes[k].itemsize if k in cache.dtypes else 0 for k in plan.cached]
    out = {"widths_a": np.array(layer_map.widths_a),
           "widths_b": np.array(layer_map.widths_b or []),
           "symmetric": np.array(plan.symmetric),
           "cached_itemsize": np.array(dtypes, dtype=np.int64),
           "cached_rows": np.array(cache.rows() if cache else 0)}
    if layer_map.state is not None and layer_map.state.n:
        out.update({f"state/{k}": v for k, v in layer_map.state.arrays().items()})
    return out


def _state_of(record: dict[str, np.ndarray], backend: Backend) -> CKAMapState | None:
    arrays = {k[6:]: v for k, v in record.items() if k.startswith("state/")}
    return CKAMapState.from_arrays(arrays, backend=backend, name="a synced CKAMap record") \
        if arrays else None


class CKAMap(Metric):
    """Exact linear CKA between every layer of two lists, over all batches of all ranks.

    Parameters
    ----------
    debiased : bool, default False
        CKA from unbiased HSIC (Song et al. 2012); False: the biased estimator (Kornblith et al.
        2019).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        The pyckafast backend of the streamed state (CUDA tensors go through the cuda backend,
        which needs CuPy; without CuPy they are copied to the host).
    max_state_bytes : int, default :data:`STATE_BUDGET` (1 GiB)
        Budget of the streamed float64 state; the widest layers go to the activation cache
        until it fits (the same on every rank, so that all route alike).
    cache_dir : str or path-like, optional
        Where the activation cache of wide layers is made (default: the system's temporary
        directory); its files are removed on ``reset()`` and when the metric is deleted.
    **kwargs
        The torchmetrics ``Metric`` options (``process_group``, ``dist_sync_on_step``...).

    Examples
    --------
    >>> import torch
    >>> from pyckafast.torchmetrics import CKAMap
    >>> metric = CKAMap()
    >>> x = torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> for batch in x.split(16):
    ...     metric.update([batch, 2 * batch], [torch.tanh(batch)])
    >>> m = metric.compute()
    >>> tuple(m.shape), bool(abs(m[0, 0] - m[1, 0]) < 1e-12)
    ((2, 1), True)
    """

    __jit_unused_properties__: ClassVar[list[str]] = [*Metric.__jit_unused_properties__,
                                                       "terms"]
    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, debiased: bool = False, backend: Backend = "auto",
                 max_state_bytes: int = STATE_BUDGET, cache_dir: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(debiased, bool):
            raise TypeError(f"debiased must be a bool; got {debiased!r} "
                            f"({type(debiased).__name__}).")
        if isinstance(max_state_bytes, bool) or not isinstance(max_state_bytes, int) or \
                max_state_bytes < 0:
            raise ValueError(f"max_state_bytes must be a non-negative int; got "
                             f"{max_state_bytes!r}.")
        self.debiased, self.backend = debiased, backend
        self.max_state_bytes, self.cache_dir = max_state_bytes, cache_dir
        self._map: LayerMap | None = None  # this rank's samples (after a sync: every rank's)
        self._record: list | None = None  # ``terms`` as last read or written
        self._shape: tuple[int, int] | None = None
        self._itemsize: list[int] = []  # the cached layers' dtype sizes over all ranks (sync)
        self.add_state("terms", default=[], dist_reduce_fx="cat")
        # The record is float64; torchmetrics sends a rank without data an empty tensor of
        # the metric's dtype, which must match the others' in the gather.
        self.set_dtype(torch.float64)

    # ---- the synced state: a view of the rank's CKAMapState --------------------------------------
    @property
    def terms(self) -> list:
        """The rank's record as torchmetrics syncs it: [] before any batch, else one float64
        tensor (see the module's docstring); encoded when read, not per update."""
        if self._record is None:
            self._record = [] if self._map is None or self._map.plan is None else [
                torch.as_tensor(_encode(_record(self._map)), device=self.device)]
        return self._record

    @terms.setter
    def terms(self, value: Any) -> None:
        if value is self._record:
            return
        parts = [value] if isinstance(value, torch.Tensor) else list(value)
        flat = [t.detach().to("cpu", torch.float64).numpy().ravel() for t in parts]
        records = [r for f in flat for r in _decode(f)]
        self._record = list(parts)
        self._adopt(records)

    def _adopt(self, records: list[dict[str, np.ndarray]]) -> None:
        """This rank's map from records (every rank's after a sync, its own after an unsync):
        the streamed state their merge; the rank's own cached rows stay."""
        if not records:
            if self._map is not None and self._map.n == 0:
                self._map.close()
                self._map = None
            elif self._map is not None and self._map.state is not None:
                self._map.state = CKAMapState(debiased=self.debiased, backend=self.backend)
            return
        first = records[0]
        widths_a = [int(w) for w in first["widths_a"]]
        widths_b = None if bool(first["symmetric"]) else [int(w) for w in first["widths_b"]]
        for r in records[1:]:
            if ([int(w) for w in r["widths_a"]], bool(r["symmetric"]),
                    [int(w) for w in r["widths_b"]]) != (widths_a, widths_b is None,
                                                         widths_b or []):
                raise ValueError("every rank must map the same layers; got records of widths "
                                 f"{widths_a} x {widths_b} and {list(r['widths_a'])} x "
                                 f"{list(r['widths_b']) or None}.")
        if self._map is None:
            self._map = self._new_map()
            self._map.start(widths_a, widths_b)
        else:
            self._map._check(widths_a, widths_b)
        self._shape = (len(widths_a), len(widths_b or widths_a))
        self._itemsize = [max(int(r["cached_itemsize"][k]) for r in records)
                          for k in range(len(self._map.plan.cached))]
        state = None
        for r in records:
            part = _state_of(r, self.backend)
            if part is not None:
                state = part if state is None else state.merge(part)
        if self._map.plan.stream_a and self._map.plan.stream_b:
            self._map.state = state or CKAMapState(debiased=self.debiased, backend=self.backend)

    def _new_map(self) -> LayerMap:
        return LayerMap(debiased=self.debiased, backend=self.backend,
                        max_state_bytes=self.max_state_bytes, cache_dir=self.cache_dir)

    # ---- feeding ---------------------------------------------------------------------------------
    def update(self, xs: Sequence[ArrayLike], ys: Sequence[ArrayLike] | None = None) -> None:
        """Add one batch of every layer.

        Parameters
        ----------
        xs : sequence of array_like
            ``xs[i]`` is the (batch, ...) output of layer i (torch tensors or arrays, the same
            rows in each; dimensions after the first are flattened into features).
        ys : sequence of array_like, optional
            The layers of the second side, as ``xs``. None: ``xs`` against itself (the pairs
            i <= j are accumulated).

        Raises
        ------
        ValueError
            If a side is empty, holds a NaN or Inf, or its layers differ from earlier batches'.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKAMap
        >>> x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKAMap()
        >>> metric.update([x, x ** 2])
        >>> metric.update([x + 1, (x + 1) ** 2])
        >>> tuple(metric.compute().shape)
        (2, 2)
        """
        xs = list(xs)
        ys = None if ys is None else list(ys)
        if not xs or (ys is not None and not ys):
            raise ValueError("xs and ys must each hold at least one (batch, p) array.")
        self._check_shape((len(xs), len(xs if ys is None else ys)))
        if self._map is None:
            self._map = self._new_map()
        self._record = None
        self._map.update(xs, ys)

    def _check_shape(self, shape: tuple[int, int]) -> None:
        if self._shape is None:
            self._shape = shape
        elif self._shape != shape:
            raise ValueError(f"every batch must give the same layers: expected "
                             f"{self._shape[0]} x {self._shape[1]}; got {shape[0]} x {shape[1]}.")

    @torch.jit.unused
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Add one batch and return the value of that batch alone.

        Parameters
        ----------
        *args, **kwargs
            What :meth:`update` takes.

        Returns
        -------
        torch.Tensor
            :meth:`compute` over this batch only (over this batch of every rank with
            ``dist_sync_on_step=True``).

        Raises
        ------
        torchmetrics.utilities.exceptions.TorchMetricsUserError
            If the metric is synced (``sync()`` without ``unsync()``).

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKA
        >>> x = torch.randn(60, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKA()
        >>> first = metric(x[:30], -x[:30])
        >>> round(first.item(), 12), metric.compute().shape
        (1.0, torch.Size([]))
        """
        if self._is_synced:
            raise TorchMetricsUserError(
                "The Metric shouldn't be synced when performing ``forward``. HINT: Did you "
                "forget to call ``unsync`` ?.")
        # The batch in a metric of its own (its cached rows in a cache of its own), then folded
        # in: the totals never go through a reset, so the cached rows of wide layers stay.
        batch = type(self)(debiased=self.debiased, backend=self.backend,
                           max_state_bytes=self.max_state_bytes, cache_dir=self.cache_dir,
                           process_group=self.process_group, dist_sync_fn=self.dist_sync_fn,
                           distributed_available_fn=self.distributed_available_fn,
                           sync_on_compute=self.dist_sync_on_step)
        try:
            batch.update(*args, **kwargs)
            value = batch.compute()
            self._absorb(batch)
        finally:
            batch.reset()
        self._update_count += 1
        self._computed = None
        self._forward_cache = value
        return value

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Fold in another metric's samples (disjoint from this one's).

        Parameters
        ----------
        incoming_state : CKAMap or dict
            A metric of the same class and layers, or its ``metric_state`` (a dict carries the
            streamed moments only, so it is refused when layers are cached).

        Raises
        ------
        ValueError
            If ``incoming_state`` is another kind of metric, maps other layers, or is a dict
            while wide layers are cached.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKA
        >>> x = torch.randn(60, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> a, b = CKA(), CKA()
        >>> a.update(x[:30], x[:30, :2])
        >>> b.update(x[30:], x[30:, :2])
        >>> a.merge_state(b)
        >>> bool(abs(a.compute() - CKA().forward(x, x[:, :2])) < 1e-12)
        True
        """
        if isinstance(incoming_state, Metric):
            if not isinstance(incoming_state, type(self)):
                raise ValueError(f"Expected incoming state to be an instance of "
                                 f"{type(self).__name__} but got {type(incoming_state)}")
            self._absorb(incoming_state)
            return
        if isinstance(incoming_state, dict) and "terms" in incoming_state:
            value = incoming_state["terms"]
            parts = [value] if isinstance(value, torch.Tensor) else list(value)
            records = [r for t in parts
                       for r in _decode(t.detach().to("cpu", torch.float64).numpy().ravel())]
            if any(int(r["cached_rows"]) for r in records) or (
                    self._map is not None and self._map.cache is not None):
                raise ValueError("merge_state needs the metric itself when wide layers are "
                                 "cached: a state dict holds only the streamed moments, not "
                                 "the cached rows.")
        super().merge_state(incoming_state)

    def _absorb(self, other: CKAMap) -> None:
        if other._map is None or other._map.plan is None:
            return
        self._check_shape(other._shape)
        if self._map is None:
            self._map = self._new_map()
        self._record = None
        self._map.merge(other._map)

    def reset(self) -> None:
        """Forget every sample (and the layers, so the next update may bring others).

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKAMap
        >>> x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKAMap()
        >>> metric.update([x, 2 * x])
        >>> metric.reset()
        >>> metric.update([x], [x, x ** 2, x[:, :1]])
        >>> tuple(metric.compute().shape)
        (1, 3)
        """
        if self._map is not None:
            self._map.close()
        self._map, self._record, self._shape = None, None, None
        super().reset()

    # ---- the result ------------------------------------------------------------------------------
    def compute(self) -> torch.Tensor:
        """Return the CKA map of every sample seen on every rank.

        Returns
        -------
        torch.Tensor
            Float64, shape (len(xs), len(ys)): the CKA of every pair of layers (torchmetrics
            squeezes a 1 x 1 map to a 0-d tensor).

        Raises
        ------
        ValueError
            If no rank has seen a batch.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKAMap
        >>> x = torch.randn(60, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKAMap()
        >>> for batch in x.split(20):
        ...     metric.update([batch], [3 * batch, batch[:, :2]])
        >>> metric.compute().round(decimals=6)[0, 0].item()
        1.0
        """
        layer_map = self._map
        if layer_map is None or layer_map.plan is None:
            raise ValueError(f"{type(self).__name__}.compute() needs at least one update().")
        if self._is_synced and layer_map.plan.cached:
            gathered = self._gathered_rows(layer_map)
            try:
                out = layer_map.result(gathered)
            finally:
                gathered.close()
        else:
            out = layer_map.result()
        return torch.as_tensor(out, dtype=torch.float64)

    def _gathered_rows(self, layer_map: LayerMap) -> RowCache:
        """Every rank's cached rows (a collective: every rank of the group calls it, in the same
        order), block by block, into a temporary cache: rank 0's block k, rank 1's block k, ...,
        the same order for every layer (a rank's layers have the same rows)."""
        sync = self.dist_sync_fn or gather_all_tensors
        group = self.process_group
        plan = layer_map.plan
        mine = layer_map.cache.rows() if layer_map.cache is not None else 0
        local = layer_map.cache.arrays() if mine else {}  # a rank without data sends none
        counts = sync(torch.tensor([mine], device=self.device), group=group)
        most = max(int(c.reshape(-1)[0]) for c in counts)
        out = RowCache(plan.cached, self.cache_dir)
        try:
            for key, itemsize in zip(plan.cached, self._itemsize):
                dtype = np.float64 if itemsize == 8 else np.float32
                p = layer_map.widths[key]
                step = max(1, _GATHER_BYTES // (p * itemsize))
                for lo in range(0, most, step):
                    rows = local[key][lo:lo + step] if key in local else np.empty((0, p), dtype)
                    sent = torch.from_numpy(np.ascontiguousarray(rows, dtype=dtype))
                    for part in sync(sent.to(self.device), group=group):
                        if part.shape[0]:
                            out.write(key, part.cpu().numpy())
        except BaseException:
            out.close()
            raise
        return out


class CKA(CKAMap):
    """Exact linear CKA of two representations, over all batches of all ranks.

    Parameters
    ----------
    debiased : bool, default False
        CKA from unbiased HSIC (Song et al. 2012); False: the biased estimator (Kornblith et al.
        2019).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        The pyckafast backend of the streamed state (CUDA tensors go through the cuda backend,
        which needs CuPy; without CuPy they are copied to the host).
    max_state_bytes : int, default :data:`STATE_BUDGET` (1 GiB)
        Budget of the streamed float64 state; wider representations go to the activation
        cache (the same on every rank).
    cache_dir : str or path-like, optional
        Where the activation cache is made (default: the system's temporary directory).
    **kwargs
        The torchmetrics ``Metric`` options (``process_group``, ``dist_sync_on_step``...).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> import pyckafast
    >>> from pyckafast.torchmetrics import CKA
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(100, 6, dtype=torch.float64, generator=g)
    >>> y = x @ torch.randn(6, 3, dtype=torch.float64, generator=g)
    >>> metric = CKA()
    >>> for a, b in zip(x.split(30), y.split(30)):
    ...     metric.update(a, b)
    >>> bool(abs(float(metric.compute()) - pyckafast.linear_cka(x.numpy(), y.numpy())) < 1e-12)
    True
    """

    def update(self, x: ArrayLike, y: ArrayLike) -> None:  # type: ignore[override]
        """Add one batch of matching rows of ``x`` and ``y``.

        Parameters
        ----------
        x : array_like
            Shape (batch, p_x): a torch tensor or an array.
        y : array_like
            Shape (batch, p_y), the same rows as ``x``.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKA
        >>> x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKA()
        >>> metric.update(x, -2 * x)
        >>> round(metric.compute().item(), 12)
        1.0
        """
        super().update([x], [y])

    def compute(self) -> torch.Tensor:
        """Return the CKA of every sample seen on every rank.

        Returns
        -------
        torch.Tensor
            A float64 0-d tensor.

        Raises
        ------
        ValueError
            If no rank has seen a batch.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKA
        >>> x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKA()
        >>> for batch in x.split(25):
        ...     metric.update(batch, batch[:, :2])
        >>> metric.compute().shape, 0 < metric.compute().item() < 1
        (torch.Size([]), True)
        """
        return super().compute()[0, 0]
