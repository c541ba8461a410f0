"""Linear CKA maps in one pass over the rows: each chunk of every representation is centred
once, and every representation's own moments and every needed cross product are accumulated
from it (float64 sums of GEMMs). A pair then costs no pass of its own.

The cross products of all pairs are held at once (sum over pairs of p_i p_j float64): for maps
of small-p layers that is little; beyond ``MAX_CROSS_BYTES`` the caller takes the per-pair
chunked producers of :mod:`pyckafast._cpu.linear` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._core.inputs import check_finite_sums
from .._core.terms import LinearTerms, RowNormTerms
from .linear import OwnMoments, first_chunk_mean

__all__ = ["MAX_CROSS_BYTES", "cross_bytes", "map_terms"]

MAX_CROSS_BYTES = 256 * 2**20
# Rows per chunk: the centred chunks of all representations together stay near this size.
_CHUNKS_BYTES = 8 * 2**20


def cross_bytes(widths: Sequence[int], pairs: Sequence[tuple[int, int]]) -> int:
    """Bytes of float64 cross products the one-pass map holds for these pairs."""
    return sum(widths[i] * widths[j] * 8 for i, j in pairs)


def map_terms(reps: Sequence[np.ndarray], names: Sequence[str], pairs: Sequence[tuple[int, int]],
              debiased: bool) -> dict[tuple[int, int], LinearTerms]:
    """The linear terms of every pair (i, j) of ``reps`` (indices into ``reps``), from one pass
    over the rows."""
    n, widths = reps[0].shape[0], [a.shape[1] for a in reps]
    rows = min(n, max(64, _CHUNKS_BYTES // (8 * sum(widths))))
    shifts = [first_chunk_mean(a, rows) for a in reps]
    own = [_Own(w, n, debiased) for w in widths]
    cross = {pair: _Cross(widths[pair[0]], widths[pair[1]], debiased) for pair in pairs}
    buffers = [np.empty((rows, w)) for w in widths]
    for lo in range(0, n, rows):
        hi = min(lo + rows, n)
        chunks = [np.subtract(a[lo:hi], s, out=b[: hi - lo])
                  for a, s, b in zip(reps, shifts, buffers)]
        for k, (c, name) in enumerate(zip(chunks, names)):
            own[k].add(c, lo, hi, name)
        for (i, j), acc in cross.items():
            acc.add(chunks[i], chunks[j], own[i], own[j], lo, hi)
    eps = [float(np.finfo(a.dtype).eps) for a in reps]
    moments = [o.moments(s, e, name) for o, s, e, name in zip(own, shifts, eps, names)]
    return {(i, j): acc.terms(moments[i], moments[j], n) for (i, j), acc in cross.items()}


class _Own:
    """One representation's running float64 sums (see :class:`~pyckafast._cpu.linear.OwnMoments`)."""

    def __init__(self, p: int, n: int, debiased: bool):
        self.total, self.gram = np.zeros(p), np.zeros((p, p))
        self.q = np.empty(n) if debiased else None
        self.qb = np.zeros(p) if debiased else None

    def add(self, c: np.ndarray, lo: int, hi: int, name: str) -> None:
        sums = c.sum(axis=0)
        check_finite_sums(sums, name, lo, hi)
        self.total += sums
        self.gram += c.T @ c  # one buffer: SYRK
        if self.q is not None:
            self.q[lo:hi] = np.einsum("ij,ij->i", c, c)
            self.qb += self.q[lo:hi] @ c

    def moments(self, shift: np.ndarray, eps: float, name: str) -> OwnMoments:
        return OwnMoments(shift, self.total, self.gram, self.q, self.qb, eps, name)


class _Cross:
    """One pair's running float64 cross products."""

    def __init__(self, p1: int, p2: int, debiased: bool):
        self.xy = np.zeros((p1, p2))
        self.rx = np.zeros(p1) if debiased else None
        self.qy = np.zeros(p2) if debiased else None

    def add(self, ca: np.ndarray, cb: np.ndarray, oa: _Own, ob: _Own, lo: int, hi: int) -> None:
        self.xy += ca.T @ cb
        if self.rx is not None:
            self.rx += ob.q[lo:hi] @ ca
            self.qy += oa.q[lo:hi] @ cb

    def terms(self, ma: OwnMoments, mb: OwnMoments, n: int) -> LinearTerms:
        norms = None
        if self.rx is not None:
            norms = RowNormTerms(
                sum_q=float(ma.q.sum()), sum_r=float(mb.q.sum()), sum_qq=float(ma.q @ ma.q),
                sum_rr=float(mb.q @ mb.q), sum_qr=float(ma.q @ mb.q), qx=ma.qb, rx=self.rx,
                qy=self.qy, ry=mb.qb)
        return LinearTerms(n=n, shift_x=ma.shift, shift_y=mb.shift, sum_x=ma.total,
                           sum_y=mb.total, xx=ma.gram, yy=mb.gram, xy=self.xy, norms=norms,
                           eps=max(ma.eps, mb.eps))
