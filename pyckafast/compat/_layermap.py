"""The exact layer x layer CKA map that the compat front ends accumulate batch by batch.

Narrow layers stream into :class:`pyckafast.CKAMapState` (float64 moments: per layer p_i^2, per
pair p_i p_j; nothing grows with n). When those moments would exceed ``state_budget`` bytes
(wide convolutional outputs: p = 64 x 56 x 56 would need 8 p^2 = 300 GB), the layers' outputs
are gathered on the host instead (n x p_i values each) and the map is one
:func:`pyckafast.cka_matrix` call, whose wide layers share one tiled sample-space pass (each
layer's Gram tile once per block pair; O(tile^2) memory beyond the inputs). Both give the same
exact values.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence

import numpy as np

from ..cka_matrix import cka_matrix
from ..map_state import CKAMapState

__all__ = ["LayerMap", "STATE_BUDGET"]

# Largest CKAMapState (bytes of float64 moments) the compat front ends build; wider layers are
# gathered instead.
STATE_BUDGET = 2 * 2**30


class LayerMap:
    """Exact linear CKA between every layer of side a and every layer of side b, fed per batch.

    Parameters
    ----------
    debiased : bool
        The estimator of :meth:`result`: unbiased HSIC (Song et al. 2012), or biased HSIC.
    backend : str
        Backend of the per-batch terms, as in :class:`pyckafast.CKAMapState`.
    state_budget : int, optional
        Largest moment state, in bytes, before the layers are gathered instead (default
        :data:`STATE_BUDGET`).
    """

    def __init__(self, *, debiased: bool, backend: str = "auto",
                 state_budget: int | None = None):
        self.debiased, self.backend = bool(debiased), backend
        self.state_budget = STATE_BUDGET if state_budget is None else state_budget
        self._state: CKAMapState | None = None
        self._gathered: tuple[list[list], list[list] | None] | None = None
        self.n = 0

    @property
    def route(self) -> str | None:
        """"stream" (moments), "gather" (activations held), or None before the first batch."""
        if self._state is not None:
            return "stream"
        return None if self._gathered is None else "gather"

    def update(self, xs: Sequence, ys: Sequence | None) -> "LayerMap":
        """Add one batch: ``xs[i]`` the (batch, p_i) output of layer i of side a, ``ys`` side b
        (None: side a against itself, each pair once)."""
        xs = [on_reachable_device(a) for a in xs]
        ys = None if ys is None else [on_reachable_device(a) for a in ys]
        if self.route is None:
            self._choose(xs, ys)
        if self._state is not None:
            self._state.update(xs, ys)
        else:
            for store, layers in zip(self._gathered, (xs, ys)):
                if layers is not None:
                    for held, a in zip(store, layers):
                        held.append(_host_copy(a))
        self.n += int(xs[0].shape[0])
        return self

    def _choose(self, xs: list, ys: list | None) -> None:
        pa = [math.prod(a.shape[1:]) for a in xs]
        pb = pa if ys is None else [math.prod(a.shape[1:]) for a in ys]
        own = sum(p * p for p in pa) + (0 if ys is None else sum(p * p for p in pb))
        cross = sum(p * q for i, p in enumerate(pa) for j, q in enumerate(pb)
                    if ys is not None or i < j)
        if 8 * (own + cross) <= self.state_budget:
            self._state = CKAMapState(debiased=self.debiased, backend=self.backend)
        else:
            self._gathered = ([[] for _ in xs], None if ys is None else [[] for _ in ys])

    def result(self) -> np.ndarray:
        """The (La, Lb) CKA map of every sample seen (nan, with a RuntimeWarning, for a layer
        without variance)."""
        if self.route is None:
            raise ValueError("the dataloader gave no batch.")
        if self._state is not None:
            return np.asarray(self._state.result(debiased=self.debiased), dtype=np.float64)
        a = [np.concatenate(h) for h in self._gathered[0]]
        b = None if self._gathered[1] is None else [np.concatenate(h) for h in self._gathered[1]]
        # one map: the wide layers go through one tiled pass that computes each layer's Gram
        # tile once per block pair for all its pairs (not one pass per pair)
        return cka_matrix(a, b, debiased=self.debiased, backend=self.backend)


def on_reachable_device(a):
    """``a`` itself, or a host copy of a CUDA tensor when CuPy (which pyckafast's GPU producers
    use) is not installed: a model on the GPU then still gets its CKA, computed on the host."""
    if getattr(getattr(a, "device", None), "type", None) == "cuda" and hasattr(a, "cpu"):
        if importlib.util.find_spec("cupy") is None:
            return a.cpu()
    return a


def _host_copy(a) -> np.ndarray:
    """A host NumPy copy of one batch of a layer (torch CPU/CUDA tensors or arrays)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.array(a).reshape(len(a), -1)
