"""One thread setting, and chunk-parallel linear passes that give the serial result."""

import numpy as np
import pytest

import pyckafast
from pyckafast._core import dispatch
from pyckafast._cpu import linear as cpu_linear, moments as cpu_moments

# The folder holding the pyckafast this run imports (site-packages after `pip install .`, the
# checkout for an in-place build): child processes import the same package from there.
_ROOT = str(__import__("pathlib").Path(__import__("pyckafast").__file__).resolve().parents[1])


@pytest.fixture
def many_cpus(monkeypatch):
    """A machine of 64 logical CPUs, so counts above this one's are not capped."""
    from pyckafast._core import threads as _threads

    monkeypatch.setattr(_threads, "machine_threads", lambda: 64)


def test_precedence(monkeypatch, many_cpus):
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
def test_chunk_parallel_equals_serial(monkeypatch, backend, debiased, many_cpus):
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


def test_numba_backend_stays_serial(monkeypatch, many_cpus):
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
                                                                r"values.*row 17123, column 2"):
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
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _ROOT}
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


# Issue 22 item 6: every thread setting is validated once, by a message naming the setting, and
# a count the machine cannot run is capped (before: 0, -1, abc, 1.5 in the environment were
# ignored without a word, and 2**64 reached the C++ extension and crashed it).

def _cap():
    from pyckafast._core.threads import machine_threads

    return machine_threads()


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "1e20", " "])
def test_bad_pyckafast_num_threads_is_an_error_naming_it(monkeypatch, value):
    monkeypatch.setenv("PYCKAFAST_NUM_THREADS", value)
    if not value.strip():  # empty: unset
        assert pyckafast.get_num_threads() >= 1
        return
    with pytest.raises(ValueError, match=r"PYCKAFAST_NUM_THREADS=.*positive integer"):
        pyckafast.get_num_threads()
    x = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(ValueError, match="PYCKAFAST_NUM_THREADS"):
        pyckafast.linear_cka(x, x ** 2, backend="cpp")


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "1e20"])
def test_bad_omp_num_threads_is_ignored_with_a_warning(monkeypatch, value):
    import os

    monkeypatch.delenv("PYCKAFAST_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.warns(RuntimeWarning, match=r"OMP_NUM_THREADS=.*ignores it"):
        assert pyckafast.get_num_threads() == len(os.sched_getaffinity(0))


def test_omp_nested_list_counts_its_first_level(monkeypatch, many_cpus):
    monkeypatch.delenv("PYCKAFAST_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3,2")
    assert pyckafast.get_num_threads() == 3


@pytest.mark.parametrize("name", ["PYCKAFAST_NUM_THREADS", "OMP_NUM_THREADS"])
@pytest.mark.parametrize("value", ["99999999999999999999", str(2 ** 64), str(2 ** 31)])
def test_huge_environment_counts_are_capped(monkeypatch, name, value):
    from pyckafast import _ext

    monkeypatch.delenv("PYCKAFAST_NUM_THREADS", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.warns(RuntimeWarning, match=rf"{name}=.*runs at most"):
        assert pyckafast.get_num_threads() == _cap()
    # chunks large enough that the moment feed runs its shift kernel on every thread (a small
    # chunk takes one), so the C++ call takes the capped count
    x = np.random.default_rng(0).normal(size=(20_000, 100))
    assert 0 < pyckafast.linear_cka(x, x ** 2, backend="cpp") <= 1
    assert _ext.max_threads() == _cap()


@pytest.mark.parametrize("setter", ["threads", "set_num_threads"])
def test_huge_counts_are_capped(setter):
    x = np.random.default_rng(0).normal(size=(500, 8))
    want = pyckafast.linear_cka(x, x ** 2, backend="cpp")
    with pytest.warns(RuntimeWarning, match=rf"{setter}\(n\): {2 ** 64} threads"):
        if setter == "threads":
            with pyckafast.threads(2 ** 64) as k:
                got = pyckafast.linear_cka(x, x ** 2, backend="cpp")
                assert k == pyckafast.get_num_threads() == _cap()
        else:
            pyckafast.set_num_threads(2 ** 64)
            try:
                assert pyckafast.get_num_threads() == _cap()
                got = pyckafast.linear_cka(x, x ** 2, backend="cpp")
            finally:
                pyckafast.set_num_threads(None)
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "abc", None])
def test_bad_counts_name_the_call(bad):
    with pytest.raises(ValueError, match=r"threads\(n\): the number of threads must be a "
                                         r"positive integer"):
        with pyckafast.threads(bad):
            pass
    if bad is not None:  # None resets set_num_threads
        with pytest.raises(ValueError, match=r"set_num_threads\(n\)"):
            pyckafast.set_num_threads(bad)


def test_numpy_integers_are_counts():
    with pyckafast.threads(np.int64(1)):
        assert pyckafast.get_num_threads() == 1


def test_the_environment_in_a_fresh_process_fails_cleanly():
    """The repro of issue 22 item 6: no pybind11 TypeError from the first C++ call."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np, pyckafast as pk\n"
            "x = np.random.default_rng(0).normal(size=(500, 8))\n"
            "print(pk.get_num_threads(), pk.linear_cka(x, x ** 2, backend='cpp'))\n")
    for value, ok in [("99999999999999999999", True), ("0", False), ("abc", False)]:
        env = {**os.environ, "PYCKAFAST_NUM_THREADS": value, "PYTHONPATH": _ROOT}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, cwd=__import__("tempfile").gettempdir())
        assert (out.returncode == 0) == ok, out.stderr
        if ok:
            assert out.stdout.split()[0] == str(_cap())
        else:
            assert "ValueError: PYCKAFAST_NUM_THREADS=" in out.stderr
            assert "TypeError" not in out.stderr


# The thread budget shared with torch (issue 20).

def test_model_loop_holds_every_pool_to_the_cores_torch_leaves():
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_info

    from pyckafast._core.threads import available_cores, model_loop, torch_aware_threads

    want = max(1, min(pyckafast.get_num_threads(), available_cores() - torch.get_num_threads()))
    assert torch_aware_threads() == want
    with model_loop() as n:
        assert n == want == pyckafast.get_num_threads()
        if n < available_cores():
            blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
            assert blas and all(i["num_threads"] == n for i in blas)
        with pyckafast.threads(1):
            assert pyckafast.get_num_threads() == 1
        with model_loop() as inner:  # nested: the same budget
            assert inner == n
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with model_loop() as n:  # torch on one core leaves the others to pyckafast
            assert n == max(1, min(pyckafast.get_num_threads(), available_cores() - 1))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("entry", ["compare_models", "compare_models mb", "torch_cka", "pytorch_cka"])
def test_model_loops_keep_pyckafast_off_torchs_cores(entry):
    """Inside every loop over torch models, pyckafast's threads (and BLAS's) are the cores that
    torch's intra-op pool leaves (before: all of them, on top of torch's, which made the
    forward passes 2.2x slower)."""
    torch = pytest.importorskip("torch")
    import os

    from threadpoolctl import threadpool_info

    cores = len(os.sched_getaffinity(0))
    want = max(1, min(pyckafast.get_num_threads(), cores - torch.get_num_threads()))
    seen = []

    def spy(module, inputs, output):
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        seen.append((pyckafast.get_num_threads(), max(blas, default=None)))

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    net[1].register_forward_hook(spy)
    batches = [torch.randn(32, 5) for _ in range(2)]
    if entry.startswith("compare_models"):
        from pyckafast.torch import compare_models

        compare_models(net, net, batches, ["0", "2"],
                       estimator="minibatch" if entry.endswith("mb") else "exact")
    elif entry == "torch_cka":
        from pyckafast.compat.torch_cka import CKA

        CKA(net, net, "a", "b", model1_layers=["0", "2"], model2_layers=["0", "2"]).compare(
            [(b,) for b in batches])
    else:
        from pyckafast.compat.pytorch_cka import compute_cka

        compute_cka(net, net, batches, layers=["0", "2"], device="cpu", progress=False)
    assert seen and all(n == want for n, _ in seen)
    if want < cores:
        assert all(b == want for _, b in seen)
    assert pyckafast.get_num_threads() >= want  # restored after the loop
