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


# ---- crafted files (issue 22 item 7): refused from their headers, allocating ~ the file's size
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tracemalloc  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

DATA = Path(__file__).parent / "data"
CLASSES = {"linear": pyckafast.LinearCKAState, "map": pyckafast.CKAMapState}


def _good(tmp_path, kind, rng=np.random.default_rng(3)):
    x = rng.normal(size=(60, 3))
    if kind == "linear":
        pyckafast.LinearCKAState().update(x, x[:, :2] ** 2).save(tmp_path / "good.npz")
    else:
        pyckafast.CKAMapState().update({"a": x, "b": x[:, :2] ** 2}).save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as f:
        return {k: f[k] for k in f.files}


def _npy_bytes(descr: str, shape: tuple, data: bytes = b"", header_len: int | None = None) -> bytes:
    """A .npy member whose header says anything (numpy would refuse to write most of these)."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    if header_len is None:
        return np.lib.format.magic(1, 0) + len(header + b"\n").to_bytes(2, "little") + header \
            + b"\n" + data
    header = header.ljust(header_len - 1) + b"\n"  # version 2: a 4-byte header length
    return np.lib.format.magic(2, 0) + len(header).to_bytes(4, "little") + header + data


def _zip(path, arrays: dict, raw: dict | None = None, compress=zipfile.ZIP_STORED):
    """An .npz of ``arrays`` (written by numpy) and ``raw`` members (name -> bytes)."""
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=True)
            z.writestr(f"{key}.npy", buf.getvalue())
        for key, data in (raw or {}).items():
            z.writestr(f"{key}.npy", data)
    return path


def _refused(cls, path, match: str) -> str:
    """Load must raise a ValueError matching ``match``, peaking at a few times the file size
    (zipfile's own directory objects cost about 3.5 times the directory's bytes)."""
    size = os.path.getsize(path)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match) as err:
            cls.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 4 * size + (1 << 20), f"load allocated {peak} bytes for a file of {size}"
    return str(err.value)


@pytest.mark.parametrize("kind", ["linear", "map"])
@pytest.mark.parametrize("cut", [0.3, 0.9, -20])
def test_truncated_files_are_refused(tmp_path, kind, cut):
    _good(tmp_path, kind)
    data = (tmp_path / "good.npz").read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: int(len(data) * cut)] if cut > 0 else data[:cut])
    assert str(path) in _refused(CLASSES[kind], path, "not a (LinearCKAState|CKAMapState) file")


@pytest.mark.parametrize("kind, field", [("linear", "xy"), ("map", "cross0_1_xy")])
def test_member_shorter_than_its_header_says(tmp_path, kind, field):
    arrays = _good(tmp_path, kind)
    del arrays[field]
    path = _zip(tmp_path / "short.npz", arrays, {field: _npy_bytes("<f8", (3, 2), bytes(8))})
    _refused(CLASSES[kind], path, rf"field '{field}' declares shape \(3, 2\)")


@pytest.mark.parametrize("kind, field", [("linear", "xx"), ("map", "own0_gram")])
def test_oversized_npy_header(tmp_path, kind, field):
    arrays = _good(tmp_path, kind)
    del arrays[field]
    raw = {field: _npy_bytes("<f8", (3, 3), bytes(72), header_len=400_000)}
    path = _zip(tmp_path / "header.npz", arrays, raw)
    _refused(CLASSES[kind], path, rf"field '{field}' is not a readable .npy array")


@pytest.mark.parametrize("kind, field", [("linear", "xy"), ("map", "cross0_1_xy")])
@pytest.mark.parametrize("bad", [np.zeros((3, 2), complex), np.full((3, 2), "ab"),
                                 np.zeros((3, 2), bool), np.zeros((2, 3)), np.zeros(6)])
def test_wrong_dtypes_and_shapes_name_the_field(tmp_path, kind, field, bad):
    arrays = _good(tmp_path, kind)
    arrays[field] = bad
    _refused(CLASSES[kind], _zip(tmp_path / "dtype.npz", arrays), rf"field '{field}' must be a")


@pytest.mark.parametrize("kind, field", [("linear", "xy"), ("map", "own1_gram")])
def test_huge_declared_shapes_are_refused_before_reading(tmp_path, kind, field):
    arrays = _good(tmp_path, kind)
    del arrays[field]
    raw = {field: _npy_bytes("<f8", (100_000, 100_000), bytes(64))}  # 80 GB declared
    _refused(CLASSES[kind], _zip(tmp_path / "huge.npz", arrays, raw),
             rf"field '{field}' declares shape \(100000, 100000\)")


@pytest.mark.parametrize("kind", ["linear", "map"])
def test_many_members(tmp_path, kind):
    arrays = _good(tmp_path, kind)
    raw = {f"junk{k}": _npy_bytes("<f8", ()) + bytes(8) for k in range(20_000)}
    _refused(CLASSES[kind], _zip(tmp_path / "many.npz", arrays, raw), "unexpected field 'junk")


@pytest.mark.parametrize("widths", ["widths_a", "widths_b"])
@pytest.mark.parametrize("compress, match", [
    (zipfile.ZIP_STORED, "lists 30000 layers"),  # fewer members than the layers need
    (zipfile.ZIP_DEFLATED, "declares 240128 bytes")])  # a list larger than the file
def test_absurd_layer_counts_are_refused_before_any_pair_list(tmp_path, widths, compress,
                                                               match):
    arrays = _good(tmp_path, "map")
    arrays[widths] = np.ones(30_000, dtype=np.int64)  # 4.5e8 pairs, were they built
    arrays.pop("names_a", None), arrays.pop("names_b", None)
    _refused(pyckafast.CKAMapState, _zip(tmp_path / "layers.npz", arrays, compress=compress),
             f"field '{widths}' {match}")


def _bomb(path, member="junk", count=20_000_000):
    """An .npz whose one member inflates to ``count`` float64 zeros (160 MB from ~160 kB)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open(f"{member}.npy", "w", force_zip64=True) as f:
            f.write(_npy_bytes("<f8", (count,)))
            block = bytes(1 << 22)
            for _ in range(count * 8 // len(block) + 1):
                f.write(block)
    return path


@pytest.mark.parametrize("kind", ["linear", "map"])
def test_zip_bomb(tmp_path, kind):
    _refused(CLASSES[kind], _bomb(tmp_path / "bomb.npz"), "field 'junk' declares")


def test_zip_bomb_peak_memory_in_a_child_process(tmp_path):
    """The resident peak (VmHWM) of a process loading a 160 MB bomb grows by under 20 MB."""
    path = _bomb(tmp_path / "bomb.npz")
    code = (
        "import sys, pyckafast\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM'): return int(line.split()[1]) * 1024\n"
        "before = hwm()\n"
        "try:\n"
        "    pyckafast.CKAMapState.load(sys.argv[1])\n"
        "except ValueError as e:\n"
        "    print(hwm() - before, e)\n")
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=120, check=True, cwd=Path(__file__).parents[1]).stdout
    grew, message = out.split(" ", 1)
    assert "declares" in message and int(grew) < 20 << 20, out


@pytest.mark.parametrize("kind", ["linear", "map"])
@pytest.mark.parametrize("field", ["debiased", "symmetric"])
@pytest.mark.parametrize("bad", [np.array([True, False]), np.array("no"), np.array("False"),
                                 np.array(2), np.array(0.5), np.array(b"1"), np.ones((1, 1), bool)])
def test_flags_are_parsed_strictly(tmp_path, kind, field, bad):
    if kind == "linear" and field == "symmetric":
        pytest.skip("a LinearCKAState file has no symmetric flag")
    arrays = _good(tmp_path, kind)
    arrays[field] = bad
    _refused(CLASSES[kind], _zip(tmp_path / "flag.npz", arrays),
             rf"field '{field}' must be a boolean scalar")


@pytest.mark.parametrize("kind", ["linear", "map"])
@pytest.mark.parametrize("flag", [np.array(0), np.array(1), np.array(False), np.array(True)])
def test_flags_of_zero_one_or_bool_load(tmp_path, kind, flag):
    arrays = _good(tmp_path, kind)
    arrays["debiased"] = flag
    if not flag:
        arrays = {k: v for k, v in arrays.items() if not k.startswith("norms_")
                  and not k.endswith(("_sum_q", "_sum_qq", "_qb", "_rx", "_qy", "_sum_qr"))}
    state = CLASSES[kind].load(_zip(tmp_path / "flag.npz", arrays))
    assert state.debiased is bool(flag)


# ---- files written before the one moment state still load to the same results
@pytest.mark.parametrize("name", sorted(json.loads((DATA / "state_fixtures.json").read_text())))
def test_files_of_the_earlier_code_load_to_the_same_results(name):
    want = json.loads((DATA / "state_fixtures.json").read_text())[name]
    cls = pyckafast.LinearCKAState if name.startswith("linear") else pyckafast.CKAMapState
    state = cls.load(DATA / f"{name}.npz")
    assert state.n == want["n"]
    for key in ("biased", "debiased"):
        if key in want:
            np.testing.assert_allclose(state.result(debiased=key == "debiased"), want[key],
                                       rtol=1e-12, atol=1e-14)
    x = np.random.default_rng(1).normal(size=(40, 5)) * 3 + 7
    if name.startswith("linear"):  # and they go on taking batches
        assert state.update(x, np.tanh(x[:, :3])).n == want["n"] + 40
    else:
        assert state.names_a is None or state.names_a == ["a", "b", "c"]
