"""The cuda backend on a real GPU (skipped without CuPy and a device): CuPy, torch CUDA and host
inputs against the CPU float64 reference, and proof (launch counters, module cache) that the
CUDA kernels ran. Run on a GPU machine with scripts/gpu_check.sh."""

from __future__ import annotations

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch as _backends, combine as _combine
from pyckafast._core.terms import KernelTerms

cupy = pytest.importorskip("cupy", reason="the cuda backend needs CuPy")
if _backends.probe("cuda") is not None:
    pytest.skip(f"no usable GPU: {_backends.probe('cuda')}", allow_module_level=True)

from pyckafast._gpu import kernels as _cuda_kernels  # noqa: E402
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
    return pyckafast.linear_cka(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                debiased=debiased, backend="numpy", form="features")


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-11)])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 700])
def test_linear_cupy_matches_cpu_float64(dtype, tol, debiased, chunk_size):
    x, y = _data(dtype=dtype)
    with _Ran("pcf_shift_columns") as ran:
        got = pyckafast.linear_cka(cupy.asarray(x), cupy.asarray(y), debiased=debiased,
                                   chunk_size=chunk_size)
    assert ran.count >= 2
    assert (cupy.cuda.Device().id, "linear_moments_cuda.cu") in _cuda_kernels.loaded_modules()
    assert abs(got - _reference(x, y, debiased)) < tol


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed", "ints", "one-feature"])
def test_linear_cupy_layouts(layout):
    x, y = _data(n=1500, dtype=np.float64, mean=5.0)
    cx, cy = cupy.asarray(x), cupy.asarray(y)
    if layout == "fortran":
        cx, cy = cupy.asfortranarray(cx), cupy.asfortranarray(cy)
    elif layout == "strided":
        cx, cy, x, y = cx[:, ::2], cy[:, 1:], x[:, ::2], y[:, 1:]
    elif layout == "reversed":
        cx, cy, x, y = cx[::-1], cy[::-1], x[::-1], y[::-1]
    elif layout == "ints":
        x = np.round(x * 10).astype(np.int64)
        cx = cupy.asarray(x)
    elif layout == "one-feature":
        cx, x = cx[:, 0], x[:, :1]
    got = pyckafast.linear_cka(cx, cy, debiased=True, chunk_size=301)
    assert abs(got - _reference(x, y, True)) < 1e-10


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
    assert abs(got - _reference(x, y, True)) < 2e-5


def test_linear_streaming_state_with_gpu_batches():
    x, y = _data(n=4000)
    state = pyckafast.LinearCKAState()
    for lo in range(0, 4000, 1300):
        state.update(cupy.asarray(x[lo:lo + 1300]), cupy.asarray(y[lo:lo + 1300]))
    assert state.n == 4000
    for debiased in (False, True):
        assert abs(state.result(debiased=debiased) - _reference(x, y, debiased)) < 2e-5


def test_mixed_devices_raise():
    x, y = _data(n=100)
    with pytest.raises(ValueError, match="same device"):
        pyckafast.linear_cka(cupy.asarray(x), y)


def test_non_finite_rows_are_reported():
    x, y = _data(n=1000, dtype=np.float64)
    x[611, 3] = np.inf
    with pytest.raises(ValueError, match=r"x must contain only finite values; found NaN or Inf in rows 600\.\.799"):
        pyckafast.linear_cka(cupy.asarray(x), cupy.asarray(y), chunk_size=200)


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


def _brute_kernel_terms(x, y, gamma_x, gamma_y):
    def e(a, gamma):
        a = a.astype(np.float64)
        a = a - a.mean(0)
        sq = (a * a).sum(1)
        out = np.expm1(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0))
        np.fill_diagonal(out, 0.0)
        return out
    k, l = e(x, gamma_x), e(y, gamma_y)
    return KernelTerms(n=len(x), s_kl=float((k * l).sum()), s_kk=float((k * k).sum()),
                       s_ll=float((l * l).sum()), row_k=k.sum(1), row_l=l.sum(1))


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("tile", [None, 200, 333])
@pytest.mark.parametrize("scale", [0.2, 1.0, 5.0])
def test_rbf_cupy_matches_float64(dtype, tol, tile, scale):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(901, 40)) + 100.0).astype(dtype)
    y = (np.sin(x[:, :20] - 100.0) + 0.3 * rng.normal(size=(901, 20))).astype(dtype)
    gamma_x, gamma_y = 1 / (2 * scale ** 2 * 80.0), 1 / (2 * scale ** 2 * 12.0)
    with _Ran("pcf_rbf_tiles") as ran:
        terms = _cuda.rbf_terms(cupy.asarray(x), cupy.asarray(y), gamma_x=gamma_x,
                                gamma_y=gamma_y, tile=tile)
    assert ran.count >= 1
    ref = _brute_kernel_terms(x, y, gamma_x, gamma_y)
    for debiased in (False, True):
        got = _combine.cka_from_hsic(_combine.kernel_hsic(terms, debiased))
        want = _combine.cka_from_hsic(_combine.kernel_hsic(ref, debiased))
        assert abs(got - want) < tol


def test_rbf_host_input_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 7)), rng.normal(size=(300, 3))
    ref = _brute_kernel_terms(x, y, 0.1, 0.3)
    host = _cuda.rbf_terms(x, y, gamma_x=0.1, gamma_y=0.3, tile=128)
    assert abs(host.s_kl - ref.s_kl) < 1e-9 * abs(ref.s_kl)
    if torch.cuda.is_available():
        dev = _cuda.rbf_terms(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(),
                              gamma_x=0.1, gamma_y=0.3)
        np.testing.assert_allclose(dev.row_k, ref.row_k, rtol=1e-9, atol=1e-9)


def test_hsic_matrix_on_the_gpu():
    from pyckafast._core import gram as _gpu_minibatch

    rng = np.random.default_rng(3)
    reps = [rng.normal(size=(64, 5)), rng.normal(size=(64, 9)), rng.normal(size=(64, 2))]
    got = _cuda.hsic_matrix([cupy.asarray(r) for r in reps], debiased=True)
    np.testing.assert_allclose(got, _gpu_minibatch.hsic_matrix(np, reps, debiased=True),
                               rtol=1e-10, atol=1e-12)


def test_show_config_names_the_device(capsys):
    pyckafast.show_config()
    out = capsys.readouterr().out
    assert "cuda   [cuda] CUDA kernels through CuPy: ok" in out
    assert "compute capability" in out


@pytest.mark.parametrize("bandwidth", ["kornblith", "offdiag", "sampled"])
@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_public_api_on_the_gpu(bandwidth, debiased):
    """rbf_cka on CuPy input: bandwidth passes and the fused tiles on the device, same value as
    the CPU engine (float64)."""
    import pyckafast

    rng = np.random.default_rng(4)
    x = rng.normal(size=(700, 12)) + 50.0
    y = np.tanh(x[:, :6] - 50.0) + 0.2 * rng.normal(size=(700, 6))
    want = pyckafast.rbf_cka(x, y, bandwidth=bandwidth, threshold=0.5, debiased=debiased,
                             backend="numpy")
    with _Ran("pcf_rbf_tiles") as ran:
        got = pyckafast.rbf_cka(cupy.asarray(x), cupy.asarray(y), bandwidth=bandwidth,
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
