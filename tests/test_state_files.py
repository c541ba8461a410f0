"""LinearCKAState.save / load: exact paths, clear errors for wrong files, no code execution."""

import pickle

import numpy as np
import pytest

import pyckafast


@pytest.fixture
def state(rng):
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    return pyckafast.LinearCKAState().update(x, y)


def test_save_writes_exactly_the_path_given(tmp_path, state):
    path = tmp_path / "ckpt"  # no suffix: np.savez alone would write ckpt.npz
    state.save(path)
    assert path.is_file() and not (tmp_path / "ckpt.npz").exists()
    assert pyckafast.LinearCKAState.load(path).result(debiased=True) == state.result(debiased=True)


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _saved_arrays(tmp_path, state) -> dict:
    state.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "t.txt").write_text("hello") and d / "t.txt", "not a LinearCKAState file"),
    (lambda d: np.save(d / "a.npy", np.ones(3)) or d / "a.npy", "single .npy array"),
    (lambda d: _npz(d / "o.npz", weights=np.ones(3)), "no format_version"),
    (lambda d: (d / "cut.npz").write_bytes(b"PK\x03\x04broken") and d / "cut.npz",
     "not a LinearCKAState file"),
])
def test_load_names_the_file_and_what_it_is(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as err:
        pyckafast.LinearCKAState.load(path)
    assert str(path) in str(err.value)


def test_load_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        pyckafast.LinearCKAState.load(tmp_path / "nope.npz")


def test_load_rejects_nan_terms(tmp_path, state):
    arrays = _saved_arrays(tmp_path, state)
    arrays["xy"] = arrays["xy"].copy()
    arrays["xy"][0, 0] = np.nan
    with pytest.raises(ValueError, match="'xy' holds NaN"):
        pyckafast.LinearCKAState.load(_npz(tmp_path / "nan.npz", **arrays))


@pytest.mark.parametrize("field, bad", [("xx", np.ones((2, 2))), ("norms_qy", np.ones(5)),
                                        ("n", np.array(2.5))])
def test_load_checks_shapes_and_values(tmp_path, state, field, bad):
    arrays = _saved_arrays(tmp_path, state)
    arrays[field] = bad
    with pytest.raises(ValueError, match=field.replace("norms_", "") if field != "n" else "n must"):
        pyckafast.LinearCKAState.load(_npz(tmp_path / "bad.npz", **arrays))


def test_load_never_unpickles(tmp_path, state):
    # An object array inside the archive would run code when unpickled: load must refuse it.
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arrays = _saved_arrays(tmp_path, state)
    arrays["xy"] = np.array([Payload()], dtype=object)
    with open(tmp_path / "evil.npz", "wb") as f:
        np.savez(f, **arrays)  # numpy pickles object arrays
    assert pickle.dumps(Payload())  # the payload itself is a valid pickle
    with pytest.raises(ValueError, match="field 'xy' must be a real array"):
        pyckafast.LinearCKAState.load(tmp_path / "evil.npz")
    assert not marker.exists()


def test_merging_a_state_with_itself_is_refused(state):
    n = state.n
    with pytest.raises(ValueError, match="disjoint"):
        state.merge(state)
    assert state.n == n


def test_repr_says_what_the_state_holds(state):
    assert repr(state) == ("LinearCKAState(n=50, p_x=3, p_y=2, debiased=True, backend='auto', "
                           "precision='highest')")
    assert "no samples yet" in repr(pyckafast.LinearCKAState())
