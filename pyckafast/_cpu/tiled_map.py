"""Sample-space CKA maps over block pairs: every representation's Gram tile once per block pair.

For layers of large p (the p x p feature moments do not fit) CKA is computed in sample space,
from the n x n Grams K_r = X~_r X~_r' (X~: rows shifted by the column means rounded to the input
dtype, so float32 data with a large mean keep their precision). A map of L layers needs the pair
sums sum K_i * K_j of many pairs; a per-pair tiled pass would compute every layer's Gram tiles
once per pair it is in. Here one pass visits the upper triangle of block pairs (a, b) once
(:func:`pyckafast._core.pairs.block_pairs`); each representation's tile K_r[a, b] comes from BLAS
in its input dtype and goes, as float64, into row ``r`` of a stack of tiles; one GEMM of the
stack with itself then gives every pair's sum of products (and every tile's squared norm) at
once. Per representation the row sums and the diagonal are kept (O(n)).

Memory beyond the inputs: O(L (n + tile^2) + tile p): the L float64 tiles, two centred blocks of
one representation at a time (the inputs are read block by block, so memmaps larger than RAM
work) and the row sums. RBF (``kernel="rbf"``) takes the entries E = 2^m exp(-gamma d2) - c from the
same Gram tile and the rows' squared norms, per representation an
:class:`~pyckafast._core.rbf_entry.RbfKernel` (c near the typical entry, as every RBF producer:
with K - 1 the debiased estimator cancelled at narrow bandwidths); the diagonal 2^m - c is not
in the tile sums but goes to :class:`KernelTerms` as ``const_diag``.

Array code takes the array module ``xp`` (NumPy, or CuPy on a GPU with host or device inputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.combine import gram_is_zero_variance
from .._core.dispatch import linear_form
from .._core.inputs import float_dtype
from .._core.pairs import (BlockSums, ScatteredSums, block_bounds, block_pairs, centring_shift,
                           sq_norms)
from .._core.progress import Progress, progress_reporter
from .._core.rbf_entry import (TYPICAL_PAIRS, RbfKernel, pass_dtype, shifted_exp,
                                typical_exponent)
from .._core.terms import KernelTerms
from .._core.scaling import power_of_two_scale

__all__ = ["tiled_map_terms", "map_tile_rows", "set_pair_sums", "SetPairSums", "Side",
           "pair_terms", "rbf_gammas", "rbf_kernels", "typical_sq_distance", "rbf_entries",
           "route_pairs", "with_free_pairs", "wide", "head_scale",
           "scale_log2"]

Pair = tuple[int, int]

# The float64 tile stack (L tiles) stays within this many bytes, and so do the two centred blocks
# of the widest representation.
_STACK_BYTES = 128 * 2**20
_BLOCKS_BYTES = 128 * 2**20
_MIN_TILE, _MAX_TILE = 128, 2048


def map_tile_rows(widths: Sequence[int], itemsize: int) -> int:
    """Rows per block of a tiled map over representations of ``widths`` (the L float64 tiles
    and two blocks of the widest one within their budgets; a multiple of 64 where it can be)."""
    by_stack = int(np.sqrt(_STACK_BYTES / (8 * max(1, len(widths)))))
    by_blocks = _BLOCKS_BYTES // max(1, 2 * max(widths) * itemsize)
    rows = min(_MAX_TILE, by_stack, by_blocks)
    return int(max(_MIN_TILE, rows // 64 * 64))


def tiled_map_terms(
    reps: Sequence[Any], pairs: Sequence[Pair], *, tile: int | None = None,
    progress: Progress = None, xp: Any = np, kernel: str = "linear",
    gammas: Sequence[float] | None = None, names: Sequence[str] | None = None,
    options: Any = None,
) -> tuple[dict[Pair, KernelTerms], list[bool]]:
    """Kernel terms of every wanted pair of representations, in one pass over block pairs.

    Parameters
    ----------
    reps : sequence of arrays (n, p_r)
        The representations (NumPy arrays or memmaps, read block by block; CuPy arrays with
        ``xp=cupy``). Only those in ``pairs`` are read.
    pairs : sequence of (i, j)
        Indices into ``reps``; (i, i) is allowed.
    tile : int, optional
        Rows per block (default :func:`map_tile_rows`).
    progress : None, bool or callable
        Reported once per block pair (see :mod:`pyckafast._core.progress`).
    xp : module
        The array module the tiles are computed with.
    kernel : {"linear", "rbf"}
        Linear Grams of the centred rows, or RBF kernels exp(-gamma_r |a - b|^2) (held as
        2^m K - c off the diagonal, the diagonal 2^m - c as ``const_diag_*``, ``log2_*`` = -m:
        :mod:`pyckafast._core.rbf_entry`).
    gammas : sequence of float, optional
        RBF only: gamma per representation (indexed like ``reps``).
    names : sequence of str, optional
        The representations' names for messages (default "reps[r]").
    options : RBFOptions, optional
        RBF only: the options the gammas come from. A median rule fixes each kernel's typical
        exponent u = 1 / (2 threshold^2); otherwise (an explicit sigma, or None) u is gamma times
        the median squared distance of sampled row pairs, as in :func:`pyckafast.rbf_cka`.

    Returns
    -------
    terms : dict (i, j) -> KernelTerms
    zero : list of bool
        Per representation (indexed like ``reps``; False for those not read): whether it has
        zero variance.

    Raises
    ------
    ValueError
        If a representation read holds NaN or Inf, or the representations do not all have n rows.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast._core import combine
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 50))
    >>> terms, zero = tiled_map_terms([x, 2 * x, np.tanh(x)], [(0, 1), (0, 2)], tile=128)
    >>> round(combine.cka_from_hsic(combine.kernel_hsic(terms[0, 1], False)), 12)
    1.0
    """
    used = sorted({r for pair in pairs for r in pair})
    if not used:
        return {}, [False] * len(reps)
    names = list(names) if names is not None else [f"reps[{r}]" for r in range(len(reps))]
    n = int(reps[used[0]].shape[0])
    for r in used:
        if int(reps[r].shape[0]) != n:
            raise ValueError(f"{names[r]} must have the n = {n} rows of {names[used[0]]}; got "
                             f"{reps[r].shape[0]}.")
    gamma = rbf_gammas(kernel, gammas, used)
    own = [float_dtype(reps[r].dtype, names[r]) for r in used]  # checked before any row is read
    kernels, dtypes = rbf_kernels(gamma, options, [reps[r] for r in used], own)
    sides = [Side(reps[r], names[r], xp, scaled=kernel == "linear", dtype=d)
             for r, d in zip(used, dtypes)]
    rows = min(n, tile or map_tile_rows([s.p for s in sides], max(s.itemsize for s in sides)))
    blocks = len(block_bounds(n, rows))
    total = blocks * (blocks + 1) // 2
    with progress_reporter(progress, total, desc="tiled CKA map", unit="block pair") as report:
        sums = set_pair_sums(sides, None, rows, kernels, report)
    return pair_terms(_host(sums.products), _host(sums.rows_a),
                      None if sums.diagonal is None else _host(sums.diagonal),
                      [s.eps for s in sides], [s.log2 for s in sides], used, pairs,
                      len(reps), kernels)


def route_pairs(reps: Sequence[Any], wanted: Sequence[Pair], form: str
                ) -> tuple[list[Pair], list[Pair]]:
    """(pairs for the tiled map, pairs for the feature-space map) of a linear map of prepared
    representations (``Samples``). ``form="tiles"``: all tiled; "features": none; "auto": the
    pairs with a wide layer (:func:`wide`), and every pair of two layers those pairs put in the
    tiled pass anyway (its tiles are computed there: one more dot product of tiles costs far
    less than the pair's moments)."""
    if form == "features":
        return [], list(wanted)
    is_wide = [form == "tiles" or wide(s) for s in reps]
    return with_free_pairs(wanted, [(i, j) for i, j in wanted if is_wide[i] or is_wide[j]])


def with_free_pairs(wanted: Sequence[Pair], chosen: Sequence[Pair]
                    ) -> tuple[list[Pair], list[Pair]]:
    """(the wanted pairs whose two representations are both in a ``chosen`` pair, the others):
    a tiled pass computes the tiles of every representation in it, so a pair of two of them
    costs it only one more dot product of tiles."""
    in_tiles = {r for pair in chosen for r in pair}
    tiled = [(i, j) for i, j in wanted if i in in_tiles and j in in_tiles]
    return tiled, [pair for pair in wanted if pair not in set(tiled)]


def wide(s: Any) -> bool:
    """Whether a layer (``Samples``) belongs in the tiled sample-space pass: the linear form
    :func:`~pyckafast._core.dispatch.linear_form` picks for it against itself is not
    "features" (its p x p moments do not fit in memory, or its n x n Gram costs fewer flops)."""
    try:
        return linear_form("auto", s.n, s.p, s.p, s.dtype.itemsize) != "features"
    except MemoryError:  # no form fits: the tiled pass needs the least
        return True


def rbf_gammas(kernel: str, gammas: Sequence[float] | None, used: list[int]) -> list:
    """The gamma of each used representation (RBF), or Nones (linear)."""
    if kernel != "rbf":
        return [None] * len(used)
    if gammas is None or any(gammas[r] is None for r in used):
        raise ValueError("kernel='rbf' needs gammas: one gamma per representation.")
    return [float(gammas[r]) for r in used]


def rbf_kernels(gamma: list, options: Any, rows: Sequence[Any], dtypes: Sequence[np.dtype]
                ) -> tuple[list, list]:
    """(kernels, dtypes): the :class:`RbfKernel` of each representation (None for linear), from
    its typical exponent u as :func:`pyckafast._cpu.rbf.side_kernels` finds it (1 / (2
    threshold^2) under a median rule of ``options``, else gamma times
    :func:`typical_sq_distance` of its ``rows``), and the dtype its tiles are computed in: float64
    for rows of float32 (their ``dtypes``) and a kernel narrower than float32 dot products allow
    (:func:`~pyckafast._core.rbf_entry.pass_dtype`, as ``rbf_cka``), else None (the rows'). The
    entries are evaluated in float64 (the tiles are), so the constants are float64 ones."""
    kernels, wider = [], []
    for g, a, dtype in zip(gamma, rows, dtypes):
        if g is None:
            kernels.append(None)
            wider.append(None)
            continue
        u = typical_exponent(options, g, lambda a=a: typical_sq_distance(a))
        kernels.append(RbfKernel.of(g, u, np.float64))
        wide = pass_dtype(dtype, u)
        wider.append(None if wide == dtype else wide)
    return kernels, wider


def typical_sq_distance(rows: Any) -> float | None:
    """The median squared distance of the :data:`~pyckafast._core.rbf_entry.TYPICAL_PAIRS` random
    row pairs of :func:`~pyckafast._core.rbf_entry.sampled_typical` (same pairs, seed 0) of
    ``rows`` (NumPy, memmap, CuPy or Dask; only the sampled rows are read), or None for fewer
    than two rows."""
    from .._core.bandwidth import median_over_pairs, sampled_pairs

    n = int(rows.shape[0])
    if n < 2:
        return None
    i, j = sampled_pairs(n, TYPICAL_PAIRS, 0)
    read, inverse = np.unique(np.concatenate([i, j]), return_inverse=True)
    sample = rows[read]
    if hasattr(sample, "compute"):  # a Dask array: bring the sampled rows in
        sample = sample.compute()
    xp = np if isinstance(sample, np.ndarray) else _module_of(sample)
    return median_over_pairs(sample, inverse[: len(i)], inverse[len(i):], xp=xp)


def _module_of(a: Any) -> Any:
    """The array module of a non-NumPy array (CuPy)."""
    import importlib

    return importlib.import_module(type(a).__module__.split(".")[0])


class Side:
    """One representation: its rows (not copied), dtype, centring shift (the column means
    rounded to the dtype; given, e.g. the global one for a Dask chunk, or computed here) and
    the power of two its centred rows are multiplied by (linear tiles of data of extreme
    magnitude: see :func:`head_scale`; 1 for RBF, whose gamma is for the rows as they are).
    ``dtype`` (optional) is the dtype its blocks and tiles are computed in when not that of the
    rows (float64 for float32 rows of a kernel too narrow for float32 dot products:
    :func:`rbf_kernels`); the shift and ``eps`` stay those of the rows' dtype."""

    def __init__(self, rows: Any, name: str, xp: Any = np, shift: Any = None,
                 scale: float | None = None, scaled: bool = True, dtype: Any = None):
        self.rows, self.name, self.xp = rows, name, xp
        self.dtype = float_dtype(rows.dtype, name)
        self.p = int(rows.shape[1])
        self.n = int(rows.shape[0])
        self.shift = (centring_shift(rows, name, self.dtype, xp) if shift is None  # checked finite
                      else xp.asarray(shift, dtype=self.dtype))
        if scale is None:
            scale = head_scale(self._upload(rows[:_SPREAD_ROWS]), self.shift, xp) if scaled else 1.0
        self.scale = float(scale)
        self.eps = float(np.finfo(self.dtype).eps)
        if dtype is not None and np.dtype(dtype) != self.dtype:  # exact: a wider float
            self.dtype = np.dtype(dtype)
            self.shift = self.shift.astype(self.dtype)
        self.itemsize = self.dtype.itemsize

    @property
    def log2(self) -> int:
        return scale_log2(self.scale)

    def block(self, bounds: tuple[int, int], out: Any) -> Any:
        """Rows [lo, hi) minus the shift (times the scale), written into ``out`` (C-contiguous,
        this dtype)."""
        self.xp.subtract(self._upload(self.rows[bounds[0]:bounds[1]]), self.shift, out=out)
        if self.scale != 1.0:  # a power of two: exact
            out *= self.scale
        return out

    def _upload(self, part: Any) -> Any:
        if self.xp is not np and isinstance(part, np.ndarray):  # host rows: one upload a block
            return self.xp.asarray(np.ascontiguousarray(part))
        return part


# Rows whose spread about the shift sets the scale (as the feature-space producers do).
_SPREAD_ROWS = 256


def head_scale(head: Any, shift: Any, xp: Any = np) -> float:
    """1.0, or for rows whose spread about ``shift`` lies outside [2^-50, 2^50] the power of two
    that brings it near 1 (:func:`pyckafast._core.scaling.power_of_two_scale`): Gram tiles of
    float32 rows near 1e20 would overflow, near 1e-20 underflow. CKA does not change; HSIC is
    scaled back through the terms' log2 (:func:`scale_log2`)."""
    with np.errstate(all="ignore"):
        spread = float(_host(xp.max(xp.abs(head.astype(np.float64)
                                           - shift.astype(np.float64)))))
    return power_of_two_scale(spread)


def scale_log2(scale: float) -> int:
    """The log2 of KernelTerms for Grams of rows times ``scale``: they hold K * 2^-log2."""
    return -2 * (math.frexp(scale)[1] - 1)


def set_pair_sums(sides_a: list[Side], sides_b: list[Side] | None, rows: int, kernels: list,
                  report=None) -> SetPairSums:
    """The float64 sums of the tiles of one row set against itself (``sides_b`` None: the upper
    triangle of its block pairs) or of two distinct row sets (every block pair), every
    representation's tile computed once per block pair. ``kernels``: per representation its
    :class:`RbfKernel` (RBF) or None (linear Gram). ``report(done, total)`` per block pair."""
    xp = sides_a[0].xp
    n_a = sides_a[0].n
    n_b = None if sides_b is None else sides_b[0].n
    bounds_a = block_bounds(n_a, rows)
    bounds_b = None if n_b is None else block_bounds(n_b, rows)
    sums = SetPairSums(xp, len(sides_a), n_a, n_b, rows, kernels[0] is None)
    scratch = _Scratch(xp, sides_a + (sides_b or []), rows)
    total = len(bounds_a) * (len(bounds_a) + 1) // 2 if n_b is None else len(bounds_a) * len(
        bounds_b)
    for done, (a, b, diagonal) in enumerate(block_pairs(bounds_a, bounds_b), start=1):
        stack = sums.stack(a, b)
        for slot, side in enumerate(sides_a):
            other = side if sides_b is None else sides_b[slot]
            _tile(side, other, a, b, diagonal, scratch, stack[slot], kernels[slot])
        sums.add(stack, a, b, diagonal)
        if report is not None:
            report(done, total)
    return sums


class _Scratch:
    """Reused buffers: centred blocks a and b of one representation at a time, and the Gram tile
    in the input dtype before its float64 copy (views of flat byte buffers, so representations
    of any width and dtype share them)."""

    def __init__(self, xp: Any, sides: list[Side], rows: int):
        self.xp = xp
        widest = max(s.p * s.itemsize for s in sides)
        self.blocks = [xp.empty(rows * widest, dtype=np.uint8) for _ in range(2)]
        low = [s.itemsize for s in sides if s.dtype != np.float64]
        self.tile = xp.empty(rows * rows * max(low), dtype=np.uint8) if low else None

    def block(self, k: int, side: Side, bounds: tuple[int, int]) -> Any:
        m = bounds[1] - bounds[0]
        out = self.blocks[k][: m * side.p * side.itemsize].view(side.dtype).reshape(m, side.p)
        return side.block(bounds, out)

    def gram(self, dtype: np.dtype, shape: tuple[int, int]) -> Any:
        return self.tile[: shape[0] * shape[1] * dtype.itemsize].view(dtype).reshape(shape)


def _tile(side_a: Side, side_b: Side, a: tuple[int, int], b: tuple[int, int], diagonal: bool,
          scratch: _Scratch, out: Any, kernel: RbfKernel | None) -> None:
    """One representation's tile of block pair (a, b) into ``out`` (float64): the Gram of the
    centred blocks, or for RBF its entries 2^m exp(-gamma d2) - c off the diagonal."""
    xp = side_a.xp
    block_a = scratch.block(0, side_a, a)
    block_b = block_a if diagonal else scratch.block(1, side_b, b)
    # block_a @ block_a.T on one buffer lets BLAS run SYRK (half the flops) for diagonal tiles
    if side_a.dtype == np.float64:
        xp.matmul(block_a, block_b.T, out=out)
    else:
        out[...] = xp.matmul(block_a, block_b.T, out=scratch.gram(side_a.dtype, out.shape))
    if kernel is not None:
        na = sq_norms(xp, block_a).astype(np.float64)
        nb = na if diagonal else sq_norms(xp, block_b).astype(np.float64)
        rbf_entries(xp, out, na, nb, kernel)
        if diagonal:  # the diagonal 2^m - c is KernelTerms' const_diag, not in the sums
            xp.fill_diagonal(out, 0.0)


def rbf_entries(xp: Any, g: Any, na: Any, nb: Any, kernel: RbfKernel) -> None:
    """In place, for any array module ``xp``: float64 dot products g -> the entries
    E = 2^m exp(x) - c, x = -gamma max(na + nb - 2 g, 0) (:func:`~pyckafast._core.rbf_entry.
    shifted_exp`, the formula every host producer shares)."""
    g *= -2.0
    g += na[:, None]
    g += nb[None, :]
    xp.maximum(g, 0.0, out=g)
    g *= -kernel.gamma
    shifted_exp(xp, g, kernel)


class SetPairSums:
    """Float64 sums of a set pair's tiles: per representation its row sums (and, for a row set
    against itself, its diagonal); the pair matrix ``products`` holds every pair's sum of
    products over all ordered row pairs (i, j) of the set pair (its diagonal: each kernel's
    squared sum). Two distinct sets stand for (a, b) and (b, a): products count both, rows_a
    and rows_b hold the row and column sums."""

    def __init__(self, xp: Any, count: int, n_a: int, n_b: int | None, rows: int,
                 keep_diagonal: bool):
        self.xp, self.two_sets = xp, n_b is not None
        self.flat = xp.empty((count, rows * rows))
        self.scatter = ScatteredSums((count, count), (count,), n_a, n_b,
                                     keep_diagonal=keep_diagonal, xp=xp)
        self.products, self.rows_a = self.scatter.sums, self.scatter.rows_a
        self.rows_b, self.diagonal = self.scatter.rows_b, self.scatter.diagonal

    def stack(self, a: tuple[int, int], b: tuple[int, int]) -> Any:
        """The (count, |a|, |b|) tile stack for block pair (a, b): views of one flat buffer."""
        ma, mb = a[1] - a[0], b[1] - b[0]
        return self.flat[:, : ma * mb].reshape(self.flat.shape[0], ma, mb)

    def add(self, stack: Any, a: tuple[int, int], b: tuple[int, int], diagonal: bool) -> None:
        flat = stack.reshape(stack.shape[0], -1)
        # Every pair's sum of products and every tile's squared sum: one GEMM (count x count),
        # scattered by the rule of _core/pairs (a full square diagonal tile has weight 1).
        self.scatter.add(BlockSums(flat @ flat.T, stack.sum(axis=2),
                                   None if diagonal else stack.sum(axis=1),
                                   self.xp.diagonal(stack, axis1=1, axis2=2) if diagonal
                                   else None), a, b, diagonal)


def pair_terms(products: np.ndarray, row_sums: np.ndarray, diagonal: np.ndarray | None,
               eps: list[float], log2: list[int], used: list[int],
               pairs: Sequence[Pair], count: int, kernels: list | None = None
               ) -> tuple[dict[Pair, KernelTerms], list[bool]]:
    """The KernelTerms of each wanted pair from the sums of all row pairs (host arrays indexed
    by slot, i.e. position in ``used``; ``log2`` each Gram's scale; ``kernels`` per slot the
    :class:`RbfKernel` of RBF tiles, whose diagonal and scale the terms carry as ``const_diag``
    and ``log2``), and the zero-variance flag of every representation."""
    if kernels is not None and kernels[0] is not None:
        log2 = [k.log2_scale for k in kernels]
        const = [k.diag for k in kernels]
    else:
        const = [0.0] * len(used)
    n = row_sums.shape[1]
    slot = {r: k for k, r in enumerate(used)}
    zero = [False] * count
    for r, k in slot.items():
        if diagonal is not None:  # linear: the total variance is the Gram's trace
            zero[r] = gram_is_zero_variance(float(diagonal[k].sum()), float(row_sums[k].sum()),
                                            n, eps[k])
        else:  # constant rows have u = 0, so c = 1, m = 0 and every entry K - 1 = 0
            zero[r] = not np.any(row_sums[k]) and products[k, k] == 0.0
    terms = {}
    for i, j in pairs:
        a, b = slot[i], slot[j]
        terms[i, j] = KernelTerms(
            n=n, s_kl=float(products[a, b]), s_kk=float(products[a, a]),
            s_ll=float(products[b, b]), row_k=row_sums[a], row_l=row_sums[b],
            diag_k=None if diagonal is None else diagonal[a],
            diag_l=None if diagonal is None else diagonal[b], eps=max(eps[a], eps[b]),
            log2_k=log2[a], log2_l=log2[b], const_diag_k=const[a], const_diag_l=const[b])
    return terms, zero


def _host(a: Any) -> np.ndarray:
    return np.asarray(a.get() if hasattr(a, "get") else a)
