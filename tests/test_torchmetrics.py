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
        for a, b, c in mine:
            ta, tb, tc = (torch.from_numpy(v) for v in (a, b, c))
            cka.update(ta, tb)
            cmap.update([ta, tb], [tc])
            if rank == 0:
                lonely.update(ta, tb)
        values = [float(cka.compute()), *cmap.compute().numpy().ravel(), float(lonely.compute())]
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
            *pyckafast.cka_matrix([x, y], [z]).ravel(), pyckafast.linear_cka(x[keep], y[keep])]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_without_torchmetrics_the_error_names_the_extra():
    code = ("import sys; sys.modules['torchmetrics'] = None\n"
            "try:\n    import pyckafast.torchmetrics\n"
            "except ModuleNotFoundError as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "MissingDependency" in out.stdout and 'pyckafast[torchmetrics]' in out.stdout
