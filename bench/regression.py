"""Time the same calls on two source trees of pyckafast, interleaved, in one run.

A refactoring must not make anything slower; this measures that. Each case runs in a fresh
subprocess per tree (so the two builds never share a process), the trees alternate round by
round (so a change in machine load hits both), and the best of the rounds is kept::

    python bench/regression.py --base /path/to/old/checkout            # old vs this checkout
    python bench/regression.py --base old --new new --rounds 5 --json out.json

Both trees need their extension built in place (``python setup.py build_ext --inplace``).
The report says whether the machine was quiet (1-minute load average below half the cores)
while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# name -> (setup code, timed statement). Data come from bench/conftest.correlated_data.
CASES: dict[str, tuple[str, str]] = {
    "linear n=2e5 p=256 f32": (
        "x, y = correlated_data(200_000, 256, 'float32', mean=10.0)",
        "pyckafast.linear_cka(x, y)"),
    "linear n=1e6 p=256 f32": (
        "x, y = correlated_data(1_000_000, 256, 'float32', mean=10.0)",
        "pyckafast.linear_cka(x, y)"),
    "linear debiased n=1e5 p=512 f64": (
        "x, y = correlated_data(100_000, 512, 'float64', mean=10.0)",
        "pyckafast.linear_cka(x, y, debiased=True)"),
    "rbf sigma n=3e4 d=64 f32": (
        "x, y = correlated_data(30_000, 64, 'float32')",
        "pyckafast.rbf_cka(x, y, sigma=8.0)"),
    "rbf median n=2e4 d=64 f32": (
        "x, y = correlated_data(20_000, 64, 'float32')",
        "pyckafast.rbf_cka(x, y)"),
    "rbf numba n=1e4 d=64 f32": (
        "x, y = correlated_data(10_000, 64, 'float32')",
        "pyckafast.rbf_cka(x, y, sigma=8.0, backend='numba')"),
    "rbf wide rows n=1e4 d=600 f32": (
        "x, y = correlated_data(10_000, 600, 'float32')",
        "pyckafast.rbf_cka(x, y, sigma=30.0)"),
    "rbf numpy n=4e3 d=64 f64": (
        "x, y = correlated_data(4_000, 64, 'float64')",
        "pyckafast.rbf_cka(x, y, backend='numpy')"),
    "cka_matrix 6 layers n=2e4 p=128 f32": (
        "x, y = correlated_data(20_000, 128, 'float32'); xs = [x, y, x + y, x - y, 2 * x, x * y]",
        "pyckafast.cka_matrix(xs)"),
}

_CHILD = """
import sys, time
sys.path.insert(0, {bench!r})
from conftest import correlated_data
import pyckafast
{setup}
{stmt}  # warm-up: Numba compilation, BLAS threads, page faults
t = time.perf_counter()
{stmt}
print(time.perf_counter() - t)
"""


def time_case(tree: Path, setup: str, stmt: str) -> float:
    """Seconds of one timed call of ``stmt`` in a fresh interpreter importing ``tree``."""
    code = _CHILD.format(bench=str(Path(__file__).parent), setup=setup, stmt=stmt)
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def machine_state() -> str:
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0))
    return f"{'quiet' if load < cores / 2 else 'busy'} (1-min load {load:.2f} on {cores} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the old source tree")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the new source tree (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per tree (best is kept)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES),
                        metavar="CASE", help="which cases (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    before = machine_state()
    rows = []
    for name in args.cases:
        setup, stmt = CASES[name]
        best = {"base": float("inf"), "new": float("inf")}
        for _ in range(args.rounds):
            for label, tree in (("base", args.base), ("new", args.new)):
                best[label] = min(best[label], time_case(tree.resolve(), setup, stmt))
        ratio = best["new"] / best["base"]
        rows.append({"case": name, "base_s": best["base"], "new_s": best["new"], "ratio": ratio})
        print(f"{name:38s} base {best['base']:8.3f} s   new {best['new']:8.3f} s   "
              f"new/base {ratio:5.3f}", flush=True)
    state = f"machine before: {before}; after: {machine_state()}"
    print(state)
    if args.json:
        args.json.write_text(json.dumps({"machine": state, "rounds": args.rounds, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
