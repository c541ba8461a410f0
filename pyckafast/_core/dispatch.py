"""Backend registry: one name -> one implementation module that can say whether it is usable.

A backend module implements some *operations* as module-level functions (``linear_moments``,
``rbf_tile``, ``rbf_terms``, ...), each producing terms (``pyckafast._core.terms``) from a block of data.
``resolve`` picks the module for an operation: "auto" takes the first usable backend in the
operation's order for the device the data lives on; an explicit name never silently falls back,
it raises with the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from types import ModuleType

__all__ = ["BACKENDS", "AUTO_ORDER", "BackendUnavailable", "resolve", "probe", "usable_backends",
           "rbf_fused", "fused_median_passes", "prefer_samples", "linear_workers", "linear_form",
           "tile_rows", "tile_bytes",
           "producer_device",
           "place", "producer", "PRODUCERS"]


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here (the message says why).

    Raised instead of a silent fallback; ``backend="auto"`` never raises it.

    Examples
    --------
    >>> import numpy as np
    >>> import pyckafast
    >>> x = np.random.default_rng(0).normal(size=(10, 2))
    >>> why_not = pyckafast._core.dispatch.probe("cuda")  # None where CUDA can run
    >>> try:
    ...     value = pyckafast.linear_cka(x, x, backend="cuda")
    ... except pyckafast.BackendUnavailable as exc:
    ...     assert why_not is not None and why_not in str(exc)
    ... else:
    ...     assert why_not is None and round(value, 12) == 1.0
    """


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


# Per-worker float64 sums and GEMM scratch that a chunk-parallel linear pass may hold in all.
_WORKER_SUMS_BYTES = 256 * 2**20


def linear_workers(ops: ModuleType, n: int, p1: int, p2: int, rows: int, itemsize: int,
                   threads: int) -> int:
    """Worker threads of a chunked linear pass: each takes whole chunks into its own sums.

    1 (one chunk at a time, BLAS multithreaded) when only one thread is allowed, when the
    backend's kernels may not run from several threads at once (``CHUNK_PARALLEL``; Numba's
    threading layer is not re-entrant), when there are too few chunks, or when per-worker p x p
    sums would hold too much memory (large p: one set of sums, BLAS threads instead).
    """
    if threads < 2 or not getattr(ops, "CHUNK_PARALLEL", False):
        return 1
    chunks = -(-n // rows)
    per_worker = (p1 * p1 + p2 * p2 + p1 * p2) * (8 + itemsize)
    return max(1, min(threads, chunks // 2, _WORKER_SUMS_BYTES // max(1, per_worker)))


def linear_form(form: str, n: int, p1: int, p2: int, itemsize: int = 8,
                available: int | None = None) -> str:
    """The linear producer's form: "features" (p x p moments, O(n p^2)), "samples" (the two
    n x n Grams in memory, O(n^2 p)) or "tiles" (the same sums over block pairs of Gram tiles,
    O(n^2 p), O(n + tile p) memory).

    "auto" takes the form of fewer flops among those whose memory fits in half of what is
    available (the in-memory Grams before their tiled pass: one large GEMM is faster); a form
    asked for by name that cannot fit raises MemoryError at once, with the bytes it needs.
    """
    available = _available_bytes() if available is None else available
    need = {"features": (p1 * p1 + p2 * p2 + p1 * p2) * (8 + itemsize),
            "samples": 2 * n * n * 8,
            "tiles": tile_bytes(n, p1, p2, itemsize)}
    if form != "auto":
        if need[form] > available:
            raise MemoryError(
                f"form={form!r} needs about {_gib(need[form])} beyond the inputs (n = {n}, p = "
                f"{p1} + {p2}); {_gib(available)} is available. Use form='auto'.")
        return form
    flops = {"features": n * (p1 * p1 + p2 * p2 + p1 * p2), "samples": n * n * (p1 + p2),
             "tiles": n * n * (p1 + p2)}
    fits = [f for f in ("features", "samples", "tiles") if need[f] <= available / 2
            and (f != "samples" or n <= MAX_SAMPLE_N)]
    if not fits:
        raise MemoryError(f"no linear form fits: the smallest needs {_gib(min(need.values()))} "
                          f"beyond the inputs; {_gib(available)} is available.")
    return min(fits, key=lambda f: flops[f])  # ties keep the first: features, then in memory


# Both centred blocks of a pair (x and y rows of blocks a and b) stay within this many bytes.
_BLOCK_PAIR_BYTES = 128 * 2**20
_MIN_TILE, _MAX_TILE = 128, 2048


def tile_rows(p1: int, p2: int, itemsize: int) -> int:
    """Rows per block: two blocks of x and y rows within ``_BLOCK_PAIR_BYTES`` (GEMMs of a few
    hundred rows still run BLAS near its peak when p is large, which is when this pass is used)."""
    rows = _BLOCK_PAIR_BYTES // max(1, 2 * (p1 + p2) * itemsize)
    return int(min(_MAX_TILE, max(_MIN_TILE, rows // 64 * 64)))


def tile_bytes(n: int, p1: int, p2: int, itemsize: int, tile: int | None = None) -> int:
    """Bytes the tiled pass holds beyond its inputs (what ``form="tiles"`` needs)."""
    t = min(n, tile or tile_rows(p1, p2, itemsize))
    return 2 * t * (p1 + p2) * itemsize + 4 * t * t * 8 + 6 * n * 8


def _available_bytes() -> int:
    """Memory this process may still use: MemAvailable of /proc/meminfo (Linux), else plenty."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**62


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


# ---- which producer makes the terms: (operation, place, backend) -> a function ----------------
def producer_device(backend: str, device: str) -> str:
    """The device whose backends produce the terms: the GPU when asked for, else the data's."""
    return "cuda" if backend == "cuda" else device


def place(kind: str, backend: str) -> str:
    """Where the terms of inputs of array kind ``kind`` ("numpy", "cupy", "dask") are made:
    "dask" (lazy, on the workers, CPU backends), "cuda" or "cpu"."""
    if kind == "dask":
        return "dask"
    return producer_device(backend, "cuda" if kind == "cupy" else "cpu")


@dataclass(frozen=True)
class Producer:
    target: str  # "module:function", imported when first used
    backend_op: str  # the backend operation the producer runs (checked here, before any work)
    takes_ops: bool  # True: gets the resolved backend module as ``ops``; False: its name, as
    # ``backend`` (Dask tasks ship the name to the workers, where a module cannot travel)


# Pair producers take prepared Samples and return a :class:`pyckafast._core.combine.HSICTriple`.
PRODUCERS: dict[tuple[str, str], Producer] = {
    ("linear", "cpu"): Producer("pyckafast._cpu.linear:hsic_triple", "linear_moments", True),
    ("linear", "cuda"): Producer("pyckafast._gpu.producers:linear_triple", "linear_terms", True),
    ("linear", "dask"): Producer("pyckafast._dask.producers:linear_triple", "linear_moments", False),
    ("rbf", "cpu"): Producer("pyckafast._cpu.producers:rbf_triple", "rbf_tile", False),
    ("rbf", "cuda"): Producer("pyckafast._gpu.producers:rbf_triple", "rbf_terms", False),
    ("rbf", "dask"): Producer("pyckafast._dask.producers:rbf_triple", "rbf_tile", False),
    # Minibatch CKA: the triples of every batch. CKA maps: a pair(i, j) -> triple function.
    ("minibatch", "cpu"): Producer("pyckafast._cpu.producers:batch_triples", "linear_moments", False),
    ("minibatch", "cuda"): Producer("pyckafast._gpu.producers:batch_triples", "hsic_matrix", True),
    ("matrix", "cpu"): Producer("pyckafast._cpu.maps:matrix_pairs", "linear_moments", False),
    ("matrix", "cuda"): Producer("pyckafast._gpu.map:matrix_pairs", "linear_terms", True),
    ("matrix", "dask"): Producer("pyckafast._dask.matrix:matrix_pairs", "linear_moments",
                                 False),
}


def producer(op: str, kind: str, backend: str) -> Callable:
    """The function that makes the HSIC triples of operation ``op`` ("linear", "rbf",
    "minibatch", "matrix") for prepared inputs of array kind ``kind`` with ``backend``: the one place
    where "auto" picks a device and a backend. An explicit backend that cannot run raises here,
    before any work."""
    where = place(kind, backend)
    entry = PRODUCERS.get((op, where))
    if entry is None:
        raise ValueError(f"{op} has no producer for {kind} inputs (on {where}); "
                         f"available: {sorted(w for o, w in PRODUCERS if o == op)}.")
    ops = resolve(backend, entry.backend_op, "cpu" if where == "dask" else where)
    module, _, name = entry.target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    return partial(fn, ops=ops) if entry.takes_ops else partial(fn, backend=backend)
