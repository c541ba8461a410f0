"""Exact linear CKA: the public entry points."""

from __future__ import annotations

from ._core import combine, dispatch, params
from ._core.inputs import prepare_pair
from ._core.params import validate_params
from ._core.types import ArrayLike, Backend, Form, Precision
from ._core.progress import Progress
from ._core.validation import min_samples
from ._core.passes import run_producer

__all__ = ["linear_cka", "linear_hsic"]

LINEAR_SPEC = {"debiased": params.BOOLEAN, "backend": params.BACKEND, "chunk_size": params.ROWS,
               "form": params.FORM, "precision": params.PRECISION, "progress": params.PROGRESS}


@validate_params(LINEAR_SPEC)
def linear_cka(
    x: ArrayLike, y: ArrayLike, *, debiased: bool = False, backend: Backend = "auto",
    chunk_size: int | None = None, form: Form = "auto", precision: Precision = "highest",
    progress: Progress = None,
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
        input streams it to the GPU chunk by chunk. Dask arrays are reduced lazily, chunk by
        chunk on the workers with this CPU backend (as :func:`pyckafast.dask.linear_cka`). An
        explicit backend that cannot run raises.
    chunk_size : int, optional
        Rows per chunk (default: about 8 MB of the wider input per chunk).
    form : {"auto", "features", "samples", "tiles"}, default "auto"
        "features": O(n p^2) time, O(p^2) memory. "samples": the n x n linear Gram matrices,
        O(n^2 p) time, O(n^2) memory, cheaper when p >> n. "tiles": the same sums over block
        pairs of Gram tiles, O(n^2 p) time, O(n + tile p) memory, for any n and p (a memmap
        larger than RAM is read block by block). "auto" picks the form of fewest flops among
        those whose memory fits in half of the available memory; a form asked for by name that
        cannot fit raises MemoryError at once with the bytes it needs. The GPU and Dask
        producers always run the feature form.
    precision : {"highest", "tf32"}, default "highest"
        GEMM precision. "tf32" (cuda backend only) runs float32 GEMMs on TF32 tensor cores
        (inputs rounded to a 10-bit mantissa, float32 accumulation, every cross-chunk sum still
        float64). In a CPU emulation of that rounding (bench/tf32_emulation.py; not a GPU
        measurement) the CKA moved by at most 6.2e-7 on five cases with n = 5e4, p = 256 (see
        bench/README.md). "highest" keeps full float32/float64 GEMMs.
    progress : None, bool or callable, optional
        None/False: silent (default). True: a tqdm bar on stderr (``pip install
        pyckafast[cli]``). A callable: ``progress(done, total)`` after each unit: rows of the
        feature form, block pairs of the tiled form, tasks of a Dask computation, the one
        device pass on a GPU (the in-memory sample form is one unit).

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
        _hsic_triple(x, y, debiased, backend, chunk_size, form, precision, progress)
    )


@validate_params(LINEAR_SPEC)
def linear_hsic(
    x: ArrayLike, y: ArrayLike, *, debiased: bool = False, backend: Backend = "auto",
    chunk_size: int | None = None, form: Form = "auto", precision: Precision = "highest",
    progress: Progress = None,
) -> float:
    """HSIC with linear kernels: biased ``tr(KHLH)/(n-1)^2`` or unbiased (Song et al. 2012).

    Parameters
    ----------
    x : array_like, shape (n, p1)
        First representation, one row per sample (as in :func:`linear_cka`).
    y : array_like, shape (n, p2)
        Second representation of the same n samples.
    debiased : bool, default False
        False: the biased estimator ``tr(KHLH)/(n-1)^2``; True: the unbiased estimator of
        Song et al. (2012), which needs n >= 4.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        Who computes the per-chunk terms, as in :func:`linear_cka`.
    chunk_size : int, optional
        Rows per chunk (default: about 8 MB of the wider input per chunk).
    form : {"auto", "features", "samples", "tiles"}, default "auto"
        Feature moments, n x n Grams or Gram tiles, as in :func:`linear_cka`.
    precision : {"highest", "tf32"}, default "highest"
        GEMM precision, as in :func:`linear_cka`.
    progress : None, bool or callable, optional
        Progress of the pass, as in :func:`linear_cka`.

    Returns
    -------
    float
        HSIC(x, y) with linear kernels ``K = x x'``, ``L = y y'``.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.arange(12.0).reshape(6, 2)
    >>> float(pyckafast.linear_hsic(x, x)) > 0
    True
    """
    return _hsic_triple(x, y, debiased, backend, chunk_size, form, precision,
                        progress).unscaled_xy()


def _hsic_triple(x, y, debiased, backend, chunk_size, form, precision,
                 progress=None) -> combine.HSICTriple:
    min_n, why = min_samples(debiased)
    sx, sy, _ = prepare_pair(x, y, min_n=min_n, why=why)  # chunks are checked as they are read
    produce = dispatch.producer("linear", sx.kind, backend)
    return run_producer(produce, dispatch.place(sx.kind, backend), progress, sx, sy,
                        desc="linear", debiased=debiased, chunk_size=chunk_size, form=form,
                        precision=precision)
