"""Exact RBF (Gaussian-kernel) CKA and HSIC in O(n) memory, and the kernel-generic entry points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._core import dispatch, bandwidth as bw, combine, params
from ._core.inputs import Samples, prepare_pair
from ._core.rbf_entry import scaled_gamma
from ._core.params import StrOptions, positive_int, positive_real, validate_params
from ._core.validation import min_samples
from ._cpu import rbf as cpu_rbf

__all__ = ["rbf_cka", "rbf_hsic", "cka", "hsic", "RBFOptions", "RBF_OPTIONS_SPEC"]

Kernel = Literal["linear", "rbf"]
Sigma = float | tuple[float, float] | Sequence[float] | None

# How the bandwidths are chosen: shared by every public function with RBF options.
RBF_OPTIONS_SPEC: dict[str, list] = {
    "sigma": params.SIGMA,
    "threshold": [positive_real()],
    "bandwidth": [StrOptions(bw.RULES)],
    "n_pairs": [positive_int()],
    "seed": params.SEED,
}

RBF_SPEC = {**RBF_OPTIONS_SPEC, "debiased": params.BOOLEAN, "backend": params.BACKEND,
            "tile": params.ROWS}


@dataclass(frozen=True)
class RBFOptions:
    """How the RBF bandwidths are chosen (validated once; see :func:`rbf_cka`)."""

    sigma: tuple[float, float] | None = None
    threshold: float = 1.0
    bandwidth: str = "kornblith"
    n_pairs: int = 100_000
    seed: int = 0

    @classmethod
    def of(cls, sigma: Sigma = None, threshold: float = 1.0, bandwidth: str = "kornblith",
           n_pairs: int = 100_000, seed: int = 0) -> RBFOptions:
        """Options from values the public function's spec (:data:`RBF_OPTIONS_SPEC`) checked."""
        return cls(_sigma_pair(sigma), float(threshold), bandwidth, int(n_pairs), int(seed))

    def gammas(self, x: np.ndarray, y: np.ndarray, tile: int | None = None,
               backend: str = "auto") -> tuple[float, float]:
        """gamma_x, gamma_y of K = exp(-gamma_x |x_i - x_j|^2) and L likewise."""
        return self.gamma(x, "x", 0, tile, backend), self.gamma(y, "y", 1, tile, backend)

    def gamma(self, a: np.ndarray, name: str, side: int = 0, tile: int | None = None,
              backend: str = "auto") -> float:
        """gamma of the host input ``a`` (named ``name`` in messages; ``side`` 0 for x, 1 for y),
        the exact medians computed by ``backend`` on the CPU over ``tile``-row blocks."""
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


def _check_tile(tile: int | None) -> int | None:
    """Rows per tile as a plain int (the spec checked it is a positive integer or None)."""
    return None if tile is None else int(tile)


def rbf_producer(backend: str, device: str = "cpu"):
    """The ``rbf_terms(x, y, *, gamma_x, gamma_y, tile) -> KernelTerms`` of ``backend`` for data
    on ``device`` (CPU backends tile through BLAS or run their fused pass; a GPU backend brings
    its own). The backend is resolved here, once."""
    if device != "cpu":
        return dispatch.resolve(backend, "rbf_terms", device).rbf_terms
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")

    def rbf_terms(x, y, *, gamma_x: float, gamma_y: float, tile: int | None = None):
        (side_x, kx), (side_y, ky) = cpu_rbf.prepared(x, "x", ops), cpu_rbf.prepared(y, "y", ops)
        return cpu_rbf.rbf_terms((side_x, side_y), gamma_x=scaled_gamma(gamma_x, kx),
                                 gamma_y=scaled_gamma(gamma_y, ky), ops=ops, tile=tile)

    return rbf_terms


def rbf_triple(x, y, *, debiased: bool, options: RBFOptions, backend: str = "auto",
               tile: int | None = None) -> combine.HSICTriple:
    """HSIC(x, y), HSIC(x, x), HSIC(y, y) with RBF kernels (validated numpy inputs)."""
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    terms = cpu_rbf.rbf_terms_under(x, y, options=options, ops=ops, tile=tile)
    return combine.kernel_hsic(terms, debiased)


def host_triple(x: Samples, y: Samples, *, backend: str, debiased: bool, options: RBFOptions,
                tile: int | None = None) -> combine.HSICTriple:
    """The producer for host data (see :data:`pyckafast._core.dispatch.PRODUCERS`)."""
    return rbf_triple(x.data, y.data, debiased=debiased, options=options, backend=backend,
                      tile=_check_tile(tile))


def device_triple(x: Samples, y: Samples, *, backend: str, debiased: bool, options: RBFOptions,
                  tile: int | None = None) -> combine.HSICTriple:
    """The producer for GPU data, or host data with ``backend="cuda"``: the prepared inputs go
    to the device producer as they are (bandwidths selected there, on the same centred rows)."""
    gpu = dispatch.resolve(backend, "rbf_terms", "cuda")  # raises with the reason if it cannot run
    terms = gpu.rbf_terms_under(x, y, options=options, tile=_check_tile(tile))
    return combine.kernel_hsic(terms, debiased)


def _hsic_triple(x, y, *, debiased: bool, backend: str, tile: int | None,
                 options: RBFOptions) -> combine.HSICTriple:
    # Checked before any pass over pairs: the bandwidth passes would otherwise meet a NaN first.
    min_n, why = min_samples(debiased)
    sx, sy, _ = prepare_pair(x, y, min_n=min_n, why=why, finite=True)
    produce = dispatch.producer("rbf", sx.kind, backend)
    return produce(sx, sy, debiased=debiased, options=options, tile=tile)


@validate_params(RBF_SPEC)
def rbf_cka(
    x, y, *, sigma: Sigma = None, threshold: float = 1.0, bandwidth: str = "kornblith",
    debiased: bool = False, backend: str = "auto", tile: int | None = None,
    n_pairs: int = 100_000, seed: int = 0,
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
        both sides. When given, ``threshold`` and ``bandwidth`` are ignored.
    threshold : float, default 1.0
        sigma^2 = threshold^2 * (median squared distance), per side.
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
    n_pairs, seed : int
        Sample size and seed of ``bandwidth="sampled"``.

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
    return combine.cka_from_hsic(
        _hsic_triple(x, y, debiased=debiased, backend=backend, tile=tile, options=options))


@validate_params(RBF_SPEC)
def rbf_hsic(
    x, y, *, sigma: Sigma = None, threshold: float = 1.0, bandwidth: str = "kornblith",
    debiased: bool = False, backend: str = "auto", tile: int | None = None,
    n_pairs: int = 100_000, seed: int = 0,
) -> float:
    """HSIC with RBF kernels: biased tr(KHLH)/(n-1)^2 or unbiased (Song et al. 2012).

    Parameters are those of :func:`rbf_cka`.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(50, 3))
    >>> pyckafast.rbf_hsic(x, x, sigma=1.0) > 0
    True
    """
    options = RBFOptions.of(sigma, threshold, bandwidth, n_pairs, seed)
    return _hsic_triple(x, y, debiased=debiased, backend=backend, tile=tile,
                        options=options).unscaled_xy()


@validate_params({"kernel": params.KERNEL})
def cka(x, y, kernel: Kernel = "linear", **options) -> float:
    """CKA with a linear or RBF kernel: :func:`linear_cka` or :func:`rbf_cka` with ``options``.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> round(pyckafast.cka(x, x, kernel="rbf", debiased=True), 12)
    1.0
    """
    return _dispatch(kernel, "cka")(x, y, **options)


@validate_params({"kernel": params.KERNEL, "debiased": params.BOOLEAN})
def hsic(x, y, kernel: Kernel = "linear", debiased: bool = False, **options) -> float:
    """HSIC with a linear or RBF kernel: biased tr(KHLH)/(n-1)^2, or unbiased (Song et al.
    2012) when ``debiased=True``; ``options`` go to :func:`linear_hsic` / :func:`rbf_hsic`.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> pyckafast.hsic(x, x, kernel="rbf", debiased=True) > 0
    True
    """
    return _dispatch(kernel, "hsic")(x, y, debiased=debiased, **options)


def _dispatch(kernel: str, what: str):
    from . import linear

    table = {("linear", "cka"): linear.linear_cka, ("linear", "hsic"): linear.linear_hsic,
             ("rbf", "cka"): rbf_cka, ("rbf", "hsic"): rbf_hsic}
    return table[kernel, what]  # ``kernel`` was checked by the caller's spec
