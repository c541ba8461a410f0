#!/usr/bin/env bash
# The one command to run on a GPU machine that has the project's files and CuPy (preinstalled,
# or from PyPI: pip install ".[test]" "cupy-cuda12x[ctk]>=14"); installs nothing, builds nothing.
# Stages, each with its own timeout, all within 8 minutes, with a fresh CuPy kernel cache:
#   0 environment    nvidia-smi, show_config, the toolkit probe
#   1 micro          kernel stats, copy/SGEMM/TF32 ceilings, SYRK vs GEMM vs [X|Y], staging,
#                    RBF vs float64 brute force, RBF scaling, device median (scripts/gpu_micro.py)
#   2 tests          pytest -m gpu
#   3 benchmarks     linear n = 1e7, p = 1024 vs cuBLAS SGEMM; RBF n = 1e6, d = 512 vs CuPy
#   4 bandwidth      rbf_cka with the default bandwidth vs an explicit sigma (gpu_micro.py)
#   5 summary        summary.md: one table of the numbers that decide the targets
# Usage: scripts/gpu_check.sh [--dry-run] [results_dir]     (results_dir default: $OUT, else
# gpu_results). --dry-run prints the stages and their commands and runs nothing (works on CPU).
# Environment: PYTHON (default python3), PYCKAFAST_BENCH_LINEAR_N, PYCKAFAST_BENCH_RBF_N (bench/),
# PYCKAFAST_CHECK_BW_N (stage 4), PYCKAFAST_CHECK_BUDGET (seconds for all stages, default 470).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
fi
RESULTS=${1:-${OUT:-gpu_results}}
PY=${PYTHON:-python3}
BUDGET=${PYCKAFAST_CHECK_BUDGET:-470}
START=$SECONDS
STATUS=()

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OUT="$RESULTS"

# stage NAME LIMIT_S LOG COMMAND...: runs COMMAND under min(LIMIT_S, what is left of the budget),
# output to RESULTS/LOG, and records "NAME rc seconds" for the summary.
stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((BUDGET - (SECONDS - START)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$DRY" -eq 1 ]; then
    printf 'stage %-12s timeout %4ss  > %s/%s:  %s\n' "$name" "$limit" "$RESULTS" "$log" "$*"
    return 0
  fi
  if [ "$limit" -le 5 ]; then
    echo "=== $name skipped: the ${BUDGET} s budget is spent"
    STATUS+=("$name skipped 0")
    return 0
  fi
  echo "=== $name (limit ${limit} s, t = $((SECONDS - START)) s)"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >"$RESULTS/$log" 2>&1
  rc=$?
  tail -n 15 "$RESULTS/$log"
  STATUS+=("$name $rc $((SECONDS - t0))")
  return 0
}

if [ "$DRY" -eq 0 ]; then
  mkdir -p "$RESULTS"
  CUPY_CACHE_DIR=$(mktemp -d)  # fresh kernel cache: what runs is compiled from these sources
  export CUPY_CACHE_DIR
  trap 'rm -rf "$CUPY_CACHE_DIR"' EXIT
fi

stage environment 20 environment.txt bash -c \
  "nvidia-smi; \"$PY\" -c 'import pyckafast; pyckafast.show_config()'; \"$PY\" -c 'import cupy; cupy.show_config()'"
stage micro 130 micro.txt "$PY" scripts/gpu_micro.py
stage tests 100 tests.txt "$PY" -m pytest -m gpu tests -q -rs -p no:cacheprovider
stage benchmarks 170 bench.txt "$PY" -m pytest bench/test_bench_gpu.py -q -rs -p no:cacheprovider \
  --benchmark-only "--benchmark-json=$RESULTS/bench.json" --benchmark-columns=min,mean,rounds
stage bandwidth 50 bandwidth.txt "$PY" scripts/gpu_micro.py bandwidth

if [ "$DRY" -eq 1 ]; then
  echo "stage summary      -> $RESULTS/summary.md (budget ${BUDGET} s)"
  exit 0
fi

"$PY" - "$RESULTS" "${STATUS[@]}" <<'PYEOF' | tee "$RESULTS/summary.md"
import json, os, sys

out, status = sys.argv[1], sys.argv[2:]


def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception as exc:  # noqa: BLE001 - a stage that did not finish
        return {"missing": f"{type(exc).__name__}: {exc}"}


micro, bench = load("micro.json"), load("bench.json")
rows = [("stage", "exit code", "seconds")] + [tuple(s.split()) for s in status]
print("## Stages\n")
for r in rows:
    print("| " + " | ".join(r) + " |")
print("\n## Numbers\n\n| what | value |\n|---|---|")


def get(d, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


for label, value in [
    ("device", get(micro, "config", "name")),
    ("toolkit probe (None = usable)", get(micro, "config", "unusable_reason")),
    ("SGEMM TFLOP/s", get(micro, "ceilings", "sgemm_TFLOPs")),
    ("device copy TB/s", get(micro, "ceilings", "d2d_TBps")),
    ("host->device pinned GB/s", get(micro, "ceilings", "h2d_pinned_GBps")),
    ("TF32 engaged", get(micro, "tf32", "tf32_engaged")),
    ("TF32 speedup (8192^3)", get(micro, "tf32", "speedup")),
    ("SYRK / GEMM / [X|Y] SYRK ms", [get(micro, "gram", k) for k in
                                     ("syrk_ms", "gemm_ms", "one_syrk_XY_ms")]),
    ("linear n=1e6 syrk/gemm/joint s", [get(micro, "gram", f"linear_terms_n1e6_{k}_s")
                                        for k in ("syrk", "gemm", "joint")]),
    ("staging host / device s", [get(micro, "staging", "host_s"), get(micro, "staging", "device_s")]),
    ("RBF float64 worst rel err (n=4099)", get(micro, "rbf_check", "float64_worst_rel")),
    ("RBF float32 rel errs", get(micro, "rbf_check", "float32_tileNone")),
    ("RBF 262144 rows s / TFLOP/s", [get(micro, "rbf_scale", "262144", k) for k in
                                     ("s", "TFLOPs_dot")]),
    ("RBF t(1e6) by n^2 s", get(micro, "rbf_scale", "262144", "t_1e6_by_n2_s")),
    ("device median n=32k both sides s / launches", [get(micro, "median", "s"), get(micro, "median", "passes")]),
    ("median one side kernel / CuPy tiles s", [get(micro, "median", "kernel_one_side_s"), get(micro, "median", "tiles_one_side_s")]),
    ("default bandwidth s / explicit s", [get(micro, "bandwidth", "default_bandwidth_s"),
                                          get(micro, "bandwidth", "explicit_sigma_s")]),
    ("t(1e6) default / explicit by n^2", [get(micro, "bandwidth", "t_1e6_default_by_n2_s"),
                                          get(micro, "bandwidth", "t_1e6_explicit_by_n2_s")]),
]:
    print(f"| {label} | {value} |")
print("\n## Benchmarks (min s)\n\n| benchmark | min s | extra |\n|---|---|---|")
for b in bench.get("benchmarks", []):
    extra = {k: v for k, v in b.get("extra_info", {}).items()
             if k in ("rate_vs_gemm", "fused_speedup", "n", "p", "d", "precision")}
    print(f"| {b['name']} | {b['stats']['min']:.3f} | {extra} |")
if "missing" in bench:
    print(f"| (no bench.json) | | {bench['missing']} |")
PYEOF

echo "total $((SECONDS - START)) s; results in $RESULTS/"
failed=0
for s in "${STATUS[@]}"; do
  read -r name rc _ <<<"$s"
  case "$name" in tests|benchmarks) [ "$rc" != 0 ] && [ "$rc" != skipped ] && failed=1 ;; esac
done
exit "$failed"
