"""``show_config``: what this installation can run, and why a backend cannot."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

from ._core import dispatch

__all__ = ["show_config", "config"]


def config() -> dict:
    """The installation as a dict: versions, backends (usable or why not), threads, GPU."""
    backends = {}
    for name, b in dispatch.BACKENDS.items():
        why = dispatch.probe(name)
        backends[name] = {"device": b.device, "usable": why is None, "why_not": why, "what": b.summary}
    return {
        "pyckafast": _version("pyckafast"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "cupy": _version("cupy-cuda12x") or _version("cupy-cuda13x") or _version("cupy"),
        "cpu_count": os.cpu_count(),
        "threads": _threads(),
        "simd": _simd(),
        "backends": backends,
        "gpu": _gpu_summary(backends),
    }


def show_config() -> None:
    """Print what pyckafast can use here: versions, backends (and why one is missing), threads, GPU.

    Examples
    --------
    >>> import pyckafast
    >>> pyckafast.show_config()  # doctest: +ELLIPSIS
    pyckafast ...
    """
    c = config()
    lines = [f"pyckafast {c['pyckafast']}  (python {c['python']}, {c['platform']})"]
    lines += [f"  {k:<8} {c[k] or 'not installed'}" for k in ("numpy", "numba", "cupy")]
    lines.append(f"  cpus     {c['cpu_count']}  threads: {c['threads']}")
    lines.append(f"  simd     {c['simd'] or 'no compiled extension'}")
    lines.append(f"  gpu      {c['gpu']}")
    lines.append("  backends:")
    for name, b in c["backends"].items():
        status = "ok" if b["usable"] else f"unavailable: {b['why_not']}"
        lines.append(f"    {name:<6} [{b['device']}] {b['what']}: {status}")
    print("\n".join(lines))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _threads() -> str:
    from ._core.threads import available_cores, get_num_threads

    parts = [f"pyckafast={get_num_threads()} (cores available: {available_cores()})"]
    try:
        import numba

        parts.append(f"numba={numba.get_num_threads()}")
    except ImportError:
        pass
    try:
        from . import _ext  # type: ignore[attr-defined]

        _ext.set_thread_limit(get_num_threads())
        parts.append(f"cpp={_ext.max_threads()}")
    except ImportError:
        pass
    return ", ".join(parts) or "unknown"


def _simd() -> str | None:
    """The instruction set of the C++ kernels here (PYCKAFAST_SIMD=generic|avx2 caps it)."""
    try:
        from . import _ext  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _ext.simd_isa()


def _gpu_summary(backends: dict) -> str:
    cuda = backends.get("cuda", {})
    if not cuda.get("usable"):
        return f"none usable ({cuda.get('why_not')})"
    from ._gpu import ops_cuda  # only imported when the backend probed usable

    return ops_cuda.describe_device()
