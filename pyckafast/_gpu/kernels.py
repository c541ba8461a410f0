"""Run-time compiled CUDA kernels: sources shipped in the package, one CuPy module per device.

The kernel sources are real ``.cu`` files (csrc/cuda, with the host/device headers of
csrc/common). setup.py copies both into the installed package as ``pyckafast/_csrc``; a source
checkout falls back to the repository's ``csrc``. CuPy compiles them with NVRTC on first use and
caches the binaries on disk. CuPy's cache key covers the .cu text but not the headers it
includes, so the compile options carry a hash of every shipped source (``compile_options``): a
changed header means a new key, never a stale kernel. This module caches the loaded modules per
device and counts the launches (the GPU tests' proof that the CUDA path really ran). CuPy is imported inside the
functions that need it, so the source lookup can be tested without a GPU.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from .._core.sources import source_root

__all__ = ["source_hash", "compile_options", "launch", "launches", "loaded_modules",
           "NAME_EXPRESSIONS"]

# Kernels each source file provides, as CuPy name expressions (template instantiations).
NAME_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "linear_moments_cuda.cu": (
        "pcf_shift_columns<float>", "pcf_shift_columns<double>",
        "pcf_row_norms<float>", "pcf_row_norms<double>",
        "pcf_weighted_columns<float>", "pcf_weighted_columns<double>",
        "pcf_norm_scalars",
    ),
    "rbf_pairs_cuda.cu": ("pcf_rbf_tiles<float, 8>", "pcf_rbf_tiles<double, 4>"),
    "d2_hist_cuda.cu": ("pcf_d2_hist<float, 8>", "pcf_d2_hist<double, 4>"),
}

_MODULES: dict[tuple[int, str], object] = {}  # (device id, source) -> cupy.RawModule
_LAUNCHES: Counter = Counter()


def source_hash(root: Path) -> str:
    """SHA-256 (16 hex digits) of every kernel source under ``root``: common/*.h, cuda/*.cuh and
    cuda/*.cu, names included, in a fixed order."""
    digest = hashlib.sha256()
    paths = [*(root / "common").glob("*.h"), *(root / "cuda").glob("*.cuh"),
             *(root / "cuda").glob("*.cu")]
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def compile_options(root: Path) -> tuple[str, ...]:
    """NVRTC options for the sources under ``root``; the PCF_SOURCE_HASH define is unused by the
    code and exists only to put the headers into CuPy's cache key."""
    return ("-std=c++17", f"-I{root}", f"-I{root / 'common'}",
            f"-DPCF_SOURCE_HASH={source_hash(root)}")


def _module(source: str):
    import cupy

    device = cupy.cuda.Device().id
    key = (device, source)
    module = _MODULES.get(key)
    if module is None:
        root = source_root()
        module = cupy.RawModule(
            code=(root / "cuda" / source).read_text(),
            options=compile_options(root),
            name_expressions=list(NAME_EXPRESSIONS[source]),
        )
        _MODULES[key] = module
    return module


def launch(source: str, name: str, grid: tuple, block: tuple, args: tuple) -> None:
    """Launch kernel ``name`` of ``source`` on the current device and stream.

    Every array argument must be C-contiguous unless the kernel takes its strides (RawKernel
    passes only the data pointer) and every scalar an exact numpy type (np.int64 for
    ``long long``, np.int32 for ``int``, the kernel's float type for ``T``).
    """
    import cupy

    for a in args:
        strided_ok = name.split("<")[0] == _STRIDED
        if isinstance(a, cupy.ndarray) and not a.flags.c_contiguous and not strided_ok:
            raise ValueError(f"{name}: array arguments must be C-contiguous; got strides {a.strides}.")
        if isinstance(a, (bool, int, float)) and not isinstance(a, np.generic):  # np.float64 is a float
            raise TypeError(f"{name}: pass scalars as numpy scalars of the kernel's C type; got {a!r}.")
    kernel = _module(source).get_function(name)
    grid = tuple(int(g) for g in grid)
    kernel(grid, tuple(int(b) for b in block), args)
    _LAUNCHES[name.split("<")[0]] += 1


# The one kernel that reads a strided view (its strides are arguments).
_STRIDED = "pcf_shift_columns"


def launches() -> dict[str, int]:
    """Kernel launches so far in this process, by kernel name."""
    return dict(_LAUNCHES)


def loaded_modules() -> list[tuple[int, str]]:
    """(device id, source file) of every module compiled and loaded so far."""
    return sorted(_MODULES)
