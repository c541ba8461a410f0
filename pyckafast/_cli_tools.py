"""``pyckafast demo`` and ``pyckafast bench``: the README's main job, and this machine's backends."""

from __future__ import annotations

import time

import numpy as np

from ._core import dispatch
from .linear import linear_cka

__all__ = ["add_demo_parser", "add_bench_parser", "demo_data", "naive_gram_cka", "raw_float32_cka"]

# Large mean relative to the spread, as in post-ReLU activations: what breaks one-pass float32 sums.
_DEMO_OFFSET = 20.0


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="exact CKA of 10^6 samples vs the naive n x n Gram method")
    p.add_argument("--n", type=int, default=1_000_000, help="samples (default 1e6)")
    p.add_argument("--p", type=int, default=64, help="features per representation (default 64)")
    p.add_argument("--naive-n", type=int, default=4000,
                   help="subsample on which the naive Gram method is timed (default 4000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    p.set_defaults(handler=run_demo)


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="quick benchmark of this machine's CPU backends (linear CKA)")
    p.add_argument("--n", type=int, default=100_000, help="samples (default 1e5)")
    p.add_argument("--p", type=int, nargs="+", default=[64, 256], help="feature widths")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per cell; the best is shown")
    p.set_defaults(handler=run_bench)


def demo_data(n: int, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated float32 representations (n, p) with a large mean, generated in chunks."""
    rng = np.random.default_rng(seed)
    mix = (rng.normal(size=(p, p)) / np.sqrt(p)).astype(np.float32)
    x, y = np.empty((n, p), np.float32), np.empty((n, p), np.float32)
    for lo in range(0, n, 1 << 16):
        hi = min(lo + (1 << 16), n)
        z = rng.standard_normal((hi - lo, p), dtype=np.float32)
        x[lo:hi] = z + _DEMO_OFFSET
        noise = rng.standard_normal((hi - lo, p), dtype=np.float32)
        y[lo:hi] = np.maximum(z @ mix, 0) + 0.5 * noise + _DEMO_OFFSET
    return x, y


def naive_gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook CKA through two centred n x n float64 Gram matrices (Kornblith's colab)."""
    from .compat.kornblith import center_gram

    k = center_gram(x.astype(np.float64) @ x.T.astype(np.float64))
    l = center_gram(y.astype(np.float64) @ y.T.astype(np.float64))
    return float(np.vdot(k, l) / (np.linalg.norm(k) * np.linalg.norm(l)))


def raw_float32_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The one-pass formula ``X'Y - n mu nu'`` on raw float32 data, unshifted (what not to do)."""
    n = np.float32(x.shape[0])
    mx, my = x.mean(axis=0), y.mean(axis=0)

    def cov(a, ma, b, mb):
        return a.T @ b - n * np.outer(ma, mb)

    cxy, cxx, cyy = cov(x, mx, y, my), cov(x, mx, x, mx), cov(y, my, y, my)
    return float(np.sum(cxy * cxy) / np.sqrt(np.sum(cxx * cxx) * np.sum(cyy * cyy)))


def run_demo(args) -> int:
    n, p, m = _positive(args.n, "--n"), _positive(args.p, "--p"), _positive(args.naive_n, "--naive-n")
    m = min(m, n)
    x, y = demo_data(n, p, args.seed)
    print(f"pyckafast demo: linear CKA of two correlated float32 representations, "
          f"n = {n:,}, p = {p}, mean offset {_DEMO_OFFSET:g}")
    backend = dispatch.resolve("auto", "linear_moments", "cpu").__name__.rsplit("._", 1)[-1]
    exact, t_exact = _timed(linear_cka, x, y)
    state_mb = 8 * 3 * p * p / 1e6
    print(f"  pyckafast exact (one pass, {backend}): CKA = {exact:.10f}   {t_exact:7.3f} s, "
          f"state {state_mb:.2f} MB")
    naive, t_naive = _timed(naive_gram_cka, x[:m], y[:m])
    same = linear_cka(x[:m], y[:m])
    print(f"  naive n x n Grams on the first {m:,} samples: CKA = {naive:.10f}   {t_naive:7.3f} s "
          f"(pyckafast on them: {same:.10f}, |diff| {abs(same - naive):.1e})")
    scale = (n / m) ** 2
    print(f"    at n = {n:,}: ~{_duration(t_naive * scale)} (O(n^2) extrapolation) and "
          f"{_bytes(2 * 8 * n * n)} for the two float64 Grams")
    raw = raw_float32_cka(x, y)
    print(f"  raw float32 formula X'Y - n mu nu':       CKA = {raw:.10f}   error {abs(raw - exact):.1e} "
          "(why pyckafast shifts every chunk and sums in float64)")
    return 0


def run_bench(args) -> int:
    n, repeat = _positive(args.n, "--n"), _positive(args.repeat, "--repeat")
    widths = [_positive(p, "--p") for p in args.p]
    backends = dispatch.usable_backends("cpu")
    rng = np.random.default_rng(0)
    print(f"linear CKA, n = {n:,}, best of {repeat}; backends usable here: {', '.join(backends)}")
    print(f"{'backend':<8} {'dtype':<8} {'p':>5} {'seconds':>9} {'Mrows/s':>8}")
    for p in widths:
        base = rng.standard_normal((n, 2 * p), dtype=np.float32) + 5.0
        for dtype in (np.float32, np.float64):
            x, y = base[:, :p].astype(dtype), base[:, p:].astype(dtype)
            for name in backends:
                linear_cka(x[:256], y[:256], backend=name)  # warm-up: Numba compiles once
                best = min(_timed(linear_cka, x, y, backend=name)[1] for _ in range(repeat))
                print(f"{name:<8} {np.dtype(dtype).name:<8} {p:>5} {best:>9.4f} {n / best / 1e6:>8.2f}")
    return 0


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def _positive(value: int, flag: str) -> int:
    if value < 1:
        raise ValueError(f"{flag} must be a positive integer; got {value}.")
    return value


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
