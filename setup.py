"""Build of pyckafast's compiled parts.

* ``pyckafast._ext``: the pybind11 C++17 extension built from csrc/cpu (OpenMP when the compiler
  has it). If it cannot be built, the package still installs and runs on its NumPy and Numba
  backends, and ``pyckafast.show_config()`` says why the "cpp" backend is missing.
* The CUDA sources (csrc/cuda, csrc/common) are copied into the package as ``pyckafast/_csrc`` so
  that an installed wheel can compile them at run time through CuPy.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
CUDA_SOURCE_DIRS = ("common", "cuda")


def _openmp_flags(compiler: str = "c++") -> list[str]:
    """-fopenmp if the compiler accepts it, else nothing (the kernels then run on one thread)."""
    if os.environ.get("PYCKAFAST_NO_OPENMP"):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "t.cpp")
        src.write_text("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        cmd = [os.environ.get("CXX", compiler), "-fopenmp", str(src), "-o", str(Path(tmp, "t"))]
        try:
            ok = subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            ok = False
    return ["-fopenmp"] if ok else []


class OptionalBuildExt(build_ext):
    """Build the extension, but let the install succeed without it."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._skip(exc)

    @staticmethod
    def _skip(exc):
        print(f"WARNING: pyckafast._ext was not built ({exc}); the 'cpp' backend is unavailable.",
              file=sys.stderr)


class BuildPyWithCudaSources(build_py):
    """Ship the .cu/.h kernel sources inside the package (csrc/ itself is not installed)."""

    def run(self):
        super().run()
        target = Path(self.build_lib, "pyckafast", "_csrc")
        for sub in CUDA_SOURCE_DIRS:
            src = ROOT / "csrc" / sub
            if src.is_dir():
                shutil.copytree(src, target / sub, dirs_exist_ok=True)


omp = _openmp_flags()
ext = Pybind11Extension(
    "pyckafast._ext",
    sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp")),
    include_dirs=[str(ROOT / "csrc")],
    cxx_std=17,
    extra_compile_args=["-O3", "-fopenmp-simd", "-DPCF_OPENMP_SIMD", *omp],
    extra_link_args=omp,
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithCudaSources},
)
