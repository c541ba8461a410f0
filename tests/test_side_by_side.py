"""Two models' forward passes side by side (``pyckafast._torch.side_by_side``): when they run
in two threads, on what share of torch's threads, with which thread-local modes, and that the
maps are those of the passes one after the other."""

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyckafast._torch.side_by_side import SideBySide  # noqa: E402
from pyckafast.torch import compare_models  # noqa: E402


@pytest.fixture
def two_threads():
    """torch's pool at 2 threads for the test (side by side needs 2), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _probe():
    return (threading.get_ident(), torch.get_num_threads(), torch.is_inference_mode_enabled(),
            torch.is_grad_enabled())


def _nets(seed_a=0, seed_b=1):
    torch.manual_seed(seed_a)
    a = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.ReLU(), torch.nn.Linear(9, 4))
    torch.manual_seed(seed_b)
    b = torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    return a, b


def test_two_models_run_in_two_threads_on_half_the_pool_each(two_threads):
    a, b = _nets()
    with torch.inference_mode(), SideBySide(a, b, "cpu", "cpu") as pair:
        assert pair.parallel
        (ta, na, inf_a, _), (tb, nb, inf_b, grad_b) = pair.run(_probe, _probe)
    assert ta == threading.get_ident() and tb != ta
    assert (na, nb) == (1, 1) and inf_a and inf_b
    assert torch.get_num_threads() == 2  # the caller's setting again


def test_grad_mode_is_carried_to_the_worker(two_threads):
    a, b = _nets()
    with torch.no_grad(), SideBySide(a, b, "cpu", "cpu") as pair:
        _, (_, _, inference, grad) = pair.run(_probe, _probe)
    assert not inference and not grad


@pytest.mark.parametrize("case", ["same model", "shared module", "cuda", "one thread",
                                  "switched off"])
def test_one_after_the_other_where_side_by_side_could_change_the_result(case, two_threads,
                                                                        monkeypatch):
    a, b = _nets()
    device_b = "cpu"
    if case == "same model":
        b = a
    elif case == "shared module":
        b = torch.nn.Sequential(a[0], torch.nn.ReLU())
    elif case == "cuda":
        device_b = "cuda:0"
    elif case == "one thread":
        torch.set_num_threads(1)
    else:
        monkeypatch.setenv("PYCKAFAST_SIDE_BY_SIDE", "0")
    with SideBySide(a, b, "cpu", device_b) as pair:
        assert not pair.parallel
        (ta, *_), (tb, *_) = pair.run(_probe, _probe)
    assert ta == tb == threading.get_ident()


def test_autocast_keeps_them_one_after_the_other(two_threads):
    a, b = _nets()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not SideBySide(a, b, "cpu", "cpu").parallel


@pytest.mark.parametrize("failing", ["first", "second", "both"])
def test_errors_are_raised_after_both_have_finished(failing, two_threads):
    a, b = _nets()
    done = []

    def step(name):
        def run():
            done.append(name)
            if failing in (name, "both"):
                raise RuntimeError(f"{name} failed")
            return name
        return run

    with SideBySide(a, b, "cpu", "cpu") as pair:
        expected = "first" if failing in ("first", "both") else "second"
        with pytest.raises(RuntimeError, match=f"{expected} failed"):
            pair.run(step("first"), step("second"))
        assert sorted(done) == ["first", "second"]
        assert torch.get_num_threads() == 1  # this thread's half, for the whole block
    assert torch.get_num_threads() == 2


def test_the_pool_stays_whole_when_the_work_between_needs_it(two_threads):
    a, b = _nets()
    with SideBySide(a, b, "cpu", "cpu", pool_between=True) as pair:
        assert not pair.parallel and torch.get_num_threads() == 2


def test_compare_models_side_by_side_gives_the_same_map(two_threads, monkeypatch):
    a, b = _nets()
    gen = torch.Generator().manual_seed(3)
    loader = [torch.randn(32, 6, generator=gen) for _ in range(4)]
    layers = ["0", "1", "2"]
    m, _, _, rep = compare_models(a, b, loader, layers, estimator="minibatch", report=True)
    assert rep["totals"]["side_by_side"] is True
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("PYCKAFAST_SIDE_BY_SIDE", "0")
    ref, _, _, rep_ref = compare_models(a, b, loader, layers, estimator="minibatch",
                                        report=True)
    assert rep_ref["totals"]["side_by_side"] is False
    np.testing.assert_allclose(m, ref, rtol=0, atol=1e-12)
    monkeypatch.delenv("PYCKAFAST_SIDE_BY_SIDE")
    # the exact map's tile GEMMs between the passes take torch's whole pool
    _, _, _, rep_exact = compare_models(a, b, loader, layers, debiased=True, report=True)
    assert rep_exact["totals"]["side_by_side"] is False
