"""Minibatch CKA (Nguyen, Raghu and Kornblith 2021): a different estimator from full-sample CKA.

:func:`minibatch_cka` estimates one pair from two arrays. :class:`MinibatchMap` is the layer-map
form that torch_cka and pytorch-cka compute inside a model loop (``compat.torch_cka`` and
``compat.pytorch_cka`` with ``minibatch=True``, ``compare_models(estimator="minibatch")``): per
batch, each layer's b x b Gram once (:func:`batch_gram`, a GEMM in the activations' own float
dtype, in torch's own thread pool or on its GPU for torch tensors), then every layer pair's
unbiased HSIC from one GEMM of the stacked Grams (``_core.minibatch_terms``), summed in float64.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import numpy as np

from ._core import combine, dispatch, params
from ._core import minibatch_terms as terms
from ._core.threads import blas_threads, torch_aware_threads
from ._core.inputs import prepare_pair
from ._core.params import validate_params
from ._core.types import ArrayLike, Backend, Bandwidth, Kernel, Sigma
from ._core.validation import min_samples
from .rbf import RBF_OPTIONS_SPEC, RBFOptions

__all__ = ["minibatch_cka", "batch_triples", "batch_gram", "MinibatchMap"]

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



def _module(a) -> str:
    return type(a).__module__.split(".")[0]


# Above this share of the rows' energy in their common offset, 1'G1 / (b tr G), the batch is
# centred and its Gram formed again. Below it the float32 Gram of the rows as they are loses at
# most a factor of about share / (1 - share) = 9 of accuracy to the centred one (measured: the
# estimate within 3e-8 of float64 at a share of 0.86; tests/test_minibatch.py); the unbiased
# HSIC does not change when every row is shifted, so the value is the same. Zero-mean layers
# sit near 0, ReLU outputs near 0.3, a layer with a large common offset (or constant) near 1.
OFFSET_SHARE = 0.9


def batch_gram(x):
    """Return one batch's linear Gram, in the input's float dtype, accurate for any offset.

    One GEMM of the rows as they are; when their common offset carries more than
    ``OFFSET_SHARE`` (0.9) of their energy (``1'G1 / (b tr G)``, read off that Gram), the rows are
    centred and the GEMM done again, so a float32 Gram of data with a large mean keeps its
    precision. The unbiased HSIC does not change when every row is shifted by the same
    vector, so either Gram gives the same estimate. The GEMM runs in the input's float dtype
    (float16/bfloat16: float32; integers: float32 for torch, float64 for NumPy), on its device
    and in its library's thread pool (torch, CuPy or NumPy's BLAS). The estimate takes these
    (:meth:`MinibatchMap.update_grams`) and does the rest in float64 on the stack.

    Parameters
    ----------
    x : numpy.ndarray, torch.Tensor or cupy.ndarray, shape (b, ...)
        One batch of one layer's activations; the dimensions after the first are flattened.

    Returns
    -------
    array, shape (b, b)
        In the float dtype of the (upcast) input: a NumPy array for host data (CPU tensors
        included: the GEMM is torch's, the rest NumPy's), else of the input's library and
        device.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.minibatch import batch_gram
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0], [0.0, 1.0]], dtype=np.float32) + 1e4
    >>> g = batch_gram(x)  # large offset: centred, so its rows sum to 0
    >>> g.dtype, g.shape, bool(np.allclose(g.sum(axis=1), 0, atol=1e-3))
    (dtype('float32'), (4, 4), True)
    """
    if _module(x) == "torch":
        torch = sys.modules["torch"]
        x = x.detach().reshape(x.shape[0], -1)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        if x.device.type == "cpu":
            # The b x b work after the GEMM is NumPy's, on this thread: each small torch op
            # is a barrier of torch's whole OpenMP team, a long wait when other processes hold
            # its cores, for microseconds of work.
            gram = _syrk_gram if torch.get_num_threads() == 1 else _torch_gram
            g = gram(torch, x)
            if float(g.sum()) > OFFSET_SHARE * x.shape[0] * float(np.trace(g)):
                g = gram(torch, x - x.mean(0))
            return g
        g = x @ x.T
        if float(g.sum()) > OFFSET_SHARE * x.shape[0] * float(g.trace()):
            xc = x - x.mean(0)
            g = xc @ xc.T
        return g
    xp = sys.modules["cupy"] if _module(x) == "cupy" else np
    x = xp.asarray(x)
    x = x.reshape(x.shape[0], -1)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32 if x.dtype.kind == "f" else np.float64)
    with blas_threads(torch_aware_threads()) if xp is np else contextlib.nullcontext():
        g = x @ x.T
        if float(g.sum()) > OFFSET_SHARE * x.shape[0] * float(xp.trace(g)):
            xc = x - x.mean(axis=0)
            g = xc @ xc.T
    return g


# torch's CPU GEMM computes all of x x' (it has no SYRK); from this width on the Gram of a
# batch is made in quarters of rows, each block once (10 of the 16, in three calls): 25-30%
# faster at p = 4,096-16,384 on 2 cores, slower below (small GEMMs).
_QUARTERS_FROM = 2048


def _torch_gram(torch, x) -> np.ndarray:
    """x x' of a CPU tensor as a NumPy array, the upper blocks computed once when wide."""
    b = x.shape[0]
    if x.shape[1] < _QUARTERS_FROM or b % 4:
        return (x @ x.T).numpy()
    q, h = b // 4, b // 2
    quarters = x.reshape(4, q, -1)
    diagonal = torch.bmm(quarters, quarters.transpose(1, 2)).numpy()  # (0,0) (1,1) (2,2) (3,3)
    inner = torch.bmm(quarters[0::2], quarters[1::2].transpose(1, 2)).numpy()  # (0,1) (2,3)
    outer = (x[:h] @ x[h:].T).numpy()  # rows 0-1 against rows 2-3
    g = np.empty((b, b), diagonal.dtype)
    for k in range(4):
        g[k * q:(k + 1) * q, k * q:(k + 1) * q] = diagonal[k]
    for k in range(2):
        lo, mid, hi = 2 * k * q, (2 * k + 1) * q, (2 * k + 2) * q
        g[lo:mid, mid:hi] = inner[k]
        g[mid:hi, lo:mid] = inner[k].T
    g[:h, h:] = outer
    g[h:, :h] = outer.T
    return g


def _syrk_gram(torch, x) -> np.ndarray:
    """x x' of a CPU tensor by NumPy's BLAS SYRK (``a @ a.T`` of one buffer: half the work of a
    GEMM), for a thread on which torch runs one thread (e.g. one of two models side by side,
    ``pyckafast._torch.side_by_side``): there its GEMM has no pool to spread over, and SYRK on
    one thread took 0.6-0.8x its time at p = 256-16,384 (b = 256). NumPy releases the GIL."""
    a = x.contiguous().numpy()
    return a @ a.T


def _float64_zero_diagonal(grams: list, reuse: dict | None = None):
    """The Grams as one float64 (L, b, b) stack with zero diagonals: a few batched operations
    for all layers (every operation is a wait for the thread pool on a loaded machine).
    ``reuse``: NumPy stacks kept from earlier batches, by shape (a fresh stack of a few MB
    costs its page faults on every batch)."""
    first = grams[0]
    if _module(first) == "torch":
        torch = sys.modules["torch"]
        stack = torch.stack(grams).to(torch.float64)
        stack.diagonal(dim1=1, dim2=2).zero_()
        return stack
    xp = sys.modules["cupy"] if _module(first) == "cupy" else np
    b = first.shape[0]
    shape = (len(grams), b, b)
    if reuse is None or xp is not np:
        stack = xp.empty(shape, np.float64)
    else:
        stack = reuse.get(shape)
        if stack is None:
            stack = reuse[shape] = np.empty(shape, np.float64)
    for layer, g in zip(stack, grams):  # one pass per Gram: cast while copying
        layer[...] = g
    stack.reshape(len(grams), -1)[:, ::b + 1] = 0.0  # the diagonals
    return stack


def _products_kernel(grams: list):
    """The C++ extension's one-pass products for these Grams (NumPy, C-contiguous, all float32
    or all float64), else None (device arrays, mixed dtypes, or no extension: the float64
    stacks). The pass reads each Gram once and sums in float64: 4x faster than casting the
    stacks and three GEMMs over them (0.26 ms for 4 + 4 Grams of 256 samples)."""
    dtype = grams[0].dtype if isinstance(grams[0], np.ndarray) else None
    if dtype not in (np.float32, np.float64):
        return None
    if not all(isinstance(g, np.ndarray) and g.dtype == dtype and g.flags.c_contiguous
               for g in grams):
        return None
    from ._cpu.ops_cpp import _ext

    if _ext is None:
        return None
    return _ext.gram_products_f32 if dtype == np.float32 else _ext.gram_products_f64


def _host(a):
    lib = _module(a)
    if lib == "torch":
        return lambda t: t.cpu().numpy()
    if lib == "cupy":
        return lambda t: t.get()
    return np.asarray


class MinibatchMap:
    """The minibatch CKA map of Nguyen et al. (2021), as torch_cka and pytorch-cka estimate it.

    Per batch of b >= 4 samples the unbiased HSIC (Song et al. 2012) of every pair of layers,
    summed over the batches in float64:
    ``CKA[i, j] = sum_b HSIC_1(K_i, L_j) / sqrt(sum_b HSIC_1(K_i, K_i) sum_b HSIC_1(L_j, L_j))``.
    The estimate depends on the batches (their size and order), unlike the exact CKA.

    Parameters
    ----------
    symmetric : bool, default False
        Side b is side a (``update(xs)`` with no ``ys``): the map of the layers among
        themselves.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.minibatch import MinibatchMap
    >>> rng = np.random.default_rng(0)
    >>> acc = MinibatchMap()
    >>> for _ in range(4):
    ...     x = rng.normal(size=(64, 5)).astype(np.float32)
    ...     acc.update([x, x ** 2], [3 * x])
    >>> m = acc.result()
    >>> m.shape, round(float(m[0, 0]), 6)
    ((2, 1), 1.0)
    """

    def __init__(self, symmetric: bool = False) -> None:
        self.symmetric = bool(symmetric)
        self.sums = terms.MinibatchSums()
        self._stacks: tuple[dict, dict] = ({}, {})  # each side's float64 stacks, by shape

    def update(self, xs: Sequence, ys: Sequence | None = None) -> None:
        """Add one batch: each layer's activations on side a and side b.

        A tensor given on both sides (the same object) has its Gram formed once.

        Parameters
        ----------
        xs : sequence of array
            Side a's layers for this batch, each (b, ...) (NumPy, torch or CuPy).
        ys : sequence of array, optional
            Side b's layers (the same b samples); None for a symmetric map.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.minibatch import MinibatchMap
        >>> acc = MinibatchMap(symmetric=True)
        >>> x = np.random.default_rng(1).normal(size=(8, 3))
        >>> acc.update([x, -x])
        >>> acc.result().round(6).tolist()
        [[1.0, 1.0], [1.0, 1.0]]
        """
        grams: dict[int, object] = {}

        def gram(a):
            if id(a) not in grams:
                grams[id(a)] = batch_gram(a)
            return grams[id(a)]

        ga = [gram(x) for x in xs]
        gb = None if ys is None else [gram(y) for y in ys]
        self.update_grams(ga, gb)

    def update_grams(self, grams_a: Sequence, grams_b: Sequence | None = None) -> None:
        """Add one batch from its Grams (:func:`batch_gram` of each layer).

        Parameters
        ----------
        grams_a : sequence of array
            Side a's (b, b) Grams of rows about their batch mean, of one library and device.
        grams_b : sequence of array, optional
            Side b's; None for a symmetric map.

        Raises
        ------
        ValueError
            Batches of fewer than 4 samples, Grams of different sizes, an empty side, or one
            side given to a two-sided map (two to a symmetric one).

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.minibatch import MinibatchMap, batch_gram
        >>> x = np.random.default_rng(2).normal(size=(8, 3))
        >>> acc = MinibatchMap()
        >>> acc.update_grams([batch_gram(x)], [batch_gram(2 * x)])
        >>> round(float(acc.result()[0, 0]), 9)
        1.0
        """
        if (grams_b is None) != self.symmetric:
            raise ValueError("a symmetric map takes one list of layers per batch (ys=None), a "
                             "two-sided map two lists; got "
                             f"{'one' if grams_b is None else 'two'}.")
        if not grams_a or (grams_b is not None and not grams_b):
            raise ValueError("each side needs at least one layer; got an empty list.")
        sizes = {int(g.shape[0]) for g in [*grams_a, *(grams_b or [])]}
        if len(sizes) != 1:
            raise ValueError(f"every layer of a batch must have the same samples; got batch "
                             f"sizes {sorted(sizes)}.")
        (b,) = sizes
        if b < 4:
            raise ValueError(f"the minibatch estimate needs batches of at least 4 samples (the "
                             f"unbiased HSIC divides by b(b-3)); got a batch of {b}.")
        kernel = _products_kernel([*grams_a, *(grams_b or [])])
        if kernel is not None:  # host Grams: one pass over them as they are
            products = kernel(list(grams_a), None if grams_b is None else list(grams_b))
            trace, sq_a, rows_a, sq_b, rows_b = products
            side_b = () if grams_b is None else (sq_b, rows_b)
            self.sums.add(terms.hsic_from_products(b, trace, sq_a, rows_a, *side_b), b)
            return
        sa = _float64_zero_diagonal(list(grams_a), self._stacks[0])
        sb = None if grams_b is None else _float64_zero_diagonal(list(grams_b), self._stacks[1])
        self.sums.add(terms.batch_hsic_terms(sa, sb, host=_host(sa)), b)

    def hsic(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the float64 sums of the per-batch unbiased HSIC values.

        Returns
        -------
        hxy : ndarray, shape (La, Lb)
            Summed HSIC_1 of every pair.
        hxx : ndarray, shape (La,)
            Side a's summed self-HSIC (0 for a layer without variance).
        hyy : ndarray, shape (Lb,)
            Side b's.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.minibatch import MinibatchMap
        >>> x = np.random.default_rng(3).normal(size=(8, 3))
        >>> acc = MinibatchMap()
        >>> acc.update([x], [x])
        >>> hxy, hxx, hyy = acc.hsic()
        >>> bool(np.isclose(hxy[0, 0], hxx[0]))
        True
        """
        return self.sums.totals()

    def result(self) -> np.ndarray:
        """Return the minibatch CKA map.

        Returns
        -------
        ndarray, shape (La, Lb)
            Float64; nan with a RuntimeWarning for a layer without variance in every batch
            (its summed self-HSIC is rounding residue of its own scale,
            ``_core.minibatch_terms.ZERO_VARIANCE``).

        Raises
        ------
        ValueError
            Before the first batch.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.minibatch import MinibatchMap
        >>> x = np.random.default_rng(4).normal(size=(8, 3))
        >>> acc = MinibatchMap()
        >>> acc.update([x], [x + 5])
        >>> round(float(acc.result()[0, 0]), 9)
        1.0
        """
        return terms.cka_map(*self.hsic())
