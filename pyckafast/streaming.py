"""Streaming linear CKA: a mergeable, resumable state fed batch by batch."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, fields

import numpy as np

from ._core import combine, dispatch, params
from ._core.inputs import Samples, prepare_pair
from ._core.params import Callables, validate_params
from ._core.terms import LinearTerms, RowNormTerms
from ._cpu import linear as cpu_linear

__all__ = ["LinearCKAState", "stream_npy"]

_FORMAT_VERSION = 1


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
    backend : str, default "auto"
        Backend for the per-batch terms, as in :func:`pyckafast.linear_cka` (GPU batches go to
        "cuda").
    precision : {"highest", "tf32"}, default "highest"
        GEMM precision of GPU batches, as in :func:`pyckafast.linear_cka`.

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
    def __init__(self, *, debiased: bool = True, backend: str = "auto",
                 precision: str = "highest") -> None:
        self.debiased = bool(debiased)
        self.backend = backend
        self.precision = precision
        self._terms: LinearTerms | None = None

    @property
    def n(self) -> int:
        """Number of samples seen so far."""
        return 0 if self._terms is None else self._terms.n

    @property
    def terms(self) -> LinearTerms | None:
        """The accumulated float64 terms (None before the first batch)."""
        return self._terms

    def update(self, x, y) -> LinearCKAState:
        """Add a batch of samples (rows of x and the matching rows of y); returns self.

        GPU batches (CuPy, torch CUDA) are reduced to terms on the GPU, Dask batches on their
        workers, host batches on the CPU.
        """
        sx, sy, _ = prepare_pair(x, y, min_n=1)
        self._check_widths(sx.p, sy.p)
        parts = {"cpu": self._cpu_part, "cuda": self._gpu_part, "dask": self._dask_part}
        part = parts[dispatch.place(sx.kind, self.backend)](sx, sy)
        self._terms = part if self._terms is None else self._terms.merge(part)
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

    def _cpu_part(self, x: Samples, y: Samples) -> LinearTerms:
        """The batch's terms in the state's shift (the first batch's first-chunk mean), so that
        merging them is a plain add."""
        cpu_linear.check_cpu_precision(self.precision)
        ops = dispatch.resolve(self.backend, "linear_moments", "cpu")
        xs, ys = x.data, y.data
        rows = cpu_linear.default_chunk_rows(x.p, y.p, max(xs.itemsize, ys.itemsize))
        if self._terms is None:
            shift = (cpu_linear.first_chunk_mean(xs, rows), cpu_linear.first_chunk_mean(ys, rows))
        else:
            shift = (self._terms.shift_x, self._terms.shift_y)
        return cpu_linear.block_terms(xs, ys, *shift, ops, self.debiased, rows, start=self.n)

    def merge(self, other: LinearCKAState) -> LinearCKAState:
        """Fold another state (disjoint samples) into this one; returns self."""
        if not isinstance(other, LinearCKAState):
            raise TypeError(f"other must be a LinearCKAState; got {type(other).__name__}.")
        if other._terms is None:
            return self
        if self._terms is None:
            self._terms, self.debiased = other._terms, other.debiased
            return self
        if self.debiased != other.debiased:
            raise ValueError(
                "cannot merge a state that tracks debiased terms with one that does not "
                f"(self.debiased={self.debiased}, other.debiased={other.debiased})."
            )
        self._terms = self._terms.merge(other._terms)
        return self

    def result(self, *, debiased: bool = False) -> float:
        """Linear CKA of all samples seen (biased, or debiased from unbiased HSIC)."""
        return combine.cka_from_hsic(self.hsic(debiased=debiased))

    def hsic(self, *, debiased: bool = False) -> combine.HSICTriple:
        """HSIC(x, y), HSIC(x, x), HSIC(y, y) of all samples seen."""
        if self._terms is None:
            raise ValueError("the state has seen no samples yet; call update() first.")
        if debiased and not self.debiased:
            raise ValueError("this state was created with debiased=False; it cannot give debiased CKA.")
        return combine.linear_hsic(self._terms, debiased)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state to ``path`` (.npz) so a long run can be resumed with :meth:`load`."""
        if self._terms is None:
            raise ValueError("the state has seen no samples yet; there is nothing to save.")
        arrays = {k: v for k, v in asdict(self._terms).items() if k != "norms"}
        if self._terms.norms is not None:
            arrays.update({f"norms_{k}": v for k, v in asdict(self._terms.norms).items()})
        np.savez(path, format_version=_FORMAT_VERSION, debiased=self.debiased, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str = "auto") -> LinearCKAState:
        """Read a state written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"])
            if version != _FORMAT_VERSION:
                raise ValueError(f"{path}: state format {version} is not supported (expected {_FORMAT_VERSION}).")
            state = cls(debiased=bool(data["debiased"]), backend=backend)
            norms = None
            if state.debiased:
                norms = RowNormTerms(**{f.name: _scalar_or_array(data[f"norms_{f.name}"])
                                        for f in fields(RowNormTerms)})
            plain = {f.name: _scalar_or_array(data[f.name]) for f in fields(LinearTerms) if f.name != "norms"}
            plain["n"] = int(plain["n"])
            state._terms = LinearTerms(norms=norms, **plain)
        return state

    def _check_widths(self, p1: int, p2: int) -> None:
        if self._terms is not None and (self._terms.sum_x.size, self._terms.sum_y.size) != (p1, p2):
            raise ValueError(
                f"batch widths must match earlier batches: expected x with {self._terms.sum_x.size} "
                f"and y with {self._terms.sum_y.size} features; got {p1} and {p2}."
            )


def _scalar_or_array(a: np.ndarray):
    return float(a) if a.ndim == 0 else np.array(a)


@validate_params({"chunk_size": params.ROWS, "debiased": params.BOOLEAN,
                  "backend": params.BACKEND, "progress": [params.OPTIONAL, Callables()]})
def stream_npy(
    x_path: str | os.PathLike, y_path: str | os.PathLike, *, chunk_size: int | None = None,
    debiased: bool = True, backend: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> LinearCKAState:
    """Stream two ``.npy`` files through a :class:`LinearCKAState`, memory-mapped, chunk by chunk.

    Files of any size work: only one chunk of each is in memory at a time. ``progress`` is called
    with (rows done, total rows) after every chunk.

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
    x = _open_npy(x_path, "x_path")
    y = _open_npy(y_path, "y_path")
    sx, sy, n = prepare_pair(x, y, min_n=1, names=("x_path", "y_path"))
    rows = chunk_size or cpu_linear.default_chunk_rows(sx.p, sy.p, max(sx.data.itemsize, sy.data.itemsize))
    state = LinearCKAState(debiased=debiased, backend=backend)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        state.update(sx.data[start:stop], sy.data[start:stop])
        if progress is not None:
            progress(stop, n)
    return state


def _open_npy(path, name: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such file: {os.fspath(path)!r}") from None
    except (ValueError, OSError) as exc:
        raise ValueError(f"{name}: {os.fspath(path)!r} is not a readable .npy array ({exc}).") from None
