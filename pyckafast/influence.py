"""Which samples drive a CKA value? Exact leave-one-out CKA of every sample, the jackknife.

One outlier can move CKA far (Davari et al. 2023, Corollary 3): :func:`cka_influence` finds the
samples whose removal moves it most, exactly, in one extra pass over the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ._core import combine, params
from ._core.inputs import prepare_pair
from ._core.leave_one_out import kernel_loo, linear_loo
from ._core.params import StrOptions, positive_int, validate_params
from ._core.progress import Progress, progress_reporter
from ._core.types import ArrayLike, Backend, Bandwidth, Kernel, Sigma
from ._core.validation import min_samples

__all__ = ["InfluenceResult", "cka_influence"]

INFLUENCE_SPEC = {
    "kernel": params.KERNEL, "debiased": params.BOOLEAN, "backend": params.BACKEND,
    "chunk_size": params.ROWS, "sigma": params.SIGMA, "threshold": [params.positive_real()],
    "bandwidth": [StrOptions(("kornblith", "offdiag", "sampled"))], "n_pairs": [positive_int()],
    "seed": params.SEED, "tile": params.ROWS, "progress": params.PROGRESS,
}


@dataclass(frozen=True)
class InfluenceResult:
    """Leave-one-out CKA of every sample (:func:`cka_influence`).

    Parameters
    ----------
    cka : float
        CKA of all n samples.
    loo : numpy.ndarray, shape (n,)
        ``loo[i]``: CKA of the n - 1 samples other than i.
    delta : numpy.ndarray, shape (n,)
        ``loo - cka``: how much removing each sample moves CKA.
    se : float
        Jackknife standard error ``sqrt((n-1)/n * sum (loo_i - mean(loo))^2)``.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> y = x + 0.5 * np.random.default_rng(1).normal(size=(100, 3))
    >>> y[7] += 40.0  # one outlier
    >>> r = pyckafast.cka_influence(x, y)
    >>> int(r.top(1)[0][0])
    7
    """

    cka: float
    loo: np.ndarray
    delta: np.ndarray
    se: float

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Normal-theory jackknife confidence interval ``cka +- z se``.

        Parameters
        ----------
        level : float, default 0.95
            Coverage, in (0, 1).

        Returns
        -------
        (float, float)
            Lower and upper bounds.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(50, 2))
        >>> lo, hi = pyckafast.cka_influence(x, x ** 3).ci(0.9)
        >>> bool(lo < hi)
        True
        """
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1); got {level!r}.")
        z = NormalDist().inv_cdf(0.5 + level / 2)
        return self.cka - z * self.se, self.cka + z * self.se

    def top(self, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k samples whose removal moves CKA most (largest ``|delta|`` first).

        Parameters
        ----------
        k : int, default 10
            How many samples (at most n).

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            Their indices and their ``delta``.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.arange(20.0).reshape(10, 2) ** 2
        >>> idx, d = pyckafast.cka_influence(x, np.sqrt(x)).top(2)
        >>> idx.shape
        (2,)
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be a positive integer; got {k}.")
        k = min(k, self.delta.size)
        order = np.argpartition(-np.abs(self.delta), k - 1)[:k]
        order = order[np.argsort(-np.abs(self.delta[order]), kind="stable")]
        return order, self.delta[order]


@validate_params(INFLUENCE_SPEC)
def cka_influence(
    x: ArrayLike, y: ArrayLike, *, kernel: Kernel = "linear", debiased: bool = False,
    backend: Backend = "auto", chunk_size: int | None = None, sigma: Sigma = None,
    threshold: float = 1.0, bandwidth: Bandwidth = "kornblith", n_pairs: int = 100_000,
    seed: int | None = 0, tile: int | None = None, progress: Progress = None,
) -> InfluenceResult:
    """Exact leave-one-out CKA of every sample, and the jackknife standard error.

    Parameters
    ----------
    x, y : array_like, shapes (n, p1) and (n, p2)
        Two representations of the same n samples: NumPy arrays or memmaps (the rows are read
        twice).
    kernel : {"linear", "rbf"}, default "linear"
        As :func:`pyckafast.cka`.
    debiased : bool, default False
        Leave-one-out of biased or debiased CKA (debiased needs n >= 5: n - 1 >= 4 remain).
    backend : {"auto", "numpy", "numba", "cpp"}, default "auto"
        Who computes the terms of the first pass.
    chunk_size : int, optional
        Linear kernel: rows per chunk of the two passes.
    sigma, threshold, bandwidth, n_pairs, seed : optional
        RBF kernel: the bandwidth options of :func:`pyckafast.rbf_cka`, chosen once from all n
        samples and kept for every leave-one-out set.
    tile : int, optional
        RBF kernel: rows per tile (default 1024).
    progress : None, bool or callable, optional
        RBF kernel: ``progress(done, total)`` per tile of the two passes.

    Returns
    -------
    InfluenceResult
        ``cka``, ``loo``, ``delta``, ``se``, with ``ci(level)`` and ``top(k)``.

    Notes
    -----
    Linear kernel: removing sample i is a rank-one downdate of the centred cross moments
    (``C_xy - n/(n-1) x~_i y~_i'``, the mean moving with it), so all n values come from the
    row forms ``x~_i' C_xx x~_i``, ``x~_i' C_xy y~_i``, ``y~_i' C_yy y~_i``: one more pass after
    the usual terms, which takes each row to its canonical-correlation coordinates (one p x p
    and one q x q GEMM per chunk, the flops of the terms pass): about twice
    :func:`linear_cka`'s time, O(n) memory. RBF: two tiled passes, O(n^2 p) time,
    O(n + tile^2) memory.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 4))
    >>> r = pyckafast.cka_influence(x, x + rng.normal(size=(200, 4)))
    >>> r.loo.shape, bool(r.se > 0)
    ((200,), True)
    """
    min_n, why = min_samples(debiased)
    min_n, why = min_n + 1, f"{why}, on the n - 1 samples left"
    # The linear terms pass checks its chunks as it reads them; the RBF bandwidth does not.
    sx, sy, n = prepare_pair(x, y, min_n=min_n, why=why, finite=kernel != "linear")
    for s in (sx, sy):
        if s.kind != "numpy" or s.on_device:
            raise ValueError(f"cka_influence reads the rows of {s.name} twice and takes NumPy "
                             f"arrays and memmaps; got a {s.kind} array"
                             f"{' on the GPU' if s.on_device else ''}.")
    if kernel == "linear":
        from ._cpu.loo_rows import linear_rows
        from .significance import _linear_terms

        terms = _linear_terms(sx, sy, backend, chunk_size, None, norms=debiased)
        cka = combine.cka_from_hsic(combine.linear_hsic(terms, debiased))
        rows = linear_rows(sx.data, sy.data, terms, debiased, rows=chunk_size)
        loo = linear_loo(rows, debiased)
    else:
        from ._cpu.loo_rows import rbf_rows
        from .rbf import RBFOptions, rbf_cka

        options = RBFOptions.of(sigma, threshold, bandwidth, n_pairs, seed)
        gx, gy = options.gammas(sx.data, sy.data, backend=backend)
        cka = rbf_cka(sx.data, sy.data, sigma=(_sigma(gx), _sigma(gy)), debiased=debiased,
                      backend=backend)
        with progress_reporter(progress, 1, desc="rbf rows", unit="tile") as report:
            rows = rbf_rows(sx.data, sy.data, gx, gy, debiased=debiased, tile=tile or 1024,
                            report=report)
        loo = kernel_loo(rows, debiased)
    se = math.sqrt((n - 1) / n * float(np.sum((loo - loo.mean()) ** 2)))
    return InfluenceResult(cka, loo, loo - cka, se)


def _sigma(gamma: float) -> float:
    return math.sqrt(0.5 / gamma)
