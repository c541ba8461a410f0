"""The public API of pytorch-cka 1.1.3 (module ``cka``), computed exactly by pyckafast.

Code written against pytorch-cka switches with one import::

    from cka import CKA, compute_cka, cka_from_features            # before
    from pyckafast.compat.pytorch_cka import CKA, compute_cka, cka_from_features  # after

What changes (docs/COMPAT.md lists every difference and the tests that encode the old ones):

* :func:`compute_cka` and ``CKA._compare`` return the **exact full-dataset** CKA of every layer
  pair, from unbiased HSIC (Song et al. 2012, the estimator pytorch-cka averages per batch)
  over all n samples, not the average of per-batch HSIC values (Nguyen et al.'s minibatch
  estimate, which depends on the batch size and its order). The batches are only a way to
  stream: the result does not depend on them, and batches of fewer than 4 samples are fine.
  ``debiased=False`` gives the biased (Kornblith et al. 2019) estimator.
* Values are not clamped to [0, 1]: debiased CKA of unrelated data is near 0 and may be
  slightly negative, which is what the estimator says. A layer without variance (e.g. a dead
  ReLU) gives nan with a RuntimeWarning, not 0: its CKA is undefined.
* Layer outputs are copied in the hook, so a following in-place op (``ReLU(inplace=True)``)
  cannot change the recorded features before they are used.
* ``minibatch=True`` (on :class:`CKA` and :func:`compute_cka`) gives pytorch-cka's own
  estimate instead: unbiased HSIC per batch, summed over the batches, its clamping to [0, 1]
  and its 1e-6 for a zero denominator, batches of at least 4 samples; computed from each
  layer's batch Gram once (formed in the hook, torch GEMM in the activations' dtype) and every
  pair from one GEMM of the stacked Grams, summed in float64 (pytorch-cka sums in float32).

:func:`hsic` and :func:`hsic_cross` take stacks of Gram matrices as before and return the same
unbiased HSIC values, accumulated in float64 about the Grams' mean entry.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .._core.minibatch_terms import batch_hsic_terms, pytorch_cka_map
from .._core.optional import require
from .._core.threads import model_loop
from .._core.types import Backend
from .._torch.side_by_side import SideBySide
from ..minibatch import MinibatchMap, batch_gram
from ._layermap import LayerMap

__all__ = ["CKA", "compute_cka", "cka_from_features", "hsic", "hsic_cross",
           "plot_cka_heatmap", "save_figure"]

# Batch dict keys that hold the model input, in pytorch-cka's order.
_INPUT_KEYS = ("input", "inputs", "x", "image", "images", "input_ids", "pixel_values")


def _torch():
    return require("torch", "pyckafast.compat.pytorch_cka")


class CKA:
    """Hooks on the chosen layers of two models; ``with cka: cka._compare(loader)``.

    Parameters
    ----------
    model1, model2 : torch.nn.Module
        The models (DataParallel / DistributedDataParallel wrappers are unwrapped).
    layers : sequence of str or int, optional
        Layers of model1, by name or by index into its named modules (default: all of them).
    model2_layers : sequence of str or int, optional
        Layers of model2 (default: ``layers``).
    device : str or torch.device, optional
        Where the models run (default: cuda, else mps, else cpu). Both models are moved there.
    debiased : bool, default True
        Unbiased HSIC (as pytorch-cka) over all samples; False: the biased estimator.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        The pyckafast backend of the per-batch terms.
    minibatch : bool, default False
        Give pytorch-cka's own estimate (per-batch unbiased HSIC summed over batches, clamped
        to [0, 1]) instead of the exact full-dataset CKA.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.compat.pytorch_cka import CKA
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> _ = torch.manual_seed(0)
    >>> loader = [torch.randn(16, 4) for _ in range(3)]
    >>> with CKA(model, model, layers=["0", "2"], device="cpu") as cka:
    ...     m = cka._compare(loader, progress=False)
    >>> tuple(m.shape), bool(torch.allclose(m.diagonal(), torch.ones(2, dtype=m.dtype)))
    ((2, 2), True)
    """

    @staticmethod
    def _resolve_layers(model, layers: Sequence[str | int] | None, model_name: str) -> dict:
        name_to_module = {name: mod for name, mod in model.named_modules() if name}
        names = list(name_to_module)
        if layers is None:
            if len(names) > 150:
                warnings.warn(f"{model_name} has {len(names)} layers. Consider specifying "
                              "layers explicitly for faster computation.", stacklevel=3)
            return name_to_module
        result: dict = {}
        for layer in layers:
            if isinstance(layer, str):
                if layer not in name_to_module:
                    raise ValueError(f"Layer '{layer}' not found in {model_name}. Use "
                                     "model.named_modules() to see available layers.")
                name = layer
            elif isinstance(layer, int) and not isinstance(layer, bool):
                idx = layer if layer >= 0 else len(names) + layer
                if not 0 <= idx < len(names):
                    raise IndexError(
                        f"Layer index {layer} is out of range for {model_name} with "
                        f"{len(names)} layers (valid range: {-len(names)} to {len(names) - 1}).")
                name = names[idx]
            else:
                raise TypeError(f"Layer specification must be str or int, got "
                                f"{type(layer).__name__} in {model_name}_layers.")
            result.setdefault(name, name_to_module[name])
        return result

    def __init__(self, model1, model2, layers: Sequence[str | int] | None = None,
                 model2_layers: Sequence[str | int] | None = None, device=None, *,
                 debiased: bool = True, backend: Backend = "auto",
                 minibatch: bool = False) -> None:
        torch = _torch()
        if minibatch and not debiased:
            raise ValueError("minibatch=True is pytorch-cka's estimate, from the unbiased HSIC "
                             "per batch: it takes debiased=True; got debiased=False.")
        self.minibatch = bool(minibatch)
        wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
        self.model1 = model1.module if isinstance(model1, wrappers) else model1
        self.model2 = model2.module if isinstance(model2, wrappers) else model2
        self.debiased, self.backend = bool(debiased), backend
        model2_layers = layers if model2_layers is None else model2_layers
        self.model1_layer_to_module = self._resolve_layers(self.model1, layers, "model1")
        self.model2_layer_to_module = self._resolve_layers(self.model2, model2_layers, "model2")
        self._is_same_model = self.model1 is self.model2
        self._hook_handles: list = []
        self._model1_training = self.model1.training
        self._model2_training = self.model2.training
        self.device = torch.device(device) if device else torch.device(_default_device(torch))
        self.model1 = self.model1.to(self.device)
        self.model2 = self.model2.to(self.device)
        if self._is_same_model:
            self._shared_layer_to_module = {**self.model1_layer_to_module,
                                            **self.model2_layer_to_module}
            self._shared_features: dict = {}
        else:
            self._model1_layer_to_feature: dict = {}
            self._model2_layer_to_feature: dict = {}

    def _clear_features(self) -> None:
        for d in self._feature_dicts():
            d.clear()

    def _feature_dicts(self) -> tuple[dict, ...]:
        if self._is_same_model:
            return (self._shared_features,)
        return self._model1_layer_to_feature, self._model2_layer_to_feature

    def _extract_input(self, batch: Any):
        torch = _torch()
        if isinstance(batch, torch.Tensor):
            return batch
        if isinstance(batch, (list, tuple)):
            return batch[0]
        if isinstance(batch, dict):
            for key in _INPUT_KEYS:
                if key in batch:
                    return batch[key]
            raise ValueError(f"Cannot find input in dict batch. Keys: {list(batch.keys())}")
        raise TypeError(f"Unsupported batch type: {type(batch)}")

    def _make_hook(self, features: dict, layer_name: str):
        torch = _torch()

        def hook(module, inputs, output) -> None:
            if isinstance(output, tuple):
                output = output[0]
            elif hasattr(output, "last_hidden_state"):
                output = output.last_hidden_state
            if isinstance(output, torch.Tensor):
                feat = output.detach()
                feat = feat.flatten(1) if feat.dim() > 2 else feat
                # A copy (or, for the estimate, the batch Gram made now): an in-place op after
                # this layer would otherwise rewrite it.
                features[layer_name] = batch_gram(feat) if self.minibatch else feat.clone()
        return hook

    def _batch_features(self) -> tuple[list, list | None]:
        if self._is_same_model:
            got1 = got2 = self._shared_features
        else:
            got1, got2 = self._model1_layer_to_feature, self._model2_layer_to_feature
        missing = [n for n in self.model1_layer_to_module if n not in got1]
        missing += [n for n in self.model2_layer_to_module if n not in got2]
        if missing:
            raise RuntimeError(f"layers {missing} recorded no tensor output in this forward "
                               "pass (not called, or their output holds no tensor).")
        xs = [got1[n] for n in self.model1_layer_to_module]
        if self._is_same_model and list(self.model1_layer_to_module) == list(
                self.model2_layer_to_module):
            return xs, None  # one model, the same layers: a symmetric map (pairs i < j once)
        return xs, [got2[n] for n in self.model2_layer_to_module]

    def _run_models(self, x, pair: SideBySide) -> None:
        pair.run(lambda: self.model1(x), None if self._is_same_model else lambda: self.model2(x))

    def _compare(self, dataloader, progress: bool = True, verbose: bool = False):
        """The exact CKA map (len(layers1), len(layers2)) over every sample of ``dataloader``
        (pytorch-cka's estimate with ``minibatch=True``), as a float64 tensor on
        ``self.device`` (float32 on mps)."""
        torch = _torch()
        if not self._hook_handles:
            raise RuntimeError("Hooks not registered.")
        if self.minibatch:
            layer_map = _EstimateMap(self._symmetric())
        else:
            layer_map = LayerMap(debiased=self.debiased, backend=self.backend)
        total = len(dataloader) if hasattr(dataloader, "__len__") else None
        iterator = dataloader
        if progress:
            tqdm = require("tqdm", "progress=True").tqdm
            iterator = tqdm(dataloader, total=total, desc="Computing CKA")
        pair = SideBySide(self.model1, None if self._is_same_model else self.model2,
                          self.device, self.device, pool_between=not self.minibatch)
        with torch.inference_mode(), model_loop(), pair:
            for batch_idx, batch in enumerate(iterator):
                self._clear_features()
                x = self._extract_input(batch)
                if self.minibatch and x.shape[0] <= 3:
                    raise ValueError(f"HSIC requires batch size > 3, got {x.shape[0]}. "
                                     "Increase batch size to at least 4.")
                self._run_models(x.to(self.device), pair)
                layer_map.update(*self._batch_features())
                if verbose:
                    print(f"Batch {batch_idx + 1}/{total} - Mean CKA: "
                          f"{_running_mean(layer_map):.4f}")
        self._clear_features()
        return self._as_tensor(layer_map.result())

    def _symmetric(self) -> bool:
        return self._is_same_model and list(self.model1_layer_to_module) == list(
            self.model2_layer_to_module)

    def _compute_cka_matrix(self, hsic_xy, hsic_xx, hsic_yy):
        """CKA from HSIC tensors: nan where HSIC(x, x) HSIC(y, y) is not positive (undefined),
        no clamping."""
        torch = _torch()
        denom = torch.sqrt(hsic_xx.unsqueeze(1) * hsic_yy.unsqueeze(0))
        nan = torch.full_like(denom, math.nan)
        return torch.where(denom > 0, hsic_xy / torch.where(denom > 0, denom, 1.0), nan)

    def _as_tensor(self, m: np.ndarray):
        torch = _torch()
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        return torch.as_tensor(m, dtype=dtype, device=self.device)

    def __enter__(self) -> "CKA":
        if self._hook_handles:
            return self
        if self._is_same_model:
            hooked = [(self._shared_layer_to_module, self._shared_features)]
        else:
            hooked = [(self.model1_layer_to_module, self._model1_layer_to_feature),
                      (self.model2_layer_to_module, self._model2_layer_to_feature)]
        for modules, features in hooked:
            for name, module in modules.items():
                self._hook_handles.append(
                    module.register_forward_hook(self._make_hook(features, name)))
        self.model1.eval()
        self.model2.eval()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> bool:
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()
        self.model1.train(self._model1_training)
        self.model2.train(self._model2_training)
        self._clear_features()
        return False


class _EstimateMap:
    """pytorch-cka's estimate: the summed per-batch unbiased HSIC of every pair, normalised as
    pytorch-cka normalises it (clamped to [0, 1], 1e-6 for a zero denominator)."""

    def __init__(self, symmetric: bool) -> None:
        self.acc = MinibatchMap(symmetric=symmetric)

    def update(self, grams_a: list, grams_b: list | None) -> None:
        self.acc.update_grams(grams_a, grams_b)

    def result(self) -> np.ndarray:
        if self.acc.sums.batches == 0:
            raise ValueError("the dataloader gave no batch.")
        return pytorch_cka_map(*self.acc.hsic())


def _default_device(torch) -> str:
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def _running_mean(layer_map: LayerMap) -> float:
    """Mean CKA of the samples so far (nan while too few for the estimator)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(layer_map.result()))
    except ValueError:  # fewer samples than the estimator needs
        return math.nan


def compute_cka(model1: Any, model2: Any, *dataloaders: Iterable,
                layers: Sequence[str | int] | None = None,
                model2_layers: Sequence[str | int] | None = None, device: Any = None,
                progress: bool = True, verbose: bool = False, debiased: bool = True,
                backend: Backend = "auto", minibatch: bool = False) -> list:
    """Return one exact CKA map per dataloader (pytorch-cka's estimate with ``minibatch=True``).

    Parameters
    ----------
    model1, model2 : torch.nn.Module
        The models, as in :class:`CKA`.
    *dataloaders : iterable
        The dataloaders (batches: tensors, tuples whose first item is the input, or dicts), or
        one list of them.
    layers : sequence of str or int, optional
        Layers of model1, as in :class:`CKA`.
    model2_layers : sequence of str or int, optional
        Layers of model2 (default: ``layers``).
    device : str or torch.device, optional
        Where the models run (default: cuda, else mps, else cpu).
    progress : bool, default True
        Show a tqdm bar per dataloader.
    verbose : bool, default False
        Print the running mean CKA after each batch.
    debiased : bool, default True
        Unbiased HSIC (as pytorch-cka); False: the biased estimator.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        The pyckafast backend of the per-batch terms.
    minibatch : bool, default False
        Give pytorch-cka's own estimate (per-batch unbiased HSIC summed over the batches,
        clamped to [0, 1]; batches of at least 4 samples) instead of the exact CKA.

    Returns
    -------
    list of torch.Tensor
        One (len(layers1), len(layers2)) map per dataloader, float64 on ``device`` (float32 on
        mps).

    Raises
    ------
    ValueError
        If no dataloader is given.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.compat.pytorch_cka import compute_cka
    >>> _ = torch.manual_seed(0)
    >>> a = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
    >>> [m] = compute_cka(a, a, [torch.randn(10, 4) for _ in range(3)], device="cpu",
    ...                   progress=False)
    >>> tuple(m.shape)
    (2, 2)
    """
    if len(dataloaders) == 1 and isinstance(dataloaders[0], (list, tuple)) and not _is_batch(
            dataloaders[0]):
        dataloaders = tuple(dataloaders[0])
    if not dataloaders:
        raise ValueError("compute_cka requires at least one dataloader.")
    cka = CKA(model1, model2, layers=layers, model2_layers=model2_layers, device=device,
              debiased=debiased, backend=backend, minibatch=minibatch)
    with cka:
        return [cka._compare(loader, progress=progress, verbose=verbose)
                for loader in dataloaders]


def _is_batch(items) -> bool:
    """True for a list of tensors (one loader given as a list of batches), not a list of loaders."""
    torch = _torch()
    return len(items) > 0 and all(isinstance(b, torch.Tensor) for b in items)


def cka_from_features(features_x: Any, features_y: Any, *, debiased: bool = True,
                      backend: Backend = "auto") -> Any:
    """Return the exact CKA between pre-extracted features.

    Parameters
    ----------
    features_x : torch.Tensor or sequence of array_like
        One layer (n, d), a stack of layers (L, n, d), or a list of (n, d_i) layers.
    features_y : torch.Tensor or sequence of array_like
        The same for the second side (the same n samples). The same object as ``features_x``
        gives the symmetric map.
    debiased : bool, default True
        Unbiased HSIC (as pytorch-cka, needs n > 3); False: the biased estimator.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        The pyckafast backend.

    Returns
    -------
    torch.Tensor
        Float64, (Lx, Ly), on the features' device, without clamping.

    Raises
    ------
    ValueError
        If a tensor is not 2-D or 3-D, a list is empty, or ``debiased`` with n <= 3.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.compat.pytorch_cka import cka_from_features
    >>> x = torch.randn(32, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> round(float(cka_from_features(x, 2 * x)[0, 0]), 12)
    1.0
    """
    from ..cka_matrix import cka_matrix

    torch = _torch()
    xs, ys = _layers_of(features_x, "features_x"), _layers_of(features_y, "features_y")
    n = int(xs[0].shape[0])
    if debiased and n <= 3:
        raise ValueError(f"cka_from_features requires n > 3 samples (unbiased HSIC); got n={n}.")
    same = features_x is features_y
    m = cka_matrix(xs, None if same else ys, debiased=debiased, backend=backend)
    return torch.as_tensor(m, dtype=torch.float64, device=xs[0].device)


def _layers_of(feats, name: str) -> list:
    torch = _torch()
    if isinstance(feats, torch.Tensor):
        if feats.dim() == 2:
            return [feats.detach()]
        if feats.dim() == 3:
            return list(feats.detach().unbind(0))
        raise ValueError(f"{name} must be 2-D (n, d) or 3-D (L, n, d); got shape "
                         f"{tuple(feats.shape)}.")
    layers = [f.detach() if isinstance(f, torch.Tensor) else f for f in feats]
    if not layers:
        raise ValueError(f"{name} must hold at least one layer; got an empty sequence.")
    return layers


def _check_grams(grams_x, grams_y, what: str) -> int:
    if grams_x.dim() != 3 or grams_y.dim() != 3:
        raise ValueError(f"{what} requires 3D tensors, got shapes {grams_x.shape} and "
                         f"{grams_y.shape}")
    _, n, m = grams_x.shape
    _, n_y, m_y = grams_y.shape
    if n != m or n_y != m_y:
        raise ValueError(f"{what} requires square matrices")
    if n != n_y:
        raise ValueError(f"Gram matrices must have same sample dimension, got {n} and {n_y}")
    if n <= 3:
        raise ValueError(f"{what} requires n > 3, got n={n}")
    return n


def _zero_diagonal_stack(grams) -> np.ndarray:
    """One stack of Grams as float64 NumPy, each shifted by its mean entry (unbiased HSIC is
    unchanged by a constant added to every entry, and the sums then do not cancel), with its
    diagonal set to zero: what ``_core.minibatch_terms.batch_hsic_terms`` takes."""
    g = grams.detach().to("cpu", dtype=_torch().float64).numpy()
    g = g - g.mean(axis=(1, 2), keepdims=True)
    idx = np.arange(g.shape[1])
    g[:, idx, idx] = 0.0
    return g


def hsic(grams_x: Any, grams_y: Any) -> tuple[Any, Any, Any]:
    """Return the unbiased HSIC (Song et al. 2012) of every pair of Grams, and of each with itself.

    Parameters
    ----------
    grams_x : torch.Tensor
        Shape (Lx, n, n): one Gram matrix per layer, n > 3.
    grams_y : torch.Tensor
        Shape (Ly, n, n), the same samples.

    Returns
    -------
    hsic_xy : torch.Tensor
        Shape (Lx, Ly): HSIC of ``grams_x[i]`` with ``grams_y[j]``.
    hsic_xx : torch.Tensor
        Shape (Lx,): HSIC of each ``grams_x[i]`` with itself.
    hsic_yy : torch.Tensor
        Shape (Ly,): HSIC of each ``grams_y[j]`` with itself.
        All three in the dtype and on the device of ``grams_x``.

    Raises
    ------
    ValueError
        If the Grams are not 3-D stacks of square matrices of the same n > 3.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.compat.pytorch_cka import hsic
    >>> f = torch.randn(2, 10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> g = f @ f.transpose(1, 2)
    >>> xy, xx, yy = hsic(g, g)
    >>> bool(torch.allclose(xy.diagonal(), xx))
    True
    """
    _check_grams(grams_x, grams_y, "hsic_all")
    # every pair from one GEMM of the stacked Grams (no Python loop per pair)
    h = batch_hsic_terms(_zero_diagonal_stack(grams_x), _zero_diagonal_stack(grams_y))
    return tuple(_like(v, grams_x) for v in (h.xy, h.xx, h.yy))


def hsic_cross(grams_x: Any, grams_y: Any) -> Any:
    """Return the unbiased HSIC of every Gram in ``grams_x`` with every one in ``grams_y``.

    Parameters
    ----------
    grams_x : torch.Tensor
        Shape (Lx, n, n): one Gram matrix per layer, n > 3.
    grams_y : torch.Tensor
        Shape (Ly, n, n), the same samples.

    Returns
    -------
    torch.Tensor
        Shape (Lx, Ly), in the dtype and on the device of ``grams_x``.

    Raises
    ------
    ValueError
        If the Grams are not 3-D stacks of square matrices of the same n > 3.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.compat.pytorch_cka import hsic_cross
    >>> g = torch.eye(6).expand(2, 6, 6)
    >>> tuple(hsic_cross(g, g).shape)
    (2, 2)
    """
    _check_grams(grams_x, grams_y, "hsic_cross")
    h = batch_hsic_terms(_zero_diagonal_stack(grams_x), _zero_diagonal_stack(grams_y))
    return _like(h.xy, grams_x)


def _like(values: np.ndarray, ref):
    torch = _torch()
    dtype = ref.dtype if ref.dtype.is_floating_point else torch.float64
    return torch.as_tensor(values, device=ref.device).to(dtype)


def plot_cka_heatmap(cka_matrix: Any, layers1: Sequence[str] | None = None,
                     layers2: Sequence[str] | None = None, model1_name: str = "Model 1",
                     model2_name: str = "Model 2", title: str | None = None, cmap: str = "magma",
                     vmin: float | None = None, vmax: float | None = None, annot: bool = False,
                     ax: Any = None, show: bool = False, **ignored: Any) -> tuple[Any, Any]:
    """Draw a CKA map as a heatmap, with pytorch-cka's arguments.

    The drawing is :func:`pyckafast.plot.cka_heatmap` (nan cells grey, long layer names
    shortened).

    Parameters
    ----------
    cka_matrix : torch.Tensor or array_like
        The (L1, L2) map.
    layers1, layers2 : sequence of str, optional
        The names of the rows and of the columns.
    model1_name, model2_name : str, default "Model 1", "Model 2"
        The models' names, in the axis labels and the default title.
    title : str, optional
        The title (default: "model1_name vs model2_name").
    cmap : str, default "magma"
        The matplotlib colormap.
    vmin, vmax : float, optional
        The colour range (default 0 and 1).
    annot : bool, default False
        Write each cell's value in it.
    ax : matplotlib.axes.Axes, optional
        Where to draw (default: a new figure).
    show : bool, default False
        Call ``matplotlib.pyplot.show()`` after drawing.
    **ignored
        The styling arguments of pytorch-cka that have no counterpart here (font sizes,
        ``figsize``...): accepted and ignored.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure drawn in.
    ax : matplotlib.axes.Axes
        The heatmap's axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from pyckafast.compat.pytorch_cka import plot_cka_heatmap
    >>> fig, ax = plot_cka_heatmap(np.eye(2), ["a", "b"], ["c", "d"])
    >>> ax.get_ylabel()
    'Model 1 layer'
    """
    from ..plot import cka_heatmap

    m = cka_matrix.detach().cpu().numpy() if hasattr(cka_matrix, "detach") else cka_matrix
    m = np.asarray(m, dtype=np.float64)
    ax = cka_heatmap(m, layers1, layers2, ax, title=title or f"{model1_name} vs {model2_name}",
                     xlabel=f"{model2_name} layer", ylabel=f"{model1_name} layer",
                     annotate=bool(annot), cmap=cmap,
                     vmin=0.0 if vmin is None else vmin, vmax=1.0 if vmax is None else vmax)
    if show:
        require("matplotlib.pyplot", "plot_cka_heatmap").show()
    return ax.figure, ax


def save_figure(fig: Any, path: str, dpi: int = 150, bbox_inches: str = "tight",
                transparent: bool = False) -> None:
    """Save ``fig`` to ``path`` with pytorch-cka's defaults.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to save.
    path : str
        The file; its suffix picks the format.
    dpi : int, default 150
        The resolution.
    bbox_inches : str, default "tight"
        As in ``Figure.savefig``.
    transparent : bool, default False
        A transparent background.

    Examples
    --------
    >>> import os, tempfile
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from pyckafast.compat.pytorch_cka import plot_cka_heatmap, save_figure
    >>> fig, _ = plot_cka_heatmap(np.eye(2))
    >>> path = os.path.join(tempfile.mkdtemp(), "map.png")
    >>> save_figure(fig, path)
    >>> os.path.getsize(path) > 0
    True
    """
    fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches, transparent=transparent)
