"""One thread setting, and chunk-parallel linear passes that give the serial result."""

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch
from pyckafast._cpu import linear as cpu_linear, moments as cpu_moments


def test_precedence(monkeypatch):
    monkeypatch.delenv("PYCKAFAST_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert pyckafast.get_num_threads() == 3
    monkeypatch.setenv("PYCKAFAST_NUM_THREADS", "5")
    assert pyckafast.get_num_threads() == 5
    pyckafast.set_num_threads(4)
    try:
        assert pyckafast.get_num_threads() == 4
        with pyckafast.threads(1):
            assert pyckafast.get_num_threads() == 1
        assert pyckafast.get_num_threads() == 4
    finally:
        pyckafast.set_num_threads(None)
    assert pyckafast.get_num_threads() == 5


def test_default_is_the_affinity(monkeypatch):
    import os

    monkeypatch.delenv("PYCKAFAST_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert pyckafast.get_num_threads() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="positive integer"):
        pyckafast.set_num_threads(bad)
    with pytest.raises(ValueError, match="positive integer"), pyckafast.threads(bad):
        pass


def _spy_workers(monkeypatch) -> list[int]:
    seen = []
    original = cpu_moments._run_parallel

    def spy(feeders, *args):
        seen.append(len(feeders))
        return original(feeders, *args)

    monkeypatch.setattr(cpu_moments, "_run_parallel", spy)
    return seen


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_chunk_parallel_equals_serial(monkeypatch, backend, debiased):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 24)) + 100.0
    y = x[:, :10] @ rng.normal(size=(10, 7)) + rng.normal(size=(20_000, 7))
    workers = _spy_workers(monkeypatch)
    with pyckafast.threads(1):
        serial = pyckafast.linear_cka(x, y, debiased=debiased, backend=backend, chunk_size=1000)
    assert workers == []
    for n_threads in (2, 3, 5):
        with pyckafast.threads(n_threads):
            parallel = pyckafast.linear_cka(x, y, debiased=debiased, backend=backend,
                                            chunk_size=1000)
        assert parallel == pytest.approx(serial, abs=1e-12)
    assert workers == [2, 3, 5]


def test_numba_backend_stays_serial(monkeypatch):
    # Numba's threading layer may not be entered from several threads at once.
    workers = _spy_workers(monkeypatch)
    x = np.random.default_rng(1).normal(size=(20_000, 4))
    with pyckafast.threads(4):
        pyckafast.linear_cka(x, x ** 2, backend="numba", chunk_size=1000)
    assert workers == []


def test_a_nan_found_by_a_worker_names_its_rows():
    x = np.random.default_rng(2).normal(size=(20_000, 4))
    x[17_123, 2] = np.nan
    with pyckafast.threads(2), pytest.raises(ValueError, match=r"x must contain only finite "
                                                                r"values.*rows 17000\.\.17999"):
        pyckafast.linear_cka(x, x, chunk_size=1000)


def test_large_p_uses_one_set_of_sums():
    ops = dispatch.resolve("cpp", "linear_moments", "cpu")
    assert dispatch.linear_workers(ops, 10**6, 64, 64, 8192, 4, 8) == 8
    assert dispatch.linear_workers(ops, 10**6, 4096, 4096, 512, 4, 8) == 1


def test_omp_num_threads_is_obeyed_after_numba_ran(tmp_path):
    # Before, the extension read OpenMP's setting, which Numba's OpenMP layer had changed.
    import subprocess
    import sys

    code = ("import numpy as np, pyckafast\n"
            "from pyckafast import _ext\n"
            "x = np.random.default_rng(0).normal(size=(5000, 8))\n"
            "pyckafast.linear_cka(x, x ** 2, backend='numba')\n"
            "pyckafast.linear_cka(x, x ** 2, backend='cpp')\n"
            "print(_ext.max_threads())\n")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYCKAFAST_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_every_backend_follows_the_block():
    import numba

    from pyckafast import _ext

    x = np.random.default_rng(3).normal(size=(3000, 6))
    with pyckafast.threads(1):
        pyckafast.linear_cka(x, x ** 2, backend="cpp")
        assert _ext.max_threads() == 1
        pyckafast.linear_cka(x, x ** 2, backend="numba")
        assert numba.get_num_threads() == 1
