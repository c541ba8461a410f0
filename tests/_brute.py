"""Float64 brute-force references (n x n Grams) for the robustness tests."""

import numpy as np


def centred_gram(k: np.ndarray) -> np.ndarray:
    h = np.eye(k.shape[0]) - 1.0 / k.shape[0]
    return h @ k @ h


def gram_cka(k: np.ndarray, l: np.ndarray) -> float:
    """Biased CKA from two kernel matrices: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))."""
    kc, lc = centred_gram(k), centred_gram(l)
    return float((kc * lc).sum() / np.sqrt((kc * kc).sum() * (lc * lc).sum()))


def linear_cka_brute(x, y) -> float:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    return gram_cka(x @ x.T, y @ y.T)


def rbf_cka_ref(x, y, *, threshold: float = 1.0) -> float:
    """RBF CKA, Kornblith bandwidth: sigma^2 = threshold^2 * median of all n^2 squared distances."""
    def gram(a):
        a = np.asarray(a, dtype=np.float64)
        a = a - a.mean(axis=0)
        sq = (a * a).sum(axis=1)
        d = np.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0)
        return np.exp(-d / (2 * threshold ** 2 * np.median(d)))
    return gram_cka(gram(x), gram(y))
