"""A rejected batch changes nothing (issue 22 item 2), for both states and the whole class of
rejections: NaN or Inf in any chunk (early or late in a batch of several chunks), float64 sums
that overflow, rows that do not match, widths that do not match."""

from __future__ import annotations

import numpy as np
import pytest

import pyckafast
from pyckafast import CKAMapState, LinearCKAState

P, B = 64, 40_000  # a chunk of 8 MiB holds under 16,384 rows of these widths: a batch of B is
# three chunks or more


def _snapshot(state) -> list[np.ndarray]:
    """What the state answers (public API only, compared exactly): n, CKA and HSIC values."""
    out = [np.array([state.n])]
    for debiased in (False, True):
        out.append(np.atleast_1d(state.result(debiased=debiased)))
        h = state.hsic(debiased=debiased)
        out += [np.atleast_1d(np.asarray(v, dtype=float)) for v in h[:3]]
    if isinstance(state, LinearCKAState):
        t = state.terms
        out += [t.xx, t.yy, t.xy, t.sum_x, t.sum_y, t.norms.qx, t.norms.rx]
    return [a.copy() for a in out]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def _bad_batches(x, y):
    """(what, x batch, y batch): rejected batches of B rows (rows 100..)."""
    out = []
    rows = slice(100, 100 + B)
    for row in (5, B // 2, B - 1):  # the first chunk, a later chunk, the last row
        for value in (np.nan, np.inf, -np.inf):
            bad = x[rows].copy()
            bad[row, 3] = value
            out.append((f"{value} in row {row}", bad, y[rows]))
    huge = x[rows].copy()
    half = B // 2
    huge[half:, :] = np.where(np.arange(B - half)[:, None] % 2, 1.0, -1.0) * 1e200  # overflow
    out.append(("sums that overflow", huge, y[rows]))
    out.append(("rows that differ", x[rows], y[100:99 + B]))
    out.append(("widths that differ", x[rows, :-1], y[rows]))
    return out


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(B + 200, P)) + 3.0
    y = x[:, :16] ** 2 + rng.normal(size=(B + 200, 16))
    return x, y


@pytest.mark.parametrize("backend", ["numpy", "cpp"])
def test_linear_state_rejected_batches_change_nothing(data, backend):
    pytest.importorskip("pyckafast._ext") if backend == "cpp" else None
    x, y = data
    state = LinearCKAState(backend=backend).update(x[:100], y[:100])
    before = _snapshot(state)
    for what, bx, by in _bad_batches(x, y):
        with pytest.raises(ValueError):
            state.update(bx, by)
        assert _same(_snapshot(state), before), what
    state.update(x[100:200], y[100:200])  # the user skips the bad batches and goes on
    for debiased in (False, True):
        assert state.result(debiased=debiased) == pytest.approx(
            pyckafast.linear_cka(x[:200], y[:200], debiased=debiased), rel=1e-10)


@pytest.mark.parametrize("symmetric", [True, False])
def test_map_state_rejected_batches_change_nothing(data, symmetric):
    x, y = data
    layers = [x, y, x[:, :40] * 2.0]

    def batch(xs):
        return (xs, None) if symmetric else (xs[:1], xs[1:])

    state = CKAMapState().update(*batch([a[:100] for a in layers]))
    before = _snapshot(state)
    for what, bx, by in _bad_batches(x, y):
        with pytest.raises(ValueError):
            state.update(*batch([bx, by, layers[2][100:100 + B]]))
        assert _same(_snapshot(state), before), what
    state.update(*batch([a[100:200] for a in layers]))
    xs, ys = batch([a[:200] for a in layers])
    np.testing.assert_allclose(state.result(debiased=True),
                               pyckafast.cka_matrix(xs, ys, debiased=True), atol=1e-10)


def test_overflowing_sums_are_refused_with_a_message(data):
    x, y = data
    huge = x[:B].copy()
    huge[B // 2:] = np.where(np.arange(B - B // 2)[:, None] % 2, 1.0, -1.0) * 1e200
    with pytest.raises(ValueError, match="overflow"):
        LinearCKAState().update(huge, y[:B])
    with pytest.raises(ValueError, match="overflow"):
        CKAMapState().update([huge, y[:B]])
