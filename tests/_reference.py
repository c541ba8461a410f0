"""The test suite's one float64 reference: deliberately naive n x n Gram matrices.

Everything here is written from the textbook definitions, in float64, with no tiling, no
shifts and no library code (the one borrowed name is the ``KernelTerms`` container that
``kernel_terms_brute`` fills, so the GPU driver tests can compare term by term). Its own
correctness is checked against independent closed forms in tests/test_reference.py.

Data generators (two relations, two names):
  correlated_linear  y = x W + noise            (the linear-kernel suites)
  correlated_tanh    y = tanh(x W) + noise / 2  (the RBF suites: a non-linear relation)
"""

from __future__ import annotations

import numpy as np

RULES = ("kornblith", "offdiag")  # the exact median rules of pyckafast.rbf_cka


# ---- data -------------------------------------------------------------------------------------

def correlated_linear(rng, n, p1, p2, mean=0.0, dtype=np.float64):
    """x ~ N(0, 1) (n, p1); y = x[:, :k] W + N(0, 1) (n, p2), k = min(p1, p2); both + mean."""
    x = rng.normal(size=(n, p1))
    y = x[:, : min(p1, p2)] @ rng.normal(size=(min(p1, p2), p2)) + rng.normal(size=(n, p2))
    return (x + mean).astype(dtype), (y + mean).astype(dtype)


def correlated_tanh(rng, n, p1, p2, mean=0.0, dtype=np.float64):
    """x ~ N(0, 1) (n, p1); y = tanh(x[:, :k] W) + 0.5 N(0, 1) (n, p2); both + mean."""
    x = rng.normal(size=(n, p1))
    y = np.tanh(x[:, : min(p1, p2)] @ rng.normal(size=(min(p1, p2), p2))) + 0.5 * rng.normal(
        size=(n, p2))
    return (x + mean).astype(dtype), (y + mean).astype(dtype)


# ---- Gram matrices ----------------------------------------------------------------------------

def as_float64(a) -> np.ndarray:
    """Any host array (1-D: one feature; ints, bools, float32) as an (n, p) float64 copy."""
    a = np.array(a, dtype=np.float64)
    return a.reshape(len(a), -1)


def double_centred(k) -> np.ndarray:
    """H K H with H = I - 11'/n, written out: K minus row and column means plus the grand mean."""
    k = np.asarray(k, dtype=np.float64)
    return k - k.mean(0) - k.mean(1)[:, None] + k.mean()


def linear_gram(x) -> np.ndarray:
    """X~ X~' of the column-centred data (centring first keeps the float64 Gram accurate;
    both HSIC estimators give the same value for X X' and X~ X~')."""
    x = as_float64(x)
    x = x - x.mean(0)
    return x @ x.T


def sq_distances(x) -> np.ndarray:
    """|x_i - x_j|^2 from explicit differences, one feature at a time (exact zeros on the
    diagonal, no |a|^2 + |b|^2 - 2ab cancellation)."""
    x = as_float64(x)
    d = np.zeros((len(x), len(x)))
    for col in x.T:
        d += (col[:, None] - col[None, :]) ** 2
    return d


def median_sq(x, rule: str = "kornblith") -> float:
    """Median squared distance: of all n^2 entries, zero diagonal included ("kornblith", the
    Kornblith et al. 2019 code), or of the n(n-1)/2 distinct pairs ("offdiag")."""
    d = sq_distances(x)
    if rule == "kornblith":
        return float(np.median(d))
    if rule == "offdiag":
        return float(np.median(d[np.triu_indices(len(d), 1)]))
    raise ValueError(f"rule must be one of {RULES}; got {rule!r}")


def rbf_gram(x, threshold: float = 1.0, rule: str = "kornblith", sigma: float | None = None):
    """K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2)), sigma^2 = threshold^2 * median_sq(x, rule)
    unless sigma is given."""
    sigma2 = sigma ** 2 if sigma is not None else threshold ** 2 * median_sq(x, rule)
    return np.exp(-sq_distances(x) / (2.0 * sigma2))


# ---- HSIC and CKA from Gram matrices ----------------------------------------------------------

def hsic_biased(k, l) -> float:
    """tr(K H L H) / (n - 1)^2 = <HKH, HLH>_F / (n - 1)^2 (Kornblith et al. 2019)."""
    n = k.shape[0]
    return float((double_centred(k) * double_centred(l)).sum() / (n - 1) ** 2)


def hsic_unbiased(k, l) -> float:
    """Song et al. (2012): with K~, L~ the kernels with zeroed diagonals,
    [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))."""
    n = k.shape[0]
    k, l = _off_diagonal_centred(k), _off_diagonal_centred(l)
    ks, ls = k.sum(1), l.sum(1)
    value = (k * l).sum() + ks.sum() * ls.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ks @ ls
    return float(value / (n * (n - 3)))


def _off_diagonal_centred(k) -> np.ndarray:
    """K - c 11' with c the mean off-diagonal entry, then the diagonal zeroed. The estimator is
    unchanged by any constant c (tests/test_reference.py checks it); with c the sums below stay
    small, so RBF Grams near 11' (wide bandwidths) do not cancel."""
    k = np.array(k, dtype=np.float64)
    n = k.shape[0]
    k -= (k.sum() - np.trace(k)) / (n * (n - 1))
    np.fill_diagonal(k, 0.0)
    return k


def hsic(k, l, debiased: bool = False) -> float:
    return hsic_unbiased(k, l) if debiased else hsic_biased(k, l)


def cka_from_grams(k, l, debiased: bool = False) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    return hsic(k, l, debiased) / np.sqrt(hsic(k, k, debiased) * hsic(l, l, debiased))


# ---- linear and RBF CKA of data ---------------------------------------------------------------

def linear_hsic_ref(x, y, debiased: bool = False) -> float:
    return hsic(linear_gram(x), linear_gram(y), debiased)


def linear_cka_ref(x, y, debiased: bool = False) -> float:
    return cka_from_grams(linear_gram(x), linear_gram(y), debiased)


def linear_cka_feature_space(x, y, debiased: bool = False) -> float:
    """Linear CKA from p x p moments of the exactly centred float64 data (for n too large for
    n x n Grams): biased |X~'Y~|_F^2 / (|X~'X~|_F |Y~'Y~|_F); debiased from Song et al.'s
    estimator with tr(K~L~) = |X~'Y~|_F^2 - a'b, a_i = |x~_i|^2, b_i = |y~_i|^2."""
    x, y = as_float64(x), as_float64(y)
    x, y = x - x.mean(0), y - y.mean(0)
    if not debiased:
        return float(np.linalg.norm(x.T @ y) ** 2
                     / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))
    n = len(x)
    a, b = (x * x).sum(1), (y * y).sum(1)

    def h(f_ab, ab, sa, sb):  # n(n-3) HSIC_u, with 1'K~ = -a for centred data
        return f_ab - n / (n - 2) * ab + sa * sb / ((n - 1) * (n - 2))

    hxy = h(np.linalg.norm(x.T @ y) ** 2, a @ b, a.sum(), b.sum())
    hxx = h(np.linalg.norm(x.T @ x) ** 2, a @ a, a.sum(), a.sum())
    hyy = h(np.linalg.norm(y.T @ y) ** 2, b @ b, b.sum(), b.sum())
    return float(hxy / np.sqrt(hxx * hyy))


def _sigmas(sigma):
    if sigma is None or np.ndim(sigma) == 0:
        return sigma, sigma
    return tuple(sigma)


def rbf_grams(x, y, threshold=1.0, rule="kornblith", sigma=None):
    sx, sy = _sigmas(sigma)
    return rbf_gram(x, threshold, rule, sx), rbf_gram(y, threshold, rule, sy)


def rbf_hsic_ref(x, y, threshold=1.0, rule="kornblith", debiased=False, sigma=None) -> float:
    return hsic(*rbf_grams(x, y, threshold, rule, sigma), debiased)


def rbf_cka_ref(x, y, threshold=1.0, rule="kornblith", debiased=False, sigma=None) -> float:
    """RBF CKA; sigma: None (median rule), a number (both sides) or (sigma_x, sigma_y)."""
    return cka_from_grams(*rbf_grams(x, y, threshold, rule, sigma), debiased)


# ---- kernel terms by brute force --------------------------------------------------------------

def kernel_terms_brute(x, y, gamma_x: float, gamma_y: float):
    """The RBF producers' KernelTerms of E = K - 1 and F = L - 1 (zero diagonals):
    sums of E*F, E*E, F*F over all (i, j) and the row sums of E and F."""
    from pyckafast._core.terms import KernelTerms  # the container only

    e = np.expm1(-gamma_x * sq_distances(x))
    f = np.expm1(-gamma_y * sq_distances(y))
    return KernelTerms(n=len(e), s_kl=float((e * f).sum()), s_kk=float((e * e).sum()),
                       s_ll=float((f * f).sum()), row_k=e.sum(1), row_l=f.sum(1))


# The peers' minibatch estimators, transcribed in float64 NumPy (their formulas, their order of
# operations; no centring, as they do). ``batches_a[b][i]`` is layer i of side a in batch b.

def torch_cka_hsic(k, l) -> float:
    """torch_cka 0.21 ``CKA._HSIC`` (its K, L have zero diagonals)."""
    n = k.shape[0]
    ones = np.ones((n, 1))
    result = np.trace(k @ l)
    result += (ones.T @ k @ ones @ ones.T @ l @ ones).item() / ((n - 1) * (n - 2))
    result -= (ones.T @ k @ l @ ones).item() * 2 / (n - 2)
    return 1 / (n * (n - 3)) * result


def torch_cka_minibatch(batches_a, batches_b) -> np.ndarray:
    """torch_cka 0.21 ``CKA.compare``: per batch every layer's Gram X X' (diagonal zeroed)."""
    nb = len(batches_a)
    m = np.zeros((len(batches_a[0]), len(batches_b[0]), 3))
    for xs, ys in zip(batches_a, batches_b):
        for i, x in enumerate(xs):
            x = as_float64(x).reshape(len(x), -1)
            k = x @ x.T
            np.fill_diagonal(k, 0.0)
            m[i, :, 0] += torch_cka_hsic(k, k) / nb
            for j, y in enumerate(ys):
                y = as_float64(y).reshape(len(y), -1)
                l = y @ y.T
                np.fill_diagonal(l, 0.0)
                m[i, j, 1] += torch_cka_hsic(k, l) / nb
                m[i, j, 2] += torch_cka_hsic(l, l) / nb
    return m[:, :, 1] / (np.sqrt(m[:, :, 0]) * np.sqrt(m[:, :, 2]))


def pytorch_cka_hsic(gx, gy):
    """pytorch-cka 1.1.3 ``hsic`` on stacks of Grams (diagonals kept, subtracted in the sums)."""
    n = gx.shape[1]
    dx, dy = np.diagonal(gx, axis1=1, axis2=2), np.diagonal(gy, axis1=1, axis2=2)
    sx, sy = gx.sum(axis=(1, 2)) - dx.sum(1), gy.sum(axis=(1, 2)) - dy.sum(1)
    cx, cy = gx.sum(axis=1) - dx, gy.sum(axis=1) - dy
    den, t2, t3 = n * (n - 3), (n - 1) * (n - 2), 2 / (n - 2)
    xy = (np.einsum("aij,bij->ab", gx, gy) - np.einsum("ai,bi->ab", dx, dy)
          + np.outer(sx, sy) / t2 - t3 * cx @ cy.T) / den
    xx = ((gx * gx).sum(axis=(1, 2)) - (dx * dx).sum(1) + sx * sx / t2
          - t3 * (cx * cx).sum(1)) / den
    yy = ((gy * gy).sum(axis=(1, 2)) - (dy * dy).sum(1) + sy * sy / t2
          - t3 * (cy * cy).sum(1)) / den
    return xy, xx, yy


def pytorch_cka_minibatch(batches_a, batches_b, clamp: bool = True) -> np.ndarray:
    """pytorch-cka 1.1.3 ``CKA._compare``: per-batch HSIC sums, then ``_compute_cka_matrix``
    (denominator clamped at 0, 1e-6 where 0, ratio clamped to [0, 1])."""
    hxy = hxx = hyy = 0.0
    for xs, ys in zip(batches_a, batches_b):
        grams = [np.stack([(a := as_float64(v).reshape(len(v), -1)) @ a.T for v in side])
                 for side in (xs, ys)]
        xy, xx, yy = pytorch_cka_hsic(*grams)
        hxy, hxx, hyy = hxy + xy, hxx + xx, hyy + yy
    if not clamp:
        return hxy / np.sqrt(np.outer(hxx, hyy))
    den = np.sqrt(np.clip(np.outer(hxx, hyy), 0.0, None))
    den = np.where(den == 0, 1e-6, den)
    return np.clip(hxy / den, 0.0, 1.0)
