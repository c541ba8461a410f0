"""The CUDA sources without a GPU: they compile to PTX (sm_80, sm_90), stay NVRTC-compatible,
name the kernels the loader asks for, ship inside the wheel, and their host twin is exact."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pyckafast._gpu import kernels as gpu_kernels

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CU_FILES = sorted((CSRC / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if Path(p).exists()), None)


def test_every_source_has_kernels_registered():
    assert {p.name for p in CU_FILES} == set(gpu_kernels.NAME_EXPRESSIONS)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", CU_FILES, ids=lambda p: p.name)
def test_compiles_to_ptx(source, arch, tmp_path):
    out = tmp_path / "k.ptx"
    run = subprocess.run([NVCC, "-std=c++17", "-ptx", f"-arch={arch}", f"-I{CSRC}", str(source),
                          "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    entries = re.findall(r"\.entry\s+(\w+)", out.read_text())
    for expression in gpu_kernels.NAME_EXPRESSIONS[source.name]:
        base = expression.split("<")[0]
        assert any(base in e for e in entries), f"{expression} not compiled in {source.name}"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_rbf_kernels_do_not_spill(tmp_path):
    """ptxas resource use of the RBF tile kernels (sm_90): a spill in the 255-register float
    kernel costs a local-memory round trip per tile; guards the shared per-pair body's cost."""
    run = subprocess.run([NVCC, "-std=c++17", "-cubin", "-arch=sm_90", "-Xptxas", "-v",
                          f"-I{CSRC}", str(CSRC / "cuda" / "rbf_pairs_cuda.cu"),
                          "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    kernels = re.findall(r"Compiling entry function '(\w+)'.*?(\d+) bytes stack frame, (\d+) bytes "
                         r"spill stores, (\d+) bytes spill loads.*?Used (\d+) registers",
                         run.stdout + run.stderr, re.S)
    assert {k[0].split("I")[1][0] for k in kernels} == {"f", "d"}, kernels  # both instantiations
    for name, stack, stores, loads, registers in kernels:
        assert (int(stack), int(stores), int(loads)) == (0, 0, 0), name
        assert int(registers) <= 255, name


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ for the preprocessor check")
@pytest.mark.parametrize("source", CU_FILES, ids=lambda p: p.name)
def test_nvrtc_sees_no_host_headers(source):
    """NVRTC has no C++ standard library headers: preprocess as NVRTC would (__CUDACC_RTC__) with
    every system include directory removed; any host-only #include then fails."""
    run = subprocess.run(
        ["g++", "-E", "-nostdinc", "-nostdinc++", "-D__CUDACC_RTC__", "-D__CUDACC__",
         "-D__CUDA_ARCH__=900", f"-I{CSRC}", "-x", "c++", str(source), "-o", "/dev/null"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_name_expressions_are_instantiated_in_the_sources():
    for source, expressions in gpu_kernels.NAME_EXPRESSIONS.items():
        text = (CSRC / "cuda" / source).read_text()
        for expression in expressions:
            name, _, args = expression.partition("<")
            assert re.search(rf"__global__ void (__launch_bounds__\(\d+\) )?{name}\b|"
                             rf"__launch_bounds__\(\d+\) {name}\(", text), expression
            if args:  # template: the offline build instantiates exactly these arguments
                macro_args = args.rstrip(">").replace(" ", "")
                instantiated = {m.replace(" ", "") for m in re.findall(r"INSTANTIATE\(([^)]*)\)", text)}
                assert macro_args in instantiated, expression


def test_source_root_finds_the_sources():
    """An installed package finds the kernel sources shipped inside it; a source checkout
    without a build falls back to the repository's csrc/."""
    import pyckafast
    from pyckafast._core.sources import source_root

    shipped = Path(pyckafast.__file__).parent / "_csrc"
    assert source_root() in (shipped, CSRC)
    for path in [*CU_FILES, *(CSRC / "common").glob("*.h")]:
        assert (source_root() / path.parent.name / path.name).is_file()


@pytest.mark.parametrize("edited", ["common/rbf_pair.h", "common/pcf_common.h", "cuda/reduce.cuh",
                                    "cuda/rbf_pairs_cuda.cu"])
def test_a_source_edit_changes_the_kernel_cache_key(tmp_path, edited):
    """CuPy keys its disk cache on the .cu text and the options only: every header must reach
    the options, or an edited header would load a stale kernel."""
    root = tmp_path / "csrc"
    for sub in ("common", "cuda"):
        shutil.copytree(CSRC / sub, root / sub)
    before = gpu_kernels.compile_options(root)
    assert before == gpu_kernels.compile_options(root)  # deterministic
    assert any(o.startswith("-DPCF_SOURCE_HASH=") for o in before)
    with open(root / edited, "a") as f:
        f.write("\n// edited\n")
    assert gpu_kernels.compile_options(root) != before


def test_the_shipped_sources_are_hashed():
    options = gpu_kernels.compile_options(CSRC)
    assert f"-DPCF_SOURCE_HASH={gpu_kernels.source_hash(CSRC)}" in options
    assert f"-I{CSRC}" in options


@pytest.mark.slow  # a full wheel build: recompiles both extensions
def test_wheel_contains_the_kernel_sources(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = tmp_path.glob("pyckafast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in [*CU_FILES, *(CSRC / "cuda").glob("*.cuh"), *(CSRC / "common").glob("*.h")]:
        assert f"pyckafast/_csrc/{path.parent.name}/{path.name}" in names


def test_the_shipped_extension_holds_no_twin():
    """The host twins are test code: they live in the test-only pyckafast._twins, and the
    package never imports it."""
    ext = pytest.importorskip("pyckafast._ext", reason="needs the compiled extension")
    assert not [name for name in dir(ext) if "twin" in name or "columns" in name]
    run = subprocess.run([sys.executable, "-c", "import sys, pyckafast, pyckafast._cpu.ops_cpp; "
                          "print('pyckafast._twins' in sys.modules)"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.stdout.strip() == "False", run.stderr[-2000:]


_twins = pytest.importorskip("pyckafast._twins", reason="the host twins need the test-only extension")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slab", [1, 3, 64, 10_000])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided"])
def test_host_twin_of_the_moment_kernels(dtype, slab, layout):
    """The CUDA kernels' loops (csrc/cpu/twins/linear_moments_twin.cpp) against float64 NumPy."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(157, 13)) * 3 + 1e3).astype(dtype)
    y = (rng.normal(size=(157, 5)) - 40).astype(dtype)
    if layout == "fortran":
        x, y = np.asfortranarray(x), np.asfortranarray(y)
    elif layout == "strided":
        x, y = x[:, ::3], y[:, ::2]
    sx, sy = x[:20].mean(0).astype(dtype), y[:20].mean(0).astype(dtype)
    ox, oy = np.empty(x.shape, dtype), np.empty(y.shape, dtype)
    kernel = _twins.linear_moments_columns_f32 if dtype == np.float32 else _twins.linear_moments_columns_f64
    sum_x, sum_y, qx, rx, qy, ry, s = kernel(x, y, sx, sy, ox, oy, True, slab)
    bx, by = x.astype(float) - sx, y.astype(float) - sy  # exact in float64
    np.testing.assert_array_equal(ox, (x - sx))  # the shift itself is done in the input dtype
    q, r = (bx ** 2).sum(1), (by ** 2).sum(1)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(sum_x, bx.sum(0), rtol=rtol, atol=rtol * np.abs(bx).sum(0).max())
    np.testing.assert_allclose(sum_y, by.sum(0), rtol=rtol, atol=rtol * np.abs(by).sum(0).max())
    for got, want in ((qx, q @ bx), (rx, r @ bx), (qy, q @ by), (ry, r @ by)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    np.testing.assert_allclose(s, [q.sum(), r.sum(), q @ q, r @ r, q @ r], rtol=rtol)


def test_host_twin_checks_arguments():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="out_x"):
        _twins.linear_moments_columns_f32(x, x, x[0], x[0], np.empty((4, 2), np.float32),
                                        np.empty((4, 3), np.float32), False, 2)
    with pytest.raises(ValueError, match="slab"):
        _twins.linear_moments_columns_f32(x, x, x[0], x[0], np.empty_like(x), np.empty_like(x), False, 0)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_distance_histogram_kernels_do_not_spill(tmp_path):
    """ptxas resource use of the exact-median kernel (sm_90): no local memory, and the float
    instantiation within 168 registers (it holds one side's 8 x 8 dots, not the RBF kernel's
    two)."""
    run = subprocess.run([NVCC, "-std=c++17", "-cubin", "-arch=sm_90", "-Xptxas", "-v",
                          f"-I{CSRC}", str(CSRC / "cuda" / "d2_hist_cuda.cu"),
                          "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    kernels = re.findall(r"Compiling entry function '(\w+)'.*?(\d+) bytes stack frame, (\d+) bytes "
                         r"spill stores, (\d+) bytes spill loads.*?Used (\d+) registers",
                         run.stdout + run.stderr, re.S)
    assert len(kernels) == 2, kernels
    for name, stack, stores, loads, registers in kernels:
        assert (int(stack), int(stores), int(loads)) == (0, 0, 0), name
        assert int(registers) <= 168, (name, registers)
