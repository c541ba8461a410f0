"""compare_models (issues 11 and 13): the stream / cache routes, layer selection, per-layer
options, wrappers, loaders, errors, progress and the per-layer report."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyckafast  # noqa: E402
from pyckafast.torch import compare_models, layer_output  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)


class ConvNet(torch.nn.Module):
    """Wide conv maps (p = 4 * 6 * 6 = 144) beside narrow pooled features."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.layer1 = Block(4)
        self.layer2 = Block(4)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(70, 2, 6, 6, generator=g)
    return x, [x[i:i + 24] for i in range(0, 70, 24)]  # batches of 24, 24, 22


def _acts(model, x, names, key=None, sample_dim=0):
    mods = dict(model.named_modules())
    out = {}
    hooks = [mods[n].register_forward_hook(
        lambda m, a, o, n=n: out.__setitem__(n, layer_output(o, key).detach().clone()))
        for n in names]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return [out[n].movedim(sample_dim, 0).reshape(out[n].shape[sample_dim], -1).double().numpy()
            for n in names]


LAYERS = ["stem", "layer1.conv1", "layer1", "layer2", "pool", "fc"]


@pytest.mark.parametrize("debiased", [False, True])
def test_cache_route_equals_cka_matrix(images, debiased, tmp_path):
    x, batches = images
    a, b = ConvNet(1), ConvNet(2)
    m, na, nb, rep = compare_models(a, b, batches, LAYERS, debiased=debiased, max_state_bytes=1,
                                    cache_dir=tmp_path, report=True)
    want = pyckafast.cka_matrix(_acts(a, x, LAYERS), _acts(b, x, LAYERS), debiased=debiased)
    np.testing.assert_allclose(m, want, atol=1e-6)
    assert (na, nb) == (LAYERS, LAYERS)
    assert {r["path"] for r in rep} == {"cache"} and [r["p"] for r in rep[:6]] == [144] * 4 + [4, 3]
    assert rep[0]["cache_bytes"] == rep[0]["bytes"] == 70 * 144 * 4
    assert os.listdir(tmp_path) == []  # the cache directory is removed


def test_same_model_symmetric_cache_route(images):
    x, batches = images
    net = ConvNet(3)
    m, _, _ = compare_models(net, net, batches, LAYERS, max_state_bytes=1)
    np.testing.assert_allclose(m, pyckafast.cka_matrix(_acts(net, x, LAYERS)), atol=1e-6)
    np.testing.assert_array_equal(m, m.T)


def test_keep_cache_leaves_files_and_manifest(images, tmp_path):
    import json

    x, batches = images
    net = ConvNet(4)
    _, _, _, rep = compare_models(net, net, batches, ["stem", "fc"], max_state_bytes=1,
                                  cache_dir=tmp_path, keep_cache=True, report=True)
    (directory,) = os.listdir(tmp_path)
    manifest = json.load(open(tmp_path / directory / "manifest.json"))
    assert [(e["layer"], e["shape"], e["dtype"]) for e in manifest] == [
        ("stem", [70, 144], "float32"), ("fc", [70, 3], "float32")]
    rows = np.fromfile(rep[0]["file"], dtype=np.float32).reshape(70, 144)
    np.testing.assert_array_equal(rows, _acts(net, x, ["stem"])[0].astype(np.float32))


def test_layer_selection_by_class_and_glob(images):
    _, batches = images
    net = ConvNet(5)
    _, na, nb = compare_models(net, net, batches[:1], [torch.nn.Conv2d], ["layer*.conv1", "fc"],
                               max_state_bytes=1)
    assert na == ["stem", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2"]
    assert nb == ["layer1.conv1", "layer2.conv1", "fc"]
    with pytest.raises(ValueError, match="no layers matching the pattern 'nope\\*'"):
        compare_models(net, net, batches, ["nope*"])
    with pytest.raises(ValueError, match="no layers of type LSTM"):
        compare_models(net, net, batches, [torch.nn.LSTM])
    with pytest.raises(TypeError, match="names, glob patterns or torch.nn.Module classes"):
        compare_models(net, net, batches, [3])


def test_data_parallel_is_unwrapped(images):
    x, batches = images
    net = ConvNet(6)
    wrapped = torch.nn.DataParallel(net)
    m, na, _ = compare_models(wrapped, ConvNet(7), batches, ["module.stem", "fc"],
                              max_state_bytes=1)
    assert na == ["stem", "fc"]
    want = pyckafast.cka_matrix(_acts(net, x, ["stem", "fc"]), _acts(ConvNet(7), x, ["stem", "fc"]))
    np.testing.assert_allclose(m, want, atol=1e-6)
    assert not any(mod._forward_hooks for mod in wrapped.modules())


class Twice(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(5, 5)
        self.act = torch.nn.Tanh()

    def forward(self, x):
        return self.act(self.lin(self.act(x)))


def test_module_called_twice_is_an_error_naming_it():
    net = Twice()
    with pytest.raises(RuntimeError, match="layer 'act' of model_a ran more than once"):
        compare_models(net, net, [torch.randn(8, 5)], ["lin", "act"], max_state_bytes=1)
    assert not net.act._forward_hooks


def test_empty_loader_is_a_clear_error():
    net = Twice()
    with pytest.raises(ValueError, match="loader yielded no batches"):
        compare_models(net, net, [], ["lin"])
    with pytest.raises(ValueError, match="loader yielded no batches"):
        compare_models(net, net, iter([]), ["lin"])


class SeqFirst(torch.nn.Module):
    """(seq, batch, features) outputs, as torch's sequence-first transformer layers give."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = torch.nn.Linear(3, 4)
        self.mix = torch.nn.Linear(4, 2)

    def forward(self, x):  # x: (batch, seq, 3)
        return self.mix(torch.tanh(self.proj(x.transpose(0, 1))))


def test_sample_dim_for_sequence_first_outputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, 3, generator=g)
    batches = [x[i:i + 16] for i in range(0, 40, 16)]
    a, b = SeqFirst(1), SeqFirst(2)
    with pytest.raises(ValueError, match="gave 32 features per sample in this batch and 64 in "
                                         "the first.*sample_dim \\(here 0\\)"):
        compare_models(a, b, batches, ["proj", "mix"], max_state_bytes=1)
    with pytest.raises(ValueError, match="layer 'mix' of model_a gave 5 samples in this batch "
                                         "where layer 'proj' of model_a gave 16"):
        compare_models(a, b, batches, ["mix", "proj"], sample_dim={"proj": 1})
    m, _, _ = compare_models(a, b, batches, ["proj", "mix"], sample_dim=1, max_state_bytes=1)
    want = pyckafast.cka_matrix(_acts(a, x, ["proj", "mix"], sample_dim=1),
                                _acts(b, x, ["proj", "mix"], sample_dim=1))
    np.testing.assert_allclose(m, want, atol=1e-6)
    per_layer = compare_models(a, b, batches, ["proj", "mix"], sample_dim={"proj": 1, "mix": 1},
                               max_state_bytes=1)[0]
    np.testing.assert_array_equal(per_layer, m)
    with pytest.raises(ValueError, match="sample_dim=3 is not a dimension"):
        compare_models(a, b, batches, ["proj"], sample_dim=3)
    with pytest.raises(ValueError, match="sample_dim names layers \\['zz'\\]"):
        compare_models(a, b, batches, ["proj"], sample_dim={"zz": 1})


class TwoDicts(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.lin = torch.nn.Linear(4, 6)

    def forward(self, x):
        h = self.lin(x)
        return {"a": h[:, :3], "b": h[:, 3:] ** 2}


class Wrap(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = TwoDicts(), TwoDicts()

    def forward(self, x):
        return self.second(self.first(x)["b"].repeat(1, 2)[:, :4] + x)


def test_output_key_per_layer():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    net = Wrap()
    keys = {"first": "b", "second": "a"}
    m, _, _ = compare_models(net, net, [x[:25], x[25:]], ["first", "second"], output_key=keys,
                             max_state_bytes=1)
    ra = _acts(net, x, ["first"], key="b") + _acts(net, x, ["second"], key="a")
    assert m[0, 1] == pytest.approx(pyckafast.linear_cka(*ra), abs=1e-6)
    assert m[0, 1] != pytest.approx(compare_models(net, net, [x], ["first", "second"],
                                                   max_state_bytes=1)[0][0, 1], abs=1e-3)


def test_two_loaders_feed_one_model_each(images):
    x, batches = images
    a, b = ConvNet(8), ConvNet(9)
    one, _, _ = compare_models(a, b, batches, ["stem", "fc"], max_state_bytes=1)
    # model_b sees the same samples as (input, label) batches from its own loader
    labelled = [(t, torch.zeros(len(t))) for t in batches]
    two, _, _ = compare_models(a, b, (iter(batches), iter(labelled)), ["stem", "fc"],
                               max_state_bytes=1)
    np.testing.assert_array_equal(one, two)
    with pytest.raises(ValueError, match="different numbers of batches"):
        compare_models(a, b, (iter(batches), iter(labelled[:2])), ["fc"], max_state_bytes=1)
    with pytest.raises(ValueError, match="the same model, run once per batch: pass one loader"):
        compare_models(a, a, (iter(batches), iter(labelled)), ["fc"])
    shifted = [x[:20], x[20:44], x[44:]]
    with pytest.raises(ValueError, match="gave 20 samples in this batch where"):
        compare_models(a, b, (iter(batches), iter(shifted)), ["fc"], max_state_bytes=1)


def test_progress_reports_batches_and_the_tiled_pass(images):
    _, batches = images
    net = ConvNet(10)
    calls = []
    compare_models(net, ConvNet(11), batches, ["stem", "fc"], max_state_bytes=1,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls[:3] == [(1, 3), (2, 3), (3, 3)]
    assert len(calls) > 3 and calls[-1][0] == calls[-1][1]  # the cached pairs' pass


def test_progress_bar(images, capsys):
    pytest.importorskip("tqdm")
    _, batches = images
    net = ConvNet(12)
    compare_models(net, net, batches, ["stem", "fc"], max_state_bytes=1, progress=True)
    err = capsys.readouterr().err
    assert "compare_models: batches" in err and "tiled CKA map" in err


def test_mixed_routes_stream_small_layers_and_cache_wide_ones(images):
    """A budget that holds the narrow layers: model_a's 144-wide layer is cached with all of
    model_b's layers (they pair with it); model_a's narrow layer streams against them."""
    from pyckafast._torch.plan import state_bytes

    x, batches = images
    a, b = ConvNet(13), ConvNet(14)
    names_a, names_b = ["stem", "pool"], ["pool", "fc"]
    budget = state_bytes([4], [4, 3])
    m, _, _, rep = compare_models(a, b, batches, names_a, names_b, debiased=True,
                                  max_state_bytes=budget, report=True)
    want = pyckafast.cka_matrix(_acts(a, x, names_a), _acts(b, x, names_b), debiased=True)
    np.testing.assert_allclose(m, want, atol=1e-6)
    assert [(r["model"], r["layer"], r["path"], r["state_bytes"] > 0) for r in rep] == [
        ("model_a", "stem", "cache", False), ("model_a", "pool", "stream", True),
        ("model_b", "pool", "cache", True), ("model_b", "fc", "cache", True)]
    assert sum(r["state_bytes"] for r in rep) == budget
    assert rep[0]["cache_bytes"] == 70 * 144 * 4 and rep[3]["cache_bytes"] == 70 * 3 * 4
    # wide layers on both sides (or one model against itself): every pair is in the tiled pass
    for other, names in ((b, ["stem", "pool", "fc", "layer2"]), (a, ["stem", "pool", "fc"])):
        m, _, _, rep = compare_models(a, other, batches, names, max_state_bytes=budget,
                                      report=True)
        want = pyckafast.cka_matrix(_acts(a, x, names), _acts(other, x, names))
        np.testing.assert_allclose(m, want, atol=1e-6)
        assert {(r["path"], r["state_bytes"]) for r in rep} == {("cache", 0)}


def test_map_state_bytes_match_the_plan():
    from pyckafast._torch.plan import state_bytes

    rng = np.random.default_rng(0)
    xs, ys = [rng.normal(size=(20, p)) for p in (9, 4)], [rng.normal(size=(20, p)) for p in (5, 2)]
    assert pyckafast.CKAMapState(debiased=False).update(xs, ys).nbytes == state_bytes([9, 4], [5, 2])
    assert pyckafast.CKAMapState(debiased=False).update(xs).nbytes == state_bytes([9, 4], None)


def test_everything_streams_by_default(images):
    _, batches = images
    net = ConvNet(15)
    _, _, _, rep = compare_models(net, ConvNet(16), batches, LAYERS, report=True)
    assert {r["path"] for r in rep} == {"stream"} and {r["cache_bytes"] for r in rep} == {0}
    assert rep[0]["state_bytes"] > 8 * 144 * 144 and rep[0]["device"] == "cpu"


class Constant(torch.nn.Module):
    def forward(self, x):
        return x * 0 + 1


class Probe(torch.nn.Module):
    """A constant side output beside the path the model takes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.const, self.fc = torch.nn.Conv2d(2, 3, 3), Constant(), torch.nn.Linear(48, 4)

    def forward(self, x):
        h = self.conv(x)
        self.const(h)
        return self.fc(h.flatten(1))


def test_cached_layer_without_variance_has_a_nan_diagonal(images):
    _, batches = images
    net = Probe()
    with pytest.warns(RuntimeWarning) as record:
        m, _, _ = compare_models(net, net, batches, ["conv", "const", "fc"], max_state_bytes=1)
    assert [str(w.message) for w in record] == [
        "layer 'const' of model_a has zero variance (every sample gives the same output): its "
        "CKA entries are undefined (nan)."]
    assert np.isnan(m[1]).all() and np.isnan(m[:, 1]).all()
    assert m[0, 0] == m[2, 2] == 1.0 and m[0, 2] == m[2, 0]


def test_distributed_data_parallel_is_unwrapped(images):
    """DDP needs a process group to be built; its unwrapping only needs the type and .module."""
    x, batches = images
    net = ConvNet(17)
    ddp = torch.nn.parallel.DistributedDataParallel.__new__(torch.nn.parallel.DistributedDataParallel)
    torch.nn.Module.__init__(ddp)
    ddp.module = net
    m, na, _ = compare_models(ddp, net, batches, ["fc"])
    assert na == ["fc"] and m[0, 0] == pytest.approx(1.0)


def test_cache_removed_after_an_error_and_disk_checked(images, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    _, batches = images
    net = ConvNet(18)

    def failing():
        yield batches[0]
        raise RuntimeError("the loader broke")

    with pytest.raises(RuntimeError, match="the loader broke"):
        compare_models(net, net, failing(), ["stem"], max_state_bytes=1, cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(OSError, match="the activation cache needs about .* GiB free; pass "
                                      "cache_dir= on a larger disk"):
        compare_models(net, net, batches, ["stem"], max_state_bytes=1, cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []


def test_tile_rows_of_the_cached_pass(images):
    x, batches = images
    a, b = ConvNet(19), ConvNet(20)
    calls = []
    m, _, _ = compare_models(a, b, batches, ["stem", "fc"], max_state_bytes=1, tile=16,
                             progress=lambda done, total: calls.append((done, total)))
    # tile= sets the rows of the window of recent batches (at least a batch: 24) and of the
    # read-back chunks: after the loop the last batch (22 rows) against the 48 older rows is left,
    # read back in 3 chunks of 16 rows
    assert calls[3:] == [(1, 3), (2, 3), (3, 3)]
    want = pyckafast.cka_matrix(_acts(a, x, ["stem", "fc"]), _acts(b, x, ["stem", "fc"]))
    np.testing.assert_allclose(m, want, atol=1e-6)


@pytest.mark.parametrize("options", [{"sigma": 3.0}, {"threshold": 0.7},
                                     {"bandwidth": "sampled", "n_pairs": 500, "seed": 1}])
def test_rbf_kernel_reads_the_cache(images, options, tmp_path):
    x, batches = images
    a, b = ConvNet(21), ConvNet(22)
    names = ["stem", "fc"]
    m, _, _, rep = compare_models(a, b, batches, names, kernel="rbf", debiased=True, report=True,
                                  cache_dir=tmp_path, **options)
    ra, rb = _acts(a, x, names), _acts(b, x, names)
    for i in range(2):
        for j in range(2):
            want = pyckafast.rbf_cka(ra[i].astype(np.float32), rb[j].astype(np.float32),
                                     debiased=True, **options)
            assert m[i, j] == pytest.approx(want, abs=1e-6)
    assert {r["path"] for r in rep} == {"cache"} and {r["state_bytes"] for r in rep} == {0}
    assert os.listdir(tmp_path) == []
    same, _, _ = compare_models(a, a, batches, names, kernel="rbf", **options)
    assert same[0, 0] == same[1, 1] == 1.0 and same[0, 1] == same[1, 0]


class _FullDisk:
    """A cache file on a disk that fills up: ``write`` (or, with ``at="flush"``, the flush of
    the buffered rows) raises ENOSPC; rows that did not go out stay pending, so ``flush`` and
    ``close`` raise again (as a BufferedWriter's do), and ``close`` still closes the file."""

    def __init__(self, f, at: str, budget: int):
        self.f, self.at, self.budget, self.pending = f, at, budget, False

    def _full(self):
        import errno

        self.pending = True
        return OSError(errno.ENOSPC, "No space left on device")

    def write(self, data):
        size = memoryview(data).nbytes
        if self.at == "write" and size > self.budget:
            raise self._full()
        self.budget -= size
        self.pending = self.pending or self.at == "flush"
        return self.f.write(data)

    def flush(self):
        if self.pending:
            raise self._full()
        self.f.flush()

    def close(self):
        if self.f.closed:
            return
        self.f.close()
        if self.pending:
            raise self._full()

    def fileno(self):
        return self.f.fileno()

    @property
    def closed(self):
        return self.f.closed


@pytest.mark.parametrize("at", ["write", "flush"])
def test_full_disk_removes_the_cache(images, tmp_path, monkeypatch, at):
    """Issue 22 item 4: a write or flush that hits a full disk raises ENOSPC, and closing the
    files raises it again; the cache's files and directory are removed all the same."""
    import builtins

    import pyckafast._torch.cache as cache

    _, batches = images
    real_open = builtins.open
    monkeypatch.setattr(cache, "open", lambda path, mode="r", *a, **k: _FullDisk(
        real_open(path, mode, *a, **k), at, 24 * 144 * 4 + 1) if "w" in mode and path.endswith(
            ".raw") else real_open(path, mode, *a, **k), raising=False)
    gen = (b for b in batches)  # no len: no disk check before the first write
    with pytest.raises(OSError, match="No space left on device"):
        compare_models(ConvNet(23), ConvNet(24), gen, ["stem", "fc"], max_state_bytes=1,
                       cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []
    with pytest.raises(OSError, match="No space left on device") as error:  # kept: it says where
        compare_models(ConvNet(23), ConvNet(24), iter(batches), ["stem", "fc"],
                       max_state_bytes=1, cache_dir=tmp_path, keep_cache=True)
    (kept,) = os.listdir(tmp_path)
    assert any(str(tmp_path / kept) in note and "keep_cache=True" in note
               for note in getattr(error.value, "__notes__", [str(error.value)]))
    assert sorted(os.listdir(tmp_path / kept))[:2] == ["000-model_a-stem.raw", "001-model_a-fc.raw"]


def test_full_disk_on_a_small_tmpfs(tmp_path):
    """The same on a real full disk: a 2 MiB tmpfs (root only; skipped where mounting is not
    permitted). Every file is removed, the ENOSPC raised on closing a file with buffered rows
    included."""
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
                                 capture_output=True).returncode == 0
    except OSError:
        mounted = False
    if not mounted:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        torch.manual_seed(0)
        wide = torch.nn.Sequential(torch.nn.Linear(12, 3000)).eval()
        other = torch.nn.Sequential(torch.nn.Linear(12, 6)).eval()
        batches = (torch.randn(20, 12) for _ in range(10))  # no len: no disk check up front
        with pytest.raises(OSError) as error:
            compare_models(wide, other, batches, ["0"], ["0"], max_state_bytes=1,
                           cache_dir=small)
        assert error.value.errno == 28  # ENOSPC
        assert [(d, f) for d, _, f in os.walk(small) if f or d != str(small)] == []
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_sink_timings_split_the_comparison(images, tmp_path):
    """sink.timings(): the report's time split (forward, batch loop, tiled pass, disk), the
    tiled pass of the cached layers done as the batches arrive."""
    from pyckafast._torch.cache import ActivationCache
    from pyckafast._torch.plan import plan_map
    from pyckafast._torch.sink import LinearMapSink

    x, batches = images
    a, b = ConvNet(25), ConvNet(26)
    keys_a, keys_b = [("model_a", "stem"), ("model_a", "fc")], [("model_b", "stem")]
    acts = [dict(zip(keys_a + keys_b, [torch.from_numpy(v.astype(np.float32)) for v in
                                       _acts(a, xb, ["stem", "fc"]) + _acts(b, xb, ["stem"])]))
            for xb in batches]
    widths = {k: v.shape[1] for k, v in acts[0].items()}
    plan = plan_map(keys_a, keys_b, widths, False, 1)
    cache = ActivationCache(plan.cached, tmp_path)
    try:
        sink = LinearMapSink(plan, None, cache, True)
        for batch in acts:
            sink.add(batch, forward_seconds=0.25)
        loop = sink.timings()
        m = sink.result()
        done = sink.timings()
    finally:
        cache.close()
    assert set(done) == {"forward", "batch_loop", "tiled_pass", "disk"}
    assert done["forward"] == loop["forward"] == 0.75
    # no start given: the loop began with the first forward pass (0.25 s before its add)
    assert 0 < loop["tiled_pass"] <= done["tiled_pass"] and loop["batch_loop"] >= 0.25
    assert done["batch_loop"] == loop["batch_loop"] and done["disk"] > 0
    want = pyckafast.cka_matrix(_acts(a, x, ["stem", "fc"]), _acts(b, x, ["stem"]), debiased=True)
    np.testing.assert_allclose(m, want, atol=1e-6)
    assert os.listdir(tmp_path) == []

# Issue 20: estimator="minibatch", default layers, the report's totals and time split.

def test_minibatch_estimator_is_the_peers_formula_in_float64(images):
    from _reference import torch_cka_minibatch

    x, batches = images
    a, b = ConvNet(31).double(), ConvNet(32).double()
    batches = [t.double() for t in batches]
    m, na, nb = compare_models(a, b, batches, LAYERS, estimator="minibatch")
    want = torch_cka_minibatch([_acts(a, t, LAYERS) for t in batches],
                               [_acts(b, t, LAYERS) for t in batches])
    np.testing.assert_allclose(m, want, rtol=0, atol=1e-10)
    # one model against itself: the symmetric path gives the same map
    s, _, _ = compare_models(a, a, batches, LAYERS, estimator="minibatch", debiased=True)
    acts = [_acts(a, t, LAYERS) for t in batches]
    np.testing.assert_allclose(s, torch_cka_minibatch(acts, acts), rtol=0, atol=1e-10)


def test_minibatch_estimator_float32_equals_compat_torch_cka(images):
    from pyckafast.compat.torch_cka import CKA

    _, batches = images
    a, b = ConvNet(33), ConvNet(34)
    m, _, _, rep = compare_models(a, b, batches, LAYERS, estimator="minibatch", report=True)
    cka = CKA(a, b, "a", "b", model1_layers=LAYERS, model2_layers=LAYERS, minibatch=True)
    cka.compare([(t,) for t in batches])
    np.testing.assert_allclose(m, cka.export()["CKA"].numpy()[np.ix_(*[
        [cka.export()["model1_layers"].index(n) for n in LAYERS]] * 2)], rtol=0, atol=1e-12)
    assert {r["path"] for r in rep} == {"minibatch"} and rep["totals"]["cache_bytes"] == 0


def test_minibatch_grams_are_made_in_the_hook_before_an_inplace_op(images):
    """The minibatch route keeps each output's batch Gram, made in its hook (no copy of the
    output): a ReLU(inplace=True) after the hooked layer does not change it, and the report
    gives each layer's width."""
    from _reference import torch_cka_minibatch

    _, batches = images
    torch.manual_seed(36)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(72, 9),
                              torch.nn.ReLU(inplace=True), torch.nn.Linear(9, 5))
    layers = ["1", "3"]
    m, *_, rep = compare_models(net, net, batches, layers, estimator="minibatch", report=True)

    def outputs(t):
        with torch.no_grad():
            h = net[1](net[0](t))
            return [h.double().numpy(), net[3](torch.relu(h)).double().numpy()]

    acts = [outputs(t) for t in batches]  # the Linear's output before the ReLU overwrote it
    np.testing.assert_allclose(m, torch_cka_minibatch(acts, acts), rtol=0, atol=1e-6)
    assert [r["p"] for r in rep] == [9, 5, 9, 5]


def test_minibatch_estimator_refuses_what_it_does_not_estimate(images):
    _, batches = images
    net = ConvNet(35)
    for bad in ({"debiased": False}, {"kernel": "rbf"}):
        with pytest.raises(ValueError, match="estimator='minibatch'"):
            compare_models(net, net, batches, ["fc"], estimator="minibatch", **bad)
    with pytest.raises(ValueError, match="estimator"):
        compare_models(net, net, batches, ["fc"], estimator="mini")
    with pytest.raises(ValueError, match="at least 4 samples"):
        compare_models(net, net, [batches[0][:3]], ["fc"], estimator="minibatch")


def test_default_layers_are_torch_ckas(images):
    _, batches = images
    a, b = ConvNet(36), ConvNet(37)
    want = [n for n, _ in a.named_modules()]
    assert want[0] == "" and len(want) == 10
    m, na, nb = compare_models(a, b, batches[:2], estimator="minibatch")
    assert na == nb == want and m.shape == (10, 10)
    exact, na2, _ = compare_models(a, b, batches[:2], debiased=True)
    assert na2 == want and exact.shape == (10, 10) and not np.isnan(exact).any()
    peer = pytest.importorskip("torch_cka", reason="torch_cka (the peer) is not installed")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peer.CKA(ConvNet(36), ConvNet(37), "a", "b")
    assert theirs.model1_info["Layers"] == want


def test_report_has_totals_and_a_time_split(images, tmp_path):
    _, batches = images
    a, b = ConvNet(38), ConvNet(39)
    _, _, _, rep = compare_models(a, b, batches, LAYERS, debiased=True, max_state_bytes=1,
                                  cache_dir=tmp_path, report=True)
    assert rep["layers"] == list(rep) and len(rep) == 12  # still the list of records
    totals, times = rep["totals"], rep["time"]
    assert totals["samples"] == 70 and totals["batches"] == 3 and totals["layers"] == 12
    assert totals["cache_bytes"] == sum(r["cache_bytes"] for r in rep) > 0
    assert totals["bytes"] == sum(r["bytes"] for r in rep)
    assert totals["cached_layers"] == 12 and totals["estimator"] == "exact"
    assert set(times) == {"forward", "batch_loop", "tiled_pass", "disk"}
    assert all(v >= 0 for v in times.values()) and times["forward"] > 0
    assert times["tiled_pass"] > 0 and sum(times.values()) <= totals["seconds"] * 1.5 + 0.1

# ---- every module's own train/eval mode comes back (issue 22, item 3) -----------------------------
def _mixed_modes(kind: str):
    """A model whose submodules do not share the root's mode: a frozen BatchNorm in a training
    model, or MC dropout kept on in an eval model."""
    torch.manual_seed(0)
    if kind == "frozen batchnorm":
        net = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.BatchNorm1d(20),
                                  torch.nn.Linear(20, 5)).train()
        net[1].eval()
    else:
        net = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.Dropout(0.5),
                                  torch.nn.Linear(20, 5)).eval()
        net[1].train()
    return net


@pytest.mark.parametrize("kind", ["frozen batchnorm", "mc dropout"])
@pytest.mark.parametrize("route", ["stream", "cache", "same model", "error"])
def test_every_submodule_mode_is_restored(kind, route, tmp_path):
    net = _mixed_modes(kind)
    before = [m.training for m in net.modules()]
    other = torch.nn.Sequential(torch.nn.Linear(12, 6)).train()
    data = [torch.randn(50, 12) for _ in range(3)]
    kwargs = {"max_state_bytes": 1, "cache_dir": tmp_path} if route == "cache" else {}
    if route == "error":  # the loader fails after a batch went through the hooked model
        def failing():
            yield data[0]
            raise RuntimeError("loader failed")

        with pytest.raises(RuntimeError, match="loader failed"):
            compare_models(net, other, failing(), ["0", "2"], ["0"])
    else:
        compare_models(net, net if route == "same model" else other, data, ["0", "2"],
                       ["0"] if route != "same model" else ["0", "2"], **kwargs)
    assert [m.training for m in net.modules()] == before
    assert [m.training for m in other.modules()] == [True, True]


def test_cache_in_ram_when_it_fits_else_on_disk(images, tmp_path, monkeypatch):
    """No cache_dir: the cached rows stay in RAM when a quarter of the memory available holds
    them (no files at all), else they go to files; the map is the same."""
    import tempfile

    import pyckafast.torch as pt
    from pyckafast._torch import cache as cache_mod

    x, batches = images
    a, b = ConvNet(0), ConvNet(1)
    made = []
    for cls in (cache_mod.ActivationCache, cache_mod.MemoryCache):
        monkeypatch.setattr(pt, cls.__name__, type(cls.__name__, (cls,), {
            "__init__": lambda self, *args, _c=cls, **kw: (made.append(_c.__name__),
                                                          _c.__init__(self, *args, **kw))[1]}))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    def no_copy(self, key, rows):
        raise AssertionError("the tiled pass keeps the rows; the RAM cache is not written")

    monkeypatch.setattr(cache_mod.MemoryCache, "write", no_copy)
    in_ram, *_, ram_report = compare_models(a, b, batches, LAYERS, debiased=True,
                                            max_state_bytes=1, report=True)
    assert made == ["MemoryCache"] and not list(tmp_path.iterdir())
    monkeypatch.setattr(pt, "_available_bytes", lambda: 1000)
    on_disk, *_, disk_report = compare_models(a, b, batches, LAYERS, debiased=True,
                                              max_state_bytes=1, report=True)
    assert made == ["MemoryCache", "ActivationCache"]
    np.testing.assert_allclose(in_ram, on_disk, rtol=0, atol=1e-12)
    # In RAM the tiled pass holds the rows itself (one copy): the same bytes are reported.
    held = [layer["cache_bytes"] for layer in ram_report["layers"]]
    assert held == [layer["cache_bytes"] for layer in disk_report["layers"]] and min(held) > 0
    unknown_length = compare_models(a, b, iter(batches), LAYERS, debiased=True,
                                    max_state_bytes=1)[0]  # no len(): disk
    assert made[-1] == "ActivationCache"
    np.testing.assert_allclose(unknown_length, in_ram, rtol=0, atol=1e-12)
