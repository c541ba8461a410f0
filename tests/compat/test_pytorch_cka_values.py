"""pyckafast.compat.pytorch_cka computes the exact full-dataset CKA (pytorch-cka's own tests,
in tests/compat/pytorch_cka/, check its API; these check its values)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyckafast  # noqa: E402
from pyckafast.compat import pytorch_cka as pc  # noqa: E402


def _net(seed: int, inplace: bool = False):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(inplace=inplace),
                               torch.nn.Linear(12, 5), torch.nn.Tanh())


def _acts(model, x, names):
    """Each named layer's output on all of x at once, by hand."""
    out, handles = {}, []
    mods = dict(model.named_modules())
    for n in names:
        handles.append(mods[n].register_forward_hook(
            lambda m, i, o, n=n: out.__setitem__(n, o.detach().clone().double().numpy())))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return [out[n] for n in names]


@pytest.mark.parametrize("debiased", [True, False])
def test_compute_cka_is_the_full_dataset_map_whatever_the_batches(debiased):
    a, b = _net(0), _net(1)
    x = torch.randn(90, 6, dtype=torch.float64)
    a.double(), b.double()
    names = ["0", "2", "3"]
    want = pyckafast.cka_matrix(_acts(a, x, names), _acts(b, x, names), debiased=debiased)
    loaders = [list(x.split(bs)) for bs in (7, 30, 90)]  # 7: last batch of 6, any size works
    got = pc.compute_cka(a, b, *loaders, layers=names, device="cpu", progress=False,
                         debiased=debiased)
    for m in got:
        assert m.dtype == torch.float64
        np.testing.assert_allclose(m.numpy(), want, rtol=0, atol=1e-12)


def test_inplace_relu_after_a_hooked_layer_does_not_change_its_features():
    a = _net(0, inplace=True).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    [m] = pc.compute_cka(a, a, [x[:20], x[20:]], layers=["0", "1"], device="cpu",
                         progress=False)
    pre = a[0](x).detach().numpy()
    post = np.maximum(pre, 0)
    want = pyckafast.linear_cka(pre, post, debiased=True)
    assert abs(float(m[0, 1]) - want) < 1e-12
    assert float(m[0, 1]) < 1 - 1e-6  # were the hook's tensor rewritten in place, it would be 1


def test_hooks_removed_and_training_mode_restored():
    a, b = _net(0), _net(1)
    a.train(), b.eval()
    pc.compute_cka(a, b, [torch.randn(8, 6)], device="cpu", progress=False)
    assert a.training and not b.training
    assert all(not m._forward_hooks for m in [*a.modules(), *b.modules()])


def test_cka_from_features_matches_unclamped_pytorch_cka_values():
    cka = pytest.importorskip("cka", reason="pytorch-cka (the peer) is not installed")
    g = torch.Generator().manual_seed(3)
    base = torch.randn(50, 8, generator=g, dtype=torch.float64)
    xs = [base @ torch.randn(8, d, generator=g, dtype=torch.float64) for d in (4, 9)]
    ys = [torch.tanh(base) + 0.1 * torch.randn(50, 8, generator=g, dtype=torch.float64)]
    got = pc.cka_from_features(xs, ys)
    theirs = cka.cka_from_features(xs, ys)  # well-conditioned, clearly positive: no clamping
    assert float(theirs.min()) > 0.05
    np.testing.assert_allclose(got.numpy(), theirs.numpy(), rtol=1e-10)


def test_hsic_matches_pytorch_cka_on_symmetric_grams():
    cka = pytest.importorskip("cka", reason="pytorch-cka (the peer) is not installed")
    g = torch.Generator().manual_seed(4)
    f = torch.randn(3, 20, 5, generator=g, dtype=torch.float64)
    grams = f @ f.transpose(1, 2) + 10.0  # a far offset: accumulated about the mean entry
    for mine, theirs in zip(pc.hsic(grams, grams[:2]), cka.hsic(grams, grams[:2])):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-9)
    np.testing.assert_allclose(pc.hsic_cross(grams, grams).numpy(),
                               cka.hsic_cross(grams, grams).numpy(), rtol=1e-9)


def test_constant_layer_is_nan_with_a_warning():
    x = torch.randn(20, 6)
    zero = torch.zeros(20, 3)
    with pytest.warns(RuntimeWarning, match="zero variance|not positive"):
        m = pc.cka_from_features([x], [zero])
    assert torch.isnan(m).all()


def test_wide_layers_are_cached_with_the_same_values(monkeypatch):
    """Layers whose moment state would pass the budget go to the disk cache (plan_map, as
    compare_models): same map."""
    from pyckafast.compat import _layermap

    routes = []

    class Recorded(_layermap.LayerMap):
        def result(self):
            routes.append(self.route)
            return super().result()

    monkeypatch.setattr(pc, "LayerMap", Recorded)
    a, b = _net(0).double(), _net(1).double()
    x = torch.randn(60, 6, dtype=torch.float64)
    loader = list(x.split(25))
    streamed = pc.compute_cka(a, b, loader, layers=["0", "2"], device="cpu", progress=False)[0]
    monkeypatch.setattr(_layermap, "STATE_BUDGET", 64)
    cached = pc.compute_cka(a, b, loader, layers=["0", "2"], device="cpu", progress=False)[0]
    np.testing.assert_allclose(cached.numpy(), streamed.numpy(), rtol=0, atol=1e-12)
    self_map = pc.compute_cka(a, a, loader, layers=["0", "2"], device="cpu", progress=False)[0]
    want = pyckafast.cka_matrix(_acts(a, x, ["0", "2"]), debiased=True)
    np.testing.assert_allclose(self_map.numpy(), want, rtol=0, atol=1e-12)
    assert routes == ["stream", "cache", "cache"]


# minibatch=True: pytorch-cka 1.1.3's own estimate.

def _batch_acts(model, loader, names):
    return [_acts(model, batch, names) for batch in loader]


def test_minibatch_is_pytorch_ckas_formula_in_float64():
    from _reference import pytorch_cka_minibatch

    a, b = _net(0).double(), _net(1).double()
    g = torch.Generator().manual_seed(0)
    loader = [torch.randn(32, 6, generator=g, dtype=torch.float64) + 2 for _ in range(5)]
    names = ["0", "1", "3"]
    [got] = pc.compute_cka(a, b, loader, layers=names, device="cpu", progress=False,
                           minibatch=True)
    want = pytorch_cka_minibatch(_batch_acts(a, loader, names), _batch_acts(b, loader, names))
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
    # one model, the same layers: the symmetric path, the same values
    [sym] = pc.compute_cka(a, a, loader, layers=names, device="cpu", progress=False,
                           minibatch=True)
    acts = _batch_acts(a, loader, names)
    np.testing.assert_allclose(sym.numpy(), pytorch_cka_minibatch(acts, acts), rtol=0, atol=1e-10)


def test_minibatch_clamps_as_pytorch_cka():
    """Its clamping to [0, 1] and its 0 for a zero denominator (a dead layer) are part of the
    estimate pytorch-cka users get back; the exact mode keeps nan and negative values."""
    from _reference import pytorch_cka_minibatch

    class Dead(torch.nn.Module):
        def forward(self, x):
            return x[:, :3] * 0.0

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), Dead()).double()
    other = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 3)).double()
    g = torch.Generator().manual_seed(1)
    loader = [torch.randn(16, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    [got] = pc.compute_cka(model, other, loader, device="cpu", progress=False, minibatch=True)
    want = pytorch_cka_minibatch(_batch_acts(model, loader, ["0", "1"]),
                                 _batch_acts(other, loader, ["0", "1"]))
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
    assert (got[1] == 0).all() and (got >= 0).all() and (got <= 1).all()


def test_minibatch_needs_batches_of_four():
    a = _net(0)
    with pytest.raises(ValueError, match="HSIC requires batch size > 3, got 3"):
        pc.compute_cka(a, a, [torch.randn(3, 6)], device="cpu", progress=False, minibatch=True)
    with pytest.raises(ValueError, match="debiased"):
        pc.CKA(a, a, device="cpu", minibatch=True, debiased=False)


def test_minibatch_equals_the_peer_to_its_float32_rounding():
    peer = pytest.importorskip("cka", reason="pytorch-cka (the peer) is not installed")
    from _reference import pytorch_cka_minibatch

    a, b = _net(4), _net(5)
    g = torch.Generator().manual_seed(2)
    loader = [torch.randn(64, 6, generator=g) + 1 for _ in range(4)]
    names = ["0", "1", "2"]
    [theirs] = peer.compute_cka(a, b, [loader], layers=names, device="cpu", progress=False)
    [mine] = pc.compute_cka(a, b, loader, layers=names, device="cpu", progress=False,
                            minibatch=True)
    ref = pytorch_cka_minibatch(_batch_acts(a, loader, names), _batch_acts(b, loader, names))
    peer_err = np.abs(theirs.double().numpy() - ref).max()
    np.testing.assert_allclose(mine.numpy(), ref, rtol=0, atol=1e-5)  # float32 Grams, shifted
    np.testing.assert_allclose(mine.numpy(), theirs.double().numpy(), rtol=0,
                               atol=max(2 * peer_err, 1e-5))



_CONV_CHILD = r'''
import sys
import numpy as np
import torch
from pyckafast.compat import pytorch_cka as pc

torch.manual_seed(0)
torch.set_num_threads(2)
net = torch.nn.Sequential(  # three conv outputs of 32 x 32 x 32 = 32,768 features
    torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 3, padding=1)).eval()
images = torch.randn(2400, 3, 32, 32, generator=torch.Generator().manual_seed(1))
loader = list(images.split(100))
if sys.argv[1] == "drop-in":
    del images
    out = pc.compute_cka(net, net, loader, layers=["0", "2", "4"], device="cpu",
                         progress=False)[0].numpy()
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    np.savez(sys.argv[2], map=out, hwm_kb=hwm)
else:
    import pyckafast
    acts = {}
    hooks = [net[int(k)].register_forward_hook(
        lambda m, i, o, k=k: acts.setdefault(k, []).append(o.flatten(1).numpy().copy()))
        for k in ("0", "2", "4")]
    with torch.no_grad():
        for b in loader:
            net(b)
    np.save(sys.argv[2], pyckafast.cka_matrix([np.concatenate(acts[k]) for k in ("0", "2", "4")],
                                              debiased=True))
'''


@pytest.mark.slow
def test_drop_in_with_three_conv_layers_stays_under_1_2_gb(tmp_path):
    """compute_cka over three 32,768-feature conv outputs, n = 2,400 (batches of 100): the
    layers stream to the disk cache (plan_map) instead of n x p in RAM; peak < 1.2 GB (VmHWM of
    a child process; the loader's 2,400 images, 118 MB, included) and the exact map."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for what, name in (("drop-in", "got.npz"), ("reference", "want.npy")):
        subprocess.run([sys.executable, "-c", _CONV_CHILD, what, str(tmp_path / name)],
                       check=True, timeout=900, env=env)
    got = np.load(tmp_path / "got.npz")
    assert int(got["hwm_kb"]) * 1024 < 1.2e9, f"peak {int(got['hwm_kb']) / 2**20:.2f} GiB"
    np.testing.assert_allclose(got["map"], np.load(tmp_path / "want.npy"), rtol=0, atol=1e-9)
