"""Packaging promises: optional dependencies stay optional; show_config says what runs."""

import subprocess
import sys

import pyckafast


def test_import_does_not_pull_optional_dependencies():
    code = (
        "import sys, pyckafast, numpy as np; pyckafast.linear_cka(np.ones((5,2)).cumsum(0), np.arange(5.0)); "
        "bad = [m for m in ('cupy', 'torch', 'dask', 'distributed', 'matplotlib', 'sklearn', 'tqdm') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_show_config_lists_backends_and_reasons(capsys):
    pyckafast.show_config()
    out = capsys.readouterr().out
    for name in ("numpy", "numba", "cpp", "cuda"):
        assert f"    {name}" in out
    assert "cuda" in out and ("ok" in out)
    cfg = pyckafast._config.config()
    assert cfg["backends"]["numpy"]["usable"]
    assert not cfg["backends"]["cuda"]["usable"] or cfg["gpu"]


def test_py_typed_is_shipped():
    import importlib.resources

    assert importlib.resources.files("pyckafast").joinpath("py.typed").is_file()
