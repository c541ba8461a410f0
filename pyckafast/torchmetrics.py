"""torchmetrics metrics for exact linear CKA: :class:`CKA` and :class:`CKAMap`.

``update(x, y)`` per batch, ``compute()`` at the end, as any torchmetrics metric; under DDP (or
any ``torch.distributed`` group) ``compute()`` gives the exact CKA of the samples of **all**
ranks, equal to the single-process value to float64 rounding.

How the ranks combine. Each rank holds float64 linear terms (:class:`pyckafast._core.terms.
LinearTerms`: the moments of its rows about a shift near its data's mean). Summing states across
ranks would need one shift common to all ranks before the first batch is seen (else the sums
are of different quantities, or raw uncentred moments that cancel catastrophically). So the
terms are **gathered** instead (a list state with ``dist_reduce_fx="cat"``: each rank's terms
as one self-describing float64 record) and merged in ``compute()`` with the exact reshift
algebra of ``LinearTerms.merge``. The gathered size is O(p_x^2 + p_y^2 + p_x p_y) per rank and
pair, independent of n. A rank that saw no batch contributes an empty record.

torchmetrics is optional (``pip install "pyckafast[torchmetrics]"``); ``import pyckafast``
does not import it, this module does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._core import combine
from ._core.terms import LinearTerms, RowNormTerms
from ._core.types import ArrayLike, Backend
from .compat._layermap import on_reachable_device
from .streaming import LinearCKAState

try:
    import torch
    from torchmetrics import Metric
except ModuleNotFoundError as exc:  # name the extra that brings it
    from ._core.optional import MissingDependency

    raise MissingDependency(f"pyckafast.torchmetrics needs {exc.name}, which is not "
                            'installed: pip install "pyckafast[torchmetrics]".',
                            name=exc.name) from None

__all__ = ["CKA", "CKAMap"]

# record = [i, j, n, p1, p2, has_norms, eps, scale_x, scale_y] + the arrays below, float64
_HEADER = 9
_NORM_SCALARS = ("sum_q", "sum_r", "sum_qq", "sum_rr", "sum_qr")


def _record(i: int, j: int, t: LinearTerms) -> np.ndarray:
    """One pair's terms as a flat float64 vector that :func:`_read_records` parses back."""
    head = [i, j, t.n, t.sum_x.size, t.sum_y.size, t.norms is not None, t.eps, t.scale_x,
            t.scale_y]
    parts = [np.array(head, dtype=np.float64), t.shift_x, t.shift_y, t.sum_x, t.sum_y,
             t.xx.ravel(), t.yy.ravel(), t.xy.ravel()]
    if t.norms is not None:
        m = t.norms
        parts += [np.array([getattr(m, k) for k in _NORM_SCALARS]), m.qx, m.rx, m.qy, m.ry]
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def _read_records(flat: np.ndarray) -> list[tuple[int, int, LinearTerms]]:
    """Every record of a concatenation of records (any number, from any ranks)."""
    out, pos = [], 0
    while pos < flat.size:
        i, j, n, p1, p2, has_norms, eps, sx, sy = flat[pos:pos + _HEADER]
        p1, p2, pos = int(p1), int(p2), pos + _HEADER

        def take(size: int, shape=None):
            nonlocal pos
            a = flat[pos:pos + size].copy()
            pos += size
            return a.reshape(shape) if shape else a

        fields = dict(shift_x=take(p1), shift_y=take(p2), sum_x=take(p1), sum_y=take(p2),
                      xx=take(p1 * p1, (p1, p1)), yy=take(p2 * p2, (p2, p2)),
                      xy=take(p1 * p2, (p1, p2)))
        norms = None
        if has_norms:
            scalars = dict(zip(_NORM_SCALARS, map(float, take(len(_NORM_SCALARS)))))
            norms = RowNormTerms(**scalars, qx=take(p1), rx=take(p1), qy=take(p2), ry=take(p2))
        out.append((int(i), int(j), LinearTerms(n=int(n), norms=norms, eps=float(eps),
                                                scale_x=float(sx), scale_y=float(sy), **fields)))
    return out


def _merged(records) -> dict[tuple[int, int], LinearTerms]:
    merged: dict[tuple[int, int], LinearTerms] = {}
    for i, j, t in records:
        merged[(i, j)] = t if (i, j) not in merged else merged[(i, j)].merge(t)
    return merged


class CKAMap(Metric):
    """Exact linear CKA between every layer of two lists, over all batches of all ranks.

    Parameters
    ----------
    debiased : bool, default False
        CKA from unbiased HSIC (Song et al. 2012); False: the biased estimator (Kornblith et al.
        2019). The state always holds what both need.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        The pyckafast backend of the per-batch terms (CUDA tensors go through the cuda backend,
        which needs CuPy).
    **kwargs
        The torchmetrics ``Metric`` options (``process_group``, ``dist_sync_on_step``...).

    Examples
    --------
    >>> import torch
    >>> from pyckafast.torchmetrics import CKAMap
    >>> metric = CKAMap()
    >>> x = torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> for batch in x.split(16):
    ...     metric.update([batch, 2 * batch], [torch.tanh(batch)])
    >>> m = metric.compute()
    >>> tuple(m.shape), bool(abs(m[0, 0] - m[1, 0]) < 1e-12)
    ((2, 1), True)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, debiased: bool = False, backend: Backend = "auto",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(debiased, bool):
            raise TypeError(f"debiased must be a bool; got {debiased!r} "
                            f"({type(debiased).__name__}).")
        self.debiased, self.backend = debiased, backend
        self.add_state("terms", default=[], dist_reduce_fx="cat")
        # The terms are float64; torchmetrics sends a rank without data an empty tensor of
        # the metric's dtype, which must match the others' in the gather.
        self.set_dtype(torch.float64)
        self._shape: tuple[int, int] | None = None

    def update(self, xs: Sequence[ArrayLike], ys: Sequence[ArrayLike] | None = None) -> None:
        """Add one batch of every layer.

        Parameters
        ----------
        xs : sequence of array_like
            ``xs[i]`` is the (batch, p_i) output of layer i (torch tensors or arrays, the same
            rows in each).
        ys : sequence of array_like, optional
            The layers of the second side, as ``xs``. None: ``xs`` against itself (the pairs
            i <= j are accumulated).

        Raises
        ------
        ValueError
            If a side is empty or the number of layers differs from earlier batches'.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKAMap
        >>> x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKAMap()
        >>> metric.update([x, x ** 2])
        >>> metric.update([x + 1, (x + 1) ** 2])
        >>> tuple(metric.compute().shape)
        (2, 2)
        """
        symmetric = ys is None
        xs = list(xs)
        ys = xs if symmetric else list(ys)
        if not xs or not ys:
            raise ValueError("xs and ys must each hold at least one (batch, p) array.")
        self._check_shape((len(xs), len(ys)))
        merged = _merged(self._stored())
        records = []
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                if symmetric and j < i:
                    continue
                part = self._batch_terms(x, y)
                old = merged.get((i, j))
                records.append(_record(i, j, part if old is None else old.merge(part)))
        # One record per pair on this rank, whatever the number of batches.
        self.terms = [torch.as_tensor(np.concatenate(records), device=self.device)]

    def reset(self) -> None:
        """Forget every sample (and the layer count, so the next update may bring others).

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKAMap
        >>> x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKAMap()
        >>> metric.update([x, 2 * x])
        >>> metric.reset()
        >>> metric.update([x], [x, x ** 2, x[:, :1]])
        >>> tuple(metric.compute().shape)
        (1, 3)
        """
        super().reset()
        self._shape = None

    def _batch_terms(self, x, y) -> LinearTerms:
        x = on_reachable_device(x.detach() if hasattr(x, "detach") else x)
        y = on_reachable_device(y.detach() if hasattr(y, "detach") else y)
        return LinearCKAState(debiased=True, backend=self.backend).update(x, y).terms

    def _check_shape(self, shape: tuple[int, int]) -> None:
        if self._shape is None:
            self._shape = shape
        elif self._shape != shape:
            raise ValueError(f"every batch must give the same layers: expected "
                             f"{self._shape[0]} x {self._shape[1]}; got {shape[0]} x {shape[1]}.")

    def _stored(self):
        states = self.terms if isinstance(self.terms, list) else [self.terms]
        flat = [s.detach().to("cpu", torch.float64).numpy().ravel() for s in states]
        return _read_records(np.concatenate(flat)) if flat else []

    def compute(self) -> torch.Tensor:
        """Return the CKA map of every sample seen on every rank.

        Returns
        -------
        torch.Tensor
            Float64, shape (len(xs), len(ys)): the CKA of every pair of layers (torchmetrics
            squeezes a 1 x 1 map to a 0-d tensor).

        Raises
        ------
        ValueError
            If no rank has seen a batch.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKAMap
        >>> x = torch.randn(60, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKAMap()
        >>> for batch in x.split(20):
        ...     metric.update([batch], [3 * batch, batch[:, :2]])
        >>> metric.compute().round(decimals=6)[0, 0].item()
        1.0
        """
        merged = _merged(self._stored())
        if not merged:
            raise ValueError(f"{type(self).__name__}.compute() needs at least one update().")
        la = 1 + max(i for i, _ in merged)
        lb = 1 + max(j for _, j in merged)
        out = np.full((la, lb), np.nan)
        for (i, j), t in merged.items():
            out[i, j] = combine.cka_from_hsic(combine.linear_hsic(t, self.debiased))
            if (j, i) not in merged and j < la and i < lb:  # symmetric map: the mirror pair
                out[j, i] = out[i, j]
        return torch.as_tensor(out, dtype=torch.float64)


class CKA(CKAMap):
    """Exact linear CKA of two representations, over all batches of all ranks.

    Parameters
    ----------
    debiased : bool, default False
        CKA from unbiased HSIC (Song et al. 2012); False: the biased estimator (Kornblith et al.
        2019). The state always holds what both need.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}, default "auto"
        The pyckafast backend of the per-batch terms (CUDA tensors go through the cuda backend,
        which needs CuPy).
    **kwargs
        The torchmetrics ``Metric`` options (``process_group``, ``dist_sync_on_step``...).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> import pyckafast
    >>> from pyckafast.torchmetrics import CKA
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(100, 6, dtype=torch.float64, generator=g)
    >>> y = x @ torch.randn(6, 3, dtype=torch.float64, generator=g)
    >>> metric = CKA()
    >>> for a, b in zip(x.split(30), y.split(30)):
    ...     metric.update(a, b)
    >>> bool(abs(float(metric.compute()) - pyckafast.linear_cka(x.numpy(), y.numpy())) < 1e-12)
    True
    """

    def update(self, x: ArrayLike, y: ArrayLike) -> None:  # type: ignore[override]
        """Add one batch of matching rows of ``x`` and ``y``.

        Parameters
        ----------
        x : array_like
            Shape (batch, p_x): a torch tensor or an array.
        y : array_like
            Shape (batch, p_y), the same rows as ``x``.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKA
        >>> x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKA()
        >>> metric.update(x, -2 * x)
        >>> round(metric.compute().item(), 12)
        1.0
        """
        super().update([x], [y])

    def compute(self) -> torch.Tensor:
        """Return the CKA of every sample seen on every rank.

        Returns
        -------
        torch.Tensor
            A float64 0-d tensor.

        Raises
        ------
        ValueError
            If no rank has seen a batch.

        Examples
        --------
        >>> import torch
        >>> from pyckafast.torchmetrics import CKA
        >>> x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> metric = CKA()
        >>> for batch in x.split(25):
        ...     metric.update(batch, batch[:, :2])
        >>> metric.compute().shape, 0 < metric.compute().item() < 1
        (torch.Size([]), True)
        """
        return super().compute()[0, 0]
