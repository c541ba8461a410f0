"""pyckafast.compat.torch_cka: torch_cka 0.21's CKA class, exact by default."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyckafast  # noqa: E402
from pyckafast.compat.torch_cka import CKA  # noqa: E402

LAYERS = ["0", "2", "4"]


def _net(seed: int, dtype=torch.float32):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16),
                              torch.nn.Tanh(), torch.nn.Linear(16, 6))
    return net.to(dtype)


def _loader(n=192, batch=48, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g, dtype=dtype)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)


def _acts(net, x):
    with torch.no_grad():
        h0 = net[0](x)
        h2 = net[2](net[1](h0))
        h4 = net[4](net[3](h2))
    return [h.double().numpy() for h in (h0, h2, h4)]


@pytest.mark.parametrize("batch", [16, 50, 192])
def test_exact_is_the_full_dataset_debiased_map_for_any_batch_size(batch):
    a, b = _net(0, torch.float64), _net(1, torch.float64)
    loader = _loader(batch=batch, dtype=torch.float64)
    cka = CKA(a, b, "a", "b", model1_layers=LAYERS, model2_layers=LAYERS)
    cka.compare(loader)
    x = loader.dataset.tensors[0]
    want = pyckafast.cka_matrix(_acts(a, x), _acts(b, x), debiased=True)
    np.testing.assert_allclose(cka.export()["CKA"].numpy(), want, rtol=0, atol=1e-12)


def test_minibatch_mode_matches_torch_cka():
    peer = pytest.importorskip("torch_cka", reason="torch_cka (the peer) is not installed")
    a, b = _net(0), _net(1)
    loader = _loader()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peer.CKA(_net(0), _net(1), "a", "b", model1_layers=LAYERS, model2_layers=LAYERS)
        theirs.compare(loader)
    mine = CKA(a, b, "a", "b", model1_layers=LAYERS, model2_layers=LAYERS, minibatch=True)
    mine.compare(loader)
    got, want = mine.export(), theirs.export()
    assert got["model1_layers"] == want["model1_layers"] == LAYERS
    assert got["dataset1_name"] == want["dataset1_name"]
    # well-conditioned data, float32 models: torch_cka accumulates its HSICs in float32
    np.testing.assert_allclose(got["CKA"].numpy(), want["CKA"].double().numpy(), rtol=2e-4)
    exact = CKA(a, b, "a", "b", model1_layers=LAYERS, model2_layers=LAYERS)
    exact.compare(loader)
    # the minibatch estimate is another quantity: close to the exact one here, not equal
    diff = np.abs(exact.export()["CKA"].numpy() - got["CKA"].numpy())
    assert diff.max() < 0.1 and diff.max() > 1e-6


def test_minibatch_mode_is_torch_ckas_formula_in_float64():
    from _reference import torch_cka_minibatch

    a, b = _net(0, torch.float64), _net(1, torch.float64)
    loader = _loader(batch=48, dtype=torch.float64)
    mine = CKA(a, b, "a", "b", model1_layers=LAYERS, model2_layers=LAYERS, minibatch=True)
    mine.compare(loader)
    batches = [(x + 0,) for (x,) in loader]
    want = torch_cka_minibatch([_acts(a, x) for (x,) in batches], [_acts(b, x) for (x,) in batches])
    np.testing.assert_allclose(mine.export()["CKA"].numpy(), want, rtol=0, atol=1e-10)


def test_hooks_removed_and_modes_restored():
    a, b = _net(0), _net(1)
    a.train()
    b.eval()
    b[1].train()  # a mixed model: every module gets its own mode back
    CKA(a, b, "a", "b", model1_layers=LAYERS, model2_layers=LAYERS).compare(_loader())
    assert a.training and all(m.training for m in a.modules())
    assert not b.training and b[1].training and not b[0].training
    assert all(not m._forward_hooks for m in [*a.modules(), *b.modules()])


def test_same_model_two_loaders_records_each_side():
    a = _net(0, torch.float64)
    l1, l2 = _loader(seed=0, dtype=torch.float64), _loader(seed=1, dtype=torch.float64)
    cka = CKA(a, a, "a", "a2", model1_layers=["0"], model2_layers=["0"])
    cka.compare(l1, l2)
    x1, x2 = l1.dataset.tensors[0], l2.dataset.tensors[0]
    want = pyckafast.linear_cka(_acts(a, x1)[0], _acts(a, x2)[0], debiased=True)
    assert abs(float(cka.export()["CKA"][0, 0]) - want) < 1e-12


def test_default_layers_are_every_module_and_unknown_names_fail():
    a, b = _net(0), _net(1)
    cka = CKA(a, b, "a", "b")
    cka.compare(_loader())
    m = cka.export()
    assert m["model1_layers"] == ["", "0", "1", "2", "3", "4"] and m["CKA"].shape == (6, 6)
    with pytest.raises(ValueError, match="model1_layers names layers the model does not have"):
        CKA(a, b, "a", "b", model1_layers=["nope"])


def test_plot_results_saves(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    cka = CKA(_net(0), _net(1), "a", "b", model1_layers=LAYERS, model2_layers=LAYERS)
    cka.compare(_loader())
    ax = cka.plot_results(save_path=tmp_path / "cka.png", title="t")
    assert (tmp_path / "cka.png").stat().st_size > 0 and ax.get_title() == "t"
    with pytest.raises(RuntimeError, match="compare"):
        CKA(_net(0), _net(1), "a", "b").export()


@pytest.mark.parametrize("minibatch", [False, True])
def test_one_loader_is_iterated_once_and_pairs_the_same_samples(minibatch):
    """compare(loader) and compare(loader, loader): one pass, each batch to both models. A
    shuffled loader then still pairs every sample with itself: a model against a copy of
    itself is 1 on the diagonal (torch_cka iterates the loader twice: two shuffles)."""
    x = torch.randn(192, 8, generator=torch.Generator().manual_seed(3))
    shuffled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=48,
                                           shuffle=True)

    class Counting:
        passes = 0

        def __iter__(self):
            Counting.passes += 1
            return iter(shuffled)

    loader = Counting()
    for second in (None, loader):
        cka = CKA(_net(0), _net(0), "a", "b", model1_layers=LAYERS, model2_layers=LAYERS,
                  minibatch=minibatch)
        cka.compare(loader, second)
        np.testing.assert_allclose(np.diag(cka.export()["CKA"].numpy()), 1.0, atol=1e-6)
    assert Counting.passes == 2
