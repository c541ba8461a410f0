"""Compare two torch models layer by layer: the exact full-dataset CKA map over a DataLoader.

Forward hooks capture the outputs of the chosen layers; each batch's activations are flattened
per sample once (one copy, on the layer's device) and go, linear kernel:

* layers whose p x p moments fit ``max_state_bytes`` into ONE streaming
  :class:`pyckafast.CKAMapState` (memory independent of the number of samples; activations on a
  GPU stay there and are reduced by the cuda backend, only float64 moments reach the host);
* wider layers (flattened convolution maps, p in the tens of thousands) to an activation cache,
  written once: in RAM when the loader's length is known and the rows take at most a quarter
  of the memory available, else on disk (``cache_dir=`` or ``keep_cache=True`` ask for files
  always); every pair involving such a layer comes from one
  tiled sample-space pass (each layer's Gram tile once per block pair; memory O(L (n + tile^2)
  + tile p), never p x p nor n x n), run while the batches arrive: each batch's tiles against
  the earlier rows, with torch on its own threads (``_torch/tiles.py``). Cached activations are
  copied to the host to be written; for a model on the GPU the tiles are computed there (CuPy)
  after the loop, the cached blocks uploaded one at a time.

The result is the exact CKA of the whole dataset, not a minibatch estimate (Nguyen et al. 2021
average per-batch HSICs, a different quantity); ``estimator="minibatch"`` gives that estimate
instead (torch_cka's and pytorch-cka's, :class:`pyckafast.minibatch.MinibatchMap`). RBF kernel: every layer goes to the cache and
one tiled pass over it gives the map (each layer's bandwidth once, its kernel tile once per
block pair). torch is optional and
imported when called.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from numbers import Integral

import numpy as np

from ._core import params
from ._core.dispatch import _available_bytes
from ._core.inputs import device_of
from ._core.optional import require
from ._core.params import Callables, Constraint, Strings, check_params, validate_params
from ._core.progress import check_progress, progress_reporter
from ._core.threads import model_loop
from ._torch.cache import ActivationCache, MemoryCache, check_disk
from ._torch.capture import Capture, layer_output
from ._torch.layers import per_layer, select_layers, unwrap
from ._torch.plan import default_budget, plan_map
from ._torch.side_by_side import SideBySide
from ._torch.sink import LinearMapSink, RBFSink, tiles_module
from .rbf import RBF_SPEC

__all__ = ["compare_models", "layer_output"]

# What ``**rbf_options`` may hold: the RBF options of rbf_cka, checked before the first batch.
_RBF_OPTIONS = {k: RBF_SPEC[k] for k in ("sigma", "threshold", "bandwidth", "tile", "n_pairs", "seed")}


class _Mappings(Constraint):
    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, Mapping)

    def __str__(self) -> str:
        return "a dict layer -> value"


class _Paths(Constraint):
    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, (str, os.PathLike))

    def __str__(self) -> str:
        return "a path"


class _Progress(Constraint):
    def is_satisfied_by(self, value: object) -> bool:
        return value is None or isinstance(value, bool) or callable(value)

    def __str__(self) -> str:
        return "None, a bool or a callable report(done, total)"


_INT = params.Interval(Integral, None, None)


@validate_params({"debiased": [params.OPTIONAL, *params.BOOLEAN], "kernel": params.KERNEL,
                  "estimator": [params.StrOptions(("exact", "minibatch"))],
                  "output_key": [params.OPTIONAL, Strings(), _Mappings()],
                  "sample_dim": [_INT, _Mappings()],
                  "inputs": [params.OPTIONAL, Callables()], "backend": params.BACKEND,
                  "max_state_bytes": params.optional_positive_int(),
                  "cache_dir": [params.OPTIONAL, _Paths()], "keep_cache": params.BOOLEAN,
                  "progress": [_Progress()], "report": params.BOOLEAN})
def compare_models(
    model_a, model_b, loader: Iterable, layers_a: Sequence | None = None,
    layers_b: Sequence | None = None, *, debiased: bool | None = None,
    estimator: str = "exact", kernel: str = "linear", device=None,
    output_key: str | Mapping | None = None, sample_dim: int | Mapping = 0,
    inputs: Callable | None = None, backend: str = "auto", max_state_bytes: int | None = None,
    cache_dir=None, keep_cache: bool = False, progress=None, report: bool = False,
    **rbf_options,
) -> tuple:
    """Exact CKA (or the minibatch estimate) between the layers of two models over ``loader``.

    Parameters
    ----------
    model_a, model_b : torch.nn.Module
        Models to compare (may be the same object: one forward pass then serves both sides).
        They are run in eval mode under ``torch.inference_mode`` (as pytorch-cka does: no
        autograd bookkeeping per operation); their training flag is restored.
        DataParallel / DistributedDataParallel wrappers are unwrapped (their ``.module`` runs).
    loader : iterable, or a tuple (loader_a, loader_b)
        Yields batches: a tensor, or a tuple/list whose first item is the input tensor, or any
        batch together with ``inputs=`` (a callable batch -> model input). A tuple of two
        loaders (each a DataLoader or another iterable that is not itself a tuple, list, dict,
        tensor or array) feeds model_a from the first and model_b from the second; they must
        yield the same samples in the same order (batch sizes are checked, contents cannot be).
    layers_a, layers_b : sequence of str or torch.nn.Module classes, optional
        Which layers: exact names (as in ``model.named_modules()``), glob patterns over names
        (``"layer*.conv1"``) or module classes (``torch.nn.Conv2d``: every such submodule), in
        the order given (a pattern's or class's matches in model order). ``layers_b`` defaults
        to ``layers_a`` (looked up in model_b). ``layers_a=None``: what torch_cka 0.21 compares
        by default, every module of each model in ``named_modules()`` order, the model itself
        ("") first (a warning above 150 modules).
    debiased : bool, optional
        Biased HSIC (Kornblith et al. 2019, the default of the exact map) or unbiased HSIC
        (Song et al. 2012). The minibatch estimate is defined with the unbiased HSIC (None or
        True).
    estimator : {"exact", "minibatch"}, default "exact"
        "exact": the CKA of the whole dataset. "minibatch": the estimate of Nguyen et al.
        (2021) that torch_cka and pytorch-cka compute (unbiased HSIC per batch, summed over the
        batches, then normalised; it depends on the batches), from each layer's b x b batch
        Gram (a torch GEMM in the activations' dtype, on their device) and one GEMM of the
        stacked Grams for all pairs; linear kernel, batches of at least 4 samples, nothing
        cached.
    kernel : {"linear", "rbf"}, default "linear"
        "linear" streams batch by batch (see ``max_state_bytes``); "rbf" caches every layer
        and runs :func:`pyckafast.cka_matrix` (``form="tiles"``) on the cache with
        ``rbf_options`` (sigma, threshold, bandwidth; with ``n_pairs``/``seed`` of a sampled
        bandwidth, :func:`pyckafast.rbf_cka` per pair).
        ``tile=`` (rows per block) also applies to the linear tiled pass of the cached layers.
    device : torch.device or str, optional
        Where inputs are moved (default: each model's first parameter's device).
    output_key : str or dict, optional
        For layers that return a dict: the entry to use (default: the first tensor value); a
        dict layer name -> key sets it per layer. Layers returning a tuple/list contribute their
        first tensor.
    sample_dim : int or dict, default 0
        The dimension of a layer's output that indexes samples (e.g. 1 for sequence-first
        ``(seq, batch, features)`` outputs); a dict layer name -> dim sets it per layer. The
        other dimensions are flattened into features.
    inputs : callable, optional
        ``inputs(batch)`` -> the model input, for batches that are not a tensor or a
        tuple/list whose first item is the input.
    backend : str, default "auto"
        Backend of the CKA terms (GPU activations take "cuda" when usable).
    max_state_bytes : int, optional
        Bytes the streaming state may hold (float64 p x p moments per layer, p_i p_j per pair).
        Layers are moved to the activation cache, widest first, until it fits. Default: a
        quarter of the memory available when the first batch arrives, at most 2 GiB.
    cache_dir : str or path, optional
        Where the activation cache directory is made. It needs n * p * 4 bytes per cached layer
        (float32 activations). Default: none while the cached rows fit in a quarter of the
        memory available and ``len(loader)`` is known (the cache stays in RAM), else the
        system's temporary directory.
    keep_cache : bool, default False
        Leave the cache files (raw rows, and ``manifest.json`` giving each file's layer, shape
        and dtype) in place instead of removing them.
    progress : None, bool or callable
        A tqdm bar (True) or ``progress(done, total)`` over the batches, then over the tiled
        pass of the cached layers (``total`` is None for a loader without ``len``).
    report : bool, default False
        Also return a report: the list of per-layer records (as before), which also answers
        ``report["layers"]`` (that list), ``report["totals"]`` and ``report["time"]``
        (:class:`Report`). ``"layers"``, per layer (model_a's, then model_b's), a dict
        ``model``, ``layer``, ``p``, ``path`` ("stream", "cache" or "minibatch"), ``bytes``
        (memory of the state held for it plus its cached bytes), ``state_bytes``,
        ``cache_bytes``, ``device`` (where its activations were) and ``file`` (its cache file
        when kept, else None); ``"totals"``: ``layers``, ``samples``, ``batches``,
        ``state_bytes``, ``cache_bytes``, ``bytes``, ``cached_layers``, ``seconds``, ``estimator``,
        ``side_by_side`` (True: the two models' forward passes of each batch ran side by side,
        each on half of torch's threads; see ``pyckafast._torch.side_by_side``);
        ``"time"``: seconds in ``"forward"`` (the models' forward passes, hooks included:
        with ``estimator="minibatch"`` the batch Grams are made in the hooks),
        ``"batch_loop"`` (the rest of the loop over the batches: streaming, cache writes),
        ``"tiled_pass"`` (the pass over the cached layers after the loop) and ``"disk"``
        (writing the cache, where the sink measures it; else 0).
    **rbf_options
        ``kernel="rbf"`` only: ``sigma``, ``threshold``, ``bandwidth``, ``tile``, ``n_pairs``
        and ``seed`` as in :func:`pyckafast.rbf_cka` (``tile`` also sets the block rows of the
        linear tiled pass); checked before the first batch.

    Returns
    -------
    (cka_map, names_a, names_b) or (cka_map, names_a, names_b, report)
        ``cka_map[i, j]`` = CKA(layer names_a[i] of model_a, layer names_b[j] of model_b).

    Raises
    ------
    ValueError
        No batches in ``loader``; unknown layers; layers whose outputs have different numbers
        of samples (see ``sample_dim``); two loaders of different lengths or batch sizes.
    RuntimeError
        A hooked module that runs more than once per forward pass (a reused module has no
        single output per sample).

    Examples
    --------
    >>> import torch
    >>> from pyckafast.torch import compare_models
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> data = [torch.randn(32, 4) for _ in range(3)]
    >>> m, a, b = compare_models(net, net, data, ["0", "2"])
    >>> m.shape, a
    ((2, 2), ['0', '2'])
    >>> m, a, b = compare_models(net, net, data, [torch.nn.Linear], max_state_bytes=1000)
    >>> a, bool(abs(m[0, 0] - 1) < 1e-9)
    (['0', '2'], True)
    >>> m, a, b, rep = compare_models(net, net, data, ["0", "2"], estimator="minibatch",
    ...                               report=True)
    >>> rep["totals"]["batches"], sorted(rep["time"])
    (3, ['batch_loop', 'disk', 'forward', 'tiled_pass'])
    """
    torch = require("torch", "pyckafast.torch")

    unknown = sorted(set(rbf_options) - set(_RBF_OPTIONS))
    if unknown:
        raise TypeError(f"compare_models got options {unknown} it does not take; "
                        f"kernel='rbf' takes {sorted(_RBF_OPTIONS)}.")
    check_params("compare_models", _RBF_OPTIONS, rbf_options)
    check_progress(progress)
    if estimator == "minibatch":
        if kernel != "linear" or debiased is False:
            raise ValueError("estimator='minibatch' is the linear, unbiased-HSIC estimate of "
                             "torch_cka and pytorch-cka: it takes kernel='linear' and debiased "
                             f"None or True; got kernel={kernel!r}, debiased={debiased!r}.")
        if rbf_options:
            raise TypeError(f"estimator='minibatch' takes no options {sorted(rbf_options)}.")
    debiased = bool(debiased)
    same = unwrap(model_a) is unwrap(model_b)
    model_a, model_b = unwrap(model_a), unwrap(model_b)
    names_a = _layers(model_a, layers_a, "model_a")
    names_b = _layers(model_b, layers_a if layers_b is None else layers_b, "model_b")
    every = list(dict.fromkeys([*names_a, *names_b]))
    keys = per_layer(output_key, every, "output_key"), per_layer(sample_dim, every, "sample_dim", 0)
    reduce = None  # the exact map keeps a copy of every output
    if estimator == "minibatch":  # each output's batch Gram is made in its hook: no copy
        from .minibatch import batch_gram as reduce
    run = _Run(model_a, model_b, same, names_a, names_b, keys, device, inputs, reduce)
    clock = _Clock()
    with ExitStack() as cleanup:
        if estimator == "minibatch":
            route = _MinibatchRoute(run)
        else:
            route = _Route(run, kernel, debiased, backend, max_state_bytes, cache_dir,
                           keep_cache, cleanup, rbf_options.get("tile"))
        with run.hooks(), torch.inference_mode(), model_loop(), run.pair:
            loader_a, loader_b = _loaders(loader)
            if loader_b is not None and same:
                raise ValueError("model_a and model_b are the same model, run once per batch: "
                                 "pass one loader, not a pair.")
            total = len(loader_a) if hasattr(loader_a, "__len__") else None
            with progress_reporter(progress, total, desc="compare_models: batches",
                                   unit="batch") as tick:
                for step, (batch_a, batch_b) in enumerate(_batches(loader_a, loader_b), 1):
                    with clock("forward"):
                        acts = run.forward(batch_a, batch_b)
                    with clock("batch_loop"):
                        route.add(acts, total, clock.last)
                    del acts  # the batch's outputs go before the next forward pass allocates
                    if tick is not None:
                        tick(step, total)
        with clock("tiled_pass"), torch.inference_mode():  # the sums were made in that mode
            cka = route.result(progress, rbf_options)
        out = (cka, names_a, names_b)
        return (*out, _report(route, clock, estimator)) if report else out


def _layers(model, spec, what: str) -> list[str]:
    """select_layers, or torch_cka 0.21's default (every module, the model itself first)."""
    if spec is not None:
        return select_layers(model, spec, what)
    names = [name for name, _ in model.named_modules()]
    if len(names) > 150:
        warnings.warn(f"{what} has {len(names)} modules, all compared by default (as torch_cka); "
                      "pass layers_a/layers_b (names, patterns or classes) to choose fewer.",
                      stacklevel=4)
    return names


class _Clock:
    """Wall seconds per phase of compare_models."""

    def __init__(self) -> None:
        self.seconds = {"forward": 0.0, "batch_loop": 0.0, "tiled_pass": 0.0}
        self.batches = 0
        self.last = 0.0
        self.start = time.perf_counter()

    def __call__(self, phase: str) -> "_Clock":
        self.phase = phase
        return self

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> bool:
        self.last = time.perf_counter() - self.t0
        self.seconds[self.phase] += self.last
        self.batches += self.phase == "forward"
        return False


def _report(route, clock: _Clock, estimator: str) -> dict:
    """The report: per-layer records, their totals and the time split (the sink's own split of
    the batch loop and the tiled pass, with disk time, where it gives one)."""
    layers = route.layer_report()
    times = dict(clock.seconds, disk=0.0)
    timings = getattr(getattr(route, "sink", None), "timings", None)
    if callable(timings):
        times.update({k: float(v) for k, v in timings().items() if k in times and k != "forward"})
    totals = {
        "estimator": estimator, "layers": len(layers), "batches": clock.batches,
        "samples": route.samples, "state_bytes": sum(r["state_bytes"] for r in layers),
        "cache_bytes": sum(r["cache_bytes"] for r in layers),
        "bytes": sum(r["bytes"] for r in layers),
        "cached_layers": sum(r["path"] == "cache" for r in layers),
        "side_by_side": route.run.pair.parallel,
        "seconds": time.perf_counter() - clock.start,
    }
    return Report(layers, totals, times)


class Report(list):
    """compare_models' report: the list of per-layer records, also indexed by ``"layers"``,
    ``"totals"`` and ``"time"`` (a list keeps earlier code that iterates over the records
    working).

    Examples
    --------
    >>> from pyckafast.torch import Report
    >>> rep = Report([{"layer": "fc", "bytes": 8}], {"bytes": 8}, {"forward": 0.5})
    >>> rep[0]["layer"], rep["totals"]["bytes"], rep["time"]["forward"], len(rep["layers"])
    ('fc', 8, 0.5, 1)
    """

    def __init__(self, layers: list[dict], totals: dict, time: dict) -> None:
        super().__init__(layers)
        self.totals, self.time = totals, time

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.as_dict()[key]
        return super().__getitem__(key)

    def as_dict(self) -> dict:
        """The report as ``{"layers": [...], "totals": {...}, "time": {...}}``."""
        return {"layers": list(self), "totals": self.totals, "time": self.time}


class _MinibatchRoute:
    """estimator="minibatch": each batch's Grams into one MinibatchMap (nothing cached)."""

    def __init__(self, run: _Run):
        from .minibatch import MinibatchMap

        self.run = run
        self.acc = MinibatchMap(symmetric=run.symmetric)
        self.widths: dict = {}
        self.devices: dict = {}
        self.samples = 0

    def add(self, grams: dict, total_batches: int | None, forward_seconds: float = 0.0) -> None:
        """One batch: (model, layer) -> its batch Gram, made in the capture hook."""
        if not self.widths:
            self.widths, self.devices = self.run.recorded("widths"), self.run.recorded("devices")
        rows = len(next(iter(grams.values())))
        if rows < 4:
            raise ValueError(f"estimator='minibatch' needs batches of at least 4 samples (the "
                             f"unbiased HSIC of a batch divides by b(b-3)); got a batch of {rows}.")
        ga = [grams[k] for k in self.run.keys_a]
        gb = None if self.run.symmetric else [grams[k] for k in self.run.keys_b]
        self.acc.update_grams(ga, gb)
        self.samples += rows

    def result(self, progress, rbf_options: dict) -> np.ndarray:
        if self.acc.sums.batches == 0:
            raise ValueError("loader yielded no batches: compare_models needs at least one batch "
                             "of samples (an exhausted iterator or an empty dataset?).")
        return self.acc.result()

    def layer_report(self) -> list[dict]:
        return [{"model": model, "layer": key[1], "p": self.widths[key], "path": "minibatch",
                 "bytes": 0, "state_bytes": 0, "cache_bytes": 0, "device": self.devices[key],
                 "file": None}
                for model, keys in (("model_a", self.run.keys_a), ("model_b", self.run.keys_b))
                for key in keys]


class _Run:
    """The models, their hooks and one forward pass per batch."""

    def __init__(self, model_a, model_b, same, names_a, names_b, per_layer_keys, device, inputs,
                 reduce=None):
        self.model_a, self.model_b, self.same, self.inputs = model_a, model_b, same, inputs
        self.reduce = reduce  # what the hooks keep of each output (Capture); None: a copy
        self.src_b = "model_a" if same else "model_b"
        self.keys_a = [("model_a", n) for n in names_a]
        self.keys_b = [(self.src_b, n) for n in names_b]
        self.symmetric = same and names_a == names_b
        self.output_keys, self.sample_dims = per_layer_keys
        self.device_a = device if device is not None else _model_device(model_a)
        self.device_b = device if device is not None else _model_device(model_b)
        self.captures: list[tuple[str, Capture]] = []
        # Side by side when the hooks reduce each output (the estimate's Grams): the exact
        # map's work between the passes (tile GEMMs) needs torch's whole pool.
        self.pair = SideBySide(model_a, None if same else model_b, self.device_a, self.device_b,
                               pool_between=reduce is None)

    def hooks(self) -> ExitStack:
        stack = ExitStack()
        names_a = [n for _, n in self.keys_a]
        names_b = [n for _, n in self.keys_b]
        if self.same:  # one capture: a layer on both sides is flattened once per batch
            both = list(dict.fromkeys([*names_a, *names_b]))
            self.captures = [("model_a", self._capture(self.model_a, both, "model_a"))]
        else:
            self.captures = [("model_a", self._capture(self.model_a, names_a, "model_a")),
                             ("model_b", self._capture(self.model_b, names_b, "model_b"))]
        for _, cap in self.captures:
            stack.enter_context(cap)
        return stack

    def _capture(self, model, names, what) -> Capture:
        return Capture(model, names, what, {n: self.output_keys[n] for n in names},
                       {n: self.sample_dims[n] for n in names}, self.reduce)

    def recorded(self, what: str) -> dict:
        """(model, layer) -> its output's ``what`` ("widths": features, or "devices") in the
        last forward pass."""
        return {(side, n): v for side, cap in self.captures
                for n, v in getattr(cap, what).items()}

    def forward(self, batch_a, batch_b) -> dict:
        """Run the models on one batch; (model, layer) -> flattened activations."""
        x = self._input(batch_a)
        xa = x.to(self.device_a) if hasattr(x, "to") else x
        run_b = None
        if not self.same:
            xb = x if batch_b is None else self._input(batch_b)
            run_b = partial(self.model_b, xb.to(self.device_b) if hasattr(xb, "to") else xb)
        self.pair.run(partial(self.model_a, xa), run_b)
        acts = {}
        for side, cap in self.captures:
            acts.update({(side, n): t for n, t in cap.take().items()})
        self._check_rows(acts)
        return acts

    def _input(self, batch):
        return self.inputs(batch) if self.inputs is not None else _first_item(batch)

    def _check_rows(self, acts: dict) -> None:
        (side0, first), rows = next(iter(acts)), len(next(iter(acts.values())))
        for (side, name), t in acts.items():
            if len(t) != rows:
                raise ValueError(
                    f"layer {name!r} of {side} gave {len(t)} samples in this batch where layer "
                    f"{first!r} of {side0} gave {rows}: every layer's samples must lie along "
                    f"sample_dim (here {self.sample_dims[name]}) and two loaders must yield the "
                    "same batches; pass sample_dim= (an int or a dict layer -> dim, e.g. 1 for "
                    "sequence-first outputs).")


class _Route:
    """Created empty; the first batch fixes the widths, the plan and where each layer goes."""

    def __init__(self, run: _Run, kernel, debiased, backend, max_state_bytes, cache_dir,
                 keep_cache, cleanup: ExitStack, tile=None):
        self.started = time.perf_counter()  # the batch loop's start, for the time split
        self.run, self.kernel, self.debiased, self.backend = run, kernel, debiased, backend
        self.tile = tile
        self.max_state_bytes, self.cache_dir, self.keep_cache = max_state_bytes, cache_dir, keep_cache
        self.cleanup = cleanup
        self.sink = self.plan = self.cache = None
        self.widths: dict = {}
        self.devices: dict = {}
        self.samples = 0

    def add(self, acts: dict, total_batches: int | None, forward_seconds: float = 0.0) -> None:
        if self.sink is None:
            self._start(acts, total_batches)
        self.samples += len(next(iter(acts.values())))
        for key, t in acts.items():
            if t.shape[1] != self.widths[key]:
                raise ValueError(
                    f"layer {key[1]!r} of {key[0]} gave {t.shape[1]} features per sample in this "
                    f"batch and {self.widths[key]} in the first: a flattened dimension changes "
                    f"with the batch, so its samples are not along sample_dim (here "
                    f"{self.run.sample_dims[key[1]]}); pass sample_dim= (an int or a dict layer "
                    "-> dim, e.g. 1 for sequence-first outputs).")
        self.sink.add(acts, forward_seconds)

    def _start(self, acts: dict, total_batches) -> None:
        run = self.run
        self.widths = {k: int(t.shape[1]) for k, t in acts.items()}
        self.devices = {k: str(t.device) for k, t in acts.items()}
        if self.kernel == "rbf":  # no streaming RBF: every layer to the cache
            self.plan = plan_map(run.keys_a, run.keys_b, self.widths, run.symmetric, 0)
        else:
            budget = self.max_state_bytes or default_budget(_available_bytes())
            self.plan = plan_map(run.keys_a, run.keys_b, self.widths, run.symmetric, budget)
        state = None
        if self.plan.stream_a and self.plan.stream_b:
            from .map_state import CKAMapState

            state = CKAMapState(debiased=self.debiased, backend=self.backend)
        if self.plan.cached:
            self.cache = self._cache(acts, total_batches)
            self.cleanup.push(self.cache.__exit__)  # removed on every path out, errors too
        if self.kernel == "rbf":
            self.sink = RBFSink(self.plan, self.cache, started=self.started)
            return
        on_device = any(device_of(acts[k]) == "cuda" for k in self.plan.cached)
        self.sink = LinearMapSink(self.plan, state, self.cache, self.debiased,
                                  tiles_module(self.backend, on_device) if self.cache else np,
                                  tile=self.tile, started=self.started, gather=True)

    def _cache(self, acts: dict, total_batches):
        """The activation cache: in RAM when no files are asked for (``cache_dir``,
        ``keep_cache``) and the cached rows take at most a quarter of the memory available
        (the loader's length known), else on disk (checked to fit)."""
        if not total_batches:
            return ActivationCache(self.plan.cached, self.cache_dir, self.keep_cache)
        rows = len(next(iter(acts.values()))) * total_batches
        need = sum(rows * self.widths[k] * acts[k].element_size() for k in self.plan.cached)
        if self.cache_dir is None and not self.keep_cache and need <= _available_bytes() // 4:
            return MemoryCache(self.plan.cached, rows)
        cache = ActivationCache(self.plan.cached, self.cache_dir, self.keep_cache)
        try:
            check_disk(cache.directory, need)
        except BaseException:
            cache.close()
            raise
        return cache

    def result(self, progress, rbf_options: dict) -> np.ndarray:
        if self.sink is None:
            raise ValueError("loader yielded no batches: compare_models needs at least one batch "
                             "of samples (an exhausted iterator or an empty dataset?).")
        if self.kernel == "rbf":
            return self.sink.result(debiased=self.debiased, backend=self.backend,
                                    options=rbf_options, progress=progress)
        return self.sink.result(progress=progress, tile=rbf_options.get("tile"))

    def layer_report(self) -> list[dict]:
        out = []
        for model, keys in (("model_a", self.run.keys_a), ("model_b", self.run.keys_b)):
            for key in keys:
                out.append(self._layer(model, key))
        return out

    def _layer(self, model: str, key) -> dict:
        p = self.widths[key]
        cached = key in self.plan.cached
        path = "cache" if cached else "stream"
        state_bytes = self.plan.state_share(key, self.widths)
        cache_bytes = self.sink.cached_bytes(key) if cached else 0
        kept = self.keep_cache and self.cache is not None and key in self.cache.paths
        return {"model": model, "layer": key[1], "p": p, "path": path,
                "bytes": state_bytes + cache_bytes, "state_bytes": state_bytes,
                "cache_bytes": cache_bytes, "device": self.devices[key],
                "file": self.cache.paths[key] if kept else None}


def _looks_like_batch(obj) -> bool:
    return (isinstance(obj, (tuple, list, dict, np.ndarray)) or hasattr(obj, "__dlpack__")
            or type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "shape"))


def _loaders(loader):
    """(loader_a, loader_b): a tuple of two loaders (neither looking like a batch), else
    (loader, None)."""
    if isinstance(loader, tuple) and len(loader) == 2 and not any(map(_looks_like_batch, loader)):
        return loader
    return loader, None


def _batches(loader_a, loader_b):
    """(batch_a, batch_b) pairs; batch_b is None with one loader."""
    if loader_b is None:
        for batch in loader_a:
            yield batch, None
        return
    ia, ib = iter(loader_a), iter(loader_b)
    end = object()
    while True:
        a, b = next(ia, end), next(ib, end)
        if a is end and b is end:
            return
        if a is end or b is end:
            raise ValueError("the two loaders yield different numbers of batches: loader_a "
                             f"{'ended' if a is end else 'continues'} where loader_b "
                             f"{'ended' if b is end else 'continues'}; they must yield the "
                             "same samples in the same order.")
        yield a, b


def _first_item(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _model_device(model):
    for p in model.parameters():
        return p.device
    return "cpu"
