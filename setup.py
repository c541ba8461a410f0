"""Build of pyckafast's compiled parts.

* ``pyckafast._ext``: the pybind11 C++17 extension built from csrc/cpu (its threads are
  std::threads sized by pyckafast's one thread setting; no OpenMP runtime). Its sources compile
  in parallel (``PYCKAFAST_BUILD_JOBS``, default: all cores), through ccache when it is installed
  (``PYCKAFAST_CCACHE=0`` turns that off). If it cannot be built, the package
  still installs and runs on its NumPy and Numba backends, and ``pyckafast.show_config()`` says
  why the "cpp" backend is missing; ``PYCKAFAST_REQUIRE_EXT=1`` makes that an error instead
  (for wheels and CI).
* ``pyckafast._twins``: a second, test-only extension from csrc/cpu/twins (the host twins of
  the CUDA kernels that the tests run; nothing in the package imports it), so that ``_ext``
  holds production code only. ``PYCKAFAST_TWINS=0`` leaves it out (e.g. for release wheels).
* The CUDA sources (csrc/cuda, csrc/common) are copied into the package as ``pyckafast/_csrc`` so
  that an installed wheel can compile them at run time through CuPy.
"""

import os
import shutil
import sys
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
CUDA_SOURCE_DIRS = ("common", "cuda")


class OptionalBuildExt(build_ext):
    """Build the extension, but let the install succeed without it."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            self._skip(exc)

    def build_extensions(self):
        # A compiler cache where one is installed: rebuilding an unchanged source (the second
        # README command, CI, a reinstall) takes seconds instead of a full compile.
        launcher = shutil.which("ccache") if os.environ.get("PYCKAFAST_CCACHE", "1") != "0" else None
        if launcher and self.compiler.compiler_type == "unix":
            # compiler_so_cxx: the C++ compile command of newer setuptools (distutils) releases
            for name in ("compiler_so", "compiler_so_cxx"):
                command = list(getattr(self.compiler, name, None) or [])
                if command and os.path.basename(command[0]) != "ccache":
                    self.compiler.set_executable(name, [launcher, *command])
        super().build_extensions()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._skip(exc, ext.name)

    @staticmethod
    def _skip(exc, name="pyckafast._ext"):
        if os.environ.get("PYCKAFAST_REQUIRE_EXT") == "1":
            raise exc
        what = ("the tests of the CUDA kernels' host twins skip" if name == "pyckafast._twins"
                else "the 'cpp' backend is unavailable")
        print(f"WARNING: {name} was not built ({exc}); {what}.", file=sys.stderr)


class BuildPyWithCudaSources(build_py):
    """Ship the .cu/.h kernel sources inside the package (csrc/ itself is not installed)."""

    def run(self):
        super().run()
        target = Path(self.build_lib, "pyckafast", "_csrc")
        for sub in CUDA_SOURCE_DIRS:
            src = ROOT / "csrc" / sub
            if src.is_dir():
                shutil.copytree(src, target / sub, dirs_exist_ok=True)


# One compiler process per source file, all cores by default (pybind11's helper).
ParallelCompile("PYCKAFAST_BUILD_JOBS", default=0).install()
CPP = {"include_dirs": [str(ROOT / "csrc")], "cxx_std": 17,
       # -fopenmp-simd: the `omp simd` reduction pragmas only; nothing links an OpenMP runtime.
       "extra_compile_args": ["-O3", "-fopenmp-simd", "-DPCF_OPENMP_SIMD"]}


def _sources(folder: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / folder).glob("*.cpp"))


extensions = [Pybind11Extension("pyckafast._ext", _sources("cpu"), **CPP)]
if os.environ.get("PYCKAFAST_TWINS", "1") != "0":
    extensions.append(Pybind11Extension("pyckafast._twins", _sources("cpu/twins"), **CPP))

setup(
    ext_modules=extensions,
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithCudaSources},
)
