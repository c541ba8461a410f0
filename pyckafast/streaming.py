"""Streaming linear CKA: a mergeable, resumable state fed batch by batch."""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import asdict, fields

import numpy as np

from ._core import combine, dispatch, params
from ._core.inputs import Samples, prepare_pair
from ._core.params import Callables, validate_params
from ._core.terms import LinearTerms, RowNormTerms
from ._core.types import ArrayLike, Backend, Precision
from ._core.validation import check_same_n, float_dtype
from ._cpu import linear as cpu_linear

__all__ = ["LinearCKAState", "stream_npy"]

# 2 added the power-of-two scales (scale_x, scale_y); version 1 files hold unscaled terms.
_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


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
        self._terms: LinearTerms | None = None  # merged states, GPU batches, far chunks
        self._acc: cpu_linear.Accumulator | None = None  # host batches, added in place

    @property
    def n(self) -> int:
        """Number of samples seen so far."""
        return sum(t.n for t in (self._terms, self._acc) if t is not None)

    @property
    def terms(self) -> LinearTerms | None:
        """The accumulated float64 terms (None before the first batch): a snapshot, which later
        updates do not change."""
        view = self._view()
        if view is None:
            return None
        return dataclasses.replace(view, sum_x=view.sum_x.copy(), sum_y=view.sum_y.copy(),
                                   xx=view.xx.copy(), yy=view.yy.copy(), xy=view.xy.copy())

    def _view(self) -> LinearTerms | None:
        """The terms of all samples seen, sharing the running sums' buffers when it can (for
        immediate use only: the next update changes them)."""
        if self._acc is None or not self._acc.n:
            return self._terms
        running = self._acc.terms()
        return running if self._terms is None else self._terms.merge(running)

    def _fold(self) -> None:
        """Move the running host sums into the merged terms (after which they are no longer
        added to in place)."""
        if self._acc is not None and self._acc.n:
            part = self._acc.terms()
            self._terms = part if self._terms is None else self._terms.merge(part)
        self._acc = None

    def _merge_terms(self, part: LinearTerms) -> None:
        self._terms = part if self._terms is None else self._terms.merge(part)

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
        where = dispatch.place(sx.kind, self.backend)
        if where == "cpu":
            self._add_host_batch(sx, sy)
        else:
            self._merge_terms({"cuda": self._gpu_part, "dask": self._dask_part}[where](sx, sy))
        return self

    def _gpu_part(self, x: Samples, y: Samples) -> LinearTerms:
        ops = dispatch.resolve(self.backend, "linear_terms", "cuda")
        return ops.linear_terms(x, y, debiased=self.debiased, chunk_size=None,
                                precision=self.precision)

    def _dask_part(self, x: Samples, y: Samples) -> LinearTerms:
        from ._dask import producers

        cpu_linear.check_cpu_precision(self.precision)
        dispatch.resolve(self.backend, "linear_moments", "cpu")  # fail before any task runs
        return producers.linear_terms(x, y, debiased=self.debiased, backend=self.backend).compute()

    def _add_host_batch(self, x: Samples, y: Samples) -> None:
        """Add a host batch in place into the running sums (no p x p allocation per batch)."""
        cpu_linear.check_cpu_precision(self.precision)
        ops = dispatch.resolve(self.backend, "linear_moments", "cpu")
        xs, ys = x.data, y.data
        rows = cpu_linear.default_chunk_rows(x.p, y.p, max(xs.itemsize, ys.itemsize))
        fx, fy = cpu_linear.row_frame(xs, rows), cpu_linear.row_frame(ys, rows)
        acc = self._running_sums(xs, ys, ops, fx, fy)
        # Chunks farther from the running shift than this batch's spread are accumulated
        # apart, at their own mean, and merged exactly.
        for part in cpu_linear.accumulate(xs, ys, acc, ops, self.debiased, rows, start=self.n,
                                          spread=(fx.spread, fy.spread)):
            self._merge_terms(part)

    def _running_sums(self, x, y, ops, fx, fy) -> cpu_linear.Accumulator:
        """The accumulator a host batch is added to in place: the running one when it takes
        the batch's GEMM dtype and scale, else a new one (the old is folded into the terms)."""
        wide = np.promote_types(x.dtype, y.dtype)
        dtype, scale = ops.gemm_dtype(wide), (fx.scale, fy.scale)
        if self._acc is None or not self._acc.takes(dtype, scale, x.shape[1], y.shape[1]):
            self._fold()
            t = self._terms
            if t is not None and (t.scale_x, t.scale_y) == scale:  # keep the state's shift
                fx, fy = fx._replace(shift=t.shift_x), fy._replace(shift=t.shift_y)
            self._acc = cpu_linear.Accumulator(x.shape[1], y.shape[1], dtype, wide, fx.shift,
                                               fy.shift, scale)
        return self._acc

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
        theirs = other.terms
        if theirs is None:
            return self
        if self._view() is None:
            self._terms, self.debiased = theirs, other.debiased
            return self
        if self.debiased != other.debiased:
            raise ValueError(
                "cannot merge a state that tracks debiased terms with one that does not "
                f"(self.debiased={self.debiased}, other.debiased={other.debiased})."
            )
        self._fold()
        self._merge_terms(theirs)
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
        arrays = {k: v for k, v in asdict(view).items() if k != "norms"}
        if view.norms is not None:
            arrays.update({f"norms_{k}": v for k, v in asdict(view.norms).items()})
        with open(path, "wb") as f:  # np.savez(path) would append ".npz" to a bare name
            np.savez(f, format_version=_FORMAT_VERSION, debiased=self.debiased, **arrays)

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
        arrays = _read_state_file(path)
        state = cls(debiased=bool(arrays["debiased"]), backend=backend)
        state._terms = _terms_from_arrays(arrays, state.debiased, os.fspath(path))
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
        for t in (self._terms, self._acc):
            if t is not None:
                return t.sum_x.size, t.sum_y.size
        return None

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


def _read_state_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a LinearCKAState file, or a ValueError naming the file and what it is."""
    name = os.fspath(path)
    arrays = read_state_archive(path, "LinearCKAState")
    if "format_version" not in arrays:
        raise ValueError(f"{name!r} is an .npz archive of {sorted(arrays)[:6]}, not a "
                         "LinearCKAState file (no format_version).")
    version = int(arrays["format_version"])
    if version not in _READABLE_VERSIONS:
        raise ValueError(f"{name!r}: state format {version} is not supported (expected one of "
                         f"{_READABLE_VERSIONS}).")
    if version == 1:
        arrays.update(scale_x=np.array(1.0), scale_y=np.array(1.0))
    return arrays


def read_state_archive(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """Every array of the .npz archive at ``path``, or a ValueError saying it is not a ``what``
    file (a state class's name) and what it is instead.

    ``allow_pickle=False``: a state file holds plain arrays only, so a crafted file cannot run
    code when it is loaded.
    """
    name = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{name!r} holds a single .npy array, not a {what} file "
                             f"(an .npz archive written by {what}.save).")
        with data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"path: no such file: {name!r}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{name!r} is not a {what} file (not an .npz archive: "
                         f"{exc}).") from None
    except ValueError as exc:
        if what in str(exc):
            raise
        raise ValueError(f"{name!r} is not a {what} file ({exc}).") from None
    return arrays


def _terms_from_arrays(arrays: dict[str, np.ndarray], debiased: bool, name: str) -> LinearTerms:
    """The LinearTerms of a state file, with every field's presence, shape and finiteness
    checked against the widths (p_x, p_y) the file itself implies."""
    p1, p2 = _field(arrays, "sum_x", name).size, _field(arrays, "sum_y", name).size
    shapes = {"n": (), "eps": (), "shift_x": (p1,), "shift_y": (p2,), "sum_x": (p1,),
              "sum_y": (p2,), "xx": (p1, p1), "yy": (p2, p2), "xy": (p1, p2)}
    plain = {key: _checked(arrays, key, shape, name) for key, shape in shapes.items()}
    n = float(plain["n"])
    if n != int(n) or n < 1:
        raise ValueError(f"{name!r}: n must be a positive integer; the file holds {n}.")
    plain["n"] = int(n)
    for key in ("scale_x", "scale_y"):
        plain[key] = _checked(arrays, key, (), name)
        if plain[key] <= 0 or math.frexp(plain[key])[0] != 0.5:
            raise ValueError(f"{name!r}: {key} must be a positive power of two; the file holds "
                             f"{plain[key]!r}.")
    norms = None
    if debiased:
        norm_shapes = {"qx": (p1,), "rx": (p1,), "qy": (p2,), "ry": (p2,)}
        norms = RowNormTerms(**{f.name: _checked(arrays, f"norms_{f.name}",
                                                 norm_shapes.get(f.name, ()), name)
                                for f in fields(RowNormTerms)})
    return LinearTerms(norms=norms, **plain)


def _field(arrays: dict[str, np.ndarray], key: str, name: str) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"{name!r}: the state file has no {key!r} field (corrupt or from "
                         "another program).")
    return arrays[key]


def _checked(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], name: str):
    a = _field(arrays, key, name)
    if a.shape != shape or a.dtype.kind not in "fiu":
        raise ValueError(f"{name!r}: field {key!r} must be a real array of shape {shape}; the "
                         f"file holds {a.dtype} of shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name!r}: field {key!r} holds NaN or Inf; the state is corrupt.")
    return float(a) if a.ndim == 0 else np.array(a, dtype=np.float64)


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
