"""The exact map against torch_cka's estimate, on the two jobs users run: one command, a table.

``compare_models(model_a, model_b, loader, layers, debiased=True)`` (pyckafast's exact,
full-dataset CKA map) against torch_cka 0.21's minibatch estimate
(``torch_cka.CKA(m1, m2, model1_layers=..., model2_layers=..., device='cpu').compare(loader)``)
on the same two random initialisations and the same loader, in interleaved rounds in one
process (each round runs every method once, on fresh copies of the models), medians::

    python bench/exact_bench.py                          # both jobs, n = 4,096, batch 256, 3 rounds
    python bench/exact_bench.py --jobs mlp --rounds 5
    python bench/exact_bench.py --pyckafast /work/main   # the same against another checkout

Jobs (generated data, 3 x 32 x 32 Gaussian images):

* ``mlp``: 3072 -> 1024 -> 512 -> 256 -> 10 with ReLUs; layers the three ReLUs and the logits.
* ``resnet``: a CIFAR ResNet (stem conv 3 -> 16 + BN + ReLU at 32 x 32, four stages of one
  BasicBlock each, widths 16/32/64/128, strides 1/2/2/2); layers the stem and the four block
  outputs (16,384, 16,384, 8,192, 4,096 and 2,048 features).

Beside each exact time: its split (``forward``: inside the models' forward calls, the capture
hooks included; ``batch_loop``: the loop's wall time; ``tiled_pass``: the Gram tile work of the
cached layers, in the loop and after it; ``disk``: the cache's writes and read-backs), from the
sink's ``timings()`` when the checkout has it, else the forward clock and the loop's end only.
The forward passes alone (no CKA at all) are timed in each round too, so "forward inside the
loop / alone" is measured. The 1-minute load average is printed with every row.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", default="mlp,resnet", help="comma-separated: mlp, resnet")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pyckafast", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   help="the checkout to import pyckafast from (default: this script's)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--skip-peer", action="store_true", help="time pyckafast only")
    p.add_argument("--threads", type=int, default=None,
                   help="torch's intra-op threads (and BLAS's: OPENBLAS/OMP_NUM_THREADS), e.g. 1 "
                        "on a machine that other jobs keep busy (default: torch's own)")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.pyckafast:
    sys.path.insert(0, os.path.abspath(ARGS.pyckafast))
if ARGS is not None and ARGS.threads:  # before numpy / torch start their pools
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PYCKAFAST_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import torch  # noqa: E402
from torch import nn  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """CIFAR ResNet, one BasicBlock per stage (``ResNet((1, 1, 1, 1))`` of the peer review)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(inplace=True))
        cin = 16
        for k, (cout, stride) in enumerate(zip((16, 32, 64, 128), (1, 2, 2, 2)), 1):
            setattr(self, f"layer{k}", nn.Sequential(BasicBlock(cin, cout, stride)))
            cin = cout
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 1024), nn.ReLU(), nn.Linear(1024, 512),
                         nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


JOBS = {
    "mlp": (mlp, ["2", "4", "6", "7"]),
    "resnet": (ResNet, ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]),
}


def models(job: str):
    make = JOBS[job][0]
    torch.manual_seed(0)
    a = make().eval()
    torch.manual_seed(1)
    return a, make().eval()


def loader(n: int, batch: int):
    g = torch.Generator().manual_seed(2024)
    x = torch.randn(n, 3, 32, 32, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)


class ForwardClock:
    """Seconds inside the models' forward calls (root pre-hook to root hook)."""

    def __init__(self, *nets):
        self.seconds, self.started = 0.0, None
        self.handles = [h for m in nets for h in (
            m.register_forward_pre_hook(self._start), m.register_forward_hook(self._stop))]

    def _start(self, *_):
        self.started = time.perf_counter()

    def _stop(self, *_):
        self.seconds += time.perf_counter() - self.started

    def remove(self):
        for h in self.handles:
            h.remove()


class SinkSpy:
    """The LinearMapSink a compare_models call made, to read its ``timings()`` (a checkout
    whose report has no time split)."""

    def __init__(self):
        import pyckafast._torch.sink as sink

        self.cls, self.sinks = sink.LinearMapSink, []
        original = self.cls.__init__

        def init(obj, *a, **k):
            original(obj, *a, **k)
            self.sinks.append(obj)

        self.original, self.cls.__init__ = original, init

    def timings(self) -> dict | None:
        sink = self.sinks[-1] if self.sinks else None
        return sink.timings() if sink is not None and hasattr(sink, "timings") else None

    def close(self):
        self.cls.__init__ = self.original


def run_exact(job: str, a, b, data) -> dict:
    from pyckafast.torch import compare_models

    layers = JOBS[job][1]
    clock, spy = ForwardClock(a, b), SinkSpy()
    ticks = []
    start = time.perf_counter()
    try:
        out = compare_models(a, b, data, layers, debiased=True, cache_dir=ARGS.cache_dir,
                             progress=lambda done, total: ticks.append(time.perf_counter()))
    finally:
        spy.close()
        clock.remove()
    wall = time.perf_counter() - start
    row = {"wall": wall, "forward_clock": clock.seconds, "cka": out[0]}
    split = spy.timings()
    if split is None:  # an older checkout: the loop ends at the len(loader)-th tick
        loop = ticks[len(data) - 1] - start if len(ticks) >= len(data) else float("nan")
        split = {"forward": clock.seconds, "batch_loop": loop, "tiled_pass": wall - loop,
                 "disk": float("nan")}
    row["split"] = split
    return row


def run_torch_cka(job: str, a, b, data) -> dict:
    from torch_cka import CKA

    layers = JOBS[job][1]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cka = CKA(a, b, model1_name="a", model2_name="b", model1_layers=layers,
                  model2_layers=layers, device="cpu")
        _quiet(lambda: cka.compare(data))
    return {"wall": time.perf_counter() - start, "cka": cka.export()["CKA"].numpy()}


def run_forward_alone(job: str, a, b, data) -> dict:
    start = time.perf_counter()
    with torch.no_grad():
        for (x,) in data:
            a(x)
            b(x)
    return {"wall": time.perf_counter() - start}


def _quiet(fn):
    """Run ``fn`` with stderr (tqdm's bar) sent to /dev/null."""
    saved = sys.stderr
    with open(os.devnull, "w") as null:
        sys.stderr = null
        try:
            return fn()
        finally:
            sys.stderr = saved


def load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    import numpy as np

    import pyckafast

    jobs = [j.strip() for j in ARGS.jobs.split(",") if j.strip()]
    methods = [("forward alone", run_forward_alone), ("exact", run_exact)]
    if not ARGS.skip_peer:
        methods.insert(1, ("torch_cka", run_torch_cka))
    results = {(j, m): [] for j in jobs for m, _ in methods}
    loads = {j: [] for j in jobs}
    for r in range(ARGS.rounds):
        for job in jobs:
            base = models(job)
            data = loader(ARGS.n, ARGS.batch)
            for name, fn in methods:
                loads[job].append(load())
                a, b = (copy.deepcopy(m) for m in base)
                cpu = time.process_time()
                results[job, name].append(fn(job, a, b, data))
                results[job, name][-1]["cpu"] = time.process_time() - cpu
                print(f"round {r + 1} {job} {name}: {results[job, name][-1]['wall']:.2f} s "
                      f"(load {loads[job][-1]:.2f})", file=sys.stderr, flush=True)
    med = statistics.median
    print(f"\npyckafast from {os.path.dirname(os.path.dirname(pyckafast.__file__))}; "
          f"n = {ARGS.n}, batch {ARGS.batch}, {ARGS.rounds} interleaved rounds, medians; "
          f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"{os.cpu_count()} cpus\n")
    print("| job | forward alone s | torch_cka s (CPU s) | exact s (CPU s) | exact / torch_cka "
          "(per round) | forward in exact s (/ alone) | batch loop s | tiled pass s | disk s | "
          "max abs(exact - torch_cka) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for job in jobs:
        alone = med(x["wall"] for x in results[job, "forward alone"])
        ex = results[job, "exact"]
        t_ex = med(x["wall"] for x in ex)
        c_ex = med(x["cpu"] for x in ex)
        split = {k: med(x["split"][k] for x in ex) for k in ("forward", "batch_loop",
                                                             "tiled_pass", "disk")}
        if ARGS.skip_peer:
            peer, ratio, diff = "-", "-", "-"
        else:
            tc = results[job, "torch_cka"]
            t_tc = med(x["wall"] for x in tc)
            rounds = [e["wall"] / p["wall"] for e, p in zip(ex, tc)]
            peer = f"{t_tc:.2f} ({med(x['cpu'] for x in tc):.1f})"
            ratio = f"**{med(rounds):.2f}** ({', '.join(f'{q:.2f}' for q in rounds)})"
            diff = f"{np.max(np.abs(ex[-1]['cka'] - tc[-1]['cka'])):.1e}"
        print(f"| {job} | {alone:.2f} | {peer} | {t_ex:.2f} ({c_ex:.1f}) | {ratio} | {split['forward']:.2f} "
              f"({split['forward'] / alone:.2f}) | {split['batch_loop']:.2f} | "
              f"{split['tiled_pass']:.2f} | {split['disk']:.2f} | {diff} | "
              f"{min(loads[job]):.1f}-{max(loads[job]):.1f} |")


if __name__ == "__main__":
    main()
