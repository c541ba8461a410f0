"""Register pyckafast's CKA measures in the similarity-repository registry (``similarity``).

::

    import similarity
    from pyckafast.compat.similarity import register
    register()                                    # or register(similarity)
    measure = similarity.make("measure.pyckafast.cka")
    score = measure(X, Y)

Registered ids (functions of two (n, p) arrays, or (a, b, p) arrays reshaped to (a b, p) as the
registry's "reshape2d" preprocessing does):

* ``measure.pyckafast``: the backend's description (a dict, as the registry's other backends);
* ``measure.pyckafast.cka``: exact linear CKA (Kornblith et al. 2019), :func:`pyckafast.linear_cka`;
* ``measure.pyckafast.cka-debiased``: linear CKA from unbiased HSIC (Song et al. 2012);
* ``measure.pyckafast.rbf-cka``: RBF CKA, bandwidth by the median rule, :func:`pyckafast.rbf_cka`.

The registry derives ``cka-angular`` from ``cka`` itself (its transforms), so it is not
registered here. Caveat (docs/COMPAT.md): similarity-repository 0.0.1 from PyPI installs only
with its git-URL dependencies, and with ``--no-deps`` its ``make()`` fails for every id (it
imports every backend first); ``register()`` itself works without them.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ..linear import linear_cka
from ..rbf import rbf_cka

__all__ = ["register", "MEASURES"]


def _two_d(a, name: str):
    shape = getattr(a, "shape", None)
    if shape is not None and len(shape) == 3:
        return np.reshape(np.asarray(a), (shape[0] * shape[1], shape[2]))
    return a


def cka(X, Y) -> float:
    """Exact linear CKA of X (n, p1) and Y (n, p2)."""
    return linear_cka(_two_d(X, "X"), _two_d(Y, "Y"))


def cka_debiased(X, Y) -> float:
    """Exact linear CKA from unbiased HSIC."""
    return linear_cka(_two_d(X, "X"), _two_d(Y, "Y"), debiased=True)


def rbf(X, Y) -> float:
    """Exact RBF CKA, median-rule bandwidth."""
    return rbf_cka(_two_d(X, "X"), _two_d(Y, "Y"))


MEASURES = {"measure.pyckafast.cka": cka, "measure.pyckafast.cka-debiased": cka_debiased,
            "measure.pyckafast.rbf-cka": rbf}
_ABOUT = {"paper_id": "kornblith2019", "package": "pyckafast",
          "description": "exact CKA (linear, debiased, RBF) streamed in float64"}


def register(registry: ModuleType | None = None, *, override: bool = False) -> list[str]:
    """Register the measures in ``registry`` (default: ``import similarity``).

    Parameters
    ----------
    registry : module, optional
        Anything with similarity-repository's ``register(id, obj, function=..., override=...)``.
    override : bool, default False
        Replace ids already registered (the registry refuses them otherwise).

    Returns
    -------
    list of str
        The ids registered: the measure family first, then one per function of ``MEASURES``.

    Examples
    --------
    >>> import types
    >>> fake = types.SimpleNamespace(registry={})
    >>> def put(id, obj, function=False, override=False):
    ...     fake.registry[id] = obj
    >>> fake.register = put
    >>> sorted(register(fake))[:2]
    ['measure.pyckafast', 'measure.pyckafast.cka']
    """
    if registry is None:
        from .._core.optional import require

        registry = require("similarity", "pyckafast.compat.similarity")
    registry.register("measure.pyckafast", dict(_ABOUT), override=override)
    for key, fn in MEASURES.items():
        registry.register(key, fn, function=True, override=override)
    return ["measure.pyckafast", *MEASURES]
