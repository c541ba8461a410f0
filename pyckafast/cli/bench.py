"""``pyckafast bench``: this machine's CPU backends (``pyckafast demo`` lives in ``cli/demo.py``)."""

from __future__ import annotations

import time

import numpy as np

from .._core import dispatch
from ..linear import linear_cka

__all__ = ["add_bench_parser"]


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="quick benchmark of this machine's CPU backends (linear CKA)")
    p.add_argument("--n", type=int, default=100_000, help="samples (default 1e5)")
    p.add_argument("--p", type=int, nargs="+", default=[64, 256], help="feature widths")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per cell; the best is shown")
    p.set_defaults(handler=run_bench)


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
