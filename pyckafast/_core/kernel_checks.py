"""Warnings about RBF bandwidths that make a kernel (numerically) the identity or all ones.

Decided from the pass's own sums, with no extra pass over pairs. The RBF producers return the
off-diagonal sums of E = 2^m K - c with the constant diagonal d = 2^m - c beside them
(:mod:`pyckafast._core.rbf_entry`; ``log2_k`` = -m), so with P = n (n - 1) off-diagonal entries

* the mean off-diagonal entry of K is ``(sum(row_k) / P + c) / 2^m`` (a kernel that is the
  identity gives 0 up to rounding), and
* the mean square of K - 1 = (E - d) / 2^m is ``(s_kk - 2 d sum(row_k) + d^2 P) / (P 4^m)``
  (in the wide-bandwidth regime m = 0 and d = 1 - c is small: no cancellation).

A kernel whose off-diagonal entries average below eps is numerically the identity to the biased
estimator (both kernels the identity: CKA is 1 for any inputs; the unbiased one ignores the
diagonal and rests on the tiny entries alone); one whose entries all lie within eps of 1
has a bandwidth far above every distance (pyckafast keeps K - 1 exact there, so the value is the
wide-bandwidth limit, but the bandwidth was most likely not meant).
"""

from __future__ import annotations

import math
import os
import sys
import warnings

from .terms import KernelTerms

__all__ = ["kernel_degeneracy", "warn_degenerate_kernels"]


def kernel_degeneracy(row_sums, s_sq: float, n: int, eps: float, *, diag: float = 0.0,
                      log2: int = 0) -> str | None:
    """"identity", "ones" or None for the kernel whose off-diagonal entries E = 2^m K - c have
    row sums ``row_sums`` and sum of squares ``s_sq``, with diagonal ``diag`` = 2^m - c and
    ``log2`` = -m (the K - 1 form: diag 0, log2 0)."""
    pairs = n * (n - 1)
    if pairs == 0:
        return None
    scale = math.ldexp(1.0, -log2)  # 2^m
    total = math.fsum(map(float, row_sums))
    ms_k1 = (s_sq - 2.0 * diag * total + diag * diag * pairs) / (pairs * scale * scale)
    if ms_k1 == 0.0:  # every entry of K is 1: every sample the same point (zero variance)
        return None
    if (total / pairs + scale - diag) / scale <= eps:  # the mean off-diagonal K
        return "identity"
    if ms_k1 <= eps * eps:
        return "ones"
    return None


def warn_degenerate_kernels(terms: KernelTerms, names: tuple[str, str] = ("x", "y"), *,
                            debiased: bool = False) -> None:
    """A RuntimeWarning per RBF kernel of ``terms`` (entries 2^m K - c, see the module
    docstring) that is numerically the identity (biased estimator only: the unbiased one never
    sees the diagonal, and its tiny off-diagonal entries are computed to full relative
    precision) or all ones."""
    for name, rows, s_sq, diag, log2 in (
            (names[0], terms.row_k, terms.s_kk, terms.const_diag_k, terms.log2_k),
            (names[1], terms.row_l, terms.s_ll, terms.const_diag_l, terms.log2_l)):
        kind = kernel_degeneracy(rows, s_sq, terms.n, terms.eps, diag=diag, log2=log2)
        if kind == "identity" and not debiased:
            warnings.warn(
                f"the RBF kernel of {name} is numerically the identity (its off-diagonal entries "
                f"average below eps = {terms.eps:.3g} of the diagonal): sigma is far below the "
                "distances between the samples, and biased CKA no longer depends on the data "
                "(1.0 when both kernels are the identity). Use a larger sigma, the median rule "
                "(threshold=...), or debiased=True, which ignores the diagonal.",
                RuntimeWarning, stacklevel=_caller_level())
        elif kind == "ones":
            warnings.warn(
                f"the RBF kernel of {name} is numerically all ones (every entry within eps = "
                f"{terms.eps:.3g} of 1): sigma is far above the distances between the samples. "
                "The value is the wide-bandwidth limit of CKA; use a smaller sigma, or the "
                "median rule (threshold=...).", RuntimeWarning, stacklevel=_caller_level())


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside pyckafast (the user's call), whichever
    producer path led here."""
    frame, level = sys._getframe(2), 2  # 1: warn_degenerate_kernels itself
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
