"""CKAMapState.update before and after the one moment state, interleaved, as a markdown table.

Each timing runs in a fresh child process that imports pyckafast from one tree (``--before``,
default /work/main, and ``--after``, default this checkout), the two trees taking turns, so a
change of machine load hits both alike; the 1-minute load average is recorded with each run.

    python bench/state_bench.py                       # both cases, 3 rounds
    python bench/state_bench.py --rounds 5 --n 20000

Cases (float32 rows, batches of 256, n rows in all):
* six layers of 10 to 768 features, the symmetric map;
* an MLP's layers 1024/512/256/10 in two models, the two-sided 4 x 4 map.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CASES = {
    "six layers 10-768, symmetric": ([10, 64, 128, 256, 512, 768], None),
    "MLP 1024/512/256/10 x 2 models": ([1024, 512, 256, 10], [1024, 512, 256, 10]),
}

_CHILD = r"""
import json, sys, time
import numpy as np
import pyckafast
widths_a, widths_b, n, batch = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
base = rng.normal(size=(n, 32)).astype(np.float32)
def layers(widths, salt):
    out = []
    for k, p in enumerate(widths):
        w = rng.normal(size=(32, p)).astype(np.float32)
        out.append(np.tanh(base @ w) + np.float32(salt + k) + rng.normal(size=(n, p)).astype(np.float32))
    return out
xs = layers(widths_a, 1.0)
ys = None if widths_b is None else layers(widths_b, 5.0)
state = pyckafast.CKAMapState()
state.update([a[:batch] for a in xs], None if ys is None else [a[:batch] for a in ys])  # warm-up
state = pyckafast.CKAMapState()
t = time.perf_counter()
for lo in range(0, n, batch):
    state.update([a[lo:lo + batch] for a in xs], None if ys is None else [a[lo:lo + batch] for a in ys])
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "file": pyckafast.__file__,
                  "check": float(np.nansum(state.result(debiased=True)))}))
"""


def _run(tree: Path, case, n: int, batch: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([*case, n, batch])], env=env,
                         capture_output=True, text=True, check=True, cwd=tree).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["file"].startswith(str(tree)), result["file"]
    result["load"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=Path("/work/main"))
    parser.add_argument("--after", type=Path, default=HERE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    rows = []
    for name, case in CASES.items():
        times: dict[str, list[float]] = {"before": [], "after": []}
        loads, checks = [], {}
        for _ in range(args.rounds):
            for label, tree in (("before", args.before), ("after", args.after)):
                r = _run(tree, case, args.n, args.batch)
                times[label].append(r["seconds"])
                loads.append(r["load"])
                checks[label] = r["check"]
        before, after = statistics.median(times["before"]), statistics.median(times["after"])
        rows.append(f"| {name} | {before:.3f} | {after:.3f} | {before / after:.2f}x | "
                    f"{min(loads):.1f}-{max(loads):.1f} | {abs(checks['before'] - checks['after']):.1e} |")
    print(f"CKAMapState.update, n = {args.n}, float32, batches of {args.batch}, median of "
          f"{args.rounds} interleaved runs per tree (seconds)\n")
    print("| case | before | after | speed-up | load (1 min) | |sum CKA| diff |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
