"""Device measurements that explain the GPU targets (run by scripts/gpu_check.sh; needs CuPy and
a GPU). Every section is guarded, prints one line and is saved to $OUT/micro.json:

  config      device, clocks, CuPy / NVRTC / cuBLAS versions, the toolkit probe
  kernels     registers, local (spill) bytes, static shared memory, occupancy of every kernel
  ceilings    device copy bandwidth, host->device bandwidth (pinned), cuBLAS SGEMM rate
  tf32        TF32 engaged in CudaEngine.precision("tf32"): crafted data whose float32 and TF32
              products differ (1 + 2^-13 rounds to 1 in TF32), and the 8192^3 rate
  gram        the linear chunk's Grams: SYRK vs GEMM vs one SYRK on [X|Y] (cuBLAS alone), and
              linear_terms with each PYCKAFAST_GPU_GRAM shape on device input
  staging     linear CKA from host NumPy (pinned double-buffered staging) vs device input
  rbf_check   fused tiles vs a float64 brute force on the GPU at n = 4099, dx = 512, dy = 300
              (one and several blocks), float32 and float64; run-to-run spread (atomics)
  rbf_scale   fused tile kernel at n = 64k..256k, d = 512: TFLOP/s of dots, t(1e6) by n^2
  median      exact 'kornblith' median on the device at n = 32k, d = 512: passes, time, t(1e6)
  bandwidth   rbf_cka with the default bandwidth vs an explicit sigma at n = $PYCKAFAST_CHECK_BW_N
              (default 131072), d = 512; both extrapolated to n = 1e6 by n^2

Usage: python scripts/gpu_micro.py [section ...]   (default: all but bandwidth)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback

import numpy as np

OUT = os.environ.get("OUT", ".")
RESULTS: dict = {}
SECTIONS: dict = {}
DEFAULT = ("config", "kernels", "ceilings", "tf32", "gram", "staging", "rbf_check", "rbf_scale",
           "median")


def section(name):
    def deco(fn):
        SECTIONS[name] = fn
        return fn
    return deco


def run_section(name):
    t0 = time.perf_counter()
    try:
        result = SECTIONS[name]()
    except Exception as exc:  # noqa: BLE001 - report and go on
        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    RESULTS[name] = {**result, "section_s": round(time.perf_counter() - t0, 2)}
    print(f"[{name}] {json.dumps(RESULTS[name], default=str)[:1500]}", flush=True)
    path = os.path.join(OUT, "micro.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    with open(path, "w") as f:
        json.dump({**old, **RESULTS}, f, indent=1, default=str)


def sync():
    import cupy
    cupy.cuda.get_current_stream().synchronize()


def timed(fn, reps=3, warm=1):
    for _ in range(warm):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


@section("config")
def _config():
    import cupy
    from cupy_backends.cuda.libs import cublas

    from pyckafast._gpu import ops_cuda
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,"
                          "power.draw,power.limit,memory.used,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    name = props["name"]
    return {"name": name.decode() if isinstance(name, bytes) else name,
            "sms": props["multiProcessorCount"], "l2_MB": props["l2CacheSize"] / 2**20,
            "cc": dev.compute_capability, "cupy": cupy.__version__, "numpy": np.__version__,
            "runtime": cupy.cuda.runtime.runtimeGetVersion(), "nvrtc": cupy.cuda.nvrtc.getVersion(),
            "cublas": cublas.getVersion(cupy.cuda.device.get_cublas_handle()),
            "unusable_reason": ops_cuda.unusable_reason(), "nvidia_smi": smi,
            "cupy_cache_dir": os.environ.get("CUPY_CACHE_DIR")}


@section("kernels")
def _kernels():
    from pyckafast._gpu import kernels
    t0 = time.perf_counter()
    out = {}
    for src, names in kernels.NAME_EXPRESSIONS.items():
        mod = kernels._module(src)
        for name in names:
            k = mod.get_function(name)
            row = {"regs": k.num_regs, "local_B": k.local_size_bytes,
                   "static_smem_B": k.shared_size_bytes, "sass": k.binary_version}
            try:
                from cupy.cuda import driver
                row["blocks_per_sm_256thr"] = driver.occupancyMaxActiveBlocksPerMultiprocessor(
                    k.kernel.ptr, 256, 0)
            except Exception as exc:  # noqa: BLE001
                row["occupancy"] = f"n/a ({type(exc).__name__})"
            out[name] = row
    out["compile_and_load_s"] = round(time.perf_counter() - t0, 2)
    return out


@section("ceilings")
def _ceilings():
    import cupy
    a = cupy.empty(1 << 30, np.float32)  # 4 GiB
    b = cupy.empty_like(a)
    a.fill(1.0)
    t_d2d = timed(lambda: cupy.copyto(b, a), reps=5)
    del b
    host = cupy.cuda.alloc_pinned_memory(1 << 30)
    h = np.frombuffer(host, np.float32, 1 << 28)
    h[:] = 1.0
    part = a[: 1 << 28]
    t_h2d = timed(lambda: part.set(h), reps=3)
    big = np.ones((1 << 28,), np.float32)  # pageable, as a NumPy input
    t_copy = timed(lambda: np.copyto(h, big), reps=3)
    del a, part
    n = 8192
    x = cupy.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    y = cupy.empty_like(x)
    t_f32 = timed(lambda: cupy.matmul(x, x, out=y), reps=5)
    return {"d2d_TBps": round(2 * 4 * 2**30 / t_d2d / 1e12, 2),
            "h2d_pinned_GBps": round(2**30 / t_h2d / 1e9, 1),
            "host_memcpy_to_pinned_GBps_1thread": round(2**30 / t_copy / 1e9, 1),
            "sgemm_TFLOPs": round(2 * n**3 / t_f32 / 1e12, 1)}


@section("tf32")
def _tf32():
    import cupy

    from pyckafast._gpu.engine import CudaEngine
    eng = CudaEngine()
    k = 1024
    a = cupy.full((k, 64), 1 + 2.0**-13, np.float32)  # exact in float32, 1.0 in TF32
    b = cupy.ones((k, 64), np.float32)
    out = cupy.empty((64, 64), np.float32)
    eng.cross(a, b, out)
    fp32 = float(out[0, 0])
    with eng.precision("tf32"):
        eng.cross(a, b, out)
    tf32 = float(out[0, 0])
    n = 8192
    x = cupy.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    y = cupy.empty_like(x)
    t_f32 = timed(lambda: eng.cross(x, x, y), reps=5)
    with eng.precision("tf32"):
        t_tf32 = timed(lambda: eng.cross(x, x, y), reps=5)
    return {"fp32_value": fp32, "tf32_value": tf32, "exact": k * (1 + 2.0**-13),
            "tf32_engaged": tf32 == k and fp32 == k * (1 + 2.0**-13),
            "fp32_TFLOPs": round(2 * n**3 / t_f32 / 1e12, 1),
            "tf32_TFLOPs": round(2 * n**3 / t_tf32 / 1e12, 1), "speedup": round(t_f32 / t_tf32, 2)}


@section("gram")
def _gram():
    import cupy
    import cupy.cublas

    from pyckafast._core.inputs import Samples
    from pyckafast._gpu import linear
    from pyckafast._gpu.engine import CudaEngine
    rows, p = 65536, 1024
    rng = cupy.random.default_rng(1)
    b = rng.standard_normal((rows, p), dtype=np.float32)
    g = cupy.zeros((p, p), np.float32)
    t_syrk = timed(lambda: cupy.cublas.syrk("T", b, out=g, alpha=1.0, beta=0.0, lower=False), reps=10)
    t_gemm = timed(lambda: cupy.matmul(b.T, b, out=g), reps=10)
    bb = rng.standard_normal((rows, 2 * p), dtype=np.float32)
    g2 = cupy.zeros((2 * p, 2 * p), np.float32)
    t_joint = timed(lambda: cupy.cublas.syrk("T", bb, out=g2, alpha=1.0, beta=0.0, lower=False), reps=10)
    del bb, g2
    f = 2 * rows * p * p
    out = {"chunk": [rows, p], "syrk_ms": round(t_syrk * 1e3, 3), "gemm_ms": round(t_gemm * 1e3, 3),
           "gemm_TFLOPs": round(f / t_gemm / 1e12, 1),
           "syrk_TFLOPs_useful": round(f / 2 / t_syrk / 1e12, 1),
           "two_syrk_plus_gemm_ms": round((2 * t_syrk + t_gemm) * 1e3, 3),
           "three_gemm_ms": round(3 * t_gemm * 1e3, 3), "one_syrk_XY_ms": round(t_joint * 1e3, 3)}
    n = 1_000_000
    x = rng.standard_normal((n, p), dtype=np.float32) + 3
    y = x[::-1]
    sx, sy = Samples(x, np.dtype(np.float32), True), Samples(y, np.dtype(np.float32), True)
    for shape in linear.GRAM_SHAPES:
        eng = CudaEngine()
        t = timed(lambda: linear.linear_terms(eng, sx, sy, n, debiased=False, chunk_size=None,
                                              gram=shape), reps=2)
        out[f"linear_terms_n1e6_{shape}_s"] = round(t, 3)
    return out


@section("staging")
def _staging():
    import cupy

    import pyckafast
    n, p = 1_000_000, 1024
    block = np.random.default_rng(5).standard_normal((65536, p), dtype=np.float32)
    xh = np.tile(block, (n // 65536 + 1, 1))[:n]
    yh = xh[::-1]
    t0 = time.perf_counter()
    host = pyckafast.linear_cka(xh, yh, backend="cuda")
    t_host = time.perf_counter() - t0
    xd = cupy.asarray(xh)
    yd = xd[::-1]
    t_dev = timed(lambda: pyckafast.linear_cka(xd, yd), reps=2)
    return {"n": n, "p": p, "host_s": round(t_host, 2), "device_s": round(t_dev, 3),
            "host_GBps_both_inputs": round(2 * xh.nbytes / t_host / 1e9, 1), "cka_host": host,
            "cka_device": pyckafast.linear_cka(xd, yd)}


def _brute(x, y, gx, gy):
    import cupy

    def e(a, g):
        a = a.astype(np.float64)
        a = a - a.mean(0)
        sq = (a * a).sum(1)
        k = cupy.expm1(-g * cupy.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0))
        cupy.fill_diagonal(k, 0.0)
        return k
    k, l = e(x, gx), e(y, gy)
    return float((k * l).sum()), float((k * k).sum()), float((l * l).sum()), k.sum(1), l.sum(1)


@section("rbf_check")
def _rbf_check():
    import cupy

    from pyckafast._gpu import ops_cuda
    out = {}
    rng = cupy.random.default_rng(2)
    n, dx, dy = 4099, 512, 300
    x64 = rng.standard_normal((n, dx)) + 3.0
    y64 = cupy.tanh(x64[:, :dy]) + 0.5 * rng.standard_normal((n, dy))
    gx, gy = 1.0 / (2 * dx), 1.0 / (2 * dy)
    ref = _brute(x64, y64, gx, gy)
    worst = 0.0
    for dtype in (np.float32, np.float64):
        for tile in (None, 1000):
            t = ops_cuda.rbf_terms(x64.astype(dtype), y64.astype(dtype), gamma_x=gx, gamma_y=gy,
                                   tile=tile)
            rel = [abs(t.s_kl - ref[0]) / abs(ref[0]), abs(t.s_kk - ref[1]) / abs(ref[1]),
                   abs(t.s_ll - ref[2]) / abs(ref[2]),
                   float(np.abs(t.row_k - ref[3].get()).max() / np.abs(ref[3].get()).max()),
                   float(np.abs(t.row_l - ref[4].get()).max() / np.abs(ref[4].get()).max())]
            out[f"{np.dtype(dtype).name}_tile{tile}"] = [f"{r:.2e}" for r in rel]
            if dtype == np.float64:
                worst = max(worst, *rel)
    a = ops_cuda.rbf_terms(x64.astype(np.float32), y64.astype(np.float32), gamma_x=gx, gamma_y=gy)
    b = ops_cuda.rbf_terms(x64.astype(np.float32), y64.astype(np.float32), gamma_x=gx, gamma_y=gy)
    out["float64_worst_rel"] = worst
    out["ok"] = worst < 1e-10
    out["rerun_s_kl_absdiff"] = abs(a.s_kl - b.s_kl)
    out["rerun_row_k_maxdiff"] = float(np.abs(a.row_k - b.row_k).max())
    return out


@section("rbf_scale")
def _rbf_scale():
    import cupy

    from pyckafast._gpu import ops_cuda
    rng = cupy.random.default_rng(3)
    out = {}
    d = 512
    for n in (65536, 131072, 262144):
        x = rng.standard_normal((n, d), dtype=np.float32)
        y = cupy.tanh(x) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
        t = timed(lambda: ops_cuda.rbf_terms(x, y, gamma_x=1 / (2 * d), gamma_y=1 / (2 * d)),
                  reps=1)
        flops = n * n / 2 * 2 * (2 * d)
        out[n] = {"s": round(t, 3), "TFLOPs_dot": round(flops / t / 1e12, 1),
                  "t_1e6_by_n2_s": round(t * (1e6 / n) ** 2, 1)}
        del x, y
    return out


@section("median")
def _median():
    """Exact 'kornblith' medians on the device at n = 32k, d = 512: the fused kernel (one and
    both sides per launch) vs the CuPy-tile passes; a 4096-row subset against a host float64
    np.median."""
    import cupy

    from pyckafast._core.pairs import centre
    from pyckafast._gpu import bandwidth as gpu_bw, kernels
    from pyckafast._gpu.engine import CudaEngine
    n, d = 32768, 512
    rng = cupy.random.default_rng(4)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = cupy.tanh(x) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    sub = x[:4096]
    host = sub.get().astype(np.float64)
    sq = (host * host).sum(1)
    ref_sub = float(np.median(np.maximum(sq[:, None] + sq[None, :] - 2 * host @ host.T, 0)))
    out = {"n": n, "d": d, "median_4096_host_float64": ref_sub,
           "median_4096_kernel": gpu_bw.median_sq_distance(sub, "kornblith", xp=cupy)}
    sides = [centre(x, "x", np.dtype(np.float32), cupy), centre(y, "y", np.dtype(np.float32), cupy)]
    before = kernels.launches().get("pcf_d2_hist", 0)
    t0 = time.perf_counter()
    out["medians_kernel"] = gpu_bw.exact_medians(CudaEngine(), sides, "kornblith")
    out["kernel_both_sides_s"] = round(time.perf_counter() - t0, 3)
    out["passes"] = kernels.launches().get("pcf_d2_hist", 0) - before  # launches: pairs x passes
    t0 = time.perf_counter()
    one = gpu_bw.exact_median(sides[0], "kornblith")
    out["kernel_one_side_s"] = round(time.perf_counter() - t0, 3)
    os.environ["PYCKAFAST_GPU_MEDIAN"] = "tiles"
    try:
        t0 = time.perf_counter()
        tiles = gpu_bw.exact_median(sides[0], "kornblith")
        out["tiles_one_side_s"] = round(time.perf_counter() - t0, 3)
    finally:
        del os.environ["PYCKAFAST_GPU_MEDIAN"]
    out["kernel_equals_tiles"] = one == tiles
    out["s"] = out["kernel_both_sides_s"]
    out["t_1e6_both_sides_by_n2_s"] = round(out["kernel_both_sides_s"] * (1e6 / n) ** 2, 1)
    out["t_1e6_tiles_one_side_by_n2_s"] = round(out["tiles_one_side_s"] * (1e6 / n) ** 2, 1)
    return out


@section("bandwidth")
def _bandwidth():
    import cupy

    import pyckafast
    n = int(float(os.environ.get("PYCKAFAST_CHECK_BW_N", "131072")))
    d = 512
    rng = cupy.random.default_rng(6)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = cupy.tanh(x) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    pyckafast.rbf_cka(x[:4096], y[:4096])  # compile, warm up
    t0 = time.perf_counter()
    default = pyckafast.rbf_cka(x, y)
    sync()
    t_default = time.perf_counter() - t0
    t0 = time.perf_counter()
    fixed = pyckafast.rbf_cka(x, y, sigma=(float(np.sqrt(d)), float(np.sqrt(d))))
    sync()
    t_fixed = time.perf_counter() - t0
    scale = (1e6 / n) ** 2
    return {"n": n, "d": d, "default_bandwidth_s": round(t_default, 2),
            "explicit_sigma_s": round(t_fixed, 2), "bandwidth_share": round(1 - t_fixed / t_default, 3),
            "t_1e6_default_by_n2_s": round(t_default * scale, 1),
            "t_1e6_explicit_by_n2_s": round(t_fixed * scale, 1), "cka_default": default,
            "cka_explicit": fixed}


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    wanted = sys.argv[1:] or list(DEFAULT)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        sys.exit(f"unknown sections {unknown}; known: {list(SECTIONS)}")
    for name in wanted:
        run_section(name)
    print("done", {k: ("error" in v) for k, v in RESULTS.items()}, flush=True)
