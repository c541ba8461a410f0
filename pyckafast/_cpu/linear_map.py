"""Linear CKA maps: every representation's own moments once, the cross products of many pairs
per pass over the rows.

Each chunk of every representation a pass needs is centred once (float64, shifted by its first
chunk's mean), and its own moments and the cross products of the pass's pairs are accumulated
from it. The cross products of one pass are held together (the sum over its pairs of p_i p_j
float64), so pairs are grouped into passes of at most ``MAX_CROSS_BYTES``: maps of small-p layers
take one pass in all, wide layers one pass per pair (the own moments come with the first pass).
The debiased row-norm terms are folded chunk by chunk (no per-row arrays), so the sums do not
grow with n; :class:`pyckafast.CKAMapState` keeps the same sums across batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._core.inputs import check_finite_sums
from .._core.progress import Progress, progress_reporter
from .._core.terms import LinearTerms, RowNormTerms
from .linear import row_frame

__all__ = ["MAX_CROSS_BYTES", "passes", "map_terms"]

MAX_CROSS_BYTES = 256 * 2**20
# Rows per chunk: the centred chunks of all representations together stay near this size.
_CHUNKS_BYTES = 8 * 2**20


def passes(widths: Sequence[int], pairs: Sequence[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """The pairs grouped into passes whose cross products hold at most ``MAX_CROSS_BYTES`` (a
    pair larger than that on its own is a pass of its own)."""
    groups: list[list[tuple[int, int]]] = [[]]
    held = 0
    for i, j in pairs:
        size = widths[i] * widths[j] * 8
        if groups[-1] and held + size > MAX_CROSS_BYTES:
            groups.append([])
            held = 0
        groups[-1].append((i, j))
        held += size
    return groups


def map_terms(reps: Sequence[np.ndarray], names: Sequence[str], pairs: Sequence[tuple[int, int]],
              debiased: bool, *, progress: Progress = None) -> dict[tuple[int, int], LinearTerms]:
    """The linear terms of every pair (i, j) of ``reps`` (indices into ``reps``); ``progress``
    is reported after every chunk (rows done over all passes). Only the representations in
    ``pairs`` are read (a map whose wide layers go to the tiled pass makes no moments of them)."""
    needed = sorted({i for pair in pairs for i in pair})
    slot = {r: k for k, r in enumerate(needed)}
    reps, names = [reps[r] for r in needed], [names[r] for r in needed]
    n, widths = reps[0].shape[0], [a.shape[1] for a in reps]
    rows = min(n, max(64, _CHUNKS_BYTES // (8 * sum(widths))))
    groups = passes(widths, [(slot[i], slot[j]) for i, j in pairs])
    with progress_reporter(progress, n * len(groups), desc="CKA map", unit="row") as report:
        terms = _map_terms(reps, names, groups, debiased, rows, report)
    return {(needed[a], needed[b]): t for (a, b), t in terms.items()}


def _map_terms(reps, names, groups, debiased, rows, report) -> dict[tuple[int, int], LinearTerms]:
    n, widths = reps[0].shape[0], [a.shape[1] for a in reps]
    # rows * scale - shift: the scale (a power of two) is 1 unless the data are extreme (1e307)
    frames = [row_frame(a, rows) for a in reps]
    shifts, scales = [f.shift for f in frames], [f.scale for f in frames]
    own = [_Own(w, debiased) for w in widths]
    # the chunks in the input dtype: float32 data run float32 GEMMs (the sums stay float64)
    buffers = [np.empty((rows, a.shape[1]), gemm_dtype(a.dtype)) for a in reps]
    terms: dict[tuple[int, int], LinearTerms] = {}
    for k, group in enumerate(groups):
        cross = {pair: _Cross(widths[pair[0]], widths[pair[1]], debiased) for pair in group}
        used = range(len(reps)) if k == 0 else sorted({i for pair in group for i in pair})
        for lo in range(0, n, rows):
            hi = min(lo + rows, n)
            chunks = {i: _chunk(reps[i][lo:hi], scales[i], shifts[i], buffers[i][: hi - lo])
                      for i in used}
            for i, c in chunks.items():
                if k == 0:  # the first pass also makes every representation's own moments
                    own[i].add(c, lo, hi, names[i])
                else:  # later passes only need the chunk's row norms
                    own[i].see(c)
            for (i, j), acc in cross.items():
                acc.add(chunks[i], chunks[j], own[i], own[j])
            if report is not None:
                report(k * n + hi, len(groups) * n)
        moments = [o.moments(s, float(np.finfo(a.dtype).eps), c)
                   for o, s, a, c in zip(own, shifts, reps, scales)]
        terms.update({(i, j): acc.terms(moments[i], moments[j], n)
                      for (i, j), acc in cross.items()})
    return terms


def _chunk(rows: np.ndarray, scale: float, shift: np.ndarray, out: np.ndarray) -> np.ndarray:
    """rows * scale - shift into ``out`` (the product by a power of two is exact)."""
    if scale == 1.0:
        return np.subtract(rows, shift, out=out)
    np.multiply(rows, scale, out=out)
    return np.subtract(out, shift, out=out)


def gemm_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of the chunks and their GEMMs: float32 for float32 data, else float64."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


def _row_norms(c: np.ndarray) -> np.ndarray:
    """Squared row norms of a chunk, summed in float64 (the debiased terms square them again)."""
    return np.einsum("ij,ij->i", c, c, dtype=np.float64)


@dataclass(frozen=True)
class _Moments:
    """Float64 moments of one representation's rows multiplied by ``scale`` (a power of two)
    and shifted by ``shift`` (b = row * scale - shift): the part of the linear terms that no pair
    needs twice."""

    shift: np.ndarray
    total: np.ndarray  # sum_k b_k
    gram: np.ndarray  # sum_k b_k b_k'
    sum_q: float  # sum_k q_k with q_k = |b_k|^2 (debiased only, else 0)
    sum_qq: float  # sum_k q_k^2
    qb: np.ndarray | None  # sum_k q_k b_k (debiased only)
    eps: float
    scale: float = 1.0


class _Own:
    """One representation's running float64 sums; each chunk's finiteness is checked here.

    The debiased row-norm terms are folded chunk by chunk: ``q`` holds only the current chunk's
    squared row norms (read by the crosses of the same chunk), so the sums do not grow with n.
    """

    def __init__(self, p: int, debiased: bool):
        self.total, self.gram = np.zeros(p), np.zeros((p, p))
        self.q: np.ndarray | None = None
        self.sum_q = self.sum_qq = 0.0
        self.qb = np.zeros(p) if debiased else None

    def add(self, c: np.ndarray, lo: int, hi: int, name: str) -> None:
        sums = c.sum(axis=0, dtype=np.float64)
        check_finite_sums(sums, name, lo, hi, c)
        self.total += sums
        self.gram += c.T @ c  # one buffer: SYRK, in the chunk's dtype, added in float64
        if self.qb is not None:
            self.q = _row_norms(c)
            self.sum_q += float(self.q.sum())
            self.sum_qq += float(self.q @ self.q)
            self.qb += self.q @ c

    def see(self, c: np.ndarray) -> None:
        """Take a chunk's squared row norms for the crosses, without adding it (later passes)."""
        if self.qb is not None:
            self.q = _row_norms(c)

    def moments(self, shift: np.ndarray, eps: float, scale: float = 1.0) -> _Moments:
        return _Moments(shift, self.total, self.gram, self.sum_q, self.sum_qq, self.qb, eps, scale)


class _Cross:
    """One pair's running float64 cross products (and debiased cross row-norm terms)."""

    def __init__(self, p1: int, p2: int, debiased: bool):
        self.xy = np.zeros((p1, p2))
        self.rx = np.zeros(p1) if debiased else None  # sum_k r_k a_k (r: the second side's q)
        self.qy = np.zeros(p2) if debiased else None  # sum_k q_k b_k
        self.sum_qr = 0.0

    def add(self, ca: np.ndarray, cb: np.ndarray, oa: _Own, ob: _Own) -> None:
        """Add one chunk of both sides (``oa``, ``ob`` have already taken it: their ``q``)."""
        self.xy += ca.T @ cb
        if self.rx is not None:
            self.rx += ob.q @ ca
            self.qy += oa.q @ cb
            self.sum_qr += float(oa.q @ ob.q)

    def terms(self, ma: _Moments, mb: _Moments, n: int) -> LinearTerms:
        norms = None
        if self.rx is not None:
            norms = RowNormTerms(
                sum_q=ma.sum_q, sum_r=mb.sum_q, sum_qq=ma.sum_qq, sum_rr=mb.sum_qq,
                sum_qr=self.sum_qr, qx=ma.qb, rx=self.rx, qy=self.qy, ry=mb.qb)
        return LinearTerms(n=n, shift_x=ma.shift, shift_y=mb.shift, sum_x=ma.total,
                           sum_y=mb.total, xx=ma.gram, yy=mb.gram, xy=self.xy, norms=norms,
                           eps=max(ma.eps, mb.eps), scale_x=ma.scale, scale_y=mb.scale)
