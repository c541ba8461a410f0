"""Where each batch of flattened activations goes, and the CKA map made from it afterwards.

Linear kernel: the streamed layers feed ONE :class:`~pyckafast.CKAMapState` (GPU activations go
in as they are: the state's cuda producer reduces them on the device); the cached layers are
appended to the activation cache, and after the pass every pair involving a large layer comes
from one tiled sample-space pass over the cache. RBF kernel: the activations are gathered on the
host and :func:`pyckafast.rbf_cka` runs per pair.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._core import combine
from .._core.inputs import device_of
from .._core.progress import progress_reporter
from .capture import host_array
from .plan import Plan

__all__ = ["LinearMapSink", "RBFSink", "cached_pair_terms"]


def _state_input(t):
    """What the map state takes: a device tensor as it is (no host copy), a CPU one as a view."""
    return t if device_of(t) == "cuda" else t.numpy()


class LinearMapSink:
    """Streams the small layers into one map state and writes the cached layers to disk."""

    def __init__(self, plan: Plan, state, cache, debiased: bool):
        self.plan, self.state, self.cache, self.debiased = plan, state, cache, debiased

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
        plan = self.plan
        arrays = self.cache.arrays()
        reps = [arrays[k] for k in plan.cached]
        index = {k: r for r, k in enumerate(plan.cached)}
        pairs = [(index[plan.keys_a[i]], index[plan.keys_b[j]]) for i, j in plan.cache_pairs]
        terms, zero = cached_pair_terms(reps, pairs, progress=progress, tile=tile)
        for (i, j), (r, s) in zip(plan.cache_pairs, pairs):
            h = combine.kernel_hsic(terms[(r, s)], self.debiased)
            out[i, j] = combine.cka_from_hsic(h._replace(zero_x=zero[r], zero_y=zero[s]))
        if plan.symmetric:
            for i, key in enumerate(plan.keys_a):
                if key in plan.large:
                    out[i, i] = 1.0 if _has_variance(arrays[key]) else _nan_for(key)
            lower = np.tril_indices(len(plan.keys_a), -1)
            out[lower] = out.T[lower]


def cached_pair_terms(reps: list, pairs: list[tuple[int, int]], *, progress=None,
                      tile: int | None = None):
    """Kernel terms of the linear Grams of every wanted pair of cached representations, and
    whether each representation has zero variance.

    Every pair runs the tiled sample-space pass of :func:`pyckafast.linear_cka` (form="tiles");
    reps are read block by block, so memmaps larger than RAM work.
    """
    from .._cpu.linear_tiles import tiled_sample_terms

    terms, zero = {}, [False] * len(reps)
    if not pairs:
        return terms, zero
    with progress_reporter(progress, len(pairs), desc="compare_models: cached pairs",
                           unit="pair") as report:
        for done, (r, s) in enumerate(pairs, 1):
            terms[(r, s)], zero[r], zero[s] = tiled_sample_terms(reps[r], reps[s], tile=tile)
            if report is not None:
                report(done, len(pairs))
    return terms, zero


class RBFSink:
    """Gathers every layer's activations on the host; rbf_cka runs per pair afterwards."""

    def __init__(self, keys_a: list, keys_b: list):
        self.keys_a, self.keys_b = keys_a, keys_b
        self.gathered: dict = {k: [] for k in dict.fromkeys([*keys_a, *keys_b])}

    def add(self, acts: dict) -> None:
        for key, parts in self.gathered.items():
            parts.append(host_array(acts[key]))

    def result(self, *, debiased: bool, backend: str, options: dict) -> np.ndarray:
        from ..rbf import rbf_cka

        data = {k: np.concatenate(v) for k, v in self.gathered.items()}
        out = np.empty((len(self.keys_a), len(self.keys_b)))
        for i, a in enumerate(self.keys_a):
            for j, b in enumerate(self.keys_b):
                out[i, j] = rbf_cka(data[a], data[b], debiased=debiased, backend=backend, **options)
        return out


def _has_variance(a: np.ndarray, rows: int = 4096) -> bool:
    """Whether any row differs from the first, read block by block (``a`` may be a memmap)."""
    first = np.asarray(a[:1])
    return any(bool((np.asarray(a[lo:lo + rows]) != first).any()) for lo in range(0, len(a), rows))


def _nan_for(key) -> float:
    warnings.warn(f"layer {key[1]!r} of {key[0]} has zero variance: its CKA with itself is "
                  "undefined (nan).", RuntimeWarning, stacklevel=4)
    return math.nan
