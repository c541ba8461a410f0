"""The ``CKA`` class of torch_cka 0.21, computed exactly by pyckafast.

Code written against torch_cka switches with one import::

    from torch_cka import CKA                          # before
    from pyckafast.compat.torch_cka import CKA         # after

``CKA(model1, model2, model1_name=..., model2_name=..., model1_layers=..., model2_layers=...,
device=...)``, ``.compare(dataloader1, dataloader2=None)``, ``.export()`` and
``.plot_results(save_path=..., title=...)`` behave as in torch_cka, except (docs/COMPAT.md):

* the result is the **exact** debiased linear CKA over every sample (unbiased HSIC of Song et
  al. 2012 over all n rows, the estimator torch_cka applies per batch), independent of the
  batch size; ``minibatch=True`` gives torch_cka's estimate instead (unbiased HSIC per batch,
  summed over batches, then normalised; Nguyen et al. 2021);
* hooks are registered for the duration of :meth:`CKA.compare` only and removed after it, and
  each model's train/eval mode is restored (torch_cka leaves its hooks on the models forever
  and the models in eval mode);
* rows and columns follow the order of ``export()["model1_layers"]`` (``named_modules()``
  order; torch_cka fills rows in the order the hooks fire, which differs for containers);
* when ``model1 is model2`` with two dataloaders, each pass records its own side (torch_cka's
  two hooks per layer both fire on both passes, so its model-1 features are overwritten);
* an unknown layer name is an error (torch_cka counts it and fails later with NaNs);
* a layer without variance gives nan with a RuntimeWarning (torch_cka fails an assertion).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from .._core.optional import require
from .._core.threads import model_loop
from .._core.types import Backend
from .._torch.side_by_side import SideBySide
from ..minibatch import MinibatchMap, batch_gram
from ._layermap import LayerMap

__all__ = ["CKA"]


def _torch():
    return require("torch", "pyckafast.compat.torch_cka")


class CKA:
    """Layer-by-layer CKA between two models (torch_cka's interface).

    Parameters
    ----------
    model1, model2 : torch.nn.Module
        The models to compare (they may be the same module).
    model1_name, model2_name : str, optional
        Names in :meth:`export` and plots (default: the class names).
    model1_layers, model2_layers : list of str, optional
        Names (``named_modules()``) of the layers to compare; default: every module, the model
        itself ("") included, as torch_cka.
    device : str, default "cpu"
        Where the models run; both are moved there.
    minibatch : bool, default False
        Use torch_cka's minibatch estimate instead of the exact full-dataset value.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        The pyckafast backend of the per-batch terms.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.compat.torch_cka import CKA
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> loader = [(torch.randn(20, 4),) for _ in range(3)]
    >>> cka = CKA(net, net, "a", "b", model1_layers=["0", "2"], model2_layers=["0", "2"])
    >>> cka.compare(loader)
    >>> result = cka.export()
    >>> result["model1_layers"], tuple(result["CKA"].shape), round(float(result["CKA"][1, 1]), 12)
    (['0', '2'], (2, 2), 1.0)
    """

    def __init__(self, model1, model2, model1_name: str | None = None,
                 model2_name: str | None = None, model1_layers: list[str] | None = None,
                 model2_layers: list[str] | None = None, device: str = "cpu", *,
                 minibatch: bool = False, backend: Backend = "auto") -> None:
        self.model1, self.model2, self.device = model1, model2, device
        self.minibatch, self.backend = bool(minibatch), backend
        self.model1_info = {"Name": model1_name or repr(model1).split("(")[0]}
        self.model2_info = {"Name": model2_name or repr(model2).split("(")[0]}
        if self.model1_info["Name"] == self.model2_info["Name"]:
            warnings.warn(f"Both model have identical names - {self.model2_info['Name']}. It may "
                          "cause confusion when interpreting the results. Consider giving unique "
                          "names to the models.", stacklevel=2)
        self.model1_layers, self.model2_layers = model1_layers, model2_layers
        self.model1_info["Layers"] = _layer_names(model1, model1_layers, "model1_layers")
        self.model2_info["Layers"] = _layer_names(model2, model2_layers, "model2_layers")
        self.model1 = self.model1.to(self.device)
        self.model2 = self.model2.to(self.device)
        self.hsic_matrix = None

    def compare(self, dataloader1: Iterable, dataloader2: Iterable | None = None) -> None:
        """Run both models over their dataloaders and store the CKA map (``export()["CKA"]``).

        Parameters
        ----------
        dataloader1 : iterable
            The batches of model 1: tensors, or tuples whose first item is the input.
        dataloader2 : iterable, optional
            The batches of model 2 (default: ``dataloader1``), paired with those of
            ``dataloader1`` batch by batch. With one loader (None, or the same object) it is
            iterated once and each batch goes to both models: torch_cka iterates it twice,
            which loads every batch twice and, with ``shuffle=True``, pairs different samples.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.compat.torch_cka import CKA
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh())
        >>> cka = CKA(net, net, "a", "b", model1_layers=["0", "1"], model2_layers=["0", "1"])
        >>> cka.compare([torch.randn(16, 3) for _ in range(4)])
        >>> tuple(cka.export()["CKA"].shape)
        (2, 2)
        """
        torch = _torch()
        dataloader2 = dataloader1 if dataloader2 is None else dataloader2
        self.model1_info["Dataset"] = _dataset_name(dataloader1)
        self.model2_info["Dataset"] = _dataset_name(dataloader2)
        if self.minibatch:
            # Each layer's batch Gram is formed in the hook (torch GEMM, input dtype, torch's
            # threads or GPU): no copy of the activations is kept.
            acc, keep = MinibatchMap(), batch_gram
        else:
            acc, keep = LayerMap(debiased=True, backend=self.backend), None
        pair = SideBySide(self.model1, self.model2, self.device, self.device,
                          pool_between=not self.minibatch)
        with _Hooks(self.model1, self.model1_info["Layers"], keep) as h1, \
                _Hooks(self.model2, self.model2_info["Layers"], keep) as h2, \
                torch.inference_mode(), model_loop(), pair:
            one = dataloader2 is dataloader1
            for b1, b2 in ((b, b) for b in dataloader1) if one else zip(dataloader1, dataloader2):
                x1, x2 = _first(b1).to(self.device), _first(b2).to(self.device)
                feats1, feats2 = pair.run(lambda: h1.run(x1), lambda: h2.run(x2))
                if self.minibatch:
                    acc.update_grams(feats1, feats2)
                else:
                    acc.update(feats1, feats2)
                del feats1, feats2  # the batch's features go before the next forward pass
            if self.minibatch and acc.sums.batches == 0:
                raise ValueError("the dataloaders gave no batch.")
            cka = acc.result()  # in the mode its sums were made in
        self.hsic_matrix = torch.as_tensor(cka, dtype=torch.float64)

    def export(self) -> dict:
        """Return the CKA map and what it compares (torch_cka's keys).

        Returns
        -------
        dict
            ``model1_name``, ``model2_name``, ``CKA`` (a float64 tensor, one row per layer of
            model 1), ``model1_layers``, ``model2_layers``, ``dataset1_name`` and
            ``dataset2_name``.

        Raises
        ------
        RuntimeError
            If :meth:`compare` has not run.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.compat.torch_cka import CKA
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh())
        >>> cka = CKA(net, net, "a", "b", model1_layers=["0", "1"], model2_layers=["0", "1"])
        >>> cka.compare([torch.randn(16, 3) for _ in range(4)])
        >>> result = cka.export()
        >>> result["model1_name"], result["model2_layers"], result["CKA"].dtype
        ('a', ['0', '1'], torch.float64)
        """
        if self.hsic_matrix is None:
            raise RuntimeError("call compare() before export().")
        return {"model1_name": self.model1_info["Name"], "model2_name": self.model2_info["Name"],
                "CKA": self.hsic_matrix, "model1_layers": self.model1_info["Layers"],
                "model2_layers": self.model2_info["Layers"],
                "dataset1_name": self.model1_info["Dataset"],
                "dataset2_name": self.model2_info["Dataset"]}

    def plot_results(self, save_path: str | None = None, title: str | None = None) -> Any:
        """Draw torch_cka's heatmap of the map (origin lower, magma; nan cells grey).

        Parameters
        ----------
        save_path : str, optional
            Where to save the figure, at 300 dpi.
        title : str, optional
            The title (default: "model1_name vs model2_name").

        Returns
        -------
        matplotlib.axes.Axes
            The heatmap's axes.

        Raises
        ------
        RuntimeError
            If :meth:`compare` has not run.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import torch
        >>> from pyckafast.compat.torch_cka import CKA
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh())
        >>> cka = CKA(net, net, "a", "b", model1_layers=["0", "1"], model2_layers=["0", "1"])
        >>> cka.compare([torch.randn(16, 3) for _ in range(4)])
        >>> cka.plot_results(title="net").get_title()
        'net'
        """
        plt = require("matplotlib.pyplot", "CKA.plot_results")
        if self.hsic_matrix is None:
            raise RuntimeError("call compare() before plot_results().")
        fig, ax = plt.subplots()
        m = np.ma.masked_invalid(self.hsic_matrix.numpy())
        im = ax.imshow(m, origin="lower", cmap=plt.get_cmap("magma").with_extremes(bad="0.8"))
        ax.set_xlabel(f"Layers {self.model2_info['Name']}", fontsize=15)
        ax.set_ylabel(f"Layers {self.model1_info['Name']}", fontsize=15)
        ax.set_title(title if title is not None else
                     f"{self.model1_info['Name']} vs {self.model2_info['Name']}", fontsize=18)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        if save_path is not None:
            fig.savefig(save_path, dpi=300)
        plt.show()
        return ax


def _layer_names(model, layers, what: str) -> list[str]:
    names = [name for name, _ in model.named_modules()]
    if layers is None:
        if len(names) > 150:
            warnings.warn(f"the model has {len(names)} modules; consider giving the layers to "
                          f"compare through {what}.", stacklevel=3)
        return names
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"{what} names layers the model does not have: {unknown}; some of its "
                         f"layers: {names[1:12]}.")
    wanted = set(layers)
    return [n for n in names if n in wanted]


def _dataset_name(loader) -> str:
    dataset = getattr(loader, "dataset", None)
    return repr(dataset).split("\n")[0] if dataset is not None else type(loader).__name__


def _first(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class _Hooks:
    """Forward hooks on one model's layers for the duration of a ``with`` block; the model is
    in eval mode inside and back in its own mode after."""

    def __init__(self, model, names: list[str], keep=None):
        self.model, self.names, self.keep = model, names, keep
        modules = dict(model.named_modules())
        self.modules = [(n, modules[n]) for n in names]
        self.handles, self.latest, self.active = [], {}, False

    def __enter__(self) -> "_Hooks":
        self.training = {m: m.training for m in self.model.modules()}
        self.model.eval()
        for name, module in self.modules:
            self.handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        torch = _torch()

        def hook(module, inputs, output):
            if not self.active:  # the same module hooked for the other side
                return
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor):
                # A copy (or the Gram made now): a later in-place op would otherwise rewrite
                # the recorded output.
                self.latest[name] = (out.detach().flatten(1).clone() if self.keep is None
                                     else self.keep(out))
        return hook

    def run(self, x) -> list:
        self.latest, self.active = {}, True
        try:
            self.model(x)
        finally:
            self.active = False
        missing = [n for n in self.names if n not in self.latest]
        if missing:
            raise RuntimeError(f"layers {missing} recorded no tensor output in this forward pass.")
        return [self.latest[n] for n in self.names]

    def __exit__(self, *exc) -> bool:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for m, mode in self.training.items():
            m.training = mode
        return False
