"""Linear classifiers (W, b) and the real representations the class-translation study uses."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["LinearClassifier", "fit_least_squares", "as_classifier", "digits_representation"]


class LinearClassifier(NamedTuple):
    """Scores ``x @ weights.T + bias``; prediction = argmax (or ``score > 0`` for one row)."""

    weights: np.ndarray  # (k, p), scikit-learn's coef_ layout
    bias: np.ndarray  # (k,)

    def predict(self, x) -> np.ndarray:
        """Predicted class index per row (0/1 for a single-row binary classifier)."""
        scores = np.asarray(x, dtype=np.float64) @ self.weights.T + self.bias
        if self.weights.shape[0] == 1:
            return (scores[:, 0] > 0).astype(np.int64)
        return np.argmax(scores, axis=1)

    def accuracy(self, x, labels) -> float:
        """Fraction of rows whose prediction equals ``labels`` (class indices)."""
        return float(np.mean(self.predict(x) == np.asarray(labels)))


def as_classifier(classifier, p: int) -> LinearClassifier:
    """Accept (W, b), a :class:`LinearClassifier` or a fitted scikit-learn linear model."""
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


def fit_least_squares(x, labels, *, ridge: float = 1e-3) -> LinearClassifier:
    """Multinomial least-squares classifier: ridge regression of one-hot labels, argmax rule.

    Labels must be integers 0..k-1. Solves (X~'X~ + ridge n I) W' = X~'(Y - mean Y) in float64.

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


def digits_representation(kind: str = "pixels", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's embedded digits (1,797 8 x 8 images, no download) as a representation.

    ``kind="pixels"``: standardised pixels (64 features). ``kind="mlp"``: the 64-unit ReLU hidden
    layer of a small MLP trained on the data (scikit-learn's MLPClassifier, ``seed``).
    Returns (representation, labels).
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
