"""Measure pyckafast's worst relative error against a long-double reference; write docs/ACCURACY.md.

One command (a few minutes on 2 cores)::

    python scripts/accuracy_table.py --out docs/ACCURACY.md

Grid: CPU backend (numpy, numba, cpp) x input dtype (float32, float64) x mean offset added to
every feature (0, 1e2, 1e4) x kernel (linear; RBF with sigma = threshold x median distance,
threshold 0.1, 0.5, 1, 5) x estimator (biased, debiased). Each cell is the worst relative error
|value - reference| / |reference| over the seeds.

The data are tests/_reference.py's ``correlated_tanh`` (y = tanh(x W) + noise, both + offset),
rounded to the dtype; the reference takes those rounded values as exact and evaluates the
textbook n x n formulas (centred Grams, explicit squared differences, the Kornblith median of all
n^2 squared distances, Song et al.'s unbiased HSIC) in numpy.longdouble (x87 80-bit on x86-64,
eps 1.1e-19), so a cell measures the library's arithmetic only, never the rounding of the
input. The float64 reference of tests/_reference.py is checked against it (seed 0; its worst
relative difference is printed under the table).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pyckafast  # noqa: E402
import _reference as ref  # noqa: E402

BACKENDS = ("numpy", "numba", "cpp")
DTYPES = (np.float32, np.float64)
OFFSETS = (0.0, 1e2, 1e4)
KERNELS = ("linear", 0.1, 0.5, 1.0, 5.0)  # "linear", or the RBF threshold
LD = np.longdouble


# ---- long-double reference --------------------------------------------------------------------

def _centred(a) -> np.ndarray:
    a = np.asarray(a, dtype=LD).reshape(len(a), -1)
    return a - a.mean(axis=0)


def _sq_distances(a) -> np.ndarray:
    """Explicit squared differences, one feature at a time (no |a|^2 + |b|^2 - 2ab)."""
    a = _centred(a)
    d = np.zeros((len(a), len(a)), dtype=LD)
    for col in a.T:
        d += (col[:, None] - col[None, :]) ** 2
    return d


def grams(a) -> dict:
    """The linear Gram and the RBF Gram of every threshold of one side (distances once)."""
    c = _centred(a)
    out = {"linear": c @ c.T}
    d = _sq_distances(a)
    median = np.median(d)  # the Kornblith rule: all n^2 entries, the zero diagonal included
    for threshold in KERNELS[1:]:
        out[threshold] = np.exp(-d / (2 * LD(threshold) ** 2 * median))
    return out


def hsic(k, l, debiased: bool):
    n = k.shape[0]
    if not debiased:
        hk = k - k.mean(0) - k.mean(1)[:, None] + k.mean()
        hl = l - l.mean(0) - l.mean(1)[:, None] + l.mean()
        return (hk * hl).sum() / (n - 1) ** 2
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    ks, ls = k.sum(1), l.sum(1)
    value = (k * l).sum() + ks.sum() * ls.sum() / ((n - 1) * (n - 2)) - 2 * (ks @ ls) / (n - 2)
    return value / (n * (n - 3))


def cka_reference(k, l, debiased: bool) -> float:
    return float(hsic(k, l, debiased) / np.sqrt(hsic(k, k, debiased) * hsic(l, l, debiased)))


# ---- the library ------------------------------------------------------------------------------

def library_cka(x, y, kernel, debiased: bool, backend: str) -> float:
    if kernel == "linear":
        return pyckafast.linear_cka(x, y, debiased=debiased, backend=backend)
    return pyckafast.rbf_cka(x, y, threshold=kernel, debiased=debiased, backend=backend)


def float64_reference(x, y, kernel, debiased: bool) -> float:
    if kernel == "linear":
        return ref.linear_cka_ref(x, y, debiased)
    return ref.rbf_cka_ref(x, y, threshold=kernel, debiased=debiased)


def rel_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference) if np.isfinite(value) else float("nan")


def measure(args) -> tuple[dict, dict, float]:
    """worst[(kernel, debiased, dtype, offset, backend)], reference magnitudes, reference check."""
    worst: dict = {}
    magnitude: dict = {}
    ref_check = 0.0
    for seed in range(args.seeds):
        for dtype in DTYPES:
            for offset in OFFSETS:
                rng = np.random.default_rng(seed)
                x, y = ref.correlated_tanh(rng, args.n, args.p1, args.p2, mean=offset, dtype=dtype)
                gx, gy = grams(x), grams(y)
                for kernel in KERNELS:
                    k, l = gx[kernel], gy[kernel]
                    for debiased in (False, True):
                        expected = cka_reference(k, l, debiased)
                        if seed == 0:  # the float64 reference against this one, once per cell
                            ref_check = max(ref_check, rel_error(
                                float64_reference(x, y, kernel, debiased), expected))
                        key = (kernel, debiased, dtype, offset)
                        lo, hi = magnitude.get(key, (np.inf, 0.0))
                        magnitude[key] = (min(lo, abs(expected)), max(hi, abs(expected)))
                        for backend in args.backends:
                            err = rel_error(library_cka(x, y, kernel, debiased, backend), expected)
                            cell = key + (backend,)
                            old = worst.get(cell, 0.0)
                            worst[cell] = err if np.isnan(err) or np.isnan(old) else max(old, err)
                print(f"seed {seed} {np.dtype(dtype).name} offset {offset:g} done", file=sys.stderr)
    return worst, magnitude, ref_check


# ---- the table --------------------------------------------------------------------------------

def _kernel_name(kernel) -> str:
    return "linear" if kernel == "linear" else f"RBF, threshold {kernel:g}"


def _cell(err: float) -> str:
    return "**nan**" if np.isnan(err) else f"{err:.1e}"


def render(args, worst: dict, magnitude: dict, ref_check: float, seconds: float,
           cpu_seconds: float) -> str:
    backends = args.backends
    lines = [
        "# Accuracy of pyckafast: worst relative error against a long-double reference",
        "",
        f"Written by `python scripts/accuracy_table.py --out docs/ACCURACY.md` "
        f"(n = {args.n}, p = {args.p1} + {args.p2}, seeds 0..{args.seeds - 1}; "
        f"{datetime.date.today().isoformat()}, pyckafast {pyckafast.__version__}, numpy "
        f"{np.__version__}, {platform.machine()}; {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU on a "
        "shared 2-core machine busy with other jobs; the errors do not depend on the load).",
        "",
        "Data: tests/_reference.py's `correlated_tanh` (x ~ N(0, 1), y = tanh(x W) + noise / 2), "
        "both plus the mean offset, rounded to the dtype. The reference takes the rounded values "
        "as exact and evaluates the n x n textbook formulas in long double (80-bit, eps 1.1e-19): "
        "centred Grams, explicit squared differences, the median of all n^2 squared distances "
        "(pyckafast's default `bandwidth=\"kornblith\"`), biased HSIC tr(KHLH)/(n-1)^2 and "
        "Song et al.'s unbiased HSIC. So each cell is the library's own rounding error, not the "
        "input's. Cell: max over seeds of |value - reference| / |reference|; **nan**: the "
        "library returned nan.",
        "",
        "What runs in which precision: the `numpy` backend computes float32 input in float64. "
        "The `numba` and `cpp` backends (and `cuda`, not measured here) keep float32 input in "
        "float32 for the shifted values, the GEMMs and dot-product tiles (one chunk's p x p "
        "products, one RBF tile's pairwise dot products) and the RBF kernel entries; every sum "
        "across chunks and tiles, the row norms of debiased CKA and the final combination are "
        "float64. So the float32 columns of numba and cpp measure float32 GEMMs.",
        "",
        "| kernel | estimator | dtype | offset | reference CKA | "
        + " | ".join(backends) + " |",
        "|---|---|---|---|---|" + "---|" * len(backends),
    ]
    for kernel in KERNELS:
        for debiased in (False, True):
            for dtype in DTYPES:
                for offset in OFFSETS:
                    key = (kernel, debiased, dtype, offset)
                    lo, hi = magnitude[key]
                    cells = " | ".join(_cell(worst[key + (b,)]) for b in backends)
                    lines.append(f"| {_kernel_name(kernel)} | "
                                 f"{'debiased' if debiased else 'biased'} | "
                                 f"{np.dtype(dtype).name} | {offset:g} | {lo:.3g}..{hi:.3g} | "
                                 f"{cells} |")
    lines += ["", *_summary(worst, backends), "",
              f"Check of the reference: tests/_reference.py's float64 reference differs from the "
              f"long-double one by at most {ref_check:.1e} (relative) over the grid of seed 0.", ""]
    return "\n".join(lines)


def _summary(worst: dict, backends) -> list[str]:
    """The worst error per (dtype, kernel family, estimator): the numbers quoted in the README."""
    out = ["Worst over the offsets and backends:", ""]
    families = (("linear", ["linear"]), ("RBF, threshold 0.5 to 5", [0.5, 1.0, 5.0]),
                ("RBF, threshold 0.1", [0.1]))
    for dtype in DTYPES:
        for name, kernels in families:
            for debiased in (False, True):
                errs = [v for (k, dbs, d, _, b), v in worst.items()
                        if k in kernels and dbs == debiased and d is dtype and b in backends]
                finite = [e for e in errs if not np.isnan(e)]
                text = f"{max(finite):.1e}" if finite else "nan in every cell"
                if finite and len(finite) < len(errs):
                    text += f" (nan in {len(errs) - len(finite)} of {len(errs)} cells)"
                estimator = "debiased" if debiased else "biased"
                out.append(f"* {np.dtype(dtype).name}, {name}, {estimator}: {text}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the Markdown here (default: stdout)")
    parser.add_argument("--n", type=int, default=1000, help="samples (default 1000)")
    parser.add_argument("--p1", type=int, default=64, help="features of x (default 64)")
    parser.add_argument("--p2", type=int, default=32, help="features of y (default 32)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parser.parse_args(argv)
    start, cpu = time.perf_counter(), time.process_time()
    worst, magnitude, ref_check = measure(args)
    text = render(args, worst, magnitude, ref_check, time.perf_counter() - start,
                  time.process_time() - cpu)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {os.path.relpath(args.out)}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
