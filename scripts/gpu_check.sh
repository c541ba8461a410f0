#!/usr/bin/env bash
# The one command to run on a GPU machine (CuPy, torch, pytest and pytest-benchmark installed):
# builds the extension in place, records the configuration, runs the GPU tests (-m gpu), then
# the GPU benchmarks. Everything lands in the results directory (default: gpu_results/).
#   scripts/gpu_check.sh [results_dir]
# Smaller sizes for smaller GPUs: PYCKAFAST_BENCH_LINEAR_N, PYCKAFAST_BENCH_RBF_N (see bench/).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" setup.py build_ext --inplace >"$OUT/build.log" 2>&1 || { echo "build failed: $OUT/build.log"; exit 1; }
{
  "$PY" -c "import pyckafast; pyckafast.show_config()"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  "$PY" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$OUT/config.txt"

"$PY" -m pytest -m gpu tests -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/tests.txt"
tests_rc=${PIPESTATUS[0]}

"$PY" -m pytest bench/test_bench_gpu.py -q -rs -p no:cacheprovider --benchmark-only \
  --benchmark-json="$OUT/bench.json" --benchmark-columns=min,mean,max,rounds 2>&1 | tee "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}

echo "tests exit code $tests_rc, benchmarks exit code $bench_rc; results in $OUT/" | tee -a "$OUT/summary.txt"
exit $(( tests_rc || bench_rc ))
