"""Transformations of representations studied by Davari et al. (2023), and their test data.

Linear CKA is invariant to :func:`orthogonal`, :func:`isotropic_scale` and :func:`translate`, but not
to :func:`invertible_linear`, :func:`translate_subset` or :func:`add_outlier` — even when a linear
classifier's predictions do not change (:func:`separability_preserving_direction`).

Every function returns a new float64 array and leaves its input untouched. ``seed`` is anything
:func:`numpy.random.default_rng` accepts.
"""

from __future__ import annotations

import numpy as np

from ._core.inputs import as_samples
from ._core.types import ArrayLike, Seed
from ._core.validation import check_positive_scalar

__all__ = [
    "orthogonal", "isotropic_scale", "translate", "invertible_linear", "translate_subset",
    "add_outlier", "separability_preserving_direction", "separability_preserving_basis",
    "random_direction", "two_cubes", "draw_invertible",
]

#: Default redraw criterion of :func:`invertible_linear`: 2-norm condition number of M.
MAX_CONDITION = 1e10


def _data(x, name: str = "x") -> np.ndarray:
    arr = np.array(as_samples(x, name), dtype=np.float64)  # always a fresh float64 copy
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values; found NaN or Inf.")
    return arr


def _finite_scalar(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {value!r}.") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}.")
    return v


def check_direction(direction, p: int, name: str = "direction") -> np.ndarray:
    """Return ``direction`` as a float64 vector of length ``p`` that is finite and non-zero."""
    v = np.asarray(direction, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != p:
        raise ValueError(
            f"{name} must be a 1-D vector with one entry per feature ({p}); got shape {v.shape}."
        )
    if not np.all(np.isfinite(v)) or not np.any(v):
        raise ValueError(f"{name} must be finite and non-zero; got {v[:5]}{'...' if p > 5 else ''}.")
    return v


def check_mask(mask, n: int, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a boolean vector of length ``n`` selecting a proper, non-empty subset."""
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean array (True = translated row); got dtype {m.dtype}.")
    if m.ndim != 1 or m.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D boolean vector of length n = {n}; got shape {m.shape}.")
    k = int(m.sum())
    if k == 0 or k == n:
        raise ValueError(
            f"{name} must select a proper non-empty subset of the {n} rows; it selects {k}."
        )
    return m


def check_index(index, n: int, name: str = "index") -> int:
    """Return ``index`` as a row index in [0, n) (negative indices count from the end)."""
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{name} must be an integer row index; got {index!r}.")
    i = int(index)
    if not -n <= i < n:
        raise ValueError(f"{name} must be a row index in [-{n}, {n}); got {i}.")
    return i % n


def random_direction(p: int, seed: Seed = None) -> np.ndarray:
    """Draw a uniformly random unit vector in R^p (normalised standard Gaussian).

    Parameters
    ----------
    p : int
        The dimension.
    seed : int or numpy.random.Generator, optional
        Anything :func:`numpy.random.default_rng` accepts.

    Returns
    -------
    numpy.ndarray, shape (p,)
        A unit vector.

    Examples
    --------
    >>> from pyckafast.transforms import random_direction
    >>> round(float((random_direction(5, seed=0) ** 2).sum()), 12)
    1.0
    """
    v = np.random.default_rng(seed).standard_normal(int(p))
    return v / np.linalg.norm(v)


def orthogonal(x: ArrayLike, seed: Seed = None) -> np.ndarray:
    """Rotate ``x`` by a Haar-random orthogonal matrix Q (x @ Q); linear CKA is unchanged.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation, one row per sample (copied to float64; must be finite).
    seed : int or numpy.random.Generator, optional
        Anything :func:`numpy.random.default_rng` accepts.

    Returns
    -------
    numpy.ndarray, shape (n, p)
        ``x @ Q``.

    Examples
    --------
    >>> import numpy as np, pyckafast
    >>> from pyckafast.transforms import orthogonal
    >>> x = np.random.default_rng(0).normal(size=(50, 4))
    >>> round(pyckafast.linear_cka(x, orthogonal(x, seed=1)), 10)
    1.0
    """
    x = _data(x)
    g = np.random.default_rng(seed).standard_normal((x.shape[1], x.shape[1]))
    q, r = np.linalg.qr(g)
    q *= np.sign(np.diag(r))  # sign fix makes Q Haar distributed, not just orthogonal
    return x @ q


def isotropic_scale(x: ArrayLike, alpha: float) -> np.ndarray:
    """Multiply every entry by ``alpha`` > 0; linear CKA is unchanged.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation, one row per sample (copied to float64; must be finite).
    alpha : float
        The factor (positive, finite).

    Returns
    -------
    numpy.ndarray, shape (n, p)
        ``alpha * x``.

    Examples
    --------
    >>> from pyckafast.transforms import isotropic_scale
    >>> isotropic_scale([[1.0, 2.0]], 3.0).tolist()
    [[3.0, 6.0]]
    """
    return _data(x) * check_positive_scalar(alpha, "alpha")


def translate(x: ArrayLike, shift: float | ArrayLike) -> np.ndarray:
    """Add the same vector ``shift`` (length p, or a scalar) to every row; CKA is unchanged.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation, one row per sample (copied to float64; must be finite).
    shift : float or array_like, shape (p,)
        The vector added to every row (a scalar is added to every entry); finite.

    Returns
    -------
    numpy.ndarray, shape (n, p)
        ``x + shift``.

    Examples
    --------
    >>> from pyckafast.transforms import translate
    >>> translate([[1.0, 2.0], [3.0, 4.0]], [10.0, 0.0]).tolist()
    [[11.0, 2.0], [13.0, 4.0]]
    """
    x = _data(x)
    s = np.asarray(shift, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(x.shape[1], float(s))
    if s.shape != (x.shape[1],) or not np.all(np.isfinite(s)):
        raise ValueError(
            f"shift must be a finite scalar or vector of length {x.shape[1]}; got shape {s.shape}."
        )
    return x + s


def invertible_linear(
    x: ArrayLike, mean: float, std: float, seed: Seed = None, *,
    max_condition: float = MAX_CONDITION, max_tries: int = 100,
) -> np.ndarray:
    """Map ``x`` by a random square matrix M with i.i.d. N(mean, std^2) entries: ``x @ M``.

    M is redrawn while its 2-norm condition number exceeds ``max_condition`` (default 1e10, far
    above what N(mean, std) draws reach for the paper's grids at p <= 1000, so redraws are rare
    and only exclude numerically singular maps). Use :func:`draw_invertible` to get M itself.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation, one row per sample (copied to float64; must be finite).
    mean : float
        Mean of the entries of M.
    std : float
        Standard deviation of the entries of M (positive).
    seed : int or numpy.random.Generator, optional
        Anything :func:`numpy.random.default_rng` accepts.
    max_condition : float, default 1e10
        Largest accepted 2-norm condition number of M.
    max_tries : int, default 100
        Draws before giving up with a ValueError.

    Returns
    -------
    numpy.ndarray, shape (n, p)
        ``x @ M``.

    Examples
    --------
    >>> import numpy as np, pyckafast
    >>> from pyckafast.transforms import invertible_linear
    >>> x = np.random.default_rng(0).normal(size=(200, 8))
    >>> y = invertible_linear(x, mean=1.0, std=1.0, seed=0)
    >>> y.shape, pyckafast.linear_cka(x, y) < 1.0
    ((200, 8), True)
    """
    x = _data(x)
    return x @ draw_invertible(x.shape[1], mean, std, seed,
                               max_condition=max_condition, max_tries=max_tries)


def draw_invertible(
    p: int, mean: float, std: float, seed: Seed = None, *, max_condition: float = MAX_CONDITION,
    max_tries: int = 100,
) -> np.ndarray:
    """Draw the p x p matrix of :func:`invertible_linear` (redrawn until cond_2(M) <= max_condition).

    Parameters
    ----------
    p : int
        The number of features.
    mean : float
        Mean of the entries.
    std : float
        Standard deviation of the entries (positive).
    seed : int or numpy.random.Generator, optional
        Anything :func:`numpy.random.default_rng` accepts.
    max_condition : float, default 1e10
        Largest accepted 2-norm condition number.
    max_tries : int, default 100
        Draws before giving up with a ValueError.

    Returns
    -------
    numpy.ndarray, shape (p, p)
        The matrix M.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.transforms import draw_invertible
    >>> m = draw_invertible(4, mean=0.0, std=1.0, seed=0)
    >>> m.shape, bool(np.linalg.cond(m) <= 1e10)
    ((4, 4), True)
    """
    mean = _finite_scalar(mean, "mean")
    std = check_positive_scalar(std, "std")
    max_condition = check_positive_scalar(max_condition, "max_condition")
    rng = np.random.default_rng(seed)
    for _ in range(int(max_tries)):
        m = rng.normal(mean, std, size=(int(p), int(p)))
        if np.linalg.cond(m) <= max_condition:
            return m
    raise ValueError(
        f"no draw of a {p} x {p} N({mean}, {std}^2) matrix had condition number <= "
        f"{max_condition:g} in {max_tries} tries; raise max_condition or change mean/std."
    )


def translate_subset(x: ArrayLike, mask: ArrayLike, direction: ArrayLike, c: float) -> np.ndarray:
    """Translate the rows selected by ``mask`` by ``c * direction`` (X + c 1_T v').

    Linear CKA with the original tends to the Theorem 1 value as |c| grows
    (:func:`pyckafast.theory.translation_limit`) whatever the direction.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation, one row per sample (copied to float64; must be finite).
    mask : array_like of bool, shape (n,)
        The translated rows (a proper, non-empty subset).
    direction : array_like, shape (p,)
        The direction v (finite, non-zero; used as given, not normalised).
    c : float
        The magnitude (finite).

    Returns
    -------
    numpy.ndarray, shape (n, p)
        The translated copy of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.transforms import translate_subset
    >>> translate_subset(np.zeros((3, 2)), np.array([False, True, False]), [1.0, 0.0], 2.0).tolist()
    [[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]]
    """
    x = _data(x)
    m = check_mask(mask, x.shape[0])
    v = check_direction(direction, x.shape[1])
    x[m] += _finite_scalar(c, "c") * v
    return x


def add_outlier(x: ArrayLike, index: int, direction: ArrayLike, c: float) -> np.ndarray:
    """Move the single row ``index`` by ``c * direction``, making it an outlier.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The representation, one row per sample (copied to float64; must be finite).
    index : int
        The row that moves (negative indices count from the end).
    direction : array_like, shape (p,)
        The direction (finite, non-zero; used as given).
    c : float
        The magnitude (finite).

    Returns
    -------
    numpy.ndarray, shape (n, p)
        A copy of ``x`` with row ``index`` moved.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.transforms import add_outlier
    >>> add_outlier(np.zeros((3, 2)), -1, [0.0, 1.0], 5.0).tolist()
    [[0.0, 0.0], [0.0, 0.0], [0.0, 5.0]]
    """
    x = _data(x)
    i = check_index(index, x.shape[0])
    x[i] += _finite_scalar(c, "c") * check_direction(direction, x.shape[1])
    return x


def separability_preserving_direction(weights: ArrayLike, seed: Seed = None, *,
                                      rtol: float | None = None) -> np.ndarray:
    """Draw a unit direction along which translations keep a linear classifier's predictions.

    For scores ``W x + b`` with argmax prediction, translating any subset of points by ``c v``
    changes every score by ``c W v``; the argmax is unchanged for all c iff all class scores move
    together, ``(w_k - w_l) . v = 0`` for every pair, i.e. v lies in the null space of the row
    differences of W. A single row (binary classifier ``sign(w . x + b)``, e.g. scikit-learn's
    ``coef_`` of shape (1, p)) needs ``w . v = 0``. v is a normalised Gaussian draw in that null
    space.

    Parameters
    ----------
    weights : array_like, shape (k, p) or (p,)
        Class weight rows (k >= 2 classes, argmax rule) or one binary weight vector.
    seed : int or numpy.random.Generator, optional
        Seed of the random draw inside the null space.
    rtol : float, optional
        Singular values below ``rtol * largest`` count as zero (default ``max(k, p) * eps``).

    Returns
    -------
    numpy.ndarray, shape (p,)
        The unit direction v.

    Raises
    ------
    ValueError
        If the null space is trivial (p <= rank of the differences): no such direction exists.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.transforms import separability_preserving_direction
    >>> w = np.random.default_rng(0).normal(size=(3, 6))
    >>> v = separability_preserving_direction(w, seed=0)
    >>> bool(np.allclose(w @ v - (w @ v)[0], 0.0, atol=1e-12))
    True
    """
    null_basis = separability_preserving_basis(weights, rtol=rtol)
    v = np.random.default_rng(seed).standard_normal(null_basis.shape[0]) @ null_basis
    return v / np.linalg.norm(v)


def separability_preserving_basis(weights: ArrayLike, *, rtol: float | None = None) -> np.ndarray:
    """Compute orthonormal rows spanning every direction of :func:`separability_preserving_direction`.

    Parameters
    ----------
    weights : array_like, shape (k, p) or (p,)
        Class weight rows (k >= 2 classes, argmax rule) or one binary weight vector.
    rtol : float, optional
        Singular values below ``rtol * largest`` count as zero (default ``max(k, p) * eps``).

    Returns
    -------
    numpy.ndarray, shape (d, p)
        An orthonormal basis of the null space of the class-weight differences (d >= 1).

    Raises
    ------
    ValueError
        If the null space is trivial: no such direction exists.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.transforms import separability_preserving_basis
    >>> separability_preserving_basis(np.eye(3)[:2]).shape  # 2 classes in R^3: 2-dim null space
    (2, 3)
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.size == 0 or not np.all(np.isfinite(w)):
        raise ValueError(
            f"weights must be a finite (n_classes, n_features) matrix or a weight vector; "
            f"got shape {np.shape(weights)}."
        )
    constraints = w if w.shape[0] == 1 else w[1:] - w[0]
    p = w.shape[1]
    _, sv, vt = np.linalg.svd(constraints, full_matrices=True)
    scale = max(float(sv.max()), 1e-300)
    tol = (max(constraints.shape) * np.finfo(float).eps if rtol is None else rtol) * scale
    rank = int((sv > tol).sum())
    if rank >= p:
        raise ValueError(
            f"no separability-preserving direction exists: the {constraints.shape[0]} constraint "
            f"row(s) from weights of shape {w.shape} span all {p} feature dimensions (the null "
            f"space of the class-weight differences is empty); it needs n_features > rank = {rank}."
        )
    return vt[rank:]


def two_cubes(n_per_cube: int, dim: int, offset: float = 1.1, seed: Seed = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Draw the two unit cubes of Davari et al. (2023), Fig. 4: data and 0/1 labels.

    Cube 0 is uniform(-0.5, 0.5)^dim; cube 1 is the same plus ``offset * e_1``, so for offset > 1
    the cubes are linearly separable along the first axis. Rows are cube 0 then cube 1.

    Parameters
    ----------
    n_per_cube : int
        Points per cube (>= 1).
    dim : int
        Dimension (>= 1).
    offset : float, default 1.1
        Shift of cube 1 along the first axis.
    seed : int or numpy.random.Generator, optional
        Anything :func:`numpy.random.default_rng` accepts.

    Returns
    -------
    x : numpy.ndarray, shape (2 n_per_cube, dim)
        The points, cube 0 first.
    labels : numpy.ndarray of int, shape (2 n_per_cube,)
        0 for cube 0, 1 for cube 1.

    Examples
    --------
    >>> from pyckafast.transforms import two_cubes
    >>> x, labels = two_cubes(100, 3, seed=0)
    >>> x.shape, int(labels.sum()), bool(x[labels == 1, 0].min() > x[labels == 0, 0].max())
    ((200, 3), 100, True)
    """
    n_per_cube, dim = int(n_per_cube), int(dim)
    if n_per_cube < 1 or dim < 1:
        raise ValueError(f"n_per_cube and dim must be >= 1; got {n_per_cube} and {dim}.")
    offset = _finite_scalar(offset, "offset")
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, size=(2 * n_per_cube, dim))
    x[n_per_cube:, 0] += offset
    labels = np.repeat(np.array([0, 1]), n_per_cube)
    return x, labels
