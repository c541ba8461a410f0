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
    code, out, err = _run(capsys, "cka", paths["x"], paths["y"], "--chunk-size", "500", "--progress")
    assert code == 0 and "rows" in err and "rows" not in out
    code, out, err = _run(capsys, "cka", paths["x"], paths["y"], "--chunk-size", "500")
    assert code == 0 and err == ""  # stderr is not a terminal here: no bar unless asked


def test_rbf_progress_bar_counts_block_pairs(files, capsys):
    pytest.importorskip("tqdm")
    paths, _, _ = files
    code, out, err = _run(capsys, "cka", paths["x"], paths["y"], "--kernel", "rbf", "--sigma",
                          "20,3", "--backend", "numpy", "--progress")
    assert code == 0 and "rbf pairs" in err and "pair" not in out
    code, out, err = _run(capsys, "cka", paths["x"], paths["y"], "--kernel", "rbf", "--sigma",
                          "20,3", "--backend", "numpy")
    assert code == 0 and err == ""


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
    (d / "garbage.npy").write_bytes(bytes(range(256)) * 4)
    (d / "truncated.npy").write_bytes((d / "short.npy").read_bytes()[:-16])
    (d / "folder.npy").mkdir()
    return {
        "missing.npy": "no such file",
        "cube.npy": "must be 1-D or 2-D",
        "scalar.npy": "must be 1-D or 2-D",
        "strings.npy": "must hold real numbers",
        "complex.npy": "must hold real numbers",
        "objects.npy": "holds Python objects",
        "short.npy": "same number of samples",
        "empty.npy": "no samples",
        "archive.npz": ".npz archive",
        "text.npy": "not a .npy array (no NumPy header",
        "garbage.npy": "not a .npy array (no NumPy header",
        "truncated.npy": "is truncated",
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
    for argv in (["--chunk-size", "0"], ["--backend", "fortran"], ["--sigma", "-1", "--kernel", "rbf"],
                 ["--sigma", "1,2,3", "--kernel", "rbf"], ["--threshold", "nan", "--kernel", "rbf"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["cka", paths["x"], paths["y"], *argv])
        assert exc.value.code == 2
        assert f"argument {argv[0]}" in capsys.readouterr().err


def test_info_lists_backends(capsys):
    code, out, _ = _run(capsys, "info")
    assert code == 0 and "backends" in out and "numpy" in out


def test_bench_prints_a_row_per_backend(capsys):
    code, out, _ = _run(capsys, "bench", "--n", "2000", "--p", "4", "--repeat", "1")
    assert code == 0
    rows = [line for line in out.splitlines()[2:] if line.strip()]
    assert len(rows) == 2 * len(pyckafast._core.dispatch.usable_backends("cpu"))


def test_robustness_subcommands_register_through_the_hook(monkeypatch, capsys):
    fake = types.ModuleType("pyckafast.cli.robustness")

    def add_robustness_parser(sub):
        p = sub.add_parser("robust-check")
        p.set_defaults(handler=lambda args: print("hooked") or 0)

    fake.add_robustness_parser = add_robustness_parser
    monkeypatch.setitem(sys.modules, "pyckafast.cli.robustness", fake)
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


# ---- end to end in a subprocess: exit status, stdout and stderr as a shell user sees them ----

def _cli(*argv, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pyckafast.__file__)))
    return subprocess.run([sys.executable, "-m", "pyckafast", *map(str, argv)], capture_output=True,
                          text=True, env=env, timeout=300, cwd=cwd)


def _one_error_line(proc, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("pyckafast: error: "), proc.stderr
    return proc.stderr


def test_version():
    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"pyckafast {pyckafast.__version__}"


def _subparsers(parser):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help_that_lists_its_choices():
    parser = cli.build_parser()
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            for choice in action.choices or ():
                assert str(choice) in action.help, f"{name} {action.dest}: {choice} not in help"


def test_sigma_pair_and_json_reports_the_sigma_used(files):
    paths, x, y = files
    report = json.loads(_cli("cka", paths["x"], paths["y"], "--kernel", "rbf", "--sigma", "3,0.5",
                             "--json").stdout)
    assert (report["sigma_x"], report["sigma_y"]) == (3.0, 0.5)
    assert report["sigma_source"] == "given (--sigma)" and report["threshold"] is None
    assert report["cka"] == pytest.approx(pyckafast.rbf_cka(x, y, sigma=(3.0, 0.5)), abs=1e-10)
    assert report["estimator"] == "biased" and report["backend"] == "auto"
    assert report["backend_used"] in pyckafast._core.dispatch.BACKENDS
    assert report["form"] == "pairs" and report["seconds"] >= 0


def test_json_reports_the_median_rule_sigma(tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(120, 4)), rng.normal(size=(120, 2)) * 5.0
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    proc = _cli("cka", tmp_path / "x.npy", tmp_path / "y.npy", "--kernel", "rbf", "--threshold",
                "0.5", "--debiased", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)

    def kornblith_sigma(a):  # median of all n^2 squared distances, diagonal zeros included
        d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        return 0.5 * np.sqrt(np.median(d2))

    assert report["sigma_x"] == pytest.approx(kornblith_sigma(x), rel=1e-12)
    assert report["sigma_y"] == pytest.approx(kornblith_sigma(y), rel=1e-12)
    assert report["bandwidth"] == "kornblith" and "median" in report["sigma_source"]
    assert report["estimator"] == "debiased" and (report["n"], report["p_x"], report["p_y"]) == (120, 4, 2)
    expect = pyckafast.rbf_cka(x, y, threshold=0.5, debiased=True)
    assert report["cka"] == pytest.approx(expect, abs=1e-10)


@pytest.mark.parametrize("argv, message", [
    (["--sigma", "2"], "--sigma applies to --kernel rbf only"),
    (["--threshold", "2"], "--threshold applies to --kernel rbf only"),
    (["--bandwidth", "offdiag"], "--bandwidth applies to --kernel rbf only"),
    (["--kernel", "rbf", "--chunk-size", "10"], "--chunk-size applies to --kernel linear only"),
    (["--kernel", "rbf", "--sigma", "1", "--bandwidth", "offdiag"], "give one or the other"),
])
def test_ignored_or_contradictory_kernel_options_are_errors(files, capsys, argv, message):
    paths, _, _ = files
    code, out, err = _run(capsys, "cka", paths["x"], paths["y"], *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_sigma_with_linear_kernel_in_a_subprocess(files):
    paths, _, _ = files
    err = _one_error_line(_cli("cka", paths["x"], paths["y"], "--sigma", "1,2"))
    assert "--sigma applies to --kernel rbf only" in err


def test_broken_pipe_exits_quietly(files):
    """``pyckafast cka ... --json | head -c 10``: the reader leaves before the output is written."""
    paths, _, _ = files
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pyckafast.__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "pyckafast", "cka", paths["x"], paths["y"], "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == ""


def test_garbage_file_message_names_the_file(files, tmp_path):
    paths, _, _ = files
    (tmp_path / "acts.npy").write_text("this is not an array\n")
    err = _one_error_line(_cli("cka", tmp_path / "acts.npy", paths["y"]))
    assert "acts.npy: not a .npy array" in err and "pickle" not in err


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_nan_message_names_file_row_and_column(files, tmp_path, kernel):
    paths, x, _ = files
    bad = x.astype(np.float64)
    bad[2345, 7] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    err = _one_error_line(_cli("cka", paths["y"], tmp_path / "bad.npy", "--kernel", kernel))
    assert "bad.npy: row 2345 (0-based), column 7 holds inf" in err


@pytest.mark.parametrize("extra", [[], ["--json"], ["--kernel", "rbf"], ["--debiased"]])
def test_zero_variance_exits_1_with_one_line(files, tmp_path, extra):
    paths, _, _ = files
    np.save(tmp_path / "const.npy", np.full((3000, 2), 7.0, np.float32))
    err = _one_error_line(_cli("cka", paths["x"], tmp_path / "const.npy", *extra), code=1)
    assert "const.npy has zero variance" in err and "nan" not in err


def test_robustness_seeds_zero_is_an_error(tmp_path):
    proc = _cli("robustness", "translation", "--out", tmp_path, "--seeds", "0")
    assert proc.returncode == 2 and "--seeds" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("experiment, options, flag, applies_to", [
    ("translation", ["--grid", "1,2"], "--grid", "invertible"),
    ("outlier", ["--representation", "mlp"], "--representation", "class-translation"),
    ("invertible", ["--linear-method", "gram", "--rbf", "0.5"], "--rbf",
     "translation, outlier, class-translation"),
    ("invertible", ["--no-rbf", "--rbf-samples", "0"], "--rbf-samples",
     "translation, outlier, class-translation"),
    ("translation", ["--linear-method", "engine"], "--linear-method", "invertible"),
    ("class-translation", ["--dim", "5"], "--dim", "translation, invertible, outlier"),
    ("class-translation", ["--n-per-cube", "5"], "--n-per-cube", "translation, invertible, outlier"),
    ("invertible", ["--magnitudes", "1,2"], "--magnitudes", "translation, outlier, class-translation"),
])
def test_options_an_experiment_ignores_are_errors(tmp_path, capsys, experiment, options, flag,
                                                  applies_to):
    code, out, err = _run(capsys, "robustness", experiment, "--out", tmp_path, *options, "--no-progress")
    assert code == 2 and out == ""
    assert err == (f"pyckafast: error: {flag} applies to {applies_to} only; the {experiment} "
                   "experiment does not use it.\n")
    assert not any(tmp_path.iterdir())  # refused before any work


def test_no_rbf_with_rbf_options_is_an_error(tmp_path):
    err = _one_error_line(_cli("robustness", "translation", "--out", tmp_path, "--no-rbf",
                               "--rbf-samples", "10"))
    assert "--rbf-samples" in err and "--no-rbf" in err


def test_invertible_summary_is_a_mean_by_std_table(tmp_path):
    proc = _cli("robustness", "invertible", "--out", tmp_path, "--seeds", "2", "--n-per-cube", "30",
                "--dim", "4", "--grid", "1,10,100", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("mean \\ std")))
    assert lines[head].split()[3:] == ["1", "10", "100"]
    rows = [line.split() for line in lines[head + 1:head + 4]]
    data = json.loads((tmp_path / "invertible.json").read_text())
    for row, mean, expect in zip(rows, ["1", "10", "100"], data["mean_over_seeds"]["linear"]):
        assert row[0] == mean
        np.testing.assert_allclose([float(v) for v in row[1:]], expect, atol=5e-5)


def test_curve_summary_has_a_row_per_magnitude(tmp_path):
    proc = _cli("robustness", "outlier", "--out", tmp_path, "--seeds", "1", "--n-per-cube", "30",
                "--dim", "4", "--magnitudes", "1,100", "--no-rbf")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("c \\ measure"))
    assert lines[head].split()[3:] == ["theory", "linear"]
    assert [lines[head + 1].split()[0], lines[head + 2].split()[0]] == ["1", "100"]


@pytest.mark.parametrize("dtype", [np.int16, np.float16, np.bool_])
def test_rbf_median_sigma_for_non_float_files(tmp_path, dtype):
    rng = np.random.default_rng(4)
    raw = rng.normal(size=(80, 3)) * 4
    x = raw > 0 if dtype is np.bool_ else raw.astype(dtype)
    y = rng.normal(size=(80, 2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    proc = _cli("cka", tmp_path / "x.npy", tmp_path / "y.npy", "--kernel", "rbf", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cka"] == pytest.approx(pyckafast.rbf_cka(x, y), abs=1e-6)


def test_library_warnings_are_one_line_each(files, capsys, monkeypatch):
    import warnings

    paths, _, _ = files

    def warn_twice(*args, **kwargs):
        for _ in range(2):
            warnings.warn("sigma makes the kernel numerically the identity", RuntimeWarning)
        return 0.5

    monkeypatch.setattr(pyckafast, "rbf_cka", warn_twice)
    code, out, err = _run(capsys, "cka", paths["x"], paths["y"], "--kernel", "rbf", "--sigma", "1")
    assert code == 0 and out == "0.5\n"
    assert err == "pyckafast: warning: sigma makes the kernel numerically the identity\n"


def test_significance_test_command_matches_cka_test(files, capsys):
    paths, x, y = files
    code, out, _ = _run(capsys, "test", paths["x"], paths["y"], "--json", "--method", "moments")
    assert code == 0
    report = json.loads(out)
    ref = pyckafast.cka_test(x, y, method="moments")
    for key in ("cka", "pvalue", "null_mean", "null_var", "zscore", "method", "approximation",
                "n_permutations"):
        assert report[key] == pytest.approx(getattr(ref, key)) if isinstance(report[key], float) \
            else report[key] == getattr(ref, key)
    code, out, _ = _run(capsys, "test", paths["x"], paths["y"], "--method", "permutation",
                        "--permutations", "19", "--seed", "3")
    assert code == 0 and out.startswith("cka=") and "pvalue=0.05 (permutation" in out


def test_significance_test_command_rejects_bad_options(files, capsys):
    paths, _, _ = files
    code, _, err = _run(capsys, "test", paths["x"], paths["y"], "--sigma", "1")
    assert code == 2 and "--sigma applies to --kernel rbf only" in err
    code, _, err = _run(capsys, "test", paths["x"], paths["x1d"][:-4] + "_missing.npy")
    assert code == 2 and err.count("\n") == 1


def test_influence_command_lists_the_top_samples(files, capsys, tmp_path):
    paths, x, y = files
    y2 = np.array(y)
    y2[17] += 500.0
    np.save(tmp_path / "y2.npy", y2)
    code, out, _ = _run(capsys, "influence", paths["x"], tmp_path / "y2.npy", "--top", "3",
                        "--json")
    assert code == 0
    report = json.loads(out)
    ref = pyckafast.cka_influence(x, y2)
    assert report["top"][0]["index"] == 17 == int(ref.top(1)[0][0])
    assert report["se"] == pytest.approx(ref.se, rel=1e-9)
    assert len(report["top"]) == 3
    code, out, _ = _run(capsys, "influence", paths["x"], tmp_path / "y2.npy", "--top", "2")
    assert code == 0 and out.splitlines()[1].startswith("17 loo=")
