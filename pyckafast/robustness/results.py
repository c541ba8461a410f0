"""Tidy sweep results: arrays indexed by (seed, *magnitudes), no pandas needed."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SweepResult"]


@dataclass
class SweepResult:
    """The numbers of one robustness sweep.

    Attributes
    ----------
    experiment : str
        "translation", "invertible", "outlier" or "class-translation".
    axes : dict of str to ndarray
        Ordered axes; the first is always "seed", e.g. {"seed": [...], "c": [...]}.
    values : dict of str to ndarray
        One array per measure (e.g. "linear", "rbf 0.5", "theory", "accuracy") of shape
        ``tuple(len(a) for a in axes.values())``.
    per_seed : dict of str to ndarray
        Quantities with one value per seed (e.g. the Theorem 1 "limit").
    params : dict
        The settings of the run (JSON-serialisable).
    """

    experiment: str
    axes: dict[str, np.ndarray]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    per_seed: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes.values())

    def new_values(self, name: str) -> np.ndarray:
        """Create (nan-filled) and return the array for measure ``name``."""
        return self.values.setdefault(name, np.full(self.shape, np.nan))

    def mean(self, name: str) -> np.ndarray:
        """Mean over seeds of measure ``name`` (nan entries ignored)."""
        return np.nanmean(self.values[name], axis=0)

    def std(self, name: str) -> np.ndarray:
        """Standard deviation over seeds of measure ``name``."""
        return np.nanstd(self.values[name], axis=0)

    def records(self) -> list[dict]:
        """One dict per (axes coordinates, measure): {"seed": .., "c": .., "measure": .., "value": ..}."""
        names = list(self.axes)
        out = []
        for idx in itertools.product(*(range(len(a)) for a in self.axes.values())):
            coords = {k: _py(self.axes[k][i]) for k, i in zip(names, idx)}
            for measure, arr in self.values.items():
                out.append({**coords, "measure": measure, "value": _py(arr[idx])})
        return out

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (nan becomes None)."""
        return {
            "experiment": self.experiment,
            "params": self.params,
            "axes": {k: _jsonable(v) for k, v in self.axes.items()},
            "values": {k: _jsonable(v) for k, v in self.values.items()},
            "mean_over_seeds": {k: _jsonable(self.mean(k)) for k in self.values},
            "per_seed": {k: _jsonable(v) for k, v in self.per_seed.items()},
        }

    def save_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path``."""
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=1)


def _py(v):
    v = v.item() if isinstance(v, np.generic) else v
    return None if isinstance(v, float) and not np.isfinite(v) else v


def _jsonable(a) -> list:
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        return np.where(np.isfinite(arr), arr, None).tolist()
    return arr.tolist()
