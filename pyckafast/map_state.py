"""Streaming layer x layer linear CKA: a mergeable, resumable map state fed batch by batch.

Per layer the state holds its own float64 moments once (the Gram of its rows about a fixed
shift, the column sums, and for debiased CKA the row-norm terms sum q, sum q^2, sum q b); per
pair of layers only the cross moments (X'Y and the debiased cross row-norm terms). A symmetric
map (one list of layers against itself) holds the pairs i < j only. The sums are those of
:mod:`pyckafast._cpu.linear_map` (the one-pass map of :func:`pyckafast.cka_matrix`); changing a
layer's shift or scale, and so merging parts accumulated about different shifts, is the exact
algebra of :class:`~pyckafast._core.terms.LinearTerms`: a layer's own moments are re-expressed as
the terms of the layer against an empty (0-feature) partner, a pair's as the pair's terms.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from ._core import combine, dispatch, params
from ._core.inputs import (Samples, check_finite_rows, check_finite_sums, check_same_n,
                           prepare_list)
from ._core.params import validate_params
from ._core.terms import LinearTerms, RowNormTerms
from ._core.types import ArrayLike, Backend
from ._cpu.linear import _rounded_shift, row_frame
from ._cpu.linear_map import _Cross, _Moments, _Own, gemm_dtype
from .streaming import _checked, _field, read_state_archive

__all__ = ["CKAMapState"]

_FORMAT_VERSION = 1
_KIND = "CKAMapState"
# Rows per chunk: the float64 chunks of all layers together stay near this size.
_CHUNKS_BYTES = 8 * 2**20

Pair = tuple[int, int]
#: The layers of one side of a map: a sequence of representations or a Mapping name -> one.
LayersLike = Sequence[ArrayLike] | Mapping[str, ArrayLike]


class CKAMapState:
    """Exact layer x layer linear CKA over data that arrives in batches, on any workers.

    Each update takes one batch of every layer (the same samples' rows). The state holds float64
    moments only (per layer p_i^2 + O(p_i), per pair p_i p_j), never the data and nothing that
    grows with the number of samples. States built from any split of the samples merge into the
    state of the union; the map equals the one-shot :func:`pyckafast.cka_matrix` to float64
    rounding.

    Parameters
    ----------
    debiased : bool, default True
        Also track the row-norm terms that debiased CKA needs. With False, only
        ``result(debiased=False)`` is available.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Where GPU batches go ("auto" or "cuda": CuPy arrays and torch CUDA tensors are reduced on
        their device; only the float64 moments come to the host). Host batches run BLAS on
        chunks in their own dtype (float32 GEMMs for float32 data) whatever the backend; every
        sum is float64.

    Attributes
    ----------
    n : int
        Rows seen so far.
    names_a, names_b : list of str or None
        The layer names when the layers came as a Mapping (``names_b`` is ``names_a`` for a
        symmetric map).

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(600, 6))
    >>> layers = {"a": x, "b": np.tanh(x @ rng.normal(size=(6, 4))), "c": x[:, :2]}
    >>> left, right = pyckafast.CKAMapState(), pyckafast.CKAMapState()
    >>> _ = left.update({k: v[:250] for k, v in layers.items()})
    >>> _ = right.update({k: v[250:] for k, v in layers.items()})
    >>> state = left.merge(right)
    >>> state.n, state.names_a
    (600, ['a', 'b', 'c'])
    >>> bool(np.allclose(state.result(), pyckafast.cka_matrix(list(layers.values())), atol=1e-12))
    True
    """

    @validate_params({"debiased": params.BOOLEAN, "backend": params.BACKEND},
                     owner="CKAMapState")
    def __init__(self, *, debiased: bool = True, backend: Backend = "auto") -> None:
        self.debiased = bool(debiased)
        self.backend = backend
        self._sums: _MapSums | None = None
        self._layout: _Layout | None = None  # fixed by the first update (or merge, or load)
        self._spread: list[float] = []  # per layer: the largest spread seen (scaled units)

    # ---- what the state holds ------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Rows seen so far."""
        return 0 if self._sums is None else self._sums.n

    @property
    def names_a(self) -> list[str] | None:
        return None if self._layout is None else self._layout.names_a

    @property
    def names_b(self) -> list[str] | None:
        return None if self._layout is None else self._layout.names_b

    @property
    def nbytes(self) -> int:
        """Float64 bytes the state holds (moments, shifts)."""
        return 0 if self._sums is None else self._sums.nbytes

    # ---- feeding -------------------------------------------------------------------------------
    def update(self, xs: LayersLike, ys: LayersLike | None = None) -> CKAMapState:
        """Add one batch of every layer.

        Parameters
        ----------
        xs : sequence of array_like (batch, p_i), or Mapping of str to array_like
            The layers of the first side (the same rows in each). A Mapping's names are kept.
        ys : sequence of array_like, Mapping of str to array_like, or None, default None
            The layers of the second side, as ``xs``. None: the map of ``xs`` against itself
            (symmetric). The first update fixes the number of layers, their widths and whether
            the map is symmetric.

        Returns
        -------
        CKAMapState
            This state (``self``), so that updates chain.

        Raises
        ------
        ValueError
            If the layers differ from earlier updates' (number, widths, names), hold a NaN or
            Inf (naming the layer and rows), or do not all have the batch's number of rows.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast import CKAMapState
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(100, 5))
        >>> state = CKAMapState().update([x, x[:, :3]]).update([x + 1, x[:, :3] + 1])
        >>> state.n, state.result().shape
        (200, (2, 2))
        """
        a, names_a = _layers(xs, "xs")
        b, names_b = (a, names_a) if ys is None else _layers(ys, "ys")
        layout = _Layout.of(a, b, ys is None, names_a, names_b)
        for s in (*a, *b):
            check_same_n(a[0].data, s.data, 1, names=(a[0].name, s.name))
        if len({s.device for s in (*a, *b)}) > 1:
            raise ValueError("every layer of xs and ys must live on one device; got "
                             f"{[(s.name, s.device) for s in (*a, *b)]}.")
        if self._layout is not None:
            self._layout.check_batch(layout)
            layout = self._layout
        reps = a if layout.symmetric else [*a, *b]
        if dispatch.place(reps[0].kind, self.backend) == "cuda":
            self._merge_sums(self._gpu_part(reps, layout))
        else:
            self._add_host_batch(reps, layout)
        self._layout = layout  # fixed once the first batch is in
        return self

    def _add_host_batch(self, reps: list[Samples], layout: _Layout) -> None:
        """Add host rows in chunks (input dtype) about each layer's running shift; chunks far from it
        (farther than the data's spread) are accumulated about their own mean and merged."""
        data = [s.data for s in reps]
        rows = min(data[0].shape[0], max(64, _CHUNKS_BYTES // (8 * sum(a.shape[1] for a in data))))
        frames = [row_frame(a, rows) for a in data]
        eps = [float(np.finfo(s.dtype).eps) for s in reps]
        pairs = layout.pairs
        running = self._sums
        if running is None or running.scale != [f.scale for f in frames]:
            # the first batch, or data of another magnitude (power-of-two scale): a part of its own
            base = _MapSums([a.shape[1] for a in data], pairs, [f.shift for f in frames],
                            [f.scale for f in frames], eps, self.debiased)
            self._spread = [f.spread for f in frames]
        else:
            base = running
            base.eps = [max(e, f) for e, f in zip(base.eps, eps)]
            self._spread = _widest(self._spread, [f.spread for f in frames])
        _feed(base, data, [s.name for s in reps], rows, self._spread, start=self.n)
        if base is not running:
            self._merge_sums(base)

    def _gpu_part(self, reps: list[Samples], layout: _Layout) -> _MapSums:
        """The batch's sums from the GPU linear producer, pair by pair (each layer's own
        moments from the first pair it is in): only float64 moments come to the host."""
        ops = dispatch.resolve(self.backend, "linear_terms", "cuda")
        pairs = layout.pairs or [(0, 0)]  # one layer against itself: its own moments
        terms = {(i, j): ops.linear_terms(reps[i], reps[j], debiased=self.debiased,
                                          chunk_size=None, precision="highest")
                 for i, j in pairs}
        eps = [float(np.finfo(s.dtype).eps) for s in reps]
        return _MapSums.from_pair_terms(terms, len(reps), layout.pairs, eps, self.debiased)

    def _merge_sums(self, part: _MapSums) -> None:
        if self._sums is None:
            self._sums = part
        else:
            self._sums.merge(part)

    def merge(self, other: CKAMapState) -> CKAMapState:
        """Fold another state (disjoint samples, the same layers) into this one.

        Parameters
        ----------
        other : CKAMapState
            A state of the same layers (number, widths, names) fed other samples; it is left
            unchanged.

        Returns
        -------
        CKAMapState
            This state (``self``), now holding the samples of both.

        Raises
        ------
        TypeError
            If ``other`` is not a CKAMapState.
        ValueError
            If ``other`` is this state itself, maps other layers, or differs in ``debiased``.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast import CKAMapState
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(300, 4)), rng.normal(size=(300, 2))
        >>> whole = CKAMapState().update([x], [y])
        >>> part = CKAMapState().update([x[:100]], [y[:100]])
        >>> part = part.merge(CKAMapState().update([x[100:]], [y[100:]]))
        >>> part.n, bool(np.allclose(part.result(), whole.result(), rtol=1e-12))
        (300, True)
        """
        if not isinstance(other, CKAMapState):
            raise TypeError(f"other must be a CKAMapState; got {type(other).__name__}.")
        if other is self:  # the same samples twice are not disjoint: n would silently double
            raise ValueError("other must hold samples disjoint from this state's; got the state "
                             "itself.")
        if other._sums is None:
            return self
        if self._sums is None:
            self.debiased = other.debiased
            self._layout, self._spread = other._layout, list(other._spread)
            self._sums = other._sums.copy()
            return self
        if self.debiased != other.debiased:
            raise ValueError(
                "cannot merge a state that tracks debiased terms with one that does not "
                f"(self.debiased={self.debiased}, other.debiased={other.debiased}).")
        self._layout.check_state(other._layout)
        self._layout.adopt_names(other._layout)
        self._sums.merge(other._sums)
        self._spread = _widest(self._spread, other._spread)
        return self

    # ---- results -------------------------------------------------------------------------------
    def result(self, *, debiased: bool = False) -> np.ndarray:
        """Return the CKA map of all rows seen.

        Parameters
        ----------
        debiased : bool, default False
            The debiased estimator (the state must have been created with ``debiased=True``).

        Returns
        -------
        numpy.ndarray
            Shape (len(xs), len(ys)): CKA of every pair of layers. A symmetric map has a unit
            diagonal (nan, with a RuntimeWarning, for a layer without variance).

        Raises
        ------
        ValueError
            If the state has seen no samples, or ``debiased`` is asked of a state created
            with ``debiased=False``.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast import CKAMapState
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(200, 4))
        >>> state = CKAMapState().update([x, 2 * x])
        >>> np.round(state.result(), 6)
        array([[1., 1.],
               [1., 1.]])
        """
        sums, layout = self._ready(debiased)
        out = np.empty(layout.shape)
        for i in range(layout.shape[0]):
            for j in range(layout.shape[1]):
                if layout.symmetric and j < i:
                    out[i, j] = out[j, i]
                elif layout.symmetric and i == j:
                    zero = combine.linear_hsic(sums.own_terms(i), debiased).zero_x
                    out[i, j] = _undefined(layout.name_a(i)) if zero else 1.0
                else:
                    out[i, j] = combine.cka_from_hsic(
                        combine.linear_hsic(sums.pair_terms(*layout.pair(i, j)), debiased))
        return out

    def hsic(self, *, debiased: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the HSIC terms of the map over all rows seen.

        Parameters
        ----------
        debiased : bool, default False
            The debiased estimator (the state must have been created with ``debiased=True``).

        Returns
        -------
        hxy : numpy.ndarray
            Shape (La, Lb): HSIC(xs[i], ys[j]).
        hxx : numpy.ndarray
            Shape (La,): HSIC(xs[i], xs[i]).
        hyy : numpy.ndarray
            Shape (Lb,): HSIC(ys[j], ys[j]).

        Raises
        ------
        ValueError
            If the state has seen no samples, or ``debiased`` is asked of a state created
            with ``debiased=False``.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> from pyckafast import CKAMapState
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(200, 4)), rng.normal(size=(200, 3))
        >>> hxy, hxx, hyy = CKAMapState().update([x], [y]).hsic()
        >>> hxy.shape, hxx.shape, hyy.shape
        ((1, 1), (1,), (1,))
        >>> bool(np.isclose(hxy[0, 0] / np.sqrt(hxx[0] * hyy[0]), pyckafast.linear_cka(x, y)))
        True
        """
        sums, layout = self._ready(debiased)
        own = [combine.linear_hsic(sums.own_terms(k), debiased).unscaled().xx
               for k in range(len(sums.own))]
        la, lb = layout.shape
        hxx = np.array(own[:la])
        hyy = hxx.copy() if layout.symmetric else np.array(own[la:])
        hxy = np.empty((la, lb))
        for i in range(la):
            for j in range(lb):
                if layout.symmetric and j <= i:
                    hxy[i, j] = hxx[i] if i == j else hxy[j, i]
                else:
                    triple = combine.linear_hsic(sums.pair_terms(*layout.pair(i, j)), debiased)
                    hxy[i, j] = triple.unscaled_xy()
        return hxy, hxx, hyy

    def _ready(self, debiased: bool) -> tuple[_MapSums, _Layout]:
        if self._sums is None:
            raise ValueError("the state has seen no samples yet; call update() first.")
        if debiased and not self.debiased:
            raise ValueError("this state was created with debiased=False; it cannot give "
                             "debiased CKA.")
        return self._sums, self._layout

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the state to exactly ``path`` (an .npz archive of plain arrays).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (no suffix is added).

        Raises
        ------
        ValueError
            If the state has seen no samples yet.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from pyckafast import CKAMapState
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> state = CKAMapState().update({"a": x, "b": x[:, :2]})
        >>> path = os.path.join(tempfile.mkdtemp(), "map.npz")
        >>> state.save(path)
        >>> CKAMapState.load(path).names_a
        ['a', 'b']
        """
        if self._sums is None:
            raise ValueError("the state has seen no samples yet; there is nothing to save.")
        with open(path, "wb") as f:  # np.savez(path) would append ".npz" to a bare name
            np.savez(f, **self.arrays())

    def arrays(self) -> dict[str, np.ndarray]:
        """Return the state as plain NumPy arrays: what :meth:`save` writes.

        Returns
        -------
        dict of str to numpy.ndarray
            Float64 moments and shifts, integer widths, the layer names (when given) and the
            format's kind and version; :meth:`from_arrays` reads it back exactly.

        Raises
        ------
        ValueError
            If the state has seen no samples yet.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast import CKAMapState
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> state = CKAMapState().update([x, x ** 2])
        >>> copy = CKAMapState.from_arrays(state.arrays())
        >>> copy.n, bool(np.array_equal(copy.result(), state.result()))
        (100, True)
        """
        if self._sums is None:
            raise ValueError("the state has seen no samples yet; it has no arrays.")
        return {"format_version": np.array(_FORMAT_VERSION), "kind": np.array(_KIND),
                "debiased": np.array(self.debiased), **self._layout.arrays(),
                **self._sums.arrays(), "spread": np.array(self._spread, dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, backend: Backend = "auto",
                    name: str = "arrays") -> CKAMapState:
        """Return the state that :meth:`arrays` (or a file of :meth:`save`) describes.

        Parameters
        ----------
        arrays : Mapping of str to numpy.ndarray
            What :meth:`arrays` returned.
        backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
            The backend of the state's later updates.
        name : str, default "arrays"
            What the arrays are called in error messages (a file's path for :meth:`load`).

        Returns
        -------
        CKAMapState
            The state: updates, merges and results continue from it.

        Raises
        ------
        ValueError
            If ``arrays`` do not describe a CKAMapState (the message says what they hold), or
            if fields are missing, of the wrong shape, or not finite.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast import CKAMapState
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> CKAMapState.from_arrays(CKAMapState().update({"a": x, "b": x[:, :1]}).arrays()).names_a
        ['a', 'b']
        """
        kind = str(arrays["kind"]) if "kind" in arrays else None
        if kind != _KIND:
            raise ValueError(f"{name!r} is not a CKAMapState file (it holds "
                             f"{kind or 'a LinearCKAState or other archive'}).")
        version = int(_checked(arrays, "format_version", (), name))
        if version != _FORMAT_VERSION:
            raise ValueError(f"{name!r}: CKAMapState format {version} is not supported "
                             f"(expected {_FORMAT_VERSION}).")
        state = cls(debiased=bool(_field(arrays, "debiased", name)), backend=backend)
        state._layout = _Layout.from_arrays(arrays, name)
        state._sums = _MapSums.from_arrays(arrays, state._layout, state.debiased, name)
        spread = _field(arrays, "spread", name)
        state._spread = [] if spread.size == 0 else [  # empty: fed only GPU batches
            float(s) for s in _checked(arrays, "spread", (len(state._sums.own),), name)]
        return state

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: Backend = "auto") -> CKAMapState:
        """Read a state written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save`.
        backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
            The backend of the loaded state's later updates.

        Returns
        -------
        CKAMapState
            The saved state: updates, merges and results continue from it.

        Raises
        ------
        ValueError
            If ``path`` is not a CKAMapState file (the message says what it holds), or if its
            fields are missing, of the wrong shape, or not finite.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from pyckafast import CKAMapState
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> path = os.path.join(tempfile.mkdtemp(), "map.npz")
        >>> CKAMapState().update([x, x ** 2]).save(path)
        >>> state = CKAMapState.load(path)
        >>> state.n, bool(np.allclose(state.result(), CKAMapState().update([x, x ** 2]).result()))
        (100, True)
        """
        name = os.fspath(path)
        return cls.from_arrays(read_state_archive(path, _KIND), backend=backend, name=name)

    def __repr__(self) -> str:
        if self._layout is None:
            seen = "no samples yet"
        else:
            kind = "symmetric" if self._layout.symmetric else "two-sided"
            seen = f"n={self.n}, {kind} {self._layout.shape[0]}x{self._layout.shape[1]} map"
        return f"CKAMapState({seen}, debiased={self.debiased}, backend={self.backend!r})"


def _widest(mine: list[float], theirs: list[float]) -> list[float]:
    """Per layer the larger spread; a side that knows none (a state fed only GPU batches, whose
    spreads the producer does not report) takes the other's."""
    if not mine or not theirs:
        return list(mine or theirs)
    return [max(a, b) for a, b in zip(mine, theirs)]


def _undefined(name: str) -> float:
    combine._warn(f"{name} has zero variance: its CKA with itself is undefined (nan).")
    return math.nan


def _layers(reps, name: str) -> tuple[list[Samples], list[str] | None]:
    """Prepared layers of one side, and their names when they came as a Mapping."""
    if isinstance(reps, Mapping):
        names = [str(k) for k in reps]
        samples = prepare_list(list(reps.values()), name)
        samples = [replace(s, name=f"{name}[{k!r}]") for s, k in zip(samples, names)]
    else:
        samples, names = prepare_list(reps, name), None
    for s in samples:  # the whole batch before any of it is added: a bad batch changes nothing
        check_finite_rows(s)
    return samples, names


class _Layout:
    """Which layers a state maps: their widths and names, and the pairs it holds."""

    def __init__(self, widths_a: list[int], widths_b: list[int], symmetric: bool,
                 names_a: list[str] | None, names_b: list[str] | None):
        self.widths_a, self.widths_b, self.symmetric = widths_a, widths_b, symmetric
        self.names_a, self.names_b = names_a, (names_a if symmetric else names_b)
        la, lb = len(widths_a), len(widths_b)
        self.shape = (la, lb)
        self.pairs: list[Pair] = ([(i, j) for i in range(la) for j in range(i + 1, la)]
                                  if symmetric else
                                  [(i, la + j) for i in range(la) for j in range(lb)])

    @classmethod
    def of(cls, a: list[Samples], b: list[Samples], symmetric: bool, names_a, names_b) -> _Layout:
        return cls([s.p for s in a], [s.p for s in b], symmetric, names_a, names_b)

    def pair(self, i: int, j: int) -> Pair:
        """The index pair (into the state's layers) of map entry (i, j)."""
        return (i, j) if self.symmetric else (i, self.shape[0] + j)

    def name_a(self, i: int) -> str:
        return f"xs[{i}]" if self.names_a is None else f"xs[{self.names_a[i]!r}]"

    def check_batch(self, got: _Layout) -> None:
        """A later batch must have the first one's layers."""
        if got.symmetric != self.symmetric:
            want = "ys=None (a symmetric map)" if self.symmetric else "ys (a two-sided map)"
            raise ValueError(f"ys must match earlier updates: expected {want}; got "
                             f"{'None' if got.symmetric else 'layers'}.")
        for side, want, have, wnames, hnames in (
                ("xs", self.widths_a, got.widths_a, self.names_a, got.names_a),
                ("ys", self.widths_b, got.widths_b, self.names_b, got.names_b)):
            if len(have) != len(want):
                raise ValueError(f"{side} must hold {len(want)} layers as in earlier updates; "
                                 f"got {len(have)}.")
            if have != want:
                k = next(k for k, (w, h) in enumerate(zip(want, have)) if w != h)
                raise ValueError(f"{side}[{k}] must have {want[k]} features as in earlier "
                                 f"updates; got {have[k]}.")
            if wnames is not None and hnames is not None and wnames != hnames:
                raise ValueError(f"{side} must name its layers {wnames} as in earlier updates; "
                                 f"got {hnames}.")

    def check_state(self, other: _Layout) -> None:
        """Another state must map the same layers."""
        if (other.symmetric, other.widths_a, other.widths_b) != (
                self.symmetric, self.widths_a, self.widths_b):
            raise ValueError(
                "other must map the same layers: expected "
                f"{self._described()}; got {other._described()}.")
        for names, theirs in ((self.names_a, other.names_a), (self.names_b, other.names_b)):
            if names is not None and theirs is not None and names != theirs:
                raise ValueError(f"other must name its layers {names}; got {theirs}.")

    def adopt_names(self, other: _Layout) -> None:
        """Take the other layout's layer names where this one has none."""
        if self.names_a is None:
            self.names_a = other.names_a
        if self.names_b is None:
            self.names_b = self.names_a if self.symmetric else other.names_b

    def _described(self) -> str:
        if self.symmetric:
            return f"a symmetric map of widths {self.widths_a}"
        return f"a map of widths {self.widths_a} x {self.widths_b}"

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"symmetric": np.array(self.symmetric), "widths_a": np.array(self.widths_a),
               "widths_b": np.array(self.widths_b)}
        for key, names in (("names_a", self.names_a), ("names_b", self.names_b)):
            if names is not None:
                out[key] = np.array(names, dtype=str)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], name: str) -> _Layout:
        symmetric = bool(_field(arrays, "symmetric", name))
        widths = []
        for key in ("widths_a", "widths_b"):
            w = _field(arrays, key, name)
            if w.ndim != 1 or w.size == 0 or w.dtype.kind not in "iu" or (w < 1).any():
                raise ValueError(f"{name!r}: field {key!r} must be a non-empty 1-D array of "
                                 f"positive integers; the file holds {w.dtype} {w!r}.")
            widths.append([int(v) for v in w])
        names = []
        for key, width in (("names_a", widths[0]), ("names_b", widths[1])):
            got = arrays.get(key)
            if got is not None and (got.dtype.kind != "U" or got.shape != (len(width),)):
                raise ValueError(f"{name!r}: field {key!r} must hold {len(width)} layer names; "
                                 f"the file holds {got.dtype} of shape {got.shape}.")
            names.append(None if got is None else [str(v) for v in got])
        if symmetric and widths[0] != widths[1]:
            raise ValueError(f"{name!r}: a symmetric map must have widths_b == widths_a; the "
                             f"file holds {widths[0]} and {widths[1]}.")
        return cls(widths[0], widths[1], symmetric, names[0], names[1])


class _MapSums:
    """Float64 sums of every layer's rows (own moments) and of every held pair (cross moments),
    each layer in its own frame: rows * scale[i] - shift[i]."""

    def __init__(self, widths: list[int], pairs: list[Pair], shifts: list[np.ndarray],
                 scales: list[float], eps: list[float], debiased: bool):
        self.n = 0
        self.shift, self.scale, self.eps = list(shifts), list(scales), list(eps)
        self.own = [_Own(p, debiased) for p in widths]
        self.cross = {(i, j): _Cross(widths[i], widths[j], debiased) for i, j in pairs}

    @property
    def nbytes(self) -> int:
        arrays = [*self.shift]
        for o in self.own:
            arrays += [o.total, o.gram, o.qb]
        for c in self.cross.values():
            arrays += [c.xy, c.rx, c.qy]
        return sum(a.nbytes for a in arrays if a is not None)

    def restarted(self, shifts: list[np.ndarray]) -> _MapSums:
        """Empty sums of the same layers and scales about other shifts."""
        return _MapSums([o.total.size for o in self.own], list(self.cross), shifts, self.scale,
                        self.eps, self.own[0].qb is not None)

    def add(self, chunks: list[np.ndarray], lo: int, hi: int, names: list[str]) -> None:
        """Add one chunk of every layer (rows [lo, hi), already in this frame)."""
        for o, c, name in zip(self.own, chunks, names):
            o.add(c, lo, hi, name)
        for (i, j), acc in self.cross.items():
            acc.add(chunks[i], chunks[j], self.own[i], self.own[j])
        self.n += hi - lo

    def moments(self, i: int) -> _Moments:
        return self.own[i].moments(self.shift[i], self.eps[i], self.scale[i])

    def pair_terms(self, i: int, j: int) -> LinearTerms:
        return self.cross[i, j].terms(self.moments(i), self.moments(j), self.n)

    def own_terms(self, i: int) -> LinearTerms:
        """Layer i's own moments as the terms of the layer against an empty partner (0
        features): the reshift, rescale and merge algebra of LinearTerms then applies to them."""
        m, z = self.moments(i), np.zeros(0)
        p = m.total.size
        norms = None if m.qb is None else RowNormTerms(
            sum_q=m.sum_q, sum_r=0.0, sum_qq=m.sum_qq, sum_rr=0.0, sum_qr=0.0, qx=m.qb,
            rx=np.zeros(p), qy=z, ry=z)
        return LinearTerms(n=self.n, shift_x=m.shift, shift_y=z, sum_x=m.total, sum_y=z,
                           xx=m.gram, yy=np.zeros((0, 0)), xy=np.zeros((p, 0)), norms=norms,
                           eps=m.eps, scale_x=m.scale)

    def merge(self, other: _MapSums) -> None:
        """Add another part's sums (exact): both are expressed in the frames of the one with more
        rows (LinearTerms.merge), pair by pair and layer by layer."""
        owns = [self.own_terms(i).merge(other.own_terms(i)) for i in range(len(self.own))]
        for (i, j), cross in self.cross.items():  # crosses read the old own moments: first
            t = self.pair_terms(i, j).merge(other.pair_terms(i, j))
            cross.xy = t.xy
            if t.norms is not None:
                cross.rx, cross.qy, cross.sum_qr = t.norms.rx, t.norms.qy, t.norms.sum_qr
        for i, t in enumerate(owns):
            self._set_own(i, t, "x")
        self.n += other.n

    def _set_own(self, i: int, t: LinearTerms, side: str) -> None:
        """Layer i's own moments from the x (or y) side of terms ``t``."""
        o, x = self.own[i], side == "x"
        self.shift[i] = t.shift_x if x else t.shift_y
        self.scale[i] = t.scale_x if x else t.scale_y
        self.eps[i] = t.eps
        o.total, o.gram = (t.sum_x, t.xx) if x else (t.sum_y, t.yy)
        if t.norms is not None:
            u = t.norms
            o.sum_q, o.sum_qq, o.qb = (u.sum_q, u.sum_qq, u.qx) if x else (u.sum_r, u.sum_rr, u.ry)

    @classmethod
    def from_pair_terms(cls, terms: dict[Pair, LinearTerms], layers: int, pairs: list[Pair],
                        eps: list[float], debiased: bool) -> _MapSums:
        """The sums of pair terms made apart (e.g. on a GPU): each layer's own moments from the
        first pair it is in, each pair's cross moments re-expressed in those frames."""
        first: dict[int, tuple[LinearTerms, str]] = {}
        for (i, j), t in terms.items():
            first.setdefault(i, (t, "x"))
            first.setdefault(j, (t, "y"))
        widths = [(t.sum_x if side == "x" else t.sum_y).size for t, side in
                  (first[k] for k in range(layers))]
        sums = cls(widths, pairs, [np.zeros(w) for w in widths], [1.0] * layers, eps, debiased)
        for k in range(layers):
            sums._set_own(k, *first[k])
        sums.eps = list(eps)
        sums.n = next(iter(terms.values())).n
        for (i, j) in pairs:
            t = terms[i, j].rescale(sums.scale[i], sums.scale[j]).reshift(sums.shift[i],
                                                                          sums.shift[j])
            c = sums.cross[i, j]
            c.xy = t.xy
            if t.norms is not None:
                c.rx, c.qy, c.sum_qr = t.norms.rx, t.norms.qy, t.norms.sum_qr
        return sums

    def copy(self) -> _MapSums:
        out = self.restarted([s.copy() for s in self.shift])
        out.n, out.eps = self.n, list(self.eps)
        for mine, theirs in zip(out.own, self.own):
            mine.total, mine.gram = theirs.total.copy(), theirs.gram.copy()
            mine.sum_q, mine.sum_qq = theirs.sum_q, theirs.sum_qq
            mine.qb = None if theirs.qb is None else theirs.qb.copy()
        for pair, theirs in self.cross.items():
            mine = out.cross[pair]
            mine.xy, mine.sum_qr = theirs.xy.copy(), theirs.sum_qr
            if theirs.rx is not None:
                mine.rx, mine.qy = theirs.rx.copy(), theirs.qy.copy()
        return out

    # ---- files ---------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"n": np.array(self.n)}
        for k, o in enumerate(self.own):
            out.update({f"own{k}_shift": self.shift[k], f"own{k}_scale": np.array(self.scale[k]),
                        f"own{k}_eps": np.array(self.eps[k]), f"own{k}_total": o.total,
                        f"own{k}_gram": o.gram})
            if o.qb is not None:
                out.update({f"own{k}_sum_q": np.array(o.sum_q),
                            f"own{k}_sum_qq": np.array(o.sum_qq), f"own{k}_qb": o.qb})
        for (i, j), c in self.cross.items():
            out[f"cross{i}_{j}_xy"] = c.xy
            if c.rx is not None:
                out.update({f"cross{i}_{j}_rx": c.rx, f"cross{i}_{j}_qy": c.qy,
                            f"cross{i}_{j}_sum_qr": np.array(c.sum_qr)})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], layout: _Layout, debiased: bool,
                    name: str) -> _MapSums:
        """The sums of a state file, every field's presence, shape and finiteness checked
        against the widths the file's layout gives."""
        widths = layout.widths_a + ([] if layout.symmetric else layout.widths_b)
        n = _checked(arrays, "n", (), name)
        if n != int(n) or n < 1:
            raise ValueError(f"{name!r}: n must be a positive integer; the file holds {n}.")
        sums = cls(widths, layout.pairs, [np.zeros(w) for w in widths], [1.0] * len(widths),
                   [0.0] * len(widths), debiased)
        sums.n = int(n)
        for k, (o, p) in enumerate(zip(sums.own, widths)):
            sums.shift[k] = _checked(arrays, f"own{k}_shift", (p,), name)
            sums.scale[k] = _power_of_two(_checked(arrays, f"own{k}_scale", (), name),
                                          f"own{k}_scale", name)
            sums.eps[k] = _checked(arrays, f"own{k}_eps", (), name)
            o.total = _checked(arrays, f"own{k}_total", (p,), name)
            o.gram = _checked(arrays, f"own{k}_gram", (p, p), name)
            if debiased:
                o.sum_q = _checked(arrays, f"own{k}_sum_q", (), name)
                o.sum_qq = _checked(arrays, f"own{k}_sum_qq", (), name)
                o.qb = _checked(arrays, f"own{k}_qb", (p,), name)
        for (i, j), c in sums.cross.items():
            c.xy = _checked(arrays, f"cross{i}_{j}_xy", (widths[i], widths[j]), name)
            if debiased:
                c.rx = _checked(arrays, f"cross{i}_{j}_rx", (widths[i],), name)
                c.qy = _checked(arrays, f"cross{i}_{j}_qy", (widths[j],), name)
                c.sum_qr = _checked(arrays, f"cross{i}_{j}_sum_qr", (), name)
        return sums


def _power_of_two(value: float, key: str, name: str) -> float:
    if value <= 0 or math.frexp(value)[0] != 0.5:
        raise ValueError(f"{name!r}: {key} must be a positive power of two; the file holds "
                         f"{value!r}.")
    return value


def _feed(base: _MapSums, data: list[np.ndarray], names: list[str], rows: int,
          spread: list[float], *, start: int) -> None:
    """Add the rows of every layer to ``base``, ``rows`` at a time, in chunks of their dtype.

    A chunk of some layer whose mean lies farther than that layer's ``spread`` from the frame's
    shift starts a part about the chunk's own mean (the chunks that follow stay in it while they
    are near), merged into ``base`` exactly: the sums always see data near 0, whatever the order
    of the rows. ``start`` offsets row numbers in errors.
    """
    # chunks in the input dtype (float32 GEMMs for float32 data); every sum is float64
    buffers = [np.empty((min(rows, a.shape[0]), a.shape[1]), gemm_dtype(a.dtype)) for a in data]
    current = base
    for lo in range(0, data[0].shape[0], rows):
        hi = min(lo + rows, data[0].shape[0])
        chunks = _chunks(current, data, buffers, lo, hi)
        sums = [c.sum(axis=0, dtype=np.float64) for c in chunks]
        for s, name in zip(sums, names):
            check_finite_sums(s, name, start + lo, start + hi)
        if any(float(np.max(np.abs(s))) > w * (hi - lo) for s, w in zip(sums, spread)):
            if current is not base:
                base.merge(current)
            current = current.restarted([
                _rounded_shift(shift + s / (hi - lo), a.dtype)
                for shift, s, a in zip(current.shift, sums, data)])
            chunks = _chunks(current, data, buffers, lo, hi)
        current.add(chunks, start + lo, start + hi, names)
    if current is not base:
        base.merge(current)


def _chunks(sums: _MapSums, data: list[np.ndarray], buffers: list[np.ndarray], lo: int,
            hi: int) -> list[np.ndarray]:
    """Rows [lo, hi) of every layer in the frame of ``sums``, in ``buffers`` (input dtype: the
    shift is rounded to it, so the subtraction near the mean is exact)."""
    out = []
    for a, buf, shift, scale in zip(data, buffers, sums.shift, sums.scale):
        b = buf[: hi - lo]
        if scale == 1.0:
            np.subtract(a[lo:hi], shift, out=b)
        else:  # a power of two: the product is exact
            np.multiply(a[lo:hi], scale, out=b)
            b -= shift
        out.append(b)
    return out
