"""GPU-only specifics of the cuda backend on a real GPU (skipped without CuPy and a device):
torch CUDA tensors, host and memmap inputs staged to the device, out-of-memory retries, the TF32
math mode, mixed devices, the sampled bandwidth and the L x L HSIC map, with proof (launch
counters, module cache) that the CUDA kernels ran. Run on a GPU machine with
scripts/gpu_check.sh.

Everything else the cuda backend must do (accuracy over dtypes and shapes against the float64
reference, chunking, layouts, NaN/Inf rows, zero variance, streaming states, RBF thresholds,
bandwidth rules and tiles) runs through the test matrix of tests/conftest.py: on a machine
where the cuda backend is usable, tests/test_linear.py, test_rbf.py, test_streaming.py,
test_cka_matrix.py and test_minibatch.py run every case with device="cuda" as well (marked
gpu, so ``pytest -m gpu`` selects them with this file)."""

from __future__ import annotations

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch as _dispatch
from _reference import (correlated_tanh, hsic, kernel_terms_brute, linear_cka_feature_space,
                        linear_gram)

cupy = pytest.importorskip("cupy", reason="the cuda backend needs CuPy")
if _dispatch.probe("cuda") is not None:
    pytest.skip(f"no usable GPU: {_dispatch.probe('cuda')}", allow_module_level=True)

from pyckafast._gpu import kernels as gpu_kernels  # noqa: E402
from pyckafast._gpu import ops_cuda as _cuda  # noqa: E402

pytestmark = pytest.mark.gpu


class _Ran:
    """Counts the launches of one kernel inside a with-block (the proof the GPU path ran)."""

    def __init__(self, kernel: str):
        self.kernel = kernel

    def __enter__(self):
        self.before = _cuda.launches().get(self.kernel, 0)
        return self

    def __exit__(self, *exc):
        self.count = _cuda.launches().get(self.kernel, 0) - self.before
        return False


def _data(n=3001, p1=33, p2=17, dtype=np.float32, mean=1e3, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, p1)) + mean).astype(dtype)
    y = (np.tanh(x[:, :p2] - mean) + 0.5 * rng.normal(size=(n, p2))).astype(dtype)
    return x, y


def _reference(x, y, debiased):
    return linear_cka_feature_space(x, y, debiased)


def test_linear_torch_cuda_tensors_zero_copy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch was built without CUDA")
    x, y = _data()
    tx = torch.from_numpy(x).cuda().requires_grad_(True)
    ty = torch.from_numpy(y).cuda()
    with _Ran("pcf_shift_columns") as ran:
        got = pyckafast.linear_cka(tx, ty, debiased=True)
    assert ran.count >= 2
    assert abs(got - _reference(x, y, True)) < 2e-5


def test_linear_numpy_and_memmap_stream_through_the_gpu(tmp_path):
    x, y = _data(n=5000)
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    with _Ran("pcf_shift_columns") as ran:
        got = pyckafast.linear_cka(xm, y, backend="cuda", chunk_size=999, debiased=True)
    assert ran.count == 2 * 6
    assert (cupy.cuda.Device().id, "linear_moments.cu") in gpu_kernels.loaded_modules()
    assert abs(got - _reference(x, y, True)) < 2e-5


def test_mixed_devices_raise():
    x, y = _data(n=100)
    with pytest.raises(ValueError, match="same device"):
        pyckafast.linear_cka(cupy.asarray(x), y)
    with pytest.raises(ValueError, match="same device"):
        pyckafast.rbf_cka(cupy.asarray(x), y)


def test_out_of_memory_retries_with_smaller_chunks():
    x, y = _data(n=8192, p1=64, p2=64)
    cx, cy = cupy.asarray(x), cupy.asarray(y)
    pool = cupy.get_default_memory_pool()
    limit = 1024 * 64 * 4 + 1  # one chunk buffer of 1024 rows fits, 4096 rows do not

    def allocator(size):
        if size > limit:
            raise cupy.cuda.memory.OutOfMemoryError(size, pool.total_bytes())
        return pool.malloc(size)

    cupy.cuda.set_allocator(allocator)
    try:
        with pytest.warns(RuntimeWarning, match="retrying with"):
            got = pyckafast.linear_cka(cx, cy, chunk_size=4096)
    finally:
        cupy.cuda.set_allocator(pool.malloc)
    assert abs(got - _reference(x, y, False)) < 2e-5


def test_tf32_is_opt_in_and_restores_the_math_mode():
    from cupy_backends.cuda.libs import cublas

    x, y = _data(n=20000, p1=256, p2=256, mean=0.0)
    handle = cupy.cuda.device.get_cublas_handle()
    before = cublas.getMathMode(handle)
    got = pyckafast.linear_cka(cupy.asarray(x), cupy.asarray(y), precision="tf32")
    assert cublas.getMathMode(handle) == before
    assert abs(got - _reference(x, y, False)) < 1e-3
    with pytest.raises(ValueError, match="precision"):
        pyckafast.linear_cka(cupy.asarray(x), cupy.asarray(y), precision="fp8")


def test_rbf_host_input_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 7)), rng.normal(size=(300, 3))
    ref = kernel_terms_brute(x, y, 0.1, 0.3)
    host = _cuda.rbf_terms(x, y, gamma_x=0.1, gamma_y=0.3, tile=128)
    assert abs(host.s_kl - ref.s_kl) < 1e-9 * abs(ref.s_kl)
    if torch.cuda.is_available():
        dev = _cuda.rbf_terms(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(),
                              gamma_x=0.1, gamma_y=0.3)
        np.testing.assert_allclose(dev.row_k, ref.row_k, rtol=1e-9, atol=1e-9)


def test_hsic_matrix_on_the_gpu():
    rng = np.random.default_rng(3)
    reps = [rng.normal(size=(64, 5)), rng.normal(size=(64, 9)), rng.normal(size=(64, 2))]
    reps[1][:, :2] += reps[0][:, :2]  # some dependence, so that not every entry is ~0
    got = _cuda.hsic_matrix([cupy.asarray(r) for r in reps], debiased=True)
    want = [[hsic(linear_gram(a), linear_gram(b), debiased=True) for b in reps] for a in reps]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_show_config_names_the_device(capsys):
    pyckafast.show_config()
    out = capsys.readouterr().out
    assert "cuda   [cuda] CUDA kernels through CuPy: ok" in out
    assert "compute capability" in out


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_sampled_bandwidth_draws_the_cpu_pairs(debiased):
    """bandwidth="sampled" on CuPy input: the same random pairs as the CPU engine, so the same
    value (the exact rules are in the matrix of tests/test_rbf.py)."""
    x, y = correlated_tanh(np.random.default_rng(4), 700, 12, 6, mean=50.0)
    want = pyckafast.rbf_cka(x, y, bandwidth="sampled", threshold=0.5, debiased=debiased,
                             backend="numpy")
    with _Ran("pcf_rbf_tiles") as ran:
        got = pyckafast.rbf_cka(cupy.asarray(x), cupy.asarray(y), bandwidth="sampled",
                                threshold=0.5, debiased=debiased)
    assert ran.count >= 1
    assert abs(got - want) <= 1e-9 * abs(want)
    with pytest.raises(ValueError, match="same device"):
        pyckafast.rbf_cka(cupy.asarray(x), y)


# ---- the front door on a GPU: every public function takes device data to a GPU producer -----
def _layers(n=600):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(n, 10)) + 20.0
    return [x, np.tanh(x[:, :4] - 20.0) + 0.3 * rng.normal(size=(n, 4)), (x[:, :3] - 20.0) ** 2]


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_linear_on_the_gpu(debiased):
    layers = _layers()
    want = pyckafast.cka_matrix(layers, debiased=debiased)
    with _Ran("pcf_shift_columns") as ran:
        got = pyckafast.cka_matrix([cupy.asarray(a) for a in layers], debiased=debiased)
    assert ran.count >= 3  # at least one chunk per pair i < j
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("bandwidth", ["kornblith", "sampled"])
def test_cka_matrix_rbf_on_the_gpu_with_torch_tensors(bandwidth):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch was built without CUDA")
    layers = _layers()
    want = pyckafast.cka_matrix(layers, kernel="rbf", bandwidth=bandwidth)
    with _Ran("pcf_rbf_tiles") as ran:
        got = pyckafast.cka_matrix([torch.from_numpy(a).cuda() for a in layers], kernel="rbf",
                                   bandwidth=bandwidth)
    assert ran.count >= 3
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_minibatch_cka_on_the_gpu_uses_the_hsic_matrix(kernel, monkeypatch):
    x, y, _ = _layers()
    calls = []
    real = _cuda.hsic_matrix
    monkeypatch.setattr(_cuda, "hsic_matrix", lambda reps, **kw: calls.append(1) or real(reps, **kw))
    want = pyckafast.minibatch_cka(x, y, 100, kernel=kernel)
    got = pyckafast.minibatch_cka(cupy.asarray(x), cupy.asarray(y), 100, kernel=kernel)
    assert len(calls) == 6
    assert got == pytest.approx(want, rel=1e-9)


def test_gpu_errors_match_the_cpu_ones():
    x, y, _ = _layers(n=100)
    with pytest.raises(ValueError, match="^The 'chunk_size' parameter of linear_cka"):
        pyckafast.linear_cka(cupy.asarray(x), cupy.asarray(y), chunk_size=True)
    with pytest.raises(ValueError, match="^The 'form' parameter of linear_cka"):
        pyckafast.linear_cka(cupy.asarray(x), cupy.asarray(y), form="gram")
    bad = x.copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match=r"^x must contain only finite values; .* in row 17\.$"):
        pyckafast.rbf_cka(cupy.asarray(bad), cupy.asarray(y))
    with pytest.raises(ValueError, match=r"^xs\[0\] must contain only finite values"):
        pyckafast.cka_matrix([cupy.asarray(bad), cupy.asarray(y)])
