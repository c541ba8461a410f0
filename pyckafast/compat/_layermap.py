"""The exact layer x layer CKA map that the compat front ends accumulate batch by batch: a thin
wrapper of :class:`pyckafast.CKAMapState` fixing the estimator once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..map_state import CKAMapState

__all__ = ["LayerMap"]


class LayerMap:
    """Exact linear CKA between every layer of side a and every layer of side b, fed per batch.

    Parameters
    ----------
    debiased : bool
        The estimator of :meth:`result`: unbiased HSIC (Song et al. 2012), or biased HSIC.
    backend : str
        Backend of the per-batch terms, as in :class:`pyckafast.CKAMapState`.
    """

    def __init__(self, *, debiased: bool, backend: str = "auto"):
        self.debiased = bool(debiased)
        self._state = CKAMapState(debiased=self.debiased, backend=backend)

    @property
    def n(self) -> int:
        """Samples seen so far."""
        return self._state.n

    def update(self, xs: Sequence, ys: Sequence | None) -> "LayerMap":
        """Add one batch: ``xs[i]`` the (batch, p_i) output of layer i of side a, ``ys`` side b
        (None: side a against itself, each pair's cross moments once)."""
        self._state.update(list(xs), None if ys is None else list(ys))
        return self

    def result(self) -> np.ndarray:
        """The (La, Lb) CKA map of every sample seen (nan, with a RuntimeWarning, for a layer
        without variance)."""
        return np.asarray(self._state.result(debiased=self.debiased), dtype=np.float64)
