"""Backend registry: one name -> one implementation module that can say whether it is usable.

A backend module implements some *operations* as module-level functions (``linear_moments``,
``rbf_tile``, ``rbf_terms``, ...), each producing terms (``pyckafast._core.terms``) from a block of data.
``resolve`` picks the module for an operation: "auto" takes the first usable backend in the
operation's order for the device the data lives on; an explicit name never silently falls back,
it raises with the reason.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

__all__ = ["BACKENDS", "AUTO_ORDER", "BackendUnavailable", "resolve", "probe", "usable_backends",
           "rbf_fused", "fused_median_passes", "prefer_samples"]


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here."""


@dataclass(frozen=True)
class Backend:
    name: str
    device: str  # "cpu" or "cuda": where the arrays it takes live
    module: str  # imported lazily, so that optional dependencies stay optional
    summary: str


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("numpy", "cpu", "pyckafast._cpu.ops_numpy", "plain float64 reference (BLAS)"),
        Backend("numba", "cpu", "pyckafast._cpu.ops_numba", "Numba kernels + BLAS, input dtype"),
        Backend("cpp", "cpu", "pyckafast._cpu.ops_cpp", "pybind11 C++ extension + BLAS"),
        Backend("cuda", "cuda", "pyckafast._gpu.ops_cuda", "CUDA kernels through CuPy"),
    )
}

# Preference of "auto" per (operation, device), fastest first (see bench/README.md).
AUTO_ORDER: dict[tuple[str, str], tuple[str, ...]] = {
    ("linear_moments", "cpu"): ("cpp", "numba", "numpy"),
    ("linear_terms", "cuda"): ("cuda",),
    ("rbf_tile", "cpu"): ("cpp", "numba", "numpy"),  # the CPU RBF ops: tiles, pairs, medians
    ("rbf_terms", "cuda"): ("cuda",),
    ("hsic_matrix", "cuda"): ("cuda",),
}


@lru_cache(maxsize=None)
def _load(name: str) -> tuple[ModuleType | None, str | None]:
    """Import a backend module once; return (module, None) or (None, why it cannot run)."""
    try:
        module = importlib.import_module(BACKENDS[name].module)
    except ImportError as exc:  # a missing optional dependency or an unbuilt extension
        return None, f"{type(exc).__name__}: {exc}"
    why = getattr(module, "unusable_reason", lambda: None)()
    return (None, why) if why else (module, None)


def probe(name: str) -> str | None:
    """None if backend ``name`` can run here, else the reason it cannot."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}; got {name!r}.")
    return _load(name)[1]


def usable_backends(device: str = "cpu") -> list[str]:
    return [n for n, b in BACKENDS.items() if b.device == device and probe(n) is None]


def resolve(name: str, op: str, device: str = "cpu") -> ModuleType:
    """The backend module that runs operation ``op`` on arrays living on ``device``."""
    if name == "auto":
        order = AUTO_ORDER.get((op, device), ())
        for candidate in order:
            module, _ = _load(candidate)
            if module is not None and hasattr(module, op):
                return module
        raise BackendUnavailable(
            f"no usable backend for {op} on {device}; tried {list(order)}: "
            + "; ".join(f"{c}: {probe(c)}" for c in order)
        )
    why = probe(name)
    if why:
        raise BackendUnavailable(f"backend={name!r} cannot run here: {why}")
    backend = BACKENDS[name]
    if backend.device != device:
        raise ValueError(
            f"backend={name!r} takes arrays on {backend.device}, but the inputs live on {device}; "
            f"move them or pick a {device} backend ({usable_backends(device)})."
        )
    module, _ = _load(name)
    if not hasattr(module, op):
        raise BackendUnavailable(f"backend={name!r} does not implement {op}.")
    return module


# ---- every other "auto" rule: which code path an operation takes, given the resolved backend ----
# The sample-space linear form holds two n x n float64 Grams; above this n it is never chosen.
MAX_SAMPLE_N = 8192


def rbf_fused(ops: ModuleType, depth: int) -> bool:
    """Whether backend ``ops`` runs RBF pairs of rows of total depth ``depth`` (dx + dy) in its
    register-tiled pass (``rbf_pairs``) rather than on BLAS dot-product tiles (``rbf_tile``)."""
    return hasattr(ops, "rbf_pairs") and depth <= ops.FUSED_MAX_DEPTH


def fused_median_passes(ops: ModuleType, depth: int) -> bool:
    """Whether backend ``ops`` runs each exact-median selection pass over rows of ``depth``
    features as one call (``d2_pass_kernel``) rather than over BLAS tiles."""
    return hasattr(ops, "d2_pass_kernel") and depth <= ops.FUSED_MAX_DEPTH


def prefer_samples(n: int, p1: int, p2: int) -> bool:
    """True when the n x n sample-space linear form costs fewer flops than the p x p feature
    form (and its two n x n Grams are small enough to hold)."""
    feature_cost = n * (p1 * p1 + p2 * p2 + p1 * p2)
    sample_cost = n * n * (p1 + p2 + 3)
    return n <= MAX_SAMPLE_N and sample_cost < feature_cost
