"""Turn pytest-benchmark JSON files into the markdown tables of bench/README.md.

    pytest bench/test_bench_linear.py --benchmark-only --benchmark-json=linear.json
    python bench/report.py linear.json [more.json ...] [rbf.json ...]

Every time is the median of its rounds; "x floor" divides by the floor measured in the same run
(the bare GEMMs: NumPy ``x.T@x; y.T@y; x.T@y`` for linear, the tile GEMMs for RBF).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _machine(data: dict) -> str:
    m = data["machine_info"]
    cpu = m.get("cpu", {}).get("brand_raw") or m.get("processor") or m.get("machine")
    return (f"{cpu}, {m.get('cpu', {}).get('count', '?')} cores; Python {m.get('python_version')}, "
            f"NumPy {m.get('numpy', '?')}, Numba {m.get('numba', '?')}; {data.get('datetime', '')[:10]}")


def linear_table(data: dict) -> str:
    rows = defaultdict(dict)
    for b in data["benchmarks"]:
        e = b["extra_info"]
        rows[(e["n"], e["p"], e["dtype"])][e["method"]] = (b["stats"]["median"], e.get("peak_extra_MB"))
    methods = ["gemm_floor", "cpp", "numba", "numpy", "naive_nxn"]
    out = ["| n | p | dtype | " + " | ".join(methods) + " | cpp x floor | cpp peak extra MB |",
           "|---" * (len(methods) + 5) + "|"]
    for (n, p, dtype), r in sorted(rows.items()):
        cells = [f"{r[m][0]:.3f} s" if m in r else "-" for m in methods]
        ratio = f"{r['cpp'][0] / r['gemm_floor'][0]:.2f}" if "cpp" in r and "gemm_floor" in r else "-"
        peak = f"{r['cpp'][1]}" if "cpp" in r else "-"
        out.append(f"| {n:,} | {p} | {dtype} | " + " | ".join(cells) + f" | {ratio} | {peak} |")
    return "\n".join(out)


def rbf_table(data: dict) -> str:
    rows = defaultdict(dict)
    for b in data["benchmarks"]:
        e = b["extra_info"]
        name = b["name"].split("[")[0].replace("test_", "")
        key = f"{name}:{e['backend']}" if "backend" in e else name
        rows[e["n"]][key] = (b["stats"]["median"], e.get("traced_peak_mb"))
    cols = ["gemm_floor", "rbf_pass:cpp", "rbf_pass:numba", "median", "naive"]
    out = ["| n | d | " + " | ".join(cols) + " | cpp x floor | cpp traced peak MB |",
           "|---" * (len(cols) + 4) + "|"]
    for n, r in sorted(rows.items()):
        cells = [f"{r[c][0]:.2f} s" if c in r else "-" for c in cols]
        ratio = (f"{r['rbf_pass:cpp'][0] / r['gemm_floor'][0]:.2f}"
                 if "rbf_pass:cpp" in r and "gemm_floor" in r else "-")
        peak = r["rbf_pass:cpp"][1] if "rbf_pass:cpp" in r else "-"
        out.append(f"| {n:,} | 64 | " + " | ".join(cells) + f" | {ratio} | {peak} |")
    return "\n".join(out)


def main(paths: list[str]) -> None:
    """One table per kind (linear, rbf); a later file's case replaces an earlier one's."""
    merged: dict[str, dict] = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        kind = "rbf" if any("rbf" in b["fullname"] for b in data["benchmarks"]) else "linear"
        if kind not in merged:
            merged[kind] = {"machine": data, "cases": {}}
        merged[kind]["cases"].update({b["fullname"]: b for b in data["benchmarks"]})
    for kind, m in merged.items():
        data = {**m["machine"], "benchmarks": list(m["cases"].values())}
        print(f"Machine: {_machine(data)}\n")
        print(rbf_table(data) if kind == "rbf" else linear_table(data))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
