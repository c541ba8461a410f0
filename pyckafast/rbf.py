"""Exact RBF (Gaussian-kernel) CKA and HSIC in O(n) memory, and the kernel-generic entry points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._core import dispatch, bandwidth as bw, combine, params
from ._core.inputs import prepare_pair
from ._core.params import StrOptions, positive_int, positive_real, validate_params
from ._core.types import ArrayLike, Backend, Bandwidth, Form, Kernel, Precision, Sigma
from ._core.validation import min_samples
from ._core.progress import Progress
from ._cpu import rbf as cpu_rbf
from ._core.passes import run_producer

__all__ = ["rbf_cka", "rbf_hsic", "cka", "hsic", "RBFOptions", "RBF_OPTIONS_SPEC"]

# Kernel and Sigma (from _core.types) stay importable from here: cka_matrix and minibatch do.

# How the bandwidths are chosen: shared by every public function with RBF options.
RBF_OPTIONS_SPEC: dict[str, list] = {
    "sigma": params.SIGMA,
    "threshold": [positive_real()],
    "bandwidth": [StrOptions(bw.RULES)],
    "n_pairs": [positive_int()],
    "seed": params.SEED,
}

RBF_SPEC = {**RBF_OPTIONS_SPEC, "debiased": params.BOOLEAN, "backend": params.BACKEND,
            "tile": params.ROWS, "progress": params.PROGRESS}


@dataclass(frozen=True)
class RBFOptions:
    """How the RBF bandwidths are chosen (validated once; see :func:`rbf_cka`).

    Parameters
    ----------
    sigma : (float, float), optional
        Explicit (sigma_x, sigma_y); None selects each from the data with ``bandwidth``.
    threshold : float, default 1.0
        Multiplier of the median distance: sigma^2 = threshold^2 * median squared distance.
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        Which median of the squared distances (see :func:`rbf_cka`).
    n_pairs : int, default 100000
        Pairs drawn by ``bandwidth="sampled"``.
    seed : int or None, default 0
        Seed of ``bandwidth="sampled"``.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.rbf import RBFOptions
    >>> RBFOptions.of(sigma=2.0).gammas(np.zeros((3, 1)), np.ones((3, 1)))
    (0.125, 0.125)
    """

    sigma: tuple[float, float] | None = None
    threshold: float = 1.0
    bandwidth: str = "kornblith"
    n_pairs: int = 100_000
    seed: int | None = 0

    @classmethod
    def of(cls, sigma: Sigma = None, threshold: float = 1.0, bandwidth: Bandwidth = "kornblith",
           n_pairs: int = 100_000, seed: int | None = 0) -> RBFOptions:
        """Build options from values the public function's spec (``RBF_OPTIONS_SPEC``) checked.

        Parameters
        ----------
        sigma : float or (float, float), optional
            One bandwidth for both sides, a (sigma_x, sigma_y) pair, or None (median rule).
        threshold : float, default 1.0
            Multiplier of the median distance (see :func:`rbf_cka`).
        bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
            Which median of the squared distances (see :func:`rbf_cka`).
        n_pairs : int, default 100000
            Pairs drawn by ``bandwidth="sampled"``.
        seed : int or None, default 0
            Seed of ``bandwidth="sampled"``.

        Returns
        -------
        RBFOptions
            The options, with ``sigma`` as a pair of floats or None.

        Examples
        --------
        >>> from pyckafast.rbf import RBFOptions
        >>> RBFOptions.of(sigma=1).sigma
        (1.0, 1.0)
        """
        return cls(_sigma_pair(sigma), float(threshold), bandwidth, int(n_pairs),
                   None if seed is None else int(seed))

    def gammas(self, x: np.ndarray, y: np.ndarray, tile: int | None = None,
               backend: Backend = "auto") -> tuple[float, float]:
        """Return gamma_x, gamma_y of K = exp(-gamma_x |x_i - x_j|^2) and L likewise.

        Parameters
        ----------
        x : numpy.ndarray, shape (n, p1)
            First representation (host data).
        y : numpy.ndarray, shape (n, p2)
            Second representation (host data).
        tile : int, optional
            Rows per block of the median passes (default: the backend's).
        backend : {"auto", "numpy", "numba", "cpp"}, default "auto"
            CPU backend of the exact median passes.

        Returns
        -------
        (float, float)
            The gamma = 1 / (2 sigma^2) of x and that of y.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.rbf import RBFOptions
        >>> x = np.array([[0.0], [1.0], [3.0]])
        >>> RBFOptions.of(bandwidth="offdiag").gammas(x, 2 * x)
        (0.125, 0.03125)
        """
        return self.gamma(x, "x", 0, tile, backend), self.gamma(y, "y", 1, tile, backend)

    def gamma(self, a: np.ndarray, name: str, side: int = 0, tile: int | None = None,
              backend: Backend = "auto") -> float:
        """Return gamma = 1 / (2 sigma^2) of the host input ``a``.

        Parameters
        ----------
        a : numpy.ndarray, shape (n, p)
            The representation (host data).
        name : str
            Its name in error messages ("x" or "y").
        side : int, default 0
            Which sigma of an explicit pair applies: 0 for x, 1 for y.
        tile : int, optional
            Rows per block of the exact median passes (default: the backend's).
        backend : {"auto", "numpy", "numba", "cpp"}, default "auto"
            CPU backend of the median passes.

        Returns
        -------
        float
            The gamma of ``a``'s kernel.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.rbf import RBFOptions
        >>> RBFOptions.of(sigma=(1.0, 0.5)).gamma(np.zeros((2, 1)), "y", side=1)
        2.0
        """
        if self.sigma is not None:  # no pass over the data
            return bw.gamma_from_sigma(self.sigma[side])
        ops = dispatch.resolve(backend, "rbf_tile", "cpu")
        return cpu_rbf.side_gamma(self, cpu_rbf.centred(a, name, ops), side, ops=ops, tile=tile)


def _sigma_pair(sigma: Sigma) -> tuple[float, float] | None:
    """(sigma_x, sigma_y) from None, one number or a pair (already checked by the spec)."""
    if sigma is None:
        return None
    if np.ndim(sigma) == 0:
        return float(sigma), float(sigma)  # type: ignore[arg-type]
    return float(sigma[0]), float(sigma[1])  # type: ignore[index]


def _hsic_triple(x, y, *, debiased: bool, backend: str, tile: int | None,
                 options: RBFOptions, progress=None) -> combine.HSICTriple:
    # Checked before any pass over pairs: the bandwidth passes would otherwise meet a NaN first.
    min_n, why = min_samples(debiased)
    sx, sy, _ = prepare_pair(x, y, min_n=min_n, why=why, finite=True)
    produce = dispatch.producer("rbf", sx.kind, backend)
    return run_producer(produce, dispatch.place(sx.kind, backend), progress, sx, sy,
                        desc="rbf pairs", debiased=debiased, options=options, tile=tile)


@validate_params(RBF_SPEC, rules=params.RBF_RULES)
def rbf_cka(
    x: ArrayLike, y: ArrayLike, *, sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: Bandwidth = "kornblith", debiased: bool = False, backend: Backend = "auto",
    tile: int | None = None,
    n_pairs: int = 100_000, seed: int | None = 0, progress: Progress = None,
) -> float:
    """Exact CKA with Gaussian (RBF) kernels, in one tiled pass and O(n) memory.

    Parameters
    ----------
    x, y : array_like, shapes (n, p1) and (n, p2)
        Two representations of the same n samples (rows). NumPy arrays, memmaps and torch
        tensors; CuPy arrays and torch CUDA tensors run on the GPU; Dask arrays are reduced
        lazily over pairs of row chunks (as :func:`pyckafast.dask.rbf_cka`; one ``sigma`` for
        both sides there).
    sigma : float or (float, float), optional
        Explicit bandwidths: K_ij = exp(-|x_i - x_j|^2 / (2 sigma_x^2)). A scalar is used for
        both sides. ``threshold``, ``bandwidth``, ``n_pairs`` and ``seed`` choose the bandwidth
        from the data, so giving one of them with ``sigma`` is an error.
    threshold : float, default 1.0
        Multiplier of the median distance: sigma^2 = threshold^2 * (median squared distance),
        per side.
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        Which median: of all n^2 squared distances including the n diagonal zeros (Kornblith
        et al. 2019 reference code), of the n(n-1)/2 distinct pairs, or of ``n_pairs`` random
        distinct pairs drawn with ``seed``. The first two are exact (histogram selection over
        tiles, O(n) memory, two to four extra distance passes).
    debiased : bool, default False
        False: from the biased HSIC tr(KHLH)/(n-1)^2. True: from the unbiased HSIC of Song et
        al. (2012) ("debiased CKA"); needs n >= 4. One pass gives both.
    backend : {"auto", "cpp", "numba", "numpy", "cuda"}, default "auto"
        Who evaluates the tiles. On the CPU, distances come from BLAS GEMMs in the input dtype.
        CuPy arrays and torch CUDA tensors go to "cuda" (fused tile kernel, bandwidth passes on
        the device); ``backend="cuda"`` with host input copies it to the GPU first.
    tile : int, optional
        Rows per tile (default 1024 for float64, 2048 for float32). The result does not depend
        on it beyond float64 rounding.
    n_pairs : int
        Sample size of ``bandwidth="sampled"`` (an error with another rule).
    seed : int or None
        Seed of ``bandwidth="sampled"`` (None: fresh entropy from the OS, numpy's convention;
        None is accepted, and ignored, with the other rules).
    progress : None, bool or callable, optional
        None/False: silent (default). True: a tqdm bar on stderr (``pip install
        pyckafast[cli]``). A callable: ``progress(done, total)`` after each block pair of the
        RBF pass (the exact-median passes before it are not counted; Dask inputs count tasks,
        GPU inputs one unit for the device pass).

    Returns
    -------
    float
        CKA; nan with a RuntimeWarning when a kernel matrix has no variance after centring,
        e.g. when every sample of x (or y) is the same point (as :func:`linear_cka`).

    Raises
    ------
    ValueError
        Bad sigma/threshold, or a median squared distance of 0 while the points are not all
        equal (at least half of the pairs are identical points): pass ``sigma`` explicitly then.

    Warns
    -----
    RuntimeWarning
        When a bandwidth makes a kernel numerically the identity (its off-diagonal entries
        below the compute dtype's eps on average: CKA then says nothing about the data, e.g.
        1.0 for any two inputs) or all ones (every entry within eps of 1).

    Notes
    -----
    The pass accumulates, per tile and in float64, S_KL = sum E_ij F_ij, S_KK, S_LL and the row
    sums of E = 2^m K - c over the pairs i != j (F likewise), with per-kernel constants: c the
    typical entry exp(-gamma median) scaled by 2^m, 2^m bringing the typical entry near 1 (see
    ``pyckafast._core.rbf_entry``). Both HSIC estimators are invariant to subtracting a
    constant from every kernel entry and CKA to scaling a kernel, so neither wide bandwidths (K
    near 1: c near 1, the expm1 form) nor narrow ones (K << 1, where K - 1 cancelled in the
    unbiased estimator) lose precision: relative error about 1e-13 (float64) from threshold 0.05
    to 20. The data are centred first so the distance expansion |a|^2 + |b|^2 - 2a.b stays
    accurate; float32 kernels narrower than gamma * median = 64 (threshold < 0.088) are
    evaluated in float64.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 16))
    >>> round(pyckafast.rbf_cka(x, 2.0 * x + 5.0), 10)
    1.0
    >>> 0.0 < pyckafast.rbf_cka(x, np.tanh(x), threshold=0.5, debiased=True) < 1.0
    True
    """
    options = RBFOptions.of(sigma, threshold, bandwidth, n_pairs, seed)
    return combine.cka_from_hsic(_hsic_triple(x, y, debiased=debiased, backend=backend, tile=tile,
                                              options=options, progress=progress))


@validate_params(RBF_SPEC, rules=params.RBF_RULES)
def rbf_hsic(
    x: ArrayLike, y: ArrayLike, *, sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: Bandwidth = "kornblith", debiased: bool = False, backend: Backend = "auto",
    tile: int | None = None,
    n_pairs: int = 100_000, seed: int | None = 0, progress: Progress = None,
) -> float:
    """HSIC with RBF kernels: biased tr(KHLH)/(n-1)^2 or unbiased (Song et al. 2012).

    Parameters
    ----------
    x : array_like, shape (n, p1)
        First representation, one row per sample (inputs as in :func:`rbf_cka`).
    y : array_like, shape (n, p2)
        Second representation of the same n samples.
    sigma : float or (float, float), optional
        Explicit bandwidths (one for both sides, or a pair); None selects them from the data.
    threshold : float, default 1.0
        Multiplier of the median distance: sigma^2 = threshold^2 * (median squared distance).
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        Which median of the squared distances (see :func:`rbf_cka`).
    debiased : bool, default False
        False: the biased estimator; True: the unbiased one of Song et al. (2012) (n >= 4).
    backend : {"auto", "cpp", "numba", "numpy", "cuda"}, default "auto"
        Who evaluates the tiles (see :func:`rbf_cka`).
    tile : int, optional
        Rows per tile (default 1024 for float64, 2048 for float32).
    n_pairs : int, default 100000
        Pairs drawn by ``bandwidth="sampled"`` (an error with another rule or with ``sigma``).
    seed : int or None, default 0
        Seed of ``bandwidth="sampled"`` (likewise).
    progress : None, bool or callable, optional
        Progress of the pass, as in :func:`rbf_cka`.

    Returns
    -------
    float
        HSIC(x, y) with the kernels K = exp(-gamma_x |x_i - x_j|^2) and L likewise.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(50, 3))
    >>> pyckafast.rbf_hsic(x, x, sigma=1.0) > 0
    True
    """
    options = RBFOptions.of(sigma, threshold, bandwidth, n_pairs, seed)
    return _hsic_triple(x, y, debiased=debiased, backend=backend, tile=tile, options=options,
                        progress=progress).unscaled_xy()


# cka()/hsic(): every option of either kernel, checked against the kernel asked for.
KERNEL_SPEC = {"kernel": params.KERNEL, "debiased": params.BOOLEAN, "backend": params.BACKEND,
               "chunk_size": params.ROWS, "form": params.FORM, "precision": params.PRECISION,
               **RBF_OPTIONS_SPEC, "tile": params.ROWS, "progress": params.PROGRESS}


@validate_params(KERNEL_SPEC, rules=params.KERNEL_RULES)
def cka(
    x: ArrayLike, y: ArrayLike, kernel: Kernel = "linear", *, debiased: bool = False,
    backend: Backend = "auto", chunk_size: int | None = None, form: Form = "auto",
    precision: Precision = "highest", sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: Bandwidth = "kornblith", n_pairs: int = 100_000, seed: int | None = 0,
    tile: int | None = None, progress: Progress = None,
) -> float:
    """CKA with a linear or RBF kernel: :func:`linear_cka` or :func:`rbf_cka`.

    The options of the kernel not asked for must keep their defaults (an error otherwise).

    Parameters
    ----------
    x, y : array_like, shapes (n, p1) and (n, p2)
        Two representations of the same n samples (rows).
    kernel : {"linear", "rbf"}, default "linear"
        Which kernel, i.e. which of :func:`linear_cka` / :func:`rbf_cka` runs.
    debiased : bool, default False
        False: from the biased HSIC (Kornblith et al. 2019); True: from the unbiased HSIC
        (Song et al. 2012), needs n >= 4.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Who computes the terms (see :func:`linear_cka`).
    chunk_size : int, optional
        Linear kernel only: rows per chunk, as in :func:`linear_cka`.
    form : {"auto", "features", "samples", "tiles"}, default "auto"
        Linear kernel only: the form of the pass, as in :func:`linear_cka`.
    precision : {"highest", "tf32"}, default "highest"
        Linear kernel only: GEMM precision, as in :func:`linear_cka`.
    sigma : float or (float, float), optional
        RBF kernel only: explicit bandwidths, as in :func:`rbf_cka`.
    threshold : float, default 1.0
        RBF kernel only: sigma = threshold x sqrt(median squared distance).
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        RBF kernel only: which median, as in :func:`rbf_cka`.
    n_pairs : int, default 100000
        RBF kernel only: pairs of the sampled median.
    seed : int or None, default 0
        RBF kernel only: seed of the sampled median.
    tile : int, optional
        RBF kernel only: rows per tile.
    progress : None, bool or callable, optional
        None/False: silent; True: a tqdm bar on stderr; a callable: ``progress(done, total)``
        after each unit of the pass.

    Returns
    -------
    float
        The CKA value; nan with a RuntimeWarning when x or y has zero variance.

    Raises
    ------
    InvalidParameterError
        An option of the other kernel, or RBF options that contradict each other (``sigma``
        with ``threshold``; ``n_pairs`` or ``seed`` without ``bandwidth="sampled"``).

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> round(pyckafast.cka(x, x, kernel="rbf", debiased=True), 12)
    1.0
    >>> round(pyckafast.cka(x, 2 * x, chunk_size=30), 12)
    1.0
    """
    return _dispatch(kernel, "cka")(x, y, **_kernel_options(kernel, locals()))


@validate_params(KERNEL_SPEC, rules=params.KERNEL_RULES)
def hsic(
    x: ArrayLike, y: ArrayLike, kernel: Kernel = "linear", *, debiased: bool = False,
    backend: Backend = "auto", chunk_size: int | None = None, form: Form = "auto",
    precision: Precision = "highest", sigma: Sigma = None, threshold: float = 1.0,
    bandwidth: Bandwidth = "kornblith", n_pairs: int = 100_000, seed: int | None = 0,
    tile: int | None = None, progress: Progress = None,
) -> float:
    """HSIC with a linear or RBF kernel: :func:`linear_hsic` or :func:`rbf_hsic`.

    The biased estimator tr(KHLH)/(n-1)^2, or the unbiased one of Song et al. (2012) when
    ``debiased=True``.

    Parameters
    ----------
    x, y : array_like, shapes (n, p1) and (n, p2)
        Two representations of the same n samples (rows).
    kernel : {"linear", "rbf"}, default "linear"
        Which kernel.
    debiased : bool, default False
        The biased estimator, or the unbiased one (needs n >= 4).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Who computes the terms.
    chunk_size : int, optional
        Linear kernel only: rows per chunk, as in :func:`linear_cka`.
    form : {"auto", "features", "samples", "tiles"}, default "auto"
        Linear kernel only: the form of the pass, as in :func:`linear_cka`.
    precision : {"highest", "tf32"}, default "highest"
        Linear kernel only: GEMM precision, as in :func:`linear_cka`.
    sigma : float or (float, float), optional
        RBF kernel only: explicit bandwidths, as in :func:`rbf_cka`.
    threshold : float, default 1.0
        RBF kernel only: sigma = threshold x sqrt(median squared distance).
    bandwidth : {"kornblith", "offdiag", "sampled"}, default "kornblith"
        RBF kernel only: which median, as in :func:`rbf_cka`.
    n_pairs : int, default 100000
        RBF kernel only: pairs of the sampled median.
    seed : int or None, default 0
        RBF kernel only: seed of the sampled median.
    tile : int, optional
        RBF kernel only: rows per tile.
    progress : None, bool or callable, optional
        As in :func:`cka`.

    Returns
    -------
    float
        The HSIC value.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> pyckafast.hsic(x, x, kernel="rbf", debiased=True) > 0
    True
    """
    return _dispatch(kernel, "hsic")(x, y, **_kernel_options(kernel, locals()))


_SHARED = ("debiased", "backend", "progress")
_OPTIONS = {"linear": _SHARED + ("chunk_size", "form", "precision"),
            "rbf": _SHARED + ("sigma", "threshold", "bandwidth", "n_pairs", "seed", "tile")}


def _kernel_options(kernel: str, values: dict) -> dict:
    """The options of ``kernel``'s function (the rules checked that the others are defaults)."""
    return {name: values[name] for name in _OPTIONS[kernel]}


def _dispatch(kernel: str, what: str):
    from . import linear

    table = {("linear", "cka"): linear.linear_cka, ("linear", "hsic"): linear.linear_hsic,
             ("rbf", "cka"): rbf_cka, ("rbf", "hsic"): rbf_hsic}
    return table[kernel, what]  # ``kernel`` was checked by the caller's spec
