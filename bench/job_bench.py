"""The job users run (issue 20): two random inits of a network compared layer by layer, against
the libraries pyckafast replaces, in one process, interleaved rounds, medians, load recorded.

    python bench/job_bench.py                       # MLP and ResNet, n = 4096, batch 256, 3 rounds
    python bench/job_bench.py --busy 2              # the same with two busy GEMM processes
    python bench/job_bench.py --models mlp --rounds 5 --n 8192

Models (research notes peers.md, "Models"): an MLP 3072 -> 1024 -> 512 -> 256 -> 10 (layers: the
three ReLUs and the logits) and a CIFAR-style ResNet (stem conv 3 -> 16 + BN + ReLU at 32 x 32,
one BasicBlock per stage, widths 16/32/64/128, strides 1/2/2/2; layers: stem and the 4 block
outputs, p = 16384, 16384, 8192, 4096, 2048). Generated Gaussian images. Methods:

* ``torch_cka``: torch_cka 0.21, ``CKA(m1, m2, ...).compare(loader)`` (the peer)
* ``pytorch-cka``: pytorch-cka 1.1.3, ``cka.compute_cka(m1, m2, [loader], ...)`` (the peer)
* ``compat.torch_cka mb``, ``compat.pytorch_cka mb``: pyckafast's drop-ins, ``minibatch=True``
* ``compare_models mb``: ``compare_models(..., estimator="minibatch")``
* ``compare_models exact``: ``compare_models(..., debiased=True)`` (the exact map)

Also timed: the models' forward passes over the loader alone, and inside compare_models' loop
(its report's ``time["forward"]``). Every call gets fresh copies of the models (torch_cka leaves
its hooks on them). Each call's CPU seconds (this process, all threads) are recorded beside its
wall time. Prints markdown tables; ``--json`` writes the raw rounds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's pyckafast

from pyckafast.compat import pytorch_cka as pf_pytorch_cka  # noqa: E402
from pyckafast.compat import torch_cka as pf_torch_cka  # noqa: E402
from pyckafast.torch import compare_models  # noqa: E402


# --- models -------------------------------------------------------------------------------

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(3072, 1024), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(1024, 512), nn.ReLU()
        self.fc3, self.relu3 = nn.Linear(512, 256), nn.ReLU()
        self.logits = nn.Linear(256, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.logits(self.relu3(self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout)))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    def __init__(self, blocks=(1, 1, 1, 1), widths=(16, 32, 64, 128)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        cin, stages = 16, []
        for k, (nb, w) in enumerate(zip(blocks, widths)):
            layers = []
            for i in range(nb):
                layers.append(BasicBlock(cin, w, (1 if k == 0 else 2) if i == 0 else 1))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


MODELS = {
    "mlp": (MLP, ["relu1", "relu2", "relu3", "logits"]),
    "resnet": (ResNet, ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]),
}


def make_models(kind: str):
    cls, layers = MODELS[kind]
    torch.manual_seed(0)
    a = cls().eval()
    torch.manual_seed(1)
    b = cls().eval()
    return a, b, layers


def make_loader(n: int, batch: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    data = torch.utils.data.TensorDataset(x, torch.zeros(n, dtype=torch.long))
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)


# --- methods ------------------------------------------------------------------------------

def run_torch_cka(a, b, layers, loader):
    import torch_cka

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = torch_cka.CKA(a, b, "a", "b", model1_layers=layers, model2_layers=layers,
                          device="cpu")
        _quiet_tqdm()
        c.compare(loader, loader)
    return c.export()["CKA"].double().numpy(), {}


def run_pytorch_cka(a, b, layers, loader):
    import cka

    [m] = cka.compute_cka(a, b, [loader], layers=layers, device="cpu", progress=False)
    return m.double().numpy(), {}


def run_compat_torch_cka(a, b, layers, loader):
    c = pf_torch_cka.CKA(a, b, "a", "b", model1_layers=layers, model2_layers=layers,
                         device="cpu", minibatch=True)
    c.compare(loader)
    return c.export()["CKA"].numpy(), {}


def run_compat_pytorch_cka(a, b, layers, loader):
    [m] = pf_pytorch_cka.compute_cka(a, b, [loader], layers=layers, device="cpu",
                                     progress=False, minibatch=True)
    return m.numpy(), {}


def run_compare_mb(a, b, layers, loader):
    m, _, _, rep = compare_models(a, b, loader, layers, estimator="minibatch", report=True)
    return m, dict(rep["time"])


def run_compare_exact(a, b, layers, loader):
    m, _, _, rep = compare_models(a, b, loader, layers, debiased=True, report=True)
    return m, dict(rep["time"])


def run_forward_alone(a, b, layers, loader):
    with torch.no_grad():
        for x, _ in loader:
            a(x)
            b(x)
    return None, {}


METHODS = {
    "torch_cka": run_torch_cka,
    "pytorch-cka": run_pytorch_cka,
    "compat.torch_cka mb": run_compat_torch_cka,
    "compat.pytorch_cka mb": run_compat_pytorch_cka,
    "compare_models mb": run_compare_mb,
    "compare_models exact": run_compare_exact,
    "forward alone": run_forward_alone,
}
ESTIMATES = ("compat.torch_cka mb", "compat.pytorch_cka mb", "compare_models mb")


def _quiet_tqdm():
    """torch_cka's tqdm bar on stderr would interleave with the tables."""
    import torch_cka.cka as tc

    tc.tqdm = lambda it, **kw: it


# --- load ---------------------------------------------------------------------------------

_GEMM = ("import time, numpy as np\n"
         "a = np.random.default_rng(0).normal(size=(512, 512))\n"
         "end = time.monotonic() + {seconds}\n"
         "while time.monotonic() < end:\n"
         "    a = np.tanh(a @ a) \n")


def start_busy(k: int, seconds: float = 3600.0) -> list[subprocess.Popen]:
    """``k`` processes, each a single-threaded NumPy GEMM loop (they stop by themselves too)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _GEMM.format(seconds=seconds)], env=env)
             for _ in range(k)]
    time.sleep(1.0)
    return procs


# --- driver -------------------------------------------------------------------------------

def bench(kinds, n, batch, rounds, methods, after_round=None):
    import cka  # noqa: F401  (imports outside the timings: pytorch-cka pulls in matplotlib)
    import torch_cka  # noqa: F401

    loader = make_loader(n, batch)
    rows = {}
    for kind in kinds:
        a, b, layers = make_models(kind)
        run_forward_alone(a, b, layers, loader)  # warm-up: allocator, kernels
        for r in range(rounds):
            for name in methods:
                ca, cb = copy.deepcopy(a), copy.deepcopy(b)
                load = os.getloadavg()[0]
                cpu0, t0 = _cpu_seconds(), time.perf_counter()
                value, extra = METHODS[name](ca, cb, layers, loader)
                dt, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
                rows.setdefault((kind, name), []).append(
                    {"s": dt, "cpu": cpu, "load": load, "extra": extra,
                     "value": None if value is None else np.asarray(value).tolist()})
                print(f"[{kind} round {r + 1}] {name}: {dt:.2f} s (load {load:.1f})",
                      file=sys.stderr, flush=True)
            if after_round is not None:
                after_round(rows)
    return rows


def _cpu_seconds() -> float:
    """CPU seconds of this process, all its threads (the busy processes are not counted): the
    work a method did, which the machine's jitter moves less than its wall time."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _median(rows, key):
    return statistics.median(r["s"] for r in rows[key]) if key in rows else float("nan")


def table(rows, kinds, methods) -> str:
    out = []
    for kind in kinds:
        tc, pc = _median(rows, (kind, "torch_cka")), _median(rows, (kind, "pytorch-cka"))
        ref = rows.get((kind, "torch_cka"), [{}])[0].get("value")
        out += [f"\n### {kind}\n", "| method | median s | rounds s | load (1 min) | / torch_cka "
                "| / pytorch-cka | median CPU s | max abs diff vs torch_cka |",
                "|---|---|---|---|---|---|---|---|"]
        for name in methods:
            rs = rows.get((kind, name))
            if not rs:
                continue
            med = _median(rows, (kind, name))
            diff = ""
            if ref is not None and rs[0]["value"] is not None:
                diff = f"{np.nanmax(np.abs(np.asarray(rs[0]['value']) - np.asarray(ref))):.1e}"
            secs = ", ".join(f"{r['s']:.2f}" for r in rs)
            loads = ", ".join(f"{r['load']:.1f}" for r in rs)
            cpu = statistics.median(r.get("cpu", float("nan")) for r in rs)
            out.append(f"| {name} | {med:.2f} | {secs} | {loads} | {med / tc:.2f} | "
                       f"{med / pc:.2f} | {cpu:.2f} | {diff} |")
        fwd = _median(rows, (kind, "forward alone"))
        for name in ("compare_models mb", "compare_models exact"):
            rs = rows.get((kind, name))
            if rs and rs[0]["extra"]:
                inside = statistics.median(r["extra"]["forward"] for r in rs)
                split = {k: statistics.median(r["extra"][k] for r in rs)
                         for k in ("forward", "batch_loop", "tiled_pass", "disk")}
                alone = (f" vs alone {fwd:.2f} s (**{inside / fwd:.2f}x**)" if fwd == fwd
                         else " (add the method 'forward alone' to compare)")
                out.append(f"\n{name}: forward inside the loop {inside:.2f} s{alone}; time split "
                           + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()))
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["mlp", "resnet"], choices=list(MODELS))
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--busy", type=int, default=0, help="busy GEMM processes during the run")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    start = os.getloadavg()[0]
    procs = start_busy(args.busy) if args.busy else []

    def report(rows, final=False):
        """The tables so far (after every round: a run cut short still tells something)."""
        if args.json:
            args.json.write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in rows.items()}))
        if not final:
            print(table(rows, args.models, args.methods), file=sys.stderr, flush=True)

    try:
        rows = bench(args.models, args.n, args.batch, args.rounds, args.methods, report)
    finally:
        for proc in procs:
            proc.terminate()
    print(f"## job_bench: n = {args.n}, batch {args.batch}, {args.rounds} rounds, busy "
          f"{args.busy} (GEMM processes), torch threads {torch.get_num_threads()}, cores "
          f"{len(os.sched_getaffinity(0))}, 1-min load at start {start:.1f} / end "
          f"{os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(table(rows, args.models, args.methods))
    report(rows, final=True)


if __name__ == "__main__":
    main()
