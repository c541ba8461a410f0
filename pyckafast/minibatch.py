"""Minibatch CKA (Nguyen, Raghu and Kornblith 2021): a different estimator from full-sample CKA."""

from __future__ import annotations

import numpy as np

from ._core import combine
from ._cpu import linear as cpu_linear
from ._core.validation import as_samples, check_same_n
from .rbf import RBFOptions, Kernel, Sigma, rbf_triple

__all__ = ["minibatch_cka", "batch_triples"]


def minibatch_cka(
    x, y, batch_size: int, *, kernel: Kernel = "linear", debiased: bool = True,
    seed: int | None = 0, sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: str = "kornblith", backend: str = "auto",
) -> float:
    """Minibatch CKA of Nguyen et al. (2021): HSIC averaged over batches, then normalised.

    ``CKA_mb = mean_b HSIC(K_b, L_b) / sqrt(mean_b HSIC(K_b, K_b) * mean_b HSIC(L_b, L_b))``
    where K_b, L_b are the kernel matrices of batch b.

    This is **not** full-sample CKA: it estimates a different quantity and only approaches
    :func:`linear_cka` / :func:`rbf_cka` as ``batch_size`` grows. With the unbiased HSIC
    (``debiased=True``, the paper's choice) the per-batch values are unbiased, so the average
    does not depend on the batch size in expectation; with the biased HSIC it does.

    Parameters
    ----------
    x, y : array_like, shapes (n, p1) and (n, p2)
        Two representations of the same n samples.
    batch_size : int
        Samples per batch (>= 4 if debiased). The samples are shuffled with ``seed`` (None:
        keep their order) and cut into n // batch_size full batches; the remaining
        n % batch_size samples are left out.
    kernel : {"linear", "rbf"}, default "linear"
    debiased : bool, default True
        Unbiased HSIC (Song et al. 2012) per batch; False: biased HSIC.
    sigma, threshold, bandwidth : RBF bandwidth, as in :func:`rbf_cka`; without ``sigma`` the
        median rule is applied to each batch on its own.
    backend : str, default "auto"
        Backend of the per-batch terms.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 10))
    >>> round(pyckafast.minibatch_cka(x, 3 * x, batch_size=100), 10)
    1.0
    >>> 0 < pyckafast.minibatch_cka(x, x ** 2, batch_size=100, kernel="rbf") < 1
    True
    """
    triples = batch_triples(x, y, batch_size, kernel=kernel, debiased=debiased, seed=seed,
                            sigma=sigma, threshold=threshold, bandwidth=bandwidth,
                            backend=backend)
    # Batches may hold their HSIC for kernels scaled by different powers of two (data of
    # extreme magnitude): average them on the largest scale, where none can overflow.
    log2_k, log2_l = max(t.log2_k for t in triples), max(t.log2_l for t in triples)
    mean = np.mean([t.rescaled(log2_k, log2_l)[:3] for t in triples], axis=0)
    zero_x = all(t.zero_x for t in triples)
    zero_y = all(t.zero_y for t in triples)
    return combine.cka_from_hsic(
        combine.HSICTriple(*map(float, mean), zero_x, zero_y, log2_k, log2_l))


def batch_triples(
    x, y, batch_size: int, *, kernel: Kernel = "linear", debiased: bool = True,
    seed: int | None = 0, sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: str = "kornblith", backend: str = "auto",
) -> list[combine.HSICTriple]:
    """The HSIC triple of every batch (see :func:`minibatch_cka`)."""
    x, y = as_samples(x, "x"), as_samples(y, "y")
    need = 4 if debiased else 2
    n = check_same_n(x, y, need, why="a batch needs them")
    if int(batch_size) != batch_size or not need <= batch_size <= n:
        raise ValueError(
            f"batch_size must be an integer between {need} and n = {n}; got {batch_size!r}."
        )
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}.")
    batch_size = int(batch_size)
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    options = RBFOptions.of(sigma, threshold, bandwidth) if kernel == "rbf" else None
    triples = []
    for lo in range(0, n - batch_size + 1, batch_size):
        idx = np.sort(order[lo:lo + batch_size])
        xb, yb = x[idx], y[idx]
        if options is None:
            terms = cpu_linear.feature_terms(xb, yb, backend=backend, debiased=debiased)
            triples.append(combine.linear_hsic(terms, debiased))
        else:
            triples.append(rbf_triple(xb, yb, debiased=debiased, options=options,
                                      backend=backend))
    return triples
