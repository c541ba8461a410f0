"""Host passes of the significance test: the third-moment sums of linear kernels from feature
space, and the numerators of explicitly permuted samples.

Third moment. Each side's permuted matrix is written ``A = Z M Z' - E``: Z holds the centred
rows (and, for debiased CKA, the columns 1 and u = a / (n-2) of the U-centring, a_i = |x~_i|^2),
M is a small symmetric matrix and E a diagonal. Every invariant then follows from r x r sums
(r = p, or p + 2), a few per-row sums, and the third-order moment tensor ``sum_i z_i (x) z_i (x)
z_i`` for ``sum_ij (z_i' M z_j)^3``: O(n r^3) time, O(r^3) memory, no n x n matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from .._core.permutation_moments import Invariants

__all__ = ["linear_third_invariants", "tensor_flops", "centred_chunks", "linear_numerators"]

_TENSOR_ROWS = 1024  # rows per chunk of the tensor pass (chunk x r^2 float64 scratch)


def tensor_flops(n: int, p: int, debiased: bool) -> float:
    """Flops of the third-moment tensor of one side."""
    r = p + (2 if debiased else 0)
    return 2.0 * n * r ** 3


def centred_chunks(a: np.ndarray, centre: np.ndarray, scale: float,
                   rows: int) -> Iterator[np.ndarray]:
    """Float64 chunks of ``a * scale - centre`` (the frame the linear terms were summed in)."""
    for lo in range(0, a.shape[0], rows):
        yield np.asarray(a[lo:lo + rows], dtype=np.float64) * scale - centre


def linear_third_invariants(a: np.ndarray, centre: np.ndarray, scale: float, base: Invariants,
                            debiased: bool, report: Callable[[int], None] | None = None
                            ) -> Invariants:
    """All eight invariants of one side (``base`` holds the two-moment ones from the terms)."""
    n, p = a.shape
    sum_a = base.trace if not debiased else None
    acc = _Sums(p + (2 if debiased else 0))
    if debiased:
        # sum_i a_i of the centred rows: the trace of X~'X~, needed before the pass for c0.
        sum_a = math.fsum(float(np.einsum("ij,ij->", c, c))
                          for c in centred_chunks(a, centre, scale, 8 * _TENSOR_ROWS))
        c0 = -sum_a / ((n - 1) * (n - 2))
        m_small = np.array([[c0, 1.0], [1.0, 0.0]])
    mean_d = 0.0 if debiased else sum_a / n
    for chunk in centred_chunks(a, centre, scale, _TENSOR_ROWS):
        sq = np.einsum("ij,ij->i", chunk, chunk)
        if debiased:
            u = sq / (n - 2)
            z = np.column_stack([chunk, np.ones(len(chunk)), u])
            ell = sq + 2 * u + c0
            e, d = ell, np.zeros_like(ell)
        else:
            z, ell, e, d = chunk, sq, np.zeros_like(sq), sq
        acc.add(z, ell, e, d, mean_d)
        if report is not None:
            report(len(chunk))
    m = np.eye(acc.r)
    if debiased:
        m[p:, p:] = m_small
    return acc.invariants(m, base)


class _Sums:
    """Running sums of one side's pass (see the module notes)."""

    def __init__(self, r: int):
        self.r = r
        self.q = np.zeros((r, r))
        self.we = np.zeros((r, r))
        self.wd = np.zeros((r, r))
        self.zd = np.zeros(r)
        self.tensor = np.zeros((r * r, r))
        self.scalars: dict[str, list[float]] = {k: [] for k in (
            "d", "d3c", "el", "e2", "e2l", "e3", "del", "de2", "ed2", "l3")}

    def add(self, z, ell, e, d, mean_d) -> None:
        self.q += z.T @ z
        self.we += z.T @ (e[:, None] * z)
        self.wd += z.T @ (d[:, None] * z)
        self.zd += z.T @ d
        kron = (z[:, :, None] * z[:, None, :]).reshape(len(z), -1)
        self.tensor += kron.T @ z
        dc = d - mean_d
        for key, v in (("d", d), ("d3c", dc ** 3), ("el", e * ell), ("e2", e * e),
                       ("e2l", e * e * ell), ("e3", e ** 3), ("del", d * e * ell),
                       ("de2", d * e * e), ("ed2", e * d * d), ("l3", ell ** 3)):
            self.scalars[key].append(float(v.sum()))

    def invariants(self, m: np.ndarray, base: Invariants) -> Invariants:
        s = {k: math.fsum(v) for k, v in self.scalars.items()}
        mq = m @ self.q
        mqm = mq @ m
        r = self.r
        t = self.tensor.reshape(r, r, r)
        tm = np.einsum("abc,ai,bj,ck->ijk", t, m, m, m, optimize=True)
        return Invariants(
            n=base.n, trace=base.trace, frob=base.frob, diag2c=base.diag2c,
            trace3=math.fsum((float(np.trace(mq @ mq @ mq)), -3 * float(np.vdot(mqm, self.we)),
                              3 * s["e2l"], -s["e3"])),
            diag3c=s["d3c"],
            cube=math.fsum((float(np.vdot(t, tm)), -s["l3"], s["d3c"] + _cube_shift(s, base))),
            diag_sq=math.fsum((float(np.vdot(mqm, self.wd)), -2 * s["del"], s["de2"])),
            diag_form=float(self.zd @ m @ self.zd) - s["ed2"],
        )


def _cube_shift(s: dict[str, float], base: Invariants) -> float:
    """sum d_i^3 - sum (d_i - mean d)^3 (the raw cube of the diagonal from the central one)."""
    n = base.n
    dbar = s["d"] / n
    # sum d^3 = sum dc^3 + 3 dbar sum dc^2 + n dbar^3 (sum dc = 0)
    return 3 * dbar * base.diag2c + n * dbar ** 3


def linear_numerators(xc: np.ndarray, yc: np.ndarray, perms: np.ndarray, *,
                      norms_x: np.ndarray | None = None, norms_y: np.ndarray | None = None,
                      debiased_coef: float = 0.0, rows: int = 16384) -> np.ndarray:
    """``|X~' Y~[perm]|^2 - c sum_i a_i b_perm(i)`` for each row of ``perms`` (B x n).

    Per permutation: the rows of y gathered into a reused buffer, then GEMMs in the dtype of
    the centred inputs over row chunks, summed in float64. Permutations are independent, so
    they run on the thread budget, one BLAS thread each: the gathers (as costly as the GEMMs,
    and single-threaded in NumPy) then run in parallel too. Each result depends only on its
    permutation, never on the number of threads."""
    from .._core.threads import get_num_threads, single_threaded_blas

    n, p = xc.shape
    out = np.empty(len(perms))
    workers = max(1, min(get_num_threads(), len(perms)))

    def work(start: int) -> None:
        buf = np.empty_like(yc)
        for b in range(start, len(perms), workers):
            np.take(yc, perms[b], axis=0, out=buf)
            cross = np.zeros((p, yc.shape[1]))
            for r0 in range(0, n, rows):
                cross += xc[r0:r0 + rows].T @ buf[r0:r0 + rows]
            out[b] = float(np.vdot(cross, cross))
            if debiased_coef:
                out[b] -= debiased_coef * float(norms_y[perms[b]] @ norms_x)

    if workers == 1:
        work(0)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(workers)))
    return out
