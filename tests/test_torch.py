"""pyckafast.torch.compare_models against CKA of the concatenated activations."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyckafast  # noqa: E402
from pyckafast.compat import kornblith as kb  # noqa: E402
from pyckafast.torch import compare_models, layer_output  # noqa: E402


class TupleOut(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)

    def forward(self, x):
        return (self.lin(x), "aux")


class First(torch.nn.Module):
    def forward(self, x):
        return x[0]


class DictOut(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, 3)

    def forward(self, x):
        return {"feat": self.lin(x) ** 2, "mask": torch.zeros(x.shape[0], 1)}


class DictPick(torch.nn.Module):
    def forward(self, x):
        return x["feat"]


def _mlp(seed, width=12):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, width), torch.nn.ReLU(inplace=True), TupleOut(width), First(),
        torch.nn.Tanh(), DictOut(width), DictPick(),
    )


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(301, 6, generator=g) * 3 + 1
    batches = [(x[i:i + 64], torch.zeros(len(x[i:i + 64]))) for i in range(0, 301, 64)]  # last: 45
    return x, batches


def _activations(model, x, names, output_key=None):
    mods = dict(model.named_modules())
    acts = {}
    hooks = [mods[n].register_forward_hook(
        lambda m, a, o, n=n: acts.__setitem__(n, layer_output(o, output_key).detach().clone()))
        for n in names]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return {n: acts[n].reshape(len(x), -1).double().numpy() for n in names}


LAYERS = ["0", "1", "2", "4", "5"]


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_map_equals_full_dataset_cka(data, debiased):
    x, batches = data
    a, b = _mlp(1), _mlp(2)
    m, names_a, names_b = compare_models(a, b, batches, LAYERS, ["2", "6"], debiased=debiased)
    assert (names_a, names_b, m.shape) == (LAYERS, ["2", "6"], (5, 2))
    ref_a, ref_b = _activations(a, x, LAYERS), _activations(b, x, ["2", "6"])
    for i, la in enumerate(LAYERS):
        for j, lb in enumerate(["2", "6"]):
            expect = kb.feature_space_linear_cka(ref_a[la], ref_b[lb], debiased=debiased)
            assert m[i, j] == pytest.approx(expect, abs=1e-6), (la, lb)  # float32 activations


def test_same_model_diagonal_is_one_and_inplace_relu_is_not_seen(data):
    x, batches = data
    net = _mlp(3)
    m, _, _ = compare_models(net, net, batches, ["0", "1"])
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-6)
    ref = _activations(net, x, ["0", "1"])
    # "0" is Linear followed by ReLU(inplace=True): its recorded output must be pre-ReLU.
    assert m[0, 1] == pytest.approx(kb.feature_space_linear_cka(ref["0"], ref["1"]), abs=1e-6)
    assert m[0, 1] < 0.999


def test_dict_output_key_and_conv_flatten(data):
    x, batches = data
    net = _mlp(4)
    with pytest.warns(RuntimeWarning, match="zero variance"):  # the constant "mask" entry
        m, _, _ = compare_models(net, net, batches, ["5"], ["4"], output_key="mask")
    assert np.isnan(m[0, 0])
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 2, 3))
    imgs = torch.randn(90, 2, 7, 7)
    loader = [imgs[i:i + 32] for i in range(0, 90, 32)]
    m, _, _ = compare_models(conv, conv, loader, ["0", "2"], inputs=lambda b: b)
    ref = _activations(conv, imgs, ["0", "2"])
    assert m[0, 1] == pytest.approx(pyckafast.linear_cka(ref["0"], ref["2"]), abs=1e-6)


def test_dict_output_default_and_key(data):
    x, batches = data
    net = _mlp(5)
    ref = _activations(net, x, ["5", "0"], output_key="feat")
    expect = pyckafast.linear_cka(ref["5"], ref["0"])
    for key in ("feat", None):  # default: the first tensor value, "feat"
        m, _, _ = compare_models(net, net, batches, ["5"], ["0"], output_key=key)
        assert m[0, 0] == pytest.approx(expect, abs=1e-6)


def test_training_flag_restored_and_hooks_removed(data):
    _, batches = data
    net = _mlp(6).train()
    compare_models(net, net, batches, ["0"])
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


def test_errors(data):
    _, batches = data
    net = _mlp(7)
    with pytest.raises(ValueError, match="model_b has no layers named \\['nope'\\]"):
        compare_models(net, _mlp(8), batches, ["0"], ["nope"])
    with pytest.raises(ValueError, match="The 'kernel' parameter of compare_models must be one of 'linear', 'rbf'"):
        compare_models(net, net, batches, ["0"], kernel="poly")
    with pytest.raises(KeyError, match="output_key 'zzz'"):
        compare_models(net, net, batches, ["5"], output_key="zzz")
    with pytest.raises(TypeError, match="must output a tensor"):
        layer_output("text")


def test_rbf_kernel_gathers_and_calls_rbf_cka(data):
    x, batches = data
    a, b = _mlp(1), _mlp(2)
    m, _, _ = compare_models(a, b, batches, ["0", "4"], ["6"], kernel="rbf", threshold=0.8)
    ra, rb = _activations(a, x, ["0", "4"]), _activations(b, x, ["6"])
    for i, la in enumerate(["0", "4"]):
        expect = kb.cka(kb.gram_rbf(ra[la], 0.8), kb.gram_rbf(rb["6"], 0.8))
        assert m[i, 0] == pytest.approx(expect, abs=1e-5)
