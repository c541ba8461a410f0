"""Optional dependencies: a feature without its package says which extra to install.

Each case runs in a subprocess whose import system pretends the optional packages are absent.
"""

import json
import subprocess
import sys
import textwrap

import pytest

_BLOCK = textwrap.dedent("""
    import sys, importlib.abc
    class _Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, _Absent())
""")


def _run(code: str, blocked=("matplotlib", "torch", "dask", "distributed", "tqdm"), args=()):
    script = _BLOCK.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)


@pytest.mark.parametrize("call, extra", [
    ("import numpy as np, pyckafast.plot as m; m.cka_heatmap(np.eye(2))", "plot"),
    ("import pyckafast.robustness.plots as m, pyckafast.robustness as r; "
     "m.plot_curves(None)", "plot"),
    ("import pyckafast.torch as m; m.compare_models(None, None, [], ['a'])", "torch"),
    ("import pyckafast.robustness.manipulation_torch", "torch"),
    ("import numpy as np, pyckafast.dask as m; m.linear_cka(np.ones((4, 2)), np.ones((4, 2)))",
     "dask"),
    ("import numpy as np, pyckafast.dask as m; m.rbf_cka(np.ones((4, 2)), np.ones((4, 2)))",
     "dask"),
])
def test_missing_optional_package_names_the_extra(call, extra):
    out = _run(call)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("pyckafast._core.optional.MissingDependency")
    assert f'pip install "pyckafast[{extra}]"' in last


def test_import_pyckafast_needs_no_optional_package():
    out = _run("import pyckafast; print(pyckafast.linear_cka([[0.0], [1.0], [3.0]], "
               "[[1.0], [0.0], [2.0]]))")
    assert out.returncode == 0, out.stderr
    assert 0.0 < float(out.stdout) <= 1.0


def test_robustness_cli_saves_results_before_plotting(tmp_path):
    code = """
        import sys
        from pyckafast.cli import main
        sys.exit(main(sys.argv[1:]))
    """
    out = _run(code, args=["robustness", "outlier", "--out", str(tmp_path), "--seeds", "1",
                           "--n-per-cube", "20", "--dim", "3", "--magnitudes", "1,10",
                           "--no-rbf", "--no-progress"])
    assert out.returncode == 1
    assert 'pip install "pyckafast[plot]"' in out.stderr
    saved = json.loads((tmp_path / "outlier.json").read_text())
    assert saved  # the sweep's numbers are kept
    assert not (tmp_path / "outlier.png").exists()
