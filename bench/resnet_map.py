"""compare_models on a ResNet-18 (CIFAR, random weights) against a second initialisation, and
torch_cka 0.21 on the same models and loader.

The model is torchvision's ResNet-18 adapted to 32 x 32 inputs as in the CIFAR literature
(3 x 3 stem convolution, stride 1, no max-pool), defined here because torchvision does not
import beside torch 2.13 on this machine. Each side is run in its own process (peak RSS per
tool)::

    python bench/resnet_map.py                      # n = 10,000, batch 250 (the recorded run)
    python bench/resnet_map.py --n 1000 --batch 250 # a quick look
    python bench/resnet_map.py --worker pyckafast --n 500   # one side, JSON on stdout

Recorded per tool: wall time, peak RSS, the time inside the models' forward passes (root
module pre-/post-hooks; it includes the capture hooks' flattening copies) and, for pyckafast,
the split between the batch loop and the tiled pass of the cached layers, the bytes the
activation cache held on disk and the route of every layer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

# Eight layers per model, in forward order (torch_cka orders its map by hook firing): the first
# block's output (64 x 32 x 32 = 65,536 features) down to the logits.
LAYERS = ["layer1.0", "layer2.0", "layer3.0", "layer3", "layer4.0", "layer4", "avgpool", "fc"]


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


class ResNet18(nn.Module):
    """ResNet-18 for 32 x 32 inputs: 11.2 M parameters, like torchvision's resnet18 otherwise."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        widths, cin = (64, 128, 256, 512), 64
        for k, cout in enumerate(widths, 1):
            stride = 1 if k == 1 else 2
            setattr(self, f"layer{k}", nn.Sequential(BasicBlock(cin, cout, stride),
                                                     BasicBlock(cout, cout, 1)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def models():
    torch.manual_seed(0)
    a = ResNet18().eval()
    torch.manual_seed(1)
    return a, ResNet18().eval()


def loader(n: int, batch: int):
    g = torch.Generator().manual_seed(2024)
    x = torch.randn(n, 3, 32, 32, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)


class ForwardClock:
    """Seconds spent inside the models' forward calls (root pre-hook to root hook)."""

    def __init__(self, *nets):
        self.seconds, self.started = 0.0, None
        self.handles = [h for m in nets for h in (
            m.register_forward_pre_hook(self._start), m.register_forward_hook(self._stop))]

    def _start(self, *_):
        self.started = time.perf_counter()

    def _stop(self, *_):
        self.seconds += time.perf_counter() - self.started


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _log(*fields) -> None:
    """One progress line on stderr (the parent keeps the last one if the run is stopped)."""
    print(*fields, file=sys.stderr, flush=True)


def run_pyckafast(n: int, batch: int, cache_dir: str | None) -> dict:
    from pyckafast.torch import compare_models

    a, b = models()
    data = loader(n, batch)
    clock = ForwardClock(a, b)
    ticks = []
    start = time.perf_counter()

    def progress(done, total):
        now = time.perf_counter()
        ticks.append((now, done, total))
        what = "batches" if total == len(data) and len(ticks) <= len(data) else "tiled block pairs"
        _log(f"{what} {done}/{total} at {now - start:.1f} s, forward {clock.seconds:.1f} s")

    # debiased: the exact counterpart of torch_cka's unbiased per-batch HSIC
    cka, _, _, report = compare_models(a, b, data, LAYERS, debiased=True, report=True,
                                       cache_dir=cache_dir, progress=progress)
    wall = time.perf_counter() - start
    loop_end = ticks[len(data) - 1][0]
    return {"tool": "pyckafast", "wall_s": wall, "forward_s": clock.seconds,
            "batch_loop_s": loop_end - start, "after_loop_s": wall - (loop_end - start),
            "peak_rss_bytes": peak_rss_bytes(),
            "cache_bytes": sum(r["cache_bytes"] for r in report),
            "state_bytes": sum(r["state_bytes"] for r in report),
            "layers": [{k: r[k] for k in ("model", "layer", "p", "path", "bytes")} for r in report],
            "cka": cka.tolist()}


def run_torch_cka(n: int, batch: int) -> dict:
    from torch_cka import CKA

    a, b = models()
    data = loader(n, batch)
    clock = ForwardClock(a, b)
    start = time.perf_counter()
    cka = CKA(a, b, model1_name="resnet18_seed0", model2_name="resnet18_seed1",
              model1_layers=LAYERS, model2_layers=LAYERS)
    cka.compare(data)
    wall = time.perf_counter() - start
    return {"tool": "torch_cka 0.21 (minibatch CKA)", "wall_s": wall, "forward_s": clock.seconds,
            "peak_rss_bytes": peak_rss_bytes(), "cka": cka.export()["CKA"].tolist()}


def machine() -> dict:
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":")
            if key in ("MemTotal", "MemAvailable"):
                mem[key] = int(value.split()[0]) * 1024
    return {"cpus": os.cpu_count(), "loadavg": os.getloadavg(), **mem,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def worker(tool: str, n: int, batch: int, cache_dir: str | None) -> dict:
    out = run_pyckafast(n, batch, cache_dir) if tool == "pyckafast" else run_torch_cka(n, batch)
    return {**out, "n": n, "batch": batch}


def _watch(cmd: list[str], timeout: float, cache_dir: str) -> dict:
    """Run one tool's worker; poll its peak RSS (VmHWM) and the cache's bytes on disk, so a run
    stopped at ``timeout`` still says how far it got and what it held."""
    err_path = os.path.join(cache_dir, "worker.err")
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        started, hwm, anon, disk = time.perf_counter(), 0, 0, 0
        while proc.poll() is None and time.perf_counter() - started < timeout:
            status = _status(proc.pid)
            hwm = max(hwm, status.get("VmHWM", 0))
            anon = max(anon, status.get("RssAnon", 0))
            disk = max(disk, _tree_bytes(cache_dir))
            time.sleep(1.0)
        timed_out = proc.poll() is None
        if timed_out:
            proc.kill()
        out = proc.communicate()[0]
    with open(err_path) as f:
        lines = [x for x in f.read().replace("\r", "\n").splitlines() if x.strip()]
    watched = {"elapsed_s": time.perf_counter() - started, "watched_peak_rss_bytes": hwm,
               "watched_peak_anon_rss_bytes": anon, "watched_cache_disk_bytes": disk}
    if timed_out:
        return {"timeout_s": timeout, "progress": lines[-1:], **watched}
    if proc.returncode != 0:
        return {"failed": "\n".join(lines[-20:]), **watched}
    return {**json.loads(out.strip().splitlines()[-1]), **watched}


def _status(pid: int) -> dict:
    """Memory fields of /proc/PID/status in bytes: VmHWM (peak RSS, which counts the pages of
    the memory-mapped cache the tiled pass has read: reclaimable page cache) and RssAnon (the
    process's own memory now; polled each second for its peak)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _tree_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in (f for f in files if f != "worker.err"):
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def markdown(record: dict) -> str:
    """The README rows of a record: one line per tool, then the machine's state."""
    def gb(b):
        return f"{b / 1e9:.2f} GB" if b else "-"

    rows = ["| tool | result | wall time | in forward passes | peak RSS (of which anonymous, "
            "polled) | cache on disk |", "|---|---|---|---|---|---|"]
    for r in record["runs"]:
        rss = f"{gb(r.get('peak_rss_bytes') or r.get('watched_peak_rss_bytes'))} " \
              f"({gb(r.get('watched_peak_anon_rss_bytes'))})"
        disk = r.get("cache_bytes") or r.get("watched_cache_disk_bytes")
        if "wall_s" in r:
            share = f"{r['forward_s']:.0f} s ({100 * r['forward_s'] / r['wall_s']:.0f} %)"
            result = "complete"
            if "batch_loop_s" in r:
                result += (f": batch loop {r['batch_loop_s']:.0f} s, tiled pass of the cache "
                           f"{r['after_loop_s']:.0f} s")
            rows.append(f"| {r['tool']} | {result} | {r['wall_s']:.0f} s | {share} | {rss} "
                        f"| {gb(disk)} |")
        elif "timeout_s" in r:
            rows.append(f"| {r['tool']} | stopped at {r['timeout_s']:.0f} s; last progress: "
                        f"`{(r.get('progress') or ['none'])[-1].strip().replace('|', '/')}` | > {r['timeout_s']:.0f} s "
                        f"| - | {rss} | {gb(disk)} |")
        else:
            rows.append(f"| {r['tool']} | failed: `{r['failed'].splitlines()[-1][:150]}` | - | - "
                        f"| {rss} | {gb(disk)} |")
    states = [(k, v) for k, v in record.items() if k.startswith("machine")]
    rows.append("")
    for k, v in states:
        rows.append(f"* {k}: load average {tuple(round(x, 1) for x in v['loadavg'])}, "
                    f"{v['MemAvailable'] / 2**30:.1f} of {v['MemTotal'] / 2**30:.1f} GiB available, "
                    f"{v['cpus']} CPUs, torch {v['torch']} ({v['torch_threads']} threads)")
    if "max_abs_diff_minibatch_vs_exact" in record:
        rows.append(f"* largest |torch_cka minibatch CKA - exact debiased CKA| over the 8 x 8 map: "
                    f"{record['max_abs_diff_minibatch_vs_exact']:.3f}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--worker", choices=["pyckafast", "torch_cka"])
    ap.add_argument("--tools", default="pyckafast,torch_cka")
    ap.add_argument("--timeout", type=float, nargs="+", default=[3600.0],
                    help="seconds per tool (one value, or one per tool)")
    ap.add_argument("--until", type=float, default=None,
                    help="a time.time() by which every tool has stopped: each tool gets what is "
                         "left (the first leaves --reserve seconds to the others)")
    ap.add_argument("--reserve", type=float, default=150.0)
    ap.add_argument("--out", default=None, help="write the JSON record here")
    ap.add_argument("--markdown", default=None, help="print the README rows of a JSON record")
    args = ap.parse_args()
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.batch, args.cache_dir)))
        return
    record = {"machine_before": machine(), "runs": []}
    tools = args.tools.split(",")
    timeouts = args.timeout * len(tools) if len(args.timeout) == 1 else args.timeout
    for k, (tool, timeout) in enumerate(zip(tools, timeouts)):
        if args.until is not None:
            left = args.until - time.time() - args.reserve * (len(tools) - 1 - k)
            timeout = max(10.0, min(timeout, left))
        with tempfile.TemporaryDirectory(prefix="resnet_map-", dir=args.cache_dir) as where:
            cmd = [sys.executable, __file__, "--worker", tool, "--n", str(args.n),
                   "--batch", str(args.batch), "--cache-dir", where]
            record["runs"].append({"tool": tool, **_watch(cmd, timeout, where)})
        record[f"machine_after_{tool}"] = machine()
    ours = next((r for r in record["runs"] if r.get("tool") == "pyckafast" and "cka" in r), None)
    theirs = next((r for r in record["runs"] if "cka" in r and r is not ours), None)
    if ours and theirs:
        record["max_abs_diff_minibatch_vs_exact"] = float(
            np.nanmax(np.abs(np.array(ours["cka"]) - np.array(theirs["cka"]))))
    text = json.dumps(record, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
