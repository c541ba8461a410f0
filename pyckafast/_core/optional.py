"""Optional dependencies: imported where they are used, with a message that names the extra.

``import pyckafast`` never imports matplotlib, torch, dask, tqdm or cupy; a feature that needs one
calls :func:`require`, which says which ``pip install "pyckafast[...]"`` brings it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependency", "require"]

# package to import -> the extra of pyproject.toml that installs it
EXTRAS = {"matplotlib": "plot", "torch": "torch", "dask": "dask", "distributed": "dask",
          "tqdm": "cli", "cupy": "cuda12", "torchmetrics": "torchmetrics"}


class MissingDependency(ModuleNotFoundError):
    """An optional package that a feature needs is not installed."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. "matplotlib.pyplot") for ``feature``, or raise MissingDependency
    naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise  # the package is there but one of its own dependencies is broken
        extra = EXTRAS.get(top, "all")
        hint = ('pip install "pyckafast[cuda12]" (or [cuda13], to match the CUDA driver)'
                if extra == "cuda12" else f'pip install "pyckafast[{extra}]"')
        raise MissingDependency(f"{feature} needs {top}, which is not installed: {hint}.",
                                name=top) from None
