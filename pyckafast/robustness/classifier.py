"""Linear classifiers (W, b) and the real representations the class-translation study uses."""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from .._core.types import ArrayLike

__all__ = ["LinearClassifier", "fit_least_squares", "as_classifier", "digits_representation"]


class LinearClassifier(NamedTuple):
    """Score rows as ``x @ weights.T + bias``; prediction = argmax (or ``score > 0`` for one row).

    Parameters
    ----------
    weights : numpy.ndarray, shape (k, p)
        Class weight rows (scikit-learn's ``coef_`` layout); one row for a binary classifier.
    bias : numpy.ndarray, shape (k,)
        Class biases.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.robustness import LinearClassifier
    >>> clf = LinearClassifier(np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2))
    >>> clf.predict([[2.0, 1.0], [0.0, 3.0]]).tolist()
    [0, 1]
    """

    weights: np.ndarray  # (k, p), scikit-learn's coef_ layout
    bias: np.ndarray  # (k,)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Predict the class index of every row (0/1 for a single-row binary classifier).

        Parameters
        ----------
        x : array_like, shape (n, p)
            The rows to classify.

        Returns
        -------
        numpy.ndarray of int64, shape (n,)
            The predicted class indices.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.robustness import LinearClassifier
        >>> LinearClassifier(np.array([[1.0, -1.0]]), np.array([0.5])).predict([[0.0, 1.0]])
        array([0])
        """
        scores = np.asarray(x, dtype=np.float64) @ self.weights.T + self.bias
        if self.weights.shape[0] == 1:
            return (scores[:, 0] > 0).astype(np.int64)
        return np.argmax(scores, axis=1)

    def accuracy(self, x: ArrayLike, labels: ArrayLike) -> float:
        """Compute the fraction of rows whose prediction equals ``labels``.

        Parameters
        ----------
        x : array_like, shape (n, p)
            The rows to classify.
        labels : array_like of int, shape (n,)
            The true class indices.

        Returns
        -------
        float
            The accuracy, in [0, 1].

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.robustness import LinearClassifier
        >>> clf = LinearClassifier(np.array([[1.0]]), np.array([0.0]))
        >>> clf.accuracy([[-1.0], [2.0]], [0, 0])
        0.5
        """
        return float(np.mean(self.predict(x) == np.asarray(labels)))


def as_classifier(classifier: object, p: int) -> LinearClassifier:
    """Convert (W, b), a :class:`LinearClassifier` or a fitted scikit-learn linear model.

    Parameters
    ----------
    classifier : tuple of array_like, LinearClassifier or scikit-learn linear model
        A (weights, bias) pair, or any object with ``coef_`` and ``intercept_``.
    p : int
        The number of features the weights must have.

    Returns
    -------
    LinearClassifier
        The float64 weights of shape (k, p) and bias of shape (k,).

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.robustness import as_classifier
    >>> clf = as_classifier((np.ones(3), 0.0), p=3)
    >>> clf.weights.shape, clf.bias.shape
    ((1, 3), (1,))
    """
    if hasattr(classifier, "coef_") and hasattr(classifier, "intercept_"):
        classifier = (classifier.coef_, classifier.intercept_)
    try:
        w, b = classifier
    except (TypeError, ValueError):
        raise TypeError(
            f"classifier must be a (weights, bias) pair or a fitted linear model; got {type(classifier).__name__}."
        ) from None
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    b = np.atleast_1d(np.asarray(b, dtype=np.float64))
    if w.ndim != 2 or w.shape[1] != p or b.shape != (w.shape[0],):
        raise ValueError(
            f"classifier weights must have shape (k, {p}) and bias shape (k,); "
            f"got {w.shape} and {b.shape}."
        )
    return LinearClassifier(w, b)


def fit_least_squares(x: ArrayLike, labels: ArrayLike, *, ridge: float = 1e-3) -> LinearClassifier:
    """Fit a multinomial least-squares classifier: ridge regression of one-hot labels, argmax rule.

    Solves (X~'X~ + ridge n I) W' = X~'(Y - mean Y) in float64.

    Parameters
    ----------
    x : array_like, shape (n, p)
        The training rows.
    labels : array_like of int, shape (n,)
        Class indices 0..k-1.
    ridge : float, default 1e-3
        Ridge penalty, per sample (multiplied by n).

    Returns
    -------
    LinearClassifier
        The fitted weights (max(k, 2), p) and biases.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.robustness import fit_least_squares
    >>> from pyckafast.transforms import two_cubes
    >>> x, labels = two_cubes(100, 3, seed=0)
    >>> fit_least_squares(x, labels).accuracy(x, labels)
    1.0
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != x.shape[0] or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be a 1-D integer array with one class index per row of x ({x.shape[0]}); "
            f"got shape {labels.shape}, dtype {labels.dtype}."
        )
    k = int(labels.max()) + 1
    onehot = np.eye(max(k, 2))[labels]
    mx, my = x.mean(axis=0), onehot.mean(axis=0)
    xc = x - mx
    lhs = xc.T @ xc + ridge * x.shape[0] * np.eye(x.shape[1])
    w = np.linalg.solve(lhs, xc.T @ (onehot - my)).T
    return LinearClassifier(w, my - w @ mx)


def digits_representation(kind: Literal["pixels", "mlp"] = "pixels", seed: int = 0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's embedded digits (1,797 8 x 8 images, no download) as a representation.

    Needs scikit-learn.

    Parameters
    ----------
    kind : {"pixels", "mlp"}, default "pixels"
        "pixels": standardised pixels (64 features). "mlp": the 64-unit ReLU hidden layer of a
        small MLP trained on the data (scikit-learn's MLPClassifier).
    seed : int, default 0
        Seed of the MLP's training (``kind="mlp"``).

    Returns
    -------
    x : numpy.ndarray, shape (1797, 64)
        The representation.
    labels : numpy.ndarray of int64, shape (1797,)
        The digit of every row.

    Examples
    --------
    >>> from pyckafast.robustness import digits_representation
    >>> x, labels = digits_representation()
    >>> x.shape, int(labels.max())
    ((1797, 64), 9)
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float64)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
    if kind == "pixels":
        return x, data.target.astype(np.int64)
    if kind != "mlp":
        raise ValueError(f"kind must be 'pixels' or 'mlp'; got {kind!r}.")
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=seed).fit(x, data.target)
    hidden = np.maximum(x @ mlp.coefs_[0] + mlp.intercepts_[0], 0.0)
    return hidden, data.target.astype(np.int64)
