"""The tiled sample-space pass of the cached layers, run while the batches arrive.

:func:`pyckafast._cpu.tiled_map.tiled_map_terms` visits the block pairs of the whole cache once
writing is done. Here the same sums are made batch by batch: the rows a batch brings are block
``t``, and the block pairs (t, s), s <= t, are computed when it arrives, with torch on torch
tensors (one thread pool: torch's intra-op threads run the forward passes and these GEMMs in
turn, never on top of each other). The rows of the recent batches stay in RAM, centred, in a
window of bounded size; the pairs of the window against older rows are computed when the
window is full (and once more after the last batch), reading the older rows back from the cache
chunk by chunk: per window the cache is read once, not once per batch. When every row fits in
RAM (``resident``), the window holds them all: each batch's tiles are made against every
earlier row as it arrives, nothing is read back, and the window is the cache.

The sums are exactly those of the tiled pass (:class:`~pyckafast._cpu.tiled_map.SetPairSums`,
merged into :class:`~pyckafast._core.terms.KernelTerms` by
:func:`~pyckafast._cpu.tiled_map.pair_terms`). The one diagonal convention of
:mod:`pyckafast._core.pairs`: a block against itself (a batch's rows against themselves) adds
its whole tile once, i = j and both orders of i != j, and its diagonal is kept; a block against
another (disjoint rows) adds its tile twice, standing for (s, t) too, with its row sums going to
both blocks' rows. Each layer's tile is computed once per block pair, in the layer's dtype, then
summed in float64; every layer pair's sum of products comes from one float64 GEMM of the stack
of tiles.

Each layer is centred by a fixed shift, its first batch's column means rounded to its dtype
(the sums are exact for any shift; a shift near the mean keeps float32 Grams of data with a
large mean accurate, as in the tiled pass), times the power of two
:func:`~pyckafast._cpu.tiled_map.head_scale` picks for its first rows.

Memory beyond the cache: the window (centred rows of all cached layers: at most
``_WINDOW_BYTES`` or an eighth of the memory available, at least one batch), one read-back chunk
of one layer, the float64 tile stack (``_STACK_BYTES``) and O(L n) row sums and diagonals:
O(n + tile p).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from .._core.optional import require
from .._core.pairs import block_bounds
from .._core.terms import KernelTerms
from .._core.scaling import power_of_two_scale
from .._cpu.tiled_map import pair_terms, scale_log2

__all__ = ["StreamedTiles"]

# Centred rows of the recent batches of every cached layer kept in RAM: a bigger window reads
# the cache back fewer times (once per window: n^2 / (2 window) rows in all).
# At most an eighth of the memory available when the first batch arrives (at least 64 MiB).
_WINDOW_BYTES = 512 * 2**20
_MIN_WINDOW_BYTES = 64 * 2**20
_MAX_WINDOW_ROWS = 2048
# The float64 tiles of one block pair of all layers, and one layer's read-back chunk.
_STACK_BYTES = 128 * 2**20
_CHUNK_BYTES = 128 * 2**20
_SPREAD_ROWS = 256  # the rows whose spread about the shift set the scale (as the tiled pass)

Pair = tuple[int, int]
Reader = Callable[[int, int, np.ndarray], np.ndarray]  # (layer, first row, out) -> out


class StreamedTiles:
    """Float64 sums of every cached layer's Gram tiles, block pair by block pair as batches
    arrive.

    Parameters
    ----------
    names : sequence of str
        The layers, for messages.
    read : callable
        ``read(layer, start, out)`` fills ``out`` (a C-contiguous NumPy array of the layer's
        dtype, shape (rows, p)) with the layer's raw rows [start, start + rows), as added.
    rows : int, optional
        Rows of the window and of the read-back chunks (default: from the memory budgets).
    resident : int, optional
        The rows expected, all kept in the window (grown if more come): ``read`` is never
        called, and the caller need not cache the rows. Fresh pages cost time on first touch
        (seconds per GB on some VMs), so one copy of the rows in RAM, not a cache and a window.

    Examples
    --------
    >>> import numpy as np, torch
    >>> import pyckafast
    >>> from pyckafast._core import combine
    >>> x = np.random.default_rng(0).normal(size=(300, 20))
    >>> layers = [x, np.tanh(x[:, :5])]
    >>> def read(r, start, out):  # the cache: the rows as they were added
    ...     out[:] = layers[r][start:start + len(out)]
    ...     return out
    >>> tiles = StreamedTiles(["x", "y"], read, rows=100)
    >>> for lo in range(0, 300, 50):
    ...     tiles.add([torch.from_numpy(a[lo:lo + 50].copy()) for a in layers])
    >>> terms, zero = tiles.terms([(0, 1)])
    >>> cka = combine.cka_from_hsic(combine.kernel_hsic(terms[0, 1], False))
    >>> bool(abs(cka - pyckafast.linear_cka(*layers)) < 1e-12)
    True
    """

    def __init__(self, names: Sequence[str], read: Reader, rows: int | None = None,
                 resident: int | None = None):
        self.torch = require("torch", "pyckafast.torch")
        self.names, self.read, self.rows_option = list(names), read, rows
        self.resident = resident
        self.n = 0  # rows added
        self.start = 0  # the window's first row: rows before it are read back from the cache
        self.fill = 0  # rows in the window
        self.seconds = 0.0  # tile work (reads from the cache not included: the cache counts them)
        self._reading = 0.0
        self.window: list = []
        self._buffers: dict = {}  # dtype -> flat scratch of the tiles (see _scratch)

    # ---- batches ---------------------------------------------------------------------------
    def add(self, batch: Sequence, checked: bool = False) -> None:
        """One batch: per layer a (rows, p) CPU tensor of raw (uncentred) rows, the same rows
        the cache was given. Checked first (:meth:`check`, unless ``checked``): a rejected
        batch changes nothing."""
        torch = self.torch
        batch = self._tensors(batch)
        began = time.perf_counter()
        if not checked:
            self.check(batch)
        if not self.window:
            self._setup(batch)
        b = int(batch[0].shape[0])
        if self.fill + b > self.capacity:
            if self.resident:  # more rows than expected: the window grows, keeping them
                self._grow(max(self.fill + b, 2 * self.capacity), keep=self.fill)
            else:
                self._flush()
                if b > self.capacity:  # a batch larger than the window: the window takes it
                    self._grow(b)
        self._reserve(self.n + b)
        rows = []
        for r, t in enumerate(batch):
            mine = self.window[r][self.fill:self.fill + b]
            torch.sub(t, self.shifts[r], out=mine)
            if self.scales[r] != 1.0:  # a power of two: exact
                mine.mul_(self.scales[r])
            rows.append(mine)
        a = (self.n, self.n + b)
        if self.fill:  # against the earlier rows in the window (disjoint: counted twice)
            earlier = [w[:self.fill] for w in self.window]
            self._pieces(rows, earlier, a, (self.start, self.start + self.fill), False)
        self._pieces(rows, rows, a, a, True)  # the batch against itself
        self.fill += b
        self.n += b
        self.seconds += time.perf_counter() - began - self._reading
        self._reading = 0.0

    def finish(self, report: Callable[[int, int], None] | None = None) -> None:
        """After the last batch: the window against the older rows. ``report(done, total)`` per
        read-back chunk."""
        began = time.perf_counter()
        self._flush(report)
        self.seconds += time.perf_counter() - began - self._reading
        self._reading = 0.0

    def nbytes(self, layer: int) -> int:
        """Bytes of layer ``layer``'s rows held in the window (all its rows, when resident)."""
        if not self.window:
            return 0
        return (self.n if self.resident else self.fill) * self.window[layer][0].nbytes

    def remaining(self) -> int:
        """Read-back chunks :meth:`finish` still has to visit."""
        return len(block_bounds(self.start, self._chunk_rows())) if self.fill else 0

    def terms(self, pairs: Sequence[Pair]) -> tuple[dict[Pair, KernelTerms], list[bool]]:
        """The KernelTerms of each pair (i, j) of layer indices (call :meth:`finish` first), and
        every layer's zero-variance flag, as :func:`~pyckafast._cpu.tiled_map.tiled_map_terms`."""
        if self.fill:
            self.finish()
        count = len(self.names)
        if not self.window:
            raise ValueError("no batches were added to the tiled pass.")
        n = self.n
        eps = [float(np.finfo(_numpy_dtype(s.dtype)).eps) for s in self.shifts]
        return pair_terms(self.products.numpy(), self.row_sums[:, :n].numpy(),
                          self.diagonal[:, :n].numpy(), eps,
                          [scale_log2(s) for s in self.scales], list(range(count)), pairs,
                          count)

    # ---- set-up ----------------------------------------------------------------------------
    def _tensors(self, batch: Sequence) -> list:
        torch = self.torch
        return [t if isinstance(t, torch.Tensor) else torch.from_numpy(np.asarray(t))
                for t in batch]

    def check(self, batch: Sequence) -> None:
        """Raise a ValueError naming the layer (and row) if a batch does not fit the earlier
        ones (number of layers, rows, widths, dtypes, CPU) or holds a NaN or Inf."""
        torch = self.torch
        batch = self._tensors(batch)
        if self.window and len(batch) != len(self.window):
            raise ValueError(f"a batch of the tiled pass must hold {len(self.window)} layers; "
                             f"got {len(batch)}.")
        for r, t in enumerate(batch):
            if t.dim() != 2 or t.shape[0] != batch[0].shape[0] or t.device.type != "cpu":
                raise ValueError(f"{self.names[r]} must be a (rows, p) CPU tensor with the "
                                 f"batch's {batch[0].shape[0]} rows; got {tuple(t.shape)} on "
                                 f"{t.device}.")
            if self.window and (t.shape[1] != self.window[r].shape[1]
                                or t.dtype != self.window[r].dtype):
                raise ValueError(f"{self.names[r]} gave {t.shape[1]} features of {t.dtype} in "
                                 f"a later batch; its first batch had {self.window[r].shape[1]} "
                                 f"of {self.window[r].dtype}.")
            # One sum in the rows' dtype is not finite when a value is not (the rows are
            # looked at only then: a sum that overflows with every value finite is no error).
            if not math.isfinite(float(t.sum())):
                bad = (~torch.isfinite(t)).any(dim=1).nonzero()
                if len(bad):
                    raise ValueError(f"{self.names[r]} must contain only finite values; found "
                                     f"NaN or Inf in row {self.n + int(bad[0])}.")

    def _setup(self, batch) -> None:
        torch = self.torch
        self.shifts, self.scales = [], []
        for t in batch:
            shift = t.sum(dim=0, dtype=torch.float64).div_(t.shape[0]).to(t.dtype)
            head = t[:_SPREAD_ROWS].double() - shift.double()
            spread = float(head.abs().max()) if head.numel() else 0.0
            self.shifts.append(shift)
            self.scales.append(power_of_two_scale(spread))
        widths = [int(t.shape[1]) for t in batch]
        b = int(batch[0].shape[0])
        row_bytes = sum(int(t.shape[1]) * t.element_size() for t in batch)
        if self.resident:
            rows = int(self.resident)
        elif self.rows_option:
            rows = int(self.rows_option)
        else:
            from .._core.dispatch import _available_bytes

            budget = min(_WINDOW_BYTES, max(_MIN_WINDOW_BYTES, _available_bytes() // 8))
            rows = min(_MAX_WINDOW_ROWS, max(1, budget // max(1, row_bytes)))
        exact = self.rows_option or self.resident
        self.capacity = max(b, rows) if exact else max(b, rows // b * b)
        self.window = [torch.empty(self.capacity, p, dtype=t.dtype) for p, t in zip(widths, batch)]
        count = len(batch)
        self.products = torch.zeros(count, count, dtype=torch.float64)
        self.row_sums = torch.zeros(count, 0, dtype=torch.float64)
        self.diagonal = torch.zeros(count, 0, dtype=torch.float64)
        self.widest = max(p * t.element_size() for p, t in zip(widths, batch))

    def _grow(self, rows: int, keep: int = 0) -> None:
        """A window of ``rows`` rows, its first ``keep`` rows copied from the old one."""
        torch = self.torch
        old, self.window = self.window, [torch.empty(rows, w.shape[1], dtype=w.dtype)
                                         for w in self.window]
        for new, w in zip(self.window, old):
            new[:keep] = w[:keep]
        self.capacity = rows

    def _reserve(self, n: int) -> None:
        """Room for the row sums and diagonals of n rows (grown by doubling)."""
        have = self.row_sums.shape[1]
        if n <= have:
            return
        torch = self.torch
        size = max(n, 2 * have)
        for name in ("row_sums", "diagonal"):
            old = getattr(self, name)
            new = torch.zeros(old.shape[0], size, dtype=torch.float64)
            new[:, :have] = old
            setattr(self, name, new)

    # ---- block pairs -----------------------------------------------------------------------
    def _chunk_rows(self) -> int:
        if self.rows_option:
            return int(self.rows_option)
        by_stack = _STACK_BYTES // (8 * len(self.window) * max(1, self.fill))
        return int(max(64, min(self.capacity, _CHUNK_BYTES // self.widest, by_stack)))

    def _flush(self, report=None) -> None:
        """The window's rows against every older row (read back chunk by chunk), then the
        window is emptied: its rows become older rows."""
        if not self.fill:
            return
        torch = self.torch
        window = [w[:self.fill] for w in self.window]
        a = (self.start, self.start + self.fill)
        chunks = block_bounds(self.start, self._chunk_rows())
        scratch = None
        for done, (lo, hi) in enumerate(chunks, 1):
            if scratch is None:
                scratch = torch.empty(hi - lo, self.widest, dtype=torch.uint8)
            older = [self._older(r, lo, hi, scratch) for r in range(len(window))]
            self._pieces(window, older, a, (lo, hi), False, lazy=True)
            if report is not None:
                report(done, len(chunks))
        self.start += self.fill
        self.fill = 0

    def _older(self, r: int, lo: int, hi: int, scratch):
        """Layer r's rows [lo, hi) read back and centred, in the shared scratch: returned as a
        function, so each layer's chunk is read just before its tile is made."""
        def load():
            w = self.window[r]
            flat = scratch.reshape(-1)[: (hi - lo) * w.shape[1] * w.element_size()]
            out = flat.view(w.dtype).reshape(hi - lo, w.shape[1])
            began = time.perf_counter()
            self.read(r, lo, out.numpy())
            self._reading += time.perf_counter() - began
            out.sub_(self.shifts[r])
            if self.scales[r] != 1.0:
                out.mul_(self.scales[r])
            return out
        return load

    def _pieces(self, left: list, right: list, a: tuple[int, int], b: tuple[int, int],
                diagonal: bool, lazy: bool = False) -> None:
        """The block pair (rows a of ``left``) x (rows b of ``right``) of every layer, cut into
        strips of ``a`` so that the float64 tile stack stays within its budget."""
        count = len(left)
        cols = b[1] - b[0]
        if diagonal:  # sub-blocks whose stacks fit: their own diagonal pairs, and the pairs
            # of each sub-block against the earlier ones (disjoint rows)
            side = max(1, int(np.sqrt(_STACK_BYTES / (8 * count))))
            subs = block_bounds(a[1] - a[0], side)
            for k, (lo, hi) in enumerate(subs):
                part = [t[lo:hi] for t in left]
                rows = (a[0] + lo, a[0] + hi)
                self._stack(part, part, rows, rows, True)
                if k:
                    self._pieces(part, [t[:lo] for t in left], rows, (a[0], a[0] + lo), False)
            return
        strip = max(1, _STACK_BYTES // (8 * count * max(1, cols)))
        if lazy:  # right[r] is a loader of layer r's rows (one scratch): strips share it
            strip = a[1] - a[0]
        for lo in range(0, a[1] - a[0], strip):
            hi = min(lo + strip, a[1] - a[0])
            self._stack([t[lo:hi] for t in left], right, (a[0] + lo, a[0] + hi), b, False)

    def _stack(self, left: list, right: list, a, b, diagonal: bool) -> None:
        torch = self.torch
        count, ma, mb = len(left), a[1] - a[0], b[1] - b[0]
        stack = self._scratch(torch.float64, count * ma * mb).view(count, ma, mb)
        for r in range(count):
            rows_b = right[r]() if callable(right[r]) else right[r]
            if left[r].dtype == torch.float64:
                torch.matmul(left[r], rows_b.T, out=stack[r])
            else:  # the GEMM in the layer's dtype, its tile summed in float64
                tile = self._scratch(left[r].dtype, ma * mb).view(ma, mb)
                stack[r].copy_(torch.matmul(left[r], rows_b.T, out=tile))
        flat = stack.reshape(count, -1)
        self.products.addmm_(flat, flat.T, alpha=1.0 if diagonal else 2.0)
        self.row_sums[:, a[0]:a[1]] += stack.sum(dim=2)
        if diagonal:
            self.diagonal[:, a[0]:a[1]] = torch.diagonal(stack, dim1=1, dim2=2)
        else:
            self.row_sums[:, b[0]:b[1]] += stack.sum(dim=1)

    def _scratch(self, dtype, numel: int):
        """A flat buffer of ``numel`` elements kept between block pairs (one per dtype, grown
        when too small): fresh pages for every tile are slow to touch on some VMs."""
        buf = self._buffers.get(dtype)
        if buf is None or buf.numel() < numel:
            buf = self._buffers[dtype] = self.torch.empty(numel, dtype=dtype)
        return buf[:numel]


def _numpy_dtype(dtype) -> np.dtype:
    return np.dtype(str(dtype).replace("torch.", ""))
