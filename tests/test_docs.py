"""Every Examples section in the installed package runs (doctest), so the docs stay true."""

import doctest
import importlib
import pkgutil

import pytest

import pyckafast

# Modules whose examples need an optional package: skipped when it is not installed.
_OPTIONAL = {"pyckafast.torch": "torch", "pyckafast.dask": "dask.distributed",
             "pyckafast.plot": "matplotlib", "pyckafast.robustness.plots": "matplotlib",
             "pyckafast.robustness.manipulation_torch": "torch",
             "pyckafast.robustness.classifier": "sklearn",
             "pyckafast.robustness.sweeps": "sklearn",
             "pyckafast.torchmetrics": "torchmetrics"}


def _modules():
    names = [pyckafast.__name__]
    for info in pkgutil.walk_packages(pyckafast.__path__, prefix="pyckafast."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def _needs_gpu(name):
    return name.startswith(("pyckafast._gpu", "pyckafast._cuda", "pyckafast._gpu.ops_cuda"))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    if _needs_gpu(name):
        pytest.importorskip("cupy", reason="GPU-only module; tests/test_gpu.py covers it on a GPU")
    if name in _OPTIONAL:
        pytest.importorskip(_OPTIONAL[name])
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
