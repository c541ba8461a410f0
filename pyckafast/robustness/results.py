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

    Parameters
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

    Attributes
    ----------
    shape : tuple of int
        The shape of every array of ``values``: one entry per axis.

    Examples
    --------
    >>> import numpy as np
    >>> from pyckafast.robustness import SweepResult
    >>> r = SweepResult("translation", {"seed": np.arange(2), "c": np.array([0.0, 1.0])})
    >>> r.new_values("linear")[:] = [[1.0, 0.5], [1.0, 0.7]]
    >>> r.shape, r.mean("linear").tolist()
    ((2, 2), [1.0, 0.6])
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
        """Create (nan-filled) and return the array for measure ``name``.

        Parameters
        ----------
        name : str
            The measure; an existing array is returned as it is.

        Returns
        -------
        numpy.ndarray
            The array of shape :attr:`shape`, held in ``values[name]`` (fill it in place).

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.robustness import SweepResult
        >>> r = SweepResult("outlier", {"seed": np.arange(3)})
        >>> r.new_values("linear").shape
        (3,)
        """
        return self.values.setdefault(name, np.full(self.shape, np.nan))

    def mean(self, name: str) -> np.ndarray:
        """Compute the mean over seeds of measure ``name`` (nan entries ignored).

        Parameters
        ----------
        name : str
            A measure of ``values``.

        Returns
        -------
        numpy.ndarray
            Shape ``shape[1:]``.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.robustness import SweepResult
        >>> r = SweepResult("outlier", {"seed": np.arange(2)}, values={"linear": np.array([0.25, 0.75])})
        >>> float(r.mean("linear"))
        0.5
        """
        return np.nanmean(self.values[name], axis=0)

    def std(self, name: str) -> np.ndarray:
        """Compute the standard deviation over seeds of measure ``name`` (nan entries ignored).

        Parameters
        ----------
        name : str
            A measure of ``values``.

        Returns
        -------
        numpy.ndarray
            Shape ``shape[1:]``.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.robustness import SweepResult
        >>> r = SweepResult("outlier", {"seed": np.arange(2)}, values={"linear": np.array([0.25, 0.75])})
        >>> float(r.std("linear"))
        0.25
        """
        return np.nanstd(self.values[name], axis=0)

    def records(self) -> list[dict]:
        """List the values as tidy records, one per (axes coordinates, measure).

        Returns
        -------
        list of dict
            ``{"seed": .., "c": .., "measure": .., "value": ..}`` (one key per axis); nan
            becomes None.

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.robustness import SweepResult
        >>> r = SweepResult("outlier", {"seed": np.arange(1)}, values={"linear": np.array([0.5])})
        >>> r.records()
        [{'seed': 0, 'measure': 'linear', 'value': 0.5}]
        """
        names = list(self.axes)
        out = []
        for idx in itertools.product(*(range(len(a)) for a in self.axes.values())):
            coords = {k: _py(self.axes[k][i]) for k, i in zip(names, idx)}
            for measure, arr in self.values.items():
                out.append({**coords, "measure": measure, "value": _py(arr[idx])})
        return out

    def to_dict(self) -> dict:
        """Convert the result to a JSON-serialisable dict (nan becomes None).

        Returns
        -------
        dict
            Keys "experiment", "params", "axes", "values", "mean_over_seeds", "per_seed".

        Examples
        --------
        >>> import numpy as np
        >>> from pyckafast.robustness import SweepResult
        >>> r = SweepResult("outlier", {"seed": np.arange(2)},
        ...                 values={"linear": np.array([0.5, np.nan])})
        >>> r.to_dict()["values"]
        {'linear': [0.5, None]}
        """
        return {
            "experiment": self.experiment,
            "params": self.params,
            "axes": {k: _jsonable(v) for k, v in self.axes.items()},
            "values": {k: _jsonable(v) for k, v in self.values.items()},
            "mean_over_seeds": {k: _jsonable(self.mean(k)) for k in self.values},
            "per_seed": {k: _jsonable(v) for k, v in self.per_seed.items()},
        }

    def save_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.

        Examples
        --------
        >>> import json, os, tempfile
        >>> import numpy as np
        >>> from pyckafast.robustness import SweepResult
        >>> path = os.path.join(tempfile.mkdtemp(), "sweep.json")
        >>> SweepResult("outlier", {"seed": np.arange(1)}).save_json(path)
        >>> json.load(open(path))["experiment"]
        'outlier'
        """
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
