"""Minibatch CKA (Nguyen, Raghu and Kornblith 2021): a different estimator from full-sample CKA."""

from __future__ import annotations

import numpy as np

from ._core import combine, dispatch, params
from ._core.inputs import prepare_pair
from ._core.params import validate_params
from ._core.types import ArrayLike, Backend, Bandwidth, Kernel, Sigma
from ._core.validation import min_samples
from .rbf import RBF_OPTIONS_SPEC, RBFOptions

__all__ = ["minibatch_cka", "batch_triples"]

MINIBATCH_SPEC = {
    "batch_size": [params.positive_int()], "kernel": params.KERNEL, "debiased": params.BOOLEAN,
    "seed": [*params.SEED, params.OPTIONAL], "backend": params.BACKEND,
    **{k: RBF_OPTIONS_SPEC[k] for k in ("sigma", "threshold", "bandwidth")},
}


@validate_params(MINIBATCH_SPEC)
def minibatch_cka(
    x: ArrayLike, y: ArrayLike, batch_size: int, *, kernel: Kernel = "linear",
    debiased: bool = True, seed: int | None = 0, sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: Bandwidth = "kornblith", backend: Backend = "auto",
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
    x : array_like, shape (n, p1)
        First representation, one row per sample.
    y : array_like, shape (n, p2)
        Second representation of the same n samples.
    batch_size : int
        Samples per batch (>= 4 if debiased). The samples are shuffled with ``seed`` (None:
        keep their order) and cut into n // batch_size full batches; the remaining
        n % batch_size samples are left out.
    kernel : {"linear", "rbf"}, default "linear"
        Kernel of the per-batch Gram matrices.
    debiased : bool, default True
        Unbiased HSIC (Song et al. 2012) per batch; False: biased HSIC.
    seed : int, optional
        Seed of the shuffle; None keeps the samples in their order.
    sigma : float or (float, float), optional
        Explicit RBF bandwidths, as in :func:`rbf_cka`; without it the median rule is applied
        to each batch on its own.
    threshold : float, default 1.0
        Multiplier of the median distance of the RBF median rule (as in :func:`rbf_cka`).
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        Which median of the squared distances (as in :func:`rbf_cka`).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Backend of the per-batch terms. GPU inputs (CuPy, torch CUDA) or ``backend="cuda"``:
        each batch is one HSIC-matrix GEMM on the device (the same estimator).

    Returns
    -------
    float
        The minibatch CKA; nan with a RuntimeWarning when every batch of x (or y) has zero
        variance.

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


@validate_params(MINIBATCH_SPEC)
def batch_triples(
    x: ArrayLike, y: ArrayLike, batch_size: int, *, kernel: Kernel = "linear",
    debiased: bool = True, seed: int | None = 0, sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: Bandwidth = "kornblith", backend: Backend = "auto",
) -> list[combine.HSICTriple]:
    """Compute the HSIC triple of every batch (see :func:`minibatch_cka`).

    Parameters
    ----------
    x : array_like, shape (n, p1)
        First representation, one row per sample.
    y : array_like, shape (n, p2)
        Second representation of the same n samples.
    batch_size : int
        Samples per batch (>= 4 if debiased). The samples are shuffled with ``seed`` (None:
        keep their order) and cut into n // batch_size full batches; the remaining
        n % batch_size samples are left out.
    kernel : {"linear", "rbf"}, default "linear"
        Kernel of the per-batch Gram matrices.
    debiased : bool, default True
        Unbiased HSIC (Song et al. 2012) per batch; False: biased HSIC.
    seed : int, optional
        Seed of the shuffle; None keeps the samples in their order.
    sigma : float or (float, float), optional
        Explicit RBF bandwidths, as in :func:`rbf_cka`; without it the median rule is applied
        to each batch on its own.
    threshold : float, default 1.0
        Multiplier of the median distance of the RBF median rule (as in :func:`rbf_cka`).
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        Which median of the squared distances (as in :func:`rbf_cka`).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Backend of the per-batch terms. GPU inputs (CuPy, torch CUDA) or ``backend="cuda"``:
        each batch is one HSIC-matrix GEMM on the device (the same estimator).

    Returns
    -------
    list of HSICTriple
        Per batch, in batch order: HSIC(x, y), HSIC(x, x) and HSIC(y, y) of the batch, with
        the power-of-two scales of its kernels (``pyckafast._core.combine.HSICTriple``).

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.minibatch import batch_triples
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> triples = batch_triples(x, 2 * x, batch_size=10)
    >>> len(triples), all(t.xy > 0 for t in triples)
    (4, True)
    """
    need, why = min_samples(debiased)
    sx, sy, n = prepare_pair(x, y, min_n=need, why=f"a batch needs them: {why}", finite=True)
    if not need <= batch_size <= n:
        raise ValueError(
            f"batch_size must be an integer between {need} and n = {n}; got {batch_size!r}."
        )
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    batches = [np.sort(order[lo:lo + batch_size]) for lo in range(0, n - batch_size + 1, batch_size)]
    options = RBFOptions.of(sigma, threshold, bandwidth) if kernel == "rbf" else None
    produce = dispatch.producer("minibatch", sx.kind, backend)
    return produce(sx, sy, batches, kernel=kernel, debiased=debiased, options=options)
