"""estimate_cost: the pass the call would take, its block pairs, flops, memory and time, from
shapes only; the RBF degeneracy warnings; zero variance agreeing between the kernels."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch
from pyckafast._core.params import InvalidParameterError
from pyckafast.cost import CostEstimate, measured_flop_rate


def test_linear_forms_and_counts_follow_the_dispatch_rules():
    est = pyckafast.estimate_cost((1_000_000, 256), (1_000_000, 128), rate=1e10)
    assert isinstance(est, CostEstimate) and est.form == "features" and est.block_pairs == 0
    assert est.flops == 1_000_000 * (256**2 + 128**2 + 2 * 256 * 128)
    assert est.seconds == pytest.approx(est.flops / 1e10)
    assert est.bytes < 64 * 2**20  # O(p^2 + chunk p): no n in it
    wide = pyckafast.estimate_cost((2000, 50_000), (2000, 50_000), rate=1e10)
    assert wide.form == dispatch.linear_form("auto", 2000, 50_000, 50_000, 8) == "samples"
    tiles = pyckafast.estimate_cost((10_000, 3000), (10_000, 3000), form="tiles", tile=1000,
                                    rate=1e10)
    assert tiles.form == "tiles" and tiles.block_pairs == 55


def test_rbf_pairs_and_bandwidth_passes():
    x = np.zeros((20_000, 64), np.float32)  # only shape and dtype are read
    median = pyckafast.estimate_cost(x, x[:, :8], kernel="rbf", rate=1e10)
    given = pyckafast.estimate_cost(x, x[:, :8], kernel="rbf", sigma=1.0, rate=1e10)
    sampled = pyckafast.estimate_cost(x, x[:, :8], kernel="rbf", bandwidth="sampled", rate=1e10)
    assert median.block_pairs == given.block_pairs == 10 * 11 // 2  # 2048-row float32 tiles
    assert median.bandwidth_passes == 6 and given.bandwidth_passes == 0
    assert given.flops < sampled.flops < median.flops
    assert given.flops == pytest.approx(20_000**2 / 2 * (2 * 72 + 60))
    assert "block pairs" in str(median) and "GFLOP/s" in str(median)
    json.dumps(median.as_dict())


def test_the_estimate_is_the_right_order_of_magnitude():
    """Measured here (a busy 2-core machine): within a factor 30 either way, i.e. it tells
    seconds from hours."""
    import time

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3000, 32)), rng.normal(size=(3000, 16))
    est = pyckafast.estimate_cost(x, y, kernel="rbf", sigma=4.0)
    start = time.perf_counter()
    pyckafast.rbf_cka(x, y, sigma=4.0)
    took = time.perf_counter() - start
    assert est.seconds / 30 < took < est.seconds * 30


def test_rate_is_measured_once_and_cached():
    assert measured_flop_rate() is measured_flop_rate()
    assert measured_flop_rate(np.float32) > 1e6


@pytest.mark.parametrize("call, match", [
    (lambda: pyckafast.estimate_cost((10, 2), (11, 2)), "same number of samples"),
    (lambda: pyckafast.estimate_cost("x.npy", (10, 2)), "x must be an array or a shape"),
    (lambda: pyckafast.estimate_cost((10, 2, 3), (10, 2)), r"shape \(n,\) or \(n, p\)"),
])
def test_bad_inputs(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_bad_options_use_the_template():
    with pytest.raises(InvalidParameterError, match="^The 'kernel' parameter of estimate_cost"):
        pyckafast.estimate_cost((10, 2), (10, 2), kernel="poly")


# ---- RBF kernels that are numerically the identity or all ones --------------------------------
_X = np.random.default_rng(1).normal(size=(300, 32))
_Y = np.tanh(_X[:, :4])


@pytest.mark.parametrize("backend", dispatch.usable_backends("cpu"))
def test_identity_kernel_warns_and_gives_one(backend):
    with pytest.warns(RuntimeWarning, match="kernel of [xy] is numerically the identity"):
        value = pyckafast.rbf_cka(_X, 5 * _X + 1, sigma=(0.05, 0.25), backend=backend)
    assert value == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("backend", dispatch.usable_backends("cpu"))
def test_all_ones_kernel_warns(backend):
    with pytest.warns(RuntimeWarning, match="kernel of y is numerically all ones"):
        pyckafast.rbf_cka(_X, _Y, sigma=(3.0, 1e9), backend=backend)


def test_sensible_bandwidths_and_the_median_rule_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pyckafast.rbf_cka(_X, _Y)
        pyckafast.rbf_cka(_X, _Y, threshold=0.2, debiased=True)
        pyckafast.rbf_cka(_X, _Y, sigma=(8.0, 1.0))


def test_kernel_degeneracy_rule():
    from pyckafast._core.kernel_checks import kernel_degeneracy

    n = 5
    assert kernel_degeneracy(np.full(n, -(n - 1.0)), n * (n - 1.0), n, 2e-16) == "identity"
    assert kernel_degeneracy(np.full(n, -1e-20), 1e-40, n, 2e-16) == "ones"
    assert kernel_degeneracy(np.full(n, -2.0), 2.5, n, 2e-16) is None
    assert kernel_degeneracy(np.zeros(n), 0.0, n, 2e-16) is None  # zero variance: elsewhere


# ---- zero variance: the two kernels agree -------------------------------------------------------
@pytest.mark.parametrize("fn", [
    pyckafast.linear_cka, pyckafast.rbf_cka,
    lambda x, y, **kw: pyckafast.rbf_cka(x, y, sigma=1.0, **kw),
    lambda x, y, **kw: pyckafast.cka(x, y, kernel="rbf", **kw)])
@pytest.mark.parametrize("debiased", [False, True])
def test_zero_variance_is_nan_with_a_warning_for_both_kernels(fn, debiased):
    constant = np.ones((50, 3))
    with pytest.warns(RuntimeWarning, match="zero variance|not positive"):
        assert np.isnan(fn(constant, _X[:50], debiased=debiased))
    with pytest.warns(RuntimeWarning, match="zero variance|not positive"):
        assert np.isnan(fn(_X[:50], constant[:, :1], debiased=debiased))


# ---- the command line: --estimate, and the estimate before a long run -------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pyckafast", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_estimate_prints_and_exits_without_computing(tmp_path):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, _X)
    np.save(y, np.zeros((300, 2)))  # constant: a run would exit 1; --estimate never runs it
    done = _cli("cka", str(x), str(y), "--kernel", "rbf", "--estimate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("rbf CKA, pairs pass + 6 bandwidth passes: n = 300")
    done = _cli("cka", str(x), str(y), "--estimate", "--json")
    report = json.loads(done.stdout)
    assert report["form"] == "features" and report["n"] == 300 and report["seconds"] > 0


def test_cli_announces_a_long_run_on_stderr(monkeypatch, tmp_path, capsys):
    from pyckafast import cli

    np.save(tmp_path / "x.npy", _X)
    np.save(tmp_path / "y.npy", _Y)
    monkeypatch.setattr(cli, "ANNOUNCE_SECONDS", 0.0)
    assert cli.main(["cka", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json",
                     "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("pyckafast: estimate: linear CKA, features pass")
    assert json.loads(out)["estimated_seconds"] > 0
    monkeypatch.setattr(cli, "ANNOUNCE_SECONDS", 5.0)
    assert cli.main(["cka", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]) == 0
    assert capsys.readouterr().err == ""  # a short run says nothing


# ---- shapes no form fits (issue 22, item 9) ------------------------------------------------------
@pytest.mark.parametrize("form", ["auto", "features", "tiles", "samples"])
def test_estimate_of_shapes_no_form_fits_is_returned_and_says_so(form):
    """estimate_cost raised MemoryError ("no linear form fits") for shapes it could only
    describe: it is an estimator from shapes, the call would raise."""
    est = pyckafast.estimate_cost((10**12, 10**6), (10**12, 10), form=form, rate=1e12)
    assert est.fits is False and est.form == ("features" if form == "auto" else form)
    assert est.bytes > 2**40 and est.seconds > 1e9 and est.flops > 1e24
    assert "no form fits in memory" in str(est) and est.as_dict()["fits"] is False
    small = pyckafast.estimate_cost((1000, 4), (1000, 2), rate=1e12)
    assert small.fits is True and "no form fits" not in str(small)
