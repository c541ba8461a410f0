"""Where each batch of flattened activations goes, and the CKA map made from it afterwards.

Linear kernel: the streamed layers feed ONE :class:`~pyckafast.CKAMapState` (GPU activations go
in as they are: the state's cuda producer reduces them on the device); the cached layers are
appended to the activation cache, and after the pass every pair of cached layers comes from one
tiled sample-space pass over the cache (:func:`pyckafast._cpu.tiled_map.tiled_map_terms`: each
layer's Gram tile once per block pair). RBF kernel: every layer is cached and the map is one
tiled pass over the cache.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._core import combine
from .._core.inputs import device_of
from .capture import host_array
from .plan import Plan

__all__ = ["LinearMapSink", "RBFSink", "tiles_module"]


def tiles_module(backend: str, on_device: bool):
    """The array module of the cached layers' tiled pass: CuPy for a model on the GPU (backend
    "auto" when CuPy imports, or "cuda"), else NumPy."""
    if backend == "cuda" or (backend == "auto" and on_device):
        try:
            import cupy
        except ImportError:
            if backend == "cuda":
                raise
            return np
        return cupy
    return np


def _state_input(t):
    """What the map state takes: a device tensor as it is (no host copy), a CPU one as a view."""
    return t if device_of(t) == "cuda" else t.numpy()


class LinearMapSink:
    """Streams the small layers into one map state and writes the cached layers to disk."""

    def __init__(self, plan: Plan, state, cache, debiased: bool, tiles_xp=np):
        self.plan, self.state, self.cache, self.debiased = plan, state, cache, debiased
        self.tiles_xp = tiles_xp  # CuPy: the cached blocks are uploaded, the tiles made on the GPU

    def add(self, acts: dict) -> None:
        """One batch: ``acts`` maps (model, layer) keys to flattened tensors."""
        plan = self.plan
        if self.state is not None:
            xs = {plan.keys_a[i][1]: _state_input(acts[plan.keys_a[i]]) for i in plan.stream_a}
            ys = None if plan.symmetric else [_state_input(acts[plan.keys_b[j]]) for j in plan.stream_b]
            self.state.update(xs, ys)
        for key in plan.cached:
            self.cache.write(key, host_array(acts[key]))

    def result(self, *, progress=None, tile: int | None = None) -> np.ndarray:
        """The (La, Lb) map: streamed entries from the state, the rest from the cache."""
        plan = self.plan
        out = np.full((len(plan.keys_a), len(plan.keys_b)), np.nan)
        if self.state is not None and plan.stream_a and plan.stream_b:
            out[np.ix_(plan.stream_a, plan.stream_b)] = self.state.result(debiased=self.debiased)
        if plan.cached:
            self._cached_entries(out, progress, tile)
        return out

    def _cached_entries(self, out: np.ndarray, progress, tile) -> None:
        from .._cpu.tiled_map import tiled_map_terms

        plan = self.plan
        arrays = self.cache.arrays()
        index = {k: r for r, k in enumerate(plan.cached)}
        pairs = [(index[plan.keys_a[i]], index[plan.keys_b[j]]) for i, j in plan.cache_pairs]
        if plan.symmetric:  # (r, r): the zero-variance flag of every cached layer's diagonal
            pairs += [(r, r) for r in range(len(plan.cached))]
        names = [f"layer {k[1]!r} of {k[0]}" for k in plan.cached]
        terms, zero = tiled_map_terms([arrays[k] for k in plan.cached], pairs, tile=tile,
                                      progress=progress, names=names, xp=self.tiles_xp)
        for r, key in enumerate(plan.cached):
            if zero[r] and any(r in pair for pair in pairs):
                _warn_constant(key)
        for (i, j), (r, s) in zip(plan.cache_pairs, pairs):
            if zero[r] or zero[s]:  # warned once per layer above
                out[i, j] = math.nan
                continue
            h = combine.kernel_hsic(terms[(r, s)], self.debiased)
            out[i, j] = combine.cka_from_hsic(h)
        if plan.symmetric:
            for i, key in enumerate(plan.keys_a):
                if key in index:
                    out[i, i] = math.nan if zero[index[key]] else 1.0
            lower = np.tril_indices(len(plan.keys_a), -1)
            out[lower] = out.T[lower]


class RBFSink:
    """RBF kernel: every layer is cached; afterwards one tiled pass over the cache gives the map
    (:func:`pyckafast.cka_matrix` with ``form="tiles"``: each layer's bandwidth once, its kernel
    tile once per block pair), or with a sampled bandwidth's ``n_pairs``/``seed`` one
    :func:`pyckafast.rbf_cka` per pair. The activations are read from the cache's memmaps, never
    gathered in memory."""

    def __init__(self, plan: Plan, cache):
        self.plan, self.cache = plan, cache

    def add(self, acts: dict) -> None:
        for key in self.plan.cached:
            self.cache.write(key, host_array(acts[key]))

    def result(self, *, debiased: bool, backend: str, options: dict, progress=None) -> np.ndarray:
        from ..cka_matrix import cka_matrix
        from ..rbf import rbf_cka

        plan = self.plan
        arrays = self.cache.arrays()
        xs = [arrays[k] for k in plan.keys_a]
        ys = [arrays[k] for k in plan.keys_b]
        if not {"n_pairs", "seed"} & set(options):
            return cka_matrix(xs, None if plan.symmetric else ys, kernel="rbf", debiased=debiased,
                              backend=backend, form="tiles", progress=progress, **options)
        out = np.empty((len(xs), len(ys)))
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                if plan.symmetric and j < i:  # one model against itself: the map is symmetric
                    out[i, j] = out[j, i]
                    continue
                value = rbf_cka(x, y, debiased=debiased, backend=backend, **options)
                # a layer against itself is exactly 1 (nan, with rbf_cka's warning, without
                # variance), as in cka_matrix, not 1 up to the pass's rounding
                out[i, j] = 1.0 if plan.symmetric and i == j and np.isfinite(value) else value
        return out


def _warn_constant(key) -> None:
    warnings.warn(f"layer {key[1]!r} of {key[0]} has zero variance (every sample gives the same "
                  "output): its CKA entries are undefined (nan).", RuntimeWarning, stacklevel=5)
