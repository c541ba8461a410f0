"""Exact linear CKA: the public entry points."""

from __future__ import annotations

from typing import Literal

from ._core import devices, dispatch, combine
from ._cpu import linear as cpu_linear
from ._core.validation import as_samples, check_same_n

__all__ = ["linear_cka", "linear_hsic"]

Form = Literal["auto", "features", "samples"]


def linear_cka(
    x, y, *, debiased: bool = False, backend: str = "auto", chunk_size: int | None = None,
    form: Form = "auto", precision: str = "highest",
) -> float:
    """Exact linear CKA between two representations of the same samples.

    Parameters
    ----------
    x : array_like, shape (n, p1)
        First representation, one row per sample. 1-D input is one feature; integer and bool
        input is converted to float64. Memmaps, Fortran-ordered and strided arrays are read
        chunk by chunk without a full copy.
    y : array_like, shape (n, p2)
        Second representation of the same n samples.
    debiased : bool, default False
        False: CKA from the biased HSIC estimator (Kornblith et al. 2019).
        True: "debiased CKA" from the unbiased HSIC estimator (Song et al. 2012); needs n >= 4.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Who computes the per-chunk terms. "auto" uses the device the inputs live on (CuPy
        arrays and torch CUDA tensors: "cuda"; host data: the fastest CPU backend). "numpy" is
        the plain float64 reference; "numba" and "cpp" shift each chunk in the input dtype and
        run the GEMMs at that precision, with every accumulation in float64. "cuda" with host
        input streams it to the GPU chunk by chunk. An explicit backend that cannot run raises.
    chunk_size : int, optional
        Rows per chunk (default: about 8 MB of the wider input per chunk).
    form : {"auto", "features", "samples"}, default "auto"
        "features": O(n p^2) time, O(p^2) memory. "samples": the n x n linear Gram matrices,
        O(n^2 p) time, O(n^2) memory, cheaper when p >> n. "auto" picks the cheaper.
    precision : {"highest", "tf32"}, default "highest"
        GEMM precision. "tf32" (cuda backend only) runs float32 GEMMs on TF32 tensor cores
        (inputs rounded to a 10-bit mantissa, float32 accumulation, every cross-chunk sum still
        float64). In a CPU emulation of that rounding (bench/tf32_emulation.py; not a GPU
        measurement) the CKA moved by at most 6.2e-7 on five cases with n = 5e4, p = 256 (see
        bench/README.md). "highest" keeps full float32/float64 GEMMs.

    Returns
    -------
    float
        The CKA value; nan with a RuntimeWarning when x or y has zero variance.

    Notes
    -----
    ``CKA = |X~'Y~|_F^2 / (|X~'X~|_F |Y~'Y~|_F)`` with column-centred X~, Y~, computed in one
    pass: every chunk is shifted by a fixed vector near the mean (CKA is translation invariant)
    and its moments are accumulated in float64, so float32 data with a large mean keeps its
    accuracy. The result does not depend on the chunking beyond float64 rounding.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 32))
    >>> round(pyckafast.linear_cka(x, 3.0 * x + 1.0), 12)
    1.0
    >>> y = x @ rng.normal(size=(32, 8))
    >>> 0.0 < pyckafast.linear_cka(x, y, debiased=True) < 1.0
    True
    """
    return combine.cka_from_hsic(
        _hsic_triple(x, y, debiased, backend, chunk_size, form, precision)
    )


def linear_hsic(
    x, y, *, debiased: bool = False, backend: str = "auto", chunk_size: int | None = None,
    form: Form = "auto", precision: str = "highest",
) -> float:
    """HSIC with linear kernels: biased ``tr(KHLH)/(n-1)^2`` or unbiased (Song et al. 2012).

    Parameters are those of :func:`linear_cka`.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.arange(12.0).reshape(6, 2)
    >>> float(pyckafast.linear_hsic(x, x)) > 0
    True
    """
    return _hsic_triple(x, y, debiased, backend, chunk_size, form, precision).unscaled_xy()


def check_precision(precision: str, device: str) -> None:
    """"highest" anywhere; "tf32" only for GPU producers (CPU BLAS has no TF32)."""
    if precision not in ("highest", "tf32"):
        raise ValueError(f"precision must be 'highest' or 'tf32'; got {precision!r}.")
    if precision != "highest" and device == "cpu":
        raise ValueError(
            f"precision={precision!r} needs the cuda backend (GPU tensor cores); on the CPU only "
            "'highest' is available."
        )


def _hsic_triple(x, y, debiased, backend, chunk_size, form, precision) -> combine.HSICTriple:
    device = devices.producer_device(backend, devices.common_device(x, y))
    check_precision(precision, device)
    if device != "cpu":  # GPU producers validate and move data themselves
        ops = dispatch.resolve(backend, "linear_terms", device)
        terms = ops.linear_terms(x, y, debiased=debiased, chunk_size=chunk_size,
                                 precision=precision)
        return combine.linear_hsic(terms, debiased)
    x, y = as_samples(devices.host_view(x), "x"), as_samples(devices.host_view(y), "y")
    n = check_same_n(x, y, 4 if debiased else 2,
                     why="debiased CKA divides by n(n-3)" if debiased else "CKA needs variance")
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")
    if form not in ("auto", "features", "samples"):
        raise ValueError(f"form must be 'auto', 'features' or 'samples'; got {form!r}.")
    use_samples = form == "samples" or (
        form == "auto" and dispatch.prefer_samples(n, x.shape[1], y.shape[1])
    )
    if use_samples:
        dispatch.resolve(backend, "linear_moments", "cpu")  # validate the name all the same
        terms, zero_x, zero_y = cpu_linear.sample_terms(x, y)
        return combine.kernel_hsic(terms, debiased)._replace(zero_x=zero_x, zero_y=zero_y)
    terms = cpu_linear.feature_terms(
        x, y, backend=backend, debiased=debiased, chunk_size=chunk_size
    )
    return combine.linear_hsic(terms, debiased)

