"""Sweeps of Davari et al. (2023): a transformation over magnitudes and seeds, CKA measured.

Each sweep returns a :class:`SweepResult`; ``progress`` (if given) is called with 1 after every
evaluated point, e.g. ``tqdm.update``. All CKA values are biased (Kornblith et al. 2019) CKA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from .. import theory, transforms
from .measures import _RBF, Measure, default_measures, subsample_rows
from .results import SweepResult

__all__ = [
    "PAPER_C", "PAPER_GRID", "translation_sweep", "invertible_sweep", "outlier_sweep",
    "class_translation_sweep", "subset_translation_sweep",
]

PAPER_C = (1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0)
PAPER_GRID = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 500.0, 1e3, 5e3)

Progress = Callable[[int], object] | None


def _measure_all(result, measures, x, y, rows, idx, medians: _Medians | None = None) -> None:
    point = _Medians() if medians is None else medians.point()
    for m in measures:
        r = rows[m.name]
        a, b = (x, y) if r is None else (x[r], y[r])
        value = point.rbf_cka(m.fn, a, b, r) if isinstance(m.fn, _RBF) else None
        result.new_values(m.name)[idx] = m.fn(a, b) if value is None else value


class _Medians:
    """Median squared distances of a sweep, computed once and shared: x's per row subset for the
    whole seed (x does not change along the sweep), y's per point and row subset (shared by the
    RBF measures of every multiplier). An RBF measure with Kornblith's bandwidth is then
    rbf_cka with sigma = threshold * sqrt(median) for both sides, the same gamma
    1 / (2 threshold^2 median) its own median would give (to float64 rounding)."""

    def __init__(self, x_medians: dict | None = None):
        self.x = {} if x_medians is None else x_medians  # kept across the points of a seed
        self.y: dict = {}

    def point(self) -> _Medians:
        """The cache for one sweep point: x's medians kept, y's fresh."""
        return _Medians(self.x)

    @staticmethod
    def _key(r) -> object:
        return None if r is None else (r.size, hash(np.asarray(r).tobytes()))

    def _median(self, cache: dict, a: np.ndarray, r) -> float:
        key = self._key(r)
        if key not in cache:
            from .._core.bandwidth import median_sq_distance

            cache[key] = median_sq_distance(np.asarray(a), "kornblith")
        return cache[key]

    def rbf_cka(self, fn: _RBF, a: np.ndarray, b: np.ndarray, r) -> float | None:
        """The measure's value from the shared medians; None where a median is not a positive
        finite number (the measure itself then says what is wrong)."""
        mx, my = self._median(self.x, a, r), self._median(self.y, b, r)
        if not (np.isfinite(mx) and np.isfinite(my) and mx > 0 and my > 0):
            return None
        from .. import rbf_cka

        t = fn.threshold
        return float(rbf_cka(a, b, sigma=(t * np.sqrt(mx), t * np.sqrt(my))))


def _rows(measures: Sequence[Measure], n: int, seed) -> dict:
    return {m.name: subsample_rows(n, m.max_samples, seed) for m in measures}


def subset_translation_sweep(
    setup: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    magnitudes: Sequence[float], seeds: Sequence[int], *, experiment: str = "translation",
    measures: Sequence[Measure] | None = None, theory_curve: bool = True,
    extra: dict[str, Callable[[np.ndarray], float]] | None = None, params: dict | None = None,
    progress: Progress = None,
) -> SweepResult:
    """Translate a subset by c v for every c and seed, measuring CKA with the original.

    Measures CKA(x, translated x) with each measure, adds the exact closed form "theory"
    (:func:`pyckafast.theory.translation_curve`) and the per-seed Theorem 1 "limit", and
    evaluates ``extra[name](translated x)`` (e.g. a classifier's accuracy).

    Parameters
    ----------
    setup : callable
        ``setup(seed) -> (x, mask, v)``: the data (n, p), the translated rows (bool, n) and the
        direction (p,) of one seed.
    magnitudes : sequence of float
        The translation magnitudes c.
    seeds : sequence of int
        The seeds passed to ``setup`` (and to the measures' row subsamples).
    experiment : str, default "translation"
        The name recorded in the result.
    measures : sequence of Measure, optional
        What to measure between x and the transformed x (default: :func:`default_measures`).
    theory_curve : bool, default True
        Also record the exact closed form "theory" and the per-seed Theorem 1 "limit".
    extra : dict of str to callable, optional
        More values per point: ``extra[name](translated x) -> float``.
    params : dict, optional
        Settings recorded in the result (JSON-serialisable).
    progress : callable, optional
        Called with 1 after every evaluated point (e.g. ``tqdm.update``).

    Returns
    -------
    SweepResult
        Axes ("seed", "c"); one array per measure, plus "theory" and the extras.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.robustness import linear_measure, subset_translation_sweep
    >>> def setup(seed):
    ...     x = np.random.default_rng(seed).normal(size=(60, 3))
    ...     return x, np.arange(60) < 20, np.ones(3)
    >>> r = subset_translation_sweep(setup, [0.0, 10.0], [0, 1], measures=[linear_measure()])
    >>> r.shape, bool(np.allclose(r.values["linear"], r.values["theory"]))
    ((2, 2), True)
    """
    measures = default_measures() if measures is None else list(measures)
    result = SweepResult(experiment, {"seed": np.asarray(seeds), "c": np.asarray(magnitudes, float)},
                         params=dict(params or {}))
    limits = np.full(len(seeds), np.nan)
    for i, seed in enumerate(seeds):
        x, mask, v = setup(seed)
        if theory_curve:
            mom = theory.subset_moments(x, mask)
            result.new_values("theory")[i] = theory.curve_from_moments(mom, v, result.axes["c"])
            limits[i] = theory.limit_from_moments(mom)
        rows = _rows(measures, x.shape[0], seed)
        medians = _Medians()  # x is this seed's for every c: its medians are computed once
        for j, c in enumerate(result.axes["c"]):
            y = transforms.translate_subset(x, mask, v, c)
            _measure_all(result, measures, x, y, rows, (i, j), medians)
            for name, fn in (extra or {}).items():
                result.new_values(name)[i, j] = fn(y)
            if progress is not None:
                progress(1)
    if theory_curve:
        result.per_seed["limit"] = limits
    return result


def translation_sweep(
    magnitudes: Sequence[float] = PAPER_C, seeds: Sequence[int] = range(10), *,
    n_per_cube: int = 10_000, dim: int = 1000, offset: float = 1.1,
    measures: Sequence[Measure] | None = None, theory_curve: bool = True, progress: Progress = None,
) -> SweepResult:
    """Sweep Fig. 4a: translate the second of :func:`~pyckafast.transforms.two_cubes` by c d.

    d is a random unit Gaussian direction per seed.

    Parameters
    ----------
    magnitudes : sequence of float, default PAPER_C
        The translation magnitudes c (the paper's 1, 5, ..., 50).
    seeds : sequence of int, default range(10)
        One cube draw and direction per seed.
    n_per_cube : int, default 10000
        Points per cube.
    dim : int, default 1000
        Dimension of the cubes.
    offset : float, default 1.1
        Distance of the second cube along the first axis.
    measures : sequence of Measure, optional
        What to measure between x and the transformed x (default: :func:`default_measures`).
    theory_curve : bool, default True
        Also record the exact closed form "theory" and the per-seed Theorem 1 "limit".
    progress : callable, optional
        Called with 1 after every evaluated point (e.g. ``tqdm.update``).

    Returns
    -------
    SweepResult
        Axes ("seed", "c"), experiment "translation".

    Examples
    --------
    >>> from pyckafast.robustness import translation_sweep, linear_measure
    >>> r = translation_sweep([1.0, 50.0], [0], n_per_cube=200, dim=10, measures=[linear_measure()])
    >>> bool(abs(r.values["linear"] - r.values["theory"]).max() < 1e-10)
    True
    """
    def setup(seed):
        x, labels = transforms.two_cubes(n_per_cube, dim, offset, seed=seed)
        return x, labels == 1, transforms.random_direction(dim, seed=[seed, 1])

    params = {"n_per_cube": n_per_cube, "dim": dim, "offset": offset}
    return subset_translation_sweep(setup, magnitudes, list(seeds), measures=measures,
                                    theory_curve=theory_curve, params=params, progress=progress)


def outlier_sweep(
    magnitudes: Sequence[float] = tuple(np.geomspace(1.0, 1e4, 13)), seeds: Sequence[int] = range(10),
    *, n_per_cube: int = 1000, dim: int = 100, measures: Sequence[Measure] | None = None,
    theory_curve: bool = True, progress: Progress = None,
) -> SweepResult:
    """Sweep a single outlier: move one random point of the two cubes by c d (d random unit).

    Parameters
    ----------
    magnitudes : sequence of float, default 13 values from 1 to 1e4
        The magnitudes c of the move.
    seeds : sequence of int, default range(10)
        One cube draw, row and direction per seed.
    n_per_cube : int, default 1000
        Points per cube.
    dim : int, default 100
        Dimension of the cubes.
    measures : sequence of Measure, optional
        What to measure between x and the transformed x (default: :func:`default_measures`).
    theory_curve : bool, default True
        Also record the exact closed form "theory" and the per-seed Theorem 1 "limit".
    progress : callable, optional
        Called with 1 after every evaluated point (e.g. ``tqdm.update``).

    Returns
    -------
    SweepResult
        Axes ("seed", "c"), experiment "outlier".

    Examples
    --------
    >>> from pyckafast.robustness import linear_measure, outlier_sweep
    >>> r = outlier_sweep([1.0, 1e4], [0], n_per_cube=50, dim=5, measures=[linear_measure()])
    >>> bool(r.values["linear"][0, 1] < r.values["linear"][0, 0])
    True
    """
    def setup(seed):
        x, _ = transforms.two_cubes(n_per_cube, dim, seed=seed)
        rng = np.random.default_rng([seed, 2])
        mask = np.zeros(x.shape[0], dtype=bool)
        mask[rng.integers(x.shape[0])] = True
        return x, mask, transforms.random_direction(dim, seed=rng)

    params = {"n_per_cube": n_per_cube, "dim": dim}
    return subset_translation_sweep(setup, magnitudes, list(seeds), experiment="outlier",
                                    measures=measures, theory_curve=theory_curve, params=params,
                                    progress=progress)


def class_translation_sweep(
    magnitudes: Sequence[float] = tuple(np.geomspace(1.0, 5000.0, 12)), seeds: Sequence[int] = range(10),
    *, representation: Literal["pixels", "mlp"] = "pixels", translated_class: int = 0,
    train_fraction: float = 0.7,
    measures: Sequence[Measure] | None = None, theory_curve: bool = True, progress: Progress = None,
) -> SweepResult:
    """Sweep Fig. 4c: translate one class of the digits along a separability-preserving direction.

    A least-squares multinomial classifier is trained on ``train_fraction`` of the representation;
    all points of ``translated_class`` move by c v with v in the null space of the class-weight
    differences (:func:`~pyckafast.transforms.separability_preserving_direction`, one per seed).
    "accuracy" (held-out rows) stays constant while CKA with the original falls. Needs
    scikit-learn.

    Parameters
    ----------
    magnitudes : sequence of float, default 12 values from 1 to 5000
        The magnitudes c.
    seeds : sequence of int, default range(10)
        One direction per seed.
    representation : {"pixels", "mlp"}, default "pixels"
        Which :func:`~pyckafast.robustness.digits_representation`.
    translated_class : int, default 0
        The digit whose points move.
    train_fraction : float, default 0.7
        Fraction of rows the classifier is trained on (the others measure "accuracy").
    measures : sequence of Measure, optional
        What to measure between x and the transformed x (default: :func:`default_measures`).
    theory_curve : bool, default True
        Also record the exact closed form "theory" and the per-seed Theorem 1 "limit".
    progress : callable, optional
        Called with 1 after every evaluated point (e.g. ``tqdm.update``).

    Returns
    -------
    SweepResult
        Axes ("seed", "c"), experiment "class-translation", with "accuracy" values.

    Examples
    --------
    >>> from pyckafast.robustness import class_translation_sweep, linear_measure
    >>> r = class_translation_sweep([1.0, 100.0], [0], measures=[linear_measure()])
    >>> bool((r.values["accuracy"] == r.params["original_accuracy"]).all())
    True
    """
    from .classifier import digits_representation, fit_least_squares

    x, labels = digits_representation(representation)
    split = np.random.default_rng(12345).random(x.shape[0]) < train_fraction
    clf = fit_least_squares(x[split], labels[split])
    mask = labels == translated_class

    def setup(seed):
        return x, mask, transforms.separability_preserving_direction(clf.weights, seed=seed)

    params = {"representation": representation, "translated_class": translated_class,
              "n": int(x.shape[0]), "p": int(x.shape[1]),
              "original_accuracy": clf.accuracy(x[~split], labels[~split])}
    extra = {"accuracy": lambda y: clf.accuracy(y[~split], labels[~split])}
    return subset_translation_sweep(setup, magnitudes, list(seeds), experiment="class-translation",
                                    measures=measures, theory_curve=theory_curve, extra=extra,
                                    params=params, progress=progress)


def invertible_sweep(
    means: Sequence[float] = PAPER_GRID, stds: Sequence[float] = PAPER_GRID, seeds: Sequence[int] = range(10),
    *, n_per_cube: int = 10_000, dim: int = 500, measures: Sequence[Measure] | None = None,
    linear_method: Literal["gram", "engine"] = "gram", progress: Progress = None,
) -> SweepResult:
    """Sweep Fig. 4b: CKA(X, X M) for M_ij ~ N(mean, std) over a grid, X = two cubes in R^dim.

    Parameters
    ----------
    means : sequence of float, default PAPER_GRID
        Means of the entries of M.
    stds : sequence of float, default PAPER_GRID
        Standard deviations of the entries of M.
    seeds : sequence of int, default range(10)
        One cube draw (and one M per grid point) per seed.
    n_per_cube : int, default 10000
        Points per cube.
    dim : int, default 500
        Dimension of the cubes (M is dim x dim).
    measures : sequence of Measure, optional
        What to measure between X and X M (default: linear CKA only).
    linear_method : {"gram", "engine"}, default "gram"
        "gram" computes the exact linear CKA from the centred Gram A = X~'X~ once per seed:
        X~'(XM)~ = A M and (XM)~'(XM)~ = M'AM, so ``CKA = |AM|^2 / (|A| |M'AM|)`` at O(p^3) per
        matrix instead of O(n p^2) (equal to :func:`pyckafast.linear_cka` of X M to float64
        rounding, tested). "engine" materialises X M and calls the measure.
    progress : callable, optional
        Called with 1 after every evaluated point (e.g. ``tqdm.update``).

    Returns
    -------
    SweepResult
        Axes ("seed", "mean", "std"), experiment "invertible".

    Examples
    --------
    >>> from pyckafast.robustness import invertible_sweep
    >>> r = invertible_sweep([0.0, 100.0], [1.0], [0], n_per_cube=100, dim=20)
    >>> r.shape, bool(0.0 < r.values["linear"].min() < 1.0)
    ((1, 2, 1), True)
    """
    if linear_method not in ("gram", "engine"):
        raise ValueError(f"linear_method must be 'gram' or 'engine'; got {linear_method!r}.")
    from .measures import linear_measure

    measures = [linear_measure()] if measures is None else list(measures)
    result = SweepResult("invertible", {"seed": np.asarray(list(seeds)), "mean": np.asarray(means, float),
                                        "std": np.asarray(stds, float)},
                         params={"n_per_cube": n_per_cube, "dim": dim, "linear_method": linear_method})
    for i, seed in enumerate(result.axes["seed"]):
        x, _ = transforms.two_cubes(n_per_cube, dim, seed=int(seed))
        xc = x - x.mean(axis=0)
        gram = xc.T @ xc
        shortcut = [m for m in measures if m.exact_linear and linear_method == "gram"]
        others = [m for m in measures if m not in shortcut]
        rows = _rows(others, x.shape[0], int(seed))
        medians = _Medians()
        for j, mean in enumerate(result.axes["mean"]):
            for k, std in enumerate(result.axes["std"]):
                m = transforms.draw_invertible(dim, mean, std, seed=[int(seed), j, k])
                if shortcut:
                    value = _gram_linear_cka(gram, m)
                    for meas in shortcut:
                        result.new_values(meas.name)[i, j, k] = value
                if others:
                    _measure_all(result, others, x, x @ m, rows, (i, j, k), medians)
                if progress is not None:
                    progress(1)
    return result


def _gram_linear_cka(gram: np.ndarray, m: np.ndarray) -> float:
    am = gram @ m
    return float(np.linalg.norm(am) ** 2 / (np.linalg.norm(gram) * np.linalg.norm(m.T @ am)))
