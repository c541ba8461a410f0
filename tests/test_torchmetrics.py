"""pyckafast.torchmetrics: exact CKA / CKAMap metrics, single process and DDP (gloo, 2 ranks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics", reason="torchmetrics is optional (pyckafast[torchmetrics])")

import pyckafast  # noqa: E402
from pyckafast.torchmetrics import CKA, CKAMap  # noqa: E402


def _data(n=301, seed=0):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 7)) + 50.0  # far from 0: the terms must be kept about a shift
    y = np.tanh(x - 50.0) @ g.normal(size=(7, 4)) + 0.3 * g.normal(size=(n, 4))
    z = g.normal(size=(n, 3))
    return x, y, z


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_over_batches_is_the_one_shot_value(debiased):
    x, y, _ = _data()
    metric = CKA(debiased=debiased)
    for a, b in zip(np.array_split(x, 7), np.array_split(y, 7)):
        metric.update(torch.from_numpy(a), torch.from_numpy(b))
    got = metric.compute()
    assert got.dtype == torch.float64 and got.shape == ()
    assert abs(float(got) - pyckafast.linear_cka(x, y, debiased=debiased)) < 1e-12


def test_forward_gives_the_batch_value_and_keeps_the_total():
    x, y, _ = _data()
    metric = CKA()
    values = [metric(torch.from_numpy(a), torch.from_numpy(b))
              for a, b in zip(np.array_split(x, 3), np.array_split(y, 3))]
    assert abs(float(values[0]) - pyckafast.linear_cka(*[np.array_split(v, 3)[0] for v in (x, y)])) < 1e-12
    assert abs(float(metric.compute()) - pyckafast.linear_cka(x, y)) < 1e-12
    metric.reset()
    with pytest.raises(ValueError, match="at least one update"):
        metric.compute()


def test_map_and_symmetric_map():
    x, y, z = _data()
    maps, sym = CKAMap(debiased=True), CKAMap()
    for a, b, c in zip(*(np.array_split(v, 4) for v in (x, y, z))):
        maps.update([torch.from_numpy(a), torch.from_numpy(b)], [torch.from_numpy(c), torch.from_numpy(a)])
        sym.update([torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)])
    np.testing.assert_allclose(maps.compute().numpy(),
                               pyckafast.cka_matrix([x, y], [z, x], debiased=True), atol=1e-12)
    np.testing.assert_allclose(sym.compute().numpy(), pyckafast.cka_matrix([x, y, z]), atol=1e-12)
    with pytest.raises(ValueError, match="same layers"):
        sym.update([torch.from_numpy(x)])


def test_merge_state_of_two_metrics_is_exact():
    x, y, _ = _data()
    a, b = CKA(), CKA()
    a.update(torch.from_numpy(x[:100]), torch.from_numpy(y[:100]))
    b.update(torch.from_numpy(x[100:]), torch.from_numpy(y[100:]))
    a.merge_state(b)
    assert abs(float(a.compute()) - pyckafast.linear_cka(x, y)) < 1e-12


def test_import_pyckafast_does_not_import_torchmetrics():
    code = "import sys, pyckafast; print('torchmetrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == "False"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    """One DDP rank: its share of the batches (rank 1 gets fewer), CKA and a map, all-ranks
    compute; a third metric is only updated on rank 0 (rank 1 saw no data)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        x, y, z = _data()
        batches = list(zip(*(np.array_split(v, 9) for v in (x, y, z))))
        mine = batches[1:3] if rank == 1 else [b for k, b in enumerate(batches) if k not in (1, 2)]
        cka, cmap, lonely = CKA(debiased=True), CKAMap(), CKA()
        # wide layers (max_state_bytes=0: every layer cached): compute() gathers the rows
        cached, cached_sym, cached_lonely = (CKAMap(debiased=True, max_state_bytes=0),
                                             CKAMap(max_state_bytes=0), CKA(max_state_bytes=0))
        for a, b, c in mine:
            ta, tb, tc = (torch.from_numpy(v) for v in (a, b, c))
            cka.update(ta, tb)
            cmap.update([ta, tb], [tc])
            cached.update([ta, tb], [tc])
            cached_sym.update([ta, tb.float(), tc])
            if rank == 0:
                lonely.update(ta, tb)
                cached_lonely.update(ta, tb)
        values = [float(cka.compute()), *cmap.compute().numpy().ravel(), float(lonely.compute()),
                  *cached.compute().numpy().ravel(), *cached_sym.compute().numpy().ravel(),
                  float(cached_lonely.compute())]
        # after compute() the rank's own samples are back: more batches may follow
        assert cached._map.cache.rows() == sum(len(a) for a, _, _ in mine)
        if rank == 0:
            np.save(out, np.array(values))
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_gloo_equals_single_process():
    import torch.multiprocessing as mp

    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pyckafast_ddp_{os.getpid()}.npy")
    mp.spawn(_rank_main, args=(2, _free_port(), out), nprocs=2, join=True)
    got = np.load(out)
    os.remove(out)
    x, y, z = _data()
    keep = np.concatenate([b for k, b in enumerate(np.array_split(np.arange(len(x)), 9))
                           if k not in (1, 2)])  # the rows of rank 0's batches
    want = [pyckafast.linear_cka(x, y, debiased=True),
            *pyckafast.cka_matrix([x, y], [z]).ravel(), pyckafast.linear_cka(x[keep], y[keep]),
            *pyckafast.cka_matrix([x, y], [z], debiased=True).ravel(),
            *pyckafast.cka_matrix([x, y.astype(np.float32), z]).ravel(),
            pyckafast.linear_cka(x[keep], y[keep])]
    float32 = np.zeros(len(want), bool)
    float32[-10:-1] = True  # the map with a float32 layer: float32 GEMMs, float32 rounding
    np.testing.assert_allclose(got[~float32], np.array(want)[~float32], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[float32], np.array(want)[float32], rtol=0, atol=1e-6)


def test_without_torchmetrics_the_error_names_the_extra():
    code = ("import sys; sys.modules['torchmetrics'] = None\n"
            "try:\n    import pyckafast.torchmetrics\n"
            "except ModuleNotFoundError as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "MissingDependency" in out.stdout and 'pyckafast[torchmetrics]' in out.stdout


# ---- one CKAMapState per rank ------------------------------------------------------------------
def _layers(n=257, seed=1):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 12)) + 30.0
    return [x, np.tanh(x - 30.0) @ g.normal(size=(12, 5)), g.normal(size=(n, 3)) - 7.0, x[:, :2] ** 2]


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_map_equals_the_map_state_fed_the_same_batches(debiased, symmetric):
    layers = _layers()
    xs, ys = (layers, None) if symmetric else (layers[:2], layers[2:])
    metric, state = CKAMap(debiased=debiased), pyckafast.CKAMapState(debiased=debiased)
    for rows in np.array_split(np.arange(len(layers[0])), 5):
        bx = [a[rows] for a in xs]
        by = None if ys is None else [a[rows] for a in ys]
        metric.update([torch.from_numpy(a) for a in bx],
                      None if by is None else [torch.from_numpy(a) for a in by])
        state.update(bx, by)
    np.testing.assert_allclose(metric.compute().numpy(), state.result(debiased=debiased),
                               rtol=0, atol=1e-12)
    assert metric._map.route == "stream" and metric._map.state.n == len(layers[0])


def test_update_does_not_serialise_the_state():
    """The synced record is encoded when torchmetrics reads it, not once per update."""
    import pyckafast.torchmetrics as tm

    calls = []
    original = tm._encode
    try:
        tm._encode = lambda arrays: calls.append(1) or original(arrays)
        metric = CKAMap()
        for a in np.array_split(_layers()[0], 6):
            metric.update([torch.from_numpy(a), torch.from_numpy(a ** 2)])
        assert calls == []
        metric.metric_state
        metric.metric_state
        assert calls == [1]
    finally:
        tm._encode = original


def test_the_record_round_trips_through_the_synced_state():
    """Writing ``terms`` (what torchmetrics' sync does with the gathered records) merges them."""
    layers = _layers()
    a, b, whole = CKAMap(debiased=True), CKAMap(debiased=True), CKAMap(debiased=True)
    a.update([torch.from_numpy(v[:100]) for v in layers])
    b.update([torch.from_numpy(v[100:]) for v in layers])
    whole.update([torch.from_numpy(v) for v in layers])
    gathered = CKAMap(debiased=True)
    gathered.terms = torch.cat([a.terms[0], b.terms[0]])  # as dim_zero_cat of two ranks
    np.testing.assert_allclose(gathered.compute().numpy(), whole.compute().numpy(), rtol=0,
                               atol=1e-12)
    with pytest.raises(ValueError, match="not a CKAMap record"):
        gathered.terms = [torch.ones(5, dtype=torch.float64)]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_tensors_give_the_float32_upcast_value(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(200, 6, generator=g) + 3).to(getattr(torch, dtype))
    y = torch.tanh(x.float() @ torch.randn(6, 4, generator=g)).to(getattr(torch, dtype))
    wide = CKA(max_state_bytes=0)  # the cached route takes them too
    for metric in (CKA(), wide):
        for a, b in zip(x.split(50), y.split(50)):
            metric.update(a, b)
    want = pyckafast.linear_cka(x.float().numpy(), y.float().numpy())
    assert abs(float(CKA().forward(x, y)) - want) < 1e-6  # float32 data: float32 rounding
    for metric in (CKA(), wide):
        metric.update(x, y)
        assert abs(float(metric.compute()) - want) < 1e-6
    maps = CKAMap()
    maps.update([x, y])
    np.testing.assert_allclose(maps.compute().numpy(),
                               pyckafast.cka_matrix([x.float().numpy(), y.float().numpy()]),
                               atol=1e-6)


# ---- wide layers: the activation cache ---------------------------------------------------------
def _wide_and_streamed(layers, ys=None, **kw):
    """The same batches into a metric that streams every layer and one that caches them all."""
    out = []
    for budget in (2**30, 0):
        metric = CKAMap(max_state_bytes=budget, **kw)
        for rows in np.array_split(np.arange(len(layers[0])), 4):
            metric.update([torch.from_numpy(a[rows]) for a in layers],
                          None if ys is None else [torch.from_numpy(a[rows]) for a in ys])
        out.append(metric)
    return out


@pytest.mark.parametrize("debiased", [False, True])
def test_cached_layers_give_the_streamed_map(debiased):
    layers = _layers()
    streamed, cached = _wide_and_streamed(layers, debiased=debiased)
    assert streamed._map.route == "stream" and cached._map.route == "cache"
    assert cached._map.state is None  # no p x p state at all
    np.testing.assert_allclose(cached.compute().numpy(), streamed.compute().numpy(), rtol=0,
                               atol=1e-12)
    streamed, cached = _wide_and_streamed(layers[:2], layers[2:], debiased=debiased)
    np.testing.assert_allclose(cached.compute().numpy(),
                               pyckafast.cka_matrix(layers[:2], layers[2:], debiased=debiased),
                               rtol=0, atol=1e-12)
    # more batches after a compute(): the cache stays open
    more = _layers(n=40, seed=5)
    cached.update([torch.from_numpy(a) for a in more[:2]], [torch.from_numpy(a) for a in more[2:]])
    both = [np.concatenate([a, b]) for a, b in zip(layers, more)]
    np.testing.assert_allclose(cached.compute().numpy(),
                               pyckafast.cka_matrix(both[:2], both[2:], debiased=debiased),
                               rtol=0, atol=1e-12)


def test_only_the_wide_layer_of_a_cross_map_is_cached():
    """plan_map's per-layer routing: the narrow layers' entries still stream."""
    layers = _layers()
    wide = np.random.default_rng(3).normal(size=(len(layers[0]), 300))
    metric = CKAMap(debiased=True, max_state_bytes=200_000)  # 8 * 300^2 alone is 720 kB
    for rows in np.array_split(np.arange(len(wide)), 3):
        metric.update([torch.from_numpy(wide[rows]), torch.from_numpy(layers[0][rows])],
                      [torch.from_numpy(a[rows]) for a in layers[1:]])
    plan = metric._map.plan
    assert metric._map.route == "mixed" and plan.cached and ("a", "1") not in plan.large
    np.testing.assert_allclose(metric.compute().numpy(),
                               pyckafast.cka_matrix([wide, layers[0]], layers[1:], debiased=True),
                               rtol=0, atol=1e-12)


def test_cached_layers_through_forward_merge_pickle_and_reset():
    import copy
    import pickle

    layers = _layers()
    halves = [np.array_split(a, 2) for a in layers]
    a, b = CKAMap(max_state_bytes=0), CKAMap(max_state_bytes=0)
    first = a([torch.from_numpy(h[0]) for h in halves])  # forward: the batch's value
    np.testing.assert_allclose(first.numpy(), pyckafast.cka_matrix([h[0] for h in halves]),
                               atol=1e-12)
    b.update([torch.from_numpy(h[1]) for h in halves])
    with pytest.raises(ValueError, match="needs the metric itself"):
        a.merge_state(b.metric_state)
    a.merge_state(b)
    want = pyckafast.cka_matrix(layers)
    np.testing.assert_allclose(a.compute().numpy(), want, atol=1e-12)
    for other in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a), a.clone()):
        assert other._map.cache.directory != a._map.cache.directory
        np.testing.assert_allclose(other.compute().numpy(), want, atol=1e-12)
    directory = a._map.cache.directory
    a.reset()
    assert not os.path.exists(directory)


def test_torchmetrics_harness_checks():
    """What torchmetrics' MetricTester asserts of every metric: scriptable, picklable after
    updates, clone, an empty state_dict, hashable."""
    import pickle

    metric = CKAMap(debiased=True)
    torch.jit.script(metric)
    x, y, z = (torch.from_numpy(v) for v in _data())
    metric.update([x, y], [z])
    assert dict(metric.state_dict()) == {}
    again = pickle.loads(pickle.dumps(metric))
    np.testing.assert_allclose(again.compute().numpy(), metric.compute().numpy(), atol=0)
    hash(metric)
    torch.jit.script(CKA())


def test_bad_batches_change_nothing_on_either_route():
    for budget in (2**30, 0):
        metric = CKAMap(max_state_bytes=budget)
        x, y, _ = (torch.from_numpy(v) for v in _data())
        metric.update([x, y])
        before = metric.compute().numpy()
        bad = y.clone()
        bad[3, 1] = float("nan")
        with pytest.raises(ValueError, match="finite"):
            metric.update([x, bad])
        with pytest.raises(ValueError, match="same layers"):
            metric.update([x, y[:, :2]])
        np.testing.assert_array_equal(metric.compute().numpy(), before)


# ---- conv-sized layers: bounded memory (VmHWM of a child process) ------------------------------
_CONV_CHILD = r'''
import sys
import numpy as np
import torch
from pyckafast.torchmetrics import CKAMap

widths, n, batch = [16384, 24576, 16384, 20000, 25000], 1024, 128


def batch_of(k):  # float32 conv-like outputs, each batch from its own seed
    g = np.random.default_rng(k)
    base = g.standard_normal((batch, 64), dtype=np.float32)
    return [np.tanh(base @ g.standard_normal((64, p), dtype=np.float32) / 8
                    + g.standard_normal((1, p), dtype=np.float32)) for p in widths]


if sys.argv[1] == "metric":
    metric = CKAMap(debiased=True)
    for k in range(n // batch):
        metric.update([torch.from_numpy(a) for a in batch_of(k)])
    out = metric.compute().numpy()
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    np.savez(sys.argv[2], map=out, hwm_kb=hwm, route=metric._map.route)
else:
    import pyckafast
    layers = [np.concatenate(parts) for parts in zip(*(batch_of(k) for k in range(n // batch)))]
    np.save(sys.argv[2], pyckafast.cka_matrix(layers, debiased=True))
'''


def _child(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=900,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.mark.slow
def test_map_of_five_conv_outputs_fits_in_2_5_gb(tmp_path):
    """Five 16k-25k-feature float32 layers (n = 1,024): a p x p state would need 8 sum p^2 =
    17 GB; the layers go to the disk cache, peak memory < 2.5 GB, the exact map."""
    _child(_CONV_CHILD, "metric", str(tmp_path / "metric.npz"))
    _child(_CONV_CHILD, "reference", str(tmp_path / "reference.npy"))
    got = np.load(tmp_path / "metric.npz")
    assert str(got["route"]) == "cache"
    assert int(got["hwm_kb"]) * 1024 < 2.5e9, f"peak {int(got['hwm_kb']) / 2**20:.2f} GiB"
    np.testing.assert_allclose(got["map"], np.load(tmp_path / "reference.npy"), rtol=0, atol=1e-9)
