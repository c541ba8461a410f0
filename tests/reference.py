"""Float64 n x n reference implementations (deliberately naive: Gram matrices and H)."""

import numpy as np


def centering(n):
    return np.eye(n) - np.ones((n, n)) / n


def hsic_biased(k, l):
    n = k.shape[0]
    h = centering(n)
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def hsic_unbiased(k, l):
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ks, ls = k.sum(1), l.sum(1)
    value = (k * l).sum() + ks.sum() * ls.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ks @ ls
    return value / (n * (n - 3))


def cka_from_grams(k, l, debiased=False):
    f = hsic_unbiased if debiased else hsic_biased
    return f(k, l) / np.sqrt(f(k, k) * f(l, l))


def linear_cka_ref(x, y, debiased=False):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    x, y = x - x.mean(0), y - y.mean(0)  # centring first keeps the float64 Grams accurate
    return cka_from_grams(x @ x.T, y @ y.T, debiased)


def linear_cka_two_pass(x, y):
    """Float64 feature-space reference for large n: exact mean first, then centred moments."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def correlated(rng, n, p1, p2, mean=0.0, dtype=np.float64):
    x = rng.normal(size=(n, p1))
    y = x[:, : min(p1, p2)] @ rng.normal(size=(min(p1, p2), p2)) + rng.normal(size=(n, p2))
    return (x + mean).astype(dtype), (y + mean).astype(dtype)
