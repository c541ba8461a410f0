"""Packaging promises: optional dependencies stay optional; show_config says what runs."""

import subprocess
import sys

import pyckafast


def test_import_does_not_pull_optional_dependencies():
    code = (
        "import sys, pyckafast, numpy as np; pyckafast.linear_cka(np.ones((5,2)).cumsum(0), np.arange(5.0)); "
        "pyckafast.rbf_cka(np.arange(8.0), np.arange(8.0) ** 2); pyckafast.cka_matrix([np.arange(6.0)] * 2); "
        "bad = [m for m in ('cupy', 'torch', 'dask', 'distributed', 'matplotlib', 'sklearn', 'tqdm') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_show_config_lists_backends_and_reasons(capsys):
    from pyckafast._core import dispatch

    pyckafast.show_config()
    lines = capsys.readouterr().out.splitlines()
    for name in ("numpy", "numba", "cpp", "cuda"):
        line = next(l for l in lines if l.startswith(f"    {name} "))
        why = dispatch.probe(name)
        # each backend's own line says "ok" exactly when it can run, else the probe's reason
        assert line.endswith(": ok") == (why is None), line
        assert why is None or line.endswith(f"unavailable: {why}"), line
    cfg = pyckafast._config.config()
    assert cfg["backends"]["numpy"]["usable"]
    cuda_why = dispatch.probe("cuda")
    if cuda_why is None:  # the GPU line describes the device
        assert not cfg["gpu"].startswith("none usable") and "compute capability" in cfg["gpu"]
    else:  # or says why there is none
        assert cfg["gpu"] == f"none usable ({cuda_why})"


def test_py_typed_is_shipped():
    import importlib.resources

    assert importlib.resources.files("pyckafast").joinpath("py.typed").is_file()
