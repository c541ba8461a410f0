"""Compare two torch models layer by layer: the exact full-dataset CKA map over a DataLoader.

Forward hooks capture the outputs of named layers; each batch's activations are flattened per
sample, copied once to CPU (see ``_to_numpy``) and handed without further copies to one :class:`pyckafast.LinearCKAState` per layer pair, so
the result is the exact CKA of the whole dataset, not a minibatch estimate (Nguyen et al. 2021
average per-batch HSICs, a different quantity). torch is optional and imported when called.

Memory (linear kernel): the state of a pair (a, b) holds float64 moments of size
``p_a^2 + p_b^2 + p_a p_b`` (8 bytes each), independent of the number of samples; for a map of
La x Lb layers that is the sum over pairs. Layers with p in the tens of thousands (flattened
convolution maps) make this large: pool them first (e.g. pass the pooled module's name) or use
``kernel="rbf"``. RBF kernel: every layer's activations are gathered (n x p float32 per layer,
n x n is never formed) and :func:`pyckafast.rbf_cka` runs per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ._core import params
from ._core.optional import require
from ._core.params import Callables, Strings, check_params, validate_params
from .rbf import RBF_SPEC
from .streaming import LinearCKAState

__all__ = ["compare_models", "layer_output"]

# What ``**rbf_options`` may hold: the RBF options of rbf_cka, checked before the first batch.
_RBF_OPTIONS = {k: RBF_SPEC[k] for k in ("sigma", "threshold", "bandwidth", "tile", "n_pairs", "seed")}


@validate_params({"debiased": params.BOOLEAN, "kernel": params.KERNEL,
                  "output_key": [params.OPTIONAL, Strings()],
                  "inputs": [params.OPTIONAL, Callables()], "backend": params.BACKEND})
def compare_models(
    model_a, model_b, loader: Iterable, layers_a: Sequence[str], layers_b: Sequence[str] | None = None,
    *, debiased: bool = False, kernel: str = "linear", device=None, output_key: str | None = None,
    inputs: Callable | None = None, backend: str = "auto", **rbf_options,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Exact CKA between the named layers of two models over every sample of ``loader``.

    Parameters
    ----------
    model_a, model_b : torch.nn.Module
        Models to compare (may be the same object: one forward pass then serves both sides).
        They are run in eval mode under ``torch.no_grad``; their training flag is restored.
    loader : iterable
        Yields batches: a tensor, or a tuple/list whose first item is the input tensor, or any
        batch together with ``inputs=`` (a callable batch -> model input).
    layers_a, layers_b : sequence of str
        Submodule names (as in ``model.named_modules()``); ``layers_b`` defaults to ``layers_a``.
    debiased : bool, default False
        Biased HSIC (Kornblith et al. 2019) or unbiased HSIC (Song et al. 2012).
    kernel : {"linear", "rbf"}, default "linear"
        "linear" streams batch by batch (memory independent of n); "rbf" gathers activations
        and calls :func:`pyckafast.rbf_cka` with ``rbf_options`` (sigma, threshold, bandwidth).
    device : torch.device or str, optional
        Where inputs are moved (default: the device of ``model_a``'s first parameter).
    output_key : str, optional
        For layers that return a dict: the entry to use (default: the first tensor value).
        Layers returning a tuple/list contribute their first tensor.
    backend : str, default "auto"
        CPU backend of the CKA terms.

    Returns
    -------
    (cka_map, names_a, names_b)
        ``cka_map[i, j]`` = CKA(layer names_a[i] of model_a, layer names_b[j] of model_b).

    Examples
    --------
    >>> import torch
    >>> from pyckafast.torch import compare_models
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> data = [torch.randn(32, 4) for _ in range(3)]
    >>> m, a, b = compare_models(net, net, data, ["0", "2"])
    >>> m.shape, a
    ((2, 2), ['0', '2'])
    """
    _torch = require("torch", "pyckafast.torch")

    names_a, names_b = list(layers_a), list(layers_a if layers_b is None else layers_b)
    unknown = sorted(set(rbf_options) - set(_RBF_OPTIONS))
    if unknown:
        raise TypeError(f"compare_models got options {unknown} it does not take; "
                        f"kernel='rbf' takes {sorted(_RBF_OPTIONS)}.")
    check_params("compare_models", _RBF_OPTIONS, rbf_options)
    if not names_a or not names_b:
        raise ValueError("layers_a and layers_b must name at least one layer each.")
    device = device if device is not None else _model_device(model_a)
    sink = _Sink(names_a, names_b, kernel, debiased, backend)
    with _Capture(model_a, names_a, "model_a", output_key) as cap_a, \
         _Capture(model_b, names_b, "model_b", output_key) as cap_b, _torch.no_grad():
        for batch in loader:
            x = inputs(batch) if inputs is not None else _first_item(batch)
            x = x.to(device) if hasattr(x, "to") else x
            model_a(x)
            if model_b is not model_a:
                model_b(x)
            sink.add(cap_a.take(), cap_b.take())
    return sink.result(rbf_options), names_a, names_b


def layer_output(output, output_key: str | None = None):
    """The tensor a hook records for a layer's output: itself, a tuple's first tensor, or a dict's
    ``output_key`` entry (default: its first tensor value)."""
    _torch = require("torch", "pyckafast.torch")

    if isinstance(output, _torch.Tensor):
        return output
    if isinstance(output, dict):
        if output_key is not None:
            if output_key not in output:
                raise KeyError(f"output_key {output_key!r} not in the layer's dict output {list(output)}.")
            return layer_output(output[output_key])
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, _torch.Tensor):
                return item
    raise TypeError(f"a hooked layer must output a tensor, tuple/list or dict of tensors; got {type(output).__name__}.")


def _to_numpy(t) -> np.ndarray:
    """One copy of the output, flattened per sample, viewed as numpy without a second copy.

    The copy is needed: a later in-place layer (``ReLU(inplace=True)``) would otherwise change
    the recorded output before the batch reaches the CKA states.
    """
    _torch = require("torch", "pyckafast.torch")

    t = t.detach()
    dtype = t.dtype if t.dtype in (_torch.float32, _torch.float64) else _torch.float32
    flat = t.reshape(t.shape[0], -1)
    copy = flat.to(device="cpu", dtype=dtype, copy=True, memory_format=_torch.contiguous_format)
    return copy.numpy()


class _Capture:
    """Forward hooks on named submodules that keep the latest output of each."""

    def __init__(self, model, names: list[str], what: str, output_key: str | None):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"{what} has no layers named {missing}; some of its layers: {list(modules)[1:12]}.")
        self.model, self.output_key, self.latest = model, output_key, {}
        self.modules = {n: modules[n] for n in names}
        self.handles = []

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name):
        def hook(module, args, output):
            self.latest[name] = _to_numpy(layer_output(output, self.output_key))
        return hook

    def take(self) -> dict:
        latest, self.latest = self.latest, {}
        return latest

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.model.train(self.was_training)
        return False


class _Sink:
    """Where batches of activations go: per-pair streaming states, or gathered for RBF."""

    def __init__(self, names_a, names_b, kernel, debiased, backend):
        self.names_a, self.names_b, self.kernel, self.debiased = names_a, names_b, kernel, debiased
        self.backend = backend
        self.states = {(a, b): LinearCKAState(debiased=debiased, backend=backend)
                       for a in names_a for b in names_b} if kernel == "linear" else {}
        self.gathered = ({n: [] for n in names_a}, {n: [] for n in names_b})

    def add(self, acts_a: dict, acts_b: dict) -> None:
        for side, acts, names in ((0, acts_a, self.names_a), (1, acts_b, self.names_b)):
            absent = [n for n in names if n not in acts]
            if absent:
                raise RuntimeError(f"layers {absent} produced no output in this forward pass.")
            if self.kernel == "rbf":
                for n in names:
                    self.gathered[side][n].append(np.array(acts[n]))
        for (a, b), state in self.states.items():
            state.update(acts_a[a], acts_b[b])

    def result(self, rbf_options: dict) -> np.ndarray:
        out = np.empty((len(self.names_a), len(self.names_b)))
        if self.kernel == "linear":
            for (i, a) in enumerate(self.names_a):
                for (j, b) in enumerate(self.names_b):
                    out[i, j] = self.states[(a, b)].result(debiased=self.debiased)
            return out
        from . import rbf_cka

        xa = {n: np.concatenate(v) for n, v in self.gathered[0].items()}
        xb = {n: np.concatenate(v) for n, v in self.gathered[1].items()}
        for i, a in enumerate(self.names_a):
            for j, b in enumerate(self.names_b):
                out[i, j] = rbf_cka(xa[a], xb[b], debiased=self.debiased, backend=self.backend,
                                    **rbf_options)
        return out


def _first_item(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _model_device(model):
    for p in model.parameters():
        return p.device
    return "cpu"
