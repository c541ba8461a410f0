"""Streaming layer x layer linear CKA: a mergeable, resumable map state fed batch by batch.

The sums are those of :class:`pyckafast.streaming.MomentState` (the one moment state): per
layer its own float64 moments once, per pair of layers only the cross moments; a symmetric map
(one list of layers against itself) holds the pairs i < j only.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from ._core import combine, params, state_files
from ._core.inputs import Samples, check_finite_rows, check_same_n, prepare_list
from ._core.params import validate_params
from ._core.types import ArrayLike, Backend
from .streaming import MomentState

__all__ = ["CKAMapState"]

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
        self._state: MomentState | None = None
        self._layout: _Layout | None = None  # fixed by the first update (or merge, or load)

    # ---- what the state holds ------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Rows seen so far."""
        return 0 if self._state is None else self._state.n

    @property
    def names_a(self) -> list[str] | None:
        return None if self._layout is None else self._layout.names_a

    @property
    def names_b(self) -> list[str] | None:
        return None if self._layout is None else self._layout.names_b

    @property
    def nbytes(self) -> int:
        """Float64 bytes the state holds (moments, shifts)."""
        return 0 if self._state is None else self._state.nbytes

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
        state = self._state or MomentState(layout.widths_a,
                                           None if layout.symmetric else layout.widths_b,
                                           self.debiased)
        state.update(reps, backend=self.backend)  # atomic: a rejected batch changes nothing
        self._state, self._layout = state, layout  # fixed once the first batch is in
        return self

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
        if other._state is None:
            return self
        if self._state is None:
            self.debiased, self._layout = other.debiased, other._layout
            self._state = MomentState(other._state.widths_a,
                                      None if other._state.symmetric else other._state.widths_b,
                                      other.debiased)
            self._state.merge(other._state)
            return self
        if self.debiased != other.debiased:
            raise ValueError(
                "cannot merge a state that tracks debiased terms with one that does not "
                f"(self.debiased={self.debiased}, other.debiased={other.debiased}).")
        self._layout.check_state(other._layout)
        self._layout.adopt_names(other._layout)
        self._state.merge(other._state)
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
        state, layout = self._ready(debiased)
        out = np.empty(layout.shape)
        for i in range(layout.shape[0]):
            for j in range(layout.shape[1]):
                if layout.symmetric and j < i:
                    out[i, j] = out[j, i]
                elif layout.symmetric and i == j:
                    zero = combine.linear_hsic(state.self_terms(i), debiased).zero_x
                    out[i, j] = _undefined(layout.name_a(i)) if zero else 1.0
                else:
                    out[i, j] = combine.cka_from_hsic(
                        combine.linear_hsic(state.pair(i, j), debiased))
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
        state, layout = self._ready(debiased)
        own = [combine.linear_hsic(state.self_terms(k), debiased).unscaled().xx
               for k in range(len(state.widths))]
        la, lb = layout.shape
        hxx = np.array(own[:la])
        hyy = hxx.copy() if layout.symmetric else np.array(own[la:])
        hxy = np.empty((la, lb))
        for i in range(la):
            for j in range(lb):
                if layout.symmetric and j <= i:
                    hxy[i, j] = hxx[i] if i == j else hxy[j, i]
                else:
                    triple = combine.linear_hsic(state.pair(i, j), debiased)
                    hxy[i, j] = triple.unscaled_xy()
        return hxy, hxx, hyy

    def _ready(self, debiased: bool) -> tuple[MomentState, _Layout]:
        if self._state is None:
            raise ValueError("the state has seen no samples yet; call update() first.")
        if debiased and not self.debiased:
            raise ValueError("this state was created with debiased=False; it cannot give "
                             "debiased CKA.")
        return self._state, self._layout

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
        if self._state is None:
            raise ValueError("the state has seen no samples yet; there is nothing to save.")
        state_files.write(path, self.arrays())

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
        if self._state is None:
            raise ValueError("the state has seen no samples yet; it has no arrays.")
        return {"format_version": np.array(state_files.MAP_VERSION),
                "kind": np.array(state_files.MAP_KIND), "debiased": np.array(self.debiased),
                **self._layout.arrays(), **state_files.map_arrays(self._state.sums),
                "spread": np.array(self._state.spread, dtype=np.float64)}

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
        buffer = io.BytesIO()  # checked field by field exactly as a file is (state_files)
        np.savez(buffer, **dict(arrays))
        buffer.seek(0)
        return cls._from_fields(state_files.read_map(buffer, name), backend)

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
        return cls._from_fields(state_files.read_map(path), backend)

    @classmethod
    def _from_fields(cls, f: dict, backend: Backend) -> CKAMapState:
        state = cls(debiased=f["debiased"], backend=backend)
        state._layout = _Layout(f["widths_a"], f["widths_b"], f["symmetric"], f["names_a"],
                                f["names_b"])
        state._state = MomentState(f["widths_a"], None if f["symmetric"] else f["widths_b"],
                                   f["debiased"])
        state._state.sums, state._state.spread = f["sums"], f["spread"]
        return state

    def __repr__(self) -> str:
        if self._layout is None:
            seen = "no samples yet"
        else:
            kind = "symmetric" if self._layout.symmetric else "two-sided"
            seen = f"n={self.n}, {kind} {self._layout.shape[0]}x{self._layout.shape[1]} map"
        return f"CKAMapState({seen}, debiased={self.debiased}, backend={self.backend!r})"


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

    @classmethod
    def of(cls, a: list[Samples], b: list[Samples], symmetric: bool, names_a, names_b) -> _Layout:
        return cls([s.p for s in a], [s.p for s in b], symmetric, names_a, names_b)

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
