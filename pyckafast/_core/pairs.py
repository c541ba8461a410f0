"""One block-pair scheduler for every O(n^2) pass (RBF terms, exact-median passes, tiled linear
and RBF maps; in memory, on a GPU, over Dask chunks): the CPU twin of the GPU tiling.

A pass visits every unordered pair of rows once by cutting the rows into blocks
(:func:`block_bounds`) and visiting the upper triangle of block pairs (:func:`block_pairs`).
:func:`reduce_pairs` runs a body (an entry function and its reduction: the RBF sums of
:class:`PairTerms`, a distance histogram, a stack of Gram tiles) over those pairs and combines
the parts: with ``+`` (histograms, candidate lists) or with the one scatter of block sums into
row sums (:class:`ScatteredSums`; :class:`PairTermsSum` for :class:`PairTerms`).

**Diagonal conventions.** A block pair is *diagonal* when it is a block against itself.

* The scatter has one rule for every pass whose sums run over ordered pairs (kernel terms,
  tiled maps): a diagonal part stands for all ordered pairs (i, j) of its block, so it has
  weight 1 and its row sums are full row sums (its column sums are in them); an off-diagonal
  part (a, b) holds one direction and stands for (a, b) and (b, a): weight 2, row sums into
  a's rows, column sums into b's rows.
* How a diagonal part is evaluated differs, by design:
  - the kernel passes (:mod:`pyckafast._cpu.rbf`, the C++, Numba and CUDA RBF kernels,
    ``csrc/common/rbf_pair.h``) evaluate the pairs i < j only and double them, adding the
    column sums into the same rows (the kernel is symmetric): half the entries;
  - the tiled maps (:mod:`pyckafast._cpu.tiled_map`) compute the full square tile, one
    SYRK/GEMM in the input dtype (a triangle mask would cost more than the half it saves, and
    one GEMM of the tile stack gives every pair's sums at once); RBF tiles zero their diagonal,
    whose constant the terms carry as ``const_diag``; linear tiles keep it (their ``diagonal``);
  - the linear tiles of :mod:`pyckafast._cpu.linear_tiles` also compute the full square (SYRK)
    and then subtract its diagonal, so their part is that of the kernel passes (pairs i != j),
    the diagonal kept apart.
* Distance histograms and candidate lists (the exact-median passes) count each unordered pair
  once: i < j of a diagonal pair, every pair of an off-diagonal one; they add with ``+``.
* Off-diagonal parts are doubled by the scatter, except on the GPU: the CUDA RBF kernel doubles
  its tiles itself and scatters its row and column sums in place into the device row sums while
  it runs (``_gpu/rbf.py``): gathering per-block-pair parts there would cost an allocation and a
  host round trip per block pair for nothing.

Every input is prepared once per call as a :class:`CentredSide` (one shift per input, checked
finite): the squared distances come from |a|^2 + |b|^2 - 2 a.b, accurate only for data near the
origin, and the bandwidth selection and the RBF pass must see the same centred rows.

This module is backend-free: array code takes the array module ``xp`` (NumPy, or CuPy on a GPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from .inputs import column_mean
from .validation import check_finite_sums

__all__ = ["Bounds", "default_tile", "block_bounds", "bounds_of_sizes", "block_pairs",
           "reduce_pairs", "Summed", "BlockSums", "ScatteredSums", "PairTerms", "PairTermsSum",
           "CentredSide", "CentredBlock",
           "compute_dtype", "centring_shift", "shift_from_sums", "centre", "sq_norms",
           "retry_out_of_memory"]

Bounds = tuple[int, int]  # rows [start, stop) of one block
T = TypeVar("T")

# Rows per tile: two tiles of dot products (x and y) of this many rows squared stay near 8 MB
# for float32 (16 MB for float64) and BLAS runs at full rate on them.
_DEFAULT_TILE = 1024
# Rows per step of the float64 squared-norm pass (bounded float64 temporaries).
_NORM_ROWS = 8192


def default_tile(itemsize: int) -> int:
    """Rows per tile of the BLAS-tiled passes for elements of ``itemsize`` bytes."""
    return _DEFAULT_TILE if itemsize >= 8 else 2 * _DEFAULT_TILE


def block_bounds(n: int, tile: int) -> list[Bounds]:
    """[(start, stop)] of consecutive blocks of ``tile`` rows (the last one may be shorter)."""
    return [(lo, min(lo + tile, n)) for lo in range(0, n, tile)]


def bounds_of_sizes(sizes: Sequence[int]) -> list[Bounds]:
    """[(start, stop)] of consecutive row blocks of the given sizes (e.g. Dask row chunks)."""
    stops = np.cumsum(sizes, dtype=np.int64)
    return [(int(stop - size), int(stop)) for size, stop in zip(sizes, stops)]


def block_pairs(bounds_a: Sequence[Bounds],
                bounds_b: Sequence[Bounds] | None = None) -> Iterator[tuple[Bounds, Bounds, bool]]:
    """The block pairs (a, b, diagonal) of one row set against itself (``bounds_b`` None: the
    upper triangle, a <= b, ``diagonal`` when a is b) or of two distinct row sets (every a x b,
    never diagonal). Together they hold every unordered pair of rows exactly once."""
    same_set = bounds_b is None
    for ia, a in enumerate(bounds_a):
        for b in bounds_a[ia:] if same_set else bounds_b:
            yield a, b, same_set and b == a


class Accumulator(Protocol):
    """Combines the parts of :func:`reduce_pairs` (``add`` per block pair, then ``result``)."""

    def add(self, part: Any, a: Bounds, b: Bounds, diagonal: bool) -> None: ...

    def result(self) -> Any: ...


@dataclass
class Summed:
    """Parts added with ``+`` (they cover disjoint pair sets: histograms, candidate lists). A
    ``None`` part adds nothing: its body accumulated in place (the GPU engine's kernels)."""

    total: Any = None

    def add(self, part: Any, a: Bounds, b: Bounds, diagonal: bool) -> None:
        if part is not None:
            self.total = part if self.total is None else self.total + part

    def result(self) -> Any:
        return self.total


def reduce_pairs(
    body: Callable[[Any, Any, bool], Any], bounds_a: Sequence[Bounds],
    bounds_b: Sequence[Bounds] | None = None, *, load_a: Callable[[Bounds], Any] | None = None,
    load_b: Callable[[Bounds], Any] | None = None, into: Accumulator | None = None,
    gather: Callable[[list], list] | None = None,
) -> Any:
    """Run ``body(block_a, block_b, diagonal)`` over :func:`block_pairs` and combine the parts.

    Parameters
    ----------
    body
        The entry function and its reduction over one block pair; for a diagonal pair it
        evaluates pairs i < j only (``block_b`` is ``block_a``).
    bounds_a, bounds_b
        Blocks of one row set (``bounds_b`` None: the set against itself) or of two sets.
    load_a, load_b
        Block bounds -> the block handed to ``body`` (default: the bounds themselves); block a is
        loaded once per row of the triangle. ``load_b`` defaults to ``load_a``.
    into
        How parts combine (default :class:`Summed`; :class:`PairTermsSum` for RBF sums).
    gather
        Called once with the list of all parts before they are combined: Dask computes the
        delayed parts there, in parallel. Without it parts are combined as they come.

    Returns
    -------
    object
        ``into.result()``.
    """
    into = Summed() if into is None else into
    load_a = load_a or (lambda bounds: bounds)
    load_b = load_b or load_a
    evaluated = _evaluate(body, block_pairs(bounds_a, bounds_b), load_a, load_b)
    if gather is not None:
        listed = list(evaluated)
        evaluated = zip([key for key, _ in listed], gather([part for _, part in listed]))
    for (a, b, diagonal), part in evaluated:
        into.add(part, a, b, diagonal)
    return into.result()


def _evaluate(body, pairs, load_a, load_b) -> Iterator[tuple[tuple[Bounds, Bounds, bool], Any]]:
    current, block_a = None, None
    for a, b, diagonal in pairs:
        if a != current:  # pairs come row by row: block a is loaded once per row
            current, block_a = a, load_a(a)
        yield (a, b, diagonal), body(block_a, block_a if diagonal else load_b(b), diagonal)


# ---- RBF pair sums -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairTerms:
    """Sums over the pairs (i in block a, j in block b) of E = K - 1 and F = L - 1.

    ``s_kl = sum E_ij F_ij``, ``s_kk = sum E_ij^2``, ``s_ll = sum F_ij^2`` (float64);
    ``row_k_a[i] = sum_j E_ij``, ``row_l_a`` likewise, ``row_k_b[j] = sum_i E_ij`` (column sums).
    For a diagonal pair (a is b) the pairs i < j were evaluated and then stand for all ordered
    pairs of the block: the sums are doubled, the column sums were added into ``row_*_a`` (the
    full row sums) and ``row_*_b`` are zeros.
    """

    s_kl: float
    s_kk: float
    s_ll: float
    row_k_a: np.ndarray
    row_l_a: np.ndarray
    row_k_b: np.ndarray
    row_l_b: np.ndarray


@dataclass(frozen=True)
class BlockSums:
    """The sums of one block pair (a, b), as every pass over ordered pairs scatters them.

    ``sums``: sums over the part's entries (any shape: the 3 RBF sums, an L x L matrix of a tile
    stack); ``rows[..., i]``: for row i of block a, the sum of its entries; ``cols[..., j]``:
    for row j of block b, the sum of its entries (None for a diagonal part: they are in
    ``rows``); ``diag``: the entries (i, i) of a diagonal part, where they are kept.
    """

    sums: Any
    rows: Any
    cols: Any = None
    diag: Any = None


class ScatteredSums:
    """The one scatter of :class:`BlockSums` into the sums of a whole set pair: a row set
    against itself (``n_b`` None) or two distinct sets (the rule is in the module docstring:
    diagonal parts weight 1, off-diagonal parts weight 2, rows to a, columns to b).

    ``lead`` is the shape in front of the row axis of ``rows`` (``(2,)`` for the two kernels of
    a pair, ``(L,)`` for L representations); ``keep_diagonal`` keeps the diagonal entries of a
    set against itself (``diagonal``). Arrays of module ``xp``.
    """

    def __init__(self, sums_shape: tuple[int, ...], lead: tuple[int, ...], n_a: int,
                 n_b: int | None = None, *, keep_diagonal: bool = False, xp: Any = np):
        self.sums = xp.zeros(sums_shape)
        self.rows_a = xp.zeros((*lead, n_a))
        self.rows_b = self.rows_a if n_b is None else xp.zeros((*lead, n_b))
        self.diagonal = xp.zeros((*lead, n_a)) if keep_diagonal and n_b is None else None

    def add(self, part: BlockSums, a: Bounds, b: Bounds, diagonal: bool) -> None:
        if diagonal:
            self.sums += part.sums
        else:
            self.sums += 2.0 * part.sums  # (a, b) and (b, a)
        self.rows_a[..., a[0]:a[1]] += part.rows
        if not diagonal:  # a diagonal part's column sums are already in its rows
            self.rows_b[..., b[0]:b[1]] += part.cols
        elif self.diagonal is not None:
            self.diagonal[..., a[0]:a[1]] = part.diag

    def result(self) -> ScatteredSums:
        return self


class PairTermsSum:
    """:class:`ScatteredSums` of :class:`PairTerms` of block pairs: the terms of a whole set
    pair, a row set against itself (``n_b`` None; the result is a diagonal pair) or two distinct
    sets. The sums are kept over ordered pairs."""

    def __init__(self, n_a: int, n_b: int | None = None):
        self.n_a, self.n_b = n_a, n_b
        self.scatter = ScatteredSums((3,), (2,), n_a, n_b)

    def add(self, part: PairTerms, a: Bounds, b: Bounds, diagonal: bool) -> None:
        sums = np.array([part.s_kl, part.s_kk, part.s_ll])
        cols = None if diagonal else np.stack([part.row_k_b, part.row_l_b])
        self.scatter.add(BlockSums(sums, np.stack([part.row_k_a, part.row_l_a]), cols),
                         a, b, diagonal)

    def result(self) -> PairTerms:
        s = self.scatter
        if self.n_b is None:
            empty = np.zeros(self.n_a)
            return PairTerms(*map(float, s.sums), *s.rows_a, empty, empty)
        # Two distinct sets are one off-diagonal pair: one direction, i.e. half the ordered
        # sums (exact in binary floating point), which the caller's scatter doubles again.
        return PairTerms(*map(float, 0.5 * s.sums), *s.rows_a, *s.rows_b)


# ---- centred inputs ------------------------------------------------------------------------------
def compute_dtype(ops: Any, *dtypes: np.dtype) -> np.dtype:
    """The dtype a CPU backend ``ops`` computes distances in for inputs of ``dtypes`` (at least
    float32; the numpy backend always float64)."""
    return np.dtype(ops.gemm_dtype(np.result_type(np.float32, *dtypes)))


def shift_from_sums(total: np.ndarray, n: int, name: str, dtype: np.dtype) -> np.ndarray:
    """Column means from float64 column sums (checked finite, naming ``name``), rounded to
    ``dtype``: subtracting them is exact near the mean (Sterbenz)."""
    total = np.asarray(total, dtype=np.float64)
    check_finite_sums(total, name, 0, n)
    return (total / n).astype(dtype)


def centring_shift(a: Any, name: str, dtype: np.dtype, xp: Any = np) -> Any:
    """The shift of :func:`shift_from_sums` for the rows of ``a`` (an array of module ``xp``, or
    host rows for a GPU pass), as an array of module ``xp``."""
    mean = _host(column_mean(a, xp if hasattr(a, "__cuda_array_interface__") else np))
    check_finite_sums(mean, name, 0, a.shape[0], a)
    return xp.asarray(mean.astype(np.dtype(dtype)))


def sq_norms(xp: Any, a: Any) -> Any:
    """|a_i|^2 of the rows of a block. On the host: NumPy's einsum in a's dtype (pairwise sums;
    a float64 copy of wide rows would cost several percent of a BLAS-tile pass). On a device:
    float64 sums in bounded steps (a float32 device reduction accumulates row by row)."""
    if xp is np:
        return np.einsum("ij,ij->i", a, a)
    out = xp.empty(a.shape[0])
    for lo in range(0, a.shape[0], _NORM_ROWS):
        part = a[lo:lo + _NORM_ROWS].astype(np.float64)
        out[lo:lo + _NORM_ROWS] = (part * part).sum(axis=1)
    return out


@dataclass
class CentredSide:
    """One input of an O(n^2) pass, prepared once per call and shared by the bandwidth selection
    and the RBF terms: its rows (not copied), the shift subtracted block by block, the compute
    dtype and the argument's name (for messages).

    ``rows`` are an array of module ``xp``, or host rows streamed to the device block by block.
    """

    rows: Any
    shift: Any
    dtype: np.dtype
    name: str
    xp: Any = np
    _max_sq_norm: float | None = field(default=None, init=False, repr=False)

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])

    @property
    def depth(self) -> int:
        return int(self.rows.shape[1])

    def block(self, bounds: Bounds, dtype: np.dtype | None = None) -> Any:
        """Rows [start, stop) minus the shift, C-contiguous, in ``dtype`` (default: the side's
        compute dtype; a pass over two sides of different dtypes computes in the wider one)."""
        xp, part = self.xp, self.rows[bounds[0]:bounds[1]]
        if xp is not np and isinstance(part, np.ndarray):  # host rows: one upload per block
            part = xp.asarray(np.ascontiguousarray(part))
        dtype = self.dtype if dtype is None else dtype
        return xp.ascontiguousarray(part.astype(dtype, copy=False) - self.shift.astype(dtype))

    def rows_as(self, dtype: np.dtype) -> Any:
        """All rows in ``dtype`` (no copy if they already are), for passes that centre as they
        pack the rows (the fused kernels take the rows and the shift)."""
        return self.rows.astype(dtype, copy=False)

    def max_sq_norm(self) -> float:
        """max_i |x_i - shift|^2 in float64 (computed once): 4x it bounds every squared distance,
        |x_i - x_j| <= |x_i - s| + |x_j - s|."""
        if self._max_sq_norm is None:
            self._max_sq_norm = max(
                float(sq_norms(self.xp, self.block(bounds)).max())
                for bounds in block_bounds(self.n, _NORM_ROWS))
        return self._max_sq_norm


def centre(a: Any, name: str, dtype: np.dtype, xp: Any = np) -> CentredSide:
    """``a`` prepared as a :class:`CentredSide`: one float64 column-sum pass, checked finite.

    Parameters
    ----------
    a
        The rows (n, d): an array of module ``xp``, or host rows for a GPU pass.
    name
        The argument's name for messages ("x", "dx", "xs[2]").
    dtype
        The compute dtype the shift is rounded to (:func:`compute_dtype` on the CPU).
    xp
        The array module of the blocks the passes will load (NumPy, or CuPy).

    Raises
    ------
    ValueError
        If ``a`` holds NaN or Inf (or values whose sum overflows), naming ``name``.
    """
    dtype = np.dtype(dtype)
    return CentredSide(a, centring_shift(a, name, dtype, xp), dtype, name, xp)


@dataclass(frozen=True)
class CentredBlock:
    """Centred rows of x and y of one block (C-contiguous, compute dtype) and their squared norms
    (:func:`sq_norms`, in the compute dtype), as the RBF tile kernels take them."""

    x: Any
    y: Any
    nx: Any
    ny: Any
    bounds: Bounds

    @classmethod
    def load(cls, side_x: CentredSide, side_y: CentredSide, bounds: Bounds,
             dtype: np.dtype) -> CentredBlock:
        x, y = side_x.block(bounds, dtype), side_y.block(bounds, dtype)
        nx = sq_norms(side_x.xp, x).astype(dtype, copy=False)
        return cls(x, y, nx, sq_norms(side_y.xp, y).astype(dtype, copy=False), bounds)


def _host(a: Any) -> np.ndarray:
    return np.asarray(a.get() if hasattr(a, "get") else a)


# ---- out of memory -------------------------------------------------------------------------------
def retry_out_of_memory(run: Callable[[int], T], rows: int, unit: int, *,
                        errors: tuple[type[BaseException], ...], release: Callable[[], None],
                        what: str, per: Callable[[int], str], detail: str = "") -> T:
    """``run(rows)``; on an out-of-memory error, free the pool and retry with half the rows (down
    to ``unit``), warning each time; at ``unit`` rows raise MemoryError naming the rows.

    Parameters
    ----------
    run
        The whole pass with a given number of rows per chunk or block.
    rows, unit
        The rows to try first, and the fewest worth trying (a kernel's tile, a minimum chunk).
    errors, release
        The engine's out-of-memory exception types, and what frees its memory pool.
    what, per, detail
        For the messages: the computation ("RBF CKA"), the unit of work (``per(256)`` ->
        "256-row blocks") and what the final message adds (e.g. memory the rows do not need).

    Returns
    -------
    object
        What ``run`` returned for the first row count that fitted.

    Raises
    ------
    MemoryError
        When even ``unit`` rows do not fit; chained to the engine's error.
    """
    while True:
        try:
            return run(rows)
        except errors as exc:
            release()
            if rows <= unit:
                raise MemoryError(f"{what} on the GPU ran out of device memory even with "
                                  f"{per(rows)}{detail}: {exc}") from exc
            rows = max(unit, rows // 2)
            warnings.warn(f"GPU out of memory; retrying with {per(rows)}.", RuntimeWarning,
                          stacklevel=4)
