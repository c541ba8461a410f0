"""Which submodules compare_models hooks: exact names, glob patterns or module types, looked up
in the model with its DataParallel / DistributedDataParallel wrappers removed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from .._core.optional import require

__all__ = ["unwrap", "select_layers", "per_layer"]

_GLOB = set("*?[")


def unwrap(model):
    """The model inside DataParallel / DistributedDataParallel wrappers (their ``.module``).

    compare_models runs the unwrapped model: DataParallel would run replicas of the hooked
    modules in threads, each seeing part of the batch.
    """
    torch = require("torch", "pyckafast.torch")
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def select_layers(model, spec, what: str) -> list[str]:
    """Names (as in ``model.named_modules()``) of the layers ``spec`` asks for, in its order.

    ``spec`` is one item or a sequence of items; an item is an exact name (a wrapper's
    ``"module."`` prefix may be kept), a glob pattern over names (``"layer*.conv1"``) or a module
    class (every submodule that is an instance). A name picked twice is kept once.
    """
    torch = require("torch", "pyckafast.torch")
    modules = dict(model.named_modules())
    items = [spec] if isinstance(spec, (str, type)) else list(spec)
    names: list[str] = []
    missing = []
    for item in items:
        if isinstance(item, type) and issubclass(item, torch.nn.Module):
            found = [n for n, m in modules.items() if n and isinstance(m, item)]
            if not found:
                raise ValueError(f"{what} has no layers of type {item.__name__}; its layer types: "
                                 f"{sorted({type(m).__name__ for m in modules.values()})[:12]}.")
        elif isinstance(item, str) and _GLOB & set(item):
            found = [n for n in modules if n and fnmatchcase(n, item)]
            if not found:
                raise ValueError(f"{what} has no layers matching the pattern {item!r}; some of its "
                                 f"layers: {list(modules)[1:12]}.")
        elif isinstance(item, str):
            name = item if item in modules else item.removeprefix("module.")
            found = [name] if name in modules else []
            if not found:
                missing.append(item)
        else:
            raise TypeError(f"layers of {what} must be names, glob patterns or torch.nn.Module "
                            f"classes; got {item!r} ({type(item).__name__}).")
        names.extend(n for n in found if n not in names)
    if missing:
        raise ValueError(f"{what} has no layers named {missing}; some of its layers: {list(modules)[1:12]}.")
    if not names:
        raise ValueError(f"layers of {what} must name at least one layer; got {spec!r}.")
    return names


def per_layer(option, names: Sequence[str], what: str, default=None) -> dict:
    """One value per layer from an option given once for all layers or as a dict layer -> value
    (layers the dict does not name get ``default``); a dict key naming no layer is an error."""
    if not isinstance(option, Mapping):
        return {n: option for n in names}
    unknown = sorted(set(option) - set(names))
    if unknown:
        raise ValueError(f"{what} names layers {unknown} that are not compared; compared layers: "
                         f"{list(names)}.")
    return {n: option.get(n, default) for n in names}
