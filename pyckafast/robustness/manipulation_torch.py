"""Network-level CKA-map manipulation (Davari et al. 2023, Sec. 4.3, Eq. 3) with PyTorch.

Fine-tune a network so that its layer x layer CKA map moves toward any target while its function
is kept by distillation from the frozen original:

    L = KL(softmax(f_orig(x)/T) || softmax(f(x)/T)) + lambda * mean(log cosh(CKAmap(batch) - M_target))

with the map the per-minibatch *debiased* linear CKA (unbiased HSIC, Song et al. 2012) between the
hidden layers, T = 0.1, AdamW(lr 1e-3, weight decay 5e-4), and lambda starting at 500 and, every
100 steps, multiplied by 0.8 if validation accuracy fell more than 1 point below the original,
else divided by 0.8. Needs the ``torch`` extra; importing this module imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._core.optional import require

torch = require("torch", "pyckafast.robustness.manipulation_torch")
from torch import nn  # noqa: E402  (torch is there: require() said so)
from torch.nn import functional as F  # noqa: E402

__all__ = [
    "MLP", "debiased_linear_cka", "cka_map", "layer_cka_map", "train_classifier",
    "accuracy", "manipulate_cka_map", "MapManipulation",
]


class MLP(nn.Module):
    """A multilayer perceptron: ``depth`` ReLU hidden layers of ``width`` units, a linear head.

    Parameters
    ----------
    n_in : int
        Input features.
    n_out : int
        Classes (outputs of the head).
    depth : int, default 6
        Hidden layers.
    width : int, default 64
        Units per hidden layer.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import MLP
    >>> model = MLP(5, 3, depth=2, width=8)
    >>> model(torch.zeros(4, 5)).shape
    torch.Size([4, 3])
    """

    def __init__(self, n_in: int, n_out: int, *, depth: int = 6, width: int = 64) -> None:
        super().__init__()
        sizes = [n_in] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor, *, return_hidden: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Compute the logits (and the hidden activations) of a batch.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, n_in)
            The inputs.
        return_hidden : bool, default False
            Also return the activation of every hidden layer.

        Returns
        -------
        torch.Tensor or (torch.Tensor, list of torch.Tensor)
            The logits (batch, n_out); with ``return_hidden``, also the ``depth`` hidden
            activations (batch, width).

        Examples
        --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import MLP
        >>> logits, acts = MLP(5, 3, depth=2, width=8)(torch.zeros(4, 5), return_hidden=True)
        >>> len(acts), acts[0].shape
        (2, torch.Size([4, 8]))
        """
        acts = []
        for layer in self.hidden:
            x = F.relu(layer(x))
            acts.append(x)
        logits = self.head(x)
        return (logits, acts) if return_hidden else logits


def _unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012) unbiased HSIC of two n x n Grams with zeroed diagonals (n >= 4)."""
    n = k.shape[0]
    row_k, row_l = k.sum(1), l.sum(1)
    value = (k * l).sum() + row_k.sum() * row_l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (row_k @ row_l)
    return value / (n * (n - 3))


def _zero_diag_gram(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1)
    x = x - x.mean(0)  # HSIC_u is translation invariant; centring only helps precision
    k = x @ x.T
    return k - torch.diag(torch.diagonal(k))


def debiased_linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Compute the debiased linear CKA (unbiased HSIC) of two batches, differentiably.

    Parameters
    ----------
    x : torch.Tensor, shape (n, ...)
        First batch of features (flattened per row); n >= 4.
    y : torch.Tensor, shape (n, ...)
        Second batch of features of the same rows.

    Returns
    -------
    torch.Tensor
        A scalar tensor, differentiable in x and y.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import debiased_linear_cka
    >>> x = torch.randn(64, 5, dtype=torch.float64)
    >>> round(float(debiased_linear_cka(x, 2 * x + 1)), 10)
    1.0
    """
    k, l = _zero_diag_gram(x), _zero_diag_gram(y)
    return _unbiased_hsic(k, l) / torch.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(l, l))


def cka_map(acts: list[torch.Tensor], eps: float = 1e-12) -> torch.Tensor:
    """Compute the layer x layer debiased linear CKA map of one minibatch (differentiable).

    All pairwise unbiased HSICs come from one GEMM of flattened, U-centred Grams: for zero-
    diagonal K, L, HSIC_u(K, L) = <U(K), L> / (n(n-3)) with U(K) the U-centring.

    Parameters
    ----------
    acts : list of torch.Tensor
        The activations of every layer on the same n >= 4 rows (each flattened per row).
    eps : float, default 1e-12
        Floor of the self-HSICs in the normalisation (a constant layer gives 0, not nan).

    Returns
    -------
    torch.Tensor, shape (L, L)
        The symmetric CKA map of the L layers.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import cka_map
    >>> x = torch.randn(32, 4, dtype=torch.float64)
    >>> cka_map([x, 3 * x, x ** 2]).shape
    torch.Size([3, 3])
    """
    grams = [_zero_diag_gram(a) for a in acts]
    n = grams[0].shape[0]
    flat = torch.stack([_u_centre(k).reshape(-1) for k in grams])
    raw = torch.stack([k.reshape(-1) for k in grams])
    hsic = flat @ raw.T / (n * (n - 3))
    hsic = 0.5 * (hsic + hsic.T)
    d = torch.sqrt(torch.clamp(torch.diagonal(hsic), min=eps))
    return hsic / (d[:, None] * d[None, :])


def _u_centre(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    row = k.sum(1, keepdim=True) / (n - 2)
    total = k.sum() / ((n - 1) * (n - 2))
    u = k - row - row.T + total
    return u - torch.diag(torch.diagonal(u))


@torch.no_grad()
def layer_cka_map(model: MLP, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Average :func:`cka_map` over the full minibatches of ``x`` (the map that is optimised).

    Parameters
    ----------
    model : MLP
        The network whose hidden layers are compared.
    x : torch.Tensor, shape (n, n_in)
        Inputs (n >= batch_size; a last partial batch is left out).
    batch_size : int, default 128
        Rows per minibatch (>= 4).

    Returns
    -------
    numpy.ndarray, shape (depth, depth)
        The mean CKA map.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import MLP, layer_cka_map
    >>> _ = torch.manual_seed(0)
    >>> layer_cka_map(MLP(5, 2, depth=3, width=8), torch.randn(64, 5), batch_size=32).shape
    (3, 3)
    """
    maps = []
    for start in range(0, x.shape[0] - batch_size + 1, batch_size):
        _, acts = model(x[start:start + batch_size], return_hidden=True)
        maps.append(cka_map(acts))
    return torch.stack(maps).mean(0).cpu().numpy()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Compute the fraction of rows classified correctly (argmax of the logits).

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits.
    x : torch.Tensor, shape (n, ...)
        Inputs.
    y : torch.Tensor of int, shape (n,)
        True classes.

    Returns
    -------
    float
        The accuracy, in [0, 1].

    Examples
    --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import accuracy
    >>> accuracy(torch.nn.Identity(), torch.tensor([[1.0, 0.0], [1.0, 2.0]]), torch.tensor([0, 0]))
    0.5
    """
    return float((model(x).argmax(1) == y).float().mean())


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 30,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """Train ``model`` with plain cross-entropy and AdamW (the "original" network).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, trained in place.
    x : torch.Tensor, shape (n, ...)
        Training inputs.
    y : torch.Tensor of int, shape (n,)
        Training classes.
    epochs : int, default 30
        Passes over the data.
    batch_size : int, default 128
        Rows per step.
    lr : float, default 1e-3
        AdamW learning rate (weight decay 5e-4).
    seed : int, default 0
        Seed of the shuffles.

    Returns
    -------
    torch.nn.Module
        ``model`` itself, trained.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import MLP, accuracy, train_classifier
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
    >>> model = train_classifier(MLP(2, 2, depth=1, width=8), x, y, epochs=10, batch_size=16,
    ...                          lr=1e-2)
    >>> accuracy(model, x, y) > 0.9
    True
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


def _log_cosh(d: torch.Tensor) -> torch.Tensor:
    return d + F.softplus(-2.0 * d) - math.log(2.0)  # stable log(cosh(d))


@dataclass
class MapManipulation:
    """The result of :func:`manipulate_cka_map`: the fine-tuned model and its training history.

    Parameters
    ----------
    model : MLP
        The fine-tuned copy of the original network (in eval mode).
    original_val_accuracy : float
        The original network's validation accuracy.
    history : list of dict
        One record per ``lam_every`` steps (and the last): "step", "lambda", "task",
        "map_loss", "val_accuracy".

    Examples
    --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import MLP, MapManipulation
    >>> MapManipulation(MLP(2, 2, depth=1), 0.9).history
    []
    """

    model: MLP
    original_val_accuracy: float
    history: list[dict] = field(default_factory=list)


def manipulate_cka_map(
    original: MLP, target: np.ndarray | torch.Tensor, x_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
    steps: int = 2000, batch_size: int = 128, lam: float = 500.0, lam_every: int = 100,
    lam_factor: float = 0.8, temperature: float = 0.1, lr: float = 1e-3, weight_decay: float = 5e-4,
    seed: int = 0,
) -> MapManipulation:
    """Fine-tune a copy of ``original`` toward the layer x layer CKA map ``target`` (Eq. 3).

    The task loss is KL distillation from the frozen original at ``temperature``; the map loss is
    ``lam * mean(log cosh(map - target))`` on each minibatch of ``batch_size`` rows of
    ``x_train``. Every ``lam_every`` steps lam is multiplied by ``lam_factor`` if the validation
    accuracy is more than 1 point below the original's, else divided by it.

    Parameters
    ----------
    original : MLP
        The network to imitate; frozen (set to eval mode, gradients off), not changed.
    target : array_like, shape (depth, depth)
        The wanted CKA map.
    x_train : torch.Tensor, shape (n, n_in)
        Inputs of the distillation and map losses.
    x_val : torch.Tensor, shape (m, n_in)
        Validation inputs of the lambda schedule.
    y_val : torch.Tensor of int, shape (m,)
        Validation classes.
    steps : int, default 2000
        Optimisation steps.
    batch_size : int, default 128
        Rows per minibatch (>= 4; partial batches are skipped).
    lam : float, default 500.0
        Initial weight of the map loss.
    lam_every : int, default 100
        Steps between updates of lam.
    lam_factor : float, default 0.8
        Factor of each lam update.
    temperature : float, default 0.1
        Distillation temperature T.
    lr : float, default 1e-3
        AdamW learning rate.
    weight_decay : float, default 5e-4
        AdamW weight decay.
    seed : int, default 0
        Seed of the minibatch order.

    Returns
    -------
    MapManipulation
        The fine-tuned model and its history.

    Examples
    --------
    >>> import torch
    >>> from pyckafast.robustness.manipulation_torch import MLP, manipulate_cka_map
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(64, 3); y = (x[:, 0] > 0).long()
    >>> out = manipulate_cka_map(MLP(3, 2, depth=2, width=8), torch.eye(2), x, x, y, steps=4,
    ...                          batch_size=16, lam_every=2)
    >>> [h["step"] for h in out.history]
    [2, 4]
    """
    import copy

    torch.manual_seed(seed)
    target = torch.as_tensor(np.asarray(target), dtype=x_train.dtype)
    model = copy.deepcopy(original).train()
    original = original.eval()
    for p in original.parameters():
        p.requires_grad_(False)
    base_acc = accuracy(original, x_val, y_val)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    out = MapManipulation(model, base_acc)
    batches = iter(())
    for step in range(1, steps + 1):
        idx = next(batches, None)
        if idx is None:
            batches = iter([b for b in torch.randperm(x_train.shape[0], generator=gen).split(batch_size)
                            if b.shape[0] == batch_size])
            idx = next(batches)
        xb = x_train[idx]
        logits, acts = model(xb, return_hidden=True)
        with torch.no_grad():
            teacher = F.softmax(original(xb) / temperature, dim=1)
        task = F.kl_div(F.log_softmax(logits / temperature, dim=1), teacher, reduction="batchmean")
        map_loss = _log_cosh(cka_map(acts) - target).mean()
        opt.zero_grad()
        (task + lam * map_loss).backward()
        opt.step()
        if step % lam_every == 0 or step == steps:
            acc = accuracy(model, x_val, y_val)
            out.history.append({"step": step, "lambda": lam, "task": float(task.detach()),
                                "map_loss": float(map_loss.detach()), "val_accuracy": acc})
            if step % lam_every == 0:
                lam = lam * lam_factor if acc < base_acc - 0.01 else lam / lam_factor
    model.eval()
    return out
