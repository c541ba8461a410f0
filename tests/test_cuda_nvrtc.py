"""Every shipped CUDA source compiles through NVRTC, the compiler CuPy runs on the GPU machine,
with the options CuPy adds (cupy/cuda/compiler.py: -ftz=true, -arch=sm_XX straight to a cubin,
--device-as-default-execution-space) on top of pyckafast's, for sm_80 and sm_90, and every
kernel name the loader asks for lowers to a symbol. Needs libnvrtc (the nvidia-cuda-nvrtc-cu12
or nvidia-cuda-nvrtc wheel, a CUDA toolkit, or PYCKAFAST_NVRTC=/path/to/libnvrtc.so); skipped with
a message otherwise. .ci/run installs the wheel for this test."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
from pathlib import Path

import pytest

from pyckafast._gpu import kernels

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def _candidates():
    if os.environ.get("PYCKAFAST_NVRTC"):
        yield Path(os.environ["PYCKAFAST_NVRTC"])
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for sub in ("cuda_nvrtc/lib", "cu13/lib", "cu12/lib"):
            yield from sorted(Path(base, sub).glob("libnvrtc.so*"))
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            yield from sorted(Path(home, "lib64").glob("libnvrtc.so*"))
    found = ctypes.util.find_library("nvrtc")
    if found:
        yield Path(found)


def _load():
    for path in _candidates():
        if "builtins" in path.name or "alt" in path.name:
            continue
        try:
            return ctypes.CDLL(str(path)), path
        except OSError:
            continue
    return None, None


NVRTC, NVRTC_PATH = _load()
pytestmark = pytest.mark.skipif(
    NVRTC is None, reason="libnvrtc not found: pip install nvidia-cuda-nvrtc-cu12 (or set "
    "PYCKAFAST_NVRTC) to compile the kernels as CuPy does")


def _check(status, prog=None):
    if status != 0:
        NVRTC.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise AssertionError(f"NVRTC error {status}: {NVRTC.nvrtcGetErrorString(status).decode()}"
                             + (f"\n{_log(prog)}" if prog is not None else ""))


def _log(prog) -> str:
    size = ctypes.c_size_t()
    NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetProgramLog(prog, buf)
    return buf.value.decode(errors="replace")


def _strings(items):
    return (ctypes.c_char_p * len(items))(*[s.encode() for s in items])


def test_nvrtc_version():
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(NVRTC.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
    assert major.value >= 11, (NVRTC_PATH, major.value, minor.value)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", sorted(kernels.NAME_EXPRESSIONS))
def test_compiles_with_cupys_options(source, arch):
    prog = ctypes.c_void_p()
    code = (CSRC / "cuda" / source).read_text()
    _check(NVRTC.nvrtcCreateProgram(ctypes.byref(prog), code.encode(), source.encode(), 0, None,
                                    None))
    try:
        names = kernels.NAME_EXPRESSIONS[source]
        for name in names:
            _check(NVRTC.nvrtcAddNameExpression(prog, name.encode()))
        options = [*kernels.compile_options(CSRC), "-ftz=true", f"-arch={arch}",
                   "--device-as-default-execution-space"]
        _check(NVRTC.nvrtcCompileProgram(prog, len(options), _strings(options)), prog)
        log = _log(prog).strip()
        assert "warning" not in log.lower(), log
        size = ctypes.c_size_t()
        _check(NVRTC.nvrtcGetCUBINSize(prog, ctypes.byref(size)))
        assert size.value > 0  # -arch=sm_XX: a cubin (SASS), as CuPy loads it
        for name in names:
            lowered = ctypes.c_char_p()
            _check(NVRTC.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(lowered)))
            assert lowered.value and lowered.value.startswith(b"_Z"), name
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
