"""Is a CKA value above chance? Permutation tests of CKA at the scale pyckafast runs.

Under the null hypothesis that x and y are independent, every pairing of the rows of y with
those of x is equally likely. CKA's denominators do not change when the rows of y are
permuted, so the permutation law of CKA is that of its numerator ``tr(A P B P')`` (A, B the
centred Grams, or the U-centred Grams for debiased CKA). Its first three moments are known
exactly (Kazi-Aoual et al. 1995; Josse, Pages & Husson 2008 for the RV coefficient, which is
linear CKA), and they need only a few sums of each side (:mod:`pyckafast._core.null_invariants`).
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from ._core import combine, dispatch, params
from ._core.inputs import Samples, prepare_pair
from ._core.null_invariants import (dense_invariants, double_centred, kernel_pair, linear_pair,
                                    u_centred)
from ._core.params import StrOptions, positive_int, validate_params
from ._core.permutation_moments import NullMoments, null_moments, pearson3_upper
from ._core.progress import Progress, progress_reporter
from ._core.terms import LinearTerms
from ._core.types import ArrayLike, Backend, Bandwidth, Kernel, Sigma
from ._core.validation import min_samples

__all__ = ["CKATestResult", "cka_test", "MatrixTestResult", "cka_matrix_test", "METHODS"]

METHODS = ("auto", "moments", "permutation", "exact")
EXACT_MAX_N = 9  # 9! = 362880 permutations
AUTO_EXACT_N = 8
# The RBF third moment comes from the dense n x n Grams (O(n^3)); beyond this n it is skipped.
RBF_DENSE_MAX_N = 2500
# "auto" computes the linear third moment when its tensor pass costs at most this many times
# the flops of the CKA pass itself (about p <= 12 for square inputs).
THIRD_MOMENT_COST_RATIO = 4.0

TEST_SPEC = {
    "kernel": params.KERNEL, "debiased": params.BOOLEAN,
    "method": [StrOptions(METHODS)], "n_permutations": [positive_int()], "seed": params.SEED,
    "third_moment": [StrOptions(("auto",)), params.Boolean()],
    "backend": params.BACKEND, "chunk_size": params.ROWS, "sigma": params.SIGMA,
    "threshold": [params.positive_real()], "bandwidth": [StrOptions(("kornblith", "offdiag",
                                                                     "sampled"))],
    "n_pairs": [positive_int()], "bandwidth_seed": params.SEED, "tile": params.ROWS,
    "progress": params.PROGRESS,
}


@dataclass(frozen=True)
class CKATestResult:
    """The outcome of :func:`cka_test`.

    Parameters
    ----------
    cka : float
        The observed CKA.
    pvalue : float
        One-sided p-value: the probability, under permutation of the samples of y, of a CKA at
        least as large as the one observed.
    null_mean : float
        Mean of CKA under permutation (exact for "moments" and "exact"; the mean of the draws
        for "permutation").
    null_var : float
        Variance of CKA under permutation (likewise).
    null_skew : float
        Skewness of CKA under permutation (likewise; nan when "moments" did not compute it).
    zscore : float
        ``(cka - null_mean) / sqrt(null_var)``.
    method : str
        "moments", "permutation" or "exact".
    n_permutations : int
        Permutations evaluated (n! for "exact", 0 for "moments").
    approximation : str
        How the p-value was obtained: "pearson3" (three exact moments), "gamma2" (a gamma law
        on [0, inf) fitted to the two exact moments; biased CKA without the third moment),
        "normal" (debiased CKA without the third moment), "permutation", "enumeration", or
        "undefined" (CKA is nan: x or y has zero variance; every value is nan).

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(50, 3))
    >>> r = pyckafast.cka_test(x, x ** 3, method="moments")
    >>> r.pvalue < 1e-6, r.method
    (True, 'moments')
    """

    cka: float
    pvalue: float
    null_mean: float
    null_var: float
    null_skew: float
    zscore: float
    method: str
    n_permutations: int
    approximation: str

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict.

        Returns
        -------
        dict
            Field name to value.

        Examples
        --------
        >>> import numpy as np
        >>> import pyckafast
        >>> x = np.random.default_rng(0).normal(size=(6, 2))
        >>> sorted(pyckafast.cka_test(x, x).to_dict())[:3]
        ['approximation', 'cka', 'method']
        """
        return asdict(self)


@validate_params(TEST_SPEC)
def cka_test(
    x: ArrayLike, y: ArrayLike, *, kernel: Kernel = "linear", debiased: bool = False,
    method: str = "auto", n_permutations: int = 9999, seed: int | None = None,
    third_moment: bool | str = "auto", backend: Backend = "auto", chunk_size: int | None = None,
    sigma: Sigma = None, threshold: float = 1.0, bandwidth: Bandwidth = "kornblith",
    n_pairs: int = 100_000, bandwidth_seed: int | None = 0, tile: int | None = None,
    progress: Progress = None,
) -> CKATestResult:
    """Test whether the CKA of x and y is above chance, by permuting the samples of y.

    Parameters
    ----------
    x, y : array_like, shapes (n, p1) and (n, p2)
        Two representations of the same n samples. NumPy arrays and memmaps of any size;
        ``method="moments"`` with the linear kernel also takes Dask and GPU arrays (two
        moments, from the terms of their producers).
    kernel : {"linear", "rbf"}, default "linear"
        As :func:`pyckafast.cka`.
    debiased : bool, default False
        Test biased CKA, or debiased CKA (unbiased HSIC; needs n >= 4).
    method : {"auto", "moments", "permutation", "exact"}, default "auto"
        "moments": the exact permutation mean, variance and skewness of CKA and a Pearson
        type III p-value. "permutation": ``n_permutations`` random permutations,
        p = (1 + #{CKA_b >= CKA}) / (1 + B). "exact": all n! permutations (n <= 9).
        "auto": "exact" for n <= 8, "moments" otherwise.
    n_permutations : int, default 9999
        Permutations of ``method="permutation"``.
    seed : int or None, default None
        Seed of the permutations (NumPy's ``default_rng``; None: fresh entropy). The same seed
        gives the same permutations, hence the same p-value, on every backend.
    third_moment : bool or "auto", default "auto"
        Whether ``method="moments"`` computes the exact third moment. Linear kernel: a second
        pass builds the third-order moment tensor of each side, O(n p^3) time and O(p^3)
        memory; "auto" does it when that costs at most 4x the CKA pass (small p) and the data
        are on the host (Dask and GPU inputs: two moments). RBF: from the
        dense Grams, O(n^3) time and O(n^2) memory; "auto" does it for n <= 2500. Without it
        the p-value of biased CKA fits a gamma law to the two exact moments and that of
        debiased CKA a normal law (see ``approximation``).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Who computes the CKA terms (as :func:`pyckafast.cka`).
    chunk_size : int, optional
        Linear kernel: rows per chunk.
    sigma, threshold, bandwidth, n_pairs : optional
        RBF kernel: the bandwidth options of :func:`pyckafast.rbf_cka`.
    bandwidth_seed : int or None, default 0
        RBF kernel: the seed of ``bandwidth="sampled"`` (``seed`` of :func:`pyckafast.rbf_cka`;
        here ``seed`` draws the permutations).
    tile : int, optional
        RBF kernel: rows per tile.
    progress : None, bool or callable, optional
        None/False: silent; True: a tqdm bar; a callable: ``progress(done, total)`` per batch
        of permutations (RBF: per permutation, each one pass over all pairs, costing what
        :func:`pyckafast.estimate_cost` says of one ``rbf_cka``).

    Returns
    -------
    CKATestResult
        CKA, p-value, null moments, z-score and how they were obtained.

    Raises
    ------
    ValueError
        n too large for "exact"; Dask or GPU input with a method that needs the rows again.

    Notes
    -----
    The moments are exact for the permutation distribution, so the only approximation of
    ``method="moments"`` is the Pearson type III law matched to them (Josse et al. 2008 found
    it accurate down to p-values near 1e-4 at n >= 10); "permutation" and "exact" need none.
    Permuted values equal to the observed one within rounding (1e-11 of CKA in float64
    arithmetic, 1e-5 in float32) count as at least as large.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 5))
    >>> noise = rng.normal(size=(200, 5))
    >>> pyckafast.cka_test(x, noise).pvalue > 0.01
    True
    >>> r = pyckafast.cka_test(x, x + noise, method="permutation", n_permutations=99, seed=1)
    >>> r.pvalue
    0.01
    """
    return _cka_test(x, y, None, kernel=kernel, debiased=debiased, method=method,
                     n_permutations=n_permutations, seed=seed, third_moment=third_moment,
                     backend=backend, chunk_size=chunk_size, sigma=sigma, threshold=threshold,
                     bandwidth=bandwidth, n_pairs=n_pairs, bandwidth_seed=bandwidth_seed,
                     tile=tile, progress=progress)


def _cka_test(x, y, terms: LinearTerms | None, *, kernel, debiased, method, n_permutations,
              seed, third_moment, backend, chunk_size, sigma, threshold, bandwidth, n_pairs,
              bandwidth_seed, tile, progress) -> CKATestResult:
    """:func:`cka_test` of validated arguments; ``terms``: the linear terms of (x, y) when the
    caller has them (a layer map's shared pass), else None."""
    min_n, why = min_samples(debiased)
    sx, sy, n = prepare_pair(x, y, min_n=min_n, why=why, finite=(kernel == "rbf"))
    if method == "auto":
        method = "exact" if n <= AUTO_EXACT_N else "moments"
    if method == "exact" and n > EXACT_MAX_N:
        raise ValueError(f"method='exact' enumerates all n! permutations and takes n <= "
                         f"{EXACT_MAX_N}; got n = {n} (use method='moments' or 'permutation').")
    if kernel == "linear":
        _reject_options("linear", sigma=sigma, threshold=threshold, bandwidth=bandwidth,
                        n_pairs=n_pairs, bandwidth_seed=bandwidth_seed, tile=tile)
        side = LinearSide(sx, sy, debiased, backend, chunk_size, progress, terms)
    else:
        _reject_options("rbf", chunk_size=chunk_size)
        side = RBFSide(sx, sy, debiased, backend, tile,
                       _rbf_options(sigma, threshold, bandwidth, n_pairs, bandwidth_seed))
    if math.isnan(side.cka):  # zero variance: CKA warned that it is undefined; so is its test
        return CKATestResult(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                             method, 0, "undefined")
    if method == "moments":
        return side.moments_test(third_moment)
    if method == "exact":
        return _enumeration_test(side)
    return _permutation_test(side, n_permutations, seed, progress)


def _reject_options(kernel: str, **given) -> None:
    defaults = {"sigma": None, "threshold": 1.0, "bandwidth": "kornblith", "n_pairs": 100_000,
                "bandwidth_seed": 0, "tile": None, "chunk_size": None}
    for name, value in given.items():
        if value != defaults[name]:
            other = "an RBF-kernel" if kernel == "linear" else "a linear-kernel"
            raise params.InvalidParameterError(
                f"The {name!r} parameter of cka_test is {other} option; got {value!r} with "
                f"kernel={kernel!r}.")


def _rbf_options(sigma, threshold, bandwidth, n_pairs, bandwidth_seed):
    from .rbf import RBFOptions

    if sigma is not None and (threshold != 1.0 or bandwidth != "kornblith"):
        raise params.InvalidParameterError(
            "The 'sigma' parameter of cka_test sets the bandwidth; threshold and bandwidth "
            "choose it from the data: give one or the other.")
    return RBFOptions.of(sigma, threshold, bandwidth, n_pairs, bandwidth_seed)


def _host(s: Samples, what: str) -> np.ndarray:
    if s.kind != "numpy" or s.on_device:
        raise ValueError(f"{what} needs the rows of {s.name} again, on the host: NumPy arrays "
                         f"and memmaps only; got a {s.kind} array{' on the GPU' if s.on_device else ''}"
                         " (method='moments' with the linear kernel takes it).")
    return s.data


class LinearSide:
    """Everything the tests need of a linear-kernel pair: terms, CKA and the numerators."""

    def __init__(self, sx: Samples, sy: Samples, debiased: bool, backend: str,
                 chunk_size: int | None, progress: Progress, terms: LinearTerms | None = None):
        self.sx, self.sy, self.debiased, self.n = sx, sy, debiased, sx.n
        self.terms = (_linear_terms(sx, sy, backend, chunk_size, progress) if terms is None
                      else terms)
        self.triple = combine.linear_hsic(self.terms, debiased)
        self.cka = combine.cka_from_hsic(self.triple)
        self.base = linear_pair(self.terms, self.triple, debiased)
        self.scale = math.sqrt(self.base[0].frob) * math.sqrt(self.base[1].frob)

    def moments_test(self, third_moment) -> CKATestResult:
        ix, iy = self.base
        on_host = all(s.kind == "numpy" and not s.on_device for s in (self.sx, self.sy))
        if third_moment is True or (on_host and _want_linear_third(
                third_moment, self.n, self.sx.p, self.sy.p, self.debiased)):
            from ._cpu.null_pass import linear_third_invariants

            c = self.terms.centred()
            x, y = _host(self.sx, "the third moment"), _host(self.sy, "the third moment")
            ix = linear_third_invariants(x, c.shift_x, c.scale_x, ix, self.debiased)
            iy = linear_third_invariants(y, c.shift_y, c.scale_y, iy, self.debiased)
        return _moments_result(self.cka, null_moments(ix, iy), self.scale, self.debiased)

    def numerators(self, perms: np.ndarray, exact: bool = False) -> np.ndarray:
        """CKA of y's rows permuted by each row of ``perms`` (B x n), in the units of CKA."""
        from ._cpu.null_pass import linear_numerators

        xc, a = self._centred(self.sx, exact)
        yc, b = self._centred(self.sy, exact)
        n = self.n
        coef = n / (n - 2) if self.debiased else 0.0
        num = linear_numerators(xc, yc, perms, norms_x=a, norms_y=b, debiased_coef=coef)
        if self.debiased:
            num += float(a.sum()) * float(b.sum()) / ((n - 1) * (n - 2))
        return num / self.scale

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """The permuted matrices (centred or U-centred linear Grams), float64, n x n."""
        centre = u_centred if self.debiased else double_centred
        grams = []
        for s in (self.sx, self.sy):
            c, _ = self._centred(s, True)
            grams.append(centre(c @ c.T))
        return grams[0], grams[1]

    def _centred(self, s: Samples, exact: bool):
        if getattr(self, "_cache", None) is None:
            self._cache = {}
        key = (s.name, exact)
        if key not in self._cache:
            c = self.terms.centred()
            shift, scale = (c.shift_x, c.scale_x) if s is self.sx else (c.shift_y, c.scale_y)
            data = _host(s, "method='permutation'/'exact'")
            dtype = np.float64 if exact else np.result_type(s.dtype, np.float32)
            out = np.empty(data.shape, dtype=dtype)
            for lo in range(0, data.shape[0], 65536):
                out[lo:lo + 65536] = np.asarray(data[lo:lo + 65536], np.float64) * scale - shift
            norms = np.einsum("ij,ij->i", out, out, dtype=np.float64)
            self._cache[key] = (out, norms)
        return self._cache[key]

    def tolerance(self, exact: bool) -> float:
        dtype = np.float64 if exact else np.result_type(self.sx.dtype, self.sy.dtype, np.float32)
        return 1e-11 if dtype == np.float64 else 1e-5


class RBFSide:
    """The RBF-kernel pair: fixed bandwidths, then one pass per (permuted) pairing."""

    def __init__(self, sx: Samples, sy: Samples, debiased: bool, backend: str,
                 tile: int | None, options):
        from ._cpu.producers import rbf_producer

        self.x, self.y = _host(sx, "the RBF test"), _host(sy, "the RBF test")
        self.n, self.debiased, self.tile = sx.n, debiased, tile
        self.gammas = options.gammas(self.x, self.y, tile=tile, backend=backend)
        self._produce = rbf_producer(backend)
        terms = self._terms(self.y)
        self.triple = combine.kernel_hsic(terms, debiased)
        self.cka = combine.cka_from_hsic(self.triple)
        self.base = kernel_pair(terms, self.triple, debiased)
        self.scale = math.sqrt(self.base[0].frob) * math.sqrt(self.base[1].frob)

    def _terms(self, y):
        gx, gy = self.gammas
        return self._produce(self.x, y, gamma_x=gx, gamma_y=gy, tile=self.tile)

    def moments_test(self, third_moment) -> CKATestResult:
        ix, iy = self.base
        if third_moment is True or (third_moment == "auto" and self.n <= RBF_DENSE_MAX_N):
            a, b = self.dense()
            ix, iy = dense_invariants(a), dense_invariants(b)
            self.scale = math.sqrt(ix.frob) * math.sqrt(iy.frob)  # the same units as a, b
            # Moments in the dense Grams' units; CKA from the fused pass (equal to ~1e-13).
            return _moments_result(self.cka, null_moments(ix, iy), self.scale, self.debiased)
        return _moments_result(self.cka, null_moments(ix, iy), self.scale, self.debiased)

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """The permuted matrices (centred or U-centred RBF Grams), float64, n x n."""
        centre = u_centred if self.debiased else double_centred
        return tuple(centre(_rbf_gram(a, g)) for a, g in zip((self.x, self.y), self.gammas))

    def one(self, perm: np.ndarray) -> float:
        return combine.cka_from_hsic(combine.kernel_hsic(self._terms(self.y[perm]),
                                                         self.debiased))

    def tolerance(self, exact: bool) -> float:
        return 1e-11 if exact or np.result_type(self.x, self.y) == np.float64 else 1e-5


def _rbf_gram(a: np.ndarray, gamma: float) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a - a.mean(axis=0)
    sq = np.einsum("ij,ij->i", a, a)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.exp(-gamma * d2)


def moments_from_terms(terms, debiased: bool) -> CKATestResult:
    """The two-moment test of linear terms with row norms (streamed or merged data)."""
    triple = combine.linear_hsic(terms, debiased)
    ix, iy = linear_pair(terms, triple, debiased)
    scale = math.sqrt(ix.frob) * math.sqrt(iy.frob)
    return _moments_result(combine.cka_from_hsic(triple), null_moments(ix, iy), scale, debiased)


def _want_linear_third(third_moment, n: int, p1: int, p2: int, debiased: bool) -> bool:
    if third_moment is not True and third_moment != "auto":
        return False
    if third_moment is True:
        return True
    from ._cpu.null_pass import tensor_flops

    pass_flops = 2.0 * n * (p1 * p1 + p2 * p2 + p1 * p2)
    tensor = tensor_flops(n, p1, debiased) + tensor_flops(n, p2, debiased)
    return tensor <= THIRD_MOMENT_COST_RATIO * pass_flops


def _linear_terms(sx: Samples, sy: Samples, backend: str, chunk_size, progress, norms=True):
    """Linear terms, by default with the row norms (the variance of biased CKA needs
    sum |x_i|^4), from any producer."""
    where = dispatch.place(sx.kind, backend)
    if where == "cuda":
        ops = dispatch.resolve(backend, "linear_terms", "cuda")
        return ops.linear_terms(sx, sy, debiased=norms, chunk_size=chunk_size)
    if where == "dask":
        from ._dask.producers import linear_terms

        return linear_terms(sx, sy, debiased=norms, backend=backend).compute()
    from ._core import progress as pass_progress
    from ._cpu.linear import feature_terms

    ops = dispatch.resolve(backend, "linear_moments", "cpu")
    with pass_progress.progress_reporter(progress, sx.n, desc="linear", unit="rows") as report:
        return feature_terms(sx.data, sy.data, ops=ops, debiased=norms, chunk_size=chunk_size,
                             report=report)


def _moments_result(cka: float, m: NullMoments, scale: float, debiased: bool) -> CKATestResult:
    mean, var = m.mean / scale, m.var / scale ** 2
    sd = math.sqrt(var)
    z = (cka - mean) / sd if sd > 0 else math.nan
    if m.skew is not None:
        skew, how = m.skew, "pearson3"
    elif not debiased and mean > 0:
        skew, how = 2 * sd / mean, "gamma2"  # Gamma(k, theta) on [0, inf): skew = 2 / sqrt(k)
    else:
        skew, how = 0.0, "normal"
    pvalue = pearson3_upper(z, skew)
    return CKATestResult(cka, pvalue, mean, var, skew if how == "pearson3" else math.nan, z,
                         "moments", 0, how)


def _values_result(cka: float, values: np.ndarray, tol: float, method: str) -> CKATestResult:
    hits = int(np.count_nonzero(values >= cka - tol))
    b = len(values)
    mean, var = float(values.mean()), float(values.var())
    skew = float(np.mean((values - mean) ** 3)) / var ** 1.5 if var > 0 else math.nan
    if method == "exact":
        pvalue, how = hits / b, "enumeration"
    else:
        pvalue, how = (1 + hits) / (1 + b), "permutation"
    z = (cka - mean) / math.sqrt(var) if var > 0 else math.nan
    return CKATestResult(cka, pvalue, mean, var, skew, z, method, b, how)


def _enumeration_test(side) -> CKATestResult:
    n = side.n
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.intp)
    a, b = side.dense()
    scale = math.sqrt(float(np.vdot(a, a))) * math.sqrt(float(np.vdot(b, b)))
    values = np.empty(len(perms))
    for lo in range(0, len(perms), 8192):  # 8192 permuted n x n copies at a time
        p = perms[lo:lo + 8192]
        values[lo:lo + len(p)] = np.einsum("ij,bij->b", a, b[p[:, :, None], p[:, None, :]])
    values /= scale
    observed = float(values[0])  # the identity comes first: the same arithmetic as the others
    return _with_cka(_values_result(observed, values, side.tolerance(True), "exact"), side.cka)


def _permutation_test(side, b: int, seed, progress) -> CKATestResult:
    rng = np.random.default_rng(seed)
    n = side.n
    values = np.empty(b)
    linear = isinstance(side, LinearSide)
    # Permutations drawn per step (then evaluated in parallel): about 32 MB of indices.
    step = max(2, min(256, 4_000_000 // n)) if linear else 1
    with progress_reporter(progress, b, desc="permutations", unit="perm") as report:
        observed = (float(side.numerators(np.arange(n)[None, :])[0]) if linear
                    else side.cka)
        for lo in range(0, b, step):
            # Drawn one at a time, in order: the permutations depend on the seed only.
            perms = np.array([rng.permutation(n) for _ in range(min(step, b - lo))])
            if linear:
                values[lo:lo + len(perms)] = side.numerators(perms)
            else:
                values[lo] = side.one(perms[0])
            if report is not None:
                report(lo + len(perms), b)
    # Counted against the observed value of the same arithmetic; reported: the pass's CKA.
    return _with_cka(_values_result(observed, values, side.tolerance(False), "permutation"),
                     side.cka)


def _with_cka(result: CKATestResult, cka: float) -> CKATestResult:
    sd = math.sqrt(result.null_var)
    z = (cka - result.null_mean) / sd if sd > 0 else math.nan
    return replace(result, cka=cka, zscore=z)


@dataclass(frozen=True)
class MatrixTestResult:
    """CKA and p-values of every pair of a layer map (:func:`cka_matrix_test`).

    Parameters
    ----------
    cka : numpy.ndarray, shape (L, M)
        CKA of each pair.
    pvalue : numpy.ndarray, shape (L, M)
        One-sided p-value of each pair.
    tests : list of list of CKATestResult
        The full result of each pair.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> pyckafast.cka_matrix_test([x, x ** 3]).pvalue.shape
    (2, 2)
    """

    cka: np.ndarray
    pvalue: np.ndarray
    tests: list


def cka_matrix_test(xs, ys=None, *, method: str = "auto", **options) -> MatrixTestResult:
    """Significance of every pair of a CKA layer map (as :func:`pyckafast.cka_matrix`).

    Parameters
    ----------
    xs : sequence of array_like
        L representations of the same n samples.
    ys : sequence of array_like, optional
        M representations; None compares ``xs`` with itself (the diagonal is tested too, and
        the symmetric half reuses the tests of the other).
    method : {"auto", "moments", "permutation", "exact"}, default "auto"
        As :func:`cka_test`.
    **options
        Any other option of :func:`cka_test` (kernel, debiased, n_permutations, seed, ...).
        Linear kernel on host arrays: every pair's terms come from one pass over all layers,
        each layer's own moments made once (as :func:`pyckafast.cka_matrix`); a pass of the
        third moment or of permutations still reads each pair's rows.

    Returns
    -------
    MatrixTestResult
        ``.cka`` and ``.pvalue`` of shape (L, M), and every ``.tests[i][j]``.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 4))
    >>> r = pyckafast.cka_matrix_test([x], [x + 0.1 * rng.normal(size=x.shape), rng.normal(size=(60, 4))])
    >>> bool(r.pvalue[0, 0] < 1e-6 < r.pvalue[0, 1])
    True
    """
    symmetric = ys is None
    xs = list(xs)
    ys = xs if symmetric else list(ys)
    if not xs or not ys:
        raise ValueError(f"xs and ys must hold at least one representation; got {len(xs)} and "
                         f"{len(ys)}.")
    try:  # the options of cka_test, checked once for all pairs
        bound = inspect.signature(cka_test).bind(None, None, method=method, **options)
    except TypeError as exc:
        raise TypeError(f"cka_matrix_test takes the options of cka_test: {exc}") from None
    bound.apply_defaults()
    kw = {k: v for k, v in bound.arguments.items() if k not in ("x", "y")}
    params.check_params("cka_matrix_test", TEST_SPEC, kw)
    terms = _shared_linear_terms(xs, ys, symmetric, kw)
    tests: list[list] = [[None] * len(ys) for _ in xs]
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            if symmetric and j < i:
                tests[i][j] = tests[j][i]
                continue
            tests[i][j] = _cka_test(x, y, None if terms is None else terms(i, j), **kw)
    cka = np.array([[t.cka for t in row] for row in tests])
    pvalue = np.array([[t.pvalue for t in row] for row in tests])
    return MatrixTestResult(cka, pvalue, tests)


def _shared_linear_terms(xs: list, ys: list, symmetric: bool, kw: dict):
    """``terms(i, j)`` of every linear pair from one pass over all layers (each layer's own
    moments once, as :func:`pyckafast.cka_matrix`), for host arrays; None where each pair
    makes its own (another kernel or place, or a chunk size asked for)."""
    if kw["kernel"] != "linear" or kw["chunk_size"] is not None:
        return None
    from ._core.inputs import prepare_list
    from ._cpu.linear_map import map_terms

    layers = prepare_list(xs, "xs") + ([] if symmetric else prepare_list(ys, "ys"))
    if any(s.kind != "numpy" or s.on_device or dispatch.place(s.kind, kw["backend"]) != "cpu"
           for s in layers):
        return None
    n = layers[0].n
    if any(s.n != n for s in layers) or n < min_samples(kw["debiased"])[0]:
        return None  # each pair's own call raises its error
    offset = 0 if symmetric else len(xs)
    pairs = [(i, offset + j) for i in range(len(xs)) for j in range(len(ys))
             if not symmetric or i <= j]
    terms = map_terms([s.data for s in layers], [s.name for s in layers], pairs, True,
                      progress=kw["progress"], backend=kw["backend"])
    return lambda i, j: terms[i, offset + j]
