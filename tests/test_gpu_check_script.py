"""scripts/gpu_check.sh (the GPU machine's one command) without a GPU: it parses, is
shellcheck-clean where shellcheck is installed, and --dry-run lists every stage with a timeout,
all within the 8-minute budget, writing nothing; scripts/gpu_micro.py compiles and knows its
sections."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STAGES = ["environment", "micro", "tests", "benchmarks", "bandwidth"]


def test_parses():
    run = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
    run = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


def test_dry_run_lists_the_stages_within_budget(tmp_path):
    out = tmp_path / "results"
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = re.findall(r"stage (\w+)\s+timeout\s+(\d+)s\s+> (\S+):\s+(.*)", run.stdout)
    assert [name for name, *_ in lines] == STAGES
    assert sum(int(limit) for _, limit, *_ in lines) <= 480  # the 8-minute budget
    assert all(log.startswith(str(out)) for _, _, log, _ in lines)
    commands = {name: cmd for name, _, _, cmd in lines}
    assert "-m gpu" in commands["tests"]
    assert "bench/test_bench_gpu.py" in commands["benchmarks"]
    assert "summary.md" in run.stdout
    assert not out.exists()  # a dry run writes nothing


def test_budget_caps_the_stages(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYCKAFAST_CHECK_BUDGET": "150"}
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path)], capture_output=True,
                         text=True, timeout=60, env=env)
    limits = [int(t) for t in re.findall(r"timeout\s+(\d+)s", run.stdout)]
    assert limits and max(limits) <= 150


def test_micro_script_compiles_and_names_its_sections():
    run = subprocess.run([sys.executable, "-m", "py_compile", str(ROOT / "scripts" / "gpu_micro.py")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = (ROOT / "scripts" / "gpu_micro.py").read_text()
    sections = set(re.findall(r'@section\("(\w+)"\)', text))
    assert {"config", "kernels", "ceilings", "tf32", "gram", "staging", "rbf_check", "rbf_scale",
            "median", "bandwidth"} <= sections
    assert "import cupy\n" not in text.split("def ")[0]  # importable without CuPy (dry runs)
