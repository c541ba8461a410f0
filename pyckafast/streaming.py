"""Streaming linear CKA: one moment state behind :class:`LinearCKAState` and
:class:`pyckafast.CKAMapState`, fed batch by batch, mergeable and resumable."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from ._core import combine, dispatch, params, state_files
from ._core.inputs import Samples, prepare_pair
from ._core.moments import MomentSums, Moments, pair_terms, self_cross, split
from ._core.params import Callables, validate_params
from ._core.terms import LinearTerms
from ._core.threads import get_num_threads
from ._core.types import ArrayLike, Backend, Precision
from ._core.validation import check_same_n, float_dtype
from ._cpu import linear as cpu_linear, moments as cpu_moments

__all__ = ["LinearCKAState", "stream_npy"]  # MomentState: internal

Pair = tuple[int, int]


class MomentState:
    """Float64 moments per layer and cross moments per pair of a layer map, fed batch by batch.

    ``widths_b=None``: the symmetric map of ``widths_a`` against itself (pairs i < j only);
    else the two-sided map, layers ``widths_a + widths_b``, pairs (i, len(widths_a) + j). Each
    layer's own moments are made once per batch whatever the number of pairs it is in. An
    update is atomic: a batch rejected (NaN or Inf in any chunk, sums that overflow) changes
    nothing. Internal: :class:`LinearCKAState` is its 1 x 1 two-sided case,
    :class:`pyckafast.CKAMapState` the L x M one.
    """

    def __init__(self, widths_a: list[int], widths_b: list[int] | None, debiased: bool):
        self.symmetric = widths_b is None
        self.widths_a = list(widths_a)
        self.widths_b = self.widths_a if widths_b is None else list(widths_b)
        la = len(self.widths_a)
        self.widths = self.widths_a + ([] if self.symmetric else self.widths_b)
        self.pairs: list[Pair] = ([(i, j) for i in range(la) for j in range(i + 1, la)]
                                  if self.symmetric else
                                  [(i, la + j) for i in range(la) for j in range(len(self.widths_b))])
        self.debiased = bool(debiased)
        self.sums: MomentSums | None = None
        self.spread: list[float] = []  # per layer: the largest spread seen (scaled units)

    @property
    def n(self) -> int:
        return 0 if self.sums is None else self.sums.n

    @property
    def nbytes(self) -> int:
        return 0 if self.sums is None else self.sums.nbytes

    def index(self, i: int, j: int) -> Pair:
        """The layer indices of map entry (i, j)."""
        return (i, j) if self.symmetric else (i, len(self.widths_a) + j)

    def pair(self, i: int, j: int) -> LinearTerms:
        """The linear terms of map entry (i, j) (i != j for a symmetric map)."""
        a, b = self.index(i, j)
        if self.symmetric and a > b:
            a, b = b, a
        return self.sums.pair(a, b)

    def own(self, side: str, i: int) -> Moments:
        """Layer i of side "a" or "b"."""
        return self.sums.own[i if side == "a" or self.symmetric else len(self.widths_a) + i]

    def self_terms(self, k: int) -> LinearTerms:
        """The terms of layer k (an index into all layers) against itself."""
        m = self.sums.own[k]
        return pair_terms(m, m, self_cross(m))

    def update(self, reps: list[Samples], *, backend: Backend = "auto",
               precision: Precision = "highest") -> None:
        """Add one batch of every layer (``reps``: the layers of side a, then of side b for a
        two-sided map, the same rows in each; widths already checked)."""
        where = dispatch.place(reps[0].kind, backend)
        spread = self.spread
        if where == "cuda":
            part = self._device_part(reps, backend, precision)
        elif where == "dask" and len(reps) == 2 and self.pairs == [(0, 1)]:
            part = self._dask_part(reps, backend, precision)
        else:
            part, spread = self._host_part(reps, backend, precision)
        if not part.finite():
            _refuse_overflow(reps)
        if self.sums is None:
            self.sums = part
        else:
            self.sums.merge(part)
        self.spread = spread

    def _host_part(self, reps: list[Samples], backend: Backend, precision: Precision):
        cpu_linear.check_cpu_precision(precision)
        ops = dispatch.resolve(backend, "linear_moments", "cpu")
        # in the compute dtype: Dask data (a map's batches) are still float16 or integer here
        data = [np.asarray(s.data, dtype=s.dtype) for s in reps]
        n, itemsize = data[0].shape[0], max(a.itemsize for a in data)
        rows = cpu_moments.chunk_rows(self.widths, itemsize)
        frames, spread = cpu_moments.batch_frames(data, rows, self.sums)
        spread = cpu_moments.widest(self.spread, spread)
        workers = dispatch.linear_workers(ops, n, sum(self.widths), 0, rows, itemsize,
                                          get_num_threads())
        with np.errstate(over="ignore", invalid="ignore"):  # overflowing sums are refused
            parts = cpu_moments.feed(data, [s.name for s in reps], self.pairs, frames, ops,
                                     self.debiased, spread=spread, start=self.n, rows=rows,
                                     workers=workers)
        if not all(p.finite() for p in parts):
            _refuse_overflow(reps)
        for other in parts[1:]:
            parts[0].merge(other)
        return parts[0], spread

    def _device_part(self, reps: list[Samples], backend: Backend, precision: Precision):
        if len(self.pairs) > 1:  # a map: each layer's own moments once
            from ._gpu import moments as gpu_moments

            ops = dispatch.resolve(backend, "linear_terms", "cuda")
            return gpu_moments.layer_sums(ops, reps, self.pairs, self.debiased, start=self.n)
        ops = dispatch.resolve(backend, "linear_terms", "cuda")
        i, j = self.pairs[0] if self.pairs else (0, 0)
        ma, mb, cross = split(ops.linear_terms(reps[i], reps[j], debiased=self.debiased,
                                               chunk_size=None, precision=precision))
        return MomentSums([ma] if i == j else [ma, mb], {} if i == j else {(i, j): cross})

    def _dask_part(self, reps: list[Samples], backend: Backend, precision: Precision):
        from ._dask import producers

        cpu_linear.check_cpu_precision(precision)
        dispatch.resolve(backend, "linear_moments", "cpu")  # fail before any task runs
        ma, mb, cross = split(producers.linear_terms(*reps, debiased=self.debiased,
                                                     backend=backend).compute())
        return MomentSums([ma, mb], {(0, 1): cross})

    def merge(self, other: MomentState) -> None:
        """Add another state of the same layers (disjoint samples); ``other`` is unchanged."""
        if other.sums is None:
            return
        if self.sums is None:
            self.sums = other.sums.copy()
        else:
            self.sums.merge(other.sums)
        self.spread = cpu_moments.widest(self.spread, other.spread)


def _refuse_overflow(reps: list[Samples]) -> None:
    raise ValueError(f"the batch's float64 sums overflow: values of {[s.name for s in reps]} too "
                     "large to square and add; the batch was not added (the state is unchanged).")


class LinearCKAState:
    """Exact linear CKA over data that arrives in batches, in any order, on any workers.

    The state holds float64 moments (O(p1^2 + p2^2 + p1 p2) memory), never the data. States built
    from any split of the samples merge into the state of the union; the result equals the
    one-shot :func:`pyckafast.linear_cka` to float64 rounding for float64 batches (float32
    batches run their GEMMs in float32, so they agree to float32 rounding).

    Parameters
    ----------
    debiased : bool, default True
        Also track the row-norm terms that debiased CKA needs (one extra O(batch x p) pass).
        With False, only ``result(debiased=False)`` is available.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Backend for the per-batch terms, as in :func:`pyckafast.linear_cka` (GPU batches go to
        "cuda").
    precision : {"highest", "tf32"}, default "highest"
        GEMM precision of GPU batches, as in :func:`pyckafast.linear_cka`.

    Attributes
    ----------
    n : int
        Number of samples seen so far.
    terms : LinearTerms or None
        A snapshot of the accumulated float64 terms (None before the first batch).

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(500, 8)), rng.normal(size=(500, 4))
    >>> a, b = pyckafast.LinearCKAState(), pyckafast.LinearCKAState()
    >>> _ = a.update(x[:200], y[:200]); _ = b.update(x[200:], y[200:])
    >>> a.merge(b).n
    500
    >>> abs(a.result() - pyckafast.linear_cka(x, y)) < 1e-12
    True
    """

    @validate_params({"debiased": params.BOOLEAN, "backend": params.BACKEND,
                      "precision": params.PRECISION}, owner="LinearCKAState")
    def __init__(self, *, debiased: bool = True, backend: Backend = "auto",
                 precision: Precision = "highest") -> None:
        self.debiased = bool(debiased)
        self.backend = backend
        self.precision = precision
        self._state: MomentState | None = None  # widths fixed by the first batch

    @property
    def n(self) -> int:
        """Number of samples seen so far."""
        return 0 if self._state is None else self._state.n

    @property
    def terms(self) -> LinearTerms | None:
        """The accumulated float64 terms (None before the first batch): a snapshot, which later
        updates do not change."""
        view = self._view()
        if view is None:
            return None
        t = view.norms
        return dataclasses.replace(view, sum_x=view.sum_x.copy(), sum_y=view.sum_y.copy(),
                                   xx=view.xx.copy(), yy=view.yy.copy(), xy=view.xy.copy(),
                                   norms=None if t is None else dataclasses.replace(
                                       t, qx=t.qx.copy(), rx=t.rx.copy(), qy=t.qy.copy(),
                                       ry=t.ry.copy()))

    def _view(self) -> LinearTerms | None:
        """The terms of all samples seen, sharing the state's buffers (for immediate use only)."""
        return None if self._state is None or self._state.sums is None else self._state.pair(0, 0)

    def update(self, x: ArrayLike, y: ArrayLike) -> LinearCKAState:
        """Add a batch of samples (rows of x and the matching rows of y).

        GPU batches (CuPy, torch CUDA) are reduced to terms on the GPU, Dask batches on their
        workers, host batches on the CPU.

        Parameters
        ----------
        x : array_like, shape (batch, p1)
            Rows of the first representation (any batch size >= 1; widths fixed by the first
            batch).
        y : array_like, shape (batch, p2)
            The matching rows of the second representation.

        Returns
        -------
        LinearCKAState
            This state (updated in place), so that calls chain.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> state = pyckafast.LinearCKAState().update(x[:60], x[:60] ** 2).update(x[60:], x[60:] ** 2)
        >>> state.n
        100
        """
        sx, sy, _ = prepare_pair(x, y, min_n=1)
        self._check_widths(sx.p, sy.p)
        state = self._state or MomentState([sx.p], [sy.p], self.debiased)
        state.update([sx, sy], backend=self.backend, precision=self.precision)
        self._state = state
        return self

    def merge(self, other: LinearCKAState) -> LinearCKAState:
        """Fold another state (disjoint samples) into this one, exactly.

        Parameters
        ----------
        other : LinearCKAState
            A state over samples disjoint from this one's, with the same widths and the same
            ``debiased`` setting (an empty state merges with any). It is not changed.

        Returns
        -------
        LinearCKAState
            This state, now over the union of the samples.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> a = pyckafast.LinearCKAState().update(x[:50], -x[:50])
        >>> b = pyckafast.LinearCKAState().update(x[50:], -x[50:])
        >>> a.merge(b).n
        100
        """
        if not isinstance(other, LinearCKAState):
            raise TypeError(f"other must be a LinearCKAState; got {type(other).__name__}.")
        if other is self:  # the same samples twice are not disjoint: n would silently double
            raise ValueError("other must hold samples disjoint from this state's; got the state itself.")
        if other._state is None or other._state.sums is None:
            return self
        if self._state is None:
            self._state = MomentState(other._state.widths_a, other._state.widths_b,
                                      other.debiased)
            self.debiased = other.debiased
        elif self.debiased != other.debiased:
            raise ValueError(
                "cannot merge a state that tracks debiased terms with one that does not "
                f"(self.debiased={self.debiased}, other.debiased={other.debiased})."
            )
        else:
            self._check_widths(*other._widths())
        self._state.merge(other._state)
        return self

    def result(self, *, debiased: bool = False) -> float:
        """Compute the linear CKA of all samples seen.

        Parameters
        ----------
        debiased : bool, default False
            False: CKA from the biased HSIC; True: debiased CKA from the unbiased HSIC (the
            state must have been created with ``debiased=True``).

        Returns
        -------
        float
            The CKA; nan with a RuntimeWarning when x or y has zero variance.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> state = pyckafast.LinearCKAState().update(x, 2 * x + 1)
        >>> round(state.result(), 12), round(state.result(debiased=True), 12)
        (1.0, 1.0)
        """
        return combine.cka_from_hsic(self._scaled_hsic(debiased))

    def hsic(self, *, debiased: bool = False) -> combine.HSICTriple:
        """Compute HSIC(x, y), HSIC(x, x) and HSIC(y, y) of all samples seen.

        Parameters
        ----------
        debiased : bool, default False
            False: the biased estimator; True: the unbiased one (needs a state created with
            ``debiased=True``).

        Returns
        -------
        HSICTriple
            A named tuple ``(xy, xx, yy, ...)`` of the linear-kernel HSIC values (as
            ``pyckafast._core.combine.HSICTriple``).

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> h = pyckafast.LinearCKAState().update(x, x).hsic()
        >>> bool(np.isclose(h.xy, h.xx))
        True
        """
        return self._scaled_hsic(debiased).unscaled()

    def _scaled_hsic(self, debiased: bool) -> combine.HSICTriple:
        view = self._view()
        if view is None:
            raise ValueError("the state has seen no samples yet; call update() first.")
        if debiased and not self.debiased:
            raise ValueError("this state was created with debiased=False; it cannot give debiased CKA.")
        return combine.linear_hsic(view, debiased)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state to exactly ``path``, so that a long run can be resumed with :meth:`load`.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write: an .npz archive, whatever the suffix.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
        >>> pyckafast.LinearCKAState().update(x, x ** 3).save(path)
        >>> pyckafast.LinearCKAState.load(path).n
        100
        """
        view = self._view()
        if view is None:
            raise ValueError("the state has seen no samples yet; there is nothing to save.")
        state_files.write_linear(path, view, self.debiased)

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: Backend = "auto") -> LinearCKAState:
        """Read a state written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save` (format versions 1 and 2 are read).
        backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
            Backend for the batches added after loading.

        Returns
        -------
        LinearCKAState
            The state, with its samples count, terms and ``debiased`` setting.

        Raises
        ------
        ValueError
            If ``path`` is not a state file of this format (the message says what it holds), or
            if its terms are inconsistent or not finite.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
        >>> pyckafast.LinearCKAState().update(x, np.sin(x)).save(path)
        >>> state = pyckafast.LinearCKAState.load(path).update(x, np.sin(x))
        >>> state.n
        200
        """
        debiased, terms = state_files.read_linear(path)
        state = cls(debiased=debiased, backend=backend)
        state._state = MomentState([terms.sum_x.size], [terms.sum_y.size], debiased)
        ma, mb, cross = split(terms)
        state._state.sums = MomentSums([ma, mb], {(0, 1): cross})
        return state

    def __repr__(self) -> str:
        widths = self._widths()
        if widths is None:
            seen = "no samples yet"
        else:
            seen = f"n={self.n}, p_x={widths[0]}, p_y={widths[1]}"
        return (f"LinearCKAState({seen}, debiased={self.debiased}, backend={self.backend!r}, "
                f"precision={self.precision!r})")

    def _check_widths(self, p1: int, p2: int) -> None:
        widths = self._widths()
        if widths is not None and widths != (p1, p2):
            raise ValueError(
                f"batch widths must match earlier batches: expected x with {widths[0]} "
                f"and y with {widths[1]} features; got {p1} and {p2}."
            )

    def _widths(self) -> tuple[int, int] | None:
        if self._state is None or self._state.sums is None:
            return None
        return self._state.widths_a[0], self._state.widths_b[0]

    def test(self, *, debiased: bool = False):
        """Permutation test of the CKA of all samples seen, from the streamed terms.

        Parameters
        ----------
        debiased : bool, default False
            Test biased or debiased CKA.

        Returns
        -------
        CKATestResult
            As :func:`pyckafast.cka_test` with ``method="moments"``: the two exact moments
            come from the terms (a state created with ``debiased=True``, the default, holds
            the row norms biased CKA's variance needs); the third needs the rows again, so
            the p-value fits a gamma (biased) or normal (debiased) law to the two moments;
            for the third, run :func:`pyckafast.cka_test` on data that can be read again.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(500, 3))
        >>> state = pyckafast.LinearCKAState().update(x, x ** 3)
        >>> state.test().pvalue < 1e-6
        True
        """
        from .significance import moments_from_terms

        if self.terms is None:
            raise ValueError("the state has seen no samples yet; call update() first.")
        return moments_from_terms(self.terms, debiased)



@validate_params({"chunk_size": params.ROWS, "debiased": params.BOOLEAN,
                  "backend": params.BACKEND, "progress": [params.OPTIONAL, Callables()]})
def stream_npy(
    x_path: str | os.PathLike, y_path: str | os.PathLike, *, chunk_size: int | None = None,
    debiased: bool = True, backend: Backend = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> LinearCKAState:
    """Stream two ``.npy`` files through a :class:`LinearCKAState`, memory-mapped, chunk by chunk.

    Files of any size work: only one chunk of each is in memory at a time.

    Parameters
    ----------
    x_path : str or os.PathLike
        A ``.npy`` file of shape (n, p1) or (n,) (any numeric dtype; converted chunk by chunk).
    y_path : str or os.PathLike
        A ``.npy`` file of shape (n, p2) or (n,), the same n samples.
    chunk_size : int, optional
        Rows per chunk (default: about 8 MB of the wider input per chunk).
    debiased : bool, default True
        Also track the terms of debiased CKA (see :class:`LinearCKAState`).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Backend for the per-chunk terms, as in :func:`pyckafast.linear_cka`.
    progress : callable, optional
        Called as ``progress(rows done, total rows)`` after every chunk.

    Returns
    -------
    LinearCKAState
        The state over all n rows: ``.result()`` is the CKA.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> import pyckafast
    >>> d = tempfile.mkdtemp()
    >>> x = np.random.default_rng(0).normal(size=(1000, 4))
    >>> np.save(os.path.join(d, "x.npy"), x); np.save(os.path.join(d, "y.npy"), x ** 2)
    >>> state = pyckafast.stream_npy(os.path.join(d, "x.npy"), os.path.join(d, "y.npy"), chunk_size=300)
    >>> abs(state.result() - pyckafast.linear_cka(x, x ** 2)) < 1e-12
    True
    """
    # The memmaps stay in their stored dtype (int8, float16, big-endian, ...): each chunk is
    # converted on its own by update(), so memory holds one converted chunk, not a whole file.
    x = _open_npy(x_path, "x_path")
    y = _open_npy(y_path, "y_path")
    xs, ys = _as_rows(x, "x_path"), _as_rows(y, "y_path")
    n = check_same_n(xs, ys, 1)
    itemsize = max(float_dtype(a.dtype, name).itemsize for a, name in ((xs, "x_path"), (ys, "y_path")))
    rows = chunk_size or cpu_linear.default_chunk_rows(xs.shape[1], ys.shape[1], itemsize)
    state = LinearCKAState(debiased=debiased, backend=backend)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        state.update(xs[start:stop], ys[start:stop])
        if progress is not None:
            progress(stop, n)
    return state


def _as_rows(a: np.ndarray, name: str) -> np.ndarray:
    """A 2-D (n_samples, n_features) view of a memmap, checked but not converted."""
    float_dtype(a.dtype, name)  # raises for dtypes that hold no real numbers
    view = a[:, None] if a.ndim == 1 else a
    if view.ndim != 2 or view.size == 0:
        raise ValueError(f"{name} must hold a non-empty 1-D or 2-D array (n_samples, "
                         f"n_features); got shape {a.shape}.")
    return view


def _open_npy(path, name: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such file: {os.fspath(path)!r}") from None
    except (ValueError, OSError) as exc:
        raise ValueError(f"{name}: {os.fspath(path)!r} is not a readable .npy array ({exc}).") from None
