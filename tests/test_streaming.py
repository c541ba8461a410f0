import numpy as np
import pytest
from _reference import correlated_linear, linear_cka_ref

import pyckafast


def rel(a, b):
    return abs(a - b) / abs(b)


def states_for(x, y, bounds, **kw):
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out.append(pyckafast.LinearCKAState(**kw).update(x[lo:hi], y[lo:hi]))
    return out




@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_any_split_any_order_any_merge_tree(target, debiased, rng, request):
    # Chunks from different distributions: the shifts differ a lot, so the reshift algebra is used.
    x, y = correlated_linear(rng, 400, 6, 5)
    x[200:] += 50.0
    y[:100] *= 3.0
    one_shot = pyckafast.linear_cka(target.on(x), target.on(y), debiased=debiased,
                                    backend=target.backend)
    assert rel(one_shot, linear_cka_ref(x, y, debiased)) <= 1e-10
    bounds = [0, 3, 50, 51, 199, 260, 400]
    states = states_for(target.on(x), target.on(y), bounds, backend=target.backend)
    # reverse order, sequential
    seq = pyckafast.LinearCKAState(backend=target.backend)
    for s in reversed(states_for(target.on(x), target.on(y), bounds, backend=target.backend)):
        seq.merge(s)
    # a balanced tree
    while len(states) > 1:
        states = [a.merge(b) for a, b in zip(states[::2], states[1::2])] + (
            [states[-1]] if len(states) % 2 else []
        )
    for state in (seq, states[0]):
        assert state.n == 400
        assert rel(state.result(debiased=debiased), one_shot) <= 1e-11


def test_save_and_resume(tmp_path, rng):
    x, y = correlated_linear(rng, 300, 5, 4)
    state = pyckafast.LinearCKAState().update(x[:120], y[:120])
    state.save(tmp_path / "s.npz")
    resumed = pyckafast.LinearCKAState.load(tmp_path / "s.npz").update(x[120:], y[120:])
    for debiased in (False, True):
        assert rel(resumed.result(debiased=debiased), linear_cka_ref(x, y, debiased)) <= 1e-10
    biased_only = pyckafast.LinearCKAState(debiased=False).update(x, y)
    biased_only.save(tmp_path / "b.npz")
    loaded = pyckafast.LinearCKAState.load(tmp_path / "b.npz")
    assert rel(loaded.result(), linear_cka_ref(x, y)) <= 1e-10
    with pytest.raises(ValueError, match="debiased=False"):
        loaded.result(debiased=True)


def test_stream_npy_matches_in_memory(tmp_path, rng):
    x, y = correlated_linear(rng, 2500, 7, 3, mean=10.0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    seen = []
    state = pyckafast.stream_npy(tmp_path / "x.npy", tmp_path / "y.npy", chunk_size=600,
                                 progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2500, 2500) and len(seen) == 5
    assert rel(state.result(), pyckafast.linear_cka(x, y)) <= 1e-10
    assert rel(state.result(debiased=True), pyckafast.linear_cka(x, y, debiased=True)) <= 1e-10


def test_stream_npy_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((10, 2)))
    np.save(tmp_path / "y.npy", np.ones((11, 2)))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(FileNotFoundError, match="x_path: no such file"):
        pyckafast.stream_npy(tmp_path / "missing.npy", tmp_path / "y.npy")
    with pytest.raises(ValueError, match="y_path: .* is not a readable .npy"):
        pyckafast.stream_npy(tmp_path / "x.npy", tmp_path / "junk.npy")
    with pytest.raises(ValueError, match="same number of samples"):
        pyckafast.stream_npy(tmp_path / "x.npy", tmp_path / "y.npy")


def test_state_errors(rng):
    state = pyckafast.LinearCKAState()
    with pytest.raises(ValueError, match="no samples yet"):
        state.result()
    state.update(rng.normal(size=(10, 3)), rng.normal(size=(10, 2)))
    with pytest.raises(ValueError, match="expected x with 3 and y with 2 features; got 4 and 2"):
        state.update(rng.normal(size=(10, 4)), rng.normal(size=(10, 2)))
    with pytest.raises(TypeError, match="LinearCKAState"):
        state.merge("not a state")
    other = pyckafast.LinearCKAState(debiased=False).update(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="cannot merge"):
        state.merge(other)
    x = rng.normal(size=(10, 3))
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"x must contain only finite values.* row 14, column 1 \(NaN\)\.$"):
        state.update(x, rng.normal(size=(10, 2)))
