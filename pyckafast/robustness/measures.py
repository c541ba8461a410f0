"""What a sweep measures: named similarity functions, optionally on a fixed subsample of rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._core.types import Seed

__all__ = ["Measure", "linear_measure", "rbf_measure", "default_measures", "subsample_rows"]

#: The RBF bandwidth multipliers of Davari et al. (2023), Fig. 4a: sigma = m x median distance.
PAPER_RBF_MULTIPLIERS = (1.0, 0.5, 0.2)


@dataclass(frozen=True)
class Measure:
    """A named similarity ``fn(x, y) -> float`` between two representations of the same rows.

    Parameters
    ----------
    name : str
        The name of the measure in results and plots (e.g. "linear", "rbf 0.5").
    fn : callable
        ``fn(x, y) -> float`` on two (n, p) float64 arrays.
    max_samples : int, optional
        When n is larger, the sweep evaluates ``fn`` on a fixed random subset of that many rows
        (the same rows of x and y, drawn once per seed).
    exact_linear : bool, default False
        Marks the biased linear CKA, for which sweeps may use an exact algebraic shortcut (equal
        to float64 rounding).

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.robustness import Measure
    >>> m = Measure("corr", lambda x, y: float(np.corrcoef(x[:, 0], y[:, 0])[0, 1]))
    >>> m.fn(np.arange(4.0)[:, None], np.arange(4.0)[:, None] * 2)
    1.0
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    max_samples: int | None = None
    exact_linear: bool = False


def _linear(x: np.ndarray, y: np.ndarray) -> float:
    from .. import linear_cka

    return linear_cka(x, y)


def linear_measure(name: str = "linear") -> Measure:
    """Build the biased linear CKA measure, on all rows, through :func:`pyckafast.linear_cka`.

    Parameters
    ----------
    name : str, default "linear"
        The measure's name.

    Returns
    -------
    Measure
        A measure with ``exact_linear=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.robustness import linear_measure
    >>> x = np.random.default_rng(0).normal(size=(50, 3))
    >>> round(linear_measure().fn(x, 2 * x), 12)
    1.0
    """
    return Measure(name, _linear, None, exact_linear=True)


@dataclass(frozen=True)
class _RBF:
    threshold: float

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        from .. import rbf_cka  # lazy: provided by the RBF engine

        return float(rbf_cka(x, y, threshold=self.threshold))


def rbf_measure(multiplier: float, max_samples: int | None = None) -> Measure:
    """Build the biased RBF CKA measure with sigma = multiplier x median distance.

    Evaluates :func:`pyckafast.rbf_cka` with Kornblith's bandwidth (``bandwidth="kornblith"``,
    ``threshold=multiplier``): sigma^2 = multiplier^2 x median of the squared pairwise distances.

    Parameters
    ----------
    multiplier : float
        The bandwidth multiplier (positive).
    max_samples : int, optional
        Rows the sweep evaluates it on (None: all rows).

    Returns
    -------
    Measure
        A measure named ``"rbf {multiplier}"``.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.robustness import rbf_measure
    >>> m = rbf_measure(0.5)
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> m.name, round(m.fn(x, x + 1.0), 10)
    ('rbf 0.5', 1.0)
    """
    return Measure(f"rbf {multiplier:g}", _RBF(float(multiplier)), max_samples)


def default_measures(
    rbf_multipliers: Sequence[float] = PAPER_RBF_MULTIPLIERS, rbf_samples: int | None = 2000,
) -> list[Measure]:
    """Build linear CKA on all rows plus RBF CKA at each multiplier on ``rbf_samples`` rows.

    RBF CKA costs O(n^2 p) per value (about 4e11 flops at n = 20,000, p = 1000), so the default
    evaluates it on a 2,000-row subsample; linear CKA is exact on all rows.

    Parameters
    ----------
    rbf_multipliers : sequence of float, default (1.0, 0.5, 0.2)
        The bandwidth multipliers of Davari et al. (2023), Fig. 4a.
    rbf_samples : int, optional
        Rows of each RBF evaluation (default 2000; None: all rows).

    Returns
    -------
    list of Measure
        The linear measure, then one RBF measure per multiplier.

    Examples
    --------
    >>> from pyckafast.robustness import default_measures
    >>> [m.name for m in default_measures()]
    ['linear', 'rbf 1', 'rbf 0.5', 'rbf 0.2']
    """
    return [linear_measure()] + [rbf_measure(m, rbf_samples) for m in rbf_multipliers]


def subsample_rows(n: int, max_samples: int | None, seed: Seed) -> np.ndarray | None:
    """Draw the sorted indices of ``max_samples`` distinct rows out of n.

    Parameters
    ----------
    n : int
        The number of rows.
    max_samples : int, optional
        How many rows to keep; None (or >= n) keeps them all.
    seed : int or sequence of int
        The seed (the same seed gives the same rows).

    Returns
    -------
    numpy.ndarray or None
        Sorted row indices, or None when all n rows are used.

    Examples
    --------
    >>> from pyckafast.robustness.measures import subsample_rows
    >>> len(subsample_rows(100, 10, seed=0)), subsample_rows(100, None, seed=0)
    (10, None)
    """
    if max_samples is None or max_samples >= n:
        return None
    rng = np.random.default_rng([0x5EED, *np.atleast_1d(seed).tolist()])
    return np.sort(rng.choice(n, size=int(max_samples), replace=False))
