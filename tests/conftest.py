import os

import numpy as np
import pytest

from pyckafast._core import dispatch as _backends

CPU_BACKENDS = ["numpy", "numba", "cpp"]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Every CPU backend. The compiled one must be present: a missing build is a failure,
    not a skip, unless PYCKAFAST_ALLOW_NO_EXT=1 says this environment has no compiler."""
    why = _backends.probe(request.param)
    if why is not None:
        if os.environ.get("PYCKAFAST_ALLOW_NO_EXT") == "1":
            pytest.skip(f"backend {request.param} unavailable: {why}")
        pytest.fail(f"backend {request.param} unavailable: {why}")
    return request.param
