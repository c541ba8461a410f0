"""Producers of linear terms on the CPU: chunked feature-space moments and sample-space Grams.

Drivers here get the resolved backend module (``ops``, with ``linear_moments`` and
``gemm_dtype``), never a backend name: :mod:`pyckafast._core.dispatch` chose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .._core import combine, dispatch
from .._core.combine import is_zero_variance
from .._core.inputs import Samples, check_finite_sums
from .._core.terms import KernelTerms, LinearTerms, RowNormTerms

__all__ = [
    "default_chunk_rows", "block_terms", "feature_terms", "first_chunk_mean", "sample_terms",
    "hsic_triple", "check_cpu_precision", "OwnMoments", "ChunkBuffers", "own_moments",
    "cross_terms",
]

# Rows per chunk: a chunk of one side is about this many bytes, small enough to stay in cache
# between the shift pass and the GEMMs, large enough for BLAS to run at full rate.
_CHUNK_BYTES = 8 << 20


def default_chunk_rows(p1: int, p2: int, itemsize: int) -> int:
    return int(np.clip(_CHUNK_BYTES // (itemsize * max(p1, p2)), 256, 1 << 16))


class _Accumulator:
    """Running float64 sums of chunks that share one shift: in-place adds, no reshift."""

    def __init__(self, p1: int, p2: int, dtype: np.dtype, input_dtype: np.dtype):
        self.n = 0
        self.sum_x, self.sum_y = np.zeros(p1), np.zeros(p2)
        self.xx, self.yy, self.xy = np.zeros((p1, p1)), np.zeros((p2, p2)), np.zeros((p1, p2))
        self.norms = None
        self.eps = float(np.finfo(input_dtype).eps)  # sets the zero-variance threshold
        # GEMM results land here in the input dtype before the float64 add.
        self._gx, self._gy = np.empty((p1, p1), dtype), np.empty((p2, p2), dtype)
        self._gxy = np.empty((p1, p2), dtype)

    def add(self, bx: np.ndarray, by: np.ndarray, sum_x, sum_y, norms) -> None:
        self.n += bx.shape[0]
        self.sum_x += sum_x
        self.sum_y += sum_y
        # a.T @ a on one buffer lets NumPy call SYRK: half the flops of a general GEMM.
        self.xx += np.matmul(bx.T, bx, out=self._gx)
        self.yy += np.matmul(by.T, by, out=self._gy)
        self.xy += np.matmul(bx.T, by, out=self._gxy)
        if norms is not None:
            self.norms = norms if self.norms is None else self.norms + norms

    def terms(self, shift_x: np.ndarray, shift_y: np.ndarray) -> LinearTerms:
        return LinearTerms(
            n=self.n, shift_x=shift_x, shift_y=shift_y, sum_x=self.sum_x, sum_y=self.sum_y,
            xx=self.xx, yy=self.yy, xy=self.xy, norms=self.norms, eps=self.eps,
        )


def block_terms(
    x: np.ndarray, y: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray, ops,
    debiased: bool, rows: int, start: int = 0,
) -> LinearTerms:
    """Exact terms of all rows of x and y, shifted by (shift_x, shift_y), ``rows`` at a time.

    ``ops`` is a backend module with ``linear_moments`` and ``gemm_dtype``. Memory beyond the
    inputs: two chunk buffers and the p x p sums. ``start`` offsets row numbers in errors.
    """
    n, p1, p2 = x.shape[0], x.shape[1], y.shape[1]
    wide = np.promote_types(x.dtype, y.dtype)
    dtype = ops.gemm_dtype(wide)
    bufx, bufy = np.empty((min(rows, n), p1), dtype), np.empty((min(rows, n), p2), dtype)
    acc = _Accumulator(p1, p2, dtype, wide)
    for lo in range(0, n, rows):
        hi = min(lo + rows, n)
        cx, cy = x[lo:hi], y[lo:hi]
        if cx.dtype != cy.dtype:  # kernels take one dtype: upcast this chunk of the narrower side
            cx, cy = cx.astype(wide, copy=False), cy.astype(wide, copy=False)
        bx, by = bufx[: hi - lo], bufy[: hi - lo]
        sum_x, sum_y, norms = ops.linear_moments(cx, cy, shift_x, shift_y, bx, by, debiased)
        check_finite_sums(sum_x, "x", start + lo, start + hi)
        check_finite_sums(sum_y, "y", start + lo, start + hi)
        acc.add(bx, by, sum_x, sum_y, norms)
    return acc.terms(shift_x, shift_y)


def feature_terms(
    x: np.ndarray, y: np.ndarray, *, ops: ModuleType, debiased: bool = False,
    chunk_size: int | None = None, shift: tuple[np.ndarray, np.ndarray] | None = None,
    start: int = 0,
) -> LinearTerms:
    """Exact linear terms of all rows, one pass, memory O(p^2 + chunk_size * p); ``start``
    offsets row numbers in errors (for a block of a larger array)."""
    rows = chunk_size or default_chunk_rows(x.shape[1], y.shape[1], max(x.itemsize, y.itemsize))
    if shift is None:
        shift = first_chunk_mean(x, rows), first_chunk_mean(y, rows)
    return block_terms(x, y, *shift, ops, debiased, rows, start=start)


def check_cpu_precision(precision: str) -> None:
    """"highest" only: CPU BLAS has no TF32 (the spec already allowed "tf32" for GPU data)."""
    if precision != "highest":
        raise ValueError(
            f"precision={precision!r} needs the cuda backend (GPU tensor cores); on the CPU only "
            "'highest' is available."
        )


def hsic_triple(
    x: Samples, y: Samples, *, ops: ModuleType, debiased: bool, chunk_size: int | None = None,
    form: str = "auto", precision: str = "highest",
) -> combine.HSICTriple:
    """The linear HSIC triple of prepared host inputs, in the form :func:`dispatch.linear_form`
    picks: chunked feature-space moments, or the n x n sample-space Grams when p >> n."""
    check_cpu_precision(precision)
    if dispatch.linear_form(form, x.n, x.p, y.p) == "samples":
        terms, zero_x, zero_y = sample_terms(x.data, y.data)
        return combine.kernel_hsic(terms, debiased)._replace(zero_x=zero_x, zero_y=zero_y)
    terms = feature_terms(x.data, y.data, ops=ops, debiased=debiased, chunk_size=chunk_size)
    return combine.linear_hsic(terms, debiased)


def first_chunk_mean(a: np.ndarray, rows: int) -> np.ndarray:
    """Mean of the first chunk, rounded to the input dtype: a shift close to the data's mean.

    Rounding to the input dtype makes x - shift exact for values near the mean (Sterbenz), and
    returns a non-finite shift untouched so that the chunk's finiteness check reports it.
    """
    head = a[: min(rows, a.shape[0])]
    with np.errstate(all="ignore"):
        mean = head.mean(axis=0, dtype=np.float64)
        return np.nan_to_num(mean.astype(a.dtype), nan=0.0, posinf=0.0, neginf=0.0).astype(np.float64)


def sample_terms(
    x: np.ndarray, y: np.ndarray, *, column_block: int = 4096
) -> tuple[KernelTerms, bool, bool]:
    """Kernel terms of the centred linear Grams K = X~X~', L = Y~Y~' (for p >> n), and whether
    x and y have zero variance.

    Columns are centred a block at a time, so no full centred copy of x or y is made.
    """
    k, zero_x = _centred_gram(x, "x", column_block)
    l, zero_y = _centred_gram(y, "y", column_block)
    terms = KernelTerms(
        n=x.shape[0], s_kl=float(np.vdot(k, l)), s_kk=float(np.vdot(k, k)),
        s_ll=float(np.vdot(l, l)), row_k=k.sum(axis=1), row_l=l.sum(axis=1),
        diag_k=np.diagonal(k).copy(), diag_l=np.diagonal(l).copy(),
    )
    return terms, zero_x, zero_y


def _centred_gram(a: np.ndarray, name: str, column_block: int) -> tuple[np.ndarray, bool]:
    n = a.shape[0]
    gram = np.zeros((n, n))
    mean_sq = 0.0
    for start in range(0, a.shape[1], column_block):
        block = a[:, start:start + column_block]
        mean = block.mean(axis=0, dtype=np.float64)
        check_finite_sums(mean, name, 0, n)
        centred = block - mean.astype(block.dtype)
        gram += centred @ centred.T
        mean_sq += float(mean @ mean)
    trace = float(np.trace(gram))
    return gram, is_zero_variance(trace, mean_sq, n, _eps(a.dtype))


def _eps(*dtypes: np.dtype) -> float:
    return max(float(np.finfo(d).eps) for d in dtypes)


# ---- CKA maps: each representation's own moments once, cross terms per pair --------------------
@dataclass(frozen=True)
class OwnMoments:
    """Float64 moments of one representation's rows shifted by ``shift`` (b = row - shift),
    accumulated chunk by chunk: the part of the linear terms that no pair needs twice."""

    shift: np.ndarray
    total: np.ndarray  # sum_k b_k
    gram: np.ndarray  # sum_k b_k b_k'
    q: np.ndarray | None  # |b_k|^2 for every row (debiased only): O(n) floats
    qb: np.ndarray | None  # sum_k q_k b_k
    eps: float
    name: str


class ChunkBuffers:
    """Two reusable float64 chunk buffers (one per side of a pair) for every pair of a CKA map,
    so no pair allocates (and page-faults in) fresh chunks. Float64 whatever the input dtype: a
    representation's Gram is shared by pairs with float32 and float64 partners, and float64 is
    what either pair would run (mixed dtypes upcast)."""

    def __init__(self, n: int, widths: list[int]) -> None:
        width = max(widths)
        self.rows = min(n, default_chunk_rows(width, width, 8))
        self._flat = (np.empty(self.rows * width), np.empty(self.rows * width))

    def shifted(self, side: int, a: np.ndarray, lo: int, hi: int, shift: np.ndarray) -> np.ndarray:
        """Rows lo..hi of ``a`` minus ``shift``, in side ``side``'s buffer (C-contiguous)."""
        out = self._flat[side][: (hi - lo) * a.shape[1]].reshape(hi - lo, a.shape[1])
        return np.subtract(a[lo:hi], shift, out=out)


def own_moments(a: np.ndarray, name: str, debiased: bool, buffers: ChunkBuffers) -> OwnMoments:
    """The moments of ``a`` that every pair of a CKA map shares (one SYRK per chunk); each
    chunk's finiteness is checked here, once per representation."""
    shift = first_chunk_mean(a, buffers.rows)
    total, gram = np.zeros(a.shape[1]), np.zeros((a.shape[1], a.shape[1]))
    q = np.empty(a.shape[0]) if debiased else None
    qb = np.zeros(a.shape[1]) if debiased else None
    for lo in range(0, a.shape[0], buffers.rows):
        hi = min(lo + buffers.rows, a.shape[0])
        b = buffers.shifted(0, a, lo, hi, shift)
        sums = b.sum(axis=0)
        check_finite_sums(sums, name, lo, hi)
        total += sums
        gram += b.T @ b
        if debiased:
            q[lo:hi] = np.einsum("ij,ij->i", b, b)
            qb += q[lo:hi] @ b
    return OwnMoments(shift, total, gram, q, qb, float(np.finfo(a.dtype).eps), name)


def cross_terms(a: np.ndarray, b: np.ndarray, ma: OwnMoments, mb: OwnMoments,
                buffers: ChunkBuffers) -> LinearTerms:
    """The linear terms of the pair (a, b) from their own moments plus the cross products,
    accumulated chunk by chunk in float64 (no centred copy of either)."""
    xy = np.zeros((a.shape[1], b.shape[1]))
    debiased = ma.q is not None and mb.q is not None
    rx, qy = np.zeros(a.shape[1]), np.zeros(b.shape[1])
    for lo in range(0, a.shape[0], buffers.rows):
        hi = min(lo + buffers.rows, a.shape[0])
        ca = buffers.shifted(0, a, lo, hi, ma.shift)
        cb = buffers.shifted(1, b, lo, hi, mb.shift)
        xy += ca.T @ cb
        if debiased:
            rx += mb.q[lo:hi] @ ca
            qy += ma.q[lo:hi] @ cb
    norms = None
    if debiased:
        norms = RowNormTerms(
            sum_q=float(ma.q.sum()), sum_r=float(mb.q.sum()), sum_qq=float(ma.q @ ma.q),
            sum_rr=float(mb.q @ mb.q), sum_qr=float(ma.q @ mb.q), qx=ma.qb, rx=rx, qy=qy,
            ry=mb.qb,
        )
    return LinearTerms(n=a.shape[0], shift_x=ma.shift, shift_y=mb.shift, sum_x=ma.total,
                       sum_y=mb.total, xx=ma.gram, yy=mb.gram, xy=xy, norms=norms,
                       eps=max(ma.eps, mb.eps))
