"""``pyckafast demo`` end to end in a subprocess: it runs with the core dependencies only, prints
pyckafast's value equal to linear_cka on the same data, Kornblith's float64 code agreeing with it,
and the float32 minibatch formula of the torch libraries visibly wrong on mean-1e3 data."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyckafast
from pyckafast.cli import demo as _demo

N, P, NAIVE, BATCH, BATCHES = 20_000, 8, 300, 64, 8
ARGS = ["demo", "--n", str(N), "--p", str(P), "--naive-n", str(NAIVE), "--batch-size", str(BATCH),
        "--batches", str(BATCHES)]
# Run the CLI, then fail if it pulled in an optional package: the demo must work after a plain
# `pip install .` (numpy, numba, threadpoolctl).
_RUNNER = ("import sys; from pyckafast.cli import main; status = main(sys.argv[1:]); "
           "extra = {'torch', 'cupy', 'dask', 'tqdm', 'matplotlib'} & set(sys.modules); "
           "assert not extra, f'demo imported {extra}'; sys.exit(status)")


def _run(*args: str) -> subprocess.CompletedProcess:
    root = str(Path(pyckafast.__file__).resolve().parents[1])  # this tree's package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _RUNNER, *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _value(out: str, label: str) -> float:
    line = next(line for line in out.splitlines() if label in line)
    return float(re.search(r"CKA = (\S+)", line).group(1))


@pytest.fixture(scope="module")
def demo():
    result = _run(*ARGS)
    assert result.returncode == 0, result.stderr
    x, y = _demo.demo_data(N, P)
    return result.stdout, x, y


def test_demo_prints_pyckafast_value_equal_to_linear_cka(demo):
    out, x, y = demo
    assert f"n = {N:,}" in out
    # Ten decimals are printed: the same computation on the same data must agree to that.
    assert _value(out, "pyckafast.linear_cka") == pytest.approx(pyckafast.linear_cka(x, y), abs=1e-10)


def test_demo_reference_rows_are_the_standard_code(demo):
    out, x, y = demo
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    kornblith = _value(out, "Kornblith feature_space_linear_cka, float64")
    assert kornblith == pytest.approx(pyckafast.linear_cka(x64, y64), abs=1e-9)
    # pyckafast on float32 input (float32 GEMMs of shifted data) is within float32 rounding of it.
    assert _value(out, "pyckafast.linear_cka") == pytest.approx(kornblith, abs=1e-5)
    naive = _value(out, "naive n x n Grams")
    assert naive == pytest.approx(pyckafast.linear_cka(x64[:NAIVE], y64[:NAIVE]), abs=1e-9)
    raw = _value(out, "raw float32 formula")  # the cancellation the demo shows
    assert raw == pytest.approx(_demo.raw_float32_cka(x, y), abs=1e-9) and abs(raw - kornblith) > 1e-3


def test_demo_minibatch_rows(demo):
    out, x, y = demo
    rows = BATCH * BATCHES
    exact = pyckafast.minibatch_cka(x[:rows], y[:rows], batch_size=BATCH, seed=None)
    assert _value(out, "pyckafast.minibatch_cka") == pytest.approx(exact, abs=1e-9)
    theirs = _value(out, "torch_cka / pytorch-cka formula, mean 1000")
    assert math.isnan(theirs) or abs(theirs - exact) > 1e-2  # the float32 failure it shows
    direct, _ = _demo.uncentred_float32_minibatch_cka(x[:rows], y[:rows], BATCH)
    assert theirs == pytest.approx(direct, abs=1e-9, nan_ok=True)


def test_uncentred_float32_formula_is_the_unbiased_hsic_on_centred_data():
    """On data with mean 0 the transcribed torch formula is Song et al.'s estimator: it agrees
    with pyckafast.minibatch_cka to float32 rounding (so the demo's error is float32's alone)."""
    x, y = _demo.demo_data(2048, 6, seed=3, offset=0.0)
    theirs, _ = _demo.uncentred_float32_minibatch_cka(x, y, 128)
    assert theirs == pytest.approx(pyckafast.minibatch_cka(x, y, batch_size=128, seed=None), abs=1e-4)


def test_kornblith_transcription_matches_the_compat_module():
    from pyckafast.compat.kornblith import feature_space_linear_cka

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 7)), rng.normal(size=(500, 3))
    assert _demo.kornblith_feature_space_linear_cka(x, y) == pytest.approx(
        feature_space_linear_cka(x, y), abs=1e-12)


def test_demo_bad_argument_is_one_line_exit_2():
    result = _run("demo", "--n", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["pyckafast: error: --n must be a positive integer; got 0."]
