"""The exact layer x layer CKA map that every compat front end accumulates batch by batch.

:class:`pyckafast.CKAMapState` (each layer's own moments once, one cross moment per pair) when
it is available; until then, one :class:`pyckafast.LinearCKAState` per pair, which gives the same
exact float64 values at a higher cost (each pair recomputes its layers' own moments).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..streaming import LinearCKAState

__all__ = ["LayerMap"]


def _map_state_class():
    try:
        from ..map_state import CKAMapState
    except ImportError:  # the map state is not in this tree: pair states give the same values
        return None
    return CKAMapState


class _PairStates:
    """The CKAMapState interface used here, on one LinearCKAState per (i, j) pair."""

    def __init__(self, *, debiased: bool, backend: str):
        self.debiased, self.backend = debiased, backend
        self.states: list[list[LinearCKAState]] | None = None

    @property
    def n(self) -> int:
        return 0 if self.states is None else self.states[0][0].n

    def update(self, xs: Sequence, ys: Sequence) -> "_PairStates":
        if self.states is None:
            self.states = [[LinearCKAState(debiased=self.debiased, backend=self.backend)
                            for _ in ys] for _ in xs]
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                self.states[i][j].update(x, y)
        return self

    def hsic(self, *, debiased: bool = False):
        la, lb = len(self.states), len(self.states[0])
        hxy, hxx, hyy = np.empty((la, lb)), np.empty(la), np.empty(lb)
        for i in range(la):
            for j in range(lb):
                t = self.states[i][j].hsic(debiased=debiased)
                hxy[i, j], hxx[i], hyy[j] = t.xy, t.xx, t.yy
        return hxy, hxx, hyy

    def result(self, *, debiased: bool = False) -> np.ndarray:
        return np.array([[s.result(debiased=debiased) for s in row] for row in self.states])


class LayerMap:
    """Exact linear CKA between every layer of side a and every layer of side b, fed per batch.

    Parameters
    ----------
    debiased : bool
        The estimator of :meth:`result` (unbiased HSIC, Song et al. 2012, or biased HSIC).
    backend : str
        Backend of the per-batch terms, as in :func:`pyckafast.linear_cka`.
    """

    def __init__(self, *, debiased: bool, backend: str = "auto"):
        self.debiased = bool(debiased)
        cls = _map_state_class()
        self._state = (cls(debiased=self.debiased, backend=backend) if cls is not None
                       else _PairStates(debiased=self.debiased, backend=backend))

    @property
    def n(self) -> int:
        """Samples seen so far."""
        return self._state.n

    def update(self, xs: Sequence, ys: Sequence) -> "LayerMap":
        """Add one batch: ``xs[i]`` the (batch, p_i) output of layer i of side a, ``ys`` side b."""
        self._state.update(list(xs), list(ys))
        return self

    def result(self) -> np.ndarray:
        """The (La, Lb) CKA map of every sample seen (nan, with a RuntimeWarning, for a layer
        without variance)."""
        return np.asarray(self._state.result(debiased=self.debiased), dtype=np.float64)

    def hsic(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(HSIC(a_i, b_j), HSIC(a_i, a_i), HSIC(b_j, b_j)) of every sample seen."""
        return self._state.hsic(debiased=self.debiased)
