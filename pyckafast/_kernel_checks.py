"""Warnings about RBF bandwidths that make a kernel (numerically) the identity or all ones.

Decided from the pass's own sums, with no extra pass over pairs: the RBF producers return the
terms of E = K - 1 (:mod:`pyckafast._cpu.rbf`), so

* the mean off-diagonal entry of K is ``1 + sum(row_k) / (n (n - 1))`` (E is -1 exactly where K
  underflowed, so a kernel that is the identity gives exactly 0 here), and
* the root mean square of K - 1 is ``sqrt(s_kk / (n (n - 1)))``.

A kernel whose off-diagonal entries average below eps carries no information about the data
(both kernels the identity: CKA is 1 for any inputs); one whose entries all lie within eps of 1
has a bandwidth far above every distance (pyckafast keeps K - 1 exact there, so the value is the
wide-bandwidth limit, but the bandwidth was most likely not meant).
"""

from __future__ import annotations

import math
import os
import sys
import warnings

from ._core.terms import KernelTerms

__all__ = ["kernel_degeneracy", "warn_degenerate_kernels"]


def kernel_degeneracy(row_sums, s_sq: float, n: int, eps: float) -> str | None:
    """"identity", "ones" or None for the kernel whose K - 1 has row sums ``row_sums`` and sum
    of squares ``s_sq`` over all n^2 entries (diagonal 0)."""
    pairs = n * (n - 1)
    if pairs == 0 or s_sq == 0.0:  # s_sq == 0: every sample the same point (zero variance)
        return None
    mean_k = 1.0 + math.fsum(map(float, row_sums)) / pairs
    if mean_k <= eps:
        return "identity"
    if s_sq <= pairs * eps * eps:
        return "ones"
    return None


def warn_degenerate_kernels(terms: KernelTerms, names: tuple[str, str] = ("x", "y")) -> None:
    """A RuntimeWarning per RBF kernel of ``terms`` (of E = K - 1) that is numerically the
    identity or all ones."""
    for name, rows, s_sq in ((names[0], terms.row_k, terms.s_kk),
                             (names[1], terms.row_l, terms.s_ll)):
        kind = kernel_degeneracy(rows, s_sq, terms.n, terms.eps)
        if kind == "identity":
            warnings.warn(
                f"the RBF kernel of {name} is numerically the identity (its off-diagonal entries "
                f"average below eps = {terms.eps:.3g}): sigma is far below the distances between "
                "the samples, and CKA no longer depends on the data (1.0 when both kernels are "
                "the identity). Use a larger sigma, or the median rule (threshold=...).",
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
