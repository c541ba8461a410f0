"""The types of the public signatures: array inputs and the string options.

Nothing here imports cupy, torch or dask: an array from those libraries is described by the
protocols it implements (``__array__``, DLPack), so the aliases cost nothing at import time and
resolve under :func:`typing.get_type_hints` whichever optional packages are installed.

* :data:`ArrayLike`: what every public function accepts as a representation: a NumPy array or
  memmap, a nested sequence of numbers, or any object with ``__array__`` (Dask arrays, torch CPU
  tensors, pandas frames) or DLPack (CuPy arrays, torch CUDA tensors, JAX arrays).
* :data:`Backend`, :data:`CPUBackend`: the backend names of :mod:`pyckafast._core.dispatch`
  (``tests/test_types.py`` checks they match the registry and the parameter specs).
* :data:`Precision`, :data:`Kernel`, :data:`Form`, :data:`Bandwidth`, :data:`Sigma`: the other
  option values, as the parameter specs of :mod:`pyckafast._core.params` accept them.
* :data:`Seed`: what :func:`numpy.random.default_rng` accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["ArrayLike", "SupportsDLPack", "Backend", "CPUBackend", "Precision", "Kernel", "Form",
           "Bandwidth", "Sigma", "Seed"]


@runtime_checkable
class SupportsDLPack(Protocol):
    """An array that exports itself through DLPack (CuPy arrays, torch tensors, JAX arrays)."""

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        """Return a DLPack capsule of the array."""

    def __dlpack_device__(self) -> tuple[int, int]:
        """Return the (device type, device id) the array lives on."""


#: A representation: NumPy arrays and memmaps, nested sequences of numbers, objects with
#: ``__array__`` (Dask arrays, torch CPU tensors) and DLPack producers (CuPy, torch CUDA).
#: Shape (n, p) (one row per sample) or (n,) (one feature).
ArrayLike = Union[npt.ArrayLike, SupportsDLPack]

#: Who computes the terms: "auto" picks by where the data lives (see ``pyckafast.show_config``).
Backend = Literal["auto", "numpy", "numba", "cpp", "cuda"]

#: The backends a Dask worker (a CPU) can run.
CPUBackend = Literal["auto", "numpy", "numba", "cpp"]

#: GEMM precision: "highest" (full float32/float64) or "tf32" (CUDA tensor cores).
Precision = Literal["highest", "tf32"]

#: The kernel of the Gram matrices.
Kernel = Literal["linear", "rbf"]

#: The form of the linear computation (feature moments, n x n Grams, or Gram tiles).
Form = Literal["auto", "features", "samples", "tiles"]

#: How the RBF bandwidth is chosen from the data (median rules of ``_core.bandwidth.RULES``).
Bandwidth = Literal["kornblith", "offdiag", "sampled"]

#: An RBF bandwidth: None (median rule), one sigma for both inputs, or a (sigma_x, sigma_y) pair.
Sigma = Union[float, tuple[float, float], Sequence[float], None]

#: A random seed: anything :func:`numpy.random.default_rng` accepts.
Seed = Union[int, Sequence[int], np.random.SeedSequence, np.random.BitGenerator,
             np.random.Generator, None]
