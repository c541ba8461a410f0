"""compare_models gathers host batches of its streamed layers into row blocks before the map
state takes them, and its state GEMMs run in torch's pool inside the model loop: neither may
change the value."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyckafast import CKAMapState  # noqa: E402
from pyckafast._core.threads import loop_torch, model_loop  # noqa: E402
from pyckafast._torch.sink import RowBlocks  # noqa: E402
from pyckafast.torch import compare_models  # noqa: E402


def _batches(rng, sizes, widths, dtype=np.float32):
    return [[(rng.normal(size=(m, p)) + 50.0).astype(dtype) for p in widths] for m in sizes]


def test_blocks_hand_over_every_row_in_order():
    rng = np.random.default_rng(0)
    batches = _batches(rng, [7, 7, 7, 3, 7], [5, 2])
    got = []
    blocks = RowBlocks(max_bytes=20 * (5 + 2) * 4)  # 20 rows a block
    for b in batches:
        blocks.add(b, lambda arrays: got.append([a.copy() for a in arrays]))
    assert blocks.flush(lambda arrays: got.append([a.copy() for a in arrays]))
    assert not blocks.flush(lambda arrays: got.append(arrays))  # nothing left
    assert [g[0].shape[0] for g in got] == [14, 17]  # a third batch of 7 did not fit
    for layer in range(2):
        np.testing.assert_array_equal(np.concatenate([g[layer] for g in got]),
                                      np.concatenate([b[layer] for b in batches]))


def test_blocks_start_again_on_a_new_dtype_and_pass_big_batches_through():
    rng = np.random.default_rng(1)
    got = []
    blocks = RowBlocks(max_bytes=40 * 4 * 4)  # 40 float32 rows of p = 4
    keep = lambda arrays: got.append((arrays[0].dtype, arrays[0].shape[0]))  # noqa: E731
    blocks.add(_batches(rng, [5], [4])[0], keep)
    blocks.add(_batches(rng, [5], [4], np.float64)[0], keep)  # flushes the float32 rows
    blocks.add(_batches(rng, [30], [4], np.float64)[0], keep)  # 20 float64 rows a block: alone
    blocks.flush(keep)
    assert got == [(np.float32, 5), (np.float64, 5), (np.float64, 30)]


def test_map_state_in_blocks_equals_batch_by_batch():
    rng = np.random.default_rng(2)
    batches = _batches(rng, [16] * 9, [6, 3], np.float64)  # float32 GEMMs round per block
    one, blocked = CKAMapState(debiased=True), CKAMapState(debiased=True)
    blocks = RowBlocks(max_bytes=48 * 9 * 8)
    for b in batches:
        one.update(b)
        blocks.add(b, blocked.update)
    blocks.flush(blocked.update)
    np.testing.assert_allclose(blocked.result(), one.result(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_state_gemms_run_in_torch_inside_the_model_loop(monkeypatch, dtype, atol):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(300, 12)) + 100).astype(dtype)
    y = (np.tanh(x[:, :5] - 100) + 0.1 * rng.normal(size=(300, 5))).astype(dtype)
    outside = CKAMapState(debiased=True).update([x], [y]).result()
    calls = []
    real = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr("pyckafast._core.threads.available_cores", lambda: 2)
    with model_loop():
        assert loop_torch() is torch
        inside = CKAMapState(debiased=True).update([x], [y]).result()
    assert calls, "the state's GEMMs did not run in torch inside the model loop"
    np.testing.assert_allclose(inside, outside, rtol=0, atol=atol)  # MKL's or OpenBLAS's GEMM
    assert loop_torch() is None


def test_compare_models_value_does_not_depend_on_the_blocks(monkeypatch):
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    net_b = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    net_a, net_b = net_a.double(), net_b.double()
    data = [torch.randn(13, 6, dtype=torch.float64) + 3 for _ in range(11)]
    layers = ["0", "1", "2"]
    gathered = compare_models(net_a, net_b, data, layers, debiased=True)[0]
    monkeypatch.setattr(RowBlocks, "_allocate", lambda self, arrays: False)  # batch by batch
    single = compare_models(net_a, net_b, data, layers, debiased=True)[0]
    np.testing.assert_allclose(gathered, single, rtol=0, atol=1e-12)
