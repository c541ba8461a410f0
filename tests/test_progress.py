"""The one progress= option of the long passes: counts that end at the total, are monotone,
leave the value unchanged, and a tqdm bar on stderr for progress=True."""

from __future__ import annotations

import numpy as np
import pytest

import pyckafast
from pyckafast._core.dispatch import usable_backends
from pyckafast._core.params import InvalidParameterError

_RNG = np.random.default_rng(3)
X = _RNG.normal(size=(600, 6))
Y = np.tanh(X[:, :3]) + 0.1 * _RNG.normal(size=(600, 3))


def _recorded(call):
    calls = []
    value = call(lambda done, total: calls.append((done, total)))
    return value, calls


def _check_passes(calls):
    """Several computations (Dask): each counts from its start up to its own total."""
    assert calls
    passes, current = [], []
    for done, total in calls:
        if current and (total != current[-1][1] or done < current[-1][0]):
            passes.append(current)
            current = []
        current.append((done, total))
    for part in passes + [current]:
        _check_counts(part)


def _check_counts(calls, total=None):
    assert calls, "no progress reported"
    dones = [d for d, _ in calls]
    totals = {t for _, t in calls}
    assert len(totals) == 1 and dones == sorted(dones) and dones[-1] == calls[-1][1]
    if total is not None:
        assert calls[-1] == (total, total)


@pytest.mark.parametrize("kwargs, total", [
    ({"chunk_size": 100}, 600), ({"chunk_size": 100, "backend": "numpy"}, 600),
    ({"form": "tiles"}, None), ({"form": "samples"}, 1)])
def test_linear_reports_rows_pairs_or_one_pass(kwargs, total):
    want = pyckafast.linear_cka(X, Y, **kwargs)
    got, calls = _recorded(lambda p: pyckafast.linear_cka(X, Y, progress=p, **kwargs))
    assert got == pytest.approx(want, rel=1e-12)  # chunk workers may merge in any order
    _check_counts(calls, total)
    if "chunk_size" in kwargs:
        assert len(calls) == 6


@pytest.mark.parametrize("backend", usable_backends("cpu"))
@pytest.mark.parametrize("tile", [None, 128])
def test_rbf_reports_block_pairs_with_the_same_value(backend, tile):
    want = pyckafast.rbf_cka(X, Y, backend=backend, tile=tile, sigma=(2.0, 1.0), debiased=True)
    got, calls = _recorded(lambda p: pyckafast.rbf_cka(X, Y, backend=backend, tile=tile,
                                                       sigma=(2.0, 1.0), debiased=True,
                                                       progress=p))
    assert got == pytest.approx(want, rel=1e-12, abs=1e-14)
    _check_counts(calls)
    if tile is not None:  # tiles (BLAS) or bands of fused blocks: several pairs at this n
        assert calls[-1][1] > 1 or backend == "cpp"
    h, calls = _recorded(lambda p: pyckafast.rbf_hsic(X, Y, sigma=2.0, backend=backend, progress=p))
    assert h == pytest.approx(pyckafast.rbf_hsic(X, Y, sigma=2.0, backend=backend), rel=1e-12)
    _check_counts(calls)


def test_fused_bands_match_one_call():
    from pyckafast._cpu.pass_progress import band_rows

    assert band_rows(10, 64) == 256 and band_rows(100_000, 64) % 64 == 0
    assert -(-100_000 // band_rows(100_000, 64)) <= 16


def test_cka_and_hsic_pass_progress_on():
    _, calls = _recorded(lambda p: pyckafast.cka(X, Y, kernel="rbf", tile=128, progress=p))
    _check_counts(calls)
    _, calls = _recorded(lambda p: pyckafast.hsic(X, Y, chunk_size=500, progress=p))
    _check_counts(calls, 600)


def test_dask_reports_tasks():
    da = pytest.importorskip("dask.array")
    import dask
    import pyckafast.dask

    dx, dy = da.from_array(X, chunks=400), da.from_array(Y, chunks=400)
    with dask.config.set(scheduler="threads"):
        for fn in (pyckafast.dask.linear_cka, pyckafast.linear_cka):
            got, calls = _recorded(lambda p: fn(dx, dy, progress=p))
            assert got == pytest.approx(pyckafast.linear_cka(X, Y), rel=1e-12)
            _check_passes(calls)
        got, calls = _recorded(lambda p: pyckafast.dask.rbf_cka(dx, dy, sigma=2.0, progress=p))
        assert got == pytest.approx(pyckafast.rbf_cka(X, Y, sigma=2.0), rel=1e-10)
        _check_passes(calls)


def test_progress_true_draws_a_bar_on_stderr(capsys):
    pytest.importorskip("tqdm")
    pyckafast.rbf_cka(X, Y, tile=256, backend="numpy", sigma=2.0, progress=True)
    pyckafast.linear_cka(X, Y, chunk_size=300, progress=True)
    err = capsys.readouterr().err
    assert "rbf pairs" in err and "linear (features)" in err


def test_off_by_default_and_bad_values_use_the_template(capsys):
    pyckafast.rbf_cka(X, Y, tile=256, sigma=2.0)
    assert capsys.readouterr().err == ""
    with pytest.raises(InvalidParameterError, match="^The 'progress' parameter of rbf_cka"):
        pyckafast.rbf_cka(X, Y, progress="yes")
