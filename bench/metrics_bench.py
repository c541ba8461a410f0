"""torchmetrics.CKAMap against CKAMapState on the same batches: six layers of 10-768 features.

    python bench/metrics_bench.py [--rounds 5] [--n 4096] [--batch 256] [--old /work/main]

Interleaved rounds (each round times every contender once, in turn), medians, the 1-minute load
average before and after; prints a markdown table. ``--old PATH`` also times the CKAMap of the
checkout at PATH (e.g. the old main, one LinearCKAState per pair) in a child process (its own
import), interleaved with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WIDTHS = [10, 64, 128, 256, 512, 768]

_CHILD = r"""
import json, sys, time
import numpy as np
import torch

def batches(n, batch, widths, seed=0):
    g = np.random.default_rng(seed)
    base = g.standard_normal((n, 32), dtype=np.float32)
    layers = [np.tanh(base @ g.standard_normal((32, p), dtype=np.float32)) + 3.0 for p in widths]
    return [[torch.from_numpy(np.ascontiguousarray(a[lo:lo + batch])) for a in layers]
            for lo in range(0, n, batch)]

n, batch, what = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
widths = json.loads(sys.argv[4])
data = batches(n, batch, widths)
if what == "CKAMapState":
    from pyckafast import CKAMapState
    def run():
        s = CKAMapState(debiased=False)
        for b in data:
            s.update([t.numpy() for t in b])
        return s.result()
else:
    from pyckafast.torchmetrics import CKAMap
    def run():
        m = CKAMap()
        for b in data:
            m.update(b)
        return m.compute().numpy()
run()  # warm-up: imports, Numba/BLAS start-up
t = time.perf_counter()
out = run()
print(json.dumps({"seconds": time.perf_counter() - t, "map": out.tolist()}))
"""


def _time(path: str, what: str, n: int, batch: int) -> dict:
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(batch), what,
                          json.dumps(WIDTHS)], env=env, cwd=path, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--old", default=None, help="a checkout whose CKAMap is also timed")
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    contenders = [("CKAMapState", here, "CKAMapState"), ("torchmetrics.CKAMap", here, "CKAMap")]
    if args.old:
        contenders.append((f"torchmetrics.CKAMap ({args.old})", args.old, "CKAMap"))
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    maps = {}
    for _ in range(args.rounds):
        for name, path, what in contenders:
            got = _time(path, what, args.n, args.batch)
            times[name].append(got["seconds"])
            maps[name] = got["map"]
    load_after = os.getloadavg()[0]
    import numpy as np

    base = statistics.median(times["CKAMapState"])
    print(f"n = {args.n}, batches of {args.batch}, float32 layers of widths {WIDTHS} (symmetric "
          f"map, biased), {args.rounds} interleaved rounds, median; 1-min load {load_before:.2f} "
          f"before, {load_after:.2f} after\n")
    print("| contender | median s | min s | / CKAMapState | max abs diff to CKAMapState |")
    print("|---|---|---|---|---|")
    for name, _, _ in contenders:
        med = statistics.median(times[name])
        diff = float(np.max(np.abs(np.array(maps[name]) - np.array(maps["CKAMapState"]))))
        print(f"| {name} | {med:.3f} | {min(times[name]):.3f} | {med / base:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
