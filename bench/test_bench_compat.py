"""The drop-in compat paths against the libraries they replace, same models, same loader.

* ``pyckafast.compat.pytorch_cka.compute_cka`` vs pytorch-cka 1.1.3's ``cka.compute_cka``
  (minibatch: unbiased HSIC of n_b x n_b Grams per batch, averaged);
* ``pyckafast.compat.torch_cka.CKA.compare`` (exact) and ``minibatch=True`` vs torch_cka 0.21's
  ``CKA.compare`` (per-pair n_b x n_b Grams per batch).

The peers come from the [bench] extra (``pip install "pyckafast[bench]"``); a missing peer is
skipped with its reason. Each round builds fresh model copies (torch_cka leaves its hooks on
the models it is given, so reusing them would add hooks every round). Record the load average:
on a busy machine the times are inflated for every method alike.

    pytest bench/test_bench_compat.py --benchmark-only
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest

torch = pytest.importorskip("torch")

# (name, model factory, layers, input shape): an MLP of wide-ish layers and a small CNN
N, BATCH = 4096, 256


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                               torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


def _cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(256, 10))


CASES = {"mlp": (_mlp, ["0", "2", "4", "6"], (256,)),
         "cnn": (_cnn, ["1", "3", "5", "6"], (3, 16, 16))}  # widths 2048, 1024, 256, 10


def _loader(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, *shape, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=BATCH)


def _models(factory):
    a = factory()
    torch.manual_seed(1)
    b = copy.deepcopy(a)
    for p in b.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return a, b


def _pytorch_cka(module, a, b, loader, layers):
    return module.compute_cka(a, b, loader, layers=layers, device="cpu", progress=False)[0]


def _torch_cka(cls, a, b, loader, layers, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = cls(a, b, "a", "b", model1_layers=layers, model2_layers=layers, device="cpu", **kw)
        c.compare(loader)
    return c.export()["CKA"]


def _method(name):
    if name == "pytorch-cka (peer)":
        cka = pytest.importorskip("cka", reason="pytorch-cka is not installed (pyckafast[bench])")
        return lambda a, b, l, ls: _pytorch_cka(cka, a, b, l, ls)
    if name == "compat.pytorch_cka (exact)":
        from pyckafast.compat import pytorch_cka
        return lambda a, b, l, ls: _pytorch_cka(pytorch_cka, a, b, l, ls)
    if name == "torch_cka (peer)":
        tc = pytest.importorskip("torch_cka", reason="torch_cka is not installed (pyckafast[bench])")
        return lambda a, b, l, ls: _torch_cka(tc.CKA, a, b, l, ls)
    from pyckafast.compat.torch_cka import CKA
    return lambda a, b, l, ls: _torch_cka(CKA, a, b, l, ls, minibatch="minibatch" in name)


METHODS = ["pytorch-cka (peer)", "compat.pytorch_cka (exact)", "torch_cka (peer)",
           "compat.torch_cka (exact)", "compat.torch_cka (minibatch)"]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_compat(benchmark, method, case):
    factory, layers, shape = CASES[case]
    fn = _method(method)
    loader = _loader(shape)
    a, b = _models(factory)
    benchmark.group = f"compat {case} n={N} batch={BATCH} {len(layers)}x{len(layers)} layers"
    benchmark.extra_info.update(method=method, case=case, load=os.getloadavg()[0])
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    benchmark.pedantic(fn, setup=lambda: ((copy.deepcopy(a), copy.deepcopy(b), loader, layers), {}),
                       rounds=3, iterations=1, warmup_rounds=0)
