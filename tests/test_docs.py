"""Every Examples section in the installed package runs (doctest), so the docs stay true."""

import doctest
import importlib
import pkgutil

import pytest

import pyckafast

_OPTIONAL = {"pyckafast.torch", "pyckafast.dask", "pyckafast.plot"}


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
        pytest.importorskip({"pyckafast.torch": "torch", "pyckafast.dask": "dask.distributed",
                             "pyckafast.plot": "matplotlib"}[name])
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
