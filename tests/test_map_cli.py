"""``pyckafast map``: a directory of .npy files or an .npz in, a table, map.json and map.png out."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pyckafast
from pyckafast import cli


def _cli(*argv):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pyckafast.__file__)))
    return subprocess.run([sys.executable, "-m", "pyckafast", *map(str, argv)], capture_output=True,
                          text=True, env=env, timeout=300)


def _layers(n=150, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, 6))
    out = []
    for _ in range(3):
        h = np.tanh(h @ rng.normal(size=(6, 6)) / 2) + 0.1 * rng.normal(size=h.shape)
        out.append(h.astype(np.float32))
    return out


@pytest.fixture
def layer_dir(tmp_path):
    d = tmp_path / "acts"
    d.mkdir()
    arrays = _layers()
    # natural order: layer2 before layer10, although "layer10" < "layer2" as strings
    for name, a in zip(["layer1", "layer2", "layer10"], arrays):
        np.save(d / f"{name}.npy", a)
    (d / "notes.txt").write_text("not a representation")
    return d, arrays


def test_directory_map_writes_json_png_and_table(layer_dir, tmp_path):
    pytest.importorskip("matplotlib")
    d, arrays = layer_dir
    out = tmp_path / "out"
    proc = _cli("map", d, "--out", out, "--debiased")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "map.json").read_text())
    assert doc["names"] == ["layer1", "layer2", "layer10"]
    assert doc["options"] == {"kernel": "linear", "debiased": True, "threshold": None, "bandwidth": None}
    assert doc["n"] == 150
    np.testing.assert_allclose(doc["matrix"], pyckafast.cka_matrix(arrays, debiased=True), atol=1e-12)
    table = proc.stdout.splitlines()
    assert table[1].split()[:2] == ["[0]", "layer1"] and table[3].split()[:2] == ["[2]", "layer10"]
    assert float(table[2].split()[2]) == pytest.approx(doc["matrix"][1][0], abs=1e-4)
    from PIL import Image

    with Image.open(out / "map.png") as png:
        assert png.size[0] >= 1000
    assert f"wrote {out / 'map.png'}" in proc.stdout


def test_npz_map_in_archive_order_with_rbf(tmp_path, capsys):
    arrays = _layers(seed=1)
    np.savez(tmp_path / "acts.npz", conv=arrays[0], block=arrays[1], fc=arrays[2])
    code = cli.main(["map", str(tmp_path / "acts.npz"), "--kernel", "rbf", "--threshold", "0.5"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split()[1] for line in out[1:]] == ["conv", "block", "fc"]
    expect = pyckafast.cka_matrix(arrays, kernel="rbf", threshold=0.5)
    got = np.array([[float(v) for v in line.split()[2:]] for line in out[1:]])
    np.testing.assert_allclose(got, expect, atol=1e-4)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_zero_variance_layer_is_null_and_named(layer_dir, tmp_path, kernel):
    pytest.importorskip("matplotlib")
    d, arrays = layer_dir
    np.save(d / "layer3.npy", np.ones((150, 4)))
    proc = _cli("map", d, "--out", tmp_path / "o", "--kernel", kernel)
    assert proc.returncode == 1, proc.stderr  # undefined result, as `pyckafast cka` (issue 22)
    assert proc.stderr.count("\n") == 1 and "layer3.npy has zero variance" in proc.stderr
    matrix = json.loads((tmp_path / "o" / "map.json").read_text())["matrix"]
    assert matrix[2] == [None] * 4 and [row[2] for row in matrix] == [None] * 4
    others = np.array([[matrix[i][j] for j in (0, 1, 3)] for i in (0, 1, 3)], dtype=float)
    np.testing.assert_allclose(others, pyckafast.cka_matrix(arrays, kernel=kernel), atol=1e-12)


@pytest.mark.parametrize("make, message", [
    (lambda d: np.save(d / "layer4.npy", np.ones((10, 2))), "layer4.npy has 10"),
    (lambda d: (d / "layer0.npy").write_text("garbage"), "layer0.npy: not a .npy array"),
    (lambda d: np.save(d / "layer5.npy", np.full((150, 2), np.nan)), "layer5.npy: row 0 (0-based), column 0"),
])
def test_bad_inputs_are_one_line(layer_dir, make, message):
    d, _ = layer_dir
    make(d)
    proc = _cli("map", d)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_empty_and_missing_sources(tmp_path, capsys):
    assert cli.main(["map", str(tmp_path)]) == 2
    assert "holds no .npy files" in capsys.readouterr().err
    assert cli.main(["map", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "x.npy").write_text("text")
    assert cli.main(["map", str(tmp_path / "x.npy")]) == 2
    assert "neither a directory nor an .npz archive" in capsys.readouterr().err
    assert cli.main(["map", str(tmp_path), "--threshold", "0.5"]) == 2
    assert "--threshold applies to --kernel rbf only" in capsys.readouterr().err
    assert cli.main(["map", str(tmp_path), "--names-max-len", "1"]) == 2
    assert "--names-max-len must be at least 2" in capsys.readouterr().err


def test_long_names_are_shortened_in_table_and_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    arrays = _layers(seed=2)
    names = [f"model.encoder.layer.{i}.attention.output" for i in range(3)]
    np.savez(tmp_path / "acts.npz", **dict(zip(names, arrays)))
    code = cli.main(["map", str(tmp_path / "acts.npz"), "--out", str(tmp_path / "o"),
                     "--names-max-len", "10"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "layers: model.encoder.layer.*.attention.output"
    assert [line.split()[1] for line in out[2:5]] == ["0", "1", "2"]
    assert json.loads((tmp_path / "o" / "map.json").read_text())["names"] == names  # JSON keeps them


def test_without_matplotlib_the_json_is_written_and_the_extra_named(layer_dir, tmp_path):
    d, _ = layer_dir
    script = (
        "import sys, importlib.abc\n"
        "class Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from pyckafast.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, "map", str(d), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert 'pip install "pyckafast[plot]"' in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "o" / "map.json").read_text())["names"][0] == "layer1"
    assert not (tmp_path / "o" / "map.png").exists()


# ---- endless streams, exit codes, --out folders (issue 22, item 8) -------------------------------
@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "garbage", "npy"])
def test_a_source_that_is_no_npz_is_refused_at_once(tmp_path, source):
    """/dev/zero used to be read without end (MemoryError after GBs), a FIFO blocked on open."""
    path = {"/dev/zero": "/dev/zero", "fifo": tmp_path / "fifo", "garbage": tmp_path / "g.npz",
            "npy": tmp_path / "a.npy"}[source]
    if source == "fifo":
        os.mkfifo(path)
    elif source == "garbage":
        path.write_bytes(b"\0" * 100)
    elif source == "npy":
        np.save(path, np.ones((5, 2)))
    proc = _cli("map", path)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    want = {"/dev/zero": "not a directory or an .npz archive (a character device",
            "fifo": "not a directory or an .npz archive (a FIFO (named pipe)",
            "garbage": "is neither a directory nor an .npz archive (np.savez; it starts with",
            "npy": "is neither a directory nor an .npz archive (np.savez; a .npy array"}[source]
    assert proc.stderr.count("\n") == 1 and f"{path}: {want}" in proc.stderr, proc.stderr


def test_cka_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    np.save(tmp_path / "y.npy", np.ones((10, 2)))
    proc = _cli("cka", fifo, tmp_path / "y.npy")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{fifo}: not a .npy array (a FIFO (named pipe), not a regular file)" in proc.stderr


def test_map_and_cka_agree_on_the_exit_code_of_a_constant_layer(tmp_path):
    x = _layers()[0]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "const.npy", np.ones((150, 3)))
    np.savez(tmp_path / "layers.npz", x=x, const=np.ones((150, 3)))
    assert _cli("cka", tmp_path / "x.npy", tmp_path / "const.npy").returncode == 1
    proc = _cli("map", tmp_path / "layers.npz")
    assert proc.returncode == 1 and "const has zero variance" in proc.stderr
    assert proc.stdout.count("\n") == 3  # the map is still printed
    assert _cli("map", tmp_path / "layers.npz").returncode == 1
    np.savez(tmp_path / "fine.npz", x=x, y=2 * x)
    assert _cli("map", tmp_path / "fine.npz").returncode == 0


def test_an_out_folder_that_cannot_be_created_names_the_path_and_reason(layer_dir, tmp_path):
    d, _ = layer_dir
    (tmp_path / "file").write_text("a file, not a folder")
    for out, reason in ((tmp_path / "file" / "sub", "Not a directory"),
                        (tmp_path / "file", "File exists")):
        proc = _cli("map", d, "--out", out)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stdout == ""  # refused before the map is computed
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert f"--out {out}: cannot create the folder ({reason})" in proc.stderr, proc.stderr
