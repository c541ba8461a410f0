"""Benchmark of the significance test and the leave-one-out influence (issue 23).

One command, a few minutes, a markdown table on stdout::

    python bench/signif_bench.py            # n = 10^6, p = 64 float32 (mean 100)
    python bench/signif_bench.py --quick    # n = 2 * 10^5 (a smoke run)
    python bench/signif_bench.py --ratios   # only the six rows against linear_cka (~2 min)

Rows:

* ``linear_cka``, ``cka_test(method="moments")`` and ``cka_influence`` on the same arrays, each
  in a child process that loads the inputs and reports its wall time (best of ``--repeat``),
  its ratio to ``linear_cka`` (biased or debiased, timed in the same child alternating with
  the call, so that both run under the same load) and its peak memory beyond the inputs
  (VmHWM after the calls minus VmRSS after loading);
* explicit permutations at n = 10^5: ``cka_test(method="permutation")`` against the plain NumPy
  loop ``x.T @ y[perm]`` over the same number of permutations;
* the n x n route of hyppo / FactoMineR: permuting the centred n x n Grams, at the largest n
  whose three n x n float64 matrices fit in 3 GB, and its moments (Gram products, O(n^3)) at a
  smaller n, reimplemented (FactoMineR is R); hyppo's own ``Hsic().test`` (``pip install
  hyppo``; skipped when it does not import) at ``--hyppo-n``; beside each ``cka_test`` on the
  same data.

Each row records ``uptime``'s load average: figures taken on a busy machine are marked so.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def _write_inputs(directory: str, n: int, p: int) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    paths = os.path.join(directory, "x.npy"), os.path.join(directory, "y.npy")
    mix = rng.standard_normal((p, p)).astype(np.float32) * 0.1
    xs = np.lib.format.open_memmap(paths[0], "w+", np.float32, (n, p))
    ys = np.lib.format.open_memmap(paths[1], "w+", np.float32, (n, p))
    for lo in range(0, n, 100_000):
        hi = min(lo + 100_000, n)
        x = rng.standard_normal((hi - lo, p), dtype=np.float32)
        xs[lo:hi] = x + 100
        ys[lo:hi] = x @ mix + rng.standard_normal((hi - lo, p), dtype=np.float32) + 100
    xs.flush()
    ys.flush()
    return paths


def _child(what: str, paths: tuple[str, str], repeat: int, queue) -> None:
    import pyckafast

    x, y = np.load(paths[0]), np.load(paths[1])
    base = _status("VmRSS")
    calls = {
        "linear_cka": lambda: pyckafast.linear_cka(x, y),
        "linear_cka debiased": lambda: pyckafast.linear_cka(x, y, debiased=True),
        "cka_test moments": lambda: pyckafast.cka_test(x, y, method="moments"),
        "cka_test moments debiased": lambda: pyckafast.cka_test(x, y, method="moments",
                                                                debiased=True),
        "cka_influence": lambda: pyckafast.cka_influence(x, y),
        "cka_influence debiased": lambda: pyckafast.cka_influence(x, y, debiased=True),
    }
    # The reference is timed in the same child, alternating with the call: on a loaded machine
    # the ratio then compares calls that ran under the same load.
    reference = "linear_cka debiased" if "debiased" in what else "linear_cka"
    best = {what: math.inf, reference: math.inf}
    for _ in range(repeat):
        for name in best:
            start = time.perf_counter()
            calls[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    queue.put({"seconds": best[what], "ratio": best[what] / best[reference],
               "extra_mb": (_status("VmHWM") - base) / 2 ** 20,
               "inputs_mb": (x.nbytes + y.nbytes) / 2 ** 20, "load": _load()})


def _in_child(what: str, paths, repeat: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(what, paths, repeat, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def _permutations(n: int, p: int, b: int) -> list[dict]:
    import pyckafast

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((n, p), dtype=np.float32) + 100)
    y = (x @ rng.standard_normal((p, p), dtype=np.float32) * 0.01
         + rng.standard_normal((n, p), dtype=np.float32) + 100)
    start = time.perf_counter()
    perm_rng = np.random.default_rng(2)
    for _ in range(b):
        perm = perm_rng.permutation(n)
        c = x.T @ y[perm]
        float(np.vdot(c, c))
    loop = time.perf_counter() - start
    start = time.perf_counter()
    pyckafast.cka_test(x, y, method="permutation", n_permutations=b, seed=2)
    ours = time.perf_counter() - start
    load = _load()
    return [{"row": f"NumPy loop x.T @ y[perm], n={n:.0e}, B={b}", "seconds": loop, "load": load},
            {"row": f"cka_test permutation, n={n:.0e}, B={b}", "seconds": ours,
             "ratio": ours / loop, "load": load}]


def _centred_in_place(k: np.ndarray) -> np.ndarray:
    """H K H without a temporary n x n matrix (the 3 GB budget holds K, L and one permuted L)."""
    r = k.mean(axis=1)
    k -= r[:, None]
    k -= r[None, :]
    k += r.mean()
    return k


def _nn_route(n_perm: int, n_moments: int, b: int) -> list[dict]:
    """hyppo/FactoMineR's n x n route, reimplemented: centred Grams, permuted explicitly."""
    import pyckafast
    from pyckafast._core.null_invariants import dense_invariants, double_centred
    from pyckafast._core.permutation_moments import null_moments

    rows = []
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n_perm, 8))
    y = x[:, :4] ** 2 + rng.standard_normal((n_perm, 4))
    start = time.perf_counter()
    a, bm = _centred_in_place(x @ x.T), _centred_in_place(y @ y.T)
    for _ in range(b):
        perm = rng.permutation(n_perm)
        float(np.vdot(a, bm[np.ix_(perm, perm)]))
    rows.append({"row": f"n x n route: {b} permutations of n x n Grams, n={n_perm}",
                 "seconds": time.perf_counter() - start, "load": _load()})
    del a, bm
    start = time.perf_counter()
    pyckafast.cka_test(x, y, method="permutation", n_permutations=b, seed=0)
    rows.append({"row": f"cka_test permutation, same data, n={n_perm}, B={b}",
                 "seconds": time.perf_counter() - start, "load": _load()})
    xs, ys = x[:n_moments], y[:n_moments]
    start = time.perf_counter()
    null_moments(dense_invariants(double_centred(xs @ xs.T)),
                 dense_invariants(double_centred(ys @ ys.T)))
    rows.append({"row": f"n x n route: three exact moments (Gram products), n={n_moments}",
                 "seconds": time.perf_counter() - start, "load": _load()})
    start = time.perf_counter()
    pyckafast.cka_test(xs, ys, method="moments", third_moment=True)
    rows.append({"row": f"cka_test moments (third from feature space), n={n_moments}",
                 "seconds": time.perf_counter() - start, "load": _load()})
    return rows


def _hyppo(n: int, b: int) -> list[dict]:
    """hyppo's HSIC permutation test (its n x n Grams) beside cka_test's RBF permutations."""
    try:
        from hyppo.independence import Hsic
    except ImportError:
        return []
    import pyckafast

    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, 8))
    y = x[:, :4] ** 2 + rng.standard_normal((n, 4))
    start = time.perf_counter()
    Hsic().test(x, y, reps=b, workers=1, auto=False)
    rows = [{"row": f"hyppo {_version('hyppo')} Hsic().test, n={n}, reps={b}",
             "seconds": time.perf_counter() - start, "load": _load()}]
    start = time.perf_counter()
    pyckafast.cka_test(x, y, kernel="rbf", method="permutation", n_permutations=b, seed=0)
    rows.append({"row": f"cka_test rbf permutation, same data, n={n}, B={b}",
                 "seconds": time.perf_counter() - start, "load": _load()})
    return rows


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--p", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--perm-n", type=int, default=100_000)
    parser.add_argument("--perm-b", type=int, default=100)
    parser.add_argument("--nn", type=int, default=11_000,
                        help="n of the n x n permutation route (3 n^2 float64 <= 3 GB)")
    parser.add_argument("--nn-moments", type=int, default=3000)
    parser.add_argument("--hyppo-n", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ratios", action="store_true",
                        help="only linear_cka, cka_test moments and cka_influence")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.perm_n, args.perm_b, args.nn, args.nn_moments = 200_000, 20_000, 20, 3000, 1000
        args.hyppo_n = 1000
    rows = []
    with tempfile.TemporaryDirectory() as d:
        paths = _write_inputs(d, args.n, args.p)
        for what in ("linear_cka", "cka_test moments", "cka_influence", "linear_cka debiased",
                     "cka_test moments debiased", "cka_influence debiased"):
            r = _in_child(what, paths, args.repeat)
            r["row"] = f"{what}, n={args.n:.0e}, p={args.p} float32 (mean 100)"
            rows.append(r)
    if not args.ratios:
        rows += _permutations(args.perm_n, args.p, args.perm_b)
        rows += _nn_route(args.nn, args.nn_moments, 10)
        rows += _hyppo(args.hyppo_n, 100)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| what | seconds | ratio | extra memory (MB) | load |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        extra = f"{r['extra_mb']:.0f} (inputs {r['inputs_mb']:.0f})" if "extra_mb" in r else ""
        print(f"| {r['row']} | {r['seconds']:.3f} | {ratio} | {extra} | {r['load']} |")


if __name__ == "__main__":
    main()
