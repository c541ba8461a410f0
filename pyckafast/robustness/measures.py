"""What a sweep measures: named similarity functions, optionally on a fixed subsample of rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Measure", "linear_measure", "rbf_measure", "default_measures", "subsample_rows"]

#: The RBF bandwidth multipliers of Davari et al. (2023), Fig. 4a: sigma = m x median distance.
PAPER_RBF_MULTIPLIERS = (1.0, 0.5, 0.2)


@dataclass(frozen=True)
class Measure:
    """A named similarity ``fn(x, y) -> float`` between two representations of the same rows.

    ``max_samples``: when n is larger, the sweep evaluates ``fn`` on a fixed random subset of that
    many rows (the same rows of x and y, drawn once per seed). ``exact_linear`` marks the biased
    linear CKA, for which sweeps may use an exact algebraic shortcut (equal to float64 rounding).
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    max_samples: int | None = None
    exact_linear: bool = False


def _linear(x: np.ndarray, y: np.ndarray) -> float:
    from .. import linear_cka

    return linear_cka(x, y)


def linear_measure(name: str = "linear") -> Measure:
    """Biased linear CKA on all rows through :func:`pyckafast.linear_cka` (the exact fast engine)."""
    return Measure(name, _linear, None, exact_linear=True)


@dataclass(frozen=True)
class _RBF:
    threshold: float

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        from .. import rbf_cka  # lazy: provided by the RBF engine

        return float(rbf_cka(x, y, threshold=self.threshold))


def rbf_measure(multiplier: float, max_samples: int | None = None) -> Measure:
    """Biased RBF CKA through :func:`pyckafast.rbf_cka` with sigma = multiplier x median distance.

    Uses Kornblith's bandwidth (``bandwidth="kornblith"``, ``threshold=multiplier``):
    sigma^2 = multiplier^2 x median of the squared pairwise distances.
    """
    return Measure(f"rbf {multiplier:g}", _RBF(float(multiplier)), max_samples)


def default_measures(
    rbf_multipliers: Sequence[float] = PAPER_RBF_MULTIPLIERS, rbf_samples: int | None = 2000,
) -> list[Measure]:
    """Linear CKA on all rows plus RBF CKA at each multiplier on ``rbf_samples`` rows (None: all).

    RBF CKA costs O(n^2 p) per value (about 4e11 flops at n = 20,000, p = 1000), so the default
    evaluates it on a 2,000-row subsample; linear CKA is exact on all rows.
    """
    return [linear_measure()] + [rbf_measure(m, rbf_samples) for m in rbf_multipliers]


def subsample_rows(n: int, max_samples: int | None, seed) -> np.ndarray | None:
    """Sorted indices of ``max_samples`` distinct rows (None when all n rows are used)."""
    if max_samples is None or max_samples >= n:
        return None
    rng = np.random.default_rng([0x5EED, *np.atleast_1d(seed).tolist()])
    return np.sort(rng.choice(n, size=int(max_samples), replace=False))
