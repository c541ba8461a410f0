"""Where the shipped C/C++/CUDA sources are: the headers are read by more than the GPU package
(the Numba kernels take the expm1 constants of ``common/rbf_pair.h``), so finding them is a
core helper, not a GPU one."""

from __future__ import annotations

from pathlib import Path

__all__ = ["source_root"]


def source_root() -> Path:
    """The directory holding ``common/`` and ``cuda/``: the installed copy, else the checkout's."""
    here = Path(__file__).resolve().parents[1]  # the package directory (this file is _core/sources.py)
    for root in (here / "_csrc", here.parent / "csrc"):
        if (root / "cuda" / "linear_moments_cuda.cu").is_file():
            return root
    raise FileNotFoundError(
        f"the CUDA kernel sources are missing: neither {here / '_csrc'} (installed package) nor "
        f"{here.parent / 'csrc'} (source checkout) holds cuda/linear_moments_cuda.cu; reinstall pyckafast."
    )
