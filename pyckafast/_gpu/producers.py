"""Producers for GPU data (CuPy arrays, torch CUDA tensors) or ``backend="cuda"``: prepared
:class:`~pyckafast._core.inputs.Samples` in, HSIC triples out, through the operations of the
resolved cuda backend module ``ops`` (:mod:`pyckafast._gpu.ops_cuda`; the CPU tests pass an
emulated one). Chosen by :func:`pyckafast._core.dispatch.producer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np

from .._core import combine, dispatch
from .._core.kernel_checks import warn_degenerate_kernels
from .._core.inputs import Samples

__all__ = ["linear_triple", "rbf_triple", "batch_triples", "matrix_pairs"]


def linear_triple(x: Samples, y: Samples, *, ops: ModuleType, debiased: bool,
                  chunk_size: int | None = None, form: str = "auto",
                  precision: str = "highest") -> combine.HSICTriple:
    """Linear HSIC triple on the GPU. ``form`` is taken for the producers' common signature:
    the GPU always runs the feature form (chunked moments, O(p^2) memory whatever n is)."""
    terms = ops.linear_terms(x, y, debiased=debiased, chunk_size=chunk_size, precision=precision)
    return combine.linear_hsic(terms, debiased)


def _gamma(ops: ModuleType, a, name: str, side: int, options, tile: int | None) -> float:
    from . import bandwidth as gpu_bandwidth

    return gpu_bandwidth.gamma(a, name, side, options, tile, ops.array_module())


def batch_triples(x: Samples, y: Samples, batches: Sequence[np.ndarray], *, ops: ModuleType,
                  kernel: str, debiased: bool, options=None) -> list[combine.HSICTriple]:
    """The HSIC triple of every batch (rows ``idx`` of x and y), each from one
    ``ops.hsic_matrix`` over the batch's two representations; bandwidths per batch."""
    xp = ops.array_module()
    gx, gy = ops.device_array(x), ops.device_array(y)
    triples = []
    for idx in batches:
        rows = xp.asarray(idx)
        xb, yb = gx[rows], gy[rows]
        gammas = None
        if kernel == "rbf":
            gammas = [_gamma(ops, xb, x.name, 0, options, None),
                      _gamma(ops, yb, y.name, 1, options, None)]
        m = ops.hsic_matrix([xb, yb], kernel=kernel, gammas=gammas, debiased=debiased)
        triples.append(combine.HSICTriple(float(m[0, 1]), float(m[0, 0]), float(m[1, 1])))
    return triples


def matrix_pairs(xs: list[Samples], ys: list[Samples], symmetric: bool, *, ops: ModuleType,
                 kernel: str, debiased: bool, options=None,
                 tile: int | None = None) -> Callable[[int, int], combine.HSICTriple]:
    """``pair(i, j)`` -> the HSIC triple of xs[i] and ys[j] on the GPU. Linear: the chunked
    GPU producer per pair. RBF: each representation's bandwidth once, then one fused pass per
    pair over the device copies."""
    if kernel == "linear":
        return lambda i, j: linear_triple(xs[i], ys[j], ops=ops, debiased=debiased)
    dx = [ops.device_array(s) for s in xs]
    dy = dx if symmetric else [ops.device_array(s) for s in ys]
    gx = [_gamma(ops, a, s.name, 0, options, tile) for a, s in zip(dx, xs)]
    gy = gx if symmetric else [_gamma(ops, a, s.name, 1, options, tile) for a, s in zip(dy, ys)]

    def pair(i: int, j: int) -> combine.HSICTriple:
        terms = ops.rbf_terms(dx[i], dy[j], gamma_x=gx[i], gamma_y=gy[j], tile=tile)
        return combine.kernel_hsic(terms, debiased)

    return pair


def rbf_triple(x: Samples, y: Samples, *, backend: str, debiased: bool, options,
               tile: int | None = None) -> combine.HSICTriple:
    """The producer for GPU data, or host data with ``backend="cuda"``: the prepared inputs go
    to the device producer as they are (bandwidths selected there, on the same centred rows)."""
    gpu = dispatch.resolve(backend, "rbf_terms", "cuda")  # raises with the reason if it cannot run
    terms = gpu.rbf_terms_under(x, y, options=options, tile=None if tile is None else int(tile))
    warn_degenerate_kernels(terms, debiased=debiased)
    return combine.kernel_hsic(terms, debiased)
