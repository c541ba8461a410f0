"""Float64 n x n references for RBF CKA (Kornblith et al. 2019 gram_rbf / center_gram style)."""

import numpy as np

CPU_BACKENDS = ["numpy", "numba", "cpp"]


def sq_distances(x):
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def median_sq(x, rule):
    d = sq_distances(x)
    if rule == "kornblith":
        return np.median(d)
    return np.median(d[np.triu_indices(len(d), 1)])


def gram_rbf(x, threshold=1.0, rule="kornblith", sigma=None):
    d = sq_distances(x)
    sigma2 = sigma ** 2 if sigma is not None else threshold ** 2 * median_sq(x, rule)
    return np.exp(-d / (2 * sigma2))


def center_gram(k, unbiased=False):
    k = k.copy()
    n = k.shape[0]
    if unbiased:
        np.fill_diagonal(k, 0)
        means = k.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        k -= means[:, None]
        k -= means[None, :]
        np.fill_diagonal(k, 0)
    else:
        means = k.mean(0)
        means -= means.mean() / 2
        k -= means[:, None]
        k -= means[None, :]
    return k


def hsic_ref(k, l, debiased):
    """Biased tr(KHLH)/(n-1)^2 or unbiased Song et al. (2012) HSIC."""
    n = k.shape[0]
    kc, lc = center_gram(k, debiased), center_gram(l, debiased)
    scale = n * (n - 3) if debiased else (n - 1) ** 2
    return float((kc * lc).sum()) / scale


def cka_ref(k, l, debiased):
    return hsic_ref(k, l, debiased) / np.sqrt(hsic_ref(k, k, debiased) * hsic_ref(l, l, debiased))


def rbf_cka_ref(x, y, threshold=1.0, rule="kornblith", debiased=False, sigma=None):
    if sigma is None or np.ndim(sigma) == 0:
        sx = sy = sigma
    else:
        sx, sy = sigma
    return cka_ref(gram_rbf(x, threshold, rule, sx), gram_rbf(y, threshold, rule, sy), debiased)


def correlated(rng, n, p1, p2, mean=0.0, dtype=np.float64):
    x = rng.normal(size=(n, p1))
    y = np.tanh(x[:, : min(p1, p2)] @ rng.normal(size=(min(p1, p2), p2))) + 0.5 * rng.normal(
        size=(n, p2))
    return (x + mean).astype(dtype), (y + mean).astype(dtype)
