"""Producers for host data (see :data:`pyckafast._core.dispatch.PRODUCERS`): prepared
:class:`~pyckafast._core.inputs.Samples` in, HSIC triples out, through the resolved CPU backend.

The RBF pair producer, the minibatch producer (every batch through the pair producer of its
kernel) and the per-pair RBF terms function the maps use (:func:`rbf_producer`). Layer maps are
in :mod:`pyckafast._cpu.maps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core import combine, dispatch
from .._core.inputs import Samples
from .._core.kernel_checks import warn_degenerate_kernels
from .._core.rbf_entry import scaled_gamma
from . import rbf as cpu_rbf

__all__ = ["rbf_producer", "rbf_triple", "batch_triples"]


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


def rbf_triple(x: Samples, y: Samples, *, backend: str, debiased: bool, options: Any,
               tile: int | None = None, progress=None) -> combine.HSICTriple:
    """The RBF producer for host data (``options``: a :class:`pyckafast.rbf.RBFOptions`);
    ``progress(done, total)`` per block pair of the RBF pass."""
    ops = dispatch.resolve(backend, "rbf_tile", "cpu")
    terms = cpu_rbf.rbf_terms_under(x.data, y.data, options=options, ops=ops,
                                    tile=None if tile is None else int(tile), progress=progress)
    warn_degenerate_kernels(terms, debiased=debiased)
    return combine.kernel_hsic(terms, debiased)


def batch_triples(x: Samples, y: Samples, batches: Sequence[np.ndarray], *, backend: str,
                  kernel: str, debiased: bool, options: Any = None,
                  ) -> list[combine.HSICTriple]:
    """The producer for host data: every batch through the CPU pair producer of ``kernel``."""
    produce = dispatch.producer(kernel, "numpy", backend)
    # Linear: the cheaper form per batch, so wide layers (p >> batch) work on the batch's B x B
    # Grams instead of p x p moments (p = 32768 would need 25 GB of those).
    extra = {"options": options} if kernel == "rbf" else {"form": "auto"}
    return [produce(_rows(x, idx), _rows(y, idx), debiased=debiased, **extra) for idx in batches]


def _rows(s: Samples, idx: np.ndarray) -> Samples:
    return Samples(s.data[idx], s.dtype, s.on_device, s.name, s.kind)
