"""Drive linear CKA to a chosen value without changing a linear classifier's predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import theory, transforms
from .._core.types import ArrayLike, Seed
from .._core.validation import check_positive_scalar
from .classifier import LinearClassifier, as_classifier, fit_least_squares

__all__ = ["Manipulation", "manipulate"]


@dataclass
class Manipulation:
    """The result of :func:`manipulate`: ``x = x_original + c * mask[:, None] * direction``.

    Parameters
    ----------
    x : numpy.ndarray, shape (n, p)
        The new representation.
    cka : float
        Its linear CKA with the reference, measured by :func:`pyckafast.linear_cka`.
    target : float
        The CKA that was asked for.
    c : float
        The translation magnitude.
    direction : numpy.ndarray, shape (p,)
        The translation direction (in the null space of the class-weight differences).
    mask : numpy.ndarray of bool, shape (n,)
        The translated rows.
    subset : str
        Which candidate subset it is (a class, or a random half).
    reachable : (float, float)
        The (min, max) CKA over every candidate move scanned.
    classifier : LinearClassifier
        The classifier whose predictions are kept.

    Examples
    --------
    >>> import pyckafast
    >>> from pyckafast.transforms import two_cubes
    >>> x, labels = two_cubes(100, 3, seed=0)
    >>> out = pyckafast.manipulate(x, target=0.5, labels=labels)
    >>> out.x.shape, bool(out.reachable[0] <= 0.5 <= out.reachable[1])
    ((200, 3), True)
    """

    x: np.ndarray
    cka: float
    target: float
    c: float
    direction: np.ndarray
    mask: np.ndarray
    subset: str
    reachable: tuple[float, float]
    classifier: LinearClassifier


def manipulate(
    x: ArrayLike, reference: ArrayLike | None = None, *, target: float,
    classifier: object = None, labels: ArrayLike | None = None, tol: float = 0.01,
    n_random_subsets: int = 4, n_directions: int = 3, seed: Seed = 0,
) -> Manipulation:
    """Find a representation with identical linear-classifier predictions and CKA = ``target``.

    Method: every move is a subset translation x + c 1_T v' with v in the null space of the
    class-weight differences (:func:`~pyckafast.transforms.separability_preserving_basis`), so
    every class score of every translated point moves by the same c w_k.v and no argmax
    prediction changes. The biased linear CKA with the reference along such a move is the exact
    closed form :func:`pyckafast.theory.translation_curve` (reference R): a continuous function of
    c from CKA(R, x) at c = 0 to the Theorem 1 value CKA(R, 1_T) as |c| -> inf. Candidates are the
    classes (given ``labels``, else the predicted classes) and ``n_random_subsets`` random halves
    (limits near 0), each with the null-space projection of the gradient of the curve at c = 0
    (raises CKA when R != x) and ``n_directions`` random null-space directions. Each curve is
    scanned on a geometric grid of c of both signs; the bracket with the smallest |c| is refined by
    bisection on the closed form to 1e-10 and the result is checked with
    :func:`pyckafast.linear_cka` and by recomputing the predictions.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation to change.
    reference : array_like, shape (n, q), optional
        CKA is measured against it (default: x itself, so CKA starts at 1).
    target : float
        The linear CKA wanted, in [0, 1].
    classifier : (W, b) or fitted scikit-learn linear model, optional
        Scores ``x @ W.T + b`` (argmax; a single row is binary ``score > 0``).
    labels : array_like of int, optional
        Class per row; used as the candidate subsets, and to fit a least-squares classifier
        (:func:`~pyckafast.robustness.fit_least_squares`) when ``classifier`` is not given.
    tol : float, default 0.01
        Largest accepted |CKA - target|.
    n_random_subsets : int, default 4
        Random halves of the rows tried as subsets, besides the classes.
    n_directions : int, default 3
        Random null-space directions tried per subset, besides the gradient direction.
    seed : int or numpy.random.Generator, default 0
        Seed of the random subsets and directions.

    Returns
    -------
    Manipulation
        The new representation, its CKA, and the move that made it.

    Raises
    ------
    ValueError
        If no candidate reaches the target; the message states the reachable range found.

    Examples
    --------
    >>> import numpy as np, pyckafast
    >>> from pyckafast.transforms import two_cubes
    >>> x, labels = two_cubes(150, 4, seed=0)
    >>> out = pyckafast.manipulate(x, target=0.3, labels=labels)
    >>> round(out.cka, 2), bool((out.classifier.predict(out.x) == out.classifier.predict(x)).all())
    (0.3, True)
    """
    x = transforms._data(x)
    target = float(target)
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be a linear CKA value in [0, 1]; got {target}.")
    tol = check_positive_scalar(tol, "tol")
    clf = _classifier(x, classifier, labels)
    basis = transforms.separability_preserving_basis(clf.weights)
    ref = x if reference is None else transforms._data(reference, "reference")
    scan = _Scanner(x, ref, basis)
    before = clf.predict(x)
    lo, hi = np.inf, -np.inf
    for name, mask in _subsets(x.shape[0], labels, before, n_random_subsets, seed):
        for v in scan.directions(mask, n_directions, seed):
            c, (cmin, cmax) = scan.solve(mask, v, target)
            lo, hi = min(lo, cmin), max(hi, cmax)
            if c is None:
                continue
            y = transforms.translate_subset(x, mask, v, c)
            from .. import linear_cka

            cka = linear_cka(ref, y)
            if abs(cka - target) <= tol and np.array_equal(clf.predict(y), before):
                return Manipulation(y, cka, target, c, v, mask, name, (lo, hi), clf)
    raise ValueError(
        f"target {target} is not reachable by prediction-preserving subset translations: the "
        f"candidates scanned reach linear CKA in [{lo:.4f}, {hi:.4f}]."
    )


def _classifier(x, classifier, labels) -> LinearClassifier:
    if classifier is not None:
        return as_classifier(classifier, x.shape[1])
    if labels is None:
        raise ValueError("manipulate needs classifier=(W, b) or labels=... (one class index per row).")
    return fit_least_squares(x, np.asarray(labels))


def _subsets(n, labels, predictions, n_random, seed):
    groups = np.asarray(labels) if labels is not None else predictions
    if groups.shape != (n,):
        raise ValueError(f"labels must have one entry per row of x ({n}); got shape {groups.shape}.")
    for k in np.unique(groups):
        mask = groups == k
        if 0 < mask.sum() < n:
            yield f"class {k}", mask
    rng = np.random.default_rng([0xC4A, *np.atleast_1d(seed).tolist()])
    for i in range(n_random):
        yield f"random half {i}", rng.permutation(n) < n // 2


class _Scanner:
    """Shares the O(n p^2) Grams across candidate subsets; each curve is O(p^2) + O(1) per c."""

    def __init__(self, x, ref, basis):
        self.xc = x - x.mean(axis=0)
        self.rc = ref - ref.mean(axis=0)
        self.gram = self.xc.T @ self.xc
        self.cross = self.rc.T @ self.xc
        self.norm = float(np.linalg.norm(self.gram))
        self.ref_norm = float(np.linalg.norm(self.rc.T @ self.rc))
        if self.norm == 0.0 or self.ref_norm == 0.0:
            raise ValueError("x and reference must not have zero variance; CKA is undefined.")
        self.basis = basis
        scale = np.sqrt(np.trace(self.gram) / x.shape[0])  # typical distance of a row to the mean
        pos = scale * np.geomspace(1e-4, 1e7, 400)
        self.grids = (np.concatenate([[0.0], pos]), np.concatenate([[0.0], -pos]))

    def moments(self, mask) -> theory.SubsetMoments:
        n, k = mask.shape[0], int(mask.sum())
        return theory.SubsetMoments(self.gram, self.norm, self.xc[mask].sum(axis=0), k * (n - k) / n,
                                    self.cross, self.rc[mask].sum(axis=0), self.ref_norm)

    def directions(self, mask, n_random, seed):
        mom = self.moments(mask)
        g = mom.cross.T @ mom.b - (np.linalg.norm(mom.cross) / self.norm) ** 2 * (self.gram @ mom.a)
        g = self.basis.T @ (self.basis @ g)
        if np.linalg.norm(g) > 0:
            yield g / np.linalg.norm(g)
        rng = np.random.default_rng([0xD1, *np.atleast_1d(seed).tolist()])
        for _ in range(n_random):
            v = rng.standard_normal(self.basis.shape[0]) @ self.basis
            yield v / np.linalg.norm(v)

    def solve(self, mask, v, target):
        """Smallest-|c| root of curve(c) = target (None if none) and the curve's range."""
        mom = self.moments(mask)
        f = lambda c: theory.curve_from_moments(mom, v, c) - target  # noqa: E731
        best, lo, hi = None, np.inf, -np.inf
        for grid in self.grids:
            vals = f(grid)
            lo, hi = min(lo, vals.min() + target), max(hi, vals.max() + target)
            change = np.nonzero(np.sign(vals[:-1]) != np.sign(vals[1:]))[0]
            if change.size and (best is None or abs(grid[change[0] + 1]) < abs(best[1])):
                best = (grid[change[0]], grid[change[0] + 1])
        if best is None:
            return None, (lo, hi)
        return _bisect(f, *best), (lo, hi)


def _bisect(f, a: float, b: float) -> float:
    fa = f(a)
    for _ in range(200):
        mid = 0.5 * (a + b)
        fm = f(mid)
        if abs(fm) < 1e-12 or mid in (a, b):
            return mid
        if np.sign(fm) == np.sign(fa):
            a, fa = mid, fm
        else:
            b = mid
    return 0.5 * (a + b)
