"""The pyckafast command line end to end: files in, one value (or JSON) out, clean errors."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import pyckafast
from pyckafast import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("npy")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3000, 12)) + 100.0).astype(np.float32)
    y = np.tanh(x[:, :6] - 100.0) @ rng.normal(size=(6, 5)) + rng.normal(size=(3000, 5))
    paths = {"x": d / "x.npy", "y": d / "y.npy", "x1d": d / "x1d.npy"}
    np.save(paths["x"], x)
    np.save(paths["y"], y)
    np.save(paths["x1d"], x[:, 0].astype(np.float64))
    return {k: str(v) for k, v in paths.items()}, x, y


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("chunk", [None, 700])
def test_cka_linear_matches_in_memory(files, capsys, debiased, chunk):
    paths, x, y = files
    argv = ["cka", paths["x"], paths["y"], "--no-progress"]
    argv += ["--debiased"] if debiased else []
    argv += ["--chunk-size", chunk] if chunk else []
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    expect = pyckafast.linear_cka(x.astype(np.float64), y, debiased=debiased)
    assert float(out) == pytest.approx(expect, abs=1e-9)


def test_cka_json_reports_options_and_timing(files, capsys):
    paths, x, y = files
    code, out, _ = _run(capsys, "cka", paths["x"], paths["y"], "--json", "--backend", "numpy",
                        "--chunk-size", "1000", "--no-progress")
    assert code == 0
    report = json.loads(out)
    assert report["cka"] == pytest.approx(pyckafast.linear_cka(x, y, backend="numpy"), abs=1e-12)
    assert (report["n"], report["p_x"], report["p_y"]) == (3000, 12, 5)
    assert report["kernel"] == "linear" and report["backend"] == "numpy"
    assert report["chunk_size"] == 1000 and report["dtype_x"] == "float32"
    assert report["seconds"] >= 0


def test_one_dimensional_file_is_one_feature(files, capsys):
    paths, x, y = files
    code, out, _ = _run(capsys, "cka", paths["x1d"], paths["y"], "--no-progress")
    assert code == 0
    assert float(out) == pytest.approx(pyckafast.linear_cka(x[:, 0].astype(np.float64), y), abs=1e-10)


def test_progress_bar_goes_to_stderr(files, capsys):
    pytest.importorskip("tqdm")
    paths, _, _ = files
    code, out, err = _run(capsys, "cka", paths["x"], paths["y"], "--chunk-size", "500")
    assert code == 0 and "rows" in err and "rows" not in out


def test_progress_callback_tracks_rows():
    pytest.importorskip("tqdm")
    with cli.progress_bar(10) as progress:
        progress(4, 10)
        progress(10, 10)
    with cli.progress_bar(10, enabled=False) as progress:
        assert progress is None


def _bad_files(d):
    np.save(d / "cube.npy", np.zeros((4, 3, 2)))
    np.save(d / "scalar.npy", np.float64(3.0))
    np.save(d / "strings.npy", np.array([["a", "b"]] * 5))
    np.save(d / "complex.npy", np.ones((5, 2), complex))
    np.save(d / "objects.npy", np.array([[1, None]] * 5, dtype=object), allow_pickle=True)
    np.save(d / "short.npy", np.ones((7, 2)))
    np.save(d / "empty.npy", np.ones((0, 2)))
    np.savez(d / "archive.npz", a=np.ones((5, 2)))
    (d / "text.npy").write_text("1,2,3\n4,5,6\n")
    (d / "folder.npy").mkdir()
    return {
        "missing.npy": "no such file",
        "cube.npy": "must be 1-D or 2-D",
        "scalar.npy": "must be 1-D or 2-D",
        "strings.npy": "must hold real numbers",
        "complex.npy": "must hold real numbers",
        "objects.npy": "not a readable .npy",
        "short.npy": "same number of samples",
        "empty.npy": "no samples",
        "archive.npz": ".npz archive",
        "text.npy": "not a readable .npy",
        "folder.npy": "is a directory",
    }


def test_every_bad_file_is_one_line_and_exit_2(files, capsys, tmp_path):
    paths, _, _ = files
    for name, message in _bad_files(tmp_path).items():
        for argv in (["cka", tmp_path / name, paths["y"]], ["cka", paths["y"], tmp_path / name]):
            code, out, err = _run(capsys, *argv, "--no-progress")
            assert code == 2, name
            assert out == ""
            assert err.count("\n") == 1 and err.startswith("pyckafast: error: "), err
            assert message in err and name in err, err


def test_bad_arguments(files, capsys):
    paths, _, _ = files
    code, _, err = _run(capsys, "cka", paths["x"], paths["y"], "--chunk-size", "0")
    assert code == 2 and "--chunk-size must be a positive integer" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["cka", paths["x"], paths["y"], "--backend", "fortran"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_nan_value_is_json_null(tmp_path, capsys):
    np.save(tmp_path / "const.npy", np.ones((10, 2)))
    np.save(tmp_path / "other.npy", np.arange(20.0).reshape(10, 2))
    with pytest.warns(RuntimeWarning, match="zero variance"):
        code, out, _ = _run(capsys, "cka", tmp_path / "const.npy", tmp_path / "other.npy", "--json",
                            "--no-progress")
    assert code == 0 and json.loads(out)["cka"] is None


def test_info_lists_backends(capsys):
    code, out, _ = _run(capsys, "info")
    assert code == 0 and "backends" in out and "numpy" in out


def test_demo_small(capsys):
    code, out, _ = _run(capsys, "demo", "--n", "20000", "--p", "8", "--naive-n", "400")
    assert code == 0
    assert "n = 20,000" in out and "naive n x n Grams" in out and "raw float32" in out
    exact = float(out.split("CKA = ")[1].split()[0])
    from pyckafast import _cli_tools

    x, y = _cli_tools.demo_data(20000, 8)
    assert exact == pytest.approx(pyckafast.linear_cka(x.astype(np.float64), y.astype(np.float64)), abs=1e-8)


def test_demo_naive_method_agrees_and_raw_float32_does_not():
    from pyckafast import _cli_tools

    x, y = _cli_tools.demo_data(300_000, 16)
    exact = pyckafast.linear_cka(x.astype(np.float64), y.astype(np.float64))
    naive = _cli_tools.naive_gram_cka(x[:500], y[:500])
    assert naive == pytest.approx(pyckafast.linear_cka(x[:500].astype(np.float64), y[:500]), abs=1e-10)
    assert abs(_cli_tools.raw_float32_cka(x, y) - exact) > 1e-4  # the cancellation the demo shows


def test_bench_prints_a_row_per_backend(capsys):
    code, out, _ = _run(capsys, "bench", "--n", "2000", "--p", "4", "--repeat", "1")
    assert code == 0
    rows = [line for line in out.splitlines()[2:] if line.strip()]
    assert len(rows) == 2 * len(pyckafast._core.dispatch.usable_backends("cpu"))


def test_robustness_subcommands_register_through_the_hook(monkeypatch, capsys):
    fake = types.ModuleType("pyckafast.robustness_cli")

    def add_robustness_parser(sub):
        p = sub.add_parser("robust-check")
        p.set_defaults(handler=lambda args: print("hooked") or 0)

    fake.add_robustness_parser = add_robustness_parser
    monkeypatch.setitem(sys.modules, "pyckafast.robustness_cli", fake)
    code, out, _ = _run(capsys, "robust-check")
    assert code == 0 and out == "hooked\n"


def test_rbf_kernel_calls_rbf_cka(files, capsys):
    paths, x, y = files
    code, out, _ = _run(capsys, "cka", paths["x"], paths["y"], "--kernel", "rbf", "--threshold", "0.8",
                        "--json")
    assert code == 0
    report = json.loads(out)
    assert report["threshold"] == 0.8 and report["bandwidth"] == "kornblith"
    assert report["cka"] == pytest.approx(pyckafast.rbf_cka(x, y, threshold=0.8), abs=1e-10)


def test_python_dash_m_subprocess(files):
    paths, x, y = files
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pyckafast.__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "pyckafast", "cka", paths["x"], paths["y"], "--json", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cka"] == pytest.approx(pyckafast.linear_cka(x, y), abs=1e-12)
    bad = subprocess.run([sys.executable, "-m", "pyckafast", "cka", "nope.npy", paths["y"]],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "nope.npy" in bad.stderr


def test_robustness_subcommand_through_the_main_cli(tmp_path, capsys):
    code = cli.main(["robustness", "translation", "--out", str(tmp_path), "--seeds", "2",
                     "--n-per-cube", "60", "--dim", "6", "--magnitudes", "1,10,50", "--no-rbf",
                     "--no-progress"])
    assert code == 0
    assert (tmp_path / "translation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    numbers = json.loads((tmp_path / "translation.json").read_text())
    assert "translation.png" in capsys.readouterr().out
    assert numbers  # the measured and theory values are written
